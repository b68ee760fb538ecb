//! The terminal report: the per-client table, what each outcome means, and
//! (with --connections) one row per attempt with its evidence.

use std::fmt::Write as _;
use std::time::Duration;

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};

use super::diagnosis::{diagnose, Confidence, Diagnosis};
use super::summary::{NameSet, Summary};
use super::Report;
use crate::pg::{Encryption, PgSummary};
use crate::record::{AnswerKind, AttemptRecord, Column, GaveUp, Outcome, SessionEnd, UnreachableKind};
use crate::time::{short, Timestamp};

pub fn render(report: &Report<'_>, connections: bool) -> String {
    let mut out = String::new();
    let s = report.summary;
    if s.totals.attempts == 0 {
        out.push_str("No connection attempts to the server port(s) in this capture");
        out.push_str(if report.filtered { " match the filters.\n\n" } else { ".\n\n" });
    } else {
        let diagnosis = diagnose(s, report.syn_timeout);
        out.push_str(&headline(report, &diagnosis));
        out.push_str(&diagnosis_text(&diagnosis));
        out.push_str(&windows_table(s));
        out.push_str(&timeline_table(s));
        out.push_str(&clients_table(report));
        out.push('\n');
        if s.other_clients.attempts > 0 {
            let _ = writeln!(
                out,
                "(+ {} attempts from further clients, beyond the table's limit, counted in the totals)",
                s.other_clients.attempts
            );
        }
        out.push('\n');
        if connections {
            out.push_str(&attempts_table(report));
            out.push_str("\n\n");
        }
    }
    out.push_str(&summary_line(report));
    out
}

/// One paragraph: how many attempts failed, how, and who recovered.
fn headline(report: &Report<'_>, d: &Diagnosis) -> String {
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
    if !d.recovered_clients.is_empty() {
        let _ = writeln!(
            out,
            "{} failed and then logged in (a retry that worked).",
            count(d.recovered_clients.len() as u64, "client")
        );
    }
    out.push('\n');
    out
}

fn diagnosis_text(d: &Diagnosis) -> String {
    let mut out = String::from("Diagnosis, failures first, most clients affected first:\n\n");
    for (i, f) in d.findings.iter().enumerate() {
        let when = match (f.first, f.last) {
            (Some(a), Some(b)) if a != b => format!(", {}–{}", clock(a), clock(b)),
            (Some(a), _) => format!(", {}", clock(a)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{}. {}: {}, {}{when}\n   clients saw: {}\n   {}",
            i + 1,
            f.outcome,
            count(f.clients as u64, "client"),
            count(f.attempts, "attempt"),
            f.client_sees,
            f.meaning
        );
        for e in &f.evidence {
            let sure = match e.confidence {
                Confidence::Certain => "seen",
                Confidence::Likely => "likely",
                Confidence::Possible => "possibly",
            };
            let _ = writeln!(out, "   - [{sure}] {}", e.text);
        }
        let _ = writeln!(out, "   next: {}\n", f.next_steps);
    }
    out
}

fn windows_table(s: &Summary) -> String {
    let windows = s.timeline.windows();
    if windows.is_empty() {
        return String::new();
    }
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(vec!["incident window", "duration", "failed", "clients", "outcomes", "before", "after"]);
    for w in &windows {
        let outcomes: Vec<String> = w.outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        table.add_row(vec![
            Cell::new(format!("{}–{}", clock(w.start), clock(w.end))),
            Cell::new(ms(w.duration_ms)).set_alignment(CellAlignment::Right),
            Cell::new(w.failed_attempts).set_alignment(CellAlignment::Right),
            Cell::new(format!("{}{}", if w.clients_at_least { "≥" } else { "" }, w.clients_affected))
                .set_alignment(CellAlignment::Right),
            Cell::new(outcomes.join(", ")),
            Cell::new(if w.success_before { "logins worked" } else { "-" }),
            Cell::new(if w.success_after { "recovered" } else { "not recovered" }),
        ]);
    }
    format!("{table}\n\n")
}

fn timeline_table(s: &Summary) -> String {
    let buckets = s.timeline.buckets();
    if buckets.len() < 2 {
        return String::new();
    }
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    let width = short(s.timeline.shown_width());
    table.set_header(vec![
        format!("time ({width} buckets)"),
        "attempts".into(),
        "logged in".into(),
        "refused".into(),
        "unreachable".into(),
        "timeout".into(),
        "login failed".into(),
        "other".into(),
    ]);
    let columns =
        [Column::LoggedIn, Column::Refused, Column::Unreachable, Column::Timeout, Column::LoginFailed, Column::Other];
    for b in &buckets {
        let mut row = vec![Cell::new(clock(b.start)), Cell::new(b.counts.attempts).set_alignment(CellAlignment::Right)];
        for column in columns {
            let n = b.counts.column(column);
            row.push(Cell::new(if n == 0 { String::new() } else { n.to_string() }).set_alignment(CellAlignment::Right));
        }
        table.add_row(row);
    }
    format!("{table}\n\n")
}

fn clients_table(report: &Report<'_>) -> String {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(vec![
        "client",
        "attempts",
        "logged in",
        "refused",
        "unreachable",
        "timeout",
        "login failed",
        "other",
        "users",
        "databases",
        "applications",
        "seen (UTC)",
        "median handshake",
    ]);
    let columns =
        [Column::LoggedIn, Column::Refused, Column::Unreachable, Column::Timeout, Column::LoginFailed, Column::Other];
    for c in report.summary.clients() {
        let n = &c.counts;
        let mut row = vec![Cell::new(c.client), Cell::new(n.attempts).set_alignment(CellAlignment::Right)];
        for column in columns {
            row.push(Cell::new(n.column(column)).set_alignment(CellAlignment::Right));
        }
        for names in [&c.users, &c.databases, &c.applications] {
            row.push(Cell::new(name_list(names)));
        }
        row.push(Cell::new(format!("{}–{}", clock(c.first_seen), clock(c.last_seen))));
        row.push(Cell::new(c.median_handshake_ms.map_or("-".to_owned(), ms)).set_alignment(CellAlignment::Right));
        table.add_row(row);
    }
    table.to_string()
}

