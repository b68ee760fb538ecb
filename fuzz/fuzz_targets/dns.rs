//! DNS as pgreach reads it, on any bytes: messages over UDP in both
//! directions, and DNS-over-TCP streams cut into any pieces, with SYNs,
//! FINs, RSTs, retransmissions and gaps, time moving on, then the end of
//! the capture. Nothing panics and every message handed on is bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgreach::decode::{TcpFlags, TcpSegment, UdpDatagram};
use pgreach::dns::{parse_query, parse_response, Dns};
use pgreach::seq::SeqNumber;
use pgreach::time::Timestamp;
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let client: SocketAddr = "192.0.2.100:40000".parse().unwrap();
    let resolver: SocketAddr = "192.0.2.53:53".parse().unwrap();
    let mut dns = Dns::default();
    let mut secs = 1_700_000_000i64;
    let mut seq = [SeqNumber(7), SeqNumber(9000)];
    let mut rest = data;
    // Each record: a kind byte (bit 0: from the resolver; bit 1: over TCP;
    // bits 2-4: SYN, FIN, RST; bit 5: sequence jumps back or ahead; bits
    // 6-7: seconds that pass), a length byte, then the payload.
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let (payload, after) = rest[2..].split_at(len.min(rest.len() - 2));
        rest = after;
        secs += i64::from(kind >> 6) * 3;
        let at = Timestamp::from_secs_nanos(secs, 0);
        let from_resolver = kind & 1 == 1;
        let (src, dst) = if from_resolver { (resolver, client) } else { (client, resolver) };
        if let Some(lookup) = parse_response(payload, resolver.ip(), at) {
            assert!(lookup.name.len() <= 255 && lookup.addresses.len() <= 8 && lookup.aliases.len() <= 8);
        }
        if let Some(name) = parse_query(payload) {
            assert!(name.len() <= 255);
        }
        if kind & 2 == 0 {
            dns.on_udp(&UdpDatagram { src, dst, payload }, at);
        } else {
            let side = usize::from(from_resolver);
            if kind & 0x20 != 0 {
                seq[side] = seq[side] + u32::from(payload.first().copied().unwrap_or(0)).wrapping_sub(128);
            }
            let flags = TcpFlags { syn: kind & 4 != 0, ack: true, fin: kind & 8 != 0, rst: kind & 16 != 0 };
            let seg = TcpSegment {
                src,
                dst,
                ttl: 64,
                seq: seq[side],
                ack: SeqNumber(0),
                flags,
                payload,
                wire_payload_len: payload.len() as u32,
            };
            dns.on_tcp(&seg, at);
            seq[side] = seq[side] + payload.len() as u32 + u32::from(flags.syn);
        }
        dns.handle_timeout(at);
    }
    let end = Timestamp::from_secs_nanos(secs + 60, 0);
    for (_, lookup) in dns.take_failures(&["*.test".to_owned()], end) {
        assert!(lookup.failed());
    }
});
