//! The terminal report: the per-client table, what each outcome means, and
//! (with --connections) one row per attempt with its evidence.

use std::fmt::Write as _;

use comfy_table::{presets, Cell, CellAlignment, Color, ContentArrangement, Table};

use super::evidence::reason;
use super::tables::{self, ColumnKind, Grid};
use super::words::{self, headline, summary_line};
use super::Report;
use crate::analysis::diagnosis::Diagnosis;

pub fn render(report: &Report<'_>, connections: bool, colour: bool) -> String {
    let mut out = String::new();
    let s = report.summary;
    if s.totals.attempts == 0 {
        out.push_str("No connection attempts to the server port(s) in this capture");
        out.push_str(if report.filtered { " match the filters.\n\n" } else { ".\n\n" });
    } else {
        let diagnosis = report.diagnose();
        out.push_str(&headline(report, &diagnosis));
        out.push_str(&diagnosis_text(&diagnosis));
        let windows = tables::windows(s);
        if !windows.rows.is_empty() {
            out.push_str(&draw(&windows, colour));
            out.push_str("\n\n");
        }
        let timeline = tables::timeline(s);
        if timeline.rows.len() >= 2 {
            out.push_str(&draw(&timeline, colour));
            out.push_str("\n\n");
        }
        let clients = tables::clients(report, report.max_rows);
        out.push_str(&draw(&clients, colour));
        out.push('\n');
        for line in tables::clients_left_out(&clients, s) {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
        if connections {
            out.push_str(&draw(&tables::attempts(report), colour));
            if let Some(line) = tables::attempts_left_out(s) {
                let _ = write!(out, "\n{line}");
            }
            out.push_str("\n\n");
        }
    }
    out.push_str(&summary_line(report));
    out
}

fn diagnosis_text(d: &Diagnosis) -> String {
    let mut out = String::from("Diagnosis, failures first, most clients affected first:\n\n");
    for (i, f) in d.findings.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}. {}: {}\n   clients saw: {}\n   {}",
            i + 1,
            f.outcome,
            words::finding_extent(f),
            f.client_sees,
            f.meaning
        );
        for e in &f.evidence {
            let _ = writeln!(out, "   - [{}] {}", e.confidence.label(), e.text);
        }
        let _ = writeln!(out, "   next: {}\n", f.next_steps);
    }
    out
}

/// Draws a grid with comfy-table; `colour` marks non-zero failure counts red
/// and login counts green.
fn draw(grid: &Grid, colour: bool) -> String {
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    if colour {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table.set_header(grid.header.iter().map(Cell::new));
    for row in &grid.rows {
        table.add_row(row.iter().zip(&grid.kinds).map(|(value, &kind)| {
            let mut cell = Cell::new(value);
            if kind.is_numeric() {
                cell = cell.set_alignment(CellAlignment::Right);
            }
            let zero = value.is_empty() || value == "0";
            match kind {
                ColumnKind::Failures if colour && !zero => cell.fg(Color::Red),
                ColumnKind::Logins if colour && !zero => cell.fg(Color::Green),
                _ => cell,
            }
        }));
    }
    table.to_string()
}

/// The live view: status lines, the headline and the busiest clients,
/// redrawn in place about once a second.
pub fn live_view(report: &Report<'_>, status: &[String], max_clients: usize, width: usize, colour: bool) -> String {
    let mut out = String::new();
    for line in status {
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    let s = report.summary;
    if s.totals.attempts == 0 {
        out.push_str("No connection attempt has ended yet.\n");
        return out;
    }
    out.push_str(&headline(report, &report.diagnose()));
    let clients = tables::clients(report, max_clients);
    out.push_str(&draw(&clients, colour));
    out.push('\n');
    for line in tables::clients_left_out(&clients, s) {
        let _ = writeln!(out, "{line}");
    }
    let mut recent = s.recent_failures().peekable();
    if recent.peek().is_some() {
        out.push_str("\nLatest failures:\n");
        for a in recent {
            let line = format!("{} {} → {} {}: {}", words::clock(a.start), a.client, a.server, a.outcome, reason(a));
            // One screen line each.
            let _ = writeln!(out, "  {}", line.chars().take(width.saturating_sub(2)).collect::<String>());
        }
    }
    out
}
