//! `pgreach live` as an attacker on the same machine would try it: symlinks
//! planted at the -w and -o paths are replaced, never followed; installed
//! with file capabilities it keeps none while it parses packets; its
//! metrics say no more than --redact lets the report say, and half-sent
//! requests cannot hold the metrics server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::live::{can_run, free_port, http_get, run_ok, LiveRun};
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
    for _ in 0..3 {
        assert!(TcpStream::connect(("127.0.0.1", closed)).is_err());
    }
    // Under load, a moment for the capture thread to hand the packets over.
    std::thread::sleep(Duration::from_millis(500));
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
    assert!(doc["totals"]["refused"].as_u64().unwrap_or(0) >= 1, "{doc}");
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

/// The capability sets of a running process, from /proc/PID/status.
fn capability_sets(pid: u32) -> Vec<(String, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .filter(|l| ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"].iter().any(|k| l.starts_with(k)))
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// Installed with setcap as the README says and run as an ordinary user,
/// pgreach keeps no capability once the capture is open, and still captures.
#[test]
fn file_capabilities_are_dropped_once_the_capture_is_open() {
    if !can_run("capability drop") {
        return;
    }
    if Command::new("setcap").arg("-v").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI has setcap (libcap2-bin, in setup.sh)");
        eprintln!("SKIPPED capability drop: setcap is not installed (apt-get install libcap2-bin)");
        return;
    }
    let dir = temp_file("setcap", b"");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.join("pgreach");
    std::fs::copy(env!("CARGO_BIN_EXE_pgreach"), &exe).unwrap();
    let exe = exe.to_str().unwrap();
    run_ok(Command::new("setcap").args(["cap_net_raw,cap_net_admin=eip", exe]));
    let closed = free_port();
    // setpriv execs (no fork), so the child is pgreach itself, as nobody.
    let prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"];
    let live = LiveRun::start_exe(exe, &prefix, &["-i", "lo", "-p", &closed.to_string(), "--format", "json"]);
    let sets = capability_sets(live.pid());
    assert_eq!(sets.len(), 4, "{sets:?}");
    for (set, value) in &sets {
        assert_eq!(value, "0000000000000000", "{set} after the drop: {sets:?}");
    }
    for _ in 0..3 {
        assert!(TcpStream::connect(("127.0.0.1", closed)).is_err());
    }
    std::thread::sleep(Duration::from_millis(500));
    let report: serde_json::Value = serde_json::from_str(&live.interrupt()).expect("the report");
    let refused = report["totals"]["refused"].as_u64().unwrap_or(0);
    assert!(refused >= 1, "the capture still works without capabilities: {report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Scrapes until `want` shows up (attempts end at their RST), or 10 s.
fn scrape_until(port: u16, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = http_get(port, "/metrics");
        if body.contains(want) || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn redact_hides_addresses_in_the_metrics_labels_too() {
    if !can_run("--redact on metrics") {
        return;
    }
    let (closed, metrics) = (free_port(), free_port());
    let live = LiveRun::start(
        &[],
        &[
            "-i",
            "lo",
            "-p",
            &closed.to_string(),
            "--redact",
            "--format",
            "json",
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
        ],
    );
    assert!(TcpStream::connect(("127.0.0.1", closed)).is_err());
    let body = scrape_until(metrics, "outcome=\"refused\"");
    assert!(body.contains("pgreach_attempts_total{server=\"198.18."), "{body}");
    assert!(body.contains("pgreach_client_attempts_total{client=\"198.18."), "{body}");
    assert!(!body.contains("127.0.0.1"), "a real address in the metrics:\n{body}");
    let report = live.interrupt();
    assert!(!report.contains("127.0.0.1"), "{report}");
}

#[test]
fn half_sent_requests_cannot_hold_the_metrics_server() {
    if !can_run("metrics server bounds") {
        return;
    }
    let metrics = free_port();
    let live = LiveRun::start(
        &[],
        &["-i", "lo", "-p", &free_port().to_string(), "--metrics", &format!("127.0.0.1:{metrics}")],
    );
    let held: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", metrics)).expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let open = |held: &[TcpStream]| {
        held.iter()
            .filter(|s| {
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                // Closed by the server: end of file or a reset; open: the read times out.
                matches!((&mut &**s).read(&mut [0; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
            })
            .count()
    };
    let still_open = open(&held);
    assert!(still_open <= 64, "{still_open} half-sent requests held at once");
    assert!(still_open > 0, "the first ones are served until their time runs out");
    // Five seconds to send a request; then every slot is free again.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(open(&held), 0, "half-sent requests outlived the time-out");
    drop(held);
    let body = http_get(metrics, "/metrics");
    assert!(body.contains("pgreach_capture_packets_total"), "a real scrape works again:\n{body}");
    live.interrupt();
}
