//! IPv6 Neighbor Discovery (RFC 4861): Neighbor Solicitations to answer, Advertisements that
//! reveal a conflicting owner, and the Advertisements we send — solicited answers and unsolicited
//! announcements — plus the solicited-node multicast group a VIP's solicitations arrive on.
//!
//! Two entry points for input: [`super::Frame::decode`] for a whole frame from an AF_PACKET socket,
//! and [`decode_icmpv6`] for the payload of a raw ICMPv6 socket, where the kernel has stripped
//! the IPv6 header and the hop limit comes from `IPV6_RECVHOPLIMIT`.

use std::net::Ipv6Addr;

use smoltcp::wire::{
    EthernetProtocol, IPV6_HEADER_LEN, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv6Packet,
    Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

use super::drop_reason::DropReason;
use super::ethernet::{ETHERNET_HEADER_LEN, EthernetFrame, EthernetHeader, MacAddr, emit_ethernet};

/// The hop limit every Neighbor Discovery message carries, and the only one accepted: a router
/// would have decremented it, so 255 proves the sender is on the link (RFC 4861 §3.1).
pub const NDP_HOP_LIMIT: u8 = 255;

/// ff02::1, the all-nodes group unsolicited advertisements go to (RFC 4861 §7.2.6).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Length of a Neighbor Solicitation or Advertisement without options.
const NDP_BASE_LEN: usize = 24;
/// Length of a link-layer address option carrying a MAC (RFC 2464 §6: length 1, 8 octets).
const LINK_LAYER_OPTION_LEN: usize = 8;

/// "Who has `target`?" — from `source`, which is `::` for Duplicate Address Detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborSolicitation {
    /// The IPv6 source: the asker's address, or `::` in a DAD probe.
    pub source: Ipv6Addr,
    /// The IPv6 destination: the target's solicited-node group, or the target itself for a
    /// unicast Neighbor Unreachability Detection probe.
    pub destination: Ipv6Addr,
    /// The address asked about.
    pub target: Ipv6Addr,
    /// The asker's MAC, from the source link-layer address option. Optional: a unicast NUD
    /// probe may omit it (RFC 4861 §7.2.2), and a DAD probe must (§7.1.1).
    pub source_mac: Option<MacAddr>,
}

/// "`target` is at `target_mac`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighborAdvertisement {
    /// The IPv6 source: an address of the sending interface (we use its link-local address).
    pub source: Ipv6Addr,
    /// The asker, or ff02::1 for unsolicited and DAD answers.
    pub destination: Ipv6Addr,
    /// R: the sender is a router.
    pub router: bool,
    /// S: an answer to a solicitation. Confirms reachability (RFC 4861 §7.2.5).
    pub solicited: bool,
    /// O: replace an existing cache entry. Always set by us, so a failover moves neighbours to
    /// the new owner's MAC at once.
    pub override_: bool,
    /// The claimed address.
    pub target: Ipv6Addr,
    /// The MAC that claims it, from the target link-layer address option.
    pub target_mac: Option<MacAddr>,
}

impl NeighborSolicitation {
    /// A Duplicate Address Detection probe: the sender has no address yet (RFC 4862 §5.4.2).
    pub fn is_dad(&self) -> bool {
        self.source.is_unspecified()
    }

