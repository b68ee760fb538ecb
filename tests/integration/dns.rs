//! DNS beside the attempts: the answer that sent a client to an address is
//! named in its evidence, and a name that gave failing clients another
//! address than the one others logged in at reads as a stale answer.

use serde_json::Value;

use crate::postgres::logged_in;
use crate::recovery::login_from;
use crate::util::*;

const RESOLVER: &str = "192.0.2.53:53";

/// A DNS response for `name` (A records, ttl 60) sent to `client`.
fn answer(client: &str, name: &str, addresses: &[[u8; 4]]) -> Vec<u8> {
    udp_frame(RESOLVER, client, &message(name, [0x81, 0x80], addresses))
}

#[test]
fn the_lookup_behind_an_attempt_is_its_evidence() {
    // Client A looks up db.lab.test and gets a stale address nobody holds:
    // the router answers its SYN with ICMP host unreachable. Client B gets
    // the right address and logs in.
    let (a, b) = ("192.0.2.100:40000", "192.0.2.101:40001");
    let mut frames = vec![
        (at(0.0), answer("192.0.2.100:33000", "db.lab.test", &[[192, 0, 2, 77]])),
        (at(0.001), tcp_frame(a, "192.0.2.77:5432", syn(500))),
        (at(0.002), icmp_frame("192.0.2.254", a, "192.0.2.77:5432", 500, 3, 1)),
        (at(1.0), answer("192.0.2.101:33001", "db.lab.test", &[[192, 0, 2, 1]])),
    ];
    frames.extend(login_from(b, 1.001, "app", logged_in()));
    let records: Vec<_> = frames.into_iter().map(|(t, f)| (t, f.clone(), f.len() as u32)).collect();
    let path = temp_file("dns.pcap", &pcap_bytes(1, 65535, &records)).to_string_lossy().into_owned();
    let (doc, out) = analyze_json(&[&path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(doc["stats"]["dns_answers"], 2);
    let attempt = |outcome: &str| -> Value {
        doc["attempts"].as_array().unwrap().iter().find(|x| x["outcome"] == outcome).cloned().expect(outcome)
    };
    let stale = attempt("unreachable");
    assert_eq!(stale["dns"]["name"], "db.lab.test");
    assert_eq!(stale["dns"]["addresses"], serde_json::json!(["192.0.2.77"]));
    assert_eq!(stale["dns"]["resolver"], "192.0.2.53");
    assert_eq!(attempt("success")["dns"]["addresses"], serde_json::json!(["192.0.2.1"]));
    let evidence: Vec<String> = doc["diagnosis"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["outcome"] == "unreachable")
        .flat_map(|f| f["evidence"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap().to_owned()))
        .collect();
    assert!(
        evidence.iter().any(|e| e.contains("looked up db.lab.test just before and got 192.0.2.77")),
        "{evidence:?}"
    );
    assert!(
        evidence.iter().any(|e| e.contains("db.lab.test also gave 192.0.2.1, where clients logged in")),
        "{evidence:?}"
    );
    assert!(evidence.iter().all(|e| !e.contains("no DNS answer in this capture gave")), "{evidence:?}");
    let text = String::from_utf8(pgreach(&["analyze", "--connections", &path]).stdout).unwrap();
    assert!(text.contains("looked up db.lab.test → 192.0.2.77 (ttl 60s) from 192.0.2.53"), "{text}");
    let csv = String::from_utf8(pgreach(&["analyze", "--format", "csv", &path]).stdout).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",server_name"), "{csv}");
    assert_eq!(csv.lines().filter(|l| l.ends_with(",db.lab.test")).count(), 2, "{csv}");
    // An answer long before (past its TTL) explains nothing.
    let late = vec![
        (at(0.0), answer("192.0.2.100:33000", "db.lab.test", &[[192, 0, 2, 77]])),
        (at(300.0), tcp_frame(a, "192.0.2.77:5432", syn(500))),
        (at(300.001), icmp_frame("192.0.2.254", a, "192.0.2.77:5432", 500, 3, 1)),
    ];
    let records: Vec<_> = late.into_iter().map(|(t, f)| (t, f.clone(), f.len() as u32)).collect();
    let path = temp_file("dns-late.pcap", &pcap_bytes(1, 65535, &records)).to_string_lossy().into_owned();
    let (doc, _) = analyze_json(&[&path]);
    assert_eq!(doc["attempts"][0]["dns"], Value::Null);
    // A hard-coded address beside names that resolved.
    let mut frames = vec![(at(0.0), answer("192.0.2.101:33001", "db.lab.test", &[[192, 0, 2, 1]]))];
    frames.extend(login_from("192.0.2.101:40001", 0.001, "app", logged_in()));
    frames.push((at(0.5), tcp_frame(a, "192.0.2.77:5432", syn(500))));
    frames.push((at(0.501), icmp_frame("192.0.2.254", a, "192.0.2.77:5432", 500, 3, 1)));
    frames.sort_by_key(|f| f.0);
    let records: Vec<_> = frames.into_iter().map(|(t, f)| (t, f.clone(), f.len() as u32)).collect();
    let path = temp_file("dns-hardcoded.pcap", &pcap_bytes(1, 65535, &records)).to_string_lossy().into_owned();
    let (doc, _) = analyze_json(&[&path]);
    let said = doc["diagnosis"]["findings"].to_string();
    assert!(said.contains("1 of these attempts went to an address no DNS answer in this capture gave"), "{said}");
}

