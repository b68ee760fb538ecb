//! `cargo xtask bench live [SECONDS]`: pgbench -C (one connection per
//! transaction) against a PostgreSQL 15 on loopback while `pgreach live`
//! and, as the peer measured in the same run, `tcpdump -w /dev/null` capture
//! the same port with the same libpcap settings: a 32 MiB buffer, 4096-byte
//! snaplen (pgreach's defaults) and libpcap's block mode (no immediate
//! mode: the kernel hands packets over a block at a time; tcpdump's block
//! time-out, 1 s, is longer than pgreach's, which can only cost pgreach).
//! A `tcpdump --immediate-mode` beside them is shown for reference only.
//! Reports kernel drops, CPU shares and CPU per packet (and their ratio),
//! peak memory, and pgreach's successful logins against pgbench's
//! connections.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{build, cpu_seconds, peak_rss_kib, pgbench_transactions, Server, DIR, PG_BIN};
use crate::lab::sh;

/// Waits for `marker` on the child's standard error; the rest of it is
/// collected by a thread (so the child never blocks on a full pipe).
fn wait_for_stderr(child: &mut Child, marker: &str) -> Result<JoinHandle<Vec<String>>> {
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let Some(line) = lines.next() else { break };
        if line?.contains(marker) {
            return Ok(std::thread::spawn(move || lines.map_while(Result::ok).collect()));
        }
    }
    bail!("no {marker:?} from the capture")
}

/// A tcpdump writing the port's packets to /dev/null, and its standard error.
fn tcpdump(port: &str, immediate: bool) -> Result<(Child, JoinHandle<Vec<String>>)> {
    let mut args = vec!["-i", "lo", "-n", "-B", "32768", "-s", "4096", "-w", "/dev/null"];
    if immediate {
        args.push("--immediate-mode");
    }
    let mut child = Command::new("tcpdump")
        .args(args)
        .args(["tcp", "port", port])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("tcpdump (apt-get install tcpdump)")?;
    let stderr = wait_for_stderr(&mut child, "listening on")?;
    Ok((child, stderr))
}

/// What tcpdump said at its end: its drop line, and the packets it captured.
fn tcpdump_end(stderr: JoinHandle<Vec<String>>) -> (String, u64) {
    let lines = stderr.join().unwrap_or_default();
    let drops =
        lines.iter().find(|l| l.contains("dropped by kernel")).cloned().unwrap_or_else(|| "no drop count".into());
    let captured =
        lines.iter().find_map(|l| l.strip_suffix(" packets captured")).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    (drops, captured)
}

pub fn live(root: &Path, seconds: u64) -> Result<()> {
    let binary = build(root)?;
    let server = Server::start()?;
    let port = server.port.to_string();
    let pgbench = |extra: &str| format!("{PG_BIN}/pgbench -h 127.0.0.1 -p {port} -U postgres {extra} postgres");
    sh(&format!("{} >/dev/null 2>&1", pgbench("-i -s 1")))?;

    let report: PathBuf = Path::new(DIR).join("pgreach.json");
    let mut pgreach = Command::new(&binary)
        .args(["live", "-i", "lo", "-p", &port, "--format", "json", "-o"])
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let _pgreach_stderr = wait_for_stderr(&mut pgreach, "capturing on")?;
    let (mut peer, peer_stderr) = tcpdump(&port, false)?;
    let (mut eager, eager_stderr) = tcpdump(&port, true)?;

    let pids = [pgreach.id(), peer.id(), eager.id()];
    let cpu_now = || -> Result<[f64; 3]> { Ok([cpu_seconds(pids[0])?, cpu_seconds(pids[1])?, cpu_seconds(pids[2])?]) };
    let before = cpu_now()?;
    let wall = Instant::now();
    let out = sh(&pgbench(&format!("-C -n -S -c 4 -j 2 -T {seconds}")))?;
    let elapsed = wall.elapsed().as_secs_f64();
    let after = cpu_now()?;
    let cpu: [f64; 3] = std::array::from_fn(|i| after[i] - before[i]);
    let [pgreach_rss, peer_rss, eager_rss] = [peak_rss_kib(pids[0])?, peak_rss_kib(pids[1])?, peak_rss_kib(pids[2])?];
    // Let the last connections close before the capture stops.
    std::thread::sleep(Duration::from_secs(2));
    sh(&format!("kill -INT {} {} {}", pids[0], pids[1], pids[2]))?;
    pgreach.wait()?;
    peer.wait()?;
    eager.wait()?;
    let (peer_drops, peer_packets) = tcpdump_end(peer_stderr);
    let (eager_drops, eager_packets) = tcpdump_end(eager_stderr);

    let transactions = pgbench_transactions(&out)?;
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    let successes = doc["totals"]["success"].as_u64().unwrap_or(0);
    let attempts = doc["totals"]["attempts"].as_u64().unwrap_or(0);
    let packets = doc["stats"]["packets"].as_u64().unwrap_or(0);
    let drops = &doc["capture"];
    let share = |c: f64| c / elapsed * 100.0;
    // The packets counted are those of the whole capture; all but a few
    // came while pgbench ran.
    let per_packet = |c: f64, n: u64| c * 1e6 / n.max(1) as f64;
    println!("pgbench -C -S -c 4 -j 2 -T {seconds} on loopback, {} cores:", sh("nproc")?.trim());
    println!("  pgbench transactions (one connection each): {transactions}");
    println!(
        "  pgreach: {attempts} attempts, {successes} success (pgbench also opens one connection of its own at start)"
    );
    println!(
        "  pgreach: {packets} packets; kernel drops {}, interface drops {}",
        drops["kernel_dropped"], drops["interface_dropped"]
    );
    println!("  tcpdump: {peer_packets} packets; {peer_drops}");
    println!("  tcpdump --immediate-mode: {eager_packets} packets; {eager_drops}");
    println!(
        "  CPU share of one core: pgreach {:.2}%, tcpdump -w /dev/null {:.2}% (ratio {:.2}); tcpdump --immediate-mode {:.2}%",
        share(cpu[0]),
        share(cpu[1]),
        cpu[0] / cpu[1].max(1e-9),
        share(cpu[2]),
    );
    println!(
        "  CPU per packet: pgreach {:.2} µs, tcpdump {:.2} µs (ratio {:.2}); tcpdump --immediate-mode {:.2} µs",
        per_packet(cpu[0], packets),
        per_packet(cpu[1], peer_packets),
        per_packet(cpu[0], packets) / per_packet(cpu[1], peer_packets).max(1e-9),
        per_packet(cpu[2], eager_packets),
    );
    println!(
        "  peak memory: pgreach {} MiB, tcpdump {} MiB (ratio {:.2}); tcpdump --immediate-mode {} MiB",
        pgreach_rss / 1024,
        peer_rss / 1024,
        pgreach_rss as f64 / peer_rss.max(1) as f64,
        eager_rss / 1024,
    );
    if successes != transactions + 1 {
        bail!("pgreach counted {successes} logins for {transactions} transactions plus pgbench's own connection");
    }
    if drops["kernel_dropped"].as_u64() != Some(0) {
        bail!("the capture dropped packets");
    }
    drop(server);
    Ok(())
}
