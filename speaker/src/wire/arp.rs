//! ARP for Ethernet and IPv4 (RFC 826): requests to answer, replies that reveal a conflicting
//! owner, and the frames we send — replies and gratuitous announcements.

use std::net::Ipv4Addr;

use smoltcp::wire::{ArpHardware, ArpOperation, ArpPacket, ArpRepr, EthernetProtocol};

use super::drop_reason::DropReason;
use super::ethernet::{ETHERNET_HEADER_LEN, EthernetFrame, EthernetHeader, MacAddr, emit_ethernet};

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_PACKET_LEN: usize = 28;
/// Length of an ARP frame before the NIC pads it to the 60-octet Ethernet minimum.
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_PACKET_LEN;

/// "Who has `target_ip`? Tell `sender_ip` at `sender_mac`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRequest {
    /// The asker's MAC, where the answer goes.
    pub sender_mac: MacAddr,
    /// The asker's IP; 0.0.0.0 in an RFC 5227 probe.
    pub sender_ip: Ipv4Addr,
    /// Ignored by receivers; usually zero, broadcast in MetalLB's gratuitous request.
    pub target_mac: MacAddr,
    /// The address asked about.
    pub target_ip: Ipv4Addr,
}

/// "`sender_ip` is at `sender_mac`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpReply {
    /// The MAC that claims `sender_ip`.
    pub sender_mac: MacAddr,
    /// The claimed address.
    pub sender_ip: Ipv4Addr,
    /// The asker's MAC (broadcast in a gratuitous reply).
    pub target_mac: MacAddr,
    /// The asker's IP (the claimed address itself in a gratuitous reply).
    pub target_ip: Ipv4Addr,
}

impl ArpRequest {
    /// A gratuitous request (sender IP = target IP): the sender announces it has `sender_ip`.
    /// Not a question to answer; from another MAC for an owned IP it is a conflict.
    pub fn is_announcement(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// The reply claiming `target_ip` for `our_mac`, unicast to the asker (RFC 826: swap sender
    /// and target, fill in our hardware address). For a probe the target IP is 0.0.0.0, as
    /// RFC 5227 §2.1.1 expects.
    pub fn answer(&self, our_mac: MacAddr) -> EthernetFrame<ArpReply> {
        EthernetFrame {
            eth: EthernetHeader {
                dst: self.sender_mac,
                src: our_mac,
            },
            message: ArpReply {
                sender_mac: our_mac,
                sender_ip: self.target_ip,
                target_mac: self.sender_mac,
                target_ip: self.sender_ip,
            },
        }
    }
}

/// The gratuitous ARP burst for `vip`: a broadcast request and a broadcast reply, both with
/// sender = target = `vip` and target MAC broadcast, exactly as MetalLB's layer-2 speaker
/// sends them. Both, because hosts differ in which one updates an existing
/// cache entry (RFC 5227 §3 recommends requests; older stacks honour only replies).
pub fn gratuitous(
    vip: Ipv4Addr,
    our_mac: MacAddr,
) -> (EthernetFrame<ArpRequest>, EthernetFrame<ArpReply>) {
    let eth = EthernetHeader {
        dst: MacAddr::BROADCAST,
        src: our_mac,
    };
    (
        EthernetFrame {
            eth,
            message: ArpRequest {
                sender_mac: our_mac,
                sender_ip: vip,
                target_mac: MacAddr::BROADCAST,
                target_ip: vip,
            },
        },
        EthernetFrame {
            eth,
            message: ArpReply {
                sender_mac: our_mac,
                sender_ip: vip,
                target_mac: MacAddr::BROADCAST,
                target_ip: vip,
            },
        },
    )
}

/// Decodes the payload of an ARP frame into a request or a reply, as the caller's message type.
pub(crate) fn decode<M: From<ArpRequest> + From<ArpReply>>(
    payload: &[u8],
) -> Result<M, DropReason> {
    // The fixed part first, so a packet with absurd address lengths is reported as such and
    // not as merely truncated.
    if payload.len() < 8 {
        return Err(DropReason::Truncated);
    }
    let packet = ArpPacket::new_unchecked(payload);
    if packet.hardware_type() != ArpHardware::Ethernet || packet.hardware_len() != 6 {
        return Err(DropReason::BadHardware);
    }
    if packet.protocol_type() != EthernetProtocol::Ipv4 || packet.protocol_len() != 4 {
        return Err(DropReason::BadProtocol);
    }
    packet.check_len().map_err(|_| DropReason::Truncated)?;
    let Ok(ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_hardware_addr,
        target_protocol_addr,
    }) = ArpRepr::parse(&packet)
    else {
        // Unreachable after the checks above; a future smoltcp variant lands here.
        return Err(DropReason::BadProtocol);
    };
    let sender_mac = MacAddr::from_smoltcp(source_hardware_addr);
    let sender_ip = source_protocol_addr;
    let target_mac = MacAddr::from_smoltcp(target_hardware_addr);
    let target_ip = target_protocol_addr;
    // A reply goes to the sender's MAC: never let it be a group address. A sender IP that is
    // multicast or broadcast is bogus on any ARP packet (RFC 1812 §3.3.2, and Linux drops it).
    if !sender_mac.is_unicast() || sender_ip.is_multicast() || sender_ip.is_broadcast() {
        return Err(DropReason::BadSender);
    }
    match operation {
        ArpOperation::Request => Ok(M::from(ArpRequest {
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        })),
        // A reply claims its sender IP, so it must have one.
        ArpOperation::Reply if sender_ip.is_unspecified() => Err(DropReason::BadSender),
        ArpOperation::Reply => Ok(M::from(ArpReply {
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        })),
        ArpOperation::Unknown(_) => Err(DropReason::BadOperation),
    }
}

