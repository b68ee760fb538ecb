//! `cargo xtask bench`: speed and memory as ratios against peers measured
//! in the same run, on the same input ([`analyze`] for files, [`live`] under
//! load); [`inputs`] makes the files.

mod analyze;
mod inputs;
mod live;
mod veth;

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::lab::sh;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const DIR: &str = "/tmp/pgreach-bench";
/// The benchmark server's own directory: remade for each server, while the
/// inputs beside it in DIR are kept for the next run.
const SERVER_DIR: &str = "/tmp/pgreach-bench/server";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        None => {
            analyze(root)?;
            live(root, 60)
        }
        Some("live") => {
            let seconds = args.get(1).map(|s| s.parse::<u64>()).transpose().context("SECONDS")?.unwrap_or(60);
            live(root, seconds)
        }
        Some("analyze") => analyze(root),
        Some(other) => bail!("unknown benchmark {other:?}; there are: live, analyze"),
    }
}

use analyze::analyze;
use live::live;

/// Builds the release binary; returns its path.
fn build(root: &Path) -> Result<std::path::PathBuf> {
    let status = Command::new("cargo").args(["build", "--release", "--bin", "pgreach"]).current_dir(root).status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(root.join("target/release/pgreach"))
}

/// Runs a shell command under GNU time: (seconds, peak resident KiB).
fn measure(cmd: &str) -> Result<(f64, u64)> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M", "bash", "-c", cmd])
        .stdout(Stdio::null())
        .output()
        .context("/usr/bin/time (apt-get install time)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().context("time's output")?;
    let mut it = last.split_whitespace();
    let secs = it.next().context("seconds")?.parse()?;
    let kib = it.next().context("KiB")?.parse()?;
    Ok((secs, kib))
}

/// Runs a shell command five times, or once when it takes over 5 s: the
/// median time and the largest peak memory. On this shared machine one
/// run of a second-long command varies by a fifth or more from the next.
fn measure_median(cmd: &str) -> Result<(f64, u64)> {
    const RUNS: usize = 5;
    let first = measure(cmd)?;
    if first.0 > 5.0 {
        return Ok(first);
    }
    let mut runs = vec![first];
    for _ in 1..RUNS {
        runs.push(measure(cmd)?);
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok((runs[RUNS / 2].0, runs.iter().map(|r| r.1).max().unwrap_or(0)))
}

/// A PostgreSQL 15, stopped on drop.
pub(crate) struct Server {
    pub port: u16,
}

impl Server {
    /// On 127.0.0.1, at a free port.
    pub fn start() -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Server::start_at("", "127.0.0.1", port, "")
    }

    /// In network namespace `ns`, listening on its address `v4`, with
    /// `hba` (pg_hba.conf lines) before initdb's own.
    pub fn start_in(ns: &str, v4: &str, port: u16, hba: &str) -> Result<Server> {
        Server::start_at(&format!("ip netns exec {ns} "), v4, port, hba)
    }

    /// `netns` prefixes the command that starts the server.
    fn start_at(netns: &str, v4: &str, port: u16, hba: &str) -> Result<Server> {
        sh(&format!("rm -rf {SERVER_DIR} && mkdir -p {SERVER_DIR} && chown postgres {SERVER_DIR}"))?;
        sh(&format!("su postgres -c '{PG_BIN}/initdb -D {SERVER_DIR}/data -A trust -U postgres' >/dev/null"))?;
        sh(&format!(
            "printf \"listen_addresses='{v4}'\\nport={port}\\nunix_socket_directories='{SERVER_DIR}'\\nmax_connections=100\\nfsync=off\\n\" >> {SERVER_DIR}/data/postgresql.conf"
        ))?;
        let hba_file = format!("{SERVER_DIR}/data/pg_hba.conf");
        let initdb_lines = std::fs::read_to_string(&hba_file)?;
        std::fs::write(&hba_file, format!("{hba}{initdb_lines}"))?;
        sh(&format!(
            "{netns}su postgres -c '{PG_BIN}/pg_ctl -D {SERVER_DIR}/data -l {SERVER_DIR}/log -w start' >/dev/null"
        ))?;
        Ok(Server { port })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = sh(&format!("su postgres -c '{PG_BIN}/pg_ctl -D {SERVER_DIR}/data -m fast stop' >/dev/null"));
    }
}

/// CPU seconds a process's threads have run, from /proc: the sum of each
/// thread's time on a CPU in nanoseconds (`schedstat`), where the
/// process's `stat` counts in clock ticks of 10 ms, too coarse for a
/// capture that runs a few tens of milliseconds in a minute. Threads must
/// live through the measurement: one that ends takes its time with it.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(schedstat) = std::fs::read_to_string(task?.path().join("schedstat")) else { continue };
        nanos += schedstat.split_whitespace().next().context("schedstat format")?.parse::<u64>()?;
    }
    Ok(nanos as f64 / 1e9)
}

/// Peak resident memory in KiB, from /proc.
pub(crate) fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("VmHWM")?;
    Ok(line.split_whitespace().nth(1).context("VmHWM value")?.parse()?)
}

/// The transactions pgbench says it processed (one connection each with -C).
fn pgbench_transactions(output: &str) -> Result<u64> {
    Ok(output
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .context("pgbench's transaction count")?
        .trim()
        .parse()?)
}
