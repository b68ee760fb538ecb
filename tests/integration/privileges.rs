//! `pgreach live` as an attacker on the same machine would try it: symlinks
//! planted at the -w and -o paths are replaced, never followed.

use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;

use crate::live::{can_run, free_port, LiveRun};
use crate::util::{pgreach, stderr, temp_file};

#[test]
fn symlinks_at_w_and_o_are_replaced_and_their_targets_untouched() {
    if !can_run("symlinks at -w and -o") {
        return;
    }
    let dir = temp_file("live-symlinks", b"");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let (capture_victim, report_victim) = (dir.join("shadow"), dir.join("authorized_keys"));
    for victim in [&capture_victim, &report_victim] {
        std::fs::write(victim, b"precious\n").unwrap();
    }
    let (pcap, report) = (dir.join("live.pcap"), dir.join("report.json"));
    std::os::unix::fs::symlink(&capture_victim, &pcap).unwrap();
    std::os::unix::fs::symlink(&report_victim, &report).unwrap();
    let closed = free_port();
    let live = LiveRun::start(
        &[],
        &[
            "-i",
            "lo",
            "-p",
            &closed.to_string(),
            "--format",
            "json",
            "-w",
            pcap.to_str().unwrap(),
            "-o",
            report.to_str().unwrap(),
        ],
    );
    assert!(TcpStream::connect(("127.0.0.1", closed)).is_err());
    live.interrupt();
    for victim in [&capture_victim, &report_victim] {
        let meta = std::fs::metadata(victim).unwrap();
        assert_eq!(std::fs::read(victim).unwrap(), b"precious\n", "{victim:?} was written through a link");
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644), "{victim:?} was chowned or chmodded");
    }
    for written in [&pcap, &report] {
        let meta = std::fs::symlink_metadata(written).unwrap();
        assert!(meta.file_type().is_file(), "{written:?} is still a link");
        assert_eq!(meta.mode() & 0o777, 0o600, "{written:?}");
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).expect("the report");
    assert_eq!(doc["totals"]["refused"], 1);
    let again = pgreach(&["analyze", "-p", &closed.to_string(), "--format", "json", pcap.to_str().unwrap()]);
    assert!(again.status.success(), "{}", stderr(&again));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn w_and_o_naming_one_file_are_refused() {
    let dir = std::env::temp_dir();
    let same = dir.join(format!("pgreach-same-{}.out", std::process::id()));
    let out = pgreach(&["live", "-i", "lo", "-w", same.to_str().unwrap(), "-o", same.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("name the same file"), "{}", stderr(&out));
    assert!(!same.exists());
}