/// The opcode to encode.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Operation {
    Request,
    Reply,
}

/// The four addresses of an ARP packet, in wire order.
pub(crate) type Addresses = (MacAddr, Ipv4Addr, MacAddr, Ipv4Addr);

impl ArpRequest {
    pub(crate) fn fields(&self) -> Addresses {
        (
            self.sender_mac,
            self.sender_ip,
            self.target_mac,
            self.target_ip,
        )
    }
}

impl ArpReply {
    pub(crate) fn fields(&self) -> Addresses {
        (
            self.sender_mac,
            self.sender_ip,
            self.target_mac,
            self.target_ip,
        )
    }
}

/// Encodes an ARP frame of [`ARP_FRAME_LEN`] octets.
pub(crate) fn encode(eth: EthernetHeader, op: Operation, addresses: Addresses) -> Vec<u8> {
    let (sender_mac, sender_ip, target_mac, target_ip) = addresses;
    let mut buf = vec![0u8; ARP_FRAME_LEN];
    let payload = emit_ethernet(&mut buf, eth, EthernetProtocol::Arp.into());
    let repr = ArpRepr::EthernetIpv4 {
        operation: match op {
            Operation::Request => ArpOperation::Request,
            Operation::Reply => ArpOperation::Reply,
        },
        source_hardware_addr: sender_mac.to_smoltcp(),
        source_protocol_addr: sender_ip,
        target_hardware_addr: target_mac.to_smoltcp(),
        target_protocol_addr: target_ip,
    };
    repr.emit(&mut ArpPacket::new_unchecked(payload));
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::tests::{any_unicast_mac, hex, mac};
    use crate::wire::{Frame, Message};
    use proptest::prelude::*;

    /// 192.0.2.10 at 02:00:5e:10:00:01 asks, by broadcast, who has 192.0.2.100. As captured,
    /// with the 18 octets of padding that bring it to the Ethernet minimum.
    const REQUEST: &str = "ffffffffffff 02005e100001 0806
        0001 0800 06 04 0001 02005e100001 c000020a 000000000000 c0000264
        000000000000000000000000000000000000";

    /// 02:00:5e:10:00:02 answers: 192.0.2.100 is at 02:00:5e:10:00:02.
    const REPLY: &str = "02005e100001 02005e100002 0806
        0001 0800 06 04 0002 02005e100002 c0000264 02005e100001 c000020a";

    /// The gratuitous request and reply, as frames of any message.
    fn burst(vip: Ipv4Addr, our_mac: MacAddr) -> [Frame; 2] {
        let (request, reply) = gratuitous(vip, our_mac);
        [request.widen(), reply.widen()]
    }

    fn decode_ok(bytes: &[u8]) -> Frame {
        Frame::decode(bytes).unwrap_or_else(|e| panic!("dropped: {e}"))
    }

    #[test]
    fn request_decodes_from_real_bytes() {
        let frame = decode_ok(&hex(REQUEST));
        assert_eq!(frame.eth.dst, MacAddr::BROADCAST);
        assert_eq!(frame.eth.src, mac(1));
        let Message::ArpRequest(req) = frame.message else {
            panic!("not a request: {frame:?}")
        };
        assert_eq!(req.sender_mac, mac(1));
        assert_eq!(req.sender_ip, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(req.target_mac, MacAddr::ZERO);
        assert_eq!(req.target_ip, Ipv4Addr::new(192, 0, 2, 100));
        assert!(!req.sender_ip.is_unspecified());
        assert!(!req.is_announcement());
        assert!(frame.eth.addressed_to(mac(2)));
        // Re-encoded: the same bytes without the padding.
        assert_eq!(frame.to_bytes(), hex(REQUEST)[..ARP_FRAME_LEN]);
    }

    #[test]
    fn answer_is_the_real_reply() {
        let frame = decode_ok(&hex(REQUEST));
        let Message::ArpRequest(req) = frame.message else {
            unreachable!()
        };
        let reply: Frame = req.answer(mac(2)).widen();
        assert_eq!(reply.to_bytes(), hex(REPLY));
        assert_eq!(decode_ok(&hex(REPLY)), reply);
    }

    #[test]
    fn gratuitous_burst_is_what_metallb_sends() {
        let vip = Ipv4Addr::new(198, 51, 100, 7);
        let [request, reply] = burst(vip, mac(2));
        let header = "ffffffffffff 02005e100002 0806 0001 0800 06 04";
        let body = "02005e100002 c6336407 ffffffffffff c6336407";
        assert_eq!(request.to_bytes(), hex(&format!("{header} 0001 {body}")));
        assert_eq!(reply.to_bytes(), hex(&format!("{header} 0002 {body}")));
        let Message::ArpRequest(req) = decode_ok(&request.to_bytes()).message else {
            panic!("request did not decode as one")
        };
        assert!(req.is_announcement());
        assert_eq!(decode_ok(&reply.to_bytes()), reply);
    }

    #[test]
    fn probe_is_answered_with_target_ip_zero() {
        let probe = ArpRequest {
            sender_mac: mac(1),
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(203, 0, 113, 5),
        };
        // An RFC 5227 §2.1.1 probe: the sender has no address yet (sender IP 0.0.0.0). A probe
        // for an owned IP is answered like any request, which is how the prober learns it is
        // taken.
        let reply = probe.answer(mac(2)).message;
        assert_eq!(reply.sender_ip, Ipv4Addr::new(203, 0, 113, 5));
        assert_eq!(reply.target_ip, Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn rfc_826_rules_are_enforced() {
        let good = hex(REQUEST);
        let with = |offset: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[offset..offset + bytes.len()].copy_from_slice(bytes);
            Frame::decode(&b)
        };
        // ARP payload starts at 14.
        assert_eq!(with(14, &[0x00, 0x06]), Err(DropReason::BadHardware)); // IEEE 802
        assert_eq!(with(18, &[8]), Err(DropReason::BadHardware)); // hlen 8
        assert_eq!(with(16, &[0x86, 0xdd]), Err(DropReason::BadProtocol)); // IPv6
        assert_eq!(with(19, &[16]), Err(DropReason::BadProtocol)); // plen 16
        assert_eq!(with(20, &[0x00, 0x03]), Err(DropReason::BadOperation)); // RARP request
        assert_eq!(with(20, &[0x00, 0x08]), Err(DropReason::BadOperation)); // InARP request
        assert_eq!(with(22, &[0xff; 6]), Err(DropReason::BadSender)); // broadcast SHA
        assert_eq!(
            with(22, &[0x01, 0, 0x5e, 0, 0, 1]),
            Err(DropReason::BadSender)
        ); // multicast
        assert_eq!(with(28, &[224, 0, 0, 1]), Err(DropReason::BadSender)); // multicast SPA
        assert_eq!(with(28, &[255, 255, 255, 255]), Err(DropReason::BadSender));
        // A reply that claims 0.0.0.0.
        let mut reply = hex(REPLY);
        reply[28..32].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(Frame::decode(&reply), Err(DropReason::BadSender));
    }

    #[test]
    fn truncated_packets_are_dropped() {
        let good = hex(REQUEST);
        for len in ETHERNET_HEADER_LEN..ARP_FRAME_LEN {
            assert_eq!(
                Frame::decode(&good[..len]),
                Err(DropReason::Truncated),
                "length {len}"
            );
        }
    }

    #[test]
    fn unicast_requests_to_other_macs_are_not_addressed_to_us() {
        let mut b = hex(REQUEST);
        b[..6].copy_from_slice(&mac(3).0);
        let frame = decode_ok(&b);
        assert!(!frame.eth.addressed_to(mac(2)));
        assert!(frame.eth.addressed_to(mac(3)));
    }

    fn doc_ipv4() -> impl Strategy<Value = Ipv4Addr> {
        (
            prop_oneof![Just([192, 0, 2]), Just([198, 51, 100]), Just([203, 0, 113])],
            any::<u8>(),
        )
            .prop_map(|([a, b, c], d)| Ipv4Addr::new(a, b, c, d))
    }

    proptest! {
        #[test]
        fn request_reply_round_trip(
            asker in any_unicast_mac(),
            owner in any_unicast_mac(),
            sender_ip in doc_ipv4(),
            target_ip in doc_ipv4(),
            broadcast in any::<bool>(),
        ) {
            let request = Frame {
                eth: EthernetHeader { dst: if broadcast { MacAddr::BROADCAST } else { owner }, src: asker },
                message: Message::ArpRequest(ArpRequest {
                    sender_mac: asker, sender_ip, target_mac: MacAddr::ZERO, target_ip,
                }),
            };
            let bytes = request.to_bytes();
            prop_assert_eq!(bytes.len(), ARP_FRAME_LEN);
            prop_assert_eq!(Frame::decode(&bytes), Ok(request));
            let Message::ArpRequest(req) = request.message else { unreachable!() };
            let reply: Frame = req.answer(owner).widen();
            prop_assert_eq!(Frame::decode(&reply.to_bytes()), Ok(reply));
            prop_assert_eq!(reply.eth.dst, asker);
        }

        #[test]
        fn gratuitous_round_trip(vip in doc_ipv4(), owner in any_unicast_mac()) {
            for frame in burst(vip, owner) {
                prop_assert_eq!(Frame::decode(&frame.to_bytes()), Ok(frame));
            }
        }

        #[test]
        fn arbitrary_arp_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Message>(&payload);
        }
    }
}