    /// The Advertisement claiming `target` for `our_mac`, sent from `our_ip` (the interface's
    /// link-local address), by RFC 4861 §7.2.4:
    /// - a DAD probe is answered to all-nodes with Solicited clear;
    /// - otherwise unicast to the asker with Solicited set, at the MAC of its source
    ///   link-layer option, or at `requester_mac` (the frame's Ethernet source) when the option
    ///   is absent. MetalLB drops solicitations without the option, which leaves unicast NUD
    ///   probes unanswered and the neighbour entry failing every ~30 min (MetalLB #2920).
    ///
    /// Override is always set: the owner is the only station that should answer.
    pub fn answer(
        &self,
        requester_mac: MacAddr,
        our_mac: MacAddr,
        our_ip: Ipv6Addr,
    ) -> EthernetFrame<NeighborAdvertisement> {
        let (destination, dst_mac, solicited) = if self.is_dad() {
            (ALL_NODES, multicast_mac(ALL_NODES), false)
        } else {
            (self.source, self.source_mac.unwrap_or(requester_mac), true)
        };
        EthernetFrame {
            eth: EthernetHeader {
                dst: dst_mac,
                src: our_mac,
            },
            message: NeighborAdvertisement {
                source: our_ip,
                destination,
                router: false,
                solicited,
                override_: true,
                target: self.target,
                target_mac: Some(our_mac),
            },
        }
    }
}

/// The unsolicited Advertisement announcing that `vip` is at `our_mac`: to all-nodes,
/// Solicited clear, Override set, with the target link-layer option (RFC 4861 §7.2.6), as
/// MetalLB sends on gaining an address.
pub fn unsolicited(
    vip: Ipv6Addr,
    our_mac: MacAddr,
    our_ip: Ipv6Addr,
) -> EthernetFrame<NeighborAdvertisement> {
    EthernetFrame {
        eth: EthernetHeader {
            dst: multicast_mac(ALL_NODES),
            src: our_mac,
        },
        message: NeighborAdvertisement {
            source: our_ip,
            destination: ALL_NODES,
            router: false,
            solicited: false,
            override_: true,
            target: vip,
            target_mac: Some(our_mac),
        },
    }
}

/// The solicited-node multicast group of `addr`, ff02::1:ffXX:XXXX with its low 24 bits
/// (RFC 4291 §2.7.1). Solicitations for a VIP are sent there, so the speaker must join it on
/// each interface that announces the VIP.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// Whether `addr` is in ff02::1:ff00:0/104.
pub fn is_solicited_node(addr: Ipv6Addr) -> bool {
    addr.octets()[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]
}

/// The Ethernet address an IPv6 multicast group maps to: 33:33 and the group's low 32 bits
/// (RFC 2464 §7).
pub fn multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// Decodes the payload of an IPv6 frame.
pub(crate) fn decode_ipv6<M>(payload: &[u8]) -> Result<M, DropReason>
where
    M: From<NeighborSolicitation> + From<NeighborAdvertisement>,
{
    if payload.len() < IPV6_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let packet = Ipv6Packet::new_unchecked(payload);
    if packet.version() != 6 {
        return Err(DropReason::BadIpVersion);
    }
    // Also rejects a payload length that runs past the frame.
    packet.check_len().map_err(|_| DropReason::Truncated)?;
    if packet.next_header() != IpProtocol::Icmpv6 {
        return Err(DropReason::NotIcmpv6);
    }
    // Ethernet padding after the IPv6 payload is not part of the checksummed message.
    let icmp = &payload[IPV6_HEADER_LEN..packet.total_len()];
    decode_icmpv6(
        packet.src_addr(),
        packet.dst_addr(),
        packet.hop_limit(),
        icmp,
    )
}

