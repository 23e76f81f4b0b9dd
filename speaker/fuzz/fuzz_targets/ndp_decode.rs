//! NDP decoding: arbitrary bytes as an IPv6 payload of a frame, and as an ICMPv6 message from a
//! raw socket, must never panic; whatever decodes must survive a re-encode unchanged.
//!
//! smoltcp skips the ICMPv6 checksum check under `--cfg fuzzing` (cargo-fuzz sets it), so the
//! fuzzer reaches the option parser without forging checksums.
#![no_main]

use std::net::Ipv6Addr;

use herald_speaker::wire::{Frame, Message, ndp};
use libfuzzer_sys::fuzz_target;

/// The solicited-node MAC of ::1:0:100, a locally administered unicast source, ethertype IPv6.
const HEADER: [u8; 14] = [
    0x33, 0x33, 0xff, 0x00, 0x01, 0x00, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, 0x86, 0xdd,
];

fuzz_target!(|data: &[u8]| {
    let mut frame = HEADER.to_vec();
    frame.extend_from_slice(data);
    if let Ok(decoded) = Frame::decode(&frame) {
        assert_eq!(Frame::decode(&decoded.to_bytes()), Ok(decoded));
    }

    // The raw ICMPv6 socket path: source, destination and hop limit from the input's head.
    if data.len() >= 33 {
        let source = Ipv6Addr::from(<[u8; 16]>::try_from(&data[..16]).unwrap());
        let destination = Ipv6Addr::from(<[u8; 16]>::try_from(&data[16..32]).unwrap());
        let icmp = &data[33..];
        match ndp::decode_icmpv6::<Message>(source, destination, data[32], icmp) {
            Ok(Message::NeighborSolicitation(ns)) => {
                let again = ndp::decode_icmpv6::<Message>(source, destination, 255, &ns.to_icmpv6_bytes());
                assert_eq!(again, Ok(Message::NeighborSolicitation(ns)));
            }
            Ok(Message::NeighborAdvertisement(na)) => {
                let again = ndp::decode_icmpv6::<Message>(source, destination, 255, &na.to_icmpv6_bytes());
                assert_eq!(again, Ok(Message::NeighborAdvertisement(na)));
            }
            Ok(other) => panic!("ICMPv6 decoded as {other:?}"),
            Err(_) => {}
        }
    }
});
