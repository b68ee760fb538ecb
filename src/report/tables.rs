//! The report's tables as plain cells, drawn by each format its own way
//! (comfy-table on a terminal, pipes in Markdown, `<table>` in HTML).

use std::fmt::Write as _;

use super::evidence::evidence;
use super::words::ms;
use super::Report;
use crate::analysis::summary::{NameSet, Summary};
use crate::outcome::Column;
use crate::points::words;
use crate::time::short;

/// A table: its header, its rows, and how each column reads.
pub struct Grid {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub kinds: Vec<ColumnKind>,
    /// Rows left out by a row limit.
    pub more: usize,
}

/// How a column reads: numbers are right-aligned, and a count of failures or
/// of logins may be coloured where colour is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    Number,
    Failures,
    Logins,
}

impl ColumnKind {
    pub fn is_numeric(self) -> bool {
        self != ColumnKind::Text
    }
}

impl Grid {
    fn new(columns: &[(&str, ColumnKind)]) -> Grid {
        Grid {
            header: columns.iter().map(|(h, _)| h.to_string()).collect(),
            rows: Vec::new(),
            kinds: columns.iter().map(|&(_, k)| k).collect(),
            more: 0,
        }
    }
}

use ColumnKind::{Failures, Logins, Number, Text};

/// The outcome columns shared by the client and timeline tables.
const OUTCOME_HEADERS: [(&str, ColumnKind); 6] = [
    ("logged in", Logins),
    ("refused", Failures),
    ("unreachable", Failures),
    ("timeout", Failures),
    ("login failed", Failures),
    ("other", Failures),
];

const COLUMNS: [Column; 6] =
    [Column::LoggedIn, Column::Refused, Column::Unreachable, Column::Timeout, Column::LoginFailed, Column::Other];

/// The clients, most failures first, at most `max_rows` of them.
pub fn clients(report: &Report<'_>, max_rows: usize) -> Grid {
    let seen = format!("seen ({})", report.zone_header());
    let mut columns = vec![("client", Text), ("attempts", Number)];
    columns.extend(OUTCOME_HEADERS);
    columns.extend([
        ("last outcome", Text),
        ("users", Text),
        ("databases", Text),
        ("applications", Text),
        (seen.as_str(), Text),
        ("median handshake", Number),
    ]);
    let mut g = Grid::new(&columns);
    let clients = report.summary.clients();
    g.more = clients.len().saturating_sub(max_rows);
    for c in clients.into_iter().take(max_rows) {
        let mut row = vec![c.client.to_string(), c.counts.attempts.to_string()];
        row.extend(COLUMNS.iter().map(|&col| c.counts.column(col).to_string()));
        let last = c.last_outcome.map_or(String::new(), |o| o.to_string());
        let last_failed = c.last_outcome.is_some_and(|o| o.is_failure());
        row.push(if c.logins_still_failing > 0 && c.others_logged_in && !last_failed {
            format!("{last} (another login failing)")
        } else if c.recovered > 0 && !last_failed {
            format!("{last} (recovered)")
        } else {
            last
        });
        row.extend([&c.users, &c.databases, &c.applications].map(name_list));
        row.push(format!("{}–{}", report.clock(c.first_seen), report.clock(c.last_seen)));
        row.push(c.median_handshake_ms.map_or("-".to_owned(), ms));
        g.rows.push(row);
    }
    g
}

pub fn windows(report: &Report<'_>) -> Grid {
    let head = format!("incident window ({})", report.zone_header());
    let mut g = Grid::new(&[
        (head.as_str(), Text),
        ("duration", Number),
        ("failed", Failures),
        ("clients", Number),
        ("outcomes", Text),
        ("before", Text),
        ("after", Text),
    ]);
    for w in report.summary.windows() {
        let outcomes: Vec<String> = w.outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        g.rows.push(vec![
            format!("{}–{}", report.clock(w.start), report.clock(w.end)),
            ms(w.duration_ms),
            w.failed_attempts.to_string(),
            format!("{}{}", if w.clients_at_least { "≥" } else { "" }, w.clients_affected),
            outcomes.join(", "),
            (if w.success_before { "logins worked" } else { "-" }).to_owned(),
            (if w.success_after { "recovered" } else { "not recovered" }).to_owned(),
        ]);
    }
    g
}

pub fn timeline(report: &Report<'_>) -> Grid {
    let s = report.summary;
    let head = format!("time ({}, {} buckets)", report.zone_header(), short(s.timeline.shown_width()));
    let mut columns = vec![(head.as_str(), Text), ("attempts", Number)];
    columns.extend(OUTCOME_HEADERS);
    let mut g = Grid::new(&columns);
    for b in s.timeline.buckets() {
        let mut row = vec![report.clock(b.start), b.counts.attempts.to_string()];
        row.extend(COLUMNS.iter().map(|&col| match b.counts.column(col) {
            0 => String::new(),
            n => n.to_string(),
        }));
        g.rows.push(row);
    }
    g
}

pub fn attempts(report: &Report<'_>) -> Grid {
    let start = format!("start ({})", report.zone_header());
    let mut g = Grid::new(&[
        ("#", Number),
        (start.as_str(), Text),
        ("client", Text),
        ("server", Text),
        ("outcome", Text),
        ("evidence", Text),
    ]);
    for a in report.summary.attempts() {
        g.rows.push(vec![
            a.id.to_string(),
            report.clock(a.start),
            a.client.to_string(),
            a.server.to_string(),
            a.outcome.to_string(),
            evidence(a),
        ]);
    }
    g
}

/// With several capture points: where the failures' packets were lost,
/// per place and outcome (no rows without a located failure).
pub fn locations(report: &Report<'_>) -> Grid {
    let mut g = Grid::new(&[("located", Text), ("outcome", Text), ("attempts", Failures)]);
    for (outcome, detail) in &report.summary.details {
        for (location, (n, _, _)) in &detail.locations {
            g.rows.push(vec![words::short(location), outcome.to_string(), n.to_string()]);
        }
    }
    g
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

/// The lines under the clients table about what limits left out: rows
/// beyond `--max-rows`, and clients beyond the summary's bound.
pub fn clients_left_out(grid: &Grid, s: &Summary) -> Vec<String> {
    let mut lines = Vec::new();
    if grid.more > 0 {
        lines.push(format!(
            "(+ {} more clients, counted in the totals; --format json lists them all, --max-rows shows more)",
            grid.more
        ));
    }
    if s.other_clients.attempts > 0 {
        lines.push(format!(
            "(+ {} attempts from further clients, beyond the table's limit, counted in the totals)",
            s.other_clients.attempts
        ));
    }
    lines
}

/// The line under the attempts table when `--max-listed` left some out.
pub fn attempts_left_out(s: &Summary) -> Option<String> {
    (s.attempts_not_listed > 0).then(|| format!("({} more attempts not listed)", s.attempts_not_listed))
}
