//! The report as one self-contained HTML file: no script, no external
//! style sheet or font, so it opens offline and can be attached anywhere.
//! The timeline is drawn as an SVG bar chart, one `<g class="bucket">` per
//! bucket with one stacked bar per outcome column.

use std::fmt::Write as _;

use super::tables::{self, Grid};
use super::words::count;
use super::words::{self, headline, summary_line};
use super::Report;
use crate::outcome::Column;
use crate::time::short;

/// The chart's outcome columns, bottom to top, with their colours.
pub const CHART_SERIES: [(Column, &str, &str); 6] = [
    (Column::LoggedIn, "logged in", "#2e7d32"),
    (Column::Refused, "refused", "#c62828"),
    (Column::Unreachable, "unreachable", "#ef6c00"),
    (Column::Timeout, "timeout", "#6a1b9a"),
    (Column::LoginFailed, "login failed", "#1565c0"),
    (Column::Other, "other", "#757575"),
];

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:110em}\
table{border-collapse:collapse;margin:1em 0;font-size:90%}\
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}\
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
td.bad{color:#c62828;font-weight:bold}td.good{color:#2e7d32}\
.finding{margin:1em 0}.sure{color:#555;font-size:85%}code{background:#f3f3f3;padding:0 .2em}\
.legend span{display:inline-block;margin-right:1.2em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em}\
footer{color:#555;font-size:85%;border-top:1px solid #ccc;margin-top:2em}";

pub fn render(report: &Report<'_>) -> String {
    let s = report.summary;
    let title = format!("pgreach report: {}", report.files.join(", "));
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    if s.totals.attempts == 0 {
        let _ = writeln!(
            out,
            "<p>No connection attempts to the server port(s) in this capture{}.</p>",
            if report.filtered { " match the filters" } else { "" }
        );
    } else {
        let d = report.diagnose();
        for line in headline(report, &d).lines().filter(|l| !l.is_empty()) {
            let _ = writeln!(out, "<p><strong>{}</strong></p>", escape(line));
        }
        out.push_str("<h2>Timeline</h2>\n");
        out.push_str(&chart(report));
        out.push_str("<h2>Diagnosis</h2>\n<ol>\n");
        for f in &d.findings {
            let _ = writeln!(
                out,
                "<li class=\"finding\"><strong>{}</strong>: {}<br>clients saw: <code>{}</code><br>{}<ul>",
                f.outcome,
                words::finding_extent(report, f),
                escape(f.client_sees),
                escape(&f.meaning)
            );
            for e in &f.evidence {
                let _ = writeln!(
                    out,
                    "<li><span class=\"sure\">[{}]</span> {}</li>",
                    e.confidence.label(),
                    escape(&e.text)
                );
            }
            let _ = writeln!(out, "</ul>next: {}</li>", escape(f.next_steps));
        }
        out.push_str("</ol>\n");
        section(&mut out, "Incident windows", &tables::windows(report));
        section(&mut out, "Timeline table", &tables::timeline(report));
        let clients = tables::clients(report, report.max_rows);
        section(&mut out, "Clients", &clients);
        for line in tables::clients_left_out(&clients, s) {
            let _ = writeln!(out, "<p>{}</p>", escape(&line));
        }
        section(&mut out, "Attempts", &tables::attempts(report));
        if let Some(line) = tables::attempts_left_out(s) {
            let _ = writeln!(out, "<p>{}</p>", escape(&line));
        }
    }
    out.push_str("<footer>\n");
    for line in summary_line(report).lines() {
        let _ = writeln!(out, "<p>{}</p>", escape(line));
    }
    out.push_str("</footer>\n</body>\n</html>\n");
    out
}

fn section(out: &mut String, title: &str, grid: &Grid) {
    if grid.rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "<h2>{}</h2>\n<table>\n<thead><tr>", escape(title));
    for h in &grid.header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &grid.rows {
        out.push_str("<tr>");
        for (value, kind) in row.iter().zip(&grid.kinds) {
            let zero = value.is_empty() || value == "0";
            let class = match kind {
                tables::ColumnKind::Failures if !zero => " class=\"n bad\"",
                tables::ColumnKind::Logins if !zero => " class=\"n good\"",
                k if k.is_numeric() => " class=\"n\"",
                _ => "",
            };
            let _ = write!(out, "<td{class}>{}</td>", escape(value));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

/// Stacked bars of attempts per bucket, with a legend and a time axis.
fn chart(report: &Report<'_>) -> String {
    let s = report.summary;
    const WIDTH: f64 = 960.0;
    const HEIGHT: f64 = 240.0;
    const LEFT: f64 = 48.0;
    const BOTTOM: f64 = 28.0;
    let buckets = s.timeline.buckets();
    let max = buckets.iter().map(|b| b.counts.attempts).max().unwrap_or(0).max(1);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - 8.0;
    let bar_w = plot_w / buckets.len().max(1) as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"attempts per {} bucket, by outcome\">\n",
        short(s.timeline.shown_width())
    );
    let base = 8.0 + plot_h;
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#888\"/>\
         <text x=\"{}\" y=\"16\" font-size=\"11\" text-anchor=\"end\">{max}</text>\
         <text x=\"{}\" y=\"{base}\" font-size=\"11\" text-anchor=\"end\">0</text>",
        WIDTH - 8.0,
        LEFT - 4.0,
        LEFT - 4.0
    );
    for (i, b) in buckets.iter().enumerate() {
        let x = LEFT + i as f64 * bar_w;
        let mut tip = format!("{}: {}", report.clock(b.start), count(b.counts.attempts, "attempt"));
        let mut bars = String::new();
        let mut y = base;
        for (column, name, colour) in CHART_SERIES {
            let n = b.counts.column(column);
            if n == 0 {
                continue;
            }
            let h = n as f64 / max as f64 * plot_h;
            y -= h;
            let _ = write!(tip, ", {name} {n}");
            let _ = write!(
                bars,
                "<rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{:.2}\" height=\"{h:.2}\" fill=\"{colour}\"/>",
                (bar_w - 1.0).max(0.5)
            );
        }
        let _ =
            writeln!(out, "<g class=\"bucket\" data-start=\"{}\"><title>{}</title>{bars}</g>", b.start, escape(&tip));
    }
    if let (Some(first), Some(last)) = (buckets.first(), buckets.last()) {
        let _ = writeln!(
            out,
            "<text x=\"{LEFT}\" y=\"{}\" font-size=\"11\">{}</text>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{} {}</text>",
            HEIGHT - 8.0,
            report.clock(first.start),
            WIDTH - 8.0,
            HEIGHT - 8.0,
            report.clock(last.start),
            report.zone.name()
        );
    }
    out.push_str("</svg>\n<p class=\"legend\">");
    for (_, name, colour) in CHART_SERIES {
        let _ = write!(out, "<span><i style=\"background:{colour}\"></i>{name}</span>");
    }
    out.push_str("</p>\n");
    out
}

/// Text from the capture never becomes markup.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}
