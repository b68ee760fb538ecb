//! Every capture in captures/ gives the outcomes its recorder staged,
//! attempt by attempt for each client, in the order the client made them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::{analyze_json, project_root, stderr};

/// The recorded scenarios; each must be present with its expected file.
const SCENARIOS: &[&str] = &[
    "normal",
    "ipv6",
    "server_stopped",
    "wrong_port",
    "nft_drop",
    "nft_reject",
    "nft_reject_tcp_reset",
    "nft_reject_admin",
    "nft_drop_ipv6",
    "cooked_any",
    "cooked_v1",
    "pcapng",
    "midstream",
    "incident",
    "pg_logins",
    "pg_auth_failures",
    "pg_hba_rejected",
    "pg_database_missing",
    "pg_too_many_clients",
    "pg_shutdown",
    "pg_terminate_backend",
    "pg_idle_session_timeout",
    "pg_ssl",
    "pg_password_prompt",
    "pg_query_errors",
    "pg_pgbench",
    "pg_lc_messages",
    "pg_sigstop",
    "pg_auth_timeout",
    "pgbouncer",
    "pgbouncer_max_client_conn",
    "pgbouncer_query_wait_timeout",
    "pgbouncer_server_down",
    "pgbouncer_server_down_any",
    "pgpool",
    "tls_login",
    "tls_wrong_password",
    "tls_database_missing",
    "tls_hba_reject",
    "tls_too_many_clients",
    "tls12_wrong_password",
    "tls_password_prompt",
    "tls_keylog_login",
    "tls_keylog_wrong_password",
    "tls_keylog_database_missing",
    "tls12_keylog_wrong_password",
    "tls12_keylog_chacha_login",
    "dns_names",
    "dns_nxdomain",
    "dns_no_answer",
    "dns_tcp",
    "listen_localhost",
    "second_cluster",
    "localhost_in_client",
];

fn client_ip(socket: &str) -> String {
    let addr: std::net::SocketAddr = socket.parse().expect("socket address in report");
    addr.ip().to_string()
}

fn check_scenario(name: &str) {
    let dir = project_root().join("captures");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).expect("expected file"),
    )
    .expect("expected JSON");
    let ext = if dir.join(format!("{name}.pcapng")).exists() { "pcapng" } else { "pcap" };
    let pcap = format!("captures/{name}.{ext}");
    let mut args: Vec<&str> = vec![&pcap];
    let extra: Vec<String> =
        expected["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("arg").to_owned()).collect();
    args.extend(extra.iter().map(String::as_str));
    let (doc, out) = analyze_json(&args);
    assert!(out.status.success(), "{name}: exit {:?}, stderr {}", out.status, stderr(&out));
    assert!(stderr(&out).is_empty(), "{name}: error lines: {}", stderr(&out));

    check_without_keys(name, &expected, &pcap);
    check_inferences(name, &expected, &doc);
    let (legs, attempts): (Vec<&Value>, Vec<&Value>) =
        doc["attempts"].as_array().expect("attempts").iter().partition(|a| a["pooler_leg"] == true);
    // A pooler's own connections: how many depends on its retry timing;
    // each must end as staged, and none may pass for a client.
    match expected.get("pooler_legs") {
        Some(want) => {
            assert!(!legs.is_empty(), "{name}: no pooler connections to PostgreSQL found");
            for leg in &legs {
                assert_eq!(leg["server"], want["server"], "{name}: pooler leg {}", leg["id"]);
                assert_eq!(leg["outcome"], want["outcome"], "{name}: pooler leg {}", leg["id"]);
            }
        }
        None => assert!(legs.is_empty(), "{name}: attempts taken for a pooler's: {legs:?}"),
    }
    compare_attempts(name, attempts, &expected, &extra);
}

