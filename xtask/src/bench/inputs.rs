//! The files `cargo xtask bench analyze` reads: a replayed incident, a SYN
//! flood from millions of sources, and a real pgbench capture between two
//! namespaces with login errors staged among the logins. Each is made once
//! and reused.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::veth::{NamespacePair, CLIENT_V4, IFACE, MAX_FRAME, SERVER_NS, SERVER_V4};
use super::{pgbench_transactions, Server, PG_BIN};
use crate::lab::sh;

/// Copies of the incident capture, each shifted in time past the last one
/// (and the engine's linger), so every copy's attempts are new attempts.
pub const REPLAY_COPIES: u32 = 400;
/// SYNs in the flood file, each from its own source address and port.
pub const FLOOD_SYNS: u32 = 10_000_000;
/// One SYN in this many is retransmitted once, a second later.
const FLOOD_RETRANSMIT_EVERY: u32 = 1000;
/// The flood's retransmissions. One that comes after its SYN was evicted
/// from a full table (a million flows, a million SYNs a second) starts an
/// attempt of its own.
pub const FLOOD_RETRANSMISSIONS: u32 = FLOOD_SYNS.div_ceil(FLOOD_RETRANSMIT_EVERY);
/// Staged failed logins in the pgbench capture: database missing, and
/// rejected by a pg_hba.conf line.
pub const PGBENCH_MISSING_DB: u32 = 50;
pub const PGBENCH_HBA_REJECTED: u32 = 50;
/// pgbench clients that stay connected, each reading 50-row results.
const PGBENCH_PERSISTENT: u32 = 2;
/// How long pgbench runs while the capture records: about 3 M packets,
/// 2.5 GB and 11,000 connections on this 2-core machine, of the order of
/// issue 17's capture. A file much larger (100 s made 3.9 GB) is not kept
/// whole in this machine's page cache between runs, and the bench would
/// time the disk.
const PGBENCH_SECONDS: u32 = 36;
/// The server's port in its namespace.
const PGBENCH_PORT: u16 = 5432;

/// Writes REPLAY_COPIES copies of a pcap's records; returns the attempts
/// that makes (the incident's 450 per copy).
pub fn write_replay(pcap: &[u8], out: &Path) -> Result<u64> {
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

/// FLOOD_SYNS Ethernet/IPv4 SYNs (54-byte frames) to 192.0.2.1:5432, 1 µs
/// apart, each from its own address and port in 198.18.0.0/15 (the
/// benchmarking range), never answered; one in FLOOD_RETRANSMIT_EVERY is sent
/// again a second later, as a client's first retransmission.
pub fn write_flood(out: &Path) -> Result<()> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut header = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&65535u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    file.write_all(&header)?;
    let mut retransmit = std::collections::VecDeque::new();
    for i in 0..FLOOD_SYNS {
        let micros = u64::from(i);
        while retransmit.front().is_some_and(|&(at, _)| at <= micros) {
            let (at, j) = retransmit.pop_front().unwrap_or_default();
            file.write_all(&flood_record(at, j))?;
        }
        file.write_all(&flood_record(micros, i))?;
        if i % FLOOD_RETRANSMIT_EVERY == 0 {
            retransmit.push_back((micros + 1_000_000, i));
        }
    }
    for (at, j) in retransmit {
        file.write_all(&flood_record(at, j))?;
    }
    file.flush()?;
    Ok(())
}

/// The pcap record of the flood's SYN number `i`, at `micros`.
fn flood_record(micros: u64, i: u32) -> Vec<u8> {
    let src = 0xc612_0000u32 + i % 0x2_0000;
    let sport = 1024 + (i / 0x2_0000) as u16;
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
    rec
}

/// What the pgbench capture holds, as staged: connections pgbench made (one
/// per transaction, plus its own first one, and its persistent clients)
/// and the failed logins, the port the server listened on, and the file's
/// packets and largest frame.
pub struct PgbenchCapture {
    pub logins: u64,
    pub database_missing: u32,
    pub hba_rejected: u32,
    pub port: u16,
    pub packets: u64,
    pub largest_frame: u32,
}

