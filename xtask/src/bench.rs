//! `cargo xtask bench analyze`: pgreach analyze against tcpdump and tshark
//! reading the same large files (a replayed incident, a SYN flood): time and
//! peak memory, as ratios measured in the same run.
//!
//! `cargo xtask bench live [SECONDS]`: pgbench -C (one connection per
//! transaction) against a PostgreSQL 15 on loopback while `pgreach live`
//! and, as the peer measured in the same run, `tcpdump -w /dev/null` capture
//! the same port, both with a 32 MiB buffer, immediate mode and 4096-byte
//! snaplen (pgreach's defaults). Reports kernel drops, CPU shares (and their ratio), peak
//! memory, and pgreach's successful logins against pgbench's connections.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lab::sh;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const DIR: &str = "/tmp/pgreach-bench";

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

/// A PostgreSQL on 127.0.0.1, stopped on drop.
struct Server {
    port: u16,
}

impl Server {
    fn start() -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        sh(&format!("rm -rf {DIR} && mkdir -p {DIR} && chown postgres {DIR}"))?;
        sh(&format!("su postgres -c '{PG_BIN}/initdb -D {DIR}/data -A trust -U postgres' >/dev/null"))?;
        sh(&format!(
            "printf \"listen_addresses='127.0.0.1'\\nport={port}\\nunix_socket_directories='{DIR}'\\nmax_connections=100\\nfsync=off\\n\" >> {DIR}/data/postgresql.conf"
        ))?;
        sh(&format!("su postgres -c '{PG_BIN}/pg_ctl -D {DIR}/data -l {DIR}/log -w start' >/dev/null"))?;
        Ok(Server { port })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = sh(&format!("su postgres -c '{PG_BIN}/pg_ctl -D {DIR}/data -m fast stop' >/dev/null"));
    }
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("stat format")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11).context("utime")?.parse::<f64>()? + fields.get(12).context("stime")?.parse::<f64>()?;
    let hz: f64 = sh("getconf CLK_TCK")?.trim().parse()?;
    Ok(ticks / hz)
}

/// Peak resident memory in KiB, from /proc.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("VmHWM")?;
    Ok(line.split_whitespace().nth(1).context("VmHWM value")?.parse()?)
}

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

fn live(root: &Path, seconds: u64) -> Result<()> {
    let status = Command::new("cargo").args(["build", "--release", "--bin", "pgreach"]).current_dir(root).status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let binary = root.join("target/release/pgreach");
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

    let transactions: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .context("pgbench's transaction count")?
        .trim()
        .parse()?;
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

/// Copies of the incident capture, each shifted in time past the last one
/// (and the engine's linger), so every copy's attempts are new attempts.
const REPLAY_COPIES: u32 = 400;
/// SYNs in the flood file, from distinct sources, none answered.
const FLOOD_SYNS: u32 = 2_000_000;

fn analyze(root: &Path) -> Result<()> {
    let status = Command::new("cargo").args(["build", "--release", "--bin", "pgreach"]).current_dir(root).status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    std::fs::create_dir_all(DIR)?;
    let replay = Path::new(DIR).join("replay.pcap");
    let flood = Path::new(DIR).join("synflood.pcap");
    let incident = std::fs::read(root.join("captures/incident.pcap"))?;
    let replay_attempts = write_replay(&incident, &replay)?;
    write_flood(&flood)?;
    let pgreach = root.join("target/release/pgreach");
    println!("| file | tool | seconds | peak memory | time / pgreach | memory / pgreach |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (file, what) in [(&replay, "incident × 400"), (&flood, "SYN flood, 2M sources")] {
        let size = std::fs::metadata(file)?.len() >> 20;
        let path = file.display().to_string();
        let ours = measure(&format!("{} analyze -o /dev/null {path}", pgreach.display()))?;
        let peers = [
            ("tcpdump -r -w /dev/null", format!("tcpdump -r {path} -w /dev/null 'tcp port 5432'")),
            ("tshark -z conv,tcp", format!("tshark -r {path} -q -z conv,tcp > /dev/null")),
        ];
        let label = format!("{what} ({size} MiB)");
        println!("| {label} | pgreach | {:.1} | {} MiB | 1 | 1 |", ours.0, ours.1 >> 10);
        for (name, cmd) in peers {
            let (secs, kib) = measure(&cmd)?;
            println!(
                "| {label} | {name} | {secs:.1} | {} MiB | {:.2} | {:.2} |",
                kib >> 10,
                secs / ours.0.max(1e-9),
                kib as f64 / ours.1.max(1) as f64
            );
        }
    }
    // The replay's count is the check that the whole file was analyzed.
    let out =
        sh(&format!("{} analyze --format json {} | grep -m1 '\"attempts\": '", pgreach.display(), replay.display()))?;
    println!("replay: {out} (expected {replay_attempts})");
    Ok(())
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

/// Writes REPLAY_COPIES copies of a pcap's records; returns the attempts
/// that makes (the incident's 450 per copy).
fn write_replay(pcap: &[u8], out: &Path) -> Result<u64> {
    if pcap.len() < 24 || pcap[..4] != [0xd4, 0xc3, 0xb2, 0xa1] && pcap[..4] != [0x4d, 0x3c, 0xb2, 0xa1] {
        bail!("captures/incident.pcap is not a little-endian pcap");
    }
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into()?) as usize;
        records.push(at..at + 16 + caplen);
        at += 16 + caplen;
    }
    let secs =
        |r: &std::ops::Range<usize>| u32::from_le_bytes(pcap[r.start..r.start + 4].try_into().unwrap_or_default());
    let span = records.last().map_or(0, secs) - records.first().map_or(0, secs);
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    use std::io::Write;
    file.write_all(&pcap[..24])?;
    for copy in 0..REPLAY_COPIES {
        let shift = copy * (span + 120);
        for r in &records {
            let mut rec = pcap[r.clone()].to_vec();
            let t = secs(r) + shift;
            rec[..4].copy_from_slice(&t.to_le_bytes());
            file.write_all(&rec)?;
        }
    }
    file.flush()?;
    Ok(450 * u64::from(REPLAY_COPIES))
}

/// FLOOD_SYNS Ethernet/IPv4 SYNs from distinct 198.18.0.0/15 addresses and
/// ports to 192.0.2.1:5432, 10 µs apart, never answered.
fn write_flood(out: &Path) -> Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut header = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&65535u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    file.write_all(&header)?;
    for i in 0..FLOOD_SYNS {
        let micros = u64::from(i) * 10;
        let src = 0xc612_0000u32 + (i >> 4) % 0x2_0000;
        let sport = 1024 + (i & 0xf) as u16 * 4000 + (i >> 21) as u16;
        let mut frame = vec![0u8; 54];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&40u16.to_be_bytes());
        frame[22] = 64;
        frame[23] = 6;
        frame[26..30].copy_from_slice(&src.to_be_bytes());
        frame[30..34].copy_from_slice(&[192, 0, 2, 1]);
        frame[34..36].copy_from_slice(&sport.to_be_bytes());
        frame[36..38].copy_from_slice(&5432u16.to_be_bytes());
        frame[38..42].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
        frame[46] = 0x50;
        frame[47] = 0x02;
        frame[48..50].copy_from_slice(&64240u16.to_be_bytes());
        let mut rec = Vec::with_capacity(70);
        rec.extend_from_slice(&(1_700_000_000 + (micros / 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&54u32.to_le_bytes());
        rec.extend_from_slice(&54u32.to_le_bytes());
        rec.extend_from_slice(&frame);
        file.write_all(&rec)?;
    }
    file.flush()?;
    Ok(())
}
