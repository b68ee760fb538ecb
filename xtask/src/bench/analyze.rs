//! `cargo xtask bench analyze`: pgreach analyze against the floor — a bare
//! libpcap read loop in C that only hands over every packet — and against
//! tcpdump and tshark, on the same files in the same run: time and peak
//! memory as ratios to the read loop, and the exact counts pgreach must get.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::inputs::{record_pgbench, write_flood, write_replay, FLOOD_RETRANSMISSIONS, FLOOD_SYNS, REPLAY_COPIES};
use super::{build, measure, measure_median, DIR};
use crate::lab::sh;

/// The floor: libpcap's pcap_next_ex over the file, nothing else.
const READ_LOOP_C: &str = r#"
#include <pcap/pcap.h>
#include <stdio.h>
int main(int argc, char **argv) {
    char err[PCAP_ERRBUF_SIZE];
    pcap_t *p = pcap_open_offline_with_tstamp_precision(argv[1], PCAP_TSTAMP_PRECISION_NANO, err);
    if (!p) { fprintf(stderr, "%s\n", err); return 1; }
    struct pcap_pkthdr *h; const u_char *d; unsigned long n = 0, bytes = 0;
    while (pcap_next_ex(p, &h, &d) == 1) { n++; bytes += h->caplen; }
    printf("%lu packets, %lu bytes\n", n, bytes);
    return 0;
}
"#;

/// One file of the bench, the tools run on it, and the counts to check.
struct Case {
    label: String,
    path: String,
    /// (outcome, attempts) pgreach's JSON must report.
    expect: Vec<(&'static str, u64)>,
    /// Attempts beyond `expect` the file may also make (the flood's
    /// retransmissions after their SYN was evicted).
    extra_allowed: u64,
    /// tshark keeps every packet's dissection: on the 10 M flood it would
    /// need tens of GiB.
    tshark: bool,
    /// Login errors are there to find (tshark's PostgreSQL filter).
    pg_errors: bool,
    /// The server's port, when not PostgreSQL's default.
    port: Option<u16>,
}

pub fn analyze(root: &Path) -> Result<()> {
    let pgreach = build(root)?;
    std::fs::create_dir_all(DIR)?;
    let read_loop = Path::new(DIR).join("readloop");
    std::fs::write(Path::new(DIR).join("readloop.c"), READ_LOOP_C)?;
    sh(&format!("cc -O2 -o {0} {0}.c -lpcap", read_loop.display())).context("cc and libpcap-dev")?;
    let replay = Path::new(DIR).join("replay.pcap");
    let flood = Path::new(DIR).join("synflood.pcap");
    let pgbench = Path::new(DIR).join("pgbench-veth.pcap");
    let replay_attempts = write_replay(&std::fs::read(root.join("captures/incident.pcap"))?, &replay)?;
    if !flood.exists() {
        write_flood(&flood)?;
    }
    let staged = record_pgbench(&pgbench)?;
    let cases = [
        Case {
            label: format!(
                "pgbench -C between two namespaces ({} packets, largest frame {} bytes; {} logins, staged errors)",
                staged.packets, staged.largest_frame, staged.logins
            ),
            path: pgbench.display().to_string(),
            expect: vec![
                ("success", staged.logins),
                ("database_missing", u64::from(staged.database_missing)),
                ("hba_rejected", u64::from(staged.hba_rejected)),
            ],
            extra_allowed: 0,
            tshark: true,
            pg_errors: true,
            port: Some(staged.port),
        },
        Case {
            label: format!("incident × {REPLAY_COPIES}"),
            path: replay.display().to_string(),
            expect: vec![("attempts", replay_attempts)],
            extra_allowed: 0,
            tshark: true,
            pg_errors: false,
            port: None,
        },
        Case {
            label: format!("SYN flood, {} M sources", FLOOD_SYNS / 1_000_000),
            path: flood.display().to_string(),
            expect: vec![("attempts", u64::from(FLOOD_SYNS))],
            extra_allowed: u64::from(FLOOD_RETRANSMISSIONS),
            tshark: false,
            pg_errors: false,
            port: None,
        },
    ];
    // Seconds are the median of five runs for commands under 5 s.
    println!("| file | tool | seconds | peak memory | time / read loop | memory / read loop |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for case in &cases {
        let size = std::fs::metadata(&case.path)?.len() >> 20;
        let label = format!("{} ({size} MiB)", case.label);
        let path = &case.path;
        let port = case.port.map_or(String::new(), |p| format!("-p {p} "));
        // Once unmeasured, so that every tool reads the file from the page
        // cache: the first would otherwise pay the disk for all.
        measure(&format!("{} {path}", read_loop.display()))?;
        let floor = measure_median(&format!("{} {path}", read_loop.display()))?;
        let mut tools = vec![
            (
                "pgreach --format json".to_owned(),
                format!("{} analyze {port}--format json -o /dev/null {path}", pgreach.display()),
            ),
            (
                "pgreach -f 'port 1' (libpcap and BPF only)".to_owned(),
                format!("{} analyze {port}-f 'port 1' -o /dev/null {path}", pgreach.display()),
            ),
            (
                "tcpdump, SYN and RST only".to_owned(),
                format!("tcpdump -nr {path} -w /dev/null 'tcp[tcpflags] & (tcp-syn|tcp-rst) != 0' 2>/dev/null"),
            ),
        ];
        if case.tshark {
            tools.push(("tshark -z conv,tcp".to_owned(), format!("tshark -r {path} -q -z conv,tcp > /dev/null")));
        }
        // tshark reads PostgreSQL on its default port only, unless told.
        let decode_as = case.port.map_or(String::new(), |p| format!("-d tcp.port=={p},pgsql "));
        if case.pg_errors {
            tools.push((
                "tshark, PostgreSQL errors".to_owned(),
                format!("tshark -r {path} {decode_as}-Y 'pgsql.type == \"Error\"' -T fields -e pgsql.code > /dev/null"),
            ));
        }
        println!("| {label} | libpcap read loop (C) | {:.2} | {} MiB | 1 | 1 |", floor.0, floor.1 >> 10);
        for (name, cmd) in tools {
            let (secs, kib) = measure_median(&cmd)?;
            println!(
                "| {label} | {name} | {secs:.2} | {} MiB | {:.1} | {:.1} |",
                kib >> 10,
                secs / floor.0.max(1e-3),
                kib as f64 / floor.1.max(1) as f64
            );
        }
        check_counts(&pgreach, case)?;
    }
    Ok(())
}

/// pgreach's JSON totals against what the file holds by construction or staging.
fn check_counts(pgreach: &Path, case: &Case) -> Result<()> {
    let port = case.port.unwrap_or(5432).to_string();
    let json = std::process::Command::new(pgreach)
        .args(["analyze", "-p", &port, "--format", "json", "--max-listed", "0", &case.path])
        .output()?;
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).context("pgreach's JSON")?;
    for (outcome, want) in &case.expect {
        let got = doc["totals"][outcome].as_u64().unwrap_or(0);
        let most = want + case.extra_allowed;
        println!("  {}: {outcome} {got} (staged {want}, at most {most})", case.label);
        if got < *want || got > most {
            bail!("{}: pgreach counted {got} {outcome}, the file holds {want} to {most}", case.label);
        }
    }
    Ok(())
}
