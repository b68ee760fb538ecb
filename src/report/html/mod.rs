//! The report as one self-contained HTML file to attach to a postmortem:
//! no external style sheet, font or script (one small inline script sorts
//! the tables), so it opens offline anywhere. A header says what was
//! analyzed, how and when; the timeline is an SVG chart ([`chart`]); tables
//! wrap to the page and print on A4 or Letter.

mod chart;

use std::fmt::Write as _;

use super::escape::html as escape;
use super::tables::{self, Grid};
use super::words::{self, headline, summary_line};
use super::Report;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:110em}\
header dl{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em;margin:0;color:#444}\
header dt{font-weight:bold}header dd{margin:0;overflow-wrap:anywhere}\
.scroll{max-width:100%;overflow-x:auto}\
table{border-collapse:collapse;margin:1em 0;font-size:90%}\
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}\
th{background:#f3f3f3;text-align:left;cursor:pointer}td.n{text-align:right;font-variant-numeric:tabular-nums}\
td.t{overflow-wrap:anywhere;min-width:6em}td.bad{color:#c62828;font-weight:bold}td.good{color:#2e7d32}\
.finding{margin:1em 0}.sure{color:#555;font-size:85%}code{background:#f3f3f3;padding:0 .2em;overflow-wrap:anywhere}\
svg.timeline{max-width:60em;display:block}\
.legend span{display:inline-block;margin-right:1.2em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em}\
footer{color:#555;font-size:85%;border-top:1px solid #ccc;margin-top:2em}\
@page{margin:12mm}@media print{body{margin:0;max-width:none;font-size:10pt}.scroll{overflow:visible}\
th{cursor:auto}table{page-break-inside:auto}tr{page-break-inside:avoid}h2{page-break-after:avoid}}";

/// Sorts a table by the clicked column (numbers as numbers), with no
/// library and no network.
const SORT_SCRIPT: &str = "document.querySelectorAll('th').forEach(function(th){th.addEventListener('click',\
function(){var t=th.closest('table'),b=t.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th),\
d=th.dataset.d=th.dataset.d==='a'?'d':'a',rows=Array.prototype.slice.call(b.rows),\
v=function(r){var x=r.cells[i].textContent,n=parseFloat(x.replace(/[^0-9.-]/g,''));return isNaN(n)?x:n};\
rows.sort(function(p,q){var a=v(p),c=v(q),r=a<c?-1:a>c?1:0;return d==='a'?r:-r});\
rows.forEach(function(r){b.appendChild(r)})})});";

pub fn render(report: &Report<'_>) -> String {
    let s = report.summary;
    let title = format!("pgreach report: {}", report.files.join(", "));
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    out.push_str(&header(report));
    out.push_str("</header>\n");
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
        out.push_str(&chart::render(report));
        out.push_str("<h2>Diagnosis</h2>\n<ol>\n");
        for f in &d.findings {
            let _ = writeln!(
                out,
                "<li class=\"finding\"><strong>{}</strong>: {}<br>clients saw: <code>{}</code><br>{}<ul>",
                f.outcome,
                words::finding_extent(report, f),
                escape(&f.client_sees),
                with_code(&f.meaning)
            );
            for e in &f.evidence {
                let _ = writeln!(
                    out,
                    "<li><span class=\"sure\">[{}]</span> {}</li>",
                    e.confidence.label(),
                    with_code(&e.text)
                );
            }
            let _ = writeln!(out, "</ul>next: {}</li>", with_code(f.next_steps));
        }
        out.push_str("</ol>\n");
        section(&mut out, "Incident windows", &tables::windows(report));
        section(&mut out, "Timeline table", &tables::timeline(report));
        let clients = tables::clients(report, report.max_rows);
        section(&mut out, "Clients", &clients);
        for line in tables::clients_left_out(&clients, s) {
            let _ = writeln!(out, "<p>{}</p>", escape(&line));
        }
        section(&mut out, "Where the failures were located", &tables::locations(report));
        section(&mut out, "Attempts", &tables::attempts(report));
        if let Some(line) = tables::attempts_left_out(s) {
            let _ = writeln!(out, "<p>{}</p>", escape(&line));
        }
    }
    out.push_str("<footer>\n");
    for line in summary_line(report).lines() {
        let _ = writeln!(out, "<p>{}</p>", escape(line));
    }
    let _ = write!(out, "</footer>\n<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n");
    out
}

fn section(out: &mut String, title: &str, grid: &Grid) {
    if grid.rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "<h2>{}</h2>\n<div class=\"scroll\"><table>\n<thead><tr>", escape(title));
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
                _ => " class=\"t\"",
            };
            let _ = write!(out, "<td{class}>{}</td>", escape(value));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
}

/// What was analyzed, over which span, with which command, by which
/// pgreach, and when the report was made.
fn header(report: &Report<'_>) -> String {
    let mut rows = vec![("capture", report.files.join(", "))];
    if let (Some(a), Some(b)) = (report.summary.first_seen, report.summary.last_seen) {
        rows.push(("span", format!("{} to {}", report.zone.instant(a), report.zone.instant(b))));
    }
    if let Some(command) = &report.command {
        rows.push(("command", command.clone()));
    }
    rows.push(("pgreach", super::PGREACH_VERSION.to_owned()));
    if let Some(made) = &report.generated {
        rows.push(("made", made.clone()));
    }
    let mut out = String::from("<dl>\n");
    for (term, value) in rows {
        let _ = writeln!(out, "<dt>{term}</dt><dd>{}</dd>", escape(&value));
    }
    out.push_str("</dl>\n");
    out
}

/// Escaped text with its `backquoted` spans as code.
fn with_code(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        // Odd parts were between backquotes; an unpaired last one stays text.
        let paired = i % 2 == 1 && text.matches('`').count() > i;
        if paired {
            let _ = write!(out, "<code>{}</code>", escape(part));
        } else {
            if i % 2 == 1 {
                out.push('`');
            }
            out.push_str(&escape(part));
        }
    }
    out
}
