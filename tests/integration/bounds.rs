//! State strangers cannot exhaust: forged packets that fill the flow table,
//! out-of-order data held across many flows, and timestamps that jump. Each
//! test stages the hostile traffic around real captures or built attempts
//! and checks what was staged is still reported, within a memory ceiling.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use pgreach::decode::LinkType;
use pgreach::engine::{Analyzer, Config};
use pgreach::outcome::{Outcome, TcpOutcome};
use pgreach::record::Note;
use pgreach::time::Timestamp;

use crate::util::*;

/// The records of a classic pcap file (micro- or nanosecond, little-endian).
pub fn read_pcap(path: &Path) -> Vec<(Timestamp, Vec<u8>, u32)> {
    let bytes = std::fs::read(path).expect("read capture");
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let scale = if magic == 0xa1b2_3c4d { 1 } else { 1000 };
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let (secs, frac, caplen, orig) = (word(at), word(at + 4), word(at + 8) as usize, word(at + 12));
        let ts = Timestamp::from_secs_nanos(i64::from(secs), i64::from(frac) * scale);
        out.push((ts, bytes[at + 16..at + 16 + caplen].to_vec(), orig));
        at += 16 + caplen;
    }
    out
}

/// The outcomes a capture's recorder staged, from its expected file.
fn staged(name: &str) -> BTreeMap<String, u64> {
    let path = project_root().join(format!("captures/{name}.expected.json"));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).expect("expected file")).expect("json");
    let mut counts = BTreeMap::new();
    for a in doc["attempts"].as_array().expect("attempts") {
        *counts.entry(a["outcome"].as_str().expect("outcome").to_owned()).or_insert(0) += 1;
    }
    counts
}

fn totals(doc: &serde_json::Value) -> BTreeMap<String, u64> {
    let by = doc["totals"].as_object().expect("totals");
    by.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).filter(|(_, v)| *v > 0).collect()
}

/// Runs pgreach under `time` and returns its output and peak resident memory in KiB.
pub fn peak_rss_kib(args: &[&str]) -> (Output, u64) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let report = std::env::temp_dir().join(format!("pgreach-rss-{}-{run}", std::process::id()));
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .arg(env!("CARGO_BIN_EXE_pgreach"))
        .args(args)
        .current_dir(project_root())
        .stdin(Stdio::null())
        .output()
        .expect("run pgreach under /usr/bin/time (Debian package `time`)");
    let text = std::fs::read_to_string(&report).expect("time's report");
    std::fs::remove_file(&report).ok();
    let kib = text.lines().last().and_then(|l| l.trim().parse().ok()).expect("peak RSS");
    (out, kib)
}

/// `n` bare ACKs from `n` different forged clients.
fn forged_acks(n: u32, start: Timestamp) -> Vec<(Timestamp, Vec<u8>, u32)> {
    (0..n)
        .map(|i| {
            let client = format!("198.18.{}.{}:{}", (i >> 8) & 0xff, i & 0xff, 20000 + i % 40000);
            let frame = tcp_frame(&client, SERVER, ack(i.wrapping_mul(7919), 1));
            let len = frame.len() as u32;
            (start + std::time::Duration::from_micros(u64::from(i)), frame, len)
        })
        .collect()
}

mod flow_table {
    use super::*;

