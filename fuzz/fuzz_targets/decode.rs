//! The link/IP/TCP decoder on any frame of any supported link type: it
//! returns a segment, an ICMP error, "ignored" or an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgreach::decode::{decode, Decoded, LinkType};

const LINKS: [LinkType; 6] =
    [LinkType::Null, LinkType::Ethernet, LinkType::RawIp, LinkType::Loop, LinkType::LinuxSll, LinkType::LinuxSll2];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else { return };
    let link = LINKS[usize::from(pick) % LINKS.len()];
    if let Ok(Decoded::Tcp(seg)) = decode(link, frame) {
        // What the decoder hands on lies inside the frame.
        assert!(seg.payload.len() <= frame.len());
        assert!(seg.payload.len() <= seg.wire_payload_len as usize);
    }
});
