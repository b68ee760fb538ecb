//! The command line: every input error gives one line saying what and where,
//! and the rest of the input is still analyzed.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::util::*;

fn read_capture(name: &str) -> Vec<u8> {
    std::fs::read(project_root().join("captures").join(name)).expect("capture")
}

fn attempts(doc: &serde_json::Value) -> u64 {
    doc["totals"]["attempts"].as_u64().expect("attempt total")
}

/// Byte offsets where each record of a classic pcap file starts.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        offsets.push(at);
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + caplen;
    }
    offsets
}

#[test]
fn truncated_file_reports_the_packet_and_keeps_what_was_read() {
    let bytes = read_capture("normal.pcap");
    let offsets = record_offsets(&bytes);
    let last = offsets.len();
    // Cut five bytes into the last record's packet data.
    let cut = temp_file("normal-cut.pcap", &bytes[..offsets[last - 1] + 16 + 5]);
    let path = cut.to_string_lossy().into_owned();
    let (doc, out) = analyze_json(&[&path]);
    assert_eq!(out.status.code(), Some(4), "damaged");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("normal-cut.pcap: packet {last}: cannot read further")), "{err}");
    assert_eq!(attempts(&doc), 3, "the packets before the cut are analyzed");
}

/// A newline appended to a capture in transfer is noted, not an error.
#[test]
fn trailing_fragment_is_a_note() {
    let mut bytes = read_capture("normal.pcap");
    bytes.push(b'\n');
    let path = temp_file("normal-newline.pcap", &bytes).to_string_lossy().into_owned();
    let (doc, out) = analyze_json(&[&path]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert!(doc["input_notes"][0].as_str().unwrap().contains("ends in a fragment"));
    assert_eq!(attempts(&doc), 3);
}

#[test]
fn a_file_that_is_not_a_capture() {
    let path = temp_file("notes.txt", b"these are not packets\n").to_string_lossy().into_owned();
    let out = pgreach(&["analyze", &path]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with(&format!("pgreach: {path}: cannot open as a pcap or pcapng capture")), "{err}");
}

#[test]
fn missing_file_and_good_file_together() {
    let (doc, out) = analyze_json(&["captures/does-not-exist.pcap", "captures/normal.pcap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("captures/does-not-exist.pcap: cannot open"), "{}", stderr(&out));
    assert_eq!(attempts(&doc), 3, "the good file is still analyzed");
}

#[test]
fn unknown_link_type_is_named() {
    let records = vec![(at(0.0), vec![0u8; 40], 40)];
    let path = temp_file("usb.pcap", &pcap_bytes(147, 65535, &records)).to_string_lossy().into_owned();
    let (doc, out) = analyze_json(&[&path, "captures/nft_reject.pcap"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("usb.pcap: link type 147 is not supported; pgreach reads Ethernet"), "{err}");
    assert_eq!(attempts(&doc), 2, "the other file is still analyzed");
}

#[test]
fn packet_cut_inside_the_tcp_header() {
    let full = tcp_frame(CLIENT, SERVER, syn(7));
    let records = vec![
        (at(0.0), full[..40].to_vec(), full.len() as u32),
        (at(0.1), tcp_frame(CLIENT, SERVER, syn(9)), full.len() as u32),
        (at(0.2), tcp_frame(SERVER, CLIENT, rst_ack(0, 10)), 54),
    ];
    let path = temp_file("snap.pcap", &pcap_bytes(1, 65535, &records)).to_string_lossy().into_owned();
    let (doc, out) = analyze_json(&[&path]);
    assert_eq!(out.status.code(), Some(0), "bad packets are data, not a failure");
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        format!(
            "pgreach: {path}: packet 1: TCP header cut short: 6 of 20 bytes captured (snap length or corrupt record)"
        )
    );
    assert_eq!(doc["stats"]["undecodable"], 1);
    assert_eq!(doc["totals"]["refused"], 1, "the next packets are analyzed");
}

#[test]
fn standard_input() {
    let bytes = read_capture("server_stopped.pcap");
    let out = pgreach_with_stdin(&["analyze", "--format", "json", "-"], Some(&bytes));
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["totals"]["refused"], 2);
}

/// Several files are one capture in timestamp order, whatever order they are named in.
#[test]
fn several_files_merge_in_time_order() {
    let (a, _) = analyze_json(&["captures/normal.pcap", "captures/nft_reject.pcap"]);
    let (b, _) = analyze_json(&["captures/nft_reject.pcap", "captures/normal.pcap"]);
    assert_eq!(attempts(&a), 5);
    assert_eq!(a["attempts"], b["attempts"]);
    let starts: Vec<&str> = a["attempts"].as_array().unwrap().iter().map(|x| x["start"].as_str().unwrap()).collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted);
}

#[test]
fn filter_expression() {
    let (doc, out) = analyze_json(&["captures/nft_reject.pcap", "--filter", "ip6"]);
    assert!(out.status.success());
    assert_eq!(attempts(&doc), 1);
    assert!(doc["attempts"][0]["client"].as_str().unwrap().starts_with('['));
    let bad = pgreach(&["analyze", "captures/normal.pcap", "--filter", "tcp port banana"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("invalid filter expression"), "{}", stderr(&bad));
}

#[test]
fn wrong_flag() {
    let out = pgreach(&["analyze", "--colour", "captures/normal.pcap"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--colour"), "{}", stderr(&out));
}

#[test]
fn table_report_explains_each_outcome_seen() {
    let out = pgreach(&["analyze", "captures/nft_reject_admin.pcap", "--connections"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("192.0.2.100"), "{text}");
    assert!(text.contains("1. unreachable: 2 clients, 2 attempts"), "{text}");
    assert!(text.contains("ICMP admin prohibited (3/13) from 192.0.2.1"), "{text}");
    assert!(text.contains("ICMPv6 admin prohibited (1/1) from 2001:db8::1"), "{text}");
    assert!(!text.contains(". refused:"), "no finding for an outcome not seen");
}

/// `pgreach … | head -1`: a closed pipe ends quietly.
#[test]
fn broken_pipe_exits_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgreach"))
        .args(["analyze", "captures/incident.pcap", "--connections"])
        .current_dir(project_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = [0u8; 16];
    child.stdout.as_mut().unwrap().read_exact(&mut first).expect("some output");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Rewrites every record of a classic little-endian pcap with `f`.
fn rewrite_records(bytes: &[u8], f: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut out = bytes[..24].to_vec();
    for at in record_offsets(bytes) {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let orig = u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap());
        let frame = f(&bytes[at + 16..at + 16 + caplen]);
        let grown = (frame.len() - caplen) as u32;
        out.extend_from_slice(&bytes[at..at + 8]);
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(orig + grown).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

fn outcomes_of(doc: &serde_json::Value) -> Vec<(String, String, String)> {
    doc["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["client"].to_string(), a["server"].to_string(), a["outcome"].to_string()))
        .collect()
}

/// A real capture with every frame tagged (802.1Q, then QinQ) gives the same attempts.
#[test]
fn vlan_tagged_captures_give_the_same_outcomes() {
    let bytes = read_capture("nft_drop.pcap");
    let (plain, _) = analyze_json(&["captures/nft_drop.pcap"]);
    let tags: [&[u8]; 2] = [&[0x81, 0x00, 0x00, 0x64], &[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x64]];
    for (i, tag) in tags.iter().enumerate() {
        let tagged = rewrite_records(&bytes, |frame| {
            let mut f = frame[..12].to_vec();
            f.extend_from_slice(tag);
            f.extend_from_slice(&frame[12..]);
            f
        });
        let path = temp_file(&format!("tagged-{i}.pcap"), &tagged).to_string_lossy().into_owned();
        let (doc, out) = analyze_json(&[&path]);
        assert!(stderr(&out).is_empty(), "{}", stderr(&out));
        assert_eq!(outcomes_of(&doc), outcomes_of(&plain), "tag {tag:x?}");
        assert_eq!(doc["stats"]["packets_on_port"], plain["stats"]["packets_on_port"]);
    }
}

/// A record whose length field is corrupt: one error line naming the packet.
#[test]
fn corrupt_record_length() {
    let mut bytes = read_capture("normal.pcap");
    let offsets = record_offsets(&bytes);
    let at = offsets[5];
    bytes[at + 8..at + 12].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let path = temp_file("corrupt.pcap", &bytes).to_string_lossy().into_owned();
    let out = pgreach(&["analyze", &path]);
    assert_eq!(out.status.code(), Some(4), "damaged");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("corrupt.pcap: packet 6: cannot read further"), "{err}");
    assert!(err.contains("the first 5 packets were analyzed"), "{err}");
}

/// An impossible record length in the middle of a capture: the report of
/// what came before is exactly the report of the file cut before that
/// record, and it says where the damage is and how much was analyzed.
#[test]
fn damage_mid_file_keeps_a_whole_report_of_what_came_before() {
    let bytes = read_capture("incident.pcap");
    let offsets = record_offsets(&bytes);
    let k = offsets.len() / 2;
    let clean = temp_file("incident-first-half.pcap", &bytes[..offsets[k]]).to_string_lossy().into_owned();
    let (expected, out) = analyze_json(&[&clean]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for length in [0xffff_fff0u32, 0x0100_0000] {
        let mut damaged = bytes.clone();
        damaged[offsets[k] + 8..offsets[k] + 12].copy_from_slice(&length.to_le_bytes());
        let path = temp_file("incident-damaged.pcap", &damaged).to_string_lossy().into_owned();
        let (doc, out) = analyze_json(&[&path]);
        assert_eq!(out.status.code(), Some(4), "{length:#x}: {}", stderr(&out));
        assert_eq!(doc["totals"], expected["totals"], "{length:#x}");
        assert!(doc["attempts"] == expected["attempts"], "{length:#x}: other attempts than the clean half's");
        let notes = doc["input_notes"].to_string();
        assert!(notes.contains(&format!("damaged at packet {}", k + 1)), "{notes}");
        assert!(notes.contains(&format!("its first {k} packets")), "{notes}");
        let table = pgreach(&["analyze", &path]);
        assert_eq!(table.status.code(), Some(4));
        assert!(String::from_utf8_lossy(&table.stdout).contains("note: "), "the table report says it too");
    }
}

/// The explanation of a PostgreSQL outcome quotes what the server said.
#[test]
fn explanations_quote_the_server() {
    let out = pgreach(&["analyze", "captures/pg_hba_rejected.pcap"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "the server said (1×): 28000 pg_hba.conf rejects connection for host \"192.0.2.100\", user \"blocked\""
        ),
        "{text}"
    );
    let (doc, _) = analyze_json(&["captures/pg_hba_rejected.pcap"]);
    let said = doc["server_said"]["hba_rejected"].as_array().expect("server_said");
    assert_eq!(said.len(), 2);
    assert!(said.iter().all(|s| s["message"].as_str().unwrap().starts_with("28000 ")));
}

#[test]
fn nothing_readable_prints_no_report() {
    for format in ["table", "json", "csv", "ndjson", "markdown", "html"] {
        let out = pgreach(&["analyze", "--format", format, "captures/does-not-exist.pcap"]);
        assert_eq!(out.status.code(), Some(1), "{format}");
        assert!(out.stdout.is_empty(), "{format}: {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(stderr(&out).lines().count(), 1, "{format}: {}", stderr(&out));
    }
}

#[test]
fn fail_on_gives_its_own_exit_status() {
    // server_stopped.pcap: PostgreSQL was stopped, both attempts refused.
    let run = |args: &[&str]| {
        let mut full = vec!["analyze"];
        full.extend_from_slice(args);
        full.push("captures/server_stopped.pcap");
        let out = pgreach(&full);
        assert!(!out.stdout.is_empty(), "the report is still written");
        out.status.code()
    };
    assert_eq!(run(&["--fail-on", "refused"]), Some(3));
    assert_eq!(run(&["--fail-on", "failures"]), Some(3));
    assert_eq!(run(&["--fail-on", "timeout,auth_failed"]), Some(0));
    assert_eq!(run(&["--fail-on", "timeout", "--fail-on", "refused", "--format", "csv"]), Some(3));
    assert_eq!(run(&["--fail-on", "failures", "--format", "ndjson"]), Some(3));
    // Only what the report covers counts.
    assert_eq!(run(&["--fail-on", "failures", "--outcome", "success"]), Some(0));
    assert_eq!(run(&[]), Some(0));
    let normal = pgreach(&["analyze", "--fail-on", "failures", "captures/normal.pcap"]);
    assert_eq!(normal.status.code(), Some(0), "normal.pcap holds only logins");
    let bad = pgreach(&["analyze", "--fail-on", "broken", "captures/normal.pcap"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("or failures"), "{}", stderr(&bad));
}

#[test]
fn gzip_captures_read_like_the_uncompressed_ones() {
    let plain = read_capture("incident.pcap");
    let (want, _) = analyze_json(&["captures/incident.pcap"]);
    let gz = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&plain).expect("compress");
        enc.finish().expect("compress")
    };
    let path = temp_file("incident.pcap.gz", &gz).to_string_lossy().into_owned();
    let (from_file, out) = analyze_json(&[&path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(from_file["totals"], want["totals"]);
    assert_eq!(from_file["stats"], want["stats"]);
    let piped = pgreach_with_stdin(&["analyze", "--format", "json", "-"], Some(&gz));
    let from_stdin: serde_json::Value = serde_json::from_slice(&piped.stdout).expect("json");
    assert_eq!(from_stdin["totals"], want["totals"]);
    // Cut short: one line with the packet it stopped at, what came before is analyzed.
    let cut = temp_file("incident-cut.pcap.gz", &gz[..gz.len() / 2]).to_string_lossy().into_owned();
    let (partial, out) = analyze_json(&[&cut]);
    assert_eq!(out.status.code(), Some(4), "damaged");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("incident-cut.pcap.gz: packet ") && err.contains("cannot read further"), "{err}");
    let read = partial["stats"]["packets"].as_u64().unwrap();
    assert!(read > 0 && read < want["stats"]["packets"].as_u64().unwrap(), "{read}");
}

#[test]
fn completions_and_man_page_come_from_the_flags() {
    let bash = pgreach(&["completions", "bash"]);
    assert_eq!(bash.status.code(), Some(0));
    let script = String::from_utf8(bash.stdout).expect("utf-8");
    for flag in ["--fail-on", "--max-flows", "--redact", "interfaces"] {
        assert!(script.contains(flag), "bash completions lack {flag}");
    }
    let syntax = Command::new("bash").arg("-n").stdin(Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write;
        c.stdin.take().expect("stdin").write_all(script.as_bytes())?;
        c.wait()
    });
    assert!(syntax.expect("bash -n").success(), "bash cannot parse its completions");
    let man = String::from_utf8(pgreach(&["man"]).stdout).expect("utf-8");
    assert!(man.contains(".TH pgreach 1"), "{}", &man[..man.len().min(300)]);
    for page in ["pgreach\\-analyze", "pgreach\\-live"] {
        assert!(man.contains(page), "the man page lacks {page}");
    }
    assert!(man.contains("fail\\-on"), "options are documented");
}

#[test]
fn colour_is_asked_for_or_refused_with_color() {
    let run = |when: &str| pgreach(&["analyze", "--color", when, "captures/server_stopped.pcap"]).stdout;
    assert!(run("always").contains(&0x1b), "--color always colours a pipe");
    assert!(!run("never").contains(&0x1b));
    assert!(!run("auto").contains(&0x1b), "a pipe is not a terminal");
}

#[test]
fn tcpdump_habits_read_files_with_r_and_a_trailing_filter() {
    let (with_f, _) = analyze_json(&["-f", "tcp port 5432", "captures/incident.pcap"]);
    let (with_r, out) = analyze_json(&["-r", "captures/incident.pcap", "tcp", "port", "5432"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(with_r["totals"], with_f["totals"]);
    assert_eq!(with_r["stats"], with_f["stats"]);
    assert_eq!(with_r["files"], serde_json::json!(["captures/incident.pcap"]));
    let (two, _) = analyze_json(&["-r", "captures/normal.pcap", "-r", "captures/server_stopped.pcap"]);
    assert_eq!(attempts(&two), 5, "3 logins and 2 refusals");
    // Without -r, trailing filter words are not files: a hint, and no report.
    let out = pgreach(&["analyze", "captures/incident.pcap", "port", "5432"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let err = stderr(&out);
    assert!(err.contains("use -f \"port 5432\"") && err.contains("-r FILE port 5432"), "{err}");
    // A filter given twice, and nothing to read.
    let twice = pgreach(&["analyze", "-r", "captures/normal.pcap", "-f", "icmp", "port", "5432"]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(stderr(&twice).contains("give it once"), "{}", stderr(&twice));
    let none = pgreach(&["analyze"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("-r FILE"), "{}", stderr(&none));
}

#[test]
fn every_option_is_checked_before_anything_is_read() {
    let incident = "captures/incident.pcap";
    let cases: &[(&[&str], &str)] = &[
        (&["--bucket", "0s"], "at least 1ms"),
        (&["--bucket", "1us"], "at least 1ms"),
        (&["--bucket", "soon"], "not a duration"),
        (&["--since", "2026-11-24T10:00:00Z", "--until", "2026-11-24T09:00:00Z"], "--since must be before --until"),
        (&["--since", "+5m", "--until", "+1m"], "--since must be before --until"),
        (&["--syn-timeout", "0s"], "at least 1ms"),
        (&["--syn-timeout", "3h"], "at most 1h"),
        (&["-p", "0"], "not in 1..=65535"),
        (&["-p", "65536"], "65536"),
        (&["--max-rows", "0"], "not in 1..="),
        (&["--max-listed", "99999999999"], "not in 0..="),
        (&["--max-flows", "0"], "0"),
    ];
    for (args, says) in cases {
        let mut full = vec!["analyze"];
        full.extend_from_slice(args);
        full.push(incident);
        let out = pgreach(&full);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?} wrote a report");
    }
    let live: &[(&[&str], &str)] = &[
        (&["-i", "lo", "-C", "99999999999999", "-w", "/nonexistent/x"], "--rotate"),
        (&["-i", "lo", "--metrics", "127.0.0.1:0"], "port 0"),
        (&["-i", "lo", "-c", "0"], "--count"),
        (&["-i", "lo", "--duration", "0s"], "at least 1ms"),
        (&["-i", ""], "--interface"),
    ];
    for (args, says) in live {
        let mut full = vec!["live"];
        full.extend_from_slice(args);
        let out = pgreach(&full);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}
