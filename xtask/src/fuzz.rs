//! `cargo xtask fuzz [SECONDS] [TARGET…]`: runs each cargo-fuzz target in
//! fuzz/ for SECONDS (600 by default) and fails on any crash. Seed corpora
//! are made at run time from captures/ and ../shared/corpus (never copied
//! into the repository): whole files for the file reader, their frames for
//! the decoder, their TCP payloads for the PostgreSQL targets, their DNS
//! messages for the DNS target and their packet sequences for the engine.
//! Needs the nightly toolchain and cargo-fuzz.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use pgreach::decode::{decode, Decoded, LinkType};

pub const TARGETS: [&str; 6] = ["decode", "pg_messages", "pg_session", "capture_file", "engine", "dns"];
/// Seeds per target: enough variety, few enough that each run starts quickly.
const MAX_SEEDS: usize = 4000;

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let seconds: u64 = match args.first() {
        Some(s) => s.parse().with_context(|| format!("{s:?}: not a number of seconds"))?,
        None => 600,
    };
    let chosen: Vec<&str> = if args.len() > 1 {
        let wanted: Vec<&str> = args[1..].iter().map(String::as_str).collect();
        if let Some(bad) = wanted.iter().find(|w| !TARGETS.contains(w)) {
            bail!("{bad:?}: no such target (targets: {})", TARGETS.join(", "));
        }
        wanted
    } else {
        TARGETS.to_vec()
    };
    let fuzz = root.join("fuzz");
    let captures = capture_files(root)?;
    let mut crashed = Vec::new();
    for target in chosen {
        let corpus = fuzz.join("corpus").join(target);
        fs::create_dir_all(&corpus)?;
        let seeds = seeds(target, &captures)?;
        for (i, seed) in seeds.iter().take(MAX_SEEDS).enumerate() {
            fs::write(corpus.join(format!("seed-{i:05}")), seed)?;
        }
        eprintln!("fuzz: {target} for {seconds} s ({} seeds)", seeds.len().min(MAX_SEEDS));
        let status = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=2048",
                "-timeout=20",
                "-print_final_stats=1",
            ])
            .current_dir(&fuzz)
            .status()
            .context("run cargo +nightly fuzz (is cargo-fuzz installed?)")?;
        if !status.success() {
            crashed.push(target);
        }
    }
    if !crashed.is_empty() {
        bail!("failed: {} (a crashing input is kept in fuzz/artifacts/TARGET/)", crashed.join(", "));
    }
    Ok(())
}

/// The capture files to seed from.
fn capture_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in [root.join("captures"), root.join("../shared/corpus/suricata-verify")] {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn seeds(target: &str, captures: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for path in captures {
        let bytes = fs::read(path)?;
        if target == "capture_file" {
            out.push(bytes);
            continue;
        }
        let Some((link, records)) = classic_pcap(&bytes) else { continue };
        match target {
            "decode" => {
                let pick = LINKS.iter().position(|l| *l == link).unwrap_or(0) as u8;
                out.extend(records.iter().map(|(_, frame)| [&[pick][..], frame].concat()));
            }
            "pg_messages" | "pg_session" => {
                for (_, frame) in &records {
                    if let Ok(Decoded::Tcp(seg)) = decode(link, frame) {
                        if !seg.payload.is_empty() {
                            let to_server = seg.dst.port() == 5432;
                            out.push(pg_seed(target, to_server, seg.payload));
                        }
                    }
                }
            }
            "dns" => out.extend(dns_seed(link, &records)),
            _ => out.push(engine_seed(link, &records)),
        }
    }
    Ok(out)
}

/// The decoder and engine targets pick link types from these, by index.
const LINKS: [LinkType; 6] =
    [LinkType::Null, LinkType::Ethernet, LinkType::RawIp, LinkType::Loop, LinkType::LinuxSll, LinkType::LinuxSll2];
const ENGINE_LINKS: [LinkType; 3] = [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll];

/// pg_messages: a control byte (framer mode, kept bytes) then the bytes;
/// pg_session: a control byte then pieces in the target's format (a
/// direction bit and a length of 4n+1 bytes, at most 253).
fn pg_seed(target: &str, to_server: bool, payload: &[u8]) -> Vec<u8> {
    if target == "pg_messages" {
        let mode = if to_server { 0 } else { 1 };
        return [&[mode | 0x40][..], payload].concat();
    }
    let mut seed = vec![if to_server { 0 } else { 1 }];
    let mut rest = payload;
    while !rest.is_empty() {
        let units = ((rest.len() - 1) / 4).min(63);
        let (piece, after) = rest.split_at(units * 4 + 1);
        seed.push(units as u8 | if to_server { 0 } else { 0x80 });
        seed.extend_from_slice(piece);
        rest = after;
    }
    seed
}

/// The dns target's record format: kind (bit 0 from the resolver, bit 1
/// TCP, bits 2-4 SYN, FIN, RST), length (one byte), payload; `None` for a
/// capture without DNS.
fn dns_seed(link: LinkType, records: &[Record]) -> Option<Vec<u8>> {
    let mut seed = Vec::new();
    for (_, frame) in records {
        let (kind, payload) = match decode(link, frame) {
            Ok(Decoded::Udp(d)) if d.src.port() == 53 || d.dst.port() == 53 => {
                (u8::from(d.src.port() == 53), d.payload)
            }
            Ok(Decoded::Tcp(t)) if t.src.port() == 53 || t.dst.port() == 53 => {
                let f = t.flags;
                let kind = 2 | u8::from(t.src.port() == 53) | u8::from(f.syn) << 2 | u8::from(f.fin) << 3;
                (kind | u8::from(f.rst) << 4, t.payload)
            }
            _ => continue,
        };
        let payload = &payload[..payload.len().min(255)];
        seed.extend_from_slice(&[kind, payload.len() as u8]);
        seed.extend_from_slice(payload);
    }
    (!seed.is_empty()).then_some(seed)
}

/// The engine target's record format: link, signed time step in ms, length, frame.
fn engine_seed(link: LinkType, records: &[Record]) -> Vec<u8> {
    let pick = ENGINE_LINKS.iter().position(|l| *l == link).unwrap_or(0) as u8;
    let mut seed = Vec::new();
    let mut last = records.first().map_or(0, |r| r.0);
    for (ts, frame) in records.iter().take(400) {
        let step = ((ts - last) / 1_000_000).clamp(0, 30_000) as i16;
        last = *ts;
        seed.push(pick);
        seed.extend_from_slice(&step.to_le_bytes());
        seed.extend_from_slice(&(frame.len().min(u16::MAX.into()) as u16).to_le_bytes());
        seed.extend_from_slice(frame);
    }
    seed
}

/// A packet's time in nanoseconds and its frame.
type Record = (i64, Vec<u8>);

/// A little-endian classic pcap's link type and records.
fn classic_pcap(bytes: &[u8]) -> Option<(LinkType, Vec<Record>)> {
    let word = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let scale = match word(0)? {
        0xa1b2_c3d4 => 1000,
        0xa1b2_3c4d => 1,
        _ => return None,
    };
    let link = LinkType::from_dlt(i32::try_from(word(20)?).ok()?)?;
    let mut records = Vec::new();
    let mut at = 24;
    while let (Some(secs), Some(frac), Some(len)) = (word(at), word(at + 4), word(at + 8)) {
        let frame = bytes.get(at + 16..at + 16 + len as usize)?;
        records.push((i64::from(secs) * 1_000_000_000 + i64::from(frac) * scale, frame.to_vec()));
        at += 16 + len as usize;
    }
    Some((link, records))
}
