//! An Ethernet frame as the speaker sees it: decoded into one of the few messages it acts on, or
//! dropped with a reason that becomes a counter label.
//!
//! The parsing itself is smoltcp's `wire` module (checked views: lengths are validated once, then
//! accessors cannot go out of bounds); this file and its neighbours only add the RFC rules and
//! Herald's own types, so nothing outside the wire files ever names a smoltcp type.

use std::fmt;
use std::str::FromStr;

use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol};

use crate::arp::{self, ArpReply, ArpRequest};
use crate::ndp::{self, NeighborAdvertisement, NeighborSolicitation};

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

/// A frame the speaker acts on: its Ethernet header and the message inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The Ethernet header.
    pub eth: EthernetHeader,
    /// The ARP or NDP message.
    pub message: Message,
}

/// The messages the speaker acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Someone asks who has an IPv4 address: answer if we own it.
    ArpRequest(ArpRequest),
    /// Someone says it has an IPv4 address: a second MAC answering for an owned IP is a
    /// conflict to report (RFC 5227 §2.4).
    ArpReply(ArpReply),
    /// Someone asks who has an IPv6 address: answer if we own it.
    NeighborSolicitation(NeighborSolicitation),
    /// Someone says it has an IPv6 address: the IPv6 counterpart of [`Message::ArpReply`].
    NeighborAdvertisement(NeighborAdvertisement),
}

/// Why a frame was dropped. Every input that is not one of the [`Frame`] messages, or breaks a
/// rule the RFCs say to enforce, ends here — never in a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Shorter than the headers it claims to have.
    #[error("truncated")]
    Truncated,
    /// Neither ARP nor IPv6 (including 802.1Q-tagged frames: Linux hands AF_PACKET sockets
    /// untagged frames on the VLAN's own interface).
    #[error("ethertype is neither ARP nor IPv6")]
    UnknownEtherType,
    /// ARP hardware type is not Ethernet (1) or its address length is not 6 (RFC 826).
    #[error("ARP hardware type is not Ethernet/6")]
    BadHardware,
    /// ARP protocol type is not IPv4 (0x0800) or its address length is not 4 (RFC 826).
    #[error("ARP protocol type is not IPv4/4")]
    BadProtocol,
    /// ARP operation is neither request (1) nor reply (2): RARP, InARP and the like.
    #[error("ARP operation is neither request nor reply")]
    BadOperation,
    /// The Ethernet or link-layer source is multicast, broadcast or zero, or the IP source is
    /// multicast: nothing may be answered to it (RFC 1812 §3.3.2, RFC 4291 §2.7).
    #[error("sender address is not a unicast address")]
    BadSender,
    /// An IPv6 ethertype whose version nibble is not 6.
    #[error("IP version is not 6")]
    BadIpVersion,
    /// IPv6, but the next header is not ICMPv6. Extension headers are not followed: a Neighbor
    /// Solicitation never needs one, and following them is the classic parser attack surface.
    #[error("IPv6 next header is not ICMPv6")]
    NotIcmpv6,
    /// ICMPv6, but not a Neighbor Solicitation or Advertisement.
    #[error("ICMPv6 message is not a Neighbor Solicitation or Advertisement")]
    NotNeighborDiscovery,
    /// IPv6 hop limit is not 255, so the message may have crossed a router (RFC 4861 §7.1).
    #[error("IPv6 hop limit is not 255")]
    BadHopLimit,
    /// ICMPv6 code is not 0 (RFC 4861 §7.1).
    #[error("ICMPv6 code is not 0")]
    BadCode,
    /// ICMPv6 checksum does not verify (RFC 4443 §2.3).
    #[error("ICMPv6 checksum is wrong")]
    BadChecksum,
    /// An NDP option has length 0, runs past the message, or a link-layer address option is
    /// shorter than a MAC (RFC 4861 §4.6, RFC 2464 §6).
    #[error("malformed NDP option")]
    BadOption,
    /// The NDP target address is multicast (RFC 4861 §7.1).
    #[error("NDP target is a multicast address")]
    MulticastTarget,
    /// A Duplicate Address Detection probe (unspecified source) carrying a source link-layer
    /// option (RFC 4861 §7.1.1).
    #[error("DAD solicitation carries a source link-layer option")]
    DadWithLinkLayerAddress,
    /// A Duplicate Address Detection probe not sent to a solicited-node group (RFC 4861 §7.1.1).
    #[error("DAD solicitation not sent to a solicited-node multicast address")]
    DadNotToSolicitedNode,
    /// A Neighbor Advertisement with the Solicited flag sent to a multicast address
    /// (RFC 4861 §7.1.2).
    #[error("solicited Neighbor Advertisement sent to a multicast address")]
    SolicitedToMulticast,
}

