//! Several capture points. Attempts are staged as the packets a client
//! host, a router (its server-side interface) and the server host would
//! each capture, with each point's clock set off by a known amount; the
//! report must list each attempt once, date the clocks, and locate each
//! loss where it was staged. The recorded multi-point captures in
//! captures/points/ are checked against what their recorder staged.

use std::path::PathBuf;

use serde_json::Value;

use crate::captures::compare_attempts;
use crate::util::{analyze_json, at, icmp_frame, pcap_bytes, pgreach, project_root, stderr, tcp_frame, temp_file, Seg};
use pgreach::time::Timestamp;

const ETHERNET: u32 = 1;
const CLIENT: usize = 0;
const ROUTER: usize = 1;
const SERVER: usize = 2;
const ALL: &[usize] = &[CLIENT, ROUTER, SERVER];
const SERVER_ADDR: &str = "192.0.2.66:5432";
/// The router's address on the server's side: SNAT's source.
const ROUTER_WAN: &str = "192.0.2.65";

/// Each point's frames; a frame is captured a little later at each point
/// further along its way (0.1 ms per hop).
#[derive(Default)]
struct Staged {
    frames: [Vec<(f64, Vec<u8>)>; 3],
}

impl Staged {
    /// A segment from the client, seen at `points`, from `client` (as NAT
    /// leaves it at each point). Its TTL drops past the client's host.
    fn client_sends(&mut self, points: &[usize], t: f64, client: &dyn Fn(usize) -> String, seg: Seg) {
        for &p in points {
            let ttl = if p == CLIENT { 64 } else { 63 };
            self.frames[p].push((t + 1e-4 * p as f64, tcp_frame(&client(p), SERVER_ADDR, Seg { ttl, ..seg })));
        }
    }

    /// A segment from the server, seen at `points`; its TTL drops past the router.
    fn server_sends(&mut self, points: &[usize], t: f64, client: &dyn Fn(usize) -> String, seg: Seg) {
        for &p in points {
            let ttl = if p == CLIENT { 63 } else { 64 };
            self.frames[p].push((t + 1e-4 * (2 - p) as f64, tcp_frame(SERVER_ADDR, &client(p), Seg { ttl, ..seg })));
        }
    }

    /// The points' files, each clock set off by `offsets` seconds.
    fn write(&self, test: &str, offsets: [f64; 3]) -> Vec<PathBuf> {
        ["client", "router", "server"]
            .iter()
            .enumerate()
            .map(|(p, name)| {
                let mut frames = self.frames[p].clone();
                frames.sort_by(|a, b| a.0.total_cmp(&b.0));
                let records: Vec<(Timestamp, Vec<u8>, u32)> =
                    frames.into_iter().map(|(t, f)| (at(t + offsets[p]), f.clone(), f.len() as u32)).collect();
                temp_file(&format!("{test}-{name}.pcap"), &pcap_bytes(ETHERNET, 65535, &records))
            })
            .collect()
    }
}

fn seg(syn: bool, seq: u32, ack: Option<u32>) -> Seg {
    Seg { syn, seq, ack, ..Seg::default() }
}