/// `a, b +3`, or `-` when there are none.
fn name_list(set: &NameSet) -> String {
    if set.names.is_empty() {
        return "-".to_owned();
    }
    let mut s = set.names.iter().cloned().collect::<Vec<_>>().join(", ");
    if set.more > 0 {
        let _ = write!(s, " +{}", set.more);
    }
    s
}

fn attempts_table(report: &Report<'_>) -> String {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(vec!["#", "start", "client", "server", "outcome", "evidence"]);
    for a in report.summary.attempts() {
        table.add_row(vec![
            Cell::new(a.id),
            Cell::new(clock(a.start)),
            Cell::new(a.client),
            Cell::new(a.server),
            Cell::new(a.outcome),
            Cell::new(evidence(a)),
        ]);
    }
    let mut out = table.to_string();
    if report.summary.attempts_not_listed > 0 {
        let _ = write!(out, "\n({} more attempts not listed)", report.summary.attempts_not_listed);
    }
    out
}

/// One line of evidence for an attempt: what was seen on the wire that decided its outcome.
pub fn evidence(a: &AttemptRecord) -> String {
    let mut parts = Vec::new();
    if let Some(answer) = &a.answer {
        let what = match (answer.kind, answer.unreachable) {
            (AnswerKind::Rst, _) => "RST".to_owned(),
            (AnswerKind::Icmp, kind) => format!(
                "ICMP{} {} ({}/{})",
                if a.client.is_ipv6() { "v6" } else { "" },
                match kind {
                    Some(UnreachableKind::Port) => "port unreachable",
                    Some(UnreachableKind::Net) => "net unreachable",
                    Some(UnreachableKind::Host) => "host unreachable",
                    Some(UnreachableKind::AdminProhibited) => "admin prohibited",
                    _ => "unreachable",
                },
                answer.icmp_type.unwrap_or_default(),
                answer.icmp_code.unwrap_or_default()
            ),
        };
        parts.push(format!("{what} from {} (ttl {}) after {}", answer.from, answer.ttl, ms(answer.after_ms)));
    }
    if let Some(syn) = &a.syn {
        if syn.count > 1 || a.outcome == Outcome::Timeout {
            let times: Vec<String> = syn.at_ms.iter().map(|&t| short(Duration::from_secs_f64(t / 1e3))).collect();
            let more = if syn.count as usize > syn.at_ms.len() { ", …" } else { "" };
            parts.push(format!("{} SYNs at {}{more}", syn.count, times.join(", ")));
        }
    }
    if let Some(why) = a.gave_up {
        let wait = a.wait_ms.map_or(String::new(), ms);
        parts.push(match why {
            GaveUp::StoppedRetransmitting => format!("no SYN after {wait}: the client gave up"),
            GaveUp::ClientReset => format!("client reset after {wait}"),
            GaveUp::NewAttempt => format!("client retried with a new SYN after {wait}"),
            GaveUp::StillWaitingAtCaptureEnd => format!("capture ended after {wait}, client still waiting"),
        });
    }
    if let Some(h) = a.handshake_ms {
        parts.push(format!("handshake {}", ms(h)));
    }
    if let Some(end) = a.session_end {
        parts.push(
            match end {
                SessionEnd::FinClient => "closed by client (FIN)",
                SessionEnd::FinServer => "closed by server (FIN)",
                SessionEnd::RstClient => "reset by client (RST)",
                SessionEnd::RstServer => "reset by server (RST)",
                SessionEnd::Open => "open at capture end",
            }
            .to_owned(),
        );
    }
    if let Some(pg) = &a.pg {
        parts.extend(pg_evidence(pg));
    }
    let t = &a.traffic;
    parts.push(format!(
        "{}↑ {}↓ packets, {}↑ {}↓ bytes",
        t.client_packets, t.server_packets, t.client_bytes, t.server_bytes
    ));
    for note in &a.notes {
        parts.push(serde_json::to_value(note).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default());
    }
    parts.join("; ")
}