impl DropReason {
    /// Every reason, for pre-registering counters so a dashboard shows zeros, not gaps.
    pub const ALL: [DropReason; 17] = [
        DropReason::Truncated,
        DropReason::UnknownEtherType,
        DropReason::BadHardware,
        DropReason::BadProtocol,
        DropReason::BadOperation,
        DropReason::BadSender,
        DropReason::BadIpVersion,
        DropReason::NotIcmpv6,
        DropReason::NotNeighborDiscovery,
        DropReason::BadHopLimit,
        DropReason::BadCode,
        DropReason::BadChecksum,
        DropReason::BadOption,
        DropReason::MulticastTarget,
        DropReason::DadWithLinkLayerAddress,
        DropReason::DadNotToSolicitedNode,
        DropReason::SolicitedToMulticast,
    ];

    /// A short, stable label for the dropped-frames counter.
    pub const fn metric_label(&self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::UnknownEtherType => "unknown_ethertype",
            DropReason::BadHardware => "bad_hardware",
            DropReason::BadProtocol => "bad_protocol",
            DropReason::BadOperation => "bad_operation",
            DropReason::BadSender => "bad_sender",
            DropReason::BadIpVersion => "bad_ip_version",
            DropReason::NotIcmpv6 => "not_icmpv6",
            DropReason::NotNeighborDiscovery => "not_ndp",
            DropReason::BadHopLimit => "bad_hop_limit",
            DropReason::BadCode => "bad_code",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::BadOption => "bad_option",
            DropReason::MulticastTarget => "multicast_target",
            DropReason::DadWithLinkLayerAddress => "dad_with_lladdr",
            DropReason::DadNotToSolicitedNode => "dad_bad_destination",
            DropReason::SolicitedToMulticast => "solicited_to_multicast",
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

impl Frame {
    /// Decodes a whole Ethernet frame, as an AF_PACKET socket delivers it. Trailing bytes
    /// (Ethernet padding to 60 octets) are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DropReason> {
        let frame = EthernetFrame::new_checked(bytes).map_err(|_| DropReason::Truncated)?;
        let eth = EthernetHeader {
            dst: MacAddr::from_smoltcp(frame.dst_addr()),
            src: MacAddr::from_smoltcp(frame.src_addr()),
        };
        // RFC 1812 §3.3.2 and common sense: a group address never sends, and an answer to one
        // would be a broadcast amplifier.
        if !eth.src.is_unicast() {
            return Err(DropReason::BadSender);
        }
        let message = match frame.ethertype() {
            EthernetProtocol::Arp => arp::decode(frame.payload())?,
            EthernetProtocol::Ipv6 => ndp::decode_ipv6(frame.payload())?,
            _ => return Err(DropReason::UnknownEtherType),
        };
        Ok(Frame { eth, message })
    }

    /// The frame on the wire: header and message, no padding (the NIC pads to 60 octets).
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.message {
            Message::ArpRequest(m) => arp::encode(self.eth, arp::Operation::Request, m.fields()),
            Message::ArpReply(m) => arp::encode(self.eth, arp::Operation::Reply, m.fields()),
            Message::NeighborSolicitation(m) => ndp::encode_solicitation(self.eth, m),
            Message::NeighborAdvertisement(m) => ndp::encode_advertisement(self.eth, m),
        }
    }
}

/// Writes an Ethernet header into the first [`ETHERNET_HEADER_LEN`] bytes of `buf` and returns
/// the rest for the payload.
pub(crate) fn emit_ethernet(buf: &mut [u8], eth: EthernetHeader, ethertype: u16) -> &mut [u8] {
    let mut frame = EthernetFrame::new_unchecked(buf);
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
    fn metric_labels_are_unique_and_snake_case() {
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.metric_label()).collect();
        assert!(labels.iter().all(|l| {
            l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        }));
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }

    #[test]
    fn short_and_foreign_frames_are_dropped() {
        assert_eq!(Frame::decode(&[]), Err(DropReason::Truncated));
        assert_eq!(Frame::decode(&[0xff; 13]), Err(DropReason::Truncated));
        // An IPv4 frame: not ours to decode.
        let mut ipv4 = vec![0xff; 6];
        ipv4.extend_from_slice(&mac(1).0);
        ipv4.extend_from_slice(&[0x08, 0x00]);
        ipv4.extend_from_slice(&[0x45; 20]);
        assert_eq!(Frame::decode(&ipv4), Err(DropReason::UnknownEtherType));
        // An 802.1Q-tagged frame.
        ipv4[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(Frame::decode(&ipv4), Err(DropReason::UnknownEtherType));
        // A broadcast source.
        ipv4[6..12].copy_from_slice(&[0xff; 6]);
        assert_eq!(Frame::decode(&ipv4), Err(DropReason::BadSender));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The fuzz targets' claim, in miniature: no input panics.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Frame::decode(&bytes);
        }

        /// Random bytes behind a valid header of each ethertype reach the inner decoders.
        #[test]
        fn decoding_arbitrary_payloads_never_panics(
            ethertype in prop_oneof![Just(0x0806u16), Just(0x86dd)],
            src in any_unicast_mac(),
            payload in proptest::collection::vec(any::<u8>(), 0..160),
        ) {
            let mut bytes = vec![0u8; ETHERNET_HEADER_LEN];
            emit_ethernet(&mut bytes, EthernetHeader { dst: MacAddr::BROADCAST, src }, ethertype);
            bytes.extend_from_slice(&payload);
            let _ = Frame::decode(&bytes);
        }
    }
}
