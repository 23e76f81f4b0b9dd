//! ARP decoding: arbitrary bytes behind an Ethernet header with the ARP ethertype must never
//! panic, and whatever decodes must survive a re-encode unchanged.
#![no_main]

use herald_speaker::Frame;
use libfuzzer_sys::fuzz_target;

/// Broadcast destination, a locally administered unicast source, ethertype ARP.
const HEADER: [u8; 14] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, 0x08, 0x06,
];

fuzz_target!(|data: &[u8]| {
    // Whole frames, so the Ethernet layer is exercised too.
    check(data);
    // And ARP payloads, so most inputs get past the ethertype.
    let mut frame = HEADER.to_vec();
    frame.extend_from_slice(data);
    check(&frame);
});

fn check(bytes: &[u8]) {
    if let Ok(frame) = Frame::decode(bytes) {
        assert_eq!(Frame::decode(&frame.to_bytes()), Ok(frame));
    }
}