/// The staged path: one attempt per kind of loss, each from its own
/// client, ten seconds apart; the expected location of each.
/// Where an attempt's packets were lost: kind, from, to.
type Located = Option<(&'static str, &'static str, Option<&'static str>)>;

fn stage() -> (Staged, Vec<(&'static str, Located)>) {
    let mut s = Staged::default();
    let plain = |n: u8| move |_: usize| format!("192.0.2.{n}:400{n}");
    // A handshake seen everywhere: it teaches the points' order.
    let c = plain(10);
    s.client_sends(ALL, 0.0, &c, seg(true, 1000, None));
    s.server_sends(ALL, 0.001, &c, seg(true, 9000, Some(1001)));
    s.client_sends(ALL, 0.002, &c, seg(false, 1001, Some(9001)));
    // The server host drops the SYNs.
    let c = plain(11);
    for t in [10.0, 11.0, 13.0] {
        s.client_sends(ALL, t, &c, seg(true, 2000, None));
    }
    // The router drops them on its forward path.
    let c = plain(12);
    for t in [20.0, 21.0, 23.0] {
        s.client_sends(&[CLIENT], t, &c, seg(true, 3000, None));
    }
    // The router drops the SYN-ACKs on their way back.
    let c = plain(13);
    for t in [30.0, 31.0, 33.0] {
        s.client_sends(ALL, t, &c, seg(true, 4000, None));
        s.server_sends(&[ROUTER, SERVER], t + 0.001, &c, seg(true, 9100, Some(4001)));
    }
    // The router rejects with a RST in the server's name.
    let c = plain(14);
    s.client_sends(&[CLIENT], 40.0, &c, seg(true, 5000, None));
    s.server_sends(&[CLIENT], 40.001, &c, Seg { rst: true, ..seg(false, 0, Some(5001)) });
    // The router rejects with ICMP admin-prohibited.
    let c = plain(15);
    s.client_sends(&[CLIENT], 50.0, &c, seg(true, 6000, None));
    s.frames[CLIENT].push((50.001, icmp_frame("192.0.2.1", &c(CLIENT), SERVER_ADDR, 6000, 3, 13)));
    // Through SNAT on the router, a handshake.
    let nat = |p: usize| if p == CLIENT { "192.0.2.16:40016".to_owned() } else { format!("{ROUTER_WAN}:40016") };
    s.client_sends(ALL, 60.0, &nat, seg(true, 7000, None));
    s.server_sends(ALL, 60.001, &nat, seg(true, 9200, Some(7001)));
    s.client_sends(ALL, 60.002, &nat, seg(false, 7001, Some(9201)));
    let expected = vec![
        ("192.0.2.10", None),
        ("192.0.2.11", Some(("dropped_at", "server", None))),
        ("192.0.2.12", Some(("lost_between", "client", Some("router")))),
        ("192.0.2.13", Some(("answer_lost_between", "router", Some("client")))),
        ("192.0.2.14", Some(("forged_between", "client", Some("router")))),
        ("192.0.2.15", Some(("forged_between", "client", Some("router")))),
        ("192.0.2.16", None),
    ];
    (s, expected)
}

fn at_args(files: &[PathBuf]) -> Vec<String> {
    ["client", "router", "server"]
        .iter()
        .zip(files)
        .flat_map(|(name, f)| ["--at".to_owned(), format!("{name}={}", f.display())])
        .collect()
}

fn run_json(args: &[String]) -> Value {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (doc, out) = analyze_json(&args);
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    doc
}

#[test]
fn each_staged_loss_is_located_between_the_points_that_staged_it() {
    let (staged, expected) = stage();
    let files = staged.write("located", [0.0, -1.25, 2.5]);
    let doc = run_json(&at_args(&files));
    let attempts = doc["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), expected.len(), "each attempt once: {attempts:#?}");
    assert_eq!(doc["totals"]["attempts"], expected.len() as u64);
    for (a, (client, location)) in attempts.iter().zip(&expected) {
        assert!(a["client"].as_str().unwrap().starts_with(client), "{a}");
        let got = a
            .get("location")
            .map(|l| (l["kind"].as_str().unwrap(), l["from"].as_str().unwrap(), l.get("to").and_then(Value::as_str)));
        assert_eq!(got, *location, "{client}: {a:#}");
    }
    // The drop on the server's host: the SYNs were seen at all three points.
    let seen: Vec<&str> =
        attempts[1]["seen_at"].as_array().unwrap().iter().map(|s| s["point"].as_str().unwrap()).collect();
    assert_eq!(seen, ["client", "router", "server"]);
    assert!(attempts[1]["seen_at"].as_array().unwrap().iter().all(|s| s["syns"] == 3));
    // The forged RST is the client's outcome, as it saw it.
    assert_eq!(attempts[4]["outcome"], "refused");
    // SNAT: the client's pair is the attempt's, the router's is in the evidence.
    let nat = &attempts[6]["nat"];
    assert_eq!(nat["kind"], "source", "{nat}");
    assert_eq!(attempts[6]["client"], "192.0.2.16:40016");
    assert!(nat["pairs"].as_array().unwrap().iter().any(|p| p["client"] == format!("{ROUTER_WAN}:40016")));
    // Each point's clock, against the client's: the staged offset (and 0.1 ms a hop).
    let offsets: Vec<f64> =
        doc["points"].as_array().unwrap().iter().map(|p| p["clock_offset_s"].as_f64().unwrap()).collect();
    assert_eq!(offsets[0], 0.0);
    assert!((offsets[1] - -1.25).abs() < 0.001, "{offsets:?}");
    assert!((offsets[2] - 2.5).abs() < 0.001, "{offsets:?}");
    // Times are on the client's clock: the client's capture alone dates each attempt alike.
    let (alone, _) = analyze_json(&[files[0].to_str().unwrap()]);
    let starts = |d: &Value| d["attempts"].as_array().unwrap().iter().map(|a| a["start"].clone()).collect::<Vec<_>>();
    assert_eq!(starts(&doc), starts(&alone));
}

#[test]
fn the_reports_say_where_each_failure_was_located() {
    let (staged, _) = stage();
    let files = staged.write("words", [0.0, 0.0, 0.0]);
    let mut args = vec!["analyze".to_owned(), "--connections".to_owned()];
    args.extend(at_args(&files));
    let out = pgreach(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    for said in [
        "the SYNs left client (client: 3 SYNs) and reached server (server: 3 SYNs), where nothing answered",
        "lost between client and router",
        "answer lost between router and client",
        "forged between client and router",
        "capture point router:",
        // The table of where the failures were located, under the clients'.
        "located",
    ] {
        assert!(text.contains(said), "{said:?} missing from:\n{text}");
    }
}

#[test]
fn files_given_plainly_are_points_named_after_them() {
    let (staged, expected) = stage();
    let files = staged.write("plain", [0.0, 0.0, 0.0]);
    let doc = run_json(&files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>());
    let names: Vec<&str> = doc["points"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["plain-client", "plain-router", "plain-server"]);
    assert_eq!(doc["attempts"].as_array().unwrap().len(), expected.len());
}

/// Rewrites a classic pcap's timestamps `by` seconds later (whole microseconds).
fn shift_pcap(bytes: &[u8], by: f64) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let little = bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1];
    let nano = matches!(bytes[..4], [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d]);
    let unit = if nano { 1e9 } else { 1e6 };
    let read = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let write = |v: u32| if little { v.to_le_bytes() } else { v.to_be_bytes() };
    let mut at = 24;
    while at + 16 <= out.len() {
        let (secs, frac) = (read(&out[at..]), read(&out[at + 4..]));
        let total = (f64::from(secs) * unit + f64::from(frac) + (by * unit).round()) as u64;
        out[at..at + 4].copy_from_slice(&write((total / unit as u64) as u32));
        out[at + 4..at + 8].copy_from_slice(&write((total % unit as u64) as u32));
        at += 16 + read(&out[at + 8..]) as usize;
    }
    out
}

#[test]
fn a_file_shifted_by_a_known_amount_gets_that_clock_offset() {
    // The recorded login at several points when there is one (its own offset
    // is measured first), else a staged capture.
    let recorded = points_scenarios().into_iter().find(|(name, _)| name == "points_login").map(|(_, e)| {
        let points = e["points"].as_array().cloned().unwrap_or_default();
        let files: Vec<PathBuf> = points.iter().map(|p| points_dir().join(p["file"].as_str().unwrap())).collect();
        let args: Vec<String> = e["args"]
            .as_array()
            .map_or_else(Vec::new, |a| a.iter().filter_map(|v| Some(v.as_str()?.to_owned())).collect());
        (files, args)
    });
    let (files, args) = recorded.unwrap_or_else(|| (stage().0.write("shift", [0.0; 3]), Vec::new()));
    let offset_of = |files: &[PathBuf]| {
        let mut all: Vec<String> =
            files.iter().enumerate().flat_map(|(i, f)| ["--at".to_owned(), format!("p{i}={}", f.display())]).collect();
        all.extend(args.iter().cloned());
        let point = &run_json(&all)["points"][1];
        assert_eq!(point["clock_estimated"], true, "{point}");
        point["clock_offset_s"].as_f64().unwrap()
    };
    let before = offset_of(&files);
    let shifted = temp_file("shifted.pcap", &shift_pcap(&std::fs::read(&files[1]).unwrap(), 3.75));
    let mut moved = files.clone();
    moved[1] = shifted;
    let after = offset_of(&moved);
    assert!((after - before - 3.75).abs() < 1e-4, "offset {before} s, then {after} s after shifting by 3.75 s");
}

#[test]
fn nat_copies_in_one_capture_are_one_attempt_with_both_pairs() {
    // `-i any` on the NAT router: each packet before and after translation.
    let mut s = Staged::default();
    let pre = |_: usize| "192.0.2.16:40016".to_owned();
    let post = |_: usize| format!("{ROUTER_WAN}:40016");
    s.client_sends(&[CLIENT], 0.0, &pre, seg(true, 7000, None));
    s.client_sends(&[ROUTER], 0.0, &post, seg(true, 7000, None));
    s.server_sends(&[ROUTER], 0.001, &post, seg(true, 9200, Some(7001)));
    s.server_sends(&[CLIENT], 0.001, &pre, seg(true, 9200, Some(7001)));
    // Another client's attempt that drew the same ISN seconds later stays apart.
    let other = |_: usize| "192.0.2.17:40017".to_owned();
    s.client_sends(&[CLIENT], 5.0, &other, seg(true, 7000, None));
    let mut frames: Vec<(f64, Vec<u8>)> = s.frames[CLIENT].iter().chain(&s.frames[ROUTER]).cloned().collect();
    frames.sort_by(|a, b| a.0.total_cmp(&b.0));
    let records: Vec<(Timestamp, Vec<u8>, u32)> =
        frames.into_iter().map(|(t, f)| (at(t), f.clone(), f.len() as u32)).collect();
    let file = temp_file("nat-any.pcap", &pcap_bytes(ETHERNET, 65535, &records));
    let (doc, out) = analyze_json(&[file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let attempts = doc["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(doc["stats"]["attempts"], 2);
    assert_eq!(attempts[0]["client"], "192.0.2.16:40016", "the client's side is kept");
    assert_eq!(attempts[0]["nat"]["kind"], "source");
    assert_eq!(attempts[0]["nat"]["pairs"].as_array().unwrap().len(), 2);
    assert!(attempts[1].get("nat").is_none());
    assert!(doc.get("points").is_none(), "one point: no points list");
}

#[test]
fn capture_point_flags_are_checked_before_reading() {
    let file = temp_file("flags.pcap", &pcap_bytes(ETHERNET, 65535, &[]));
    let f = file.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![format!("--at=a={f}"), format!("--at=b={f}")], "given twice"),
        (vec![format!("--at=a b={f}")], "letters, digits"),
        (vec!["--at=a=".to_owned()], "no file"),
        (vec![format!("--at={f}")], "NAME=FILE"),
        (vec![format!("--at=flags={f}"), f.to_owned()], "given twice"),
    ];
    for (args, says) in cases {
        let mut all = vec!["analyze"];
        all.extend(args.iter().map(String::as_str));
        let out = pgreach(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

fn points_dir() -> PathBuf {
    project_root().join("captures/points")
}

/// Every `captures/points/*.expected.json`, by scenario name.
fn points_scenarios() -> Vec<(String, Value)> {
    let Ok(dir) = std::fs::read_dir(points_dir()) else { return Vec::new() };
    let mut found: Vec<(String, Value)> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".expected.json").map(str::to_owned))
        .map(|name| {
            let text = std::fs::read_to_string(points_dir().join(format!("{name}.expected.json"))).unwrap();
            (name, serde_json::from_str(&text).expect("expected JSON"))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Each recorded multi-point capture gives, attempt by attempt, the
/// outcomes, locations and NAT its recorder staged; and no capture file
/// there is left out of an expected file.
#[test]
fn every_recorded_point_capture_gives_what_was_staged() {
    let scenarios = points_scenarios();
    let mut used = Vec::new();
    for (name, expected) in &scenarios {
        let mut args = Vec::new();
        for p in expected["points"].as_array().expect("points") {
            let file = p["file"].as_str().expect("file");
            used.push(file.to_owned());
            args.push("--at".to_owned());
            args.push(format!("{}=captures/points/{file}", p["name"].as_str().expect("name")));
        }
        let extra: Vec<String> = expected["args"]
            .as_array()
            .map_or_else(Vec::new, |a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect());
        args.extend(extra.iter().cloned());
        let doc = run_json(&args);
        let attempts: Vec<&Value> =
            doc["attempts"].as_array().expect("attempts").iter().filter(|a| a["pooler_leg"] != true).collect();
        compare_attempts(name, attempts, expected, &extra);
    }
    if let Ok(dir) = std::fs::read_dir(points_dir()) {
        for file in dir.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            if file.ends_with(".pcap") || file.ends_with(".pcapng") {
                assert!(used.contains(&file), "captures/points/{file} is in no expected file");
            }
        }
    }
}

/// A point's name comes from its file's name, which may hold anything: the
/// terminal report shows control characters visibly, JSON keeps the name.
#[test]
fn point_names_from_file_names_are_escaped() {
    let (staged, _) = stage();
    let files = staged.write("escape", [0.0; 3]);
    let evil = files[0].with_file_name("evil\u{1b}[31mred.pcap");
    std::fs::copy(&files[0], &evil).unwrap();
    let (evil, server) = (evil.display().to_string(), files[2].display().to_string());
    let out = pgreach(&["analyze", "--connections", &evil, &server]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains('\u{1b}'), "a raw escape reached the terminal:\n{text}");
    assert!(text.contains("dropped at escape-server"), "{text}");
    let doc = run_json(&[evil, server]);
    assert_eq!(doc["points"][0]["name"], "evil\u{1b}[31mred");
}

/// --redact replaces the addresses every point saw, and NAT's pairs.
#[test]
fn redaction_covers_every_point_and_nat_pair() {
    let (staged, _) = stage();
    let files = staged.write("redact", [0.0; 3]);
    let mut args = vec!["--redact".to_owned()];
    args.extend(at_args(&files));
    let doc = run_json(&args);
    let text = doc["attempts"].to_string();
    assert!(text.contains("seen_at") && text.contains("pairs"), "{text}");
    assert!(!text.contains("192.0.2."), "an address left: {text}");
}
