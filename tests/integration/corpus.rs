//! The shared corpus: real captures by other people (Suricata's test suite).
//! Each analyzes without an error line; the connection counts its README
//! states are asserted.

use std::path::PathBuf;

use crate::util::{analyze_json, project_root, stderr};

fn corpus_dir() -> Option<PathBuf> {
    let dir = project_root().join("../shared/corpus/suricata-verify");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: ../shared/corpus is absent beside the project (CI always has it)");
        None
    }
}

#[test]
fn every_corpus_capture_analyzes_cleanly() {
    let Some(dir) = corpus_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "corpus has {} captures", files.len());
    for file in files {
        let path = file.to_string_lossy().into_owned();
        let (doc, out) = analyze_json(&[&path]);
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{path}: error lines: {}", stderr(&out));
        assert_eq!(doc["stats"]["undecodable"], 0, "{path}");
        assert!(doc["totals"]["attempts"].as_u64().unwrap_or(0) >= 1, "{path}: no attempt found");
    }
}

fn corpus_file(dir: &std::path::Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

fn attempts(doc: &serde_json::Value) -> &Vec<serde_json::Value> {
    doc["attempts"].as_array().expect("attempts")
}

fn outcomes(doc: &serde_json::Value) -> Vec<&str> {
    attempts(doc).iter().map(|a| a["outcome"].as_str().unwrap_or("?")).collect()
}

/// Facts from the corpus README, cross-checked with tshark's dissector.
#[test]
fn postgres_outcomes_of_the_corpus() {
    let Some(dir) = corpus_dir() else { return };
    let cases: &[(&str, &[&str])] = &[
        // psql's password prompt: asked for md5, closes, reconnects with the password.
        ("pgsql-ssl-rejected-md5-auth-simple-query.pcap", &["auth_abandoned", "success"]),
        ("pgsql-5000-query-results.pcap", &["auth_abandoned", "success"]),
        ("pgsql-pwd-output-disabled.pcap", &["success"]),
        ("pgsql-cancel-request.pcap", &["success", "cancel_request"]),
        ("pgsql-simple-query-rollback.pcap", &["success"]),
        ("pgsql-copy-data-in.pcap", &["success"]),
        ("pgsql-copy-data-out.pcap", &["success"]),
        ("pgsql-query-keyword-01.pcap", &["success"]),
        ("pgsql-bug-5579.pcap", &["success"]),
        // A walreceiver over TLS: the server answers its first application
        // record (the startup message) with one 174-byte record and a
        // close_notify (tshark shows the records); libpq then retries
        // without TLS and is refused ("no pg_hba.conf entry … SSL off").
        ("pgsql-upgrade-tls.pcap", &["tls_rejected", "hba_rejected"]),
        // A scanner's 8-byte request with an unknown code (0x00ff00ff).
        ("pgsql-events.pcap", &["not_postgres"]),
    ];
    for (file, want) in cases {
        let (doc, _) = analyze_json(&[&corpus_file(&dir, file)]);
        assert_eq!(outcomes(&doc), *want, "{file}");
        for a in attempts(&doc) {
            assert_eq!(a["tcp_outcome"], "established", "{file}");
        }
    }
}

#[test]
fn session_details_of_the_corpus() {
    let Some(dir) = corpus_dir() else { return };
    let (doc, _) = analyze_json(&[&corpus_file(&dir, "pgsql-simple-query-rollback.pcap")]);
    let pg = &attempts(&doc)[0]["pg"];
    assert_eq!(pg["session_errors"], serde_json::json!({"22012": 2, "25P02": 3}));
    assert_eq!((pg["user"].as_str(), pg["database"].as_str()), (Some("ju-Test"), Some("Test")));
    assert!(pg["auth"][0].as_str().unwrap().starts_with("sasl (SCRAM-SHA-256"), "{pg}");

    let (doc, _) = analyze_json(&[&corpus_file(&dir, "pgsql-upgrade-tls.pcap")]);
    let rejected = attempts(&doc).iter().find(|a| a["outcome"] == "hba_rejected").expect("hba_rejected");
    let pg = &rejected["pg"];
    assert_eq!((pg["user"].as_str(), pg["replication"].as_str()), (Some("rep"), Some("true")));
    assert_eq!(pg["error"]["code"], "28000");
    assert!(pg["error"]["message"].as_str().unwrap().contains("no pg_hba.conf entry for replication connection"));

    // The user parameter is not first in this startup message.
    let (doc, _) = analyze_json(&[&corpus_file(&dir, "pgsql-bug-5579.pcap")]);
    let pg = &attempts(&doc)[0]["pg"];
    assert_eq!((pg["user"].as_str(), pg["database"].as_str()), (Some("ctfpost"), Some("ctfbase")));

    let (doc, _) = analyze_json(&[&corpus_file(&dir, "pgsql-5524.pcap")]);
    assert_eq!(attempts(&doc)[0]["pg"]["session_errors"], serde_json::json!({"42P01": 2}));

    // 5000 DataRows framed one by one through 3.2 MB, none of them kept.
    let (doc, _) = analyze_json(&[&corpus_file(&dir, "pgsql-5000-query-results.pcap")]);
    let big = attempts(&doc).iter().find(|a| a["outcome"] == "success").expect("success");
    assert!(big["pg"]["server_messages"].as_u64().unwrap() > 5000);
    assert_eq!(big["pg"]["framing_lost"], serde_json::Value::Null);
}

/// The cleartext password in this capture (`TestTest!2`, as tshark shows it)
/// appears in no output format.
#[test]
fn the_password_never_appears() {
    let Some(dir) = corpus_dir() else { return };
    let file = corpus_file(&dir, "pgsql-pwd-output-disabled.pcap");
    for format in crate::formats::FORMATS {
        let args = ["analyze", "--connections", "--format", format, &file];
        let out = crate::util::pgreach(&args);
        assert!(out.status.success());
        let all = [out.stdout, out.stderr].concat();
        let text = String::from_utf8_lossy(&all);
        assert!(text.contains("ju-Test"), "the report is about this session: {text}");
        assert!(!text.contains("TestTest"), "{args:?} shows the password");
    }
}
