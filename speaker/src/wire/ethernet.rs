//! The Ethernet frame: MAC addresses, the header every message carries, and the frame that
//! wraps a message. The protocol modules ([`super::arp`], [`super::ndp`]) build on this one;
//! it knows nothing of them ([`super::frame`] puts them together).

use std::fmt;
use std::str::FromStr;

use smoltcp::wire::{EthernetAddress, EthernetFrame as EthernetView, EthernetProtocol};

use super::drop_reason::DropReason;

/// Length of an Ethernet II header without a VLAN tag.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00, the "unknown" target hardware address of an ARP request.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The group bit (I/G) of the first octet is set: multicast or broadcast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// An address one station may own: neither group nor all-zero.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && *self != Self::ZERO
    }

    pub(crate) fn to_smoltcp(self) -> EthernetAddress {
        EthernetAddress(self.0)
    }

    pub(crate) fn from_smoltcp(addr: EthernetAddress) -> MacAddr {
        MacAddr(addr.0)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A MAC address that is not six colon-separated hex octets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address (want six hex octets separated by ':'): {0:?}")]
pub struct MacAddrParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacAddrParseError;

    fn from_str(s: &str) -> Result<MacAddr, MacAddrParseError> {
        let err = || MacAddrParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// The Ethernet header fields every decoded message carries, because replies and policy
/// (MetalLB answers only requests sent to broadcast or to its own MAC) depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetHeader {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
}

/// An Ethernet frame carrying `M`: an ARP or NDP message of one kind (as the protocol modules
/// build them), or any of them ([`super::Frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<M> {
    /// The Ethernet header.
    pub eth: EthernetHeader,
    /// The ARP or NDP message.
    pub message: M,
}

impl<M> EthernetFrame<M> {
    /// The same frame with its message converted (a specific message into [`super::Message`]).
    pub fn widen<N: From<M>>(self) -> EthernetFrame<N> {
        EthernetFrame {
            eth: self.eth,
            message: N::from(self.message),
        }
    }
}

impl EthernetHeader {
    /// Sent to broadcast or to `mac`. MetalLB answers only such ARP requests: a request
    /// unicast to another station's MAC reached us by flooding and is not ours to answer.
    pub fn addressed_to(&self, mac: MacAddr) -> bool {
        self.dst.is_broadcast() || self.dst == mac
    }
}

/// The ethertype of ARP.
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
/// The ethertype of IPv6.
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Checks an Ethernet header and returns it with the ethertype and the payload. Trailing bytes
/// (Ethernet padding to 60 octets) stay in the payload; the protocols ignore them.
pub(crate) fn parse(bytes: &[u8]) -> Result<(EthernetHeader, u16, &[u8]), DropReason> {
    let frame = EthernetView::new_checked(bytes).map_err(|_| DropReason::Truncated)?;
    let eth = EthernetHeader {
        dst: MacAddr::from_smoltcp(frame.dst_addr()),
        src: MacAddr::from_smoltcp(frame.src_addr()),
    };
    // RFC 1812 §3.3.2 and common sense: a group address never sends, and an answer to one
    // would be a broadcast amplifier.
    if !eth.src.is_unicast() {
        return Err(DropReason::BadSender);
    }
    let ethertype = u16::from(frame.ethertype());
    Ok((eth, ethertype, &bytes[ETHERNET_HEADER_LEN..]))
}

/// Writes an Ethernet header into the first [`ETHERNET_HEADER_LEN`] bytes of `buf` and returns
/// the rest for the payload.
pub(crate) fn emit_ethernet(buf: &mut [u8], eth: EthernetHeader, ethertype: u16) -> &mut [u8] {
    let mut frame = EthernetView::new_unchecked(buf);
    frame.set_dst_addr(eth.dst.to_smoltcp());
    frame.set_src_addr(eth.src.to_smoltcp());
    frame.set_ethertype(EthernetProtocol::from(ethertype));
    &mut frame.into_inner()[ETHERNET_HEADER_LEN..]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A locally administered unicast MAC (02:…), never a real vendor's.
    pub(crate) fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0x00, 0x5e, 0x10, 0x00, last])
    }

    /// Bytes from hex, ignoring whitespace, so test vectors can be laid out by field.
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    pub(crate) fn any_unicast_mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>()
            .prop_map(|mut b| {
                b[0] &= 0xfe;
                MacAddr(b)
            })
            .prop_filter("not zero", |m| m.is_unicast())
    }

    #[test]
    fn mac_display_and_parse_round_trip() {
        let m = MacAddr([0x02, 0xab, 0x00, 0x01, 0xfe, 0x10]);
        assert_eq!(m.to_string(), "02:ab:00:01:fe:10");
        assert_eq!("02:ab:00:01:fe:10".parse::<MacAddr>(), Ok(m));
        assert_eq!("02:AB:00:01:FE:10".parse::<MacAddr>(), Ok(m));
        for bad in [
            "",
            "02:ab:00:01:fe",
            "02:ab:00:01:fe:10:11",
            "2:ab:00:01:fe:10",
            "zz:ab:00:01:fe:10",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        assert!(!MacAddr::ZERO.is_unicast());
        assert!(MacAddr([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
        assert!(mac(1).is_unicast());
    }

    #[test]
    fn a_frame_is_checked_once_then_read() {
        assert_eq!(parse(&[0xff; 13]), Err(DropReason::Truncated));
        let mut bytes = vec![0xff; 6];
        bytes.extend_from_slice(&mac(1).0);
        bytes.extend_from_slice(&[0x08, 0x06, 0xaa]);
        let (eth, ethertype, payload) = parse(&bytes).unwrap();
        assert_eq!((eth.dst, eth.src), (MacAddr::BROADCAST, mac(1)));
        assert_eq!((ethertype, payload), (ETHERTYPE_ARP, &[0xaa][..]));
        bytes[6..12].copy_from_slice(&[0xff; 6]);
        assert_eq!(parse(&bytes), Err(DropReason::BadSender));
    }
}