/// The attempts a report lists (a pooler's own left out) against those the
/// recorder staged: per client, in order, each with its outcome and evidence.
pub fn compare_attempts(name: &str, attempts: Vec<&Value>, expected: &Value, extra: &[String]) {
    let mut actual: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for a in attempts {
        actual.entry(client_ip(a["client"].as_str().expect("client"))).or_default().push(a);
    }
    let mut wanted: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in expected["attempts"].as_array().expect("expected attempts") {
        wanted.entry(e["client"].as_str().expect("client").to_owned()).or_default().push(e);
    }
    assert_eq!(actual.keys().collect::<Vec<_>>(), wanted.keys().collect::<Vec<_>>(), "{name}: clients differ");
    for (client, want) in &wanted {
        let got = &actual[client];
        let outcomes =
            |v: &[&Value]| v.iter().map(|a| a["outcome"].as_str().unwrap_or("?").to_owned()).collect::<Vec<_>>();
        assert_eq!(outcomes(got), outcomes(want), "{name}: outcomes of client {client}");
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            let at = format!("{name}: client {client} attempt {i}");
            assert_eq!(g["server"], w["server"], "{at}: server");
            assert_eq!(g["tcp_outcome"], w["tcp_outcome"], "{at}: TCP outcome");
            if let Some(kind) = w.get("answer_kind") {
                assert_eq!(&g["answer"]["kind"], kind, "{at}: answer kind");
                assert_eq!(&g["answer"]["from"], &w["answer_from"], "{at}: answer from");
            } else {
                assert!(g.get("answer").is_none(), "{at}: unexpected answer {}", g["answer"]);
            }
            if let Some(code) = w.get("icmp_code") {
                assert_eq!(&g["answer"]["icmp_code"], code, "{at}: ICMP code");
            }
            if let Some(gave_up) = w.get("gave_up") {
                assert_eq!(&g["gave_up"], gave_up, "{at}: gave_up");
            }
            if let Some(code) = w.get("sqlstate") {
                assert_eq!(&g["pg"]["error"]["code"], code, "{at}: SQLSTATE");
            }
            if let Some(user) = w.get("user") {
                assert_eq!(&g["pg"]["user"], user, "{at}: user");
            }
            if let Some(auth) = w.get("auth").and_then(Value::as_str) {
                let first = g["pg"]["auth"][0].as_str().unwrap_or("");
                assert!(first.starts_with(auth), "{at}: first authentication request {first:?}, staged {auth}");
            }
            if let Some(pooler) = w.get("pooler") {
                assert_eq!(&g["pg"]["pooler"]["name"], pooler, "{at}: pooler");
            }
            if let Some(encryption) = w.get("encryption") {
                assert_eq!(&g["pg"]["encryption"], encryption, "{at}: encryption");
            }
            if let Some(errors) = w.get("session_errors") {
                assert_eq!(&g["pg"]["session_errors"], errors, "{at}: session errors");
            }
            if let Some(version) = w.get("tls_version") {
                assert_eq!(&g["pg"]["tls"]["version"], version, "{at}: TLS version");
            }
            if let Some(subject) = w.get("certificate_subject") {
                assert_eq!(&g["pg"]["tls"]["certificate"]["subject"], subject, "{at}: certificate subject");
                assert_eq!(g["pg"]["tls"]["certificate"]["expired"], false, "{at}: the lab's certificate is new");
            }
            if extra.iter().any(|a| a == "--keylog") && w.get("encryption").is_some_and(|e| e == "ssl") {
                assert_eq!(g["pg"]["tls"]["decryption"], "decrypted", "{at}: decrypted with the key log");
            }
            if let Some(lookup) = w.get("dns") {
                for field in ["name", "rcode", "addresses"] {
                    assert_eq!(&g["dns"][field], &lookup[field], "{at}: the lookup's {field}");
                }
            }
            // Several capture points: where the packets were lost, and what NAT did.
            if let Some(location) = w.get("location") {
                let got = g.get("location").unwrap_or(&Value::Null);
                let field = |v: &Value, key: &str| v.get(key).cloned().unwrap_or(Value::Null);
                for key in ["kind", "from", "to"] {
                    assert_eq!(field(got, key), field(location, key), "{at}: location's {key} (got {got})");
                }
            }
            if let Some(nat) = w.get("nat") {
                assert_eq!(&g["nat"]["kind"], &nat["kind"], "{at}: NAT");
            }
            if let Some(min) = w.get("min_syns").and_then(Value::as_u64) {
                let syns = g["syn"]["count"].as_u64().unwrap_or(0);
                assert!(syns >= min, "{at}: {syns} SYNs, expected at least {min}");
            }
        }
    }
}

