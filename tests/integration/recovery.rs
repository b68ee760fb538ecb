//! Recovery is per login: one host running two applications, one logging
//! in throughout and one failing with a stale password to the end, is not
//! "a retry that worked"; a host whose own login fails and then works is.

use pgreach::time::Timestamp;
use serde_json::Value;

use crate::postgres::{auth, error, logged_in, password, startup_of_app};
use crate::util::*;

const HOST: &str = "192.0.2.60";

/// One whole TCP connection from `HOST:port` carrying a login of
/// `application` that the server answers with `answer`, starting at `t0` seconds.
fn login(port: u16, t0: f64, application: &str, answer: Vec<u8>) -> Vec<(Timestamp, Vec<u8>)> {
    login_from(&format!("{HOST}:{port}"), t0, application, answer)
}

/// The same from any client address and port.
pub(crate) fn login_from(client: &str, t0: f64, application: &str, answer: Vec<u8>) -> Vec<(Timestamp, Vec<u8>)> {
    login_between(client, SERVER, t0, application, answer)
}

/// The same between any client and server.
pub(crate) fn login_between(
    client: &str,
    server: &str,
    t0: f64,
    application: &str,
    answer: Vec<u8>,
) -> Vec<(Timestamp, Vec<u8>)> {
    let port = crate::util::addr(client).port();
    let client = client.to_owned();
    let (mut c, mut s) = (1000u32 + u32::from(port), 5000u32);
    let mut t = t0;
    let mut frames = Vec::new();
    let mut push = |from_client: bool, seg: Seg| {
        t += 0.001;
        let (src, dst) = if from_client { (client.as_str(), server) } else { (server, client.as_str()) };
        frames.push((at(t), tcp_frame(src, dst, seg)));
    };
    push(true, syn(c));
    push(false, syn_ack(s, c + 1));
    c += 1;
    s += 1;
    push(true, ack(c, s));
    let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
    let exchange: [(bool, &'static [u8]); 4] = [
        (true, leak(startup_of_app(196_608, "app", "shop", application))),
        (false, leak(auth(5, &[1, 2, 3, 4]))),
        (true, leak(password())),
        (false, leak(answer)),
    ];
    for (from_client, bytes) in exchange {
        let n = bytes.len() as u32;
        if from_client {
            push(true, data(c, s, bytes));
            c += n;
        } else {
            push(false, data(s, c, bytes));
            s += n;
        }
    }
    push(true, fin(c, s));
    push(false, fin(s, c + 1));
    push(true, ack(c + 1, s + 1));
    frames
}

fn stale_password() -> Vec<u8> {
    error("FATAL", "28P01", "password authentication failed for user \"app\"")
}

fn analyze(name: &str, frames: Vec<(Timestamp, Vec<u8>)>) -> (Value, String) {
    let mut frames = frames;
    frames.sort_by_key(|f| f.0);
    let records: Vec<_> = frames.into_iter().map(|(t, b)| (t, b.clone(), b.len() as u32)).collect();
    let file = temp_file(name, &pcap_bytes(1, 65535, &records));
    let path = file.to_str().expect("utf-8 path");
    let (doc, _) = analyze_json(&["--bucket", "10s", path]);
    let text = pgreach(&["analyze", "--bucket", "10s", path]);
    (doc, String::from_utf8_lossy(&text.stdout).into_owned())
}

#[test]
fn another_application_logging_in_is_not_a_recovery() {
    // billing logs in every 20 s; reports fails with a stale password every
    // 20 s, in between, until the end.
    let mut frames = Vec::new();
    for i in 0..4u16 {
        frames.extend(login(41000 + i, f64::from(i) * 20.0, "billing", logged_in()));
        frames.extend(login(42000 + i, f64::from(i) * 20.0 + 10.0, "reports", stale_password()));
    }
    let (doc, text) = analyze("two-applications.pcap", frames);
    let client = &doc["clients"][0];
    assert_eq!(client["auth_failed"], 4, "{client}");
    assert_eq!(client["success"], 4, "{client}");
    assert_eq!(client["recovered"], 0, "billing's logins are not retries of reports: {client}");
    assert_eq!(client["logins_still_failing"], 1, "{client}");
    assert_eq!(doc["diagnosis"]["recovered_clients"], serde_json::json!([]));
    assert_eq!(doc["diagnosis"]["other_logins_clients"], serde_json::json!([HOST]));
    let windows = doc["windows"].as_array().expect("windows");
    assert!(!windows.is_empty());
    for w in windows {
        assert_eq!(w["success_after"], false, "reports never logged in again: {w}");
        assert_eq!(w["not_recovered"], 1, "{w}");
    }
    assert!(!text.contains("a retry that worked"), "{text}");
    assert!(text.contains("another login of the same host worked"), "{text}");
    assert!(!text.contains("(recovered)") && !text.contains("│ recovered"), "{text}");
}

#[test]
fn the_same_application_logging_in_after_failing_is_a_recovery() {
    // reports fails twice with a stale password, then its password is fixed.
    let mut frames = Vec::new();
    for i in 0..2u16 {
        frames.extend(login(42000 + i, f64::from(i) * 10.0, "reports", stale_password()));
    }
    frames.extend(login(42005, 30.0, "reports", logged_in()));
    let (doc, text) = analyze("one-application-recovers.pcap", frames);
    let client = &doc["clients"][0];
    assert_eq!(client["recovered"], 1, "{client}");
    assert_eq!(client["logins_still_failing"], 0, "{client}");
    assert_eq!(doc["diagnosis"]["recovered_clients"], serde_json::json!([HOST]));
    for w in doc["windows"].as_array().expect("windows") {
        assert_eq!(w["success_after"], true, "{w}");
        assert_eq!(w["not_recovered"], 0, "{w}");
    }
    assert!(text.contains("1 client failed and then logged in (a retry that worked)"), "{text}");
}
