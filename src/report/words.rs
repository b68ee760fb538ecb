//! The words every renderer uses alike: durations, clock times, counts,
//! the extent of a finding, the headline and the closing summary line. One
//! home, so that the terminal, Markdown and HTML reports say things the same way.

use std::fmt::Write as _;
use std::time::Duration;

use super::Report;
use crate::analysis::diagnosis::{Diagnosis, Finding};
use crate::time::short;

pub fn ms(v: f64) -> String {
    short(Duration::from_secs_f64(v.max(0.0) / 1e3))
}

/// `1 attempt`, `2 attempts`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// How widespread a finding is: `3 clients, 12 attempts, 09:00:01.000–09:00:05.000`
/// (one time when the first and last are the same).
pub fn finding_extent(report: &Report<'_>, f: &Finding) -> String {
    let mut extent = format!("{}, {}", count(f.clients as u64, "client"), count(f.attempts, "attempt"));
    match (f.first, f.last) {
        (Some(a), Some(b)) if a != b => extent.push_str(&format!(", {}–{}", report.clock(a), report.clock(b))),
        (Some(a), _) => extent.push_str(&format!(", {}", report.clock(a))),
        _ => {}
    }
    extent
}

/// One paragraph: how many attempts failed, how, and who recovered.
pub fn headline(report: &Report<'_>, d: &Diagnosis) -> String {
    let s = report.summary;
    let failed: Vec<String> = d
        .findings
        .iter()
        .filter(|f| f.failure)
        .map(|f| format!("{} {} ({})", f.attempts, f.outcome, count(f.clients as u64, "client")))
        .collect();
    let mut out = format!(
        "{} from {}: {} failed",
        count(s.totals.attempts, "attempt"),
        count(s.client_count() as u64, "client"),
        s.totals.failures()
    );
    if !failed.is_empty() {
        let _ = write!(out, " — {}", failed.join(", "));
    }
    out.push_str(".\n");
    if !d.blind_spots.is_empty() {
        let cut: Vec<String> = d.blind_spots.iter().map(|b| format!("{} {} ({})", b.count, b.what, b.flag)).collect();
        let _ = writeln!(out, "Not everything was followed — failures there would not show: {}.", cut.join("; "));
    }
    if !d.recovered_clients.is_empty() {
        let _ = writeln!(
            out,
            "{} failed and then logged in (a retry that worked).",
            count(d.recovered_clients.len() as u64, "client")
        );
    }
    if !d.other_logins_clients.is_empty() {
        let _ = writeln!(
            out,
            "{} one login kept failing to the end while another login of the same host worked (another \
             application, not a recovery).",
            match d.other_logins_clients.len() {
                1 => "On 1 client".to_owned(),
                n => format!("On {n} clients"),
            }
        );
    }
    out.push('\n');
    out
}

/// The closing lines: what was read, what was found, and notes about the input.
pub fn summary_line(report: &Report<'_>) -> String {
    let st = report.stats;
    let s = report.summary;
    let span = match (s.first_seen, s.last_seen) {
        (Some(a), Some(b)) => format!(" from {} to {}", report.zone.instant(a), report.zone.instant(b)),
        _ => String::new(),
    };
    let mut line = format!(
        "{} read, {} on port {}; {} from {}{span}",
        count(st.packets, "packet"),
        st.packets_on_port,
        report.ports_label(),
        count(s.totals.attempts, "attempt"),
        count(s.client_count() as u64, "client")
    );
    let legs: u64 = s.pooler_legs.values().sum();
    if legs > 0 {
        let _ = write!(line, "; {} of a pooler's own to PostgreSQL, counted apart", count(legs, "attempt"));
    }
    for (n, what) in [
        (st.undecodable, "undecodable"),
        (st.payload_cut, "with payload cut by the snap length"),
        (st.duplicates, "duplicate copies ignored"),
        (st.stray_answers, "stray answers (RST/SYN-ACK with no SYN)"),
        (st.stray_segments, "stray segments (one side only, no data: not a connection)"),
        (st.unmatched_icmp, "ICMP errors matching no SYN"),
        (st.evicted, "attempts ended early (flow table full)"),
        (st.evicted_midstream, "midstream connections ended early (flow table full)"),
        (st.untracked, "packets untracked (flow table full)"),
        (st.held_over_budget, "out-of-order segments over the held-data budget"),
        (st.clock_jumps, "packets dated far from the others (the clock did not follow them)"),
        (st.pg_limits_cut, "attempts with PostgreSQL messages cut to pgreach's limits"),
    ] {
        if n > 0 {
            let _ = write!(line, "; {n} {what}");
        }
    }
    line.push('\n');
    if let Some(c) = report.capture {
        let _ = writeln!(
            line,
            "libpcap: {} captured, {} dropped by the kernel, {} by the interface",
            count(c.received, "packet"),
            c.kernel_dropped,
            c.interface_dropped
        );
    }
    for p in report.points {
        let clock = if p.clock_estimated {
            format!("clock {:+.3} s", p.clock_offset_s)
        } else {
            "clock not compared".to_owned()
        };
        let _ = writeln!(
            line,
            "capture point {}: {}; {}; {clock}",
            p.name,
            p.files.join(", "),
            count(p.attempts_seen, "attempt")
        );
    }
    for note in &report.input_notes {
        let _ = writeln!(line, "note: {note}");
    }
    line
}
