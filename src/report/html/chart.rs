//! The HTML report's timeline: an SVG bar chart, one `<g class="bucket">`
//! per bucket with one stacked bar per outcome column, incident windows
//! shaded behind the bars, and a time axis whose ticks carry the date when
//! the capture spans days. It scales with the page (viewBox), so it never
//! overflows a narrow window.

use std::fmt::Write as _;

use super::escape;
use crate::analysis::counts::OutcomeCounts;
use crate::outcome::Column;
use crate::report::words::count;
use crate::report::Report;
use crate::time::{short, Timestamp};

/// The chart's outcome columns, bottom to top, with their colours.
const CHART_SERIES: [(Column, &str, &str); 6] = [
    (Column::LoggedIn, "logged in", "#2e7d32"),
    (Column::Refused, "refused", "#c62828"),
    (Column::Unreachable, "unreachable", "#ef6c00"),
    (Column::Timeout, "timeout", "#6a1b9a"),
    (Column::LoginFailed, "login failed", "#1565c0"),
    (Column::Other, "other", "#757575"),
];

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 250.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 36.0;
/// Below this many timeline buckets a capture is short: its attempts are
/// counted again in finer buckets so that its shape still shows.
const FEW_BUCKETS: usize = 8;
/// Buckets a fine width aims at, at most.
const FINE_BUCKETS: i64 = 60;
/// Widths for fine buckets, in nanoseconds: 1 ms to 1 s.
const FINE_WIDTHS: [i64; 10] = [
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
];
/// Time-axis ticks drawn at most.
const TICKS: usize = 6;

/// The buckets to draw: (start, width in ns, counts).
fn buckets(report: &Report<'_>) -> (i64, Vec<(Timestamp, OutcomeCounts)>) {
    let s = report.summary;
    let timeline = s.timeline.buckets();
    let width = i64::try_from(s.timeline.shown_width().as_nanos()).unwrap_or(i64::MAX);
    let all_listed = s.attempts_not_listed == 0 && s.attempts().len() as u64 == s.totals.attempts;
    if timeline.len() >= FEW_BUCKETS || !all_listed {
        return (width, timeline.into_iter().map(|b| (b.start, b.counts)).collect());
    }
    let attempts = s.attempts();
    let (Some(first), Some(last)) = (attempts.first(), attempts.iter().map(|a| a.start).max()) else {
        return (width, Vec::new());
    };
    let span = last.as_nanos() - first.start.as_nanos();
    let fine = FINE_WIDTHS.iter().copied().find(|w| span / w < FINE_BUCKETS).unwrap_or(width);
    let origin = first.start.as_nanos().div_euclid(fine);
    let n = usize::try_from(last.as_nanos().div_euclid(fine) - origin + 1).unwrap_or(1);
    let mut out: Vec<(Timestamp, OutcomeCounts)> =
        (0..n).map(|i| (Timestamp::from_nanos((origin + i as i64) * fine), OutcomeCounts::default())).collect();
    for a in attempts {
        let i = usize::try_from(a.start.as_nanos().div_euclid(fine) - origin).unwrap_or(0).min(n - 1);
        out[i].1.add(a.outcome);
    }
    (fine, out)
}

pub fn render(report: &Report<'_>) -> String {
    let (width_ns, buckets) = buckets(report);
    let max = buckets.iter().map(|b| b.1.attempts).max().unwrap_or(0).max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let bar_w = plot_w / buckets.len().max(1) as f64;
    let base = TOP + plot_h;
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else { return String::new() };
    let (t0, t1) = (first.0.as_nanos(), last.0.as_nanos() + width_ns);
    let x_of = |t: Timestamp| LEFT + (t.as_nanos() - t0) as f64 / (t1 - t0).max(1) as f64 * plot_w;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"100%\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         role=\"img\" aria-label=\"attempts per {} bucket, by outcome\">\n",
        short(std::time::Duration::from_nanos(width_ns.max(0) as u64))
    );
    for w in report.summary.windows() {
        let (x0, x1) = (x_of(w.start), x_of(Timestamp::from_nanos(w.end.as_nanos() + width_ns)).min(WIDTH - RIGHT));
        let _ = writeln!(
            out,
            "<rect class=\"window\" x=\"{x0:.2}\" y=\"{TOP}\" width=\"{:.2}\" height=\"{plot_h}\" fill=\"#fde0dc\">\
             <title>incident window {}–{}</title></rect>",
            (x1 - x0).max(2.0),
            report.clock(w.start),
            report.clock(w.end)
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#888\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{max}</text>\
         <text x=\"{}\" y=\"{base}\" font-size=\"11\" text-anchor=\"end\">0</text>",
        WIDTH - RIGHT,
        LEFT - 4.0,
        TOP + 8.0,
        LEFT - 4.0
    );
    for (i, (start, counts)) in buckets.iter().enumerate() {
        let x = LEFT + i as f64 * bar_w;
        let mut tip = format!("{}: {}", report.clock(*start), count(counts.attempts, "attempt"));
        let mut bars = String::new();
        let mut y = base;
        for (column, name, colour) in CHART_SERIES {
            let n = counts.column(column);
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
        let _ = writeln!(out, "<g class=\"bucket\" data-start=\"{start}\"><title>{}</title>{bars}</g>", escape(&tip));
    }
    // Ticks at evenly spaced buckets, the first and the last included.
    let step = buckets.len().div_ceil(TICKS).max(1);
    let mut ticks: Vec<usize> = (0..buckets.len()).step_by(step).collect();
    if ticks.last() != Some(&(buckets.len() - 1)) && buckets.len() > 1 {
        ticks.push(buckets.len() - 1);
    }
    for i in ticks {
        let x = LEFT + (i as f64 + 0.5) * bar_w;
        let anchor = if i == 0 {
            "start"
        } else if i == buckets.len() - 1 {
            "end"
        } else {
            "middle"
        };
        let tx = match anchor {
            "start" => LEFT,
            "end" => WIDTH - RIGHT,
            _ => x,
        };
        let _ = writeln!(
            out,
            "<line class=\"tick\" x1=\"{x:.2}\" y1=\"{base}\" x2=\"{x:.2}\" y2=\"{}\" stroke=\"#888\"/>\
             <text x=\"{tx:.2}\" y=\"{}\" font-size=\"11\" text-anchor=\"{anchor}\">{}</text>",
            base + 4.0,
            base + 16.0,
            escape(&report.clock(buckets[i].0))
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\" fill=\"#555\">{}</text>",
        WIDTH - RIGHT,
        HEIGHT - 4.0,
        escape(&report.zone_header())
    );
    out.push_str("</svg>\n<p class=\"legend\">");
    for (_, name, colour) in CHART_SERIES {
        let _ = write!(out, "<span><i style=\"background:{colour}\"></i>{name}</span>");
    }
    out.push_str("<span><i style=\"background:#fde0dc\"></i>incident window</span></p>\n");
    out
}
