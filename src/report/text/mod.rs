//! The terminal report: the per-client table, what each outcome means, and
//! (with --connections) one row per attempt with its evidence, fitted to
//! the terminal's width ([`fit`]).

mod fit;

use std::fmt::Write as _;

use super::escape;
use super::evidence::reason;
use super::tables::{self, Grid};
use super::words::{self, headline, summary_line};
use super::Report;
use crate::analysis::diagnosis::Diagnosis;

/// The report; `width` is the terminal's (no wrapping without one).
pub fn render(report: &Report<'_>, connections: bool, colour: bool, width: Option<usize>) -> String {
    let draw = |grid: &Grid| fit::grid(&visible(grid), colour, width);
    let mut out = String::new();
    let s = report.summary;
    if s.totals.attempts == 0 {
        out.push_str("No connection attempts to the server port(s) in this capture");
        out.push_str(if report.filtered { " match the filters.\n\n" } else { ".\n\n" });
    } else {
        let diagnosis = report.diagnose();
        out.push_str(&fit::wrap_lines(&headline(report, &diagnosis), width));
        out.push_str(&fit::wrap_lines(&diagnosis_text(report, &diagnosis), width));
        let windows = tables::windows(report);
        if !windows.rows.is_empty() {
            out.push_str(&draw(&windows));
            out.push_str("\n\n");
        }
        let timeline = tables::timeline(report);
        if timeline.rows.len() >= 2 {
            out.push_str(&draw(&timeline));
            out.push_str("\n\n");
        }
        let clients = tables::clients(report, report.max_rows);
        out.push_str(&draw(&clients));
        out.push('\n');
        for line in tables::clients_left_out(&clients, s) {
            out.push_str(&fit::wrap_lines(&format!("{line}\n"), width));
        }
        out.push('\n');
        let located = tables::locations(report);
        if !located.rows.is_empty() {
            out.push_str(&draw(&located));
            out.push_str("\n\n");
        }
        if connections {
            out.push_str(&draw(&tables::attempts(report)));
            if let Some(line) = tables::attempts_left_out(s) {
                let _ = write!(out, "\n{line}");
            }
            out.push_str("\n\n");
        }
    }
    out.push_str(&fit::wrap_lines(&lines(&summary_line(report)), width));
    out
}

/// Each line of a block escaped for the terminal, the block's own line breaks kept.
fn lines(block: &str) -> String {
    block.lines().map(|l| escape::terminal(l) + "\n").collect()
}

/// A grid with every cell escaped for the terminal: names and server words
/// come from the wire.
fn visible(grid: &Grid) -> Grid {
    let cells = |row: &[String]| row.iter().map(|c| escape::terminal(c)).collect();
    Grid {
        header: cells(&grid.header),
        rows: grid.rows.iter().map(|r| cells(r)).collect(),
        kinds: grid.kinds.clone(),
        more: grid.more,
    }
}

fn diagnosis_text(report: &Report<'_>, d: &Diagnosis) -> String {
    let mut out = String::from("Diagnosis, failures first, most clients affected first:\n\n");
    for (i, f) in d.findings.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}. {}: {}\n   clients saw: {}\n   {}",
            i + 1,
            f.outcome,
            words::finding_extent(report, f),
            escape::terminal(&f.client_sees),
            f.meaning
        );
        for e in &f.evidence {
            let _ = writeln!(out, "   - [{}] {}", e.confidence.label(), escape::terminal(&e.text));
        }
        let _ = writeln!(out, "   next: {}\n", f.next_steps);
    }
    out
}

/// The live view, `height` lines at most, redrawn in place about once a
/// second: the status lines first, then the headline, the latest failures
/// (one line each) and as many of the busiest clients as fit.
pub fn live_view(report: &Report<'_>, status: &[String], height: usize, width: usize, colour: bool) -> String {
    let mut lines: Vec<String> = status
        .iter()
        .flat_map(|l| {
            let l = escape::terminal(l);
            fit::wrap_lines(&format!("{l}\n"), Some(width)).lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    lines.push(String::new());
    let s = report.summary;
    if s.totals.attempts == 0 {
        lines.push("No connection attempt has ended yet.".to_owned());
        return lines.join("\n") + "\n";
    }
    lines.extend(fit::wrap_lines(&headline(report, &report.diagnose()), Some(width)).lines().map(str::to_owned));
    let recent: Vec<String> = s
        .recent_failures()
        .map(|a| {
            let line = format!("{} {} → {} {}: {}", report.clock(a.start), a.client, a.server, a.outcome, reason(a));
            let line = escape::terminal(&line);
            format!("  {}", line.chars().take(width.saturating_sub(2)).collect::<String>())
        })
        .collect();
    if !recent.is_empty() {
        lines.push("Latest failures:".to_owned());
        lines.extend(recent);
        lines.push(String::new());
    }
    // A table takes four lines besides its rows (borders and header).
    let room = height.saturating_sub(lines.len() + 5).max(1);
    let clients = tables::clients(report, room);
    lines.extend(fit::grid(&visible(&clients), colour, Some(width)).lines().map(str::to_owned));
    for line in tables::clients_left_out(&clients, s) {
        lines.extend(fit::wrap_lines(&format!("{line}\n"), Some(width)).lines().map(str::to_owned));
    }
    lines.truncate(height);
    lines.join("\n") + "\n"
}