/// The diagnosis holds each line the staging implies, under its outcome
/// and with its confidence.
fn check_inferences(name: &str, expected: &Value, doc: &Value) {
    let Some(wanted) = expected.get("inferences").and_then(Value::as_array) else { return };
    let findings = doc["diagnosis"]["findings"].as_array().expect("findings");
    for want in wanted {
        let said: Vec<&Value> = findings
            .iter()
            .filter(|f| f["outcome"] == want["outcome"])
            .flat_map(|f| f["evidence"].as_array().into_iter().flatten())
            .collect();
        let contains = want["contains"].as_str().expect("contains");
        assert!(
            said.iter()
                .any(|e| e["confidence"] == want["confidence"]
                    && e["text"].as_str().is_some_and(|t| t.contains(contains))),
            "{name}: no {} line with {contains:?} under {}: {said:?}",
            want["confidence"],
            want["outcome"]
        );
    }
}

/// Captures analyzed with a key log give, without it, what the TLS records
/// alone say, as the recorder staged it.
fn check_without_keys(name: &str, expected: &Value, pcap: &str) {
    let wanted: Vec<(&str, &str)> = expected["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter_map(|e| Some((e["client"].as_str()?, e.get("outcome_without_keys")?.as_str()?)))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let (doc, out) = analyze_json(&[pcap]);
    assert!(out.status.success(), "{name} without keys: {}", stderr(&out));
    let got: Vec<(String, &str)> = doc["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| (client_ip(a["client"].as_str().unwrap_or("")), a["outcome"].as_str().unwrap_or("?")))
        .collect();
    let got: Vec<(&str, &str)> = got.iter().map(|(c, o)| (c.as_str(), *o)).collect();
    assert_eq!(got, wanted, "{name}: outcomes without the key log");
}

macro_rules! scenario_tests {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            check_scenario(stringify!($name));
        }
    )*};
}

scenario_tests!(
    normal,
    ipv6,
    server_stopped,
    wrong_port,
    nft_drop,
    nft_reject,
    nft_reject_tcp_reset,
    nft_reject_admin,
    nft_drop_ipv6,
    cooked_any,
    cooked_v1,
    pcapng,
    midstream,
    incident,
    pg_logins,
    pg_auth_failures,
    pg_hba_rejected,
    pg_database_missing,
    pg_too_many_clients,
    pg_shutdown,
    pg_terminate_backend,
    pg_idle_session_timeout,
    pg_ssl,
    pg_password_prompt,
    pg_query_errors,
    pg_lc_messages,
    pg_sigstop,
    pg_auth_timeout,
    pgbouncer,
    pgbouncer_max_client_conn,
    pgbouncer_query_wait_timeout,
    pgbouncer_server_down,
    pgbouncer_server_down_any,
    pgpool,
    tls_login,
    tls_wrong_password,
    tls_database_missing,
    tls_hba_reject,
    tls_too_many_clients,
    tls12_wrong_password,
    tls_password_prompt,
    tls_keylog_login,
    tls_keylog_wrong_password,
    tls_keylog_database_missing,
    tls12_keylog_wrong_password,
    tls12_keylog_chacha_login,
    dns_names,
    dns_nxdomain,
    dns_no_answer,
    dns_tcp,
    listen_localhost,
    second_cluster,
    localhost_in_client
);

/// No capture in captures/ goes unchecked: each has an expected file and a test above.
#[test]
fn every_capture_has_expectations_and_a_test() {
    let dir = project_root().join("captures");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("captures dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".pcap").or_else(|| n.strip_suffix(".pcapng")).map(str::to_owned))
        .collect();
    found.sort();
    let mut listed: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
    for name in &found {
        assert!(dir.join(format!("{name}.expected.json")).exists(), "{name}.expected.json missing");
    }
}

/// The cooked capture on a bridged host holds every packet twice; the copies
/// must not show up as retransmissions.
#[test]
fn duplicate_copies_are_not_retransmissions() {
    let (doc, _) = analyze_json(&["captures/cooked_any.pcap"]);
    assert!(doc["stats"]["duplicates"].as_u64().unwrap_or(0) > 0, "the capture should hold duplicates");
    for a in doc["attempts"].as_array().expect("attempts") {
        assert_eq!(a["syn"]["count"], 1, "attempt {}", a["id"]);
    }
}
