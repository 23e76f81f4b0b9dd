//! A frame as the speaker sees it: decoded into one of the few messages it acts on, or dropped
//! with a [`DropReason`] that becomes a counter label.
//!
//! The parsing itself is smoltcp's `wire` module (checked views: lengths are validated once, then
//! accessors cannot go out of bounds); the wire files only add the RFC rules and Herald's own
//! types, so nothing outside them ever names a smoltcp type. This module sits on top: it
//! dispatches on the ethertype to [`super::arp`] and [`super::ndp`], which never name it.

use super::arp::{self, ArpReply, ArpRequest};
use super::drop_reason::DropReason;
use super::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV6, EthernetFrame};
use super::ndp::{self, NeighborAdvertisement, NeighborSolicitation};

/// A frame the speaker acts on: its Ethernet header and any of the messages it knows.
pub type Frame = EthernetFrame<Message>;

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

impl From<ArpRequest> for Message {
    fn from(m: ArpRequest) -> Message {
        Message::ArpRequest(m)
    }
}

impl From<ArpReply> for Message {
    fn from(m: ArpReply) -> Message {
        Message::ArpReply(m)
    }
}

impl From<NeighborSolicitation> for Message {
    fn from(m: NeighborSolicitation) -> Message {
        Message::NeighborSolicitation(m)
    }
}

impl From<NeighborAdvertisement> for Message {
    fn from(m: NeighborAdvertisement) -> Message {
        Message::NeighborAdvertisement(m)
    }
}

impl Frame {
    /// Decodes a whole Ethernet frame, as an AF_PACKET socket delivers it. Trailing bytes
    /// (Ethernet padding to 60 octets) are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DropReason> {
        let (eth, ethertype, payload) = ethernet::parse(bytes)?;
        let message = match ethertype {
            ETHERTYPE_ARP => arp::decode(payload)?,
            ETHERTYPE_IPV6 => ndp::decode_ipv6(payload)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::tests::{any_unicast_mac, mac};
    use crate::wire::ethernet::{ETHERNET_HEADER_LEN, EthernetHeader, MacAddr, emit_ethernet};
    use proptest::prelude::*;

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