/// What the PostgreSQL conversation showed, briefly: who logged in where,
/// how, and what the server said.
fn pg_evidence(pg: &PgSummary) -> Vec<String> {
    let mut parts = Vec::new();
    match pg.encryption {
        Some(Encryption::SslRefused) => parts.push("SSL refused (N)".to_owned()),
        Some(Encryption::Ssl) => parts.push("SSL accepted (S): encrypted".to_owned()),
        Some(Encryption::SslError) => parts.push("SSLRequest answered with an error".to_owned()),
        Some(Encryption::DirectTls) => parts.push("direct TLS".to_owned()),
        Some(Encryption::GssRefused) => parts.push("GSS encryption refused".to_owned()),
        Some(Encryption::Gss) => parts.push("GSS encrypted".to_owned()),
        None => {}
    }
    if let Some(user) = &pg.startup.user {
        let db = pg.startup.database.as_deref().unwrap_or(user);
        let mut who = format!("{user}@{db}");
        if let Some(app) = pg.startup.application_name.as_deref().filter(|a| !a.is_empty()) {
            let _ = write!(who, " ({app})");
        }
        if let Some(r) = &pg.startup.replication {
            let _ = write!(who, " replication={r}");
        }
        parts.push(who);
    }
    if !pg.auth.is_empty() {
        parts.push(format!("auth {}", pg.auth.join(" → ")));
    }
    if let Some(v) = &pg.server_version {
        parts.push(format!("server {v}"));
    }
    if let Some(login) = pg.login_ms {
        parts.push(format!("login {}", ms(login)));
    }
    if let Some(e) = &pg.error {
        let mut said = format!("{} {}: {}", e.severity().unwrap_or("?"), e.code(), e.message.as_deref().unwrap_or(""));
        if let Some(d) = &e.detail {
            let _ = write!(said, " DETAIL: {d}");
        }
        if let Some(h) = &e.hint {
            let _ = write!(said, " HINT: {h}");
        }
        parts.push(said);
    }
    if !pg.session_errors.is_empty() {
        let errs: Vec<String> = pg.session_errors.iter().map(|(code, n)| format!("{code}×{n}")).collect();
        parts.push(format!("session errors {}", errs.join(" ")));
    }
    if pg.terminate_sent {
        parts.push("Terminate".to_owned());
    }
    if let Some(why) = &pg.not_postgres {
        parts.push(why.clone());
    }
    if pg.framing_lost {
        parts.push("framing lost at a capture gap".to_owned());
    }
    parts
}

fn summary_line(report: &Report<'_>) -> String {
    let st = report.stats;
    let s = report.summary;
    let span = match (s.first_seen, s.last_seen) {
        (Some(a), Some(b)) => format!(" from {a} to {b}"),
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
    for (n, what) in [
        (st.undecodable, "undecodable"),
        (st.payload_cut, "with payload cut by the snap length"),
        (st.duplicates, "duplicate copies ignored"),
        (st.stray_answers, "stray answers (RST/SYN-ACK with no SYN)"),
        (st.unmatched_icmp, "ICMP errors matching no SYN"),
        (st.evicted, "attempts ended early (flow table full)"),
        (st.untracked, "packets untracked (flow table full)"),
    ] {
        if n > 0 {
            let _ = write!(line, "; {n} {what}");
        }
    }
    line.push('\n');
    for note in &report.input_notes {
        let _ = writeln!(line, "note: {note}");
    }
    line
}

/// `1 attempt`, `2 attempts`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The time of day (UTC) with milliseconds; the date is in the summary line.
fn clock(t: Timestamp) -> String {
    let full = t.to_string();
    full.get(11..23).map_or(full.clone(), str::to_owned)
}

fn ms(v: f64) -> String {
    short(Duration::from_secs_f64(v.max(0.0) / 1e3))
}
