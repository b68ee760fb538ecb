//! The whole engine fed arbitrary packet sequences: frames of any link
//! type with timestamps that move forward, back, or jump, a small flow
//! table and held-data budget so that the limits are hit, then the end of
//! the capture. Checks the table and budget bounds hold at every step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgreach::decode::LinkType;
use pgreach::engine::{Analyzer, Config};
use pgreach::time::Timestamp;

const LINKS: [LinkType; 3] = [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll];
const MAX_FLOWS: usize = 16;
const MAX_HELD: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let config =
        Config { server_ports: vec![5432, 6432], max_flows: MAX_FLOWS, max_held_bytes: MAX_HELD, ..Config::default() };
    let mut engine = Analyzer::new(config);
    let mut ts: i64 = 1_700_000_000_000_000_000;
    let mut rest = data;
    // Each record: link (1 byte), time step (2 bytes, signed milliseconds,
    // large values jump by days), length (2 bytes), then the frame.
    while rest.len() >= 5 {
        let link = LINKS[usize::from(rest[0]) % LINKS.len()];
        let step = i64::from(i16::from_le_bytes([rest[1], rest[2]]));
        ts = ts.saturating_add(if step.abs() > 30_000 { step * 86_400_000_000 } else { step * 1_000_000 });
        let len = usize::from(u16::from_le_bytes([rest[3], rest[4]]));
        let (frame, after) = rest[5..].split_at(len.min(rest.len() - 5));
        let _ = engine.handle_packet(Timestamp::from_nanos(ts), link, frame);
        assert!(engine.live_flows() <= MAX_FLOWS);
        assert!(engine.held_bytes() <= MAX_HELD);
        while engine.poll_finished().is_some() {}
        rest = after;
    }
    if let Some(due) = engine.poll_timeout() {
        engine.handle_timeout(due);
    }
    engine.finish();
    while engine.poll_finished().is_some() {}
    assert_eq!(engine.held_bytes(), 0);
});