/// Decodes an ICMPv6 message whose IPv6 header was `source`, `destination` and `hop_limit`.
/// For raw ICMPv6 sockets; [`super::Frame::decode`] uses it for whole frames.
pub fn decode_icmpv6<M>(
    source: Ipv6Addr,
    destination: Ipv6Addr,
    hop_limit: u8,
    icmp: &[u8],
) -> Result<M, DropReason>
where
    M: From<NeighborSolicitation> + From<NeighborAdvertisement>,
{
    let Some(&msg_type) = icmp.first() else {
        return Err(DropReason::Truncated);
    };
    let msg_type = Icmpv6Message::from(msg_type);
    if msg_type != Icmpv6Message::NeighborSolicit && msg_type != Icmpv6Message::NeighborAdvert {
        return Err(DropReason::NotNeighborDiscovery);
    }
    // RFC 4861 §7.1.1/§7.1.2: "ICMP length (derived from the IP length) is 24 or more octets."
    let packet = Icmpv6Packet::new_checked(icmp).map_err(|_| DropReason::Truncated)?;
    if hop_limit != NDP_HOP_LIMIT {
        return Err(DropReason::BadHopLimit);
    }
    if packet.msg_code() != 0 {
        return Err(DropReason::BadCode);
    }
    // Note: smoltcp skips this check when built with `--cfg fuzzing`, so fuzzers reach the
    // option parser without having to forge checksums.
    if !packet.verify_checksum(&source, &destination) {
        return Err(DropReason::BadChecksum);
    }
    // RFC 4291 §2.7: multicast addresses are never sources.
    if source.is_multicast() {
        return Err(DropReason::BadSender);
    }
    // What is left to fail is the options: a length of 0, or one running past the message
    // (RFC 4861 §7.1: "All included options have a length that is greater than zero").
    let repr = NdiscRepr::parse(&packet).map_err(|_| DropReason::BadOption)?;
    match repr {
        NdiscRepr::NeighborSolicit {
            target_addr,
            lladdr,
        } => {
            let source_mac = link_layer_mac(lladdr)?;
            if target_addr.is_multicast() {
                return Err(DropReason::MulticastTarget);
            }
            if source.is_unspecified() {
                if source_mac.is_some() {
                    return Err(DropReason::DadWithLinkLayerAddress);
                }
                if !is_solicited_node(destination) {
                    return Err(DropReason::DadNotToSolicitedNode);
                }
            }
            Ok(M::from(NeighborSolicitation {
                source,
                destination,
                target: target_addr,
                source_mac,
            }))
        }
        NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr,
        } => {
            let target_mac = link_layer_mac(lladdr)?;
            // An advertisement claims an address of its sender, so it has one.
            if source.is_unspecified() {
                return Err(DropReason::BadSender);
            }
            if target_addr.is_multicast() {
                return Err(DropReason::MulticastTarget);
            }
            let solicited = flags.contains(NdiscNeighborFlags::SOLICITED);
            if solicited && destination.is_multicast() {
                return Err(DropReason::SolicitedToMulticast);
            }
            Ok(M::from(NeighborAdvertisement {
                source,
                destination,
                router: flags.contains(NdiscNeighborFlags::ROUTER),
                solicited,
                override_: flags.contains(NdiscNeighborFlags::OVERRIDE),
                target: target_addr,
                target_mac,
            }))
        }
        _ => Err(DropReason::NotNeighborDiscovery),
    }
}

/// A link-layer address option's MAC. smoltcp hands over up to `MAX_HARDWARE_ADDRESS_LEN`
/// octets (6, or 8 if anything in the build enables its 802.15.4 medium); Ethernet's is the
/// first 6 (RFC 2464 §6). Fewer is malformed; a group address can never be a neighbour.
fn link_layer_mac(lladdr: Option<RawHardwareAddress>) -> Result<Option<MacAddr>, DropReason> {
    let Some(raw) = lladdr else {
        return Ok(None);
    };
    let bytes = raw.as_bytes();
    let Some(first6) = bytes.get(..6) else {
        return Err(DropReason::BadOption);
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(first6);
    let mac = MacAddr(mac);
    if !mac.is_unicast() {
        return Err(DropReason::BadSender);
    }
    Ok(Some(mac))
}

impl NeighborAdvertisement {
    /// The ICMPv6 message alone, checksummed, for a raw ICMPv6 socket (the kernel writes the
    /// IPv6 header; set its hop limit to 255 with `IPV6_UNICAST_HOPS`/`IPV6_MULTICAST_HOPS`).
    pub fn to_icmpv6_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; icmp_len(self.target_mac)];
        self.emit_icmpv6(&mut buf);
        buf
    }

    fn emit_icmpv6(&self, buf: &mut [u8]) {
        let mut flags = NdiscNeighborFlags::empty();
        flags.set(NdiscNeighborFlags::ROUTER, self.router);
        flags.set(NdiscNeighborFlags::SOLICITED, self.solicited);
        flags.set(NdiscNeighborFlags::OVERRIDE, self.override_);
        let repr = NdiscRepr::NeighborAdvert {
            flags,
            target_addr: self.target,
            lladdr: self
                .target_mac
                .map(|m| RawHardwareAddress::from(m.to_smoltcp())),
        };
        let mut packet = Icmpv6Packet::new_unchecked(buf);
        repr.emit(&mut packet);
        packet.fill_checksum(&self.source, &self.destination);
    }
}