    /// 2,000 forged ACKs with --max-flows 1000, then a real refused
    /// connection and a real pg_hba rejection: both are reported, and the
    /// report says what the full table cost.
    #[test]
    fn forged_acks_do_not_hide_real_failures() {
        let refused = read_pcap(&project_root().join("captures/server_stopped.pcap"));
        let start = refused[0].0 - std::time::Duration::from_secs(1);
        let forged = temp_file("forged_acks.pcap", &pcap_bytes(1, 65535, &forged_acks(2000, start)));
        let forged = forged.to_str().unwrap();
        // One capture point (one name for the three files): one flow table for all.
        let forged = format!("--at=here={forged}");
        let args = [
            "--max-flows",
            "1000",
            forged.as_str(),
            "--at=here=captures/server_stopped.pcap",
            "--at=here=captures/pg_hba_rejected.pcap",
        ];
        let (doc, out) = analyze_json(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let got = totals(&doc);
        let mut want = staged("server_stopped");
        for (k, v) in staged("pg_hba_rejected") {
            *want.entry(k).or_default() += v;
        }
        for (outcome, n) in &want {
            assert_eq!(got.get(outcome), Some(n), "{outcome}: {got:?}");
        }
        let spots = doc["diagnosis"]["blind_spots"].as_array().expect("blind spots");
        let untracked =
            spots.iter().find(|s| s["flag"] == "--max-flows" && s["what"].as_str().unwrap().contains("not tracked"));
        assert_eq!(untracked.expect("untracked reported")["count"], 1000);
        assert_eq!(doc["stats"]["untracked"], 1000);
        assert_eq!(doc["stats"]["evicted"], 0, "no real attempt was ended early");
        // The forged ACKs that were tracked are not connections: none is an attempt.
        assert_eq!(doc["stats"]["stray_segments"], 1000);
        assert_eq!(got.get("attempts"), Some(&want.values().sum::<u64>()), "{got:?}");

        let mut table = vec!["analyze"];
        table.extend_from_slice(&args);
        let text = String::from_utf8(pgreach(&table).stdout).unwrap();
        let headline = text.lines().take_while(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
        assert!(headline.contains("Not everything was followed") && headline.contains("1000 packets"), "{headline}");
    }

    /// The same with built attempts, watching the table itself.
    #[test]
    fn a_new_syn_always_finds_room() {
        let mut engine = Analyzer::new(Config { max_flows: 100, ..Config::default() });
        for (ts, frame, _) in forged_acks(300, at(0.0)) {
            engine.handle_packet(ts, LinkType::Ethernet, &frame).unwrap();
            assert!(engine.live_flows() <= 100);
        }
        engine.handle_packet(at(1.0), LinkType::Ethernet, &tcp_frame(CLIENT, SERVER, syn(10))).unwrap();
        engine.handle_packet(at(1.001), LinkType::Ethernet, &tcp_frame(SERVER, CLIENT, rst_ack(0, 11))).unwrap();
        assert_eq!(engine.stats().untracked, 200);
        assert_eq!(engine.stats().evicted_midstream, 1, "one forged flow made room");
        engine.finish();
        let all: Vec<_> = std::iter::from_fn(|| engine.poll_finished()).collect();
        assert_eq!(all.iter().filter(|a| a.outcome == Outcome::Refused).count(), 1);
    }

    /// A table full of open sessions: the one idle longest makes room.
    #[test]
    fn the_idlest_session_makes_room() {
        let mut engine = Analyzer::new(Config { max_flows: 2, ..Config::default() });
        let clients = ["192.0.2.50:40001", "192.0.2.50:40002", "192.0.2.50:40003"];
        let mut feed = |t: f64, src: &str, dst: &str, seg: Seg| {
            engine.handle_packet(at(t), LinkType::Ethernet, &tcp_frame(src, dst, seg)).unwrap();
        };
        for (i, c) in clients[..2].iter().enumerate() {
            let t = i as f64;
            feed(t, c, SERVER, syn(100));
            feed(t + 0.001, SERVER, c, syn_ack(500, 101));
            feed(t + 0.002, c, SERVER, ack(101, 501));
        }
        // The first session stays busy; the second goes quiet.
        feed(5.0, clients[0], SERVER, data(101, 501, b"x"));
        feed(6.0, clients[2], SERVER, syn(100));
        assert_eq!(engine.stats().evicted, 1);
        let evicted = engine.poll_finished().expect("the evicted session");
        assert_eq!(evicted.client, addr(clients[1]));
        assert!(evicted.notes.contains(&Note::Evicted));
    }

    /// A connection joined midstream that goes quiet is reported and forgotten.
    #[test]
    fn silent_midstream_flows_age_out() {
        let mut engine = Analyzer::new(Config::default());
        engine.handle_packet(at(0.0), LinkType::Ethernet, &tcp_frame(CLIENT, SERVER, ack(5, 9))).unwrap();
        engine.handle_packet(at(0.001), LinkType::Ethernet, &tcp_frame(SERVER, CLIENT, ack(9, 5))).unwrap();
        assert_eq!(engine.live_flows(), 1);
        let due = engine.poll_timeout().expect("a midstream flow has a deadline");
        engine.handle_timeout(due);
        // The answer moved the deadline on: the first one passes with nothing due.
        let due = engine.poll_timeout().unwrap_or(due);
        engine.handle_timeout(due);
        let a = engine.poll_finished().expect("reported when it aged out");
        assert_eq!(a.tcp_outcome, TcpOutcome::Midstream);
        assert!(due.since(at(0.001)) <= pgreach::flow::MIDSTREAM_IDLE);
    }

    /// A lone bare ACK that nothing answers is no connection: it ages out
    /// as a stray segment, not as an attempt.
    #[test]
    fn a_lone_unanswered_ack_is_not_an_attempt() {
        let mut engine = Analyzer::new(Config::default());
        engine.handle_packet(at(0.0), LinkType::Ethernet, &tcp_frame(CLIENT, SERVER, ack(5, 9))).unwrap();
        let due = engine.poll_timeout().expect("a midstream flow has a deadline");
        engine.handle_timeout(due);
        assert!(engine.poll_finished().is_none());
        assert_eq!(engine.stats().stray_segments, 1);
        assert_eq!(engine.live_flows(), 0);
    }

    /// 1 M distinct SYNs at the defaults: every one reported, memory bounded.
    #[test]
    fn a_million_syns() {
        let n = 1_000_000u32;
        let mut records = Vec::with_capacity(n as usize);
        for i in 0..n {
            let client = format!("10.{}.{}.{}:{}", i >> 16, (i >> 8) & 0xff, i & 0xff, 1024 + i % 60000);
            let frame = tcp_frame(&client, SERVER, syn(i));
            let len = frame.len() as u32;
            records.push((at(f64::from(i) * 1e-6), frame, len));
        }
        let file = temp_file("million_syns.pcap", &pcap_bytes(1, 65535, &records));
        drop(records);
        let (out, kib) = peak_rss_kib(&["analyze", "--format", "json", "--max-listed", "10", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["stats"]["attempts"], u64::from(n));
        // Every SYN was tracked to its end: timeouts or still waiting at the end.
        assert_eq!(doc["stats"]["untracked"], 0);
        eprintln!("1 M SYNs: peak {kib} KiB");
        assert!(kib < 1_200_000, "peak {kib} KiB for 1 M SYNs");
        std::fs::remove_file(file).ok();
    }
}

mod held_data {
    use super::*;

    /// 3,000 connections, each holding out-of-order data that never gets
    /// its hole filled: held data stays within the budget, and the report
    /// says the budget cut some.
    #[test]
    fn three_thousand_flows_of_out_of_order_data() {
        const FLOWS: u32 = 3000;
        const HELD: u32 = 16;
        static CHUNK: [u8; 1400] = [b'x'; 1400];
        let mut records = Vec::new();
        let mut t = 0.0;
        let mut push = |frame: Vec<u8>| {
            t += 1e-5;
            let len = frame.len() as u32;
            records.push((at(t), frame, len));
        };
        for f in 0..FLOWS {
            let client = format!("192.0.{}.{}:{}", 2 + f / 250, f % 250 + 1, 30000 + f);
            push(tcp_frame(&client, SERVER, syn(1000)));
            push(tcp_frame(SERVER, &client, syn_ack(5000, 1001)));
            push(tcp_frame(&client, SERVER, ack(1001, 5001)));
            // The first 1400 bytes never arrive.
            for k in 1..=HELD {
                push(tcp_frame(&client, SERVER, data(1001 + k * 1400, 5001, &CHUNK)));
            }
        }
        let file = temp_file("held.pcap", &pcap_bytes(1, 65535, &records));
        drop(records);
        let demand_kib = u64::from(FLOWS * HELD) * 1400 / 1024;
        let budget_mib = 8u64;
        let (out, kib) = peak_rss_kib(&[
            "analyze",
            "--format",
            "json",
            "--max-held-mib",
            &budget_mib.to_string(),
            file.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["stats"]["attempts"], u64::from(FLOWS));
        assert!(doc["stats"]["held_over_budget"].as_u64().unwrap() > 0);
        assert!(doc["diagnosis"]["blind_spots"].as_array().unwrap().iter().any(|s| s["flag"] == "--max-held-mib"));
        // The budget, the flows themselves and the program: far below the demand.
        let ceiling = budget_mib * 1024 + 40 * 1024;
        eprintln!("3,000 flows holding data: peak {kib} KiB");
        assert!(kib < ceiling, "peak {kib} KiB, ceiling {ceiling} KiB (unbounded demand {demand_kib} KiB)");
        assert!(demand_kib > ceiling, "the test must demand more than the ceiling");
        std::fs::remove_file(file).ok();
    }

    /// The engine's own count of held bytes never passes the budget.
    #[test]
    fn the_budget_holds_across_flows() {
        let budget = 100_000;
        let mut engine = Analyzer::new(Config { max_held_bytes: budget, ..Config::default() });
        static CHUNK: [u8; 1000] = [b'y'; 1000];
        for f in 0..200u32 {
            let client = format!("192.0.2.{}:{}", f % 200 + 1, 30000 + f);
            let mut feed = |t: f64, src: &str, dst: &str, seg: Seg| {
                engine.handle_packet(at(t), LinkType::Ethernet, &tcp_frame(src, dst, seg)).unwrap();
            };
            let t = f64::from(f) * 0.01;
            feed(t, &client, SERVER, syn(1000));
            feed(t + 0.001, SERVER, &client, syn_ack(5000, 1001));
            feed(t + 0.002, &client, SERVER, ack(1001, 5001));
            for k in 1..=4 {
                feed(t + 0.003, &client, SERVER, data(1001 + k * 2000, 5001, &CHUNK));
            }
            assert!(engine.held_bytes() <= budget);
        }
        assert!(engine.stats().held_over_budget > 0);
        engine.finish();
        while engine.poll_finished().is_some() {}
        assert_eq!(engine.held_bytes(), 0, "every held byte is given back");
    }
}

mod clock {
    use super::*;

    const LOGIN_COPIES: u32 = 7;
    /// 2038-01-02: past every capture here, still below 2^31 seconds.
    const FAR_FUTURE: i64 = 2_146_000_000;

    /// pg_logins.pcap (3 staged logins) copied at 60 s steps (past the 30 s
    /// a closed connection's entry lingers, as the copies reuse its ports
    /// and sequence numbers): 21 logins.
    fn logins() -> Vec<(Timestamp, Vec<u8>, u32)> {
        let one = read_pcap(&project_root().join("captures/pg_logins.pcap"));
        let span = one.last().unwrap().0.since(one[0].0);
        assert!(span < std::time::Duration::from_secs(10));
        (0..LOGIN_COPIES)
            .flat_map(|k| {
                let shift = std::time::Duration::from_secs(60 * u64::from(k));
                one.iter().map(move |(ts, frame, len)| (*ts + shift, frame.clone(), *len))
            })
            .collect()
    }

    fn stray_at(secs: i64) -> (Timestamp, Vec<u8>, u32) {
        let frame = tcp_frame("198.51.100.7:41000", SERVER, ack(77, 88));
        let len = frame.len() as u32;
        (Timestamp::from_secs_nanos(secs, 0), frame, len)
    }

    fn run(name: &str, records: &[(Timestamp, Vec<u8>, u32)]) -> serde_json::Value {
        let file = temp_file(name, &pcap_bytes(1, 262144, records));
        let (doc, out) = analyze_json(&[file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        doc
    }

    fn logins_staged() -> u64 {
        staged("pg_logins")["success"] * u64::from(LOGIN_COPIES)
    }

    #[test]
    fn one_packet_from_2038_before_good_logins() {
        let mut records = vec![stray_at(FAR_FUTURE)];
        records.extend(logins());
        let doc = run("clock_first.pcap", &records);
        let got = totals(&doc);
        assert_eq!(got.get("success"), Some(&logins_staged()), "{got:?}");
        assert_eq!(got.get("timeout"), None);
        assert_eq!(doc["stats"]["clock_jumps"], 1);
        let first = doc["stats"]["first_packet"].as_str().unwrap();
        assert!(!first.starts_with("2038"), "the outlier is not the capture's start: {first}");
    }

    #[test]
    fn one_packet_from_2038_among_good_logins() {
        let mut records = logins();
        // Right after the fourth copy's first SYN: a login is in progress.
        let copy = records.len() / LOGIN_COPIES as usize;
        let is_syn = |frame: &[u8]| {
            matches!(pgreach::decode::decode(LinkType::Ethernet, frame),
                Ok(pgreach::decode::Decoded::Tcp(seg)) if seg.flags.syn && !seg.flags.ack)
        };
        let syn_at = (3 * copy..).find(|&i| is_syn(&records[i].1)).expect("a SYN");
        records.insert(syn_at + 1, stray_at(FAR_FUTURE));
        let doc = run("clock_middle.pcap", &records);
        let got = totals(&doc);
        assert_eq!(got.get("success"), Some(&logins_staged()), "{got:?}");
        assert_eq!(got.get("timeout"), None);
        assert_eq!(doc["stats"]["clock_jumps"], 1);
        let text = String::from_utf8(
            pgreach(&["analyze", temp_file("clock_middle.pcap", &pcap_bytes(1, 262144, &records)).to_str().unwrap()])
                .stdout,
        )
        .unwrap();
        assert!(text.contains("1 packets dated far from the others"), "{text}");
    }

    /// A real gap (the same logins a day later) is followed: nothing counted.
    #[test]
    fn a_confirmed_jump_moves_the_clock() {
        let mut records = logins();
        let day = std::time::Duration::from_secs(86_400);
        let later: Vec<_> = logins().into_iter().map(|(t, f, l)| (t + day, f, l)).collect();
        records.extend(later);
        let doc = run("clock_day.pcap", &records);
        assert_eq!(totals(&doc).get("success"), Some(&(2 * logins_staged())));
        assert_eq!(doc["stats"]["clock_jumps"], 0);
    }
}
