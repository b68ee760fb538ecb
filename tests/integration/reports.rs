//! Incident reports on the incident capture: filters select exactly the
//! attempts they should, and the diagnosis and windows match what the
//! recorder staged (its expected file), not pgreach's own output.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::Value;

use crate::util::{analyze_json, at, pcap_bytes, project_root, rst_ack, stderr, syn, tcp_frame, temp_file, SERVER};

const INCIDENT: &str = "captures/incident.pcap";

/// The staged attempts: (client, outcome).
fn staged() -> Vec<(IpAddr, String)> {
    let text = std::fs::read_to_string(project_root().join("captures/incident.expected.json")).expect("expected file");
    let doc: Value = serde_json::from_str(&text).expect("json");
    doc["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["client"].as_str().unwrap().parse().unwrap(), a["outcome"].as_str().unwrap().to_owned()))
        .collect()
}

fn total(doc: &Value) -> u64 {
    doc["totals"]["attempts"].as_u64().unwrap()
}

#[test]
fn client_filters_select_exactly_the_staged_attempts() {
    let staged = staged();
    let net: ipnet::IpNet = "192.0.2.96/28".parse().unwrap();
    let (doc, out) = analyze_json(&[INCIDENT, "--client", "192.0.2.96/28"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(total(&doc) as usize, staged.iter().filter(|(c, _)| net.contains(c)).count());
    let (doc, _) = analyze_json(&[INCIDENT, "--client", "192.0.2.100", "--client", "192.0.2.129"]);
    let two: BTreeSet<IpAddr> = ["192.0.2.100".parse().unwrap(), "192.0.2.129".parse().unwrap()].into();
    assert_eq!(total(&doc) as usize, staged.iter().filter(|(c, _)| two.contains(c)).count());
    for a in doc["attempts"].as_array().unwrap() {
        let ip: std::net::SocketAddr = a["client"].as_str().unwrap().parse().unwrap();
        assert!(two.contains(&ip.ip()));
    }
}

#[test]
fn outcome_and_server_filters() {
    let staged = staged();
    let (doc, _) = analyze_json(&[INCIDENT, "--outcome", "timeout", "--outcome", "refused"]);
    let want = staged.iter().filter(|(_, o)| o == "timeout" || o == "refused").count();
    assert_eq!(total(&doc) as usize, want);
    let (doc, _) = analyze_json(&[INCIDENT, "--server", "192.0.2.1:5432"]);
    assert_eq!(total(&doc) as usize, staged.len());
    let out = crate::util::pgreach(&["analyze", INCIDENT, "--server", "192.0.2.9"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("match the filters"));
    let bad = crate::util::pgreach(&["analyze", INCIDENT, "--outcome", "sad"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("not an outcome"), "{}", stderr(&bad));
}

/// --since/--until, relative to the first packet and absolute, select the
/// attempts that start inside the range.
#[test]
fn time_filters() {
    let (all, _) = analyze_json(&[INCIDENT]);
    let first_packet = all["stats"]["first_packet"].as_str().unwrap().to_owned();
    let start_of = |a: &Value| humantime::parse_rfc3339(a["start"].as_str().unwrap()).unwrap();
    let origin = humantime::parse_rfc3339(&first_packet).unwrap();
    let cut = origin + std::time::Duration::from_secs(30);
    let before = all["attempts"].as_array().unwrap().iter().filter(|a| start_of(a) < cut).count();
    assert!(before > 0 && before < all["attempts"].as_array().unwrap().len());
    let (early, _) = analyze_json(&[INCIDENT, "--until", "+30s"]);
    assert_eq!(total(&early) as usize, before);
    let (late, _) = analyze_json(&[INCIDENT, "--since", "+30s"]);
    assert_eq!(total(&early) + total(&late), total(&all));
    let absolute = humantime::format_rfc3339_micros(cut).to_string();
    let (late_abs, _) = analyze_json(&[INCIDENT, "--since", &absolute]);
    assert_eq!(total(&late_abs), total(&late));
}

/// The diagnosis ranks the failure classes the recorder staged by the
/// number of clients each affected, and every client recovered.
#[test]
fn diagnosis_names_the_staged_classes() {
    let mut clients_by_outcome: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    for (client, outcome) in staged() {
        clients_by_outcome.entry(outcome).or_default().insert(client);
    }
    let (doc, _) = analyze_json(&[INCIDENT]);
    let findings = doc["diagnosis"]["findings"].as_array().unwrap();
    let failures: Vec<(&str, u64)> = findings
        .iter()
        .filter(|f| f["failure"] == true)
        .map(|f| (f["outcome"].as_str().unwrap(), f["clients"].as_u64().unwrap()))
        .collect();
    let mut staged_failures: Vec<(&str, u64)> =
        ["refused", "unreachable", "timeout"].into_iter().map(|o| (o, clients_by_outcome[o].len() as u64)).collect();
    staged_failures.sort_by_key(|f| std::cmp::Reverse(f.1));
    let clients = |v: &[(&str, u64)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
    assert_eq!(clients(&failures), clients(&staged_failures), "ranked by clients affected");
    let names = |v: &[(&str, u64)]| v.iter().map(|x| x.0.to_owned()).collect::<BTreeSet<String>>();
    assert_eq!(names(&failures), names(&staged_failures));
    assert_eq!(doc["diagnosis"]["recovered_clients"].as_array().unwrap().len(), clients_by_outcome["success"].len());
    // The refusals came from the server host itself: same TTL as its SYN-ACKs.
    let refused = findings.iter().find(|f| f["outcome"] == "refused").unwrap();
    assert!(refused["evidence"].to_string().contains("the server host answered"), "{refused}");
    let timeout = findings.iter().find(|f| f["outcome"] == "timeout").unwrap();
    assert!(timeout["evidence"].to_string().contains("connect_timeout of about 2 s"), "{timeout}");
    assert!(timeout["evidence"].to_string().contains("answered other clients"), "{timeout}");
}

/// The staging: all fine; DROP for half; REJECT for all, then the server
/// stopped; all fine. With 5 s buckets: a timeout window for half the
/// clients, then one window of unreachable and refused for all, each with
/// logins before and after.
#[test]
fn incident_windows() {
    let (doc, _) = analyze_json(&[INCIDENT, "--bucket", "5s"]);
    assert_eq!(doc["timeline"]["bucket_ms"], 5000.0);
    let windows = doc["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{windows:#?}");
    let outcomes = |w: &Value| -> BTreeSet<String> {
        w["outcomes"].as_array().unwrap().iter().map(|o| o[0].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(outcomes(&windows[0]), BTreeSet::from(["timeout".to_owned()]));
    assert_eq!(outcomes(&windows[1]), BTreeSet::from(["refused".to_owned(), "unreachable".to_owned()]));
    assert_eq!(windows[0]["clients_affected"], 15);
    assert_eq!(windows[1]["clients_affected"], 30);
    for w in windows {
        assert_eq!((w["success_before"].as_bool(), w["success_after"].as_bool()), (Some(true), Some(true)));
    }
    let buckets = doc["timeline"]["buckets"].as_array().unwrap();
    let counted: u64 = buckets.iter().map(|b| b["attempts"].as_u64().unwrap()).sum();
    assert_eq!(counted, total(&doc));
}

/// The timeout finding's evidence lines.
fn timeout_evidence(doc: &Value) -> Vec<String> {
    doc["diagnosis"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["outcome"] == "timeout")
        .flat_map(|f| f["evidence"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn a_capture_filter_without_icmp_is_named_as_what_may_hide_unreachable() {
    // The recorder staged 90 ICMP admin-prohibited answers; `tcp port 5432`
    // filters them out, and they read as timeouts.
    let staged_unreachable = staged().iter().filter(|(_, o)| o == "unreachable").count();
    assert!(staged_unreachable > 0);
    let (filtered, _) = analyze_json(&["-f", "tcp port 5432", INCIDENT]);
    assert_eq!(filtered["totals"]["unreachable"], Value::Null, "no ICMP left to see");
    let lines = timeout_evidence(&filtered);
    assert!(lines.iter().any(|l| l.contains("the filter `tcp port 5432` lets no ICMP through")), "{lines:?}");
    // With the ICMP errors in the capture, nothing is said.
    let (whole, _) = analyze_json(&[INCIDENT]);
    assert_eq!(whole["totals"]["unreachable"].as_u64(), Some(staged_unreachable as u64));
    assert!(timeout_evidence(&whole).iter().all(|l| !l.contains("ICMP")), "{:?}", timeout_evidence(&whole));
    // A capture of a DROP holds no ICMP at all: said, as a possibility.
    let (drop, _) = analyze_json(&["captures/nft_drop.pcap"]);
    assert!(timeout_evidence(&drop).iter().any(|l| l.contains("holds no ICMP error at all")));
}

#[test]
fn times_in_any_offset_or_zone_and_times_of_day_select_the_same_attempts() {
    let (z, _) = analyze_json(&[INCIDENT, "--since", "2026-11-24T09:26:00Z", "--until", "2026-11-24T09:26:30Z"]);
    assert!(total(&z) > 0);
    for (since, until) in [
        ("2026-11-24T10:26:00+01:00", "2026-11-24T04:26:30-05:00"),
        ("2026-11-24T10:26:00[Europe/Berlin]", "09:26:30"),
        ("09:26", "09:26:30.000"),
    ] {
        let (doc, out) = analyze_json(&[INCIDENT, "--since", since, "--until", until]);
        assert_eq!(total(&doc), total(&z), "{since} .. {until}: {}", stderr(&out));
    }
    // In another zone, a time of day is that zone's.
    let (shifted, _) = analyze_json(&[INCIDENT, "--tz", "+01:00", "--since", "10:26", "--until", "10:26:30"]);
    assert_eq!(total(&shifted), total(&z));
    // A date-time without a zone is refused, with forms that work.
    let out = crate::util::pgreach(&["analyze", "--since", "2026-11-24 09:26:00", INCIDENT]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("2026-11-24T09:26:00+01:00"), "{}", stderr(&out));
}

#[test]
fn tables_carry_the_zone_and_the_date() {
    let text = |args: &[&str]| {
        let mut full = vec!["analyze", "--connections"];
        full.extend_from_slice(args);
        String::from_utf8(crate::util::pgreach(&full).stdout).unwrap()
    };
    let utc = text(&[INCIDENT]);
    assert!(utc.contains("seen (UTC, 2026-11-24)") && utc.contains("09:25:54.541"), "{utc}");
    let plus_one = text(&["--tz", "+01:00", INCIDENT]);
    assert!(plus_one.contains("seen (UTC+01:00, 2026-11-24)"), "{plus_one}");
    assert!(plus_one.contains("10:25:54.541") && !plus_one.contains("09:25:54.541"), "{plus_one}");
    assert!(plus_one.contains("to 2026-11-24T10:26:58.554376+01:00"), "{plus_one}");

    // A capture across midnight: every time carries its date.
    let refused = |port: u16, t: f64| {
        let client = format!("192.0.2.70:{port}");
        vec![
            (at(t), tcp_frame(&client, SERVER, syn(100))),
            (at(t + 0.001), tcp_frame(SERVER, &client, rst_ack(0, 101))),
        ]
    };
    // at(6400) is 2023-11-15T00:00:00Z.
    let mut frames = refused(41000, 6390.0);
    frames.extend(refused(41001, 6410.0));
    let records: Vec<_> = frames.into_iter().map(|(t, b)| (t, b.clone(), b.len() as u32)).collect();
    let path = temp_file("midnight.pcap", &pcap_bytes(1, 65535, &records)).to_string_lossy().into_owned();
    let two_days = text(&[&path]);
    assert!(two_days.contains("2023-11-14 23:59:50.000") && two_days.contains("2023-11-15 00:00:10.000"), "{two_days}");
    assert!(two_days.contains("start (UTC)"), "{two_days}");
}