impl NeighborSolicitation {
    /// The ICMPv6 message alone, checksummed, for a raw ICMPv6 socket.
    pub fn to_icmpv6_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; icmp_len(self.source_mac)];
        self.emit_icmpv6(&mut buf);
        buf
    }

    fn emit_icmpv6(&self, buf: &mut [u8]) {
        let repr = NdiscRepr::NeighborSolicit {
            target_addr: self.target,
            lladdr: self
                .source_mac
                .map(|m| RawHardwareAddress::from(m.to_smoltcp())),
        };
        let mut packet = Icmpv6Packet::new_unchecked(buf);
        repr.emit(&mut packet);
        packet.fill_checksum(&self.source, &self.destination);
    }
}

fn icmp_len(mac: Option<MacAddr>) -> usize {
    NDP_BASE_LEN
        + if mac.is_some() {
            LINK_LAYER_OPTION_LEN
        } else {
            0
        }
}

/// A whole frame: Ethernet, IPv6 with hop limit 255, then the ICMPv6 message from `emit`.
fn encode(
    eth: EthernetHeader,
    source: Ipv6Addr,
    destination: Ipv6Addr,
    icmp_len: usize,
    emit: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + icmp_len];
    let payload = emit_ethernet(&mut buf, eth, EthernetProtocol::Ipv6.into());
    let (header, icmp) = payload.split_at_mut(IPV6_HEADER_LEN);
    Ipv6Repr {
        src_addr: source,
        dst_addr: destination,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp_len,
        hop_limit: NDP_HOP_LIMIT,
    }
    .emit(&mut Ipv6Packet::new_unchecked(header));
    emit(icmp);
    buf
}

pub(crate) fn encode_advertisement(eth: EthernetHeader, na: &NeighborAdvertisement) -> Vec<u8> {
    encode(
        eth,
        na.source,
        na.destination,
        icmp_len(na.target_mac),
        |buf| na.emit_icmpv6(buf),
    )
}