/// Records a real capture between two namespaces joined by a veth pair
/// (MTU 1500, offloads off): `pgbench -C` (one connection per transaction)
/// and PGBENCH_PERSISTENT persistent clients reading 50-row results, against
/// a PostgreSQL 15 for PGBENCH_SECONDS, while clients with a missing
/// database and a pg_hba.conf-rejected user fail beside them; tcpdump on the
/// server's end writes whole packets. Reused when already made (what it
/// holds is kept beside it).
pub fn record_pgbench(out: &Path) -> Result<PgbenchCapture> {
    let counts = out.with_extension("counts");
    let staged = |logins, port, packets, largest_frame| PgbenchCapture {
        logins,
        database_missing: PGBENCH_MISSING_DB,
        hba_rejected: PGBENCH_HBA_REJECTED,
        port,
        packets,
        largest_frame,
    };
    if let Ok(text) = std::fs::read_to_string(&counts) {
        let fields: Vec<u64> = text.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        if let (&[logins, port, packets, largest], true) = (fields.as_slice(), out.exists()) {
            return Ok(staged(logins, u16::try_from(port)?, packets, u32::try_from(largest)?));
        }
    }
    let net = NamespacePair::up()?;
    let port = PGBENCH_PORT;
    let server = Server::start_in(
        SERVER_NS,
        SERVER_V4,
        port,
        &format!("host all rejectme {CLIENT_V4}/32 reject\nhost all all {CLIENT_V4}/32 trust\n"),
    )?;
    let pgbench = |extra: &str| format!("{PG_BIN}/pgbench -h {SERVER_V4} -p {port} -U postgres {extra} postgres");
    sh(&net.in_client(&format!("{} >/dev/null 2>&1", pgbench("-i -s 1"))))?;
    let script = out.with_extension("sql");
    std::fs::write(
        &script,
        "\\set aid random(1, 99950)\nSELECT * FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 49;\n",
    )?;
    let tcpdump_log = out.with_extension("tcpdump.log");
    let mut tcpdump = std::process::Command::new("ip")
        .args(["netns", "exec", SERVER_NS, "tcpdump", "-i", IFACE, "-n", "-s", "0", "-B", "65536", "-w"])
        .arg(out)
        .args(["tcp", "port", &port.to_string()])
        .stderr(std::fs::File::create(&tcpdump_log)?)
        .spawn()
        .context("tcpdump (apt-get install tcpdump)")?;
    std::thread::sleep(Duration::from_secs(1));
    let staged_run = stage_traffic(&net, &pgbench, &script);
    // tcpdump is stopped even when the run failed, before its namespace goes.
    std::thread::sleep(Duration::from_secs(2));
    sh(&format!("kill -INT {}", tcpdump.id()))?;
    tcpdump.wait()?;
    drop(server);
    drop(net);
    let (out_text, persistent_text) = staged_run?;
    let transactions = pgbench_transactions(&out_text)?;
    // Reads a count only: the persistent run must have worked.
    pgbench_transactions(&persistent_text)?;
    if !out.exists() {
        bail!("tcpdump wrote no capture");
    }
    // A capture that lost packets is no ground truth for the counts.
    let said = std::fs::read_to_string(&tcpdump_log)?;
    if !said.lines().any(|l| l == "0 packets dropped by kernel") {
        bail!("tcpdump dropped packets (or said nothing): {said}");
    }
    let (packets, largest) = largest_frame(out)?;
    if largest > MAX_FRAME {
        bail!("{}: a {largest}-byte frame, more than the veth's MTU allows: were its offloads on?", out.display());
    }
    // Each pgbench run opens one connection of its own before the
    // transactions; the persistent run's clients log in once each.
    let logins = transactions + 1 + u64::from(PGBENCH_PERSISTENT) + 1;
    std::fs::write(&counts, format!("{logins} {port} {packets} {largest}"))?;
    Ok(staged(logins, port, packets, largest))
}

/// Runs, from the clients' namespace, pgbench -C, its persistent clients
/// (`script`) and the failing logins, all at once; returns the two pgbench
/// reports. `pgbench` makes a pgbench command line from its flags.
fn stage_traffic(net: &NamespacePair, pgbench: &dyn Fn(&str) -> String, script: &Path) -> Result<(String, String)> {
    let psql = |user: &str, db: &str| {
        format!("{PG_BIN}/psql -h {SERVER_V4} -p {PGBENCH_PORT} -U {user} -d {db} -c \"select 1\" >/dev/null 2>&1; sleep 0.2")
    };
    let failing = net.in_client(&format!(
        "for i in $(seq {PGBENCH_MISSING_DB}); do {}; done & for i in $(seq {PGBENCH_HBA_REJECTED}); do {}; done & wait",
        psql("postgres", "nosuchdb"),
        psql("rejectme", "postgres")
    ));
    let failing = std::thread::spawn(move || sh(&failing));
    let persistent = net
        .in_client(&pgbench(&format!("-n -c {PGBENCH_PERSISTENT} -j 1 -T {PGBENCH_SECONDS} -f {}", script.display())));
    let persistent = std::thread::spawn(move || sh(&persistent));
    let out_text = sh(&net.in_client(&pgbench(&format!("-C -n -S -c 2 -j 1 -T {PGBENCH_SECONDS}"))))?;
    let persistent_text = persistent.join().map_err(|_| anyhow::anyhow!("the persistent clients' thread"))??;
    failing.join().map_err(|_| anyhow::anyhow!("the failing clients' thread"))??;
    Ok((out_text, persistent_text))
}

/// A pcap file's packet count and its largest frame's length on the wire.
fn largest_frame(pcap: &Path) -> Result<(u64, u32)> {
    let mut file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(pcap)?);
    let mut header = [0u8; 24];
    file.read_exact(&mut header)?;
    if header[..4] != [0xd4, 0xc3, 0xb2, 0xa1] && header[..4] != [0x4d, 0x3c, 0xb2, 0xa1] {
        bail!("{} is not a little-endian pcap", pcap.display());
    }
    let (mut packets, mut largest) = (0u64, 0u32);
    let mut record = [0u8; 16];
    while file.read_exact(&mut record).is_ok() {
        let caplen = u32::from_le_bytes(record[8..12].try_into()?);
        largest = largest.max(u32::from_le_bytes(record[12..16].try_into()?));
        packets += 1;
        file.seek_relative(i64::from(caplen))?;
    }
    Ok((packets, largest))
}
