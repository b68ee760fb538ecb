//! The report as Markdown (GitHub-flavoured tables), to paste into a
//! postmortem: the same sections as the terminal report.

use std::fmt::Write as _;

use super::escape;
use super::tables::{self, Grid};
use super::words::{self, headline, summary_line};
use super::Report;

pub fn render(report: &Report<'_>, connections: bool) -> String {
    let s = report.summary;
    let mut out = format!("# pgreach report: {}\n\n", escape::markdown(&report.files.join(", ")));
    if s.totals.attempts == 0 {
        out.push_str("No connection attempts to the server port(s) in this capture");
        out.push_str(if report.filtered { " match the filters.\n\n" } else { ".\n\n" });
    } else {
        let d = report.diagnose();
        out.push_str(&paragraphs(&headline(report, &d)));
        out.push_str("## Diagnosis\n\nFailures first, most clients affected first.\n\n");
        for (i, f) in d.findings.iter().enumerate() {
            let _ = writeln!(out, "{}. **{}**: {}", i + 1, f.outcome, words::finding_extent(report, f));
            // A code span shows its text as it is: controls made visible, no backtick to end it.
            let _ = writeln!(out, "   - Clients saw: `{}`", escape::terminal(&f.client_sees).replace('`', "'"));
            let _ = writeln!(out, "   - {}", f.meaning);
            for e in &f.evidence {
                let _ = writeln!(out, "   - \\[{}\\] {}", e.confidence.label(), escape::markdown(&e.text));
            }
            let _ = writeln!(out, "   - Next: {}\n", f.next_steps);
        }
        section(&mut out, "Incident windows", &tables::windows(report), 1);
        section(&mut out, "Timeline", &tables::timeline(report), 2);
        let clients = tables::clients(report, report.max_rows);
        section(&mut out, "Clients", &clients, 1);
        for line in tables::clients_left_out(&clients, s) {
            let _ = writeln!(out, "{}\n", escape::markdown(&line));
        }
        section(&mut out, "Where the failures were located", &tables::locations(report), 1);
        if connections {
            section(&mut out, "Attempts", &tables::attempts(report), 1);
            if let Some(line) = tables::attempts_left_out(s) {
                let _ = writeln!(out, "{line}\n");
            }
        }
    }
    out.push_str("---\n\n");
    out.push_str(&paragraphs(&summary_line(report)));
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// Each non-empty line as a paragraph.
fn paragraphs(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let _ = write!(out, "{}\n\n", escape::markdown(line));
    }
    out
}

/// A heading and its table, when the table has at least `min_rows` rows.
fn section(out: &mut String, title: &str, grid: &Grid, min_rows: usize) {
    if grid.rows.len() < min_rows {
        return;
    }
    let _ = writeln!(out, "## {title}\n");
    out.push_str(&table(grid));
    out.push('\n');
}

pub fn table(grid: &Grid) -> String {
    let mut out = String::new();
    let cells = |row: &[String]| row.iter().map(|c| escape::markdown(c)).collect::<Vec<_>>().join(" | ");
    let _ = writeln!(out, "| {} |", cells(&grid.header));
    let rule: Vec<&str> = grid.kinds.iter().map(|k| if k.is_numeric() { "---:" } else { "---" }).collect();
    let _ = writeln!(out, "| {} |", rule.join(" | "));
    for row in &grid.rows {
        let _ = writeln!(out, "| {} |", cells(row));
    }
    out
}
