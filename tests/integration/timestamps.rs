//! Any timestamp a capture can hold prints: zero, after 2038 (a classic
//! pcap's 32-bit seconds with the high bit set), 2106, before 1970 (a pcapng
//! interface with a negative if_tsoffset). And a --bucket far below the
//! capture's span is widened to a bounded number of buckets, with a note.

use pgreach::time::Timestamp;

use crate::formats::FORMATS;
use crate::util::{at, pcap_bytes, pgreach, rst_ack, stderr, syn, syn_ack, tcp_frame, temp_file, CLIENT, SERVER};

/// A SYN answered by RST, as (seconds, microseconds) offsets in whole records.
fn refused_frames() -> [Vec<u8>; 2] {
    [tcp_frame(CLIENT, SERVER, syn(1000)), tcp_frame(SERVER, CLIENT, rst_ack(0, 1001))]
}

/// A classic pcap whose records carry these raw 32-bit seconds.
fn pcap_at_seconds(name: &str, secs: u32) -> String {
    let [a, b] = refused_frames();
    let mut bytes = pcap_bytes(1, 65535, &[]);
    for (usec, frame) in [(0u32, a), (1000, b)] {
        for field in [secs, usec, frame.len() as u32, frame.len() as u32] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        bytes.extend_from_slice(&frame);
    }
    temp_file(name, &bytes).to_string_lossy().into_owned()
}

/// One pcapng block: type, length, body padded to 32 bits, length again.
fn block(kind: u32, mut body: Vec<u8>) -> Vec<u8> {
    body.resize(body.len().div_ceil(4) * 4, 0);
    let len = (body.len() + 12) as u32;
    let mut out = kind.to_le_bytes().to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend(body);
    out.extend_from_slice(&len.to_le_bytes());
    out
}

/// A pcapng file whose interface has `if_tsoffset` (seconds) and packets
/// at `micros` after it.
fn pcapng_with_offset(name: &str, offset_secs: i64, micros: u64) -> String {
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut idb = 1u16.to_le_bytes().to_vec(); // Ethernet
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    idb.extend_from_slice(&14u16.to_le_bytes()); // if_tsoffset
    idb.extend_from_slice(&8u16.to_le_bytes());
    idb.extend_from_slice(&offset_secs.to_le_bytes());
    idb.extend_from_slice(&[0; 4]); // opt_endofopt
    let mut bytes = block(0x0a0d_0d0a, shb);
    bytes.extend(block(1, idb));
    for (i, frame) in refused_frames().into_iter().enumerate() {
        let ts = micros + i as u64 * 1000;
        let mut epb = 0u32.to_le_bytes().to_vec();
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend(frame);
        bytes.extend(block(6, epb));
    }
    temp_file(name, &bytes).to_string_lossy().into_owned()
}

/// Every format renders the file, and JSON dates its attempt at `start`.
fn renders_everywhere(path: &str, start: &str) {
    for format in FORMATS {
        let out = pgreach(&["analyze", "--connections", "--format", format, path]);
        assert!(out.status.success(), "{path} as {format}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{path} as {format}: {}", stderr(&out));
    }
    let out = pgreach(&["analyze", "--format", "json", path]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["attempts"][0]["start"], start, "{path}");
    assert_eq!(doc["attempts"].as_array().map(Vec::len), Some(1), "{path}");
}

#[test]
fn classic_pcap_seconds_are_unsigned_to_2106() {
    renders_everywhere(&pcap_at_seconds("ts-zero.pcap", 0), "1970-01-01T00:00:00.000000Z");
    renders_everywhere(&pcap_at_seconds("ts-2038.pcap", 1 << 31), "2038-01-19T03:14:08.000000Z");
    renders_everywhere(&pcap_at_seconds("ts-2106.pcap", u32::MAX), "2106-02-07T06:28:15.000000Z");
}

#[test]
fn pcapng_before_1970_prints() {
    let path = pcapng_with_offset("ts-1906.pcapng", -2_000_000_000, 1000);
    for format in FORMATS {
        let out = pgreach(&["analyze", "--connections", "--format", format, &path]);
        assert!(out.status.success(), "{format}: {}", stderr(&out));
    }
    let out = pgreach(&["analyze", &path]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("from 1906-08-16T20:26:40.001000Z"), "{text}");
    // The engine's clock starts at the first packet, not at 1970: a SYN a
    // minute before 1970 waits for its answer as in any other year.
    let path = pcapng_with_offset("ts-1969.pcapng", -60, 1000);
    let (doc, _) = crate::util::analyze_json(&[&path]);
    let outcomes: Vec<&str> =
        doc["attempts"].as_array().expect("attempts").iter().filter_map(|a| a["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["refused"]);
}

#[test]
fn a_bucket_far_below_the_span_is_widened_and_said() {
    let mut records = Vec::new();
    for (i, t) in [0.0, 3600.0].into_iter().enumerate() {
        let client = format!("192.0.2.{}:40000", 50 + i);
        for (dt, frame) in
            [(0.0, tcp_frame(&client, SERVER, syn(1000))), (0.001, tcp_frame(SERVER, &client, rst_ack(0, 1001)))]
        {
            let ts: Timestamp = at(t + dt);
            records.push((ts, frame.clone(), frame.len() as u32));
        }
    }
    let path = temp_file("hour-apart.pcap", &pcap_bytes(1, 65535, &records));
    let path = path.to_str().unwrap();
    let (doc, out) = crate::util::analyze_json(&["--bucket", "1ms", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let buckets = doc["timeline"]["buckets"].as_array().expect("buckets").len();
    assert!((2..=4096).contains(&buckets), "{buckets} buckets");
    assert!(doc["timeline"]["bucket_ms"].as_f64().unwrap() > 1.0);
    let notes = doc["input_notes"].to_string();
    assert!(notes.contains("timeline buckets widened from 1.0ms"), "{notes}");
}

#[test]
fn packets_dated_back_by_an_hour_are_noted_and_no_interval_is_negative() {
    let mut records = Vec::new();
    for (client, t) in [("192.0.2.50:40000", 3600.0), ("192.0.2.51:40000", 0.0)] {
        for (dt, frame) in [
            (0.0, tcp_frame(client, SERVER, syn(1000))),
            (0.002, tcp_frame(SERVER, client, syn_ack(5000, 1001))),
            (0.003, tcp_frame(client, SERVER, rst_ack(1001, 5001))),
        ] {
            records.push((at(t + dt), frame.clone(), frame.len() as u32));
        }
    }
    let path = temp_file("hour-back.pcap", &pcap_bytes(1, 65535, &records));
    let path = path.to_str().unwrap();
    for format in FORMATS {
        let out = pgreach(&["analyze", "--connections", "--format", format, path]);
        assert!(out.status.success(), "{format}: {}", stderr(&out));
    }
    let (doc, _) = crate::util::analyze_json(&[path]);
    let notes = doc["input_notes"].to_string();
    assert!(notes.contains("3 packets are dated before a packet read earlier (by up to 60m00s)"), "{notes}");
    for a in doc["attempts"].as_array().unwrap() {
        for field in ["handshake_ms", "wait_ms"] {
            if let Some(v) = a[field].as_f64() {
                assert!(v >= 0.0, "{field} {v} in {a}");
            }
        }
    }
}
