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

/// The corpus README: "two connections" with the handshake in the capture.
#[test]
fn connection_counts_the_corpus_states() {
    let Some(dir) = corpus_dir() else { return };
    for (file, connections) in [
        ("pgsql-ssl-rejected-md5-auth-simple-query.pcap", 2),
        ("pgsql-cancel-request.pcap", 2),
        ("pgsql-pwd-output-disabled.pcap", 1),
    ] {
        let path = dir.join(file).to_string_lossy().into_owned();
        let (doc, _) = analyze_json(&[&path]);
        assert_eq!(doc["totals"]["established"], connections, "{file}");
        assert_eq!(doc["totals"]["attempts"], connections, "{file}");
    }
}