pub(crate) fn encode_solicitation(eth: EthernetHeader, ns: &NeighborSolicitation) -> Vec<u8> {
    encode(
        eth,
        ns.source,
        ns.destination,
        icmp_len(ns.source_mac),
        |buf| ns.emit_icmpv6(buf),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::tests::{any_unicast_mac, hex, mac};
    use crate::wire::{Frame, Message};
    use proptest::prelude::*;

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// 2001:db8::10 at 02:00:5e:10:00:01 asks who has 2001:db8::100, on its solicited-node
    /// group, with a source link-layer option. Checksum computed independently (Python, RFC
    /// 1071 over the pseudo-header).
    const SOLICITATION: &str = "3333ff000100 02005e100001 86dd
        60000000 0020 3a ff 20010db8000000000000000000000010 ff0200000000000000000001ff000100
        87 00 bc0b 00000000 20010db8000000000000000000000100 01 01 02005e100001";

    /// 02:00:5e:10:00:02 answers from 2001:db8::2: 2001:db8::100 is here (S=1, O=1).
    const ADVERTISEMENT: &str = "02005e100001 02005e100002 86dd
        60000000 0020 3a ff 20010db8000000000000000000000002 20010db8000000000000000000000010
        88 00 2b54 60000000 20010db8000000000000000000000100 02 01 02005e100002";

    /// The unsolicited announcement of 2001:db8::100 to all-nodes (S=0, O=1).
    const UNSOLICITED: &str = "333300000001 02005e100002 86dd
        60000000 0020 3a ff 20010db8000000000000000000000002 ff020000000000000000000000000001
        88 00 9a19 20000000 20010db8000000000000000000000100 02 01 02005e100002";

    /// A unicast NUD probe from 2001:db8::10, without a source link-layer option.
    const NUD_PROBE: &str = "02005e100002 02005e100001 86dd
        60000000 0018 3a ff 20010db8000000000000000000000010 20010db8000000000000000000000100
        87 00 ed71 00000000 20010db8000000000000000000000100";

    /// A DAD probe for 2001:db8::100: unspecified source, no option.
    const DAD_PROBE: &str = "3333ff000100 02005e100001 86dd
        60000000 0018 3a ff 00000000000000000000000000000000 ff0200000000000000000001ff000100
        87 00 4aef 00000000 20010db8000000000000000000000100";

    const ETH_IP: usize = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN;

    fn decode_ok(bytes: &[u8]) -> Frame {
        Frame::decode(bytes).unwrap_or_else(|e| panic!("dropped: {e}"))
    }

    fn solicitation(frame: &Frame) -> NeighborSolicitation {
        match frame.message {
            Message::NeighborSolicitation(ns) => ns,
            other => panic!("not a solicitation: {other:?}"),
        }
    }

    /// RFC 1071 checksum over the IPv6 pseudo-header, written independently of smoltcp.
    fn icmpv6_checksum(frame: &[u8]) -> u16 {
        let ip = &frame[ETHERNET_HEADER_LEN..];
        let icmp = &ip[IPV6_HEADER_LEN..];
        let mut data = Vec::new();
        data.extend_from_slice(&ip[8..40]);
        data.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        data.extend_from_slice(&[0, 0, 0, 58]);
        data.extend_from_slice(icmp);
        data[40 + 2..40 + 4].copy_from_slice(&[0, 0]);
        if data.len() % 2 == 1 {
            data.push(0);
        }
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// Rewrites the checksum so a test reaches the rule after it.
    fn fix_checksum(frame: &mut [u8]) {
        let c = icmpv6_checksum(frame);
        frame[ETH_IP + 2..ETH_IP + 4].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn solicitation_decodes_from_real_bytes_and_back() {
        let bytes = hex(SOLICITATION);
        let frame = decode_ok(&bytes);
        assert_eq!(frame.eth.src, mac(1));
        assert_eq!(
            frame.eth.dst,
            multicast_mac(solicited_node(ip("2001:db8::100")))
        );
        let ns = solicitation(&frame);
        assert_eq!(
            ns,
            NeighborSolicitation {
                source: ip("2001:db8::10"),
                destination: ip("ff02::1:ff00:100"),
                target: ip("2001:db8::100"),
                source_mac: Some(mac(1)),
            }
        );
        assert!(!ns.is_dad());
        assert_eq!(frame.to_bytes(), bytes);
    }

    #[test]
    fn answer_is_the_real_advertisement() {
        let frame = decode_ok(&hex(SOLICITATION));
        let answer = solicitation(&frame)
            .answer(frame.eth.src, mac(2), ip("2001:db8::2"))
            .widen::<Message>();
        let bytes = answer.to_bytes();
        assert_eq!(bytes, hex(ADVERTISEMENT));
        assert_eq!(
            icmpv6_checksum(&bytes).to_be_bytes(),
            bytes[ETH_IP + 2..ETH_IP + 4]
        );
        assert_eq!(decode_ok(&bytes), answer);
        let Message::NeighborAdvertisement(na) = answer.message else {
            unreachable!()
        };
        assert!(na.solicited && na.override_ && !na.router);
        assert_eq!(na.target_mac, Some(mac(2)));
        assert_eq!(bytes[ETHERNET_HEADER_LEN + 7], 255, "hop limit");
    }

    #[test]
    fn unsolicited_advertisement_is_the_real_one() {
        let frame = unsolicited(ip("2001:db8::100"), mac(2), ip("2001:db8::2")).widen::<Message>();
        let bytes = frame.to_bytes();
        assert_eq!(bytes, hex(UNSOLICITED));
        assert_eq!(decode_ok(&bytes), frame);
    }

    #[test]
    fn nud_probe_without_option_is_answered_at_the_ethernet_source() {
        let frame = decode_ok(&hex(NUD_PROBE));
        let ns = solicitation(&frame);
        assert_eq!(ns.source_mac, None);
        assert_eq!(frame.to_bytes(), hex(NUD_PROBE));
        let answer = ns
            .answer(frame.eth.src, mac(2), ip("2001:db8::2"))
            .widen::<Message>();
        assert_eq!(answer.eth.dst, mac(1));
        let Message::NeighborAdvertisement(na) = answer.message else {
            unreachable!()
        };
        assert_eq!(na.destination, ip("2001:db8::10"));
        assert!(na.solicited);
    }

    #[test]
    fn dad_probe_is_answered_to_all_nodes_unsolicited() {
        let frame = decode_ok(&hex(DAD_PROBE));
        let ns = solicitation(&frame);
        assert!(ns.is_dad());
        assert_eq!(frame.to_bytes(), hex(DAD_PROBE));
        let answer = ns
            .answer(frame.eth.src, mac(2), ip("2001:db8::2"))
            .widen::<Message>();
        assert_eq!(answer.eth.dst, MacAddr([0x33, 0x33, 0, 0, 0, 1]));
        let Message::NeighborAdvertisement(na) = answer.message else {
            unreachable!()
        };
        assert_eq!(na.destination, ALL_NODES);
        assert!(!na.solicited && na.override_);
        assert_eq!(decode_ok(&answer.to_bytes()), answer);
    }

    #[test]
    fn raw_icmpv6_socket_path_matches_the_frame_path() {
        let bytes = hex(SOLICITATION);
        let via_socket = decode_icmpv6(
            ip("2001:db8::10"),
            ip("ff02::1:ff00:100"),
            255,
            &bytes[ETH_IP..],
        );
        assert_eq!(via_socket, Ok(decode_ok(&bytes).message));
        let answer = hex(ADVERTISEMENT);
        let Message::NeighborAdvertisement(na) = decode_ok(&answer).message else {
            unreachable!()
        };
        assert_eq!(na.to_icmpv6_bytes(), answer[ETH_IP..]);
        let Message::NeighborSolicitation(ns) = decode_ok(&bytes).message else {
            unreachable!()
        };
        assert_eq!(ns.to_icmpv6_bytes(), bytes[ETH_IP..]);
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        let mut bytes = hex(NUD_PROBE);
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(decode_ok(&bytes).to_bytes(), hex(NUD_PROBE));
    }

    #[test]
    fn rfc_4861_rules_are_enforced() {
        let good = hex(SOLICITATION);
        let edit = |f: &dyn Fn(&mut Vec<u8>), fix: bool| {
            let mut b = good.clone();
            f(&mut b);
            if fix {
                fix_checksum(&mut b);
            }
            Frame::decode(&b)
        };
        let ip_at = ETHERNET_HEADER_LEN;
        // Hop limit is outside the checksum.
        assert_eq!(
            edit(&|b| b[ip_at + 7] = 254, false),
            Err(DropReason::BadHopLimit)
        );
        assert_eq!(
            edit(&|b| b[ip_at + 7] = 1, false),
            Err(DropReason::BadHopLimit)
        );
        assert_eq!(edit(&|b| b[ETH_IP + 1] = 1, true), Err(DropReason::BadCode));
        assert_eq!(
            edit(&|b| b[ETH_IP + 2] ^= 0xff, false),
            Err(DropReason::BadChecksum)
        );
        assert_eq!(
            edit(&|b| b[ETH_IP + 30] ^= 1, false),
            Err(DropReason::BadChecksum)
        );
        // Target ff02::1.
        let all_nodes = ALL_NODES.octets();
        assert_eq!(
            edit(
                &|b| b[ETH_IP + 8..ETH_IP + 24].copy_from_slice(&all_nodes),
                true
            ),
            Err(DropReason::MulticastTarget)
        );
        // An option of length 0.
        assert_eq!(
            edit(&|b| b[ETH_IP + 25] = 0, true),
            Err(DropReason::BadOption)
        );
        // An option running past the message.
        assert_eq!(
            edit(&|b| b[ETH_IP + 25] = 2, true),
            Err(DropReason::BadOption)
        );
        // A multicast source link-layer address.
        assert_eq!(
            edit(&|b| b[ETH_IP + 26] = 0x33, true),
            Err(DropReason::BadSender)
        );
        // A multicast IPv6 source.
        assert_eq!(
            edit(&|b| b[ip_at + 8] = 0xff, true),
            Err(DropReason::BadSender)
        );
        // DAD with a source link-layer option: the solicitation with its source zeroed.
        assert_eq!(
            edit(&|b| b[ip_at + 8..ip_at + 24].fill(0), true),
            Err(DropReason::DadWithLinkLayerAddress)
        );
        // Not ICMPv6 (UDP), not IPv6.
        assert_eq!(
            edit(&|b| b[ip_at + 6] = 17, false),
            Err(DropReason::NotIcmpv6)
        );
        assert_eq!(
            edit(&|b| b[ip_at] = 0x40, false),
            Err(DropReason::BadIpVersion)
        );
        // ICMPv6 echo request, router solicitation.
        assert_eq!(
            edit(&|b| b[ETH_IP] = 128, false),
            Err(DropReason::NotNeighborDiscovery)
        );
        assert_eq!(
            edit(&|b| b[ETH_IP] = 133, false),
            Err(DropReason::NotNeighborDiscovery)
        );
        // A payload length running past the frame.
        assert_eq!(
            edit(&|b| b[ip_at + 5] = 0x40, false),
            Err(DropReason::Truncated)
        );
    }

    #[test]
    fn dad_probe_not_to_a_solicited_node_group_is_dropped() {
        let mut b = hex(DAD_PROBE);
        let ip_at = ETHERNET_HEADER_LEN;
        b[ip_at + 24..ip_at + 40].copy_from_slice(&ALL_NODES.octets());
        fix_checksum(&mut b);
        assert_eq!(Frame::decode(&b), Err(DropReason::DadNotToSolicitedNode));
    }

    #[test]
    fn solicited_advertisement_to_multicast_is_dropped() {
        let mut b = hex(UNSOLICITED);
        b[ETH_IP + 4] = 0x60; // S=1, O=1
        fix_checksum(&mut b);
        assert_eq!(Frame::decode(&b), Err(DropReason::SolicitedToMulticast));
        // The advertisement's other rules.
        let mut b = hex(ADVERTISEMENT);
        b[ETHERNET_HEADER_LEN + 7] = 64;
        assert_eq!(Frame::decode(&b), Err(DropReason::BadHopLimit));
        let mut b = hex(ADVERTISEMENT);
        b[ETH_IP + 8] = 0xff;
        fix_checksum(&mut b);
        assert_eq!(Frame::decode(&b), Err(DropReason::MulticastTarget));
    }

    #[test]
    fn truncated_messages_are_dropped() {
        let good = hex(SOLICITATION);
        for len in ETHERNET_HEADER_LEN..good.len() {
            assert_eq!(
                Frame::decode(&good[..len]),
                Err(DropReason::Truncated),
                "length {len}"
            );
        }
        // An ICMPv6 message shorter than 24 octets, with a consistent IPv6 length.
        let mut short = good[..ETH_IP + 20].to_vec();
        short[ETHERNET_HEADER_LEN + 5] = 20;
        assert_eq!(Frame::decode(&short), Err(DropReason::Truncated));
        assert_eq!(
            decode_icmpv6::<Message>(ip("2001:db8::10"), ip("2001:db8::100"), 255, &[]),
            Err(DropReason::Truncated)
        );
    }

    #[test]
    fn solicited_node_group_and_mac() {
        let vip = ip("2001:db8::1:2345:6789");
        assert_eq!(solicited_node(vip), ip("ff02::1:ff45:6789"));
        assert!(is_solicited_node(solicited_node(vip)));
        assert!(!is_solicited_node(ALL_NODES));
        assert!(!is_solicited_node(vip));
        assert_eq!(
            multicast_mac(solicited_node(vip)),
            MacAddr([0x33, 0x33, 0xff, 0x45, 0x67, 0x89])
        );
        assert_eq!(multicast_mac(ALL_NODES), MacAddr([0x33, 0x33, 0, 0, 0, 1]));
    }

    fn doc_ipv6() -> impl Strategy<Value = Ipv6Addr> {
        any::<[u8; 12]>().prop_map(|low| {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            o[4..].copy_from_slice(&low);
            Ipv6Addr::from(o)
        })
    }

    proptest! {
        #[test]
        fn solicitation_and_answer_round_trip(
            asker in doc_ipv6(),
            asker_mac in any_unicast_mac(),
            with_option in any::<bool>(),
            dad in any::<bool>(),
            target in doc_ipv6(),
            owner_ip in doc_ipv6(),
            owner_mac in any_unicast_mac(),
        ) {
            let group = solicited_node(target);
            let ns = NeighborSolicitation {
                source: if dad { Ipv6Addr::UNSPECIFIED } else { asker },
                destination: group,
                target,
                source_mac: (with_option && !dad).then_some(asker_mac),
            };
            let frame = Frame {
                eth: EthernetHeader { dst: multicast_mac(group), src: asker_mac },
                message: Message::NeighborSolicitation(ns),
            };
            let bytes = frame.to_bytes();
            prop_assert_eq!(icmpv6_checksum(&bytes).to_be_bytes(), [bytes[ETH_IP + 2], bytes[ETH_IP + 3]]);
            prop_assert_eq!(Frame::decode(&bytes), Ok(frame));
            let answer = ns.answer(asker_mac, owner_mac, owner_ip).widen::<Message>();
            let bytes = answer.to_bytes();
            prop_assert_eq!(icmpv6_checksum(&bytes).to_be_bytes(), [bytes[ETH_IP + 2], bytes[ETH_IP + 3]]);
            prop_assert_eq!(Frame::decode(&bytes), Ok(answer));
            prop_assert_eq!(answer.eth.dst, if dad { multicast_mac(ALL_NODES) } else { asker_mac });
        }

        #[test]
        fn unsolicited_round_trip(vip in doc_ipv6(), owner_ip in doc_ipv6(), owner_mac in any_unicast_mac()) {
            let frame = unsolicited(vip, owner_mac, owner_ip).widen::<Message>();
            prop_assert_eq!(Frame::decode(&frame.to_bytes()), Ok(frame));
        }

        #[test]
        fn arbitrary_icmpv6_never_panics(
            hop_limit in prop_oneof![Just(255u8), any::<u8>()],
            msg_type in prop_oneof![Just(135u8), Just(136u8), any::<u8>()],
            rest in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut icmp = vec![msg_type];
            icmp.extend_from_slice(&rest);
            let _ = decode_icmpv6::<Message>(Ipv6Addr::UNSPECIFIED, ip("ff02::1:ff00:1"), hop_limit, &icmp);
            let _ = decode_icmpv6::<Message>(ip("2001:db8::1"), ip("2001:db8::2"), hop_limit, &icmp);
        }
    }
}
