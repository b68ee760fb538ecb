//! `cargo xtask bench live [SECONDS]`: pgbench -C (one connection per
//! transaction) against a PostgreSQL 15 on loopback while `pgreach live`
//! and, as the peer measured in the same run, `tcpdump -w /dev/null` capture
//! the same port, both with a 32 MiB buffer, immediate mode and 4096-byte
//! snaplen (pgreach's defaults). Reports kernel drops, CPU shares (and their
//! ratio), peak memory, and pgreach's successful logins against pgbench's
//! connections.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{build, cpu_seconds, peak_rss_kib, pgbench_transactions, Server, DIR, PG_BIN};
use crate::lab::sh;

/// Waits for `marker` on the child's standard error; the rest of it is
/// collected by a thread (so the child never blocks on a full pipe).
fn wait_for_stderr(child: &mut Child, marker: &str) -> Result<std::thread::JoinHandle<Vec<String>>> {
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
    let mut tcpdump = Command::new("tcpdump")
        .args([
            "-i",
            "lo",
            "-n",
            "--immediate-mode",
            "-B",
            "32768",
            "-s",
            "4096",
            "-w",
            "/dev/null",
            "tcp",
            "port",
            &port,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("tcpdump (apt-get install tcpdump)")?;
    let tcpdump_stderr = wait_for_stderr(&mut tcpdump, "listening on")?;

    let (p0, t0, wall) = (cpu_seconds(pgreach.id())?, cpu_seconds(tcpdump.id())?, Instant::now());
    let out = sh(&pgbench(&format!("-C -n -S -c 4 -j 2 -T {seconds}")))?;
    let elapsed = wall.elapsed().as_secs_f64();
    let (p1, t1) = (cpu_seconds(pgreach.id())?, cpu_seconds(tcpdump.id())?);
    let (pgreach_rss, tcpdump_rss) = (peak_rss_kib(pgreach.id())?, peak_rss_kib(tcpdump.id())?);
    // Let the last connections close before the capture stops.
    std::thread::sleep(Duration::from_secs(2));
    sh(&format!("kill -INT {} {}", pgreach.id(), tcpdump.id()))?;
    pgreach.wait()?;
    tcpdump.wait()?;
    let tcpdump_drops = tcpdump_stderr
        .join()
        .unwrap_or_default()
        .into_iter()
        .find(|l| l.contains("dropped by kernel"))
        .unwrap_or_else(|| "no drop count".into());

    let transactions = pgbench_transactions(&out)?;
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    let successes = doc["totals"]["success"].as_u64().unwrap_or(0);
    let attempts = doc["totals"]["attempts"].as_u64().unwrap_or(0);
    let drops = &doc["capture"];
    let (pgreach_cpu, tcpdump_cpu) = ((p1 - p0) / elapsed, (t1 - t0) / elapsed);
    println!("pgbench -C -S -c 4 -j 2 -T {seconds} on loopback, {} cores:", sh("nproc")?.trim());
    println!("  pgbench transactions (one connection each): {transactions}");
    println!(
        "  pgreach: {attempts} attempts, {successes} success (pgbench also opens one connection of its own at start)"
    );
    println!(
        "  pgreach kernel drops {}, interface drops {}, packets {}",
        drops["kernel_dropped"], drops["interface_dropped"], drops["received"]
    );
    println!("  tcpdump: {tcpdump_drops}");
    println!(
        "  CPU share of one core: pgreach {:.1}%, tcpdump -w /dev/null {:.1}% (ratio {:.2})",
        pgreach_cpu * 100.0,
        tcpdump_cpu * 100.0,
        pgreach_cpu / tcpdump_cpu.max(1e-9)
    );
    println!(
        "  peak memory: pgreach {} MiB, tcpdump {} MiB (ratio {:.2})",
        pgreach_rss / 1024,
        tcpdump_rss / 1024,
        pgreach_rss as f64 / tcpdump_rss.max(1) as f64
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