/// A DNS failure (rcode) for `name` sent to `client`.
fn failure(client: &str, name: &str, rcode: u8) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80 | rcode, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    udp_frame(RESOLVER, client, &m)
}

fn write(name: &str, frames: Vec<(pgreach::time::Timestamp, Vec<u8>)>) -> String {
    let records: Vec<_> = frames.into_iter().map(|(t, f)| (t, f.clone(), f.len() as u32)).collect();
    temp_file(name, &pcap_bytes(1, 65535, &records)).to_string_lossy().into_owned()
}

#[test]
fn a_database_name_that_does_not_resolve_is_a_failure() {
    // psql host=missing.lab.test: NXDOMAIN (asked twice, A and AAAA), no SYN at all.
    let only_failure = write(
        "nxdomain.pcap",
        vec![
            (at(0.0), failure("192.0.2.100:33000", "missing.lab.test", 3)),
            (at(0.001), failure("192.0.2.100:33000", "missing.lab.test", 3)),
        ],
    );
    let (doc, out) = analyze_json(&[&only_failure]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(doc["totals"]["attempts"], 1, "one failure, asked twice");
    assert_eq!(doc["totals"]["dns_failed"], 1);
    let a = &doc["attempts"][0];
    assert_eq!(a["outcome"], "dns_failed");
    assert_eq!(a["tcp_outcome"], "not_attempted");
    assert_eq!(a["dns"]["name"], "missing.lab.test");
    assert_eq!(a["dns"]["rcode"], "nx_domain");
    let text = String::from_utf8(pgreach(&["analyze", &only_failure]).stdout).unwrap();
    assert!(text.contains("1 failed — 1 dns_failed"), "{text}");
    assert!(text.contains("could not translate host name"), "{text}");
    assert_eq!(pgreach(&["analyze", "--fail-on", "failures", &only_failure]).status.code(), Some(3));

    // Beside a database name that clients used, another name's failure is
    // not the database's (a browser's ad server, say) unless --db-host names it.
    let mut frames = vec![
        (at(0.0), answer("192.0.2.101:33001", "db.lab.test", &[[192, 0, 2, 1]])),
        (at(0.5), failure("192.0.2.100:33000", "ads.example.org", 3)),
        (at(0.6), failure("192.0.2.100:33002", "db2.lab.test", 2)),
    ];
    frames.extend(login_from("192.0.2.101:40001", 0.001, "app", logged_in()));
    let mixed = write("mixed.pcap", frames);
    let (doc, _) = analyze_json(&[&mixed]);
    assert_eq!(doc["totals"]["dns_failed"], Value::Null, "neither failed name is a database name: {}", doc["totals"]);
    let (doc, _) = analyze_json(&["--db-host", "*.lab.test", &mixed]);
    assert_eq!(doc["totals"]["dns_failed"], 1);
    let failed = doc["attempts"].as_array().unwrap().iter().find(|a| a["outcome"] == "dns_failed").unwrap().clone();
    assert_eq!(failed["dns"]["name"], "db2.lab.test");
    assert_eq!(failed["dns"]["rcode"], "serv_fail");
}

/// A DNS message for `name` (A question) with the given flags and A records (ttl 60).
fn message(name: &str, flags: [u8; 2], addresses: &[[u8; 4]]) -> Vec<u8> {
    let mut m = vec![0x56, 0x78, flags[0], flags[1], 0, 1, 0, addresses.len() as u8, 0, 0, 0, 0];
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    for a in addresses {
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        m.extend_from_slice(a);
    }
    m
}

/// A query (recursion desired) for `name`'s A records.
fn query(name: &str) -> Vec<u8> {
    message(name, [0x01, 0x00], &[])
}

/// Bytes that live as long as the test binary: the frame builders take `'static` payloads.
fn kept(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

#[test]
fn an_answer_over_tcp_names_the_attempt() {
    // The UDP answer was too long (TC set, no records): the client asks
    // again over TCP and gets 30 addresses, in pieces, one of them sent twice.
    let (client, dns_tcp) = ("192.0.2.100:33000", "192.0.2.100:41000");
    let addresses: Vec<[u8; 4]> = (1..=30).map(|i| [192, 0, 2, i]).collect();
    let answer = message("big.lab.test", [0x81, 0x80], &addresses);
    let framed = [&(answer.len() as u16).to_be_bytes()[..], &answer].concat();
    let ask = query("big.lab.test");
    let ask = kept([&(ask.len() as u16).to_be_bytes()[..], &ask].concat());
    let (first, rest) = framed.split_at(1);
    let (middle, last) = rest.split_at(100);
    let (first, middle, last) = (kept(first.to_vec()), kept(middle.to_vec()), kept(last.to_vec()));
    let n = |b: &[u8]| b.len() as u32;
    let frames = vec![
        (at(0.0), udp_frame(client, RESOLVER, &query("big.lab.test"))),
        (at(0.001), udp_frame(RESOLVER, client, &message("big.lab.test", [0x83, 0x80], &[]))),
        (at(0.002), tcp_frame(dns_tcp, RESOLVER, syn(100))),
        (at(0.003), tcp_frame(RESOLVER, dns_tcp, syn_ack(900, 101))),
        (at(0.004), tcp_frame(dns_tcp, RESOLVER, data(101, 901, ask))),
        (at(0.005), tcp_frame(RESOLVER, dns_tcp, data(901, 101 + n(ask), first))),
        (at(0.006), tcp_frame(RESOLVER, dns_tcp, data(902, 101 + n(ask), middle))),
        (at(0.007), tcp_frame(RESOLVER, dns_tcp, data(902, 101 + n(ask), middle))),
        (at(0.008), tcp_frame(RESOLVER, dns_tcp, data(902 + n(middle), 101 + n(ask), last))),
        (at(0.010), tcp_frame("192.0.2.100:40000", "192.0.2.7:5432", syn(500))),
        (at(0.011), tcp_frame("192.0.2.7:5432", "192.0.2.100:40000", rst_ack(0, 501))),
    ];
    let path = write("dns-tcp.pcap", frames);
    let (doc, out) = analyze_json(&[&path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(doc["stats"]["dns_tcp_skipped"], 0);
    assert_eq!(doc["stats"]["dns_unanswered"], 0, "the query was answered (over TCP)");
    let attempt = &doc["attempts"][0];
    assert_eq!(attempt["outcome"], "refused");
    assert_eq!(attempt["dns"]["name"], "big.lab.test");
    assert_eq!(attempt["dns"]["addresses"].as_array().unwrap().len(), 8, "at most 8 kept");
    assert_eq!(attempt["dns"]["addresses"][6], "192.0.2.7");
    // The same exchange with the answer's middle lost: nothing is guessed.
    let mut lossy = vec![
        (at(0.002), tcp_frame(dns_tcp, RESOLVER, syn(100))),
        (at(0.003), tcp_frame(RESOLVER, dns_tcp, syn_ack(900, 101))),
        (at(0.005), tcp_frame(RESOLVER, dns_tcp, data(901, 101, first))),
        (at(0.008), tcp_frame(RESOLVER, dns_tcp, data(902 + n(middle), 101, last))),
    ];
    lossy.push((at(0.010), tcp_frame("192.0.2.100:40000", "192.0.2.7:5432", syn(500))));
    lossy.push((at(0.011), tcp_frame("192.0.2.7:5432", "192.0.2.100:40000", rst_ack(0, 501))));
    let (doc, _) = analyze_json(&[&write("dns-tcp-lossy.pcap", lossy)]);
    assert_eq!(doc["stats"]["dns_tcp_skipped"], 1);
    assert_eq!(doc["attempts"][0]["dns"], Value::Null);
}

#[test]
fn a_query_no_answer_followed_is_a_failed_lookup() {
    // psql host=slow.lab.test against a resolver that says nothing: glibc
    // asks, asks again 5 s later, and gives up ("Temporary failure in name
    // resolution"); 8 s after the last query no answer is expected. Another client's answered query and a query asked just
    // before the capture ended are no failures.
    let (client, other) = ("192.0.2.100:33000", "192.0.2.101:33001");
    let frames = vec![
        (at(0.0), udp_frame(client, RESOLVER, &query("slow.lab.test"))),
        (at(0.5), udp_frame(other, RESOLVER, &query("db.lab.test"))),
        (at(0.501), answer(other, "db.lab.test", &[[192, 0, 2, 1]])),
        (at(5.0), udp_frame(client, RESOLVER, &query("slow.lab.test"))),
        (at(7.0), udp_frame(other, RESOLVER, &query("late.lab.test"))),
        (at(14.0), udp_frame(other, RESOLVER, &query("db.lab.test"))),
        (at(14.001), answer(other, "db.lab.test", &[[192, 0, 2, 1]])),
    ];
    let path = write("dns-unanswered.pcap", frames);
    let (doc, out) = analyze_json(&[&path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(doc["stats"]["dns_unanswered"], 1, "{}", doc["stats"]);
    assert_eq!(doc["totals"]["dns_failed"], 1, "one failure, asked twice");
    let failed = &doc["attempts"][0];
    assert_eq!(failed["outcome"], "dns_failed");
    assert_eq!(failed["dns"]["name"], "slow.lab.test");
    assert_eq!(failed["dns"]["rcode"], Value::Null);
    assert_eq!(failed["client"], "192.0.2.100:33000");
    let text = String::from_utf8(pgreach(&["analyze", "--connections", &path]).stdout).unwrap();
    assert!(text.contains("looked up slow.lab.test: no answer from 192.0.2.53 within 8s"), "{text}");
    assert_eq!(pgreach(&["analyze", "--fail-on", "failures", &path]).status.code(), Some(3));
    // Beside a name clients used, a silent name is only reported when --db-host names it.
    let mut frames = vec![
        (at(0.0), answer("192.0.2.101:33001", "db.lab.test", &[[192, 0, 2, 1]])),
        (at(0.5), udp_frame(client, RESOLVER, &query("slow.lab.test"))),
        (at(20.0), udp_frame(other, RESOLVER, &query("db.lab.test"))),
    ];
    frames.extend(login_from("192.0.2.101:40001", 0.001, "app", logged_in()));
    frames.sort_by_key(|f| f.0);
    let path = write("dns-unanswered-mixed.pcap", frames);
    let (doc, _) = analyze_json(&[&path]);
    assert_eq!(doc["totals"]["dns_failed"], Value::Null, "{}", doc["totals"]);
    assert_eq!(doc["stats"]["dns_unanswered"], 1, "the failure is counted all the same");
    let (doc, _) = analyze_json(&["--db-host", "slow.lab.test", &path]);
    assert_eq!(doc["totals"]["dns_failed"], 1);
}

/// A capture that holds the client's queries but not the resolver's
/// answers (a one-way filter or route): the clients connected after asking,
/// so they got their addresses; none of their names is a failed lookup.
#[test]
fn queries_whose_answers_the_capture_lacks_are_no_failures() {
    use pgreach::decode::{decode, Decoded, LinkType};
    let recorded = crate::bounds::read_pcap(&project_root().join("captures/dns_names.pcap"));
    let from_resolver = |frame: &[u8]| match decode(LinkType::Ethernet, frame) {
        Ok(Decoded::Udp(d)) => d.src.port() == 53,
        Ok(Decoded::Tcp(s)) => s.src.port() == 53,
        _ => false,
    };
    let mut one_way: Vec<_> = recorded.iter().filter(|(_, f, _)| !from_resolver(f)).cloned().collect();
    assert!(one_way.len() < recorded.len(), "the capture holds answers to take out");
    // The capture runs on well past every query's wait (a packet of something else).
    let end = recorded.last().expect("packets").0 + std::time::Duration::from_secs(30);
    let other = udp_frame("192.0.2.200:1000", "192.0.2.201:1000", b"x");
    one_way.push((end, other.clone(), other.len() as u32));
    let path = temp_file("dns-one-way.pcap", &pcap_bytes(1, 262_144, &one_way));
    let (doc, out) = analyze_json(&[path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(doc["totals"]["dns_failed"], Value::Null, "{}", doc["totals"]);
    assert!(doc["stats"]["dns_answers_not_captured"].as_u64().unwrap_or(0) > 0, "{}", doc["stats"]);
    // The attempts themselves are those of the whole capture.
    let (whole, _) = analyze_json(&["captures/dns_names.pcap"]);
    let outcomes =
        |d: &Value| d["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].clone()).collect::<Vec<_>>();
    assert_eq!(outcomes(&doc), outcomes(&whole));
}
