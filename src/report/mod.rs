//! Reports: the renderers of what the analysis found, one module per
//! format (terminal table, JSON, NDJSON, CSV, Markdown, HTML), the words
//! and tables they share, and [`output`], which routes finished attempts
//! through the filter and redaction to the chosen format. Renderers read
//! [`crate::analysis`] and never each other.

mod attempt_json;
pub mod csv;
pub mod escape;
mod evidence;
pub mod html;
pub mod json;
pub mod markdown;
pub mod ndjson;
pub mod output;
mod tables;
pub mod text;
mod words;

use std::time::Duration;

use crate::analysis::diagnosis::{self, CaptureFacts, Diagnosis};
use crate::analysis::summary::Summary;
use crate::analysis::zone::Zone;
use crate::capture::CaptureCounters;
use crate::engine::Stats;
use crate::points::PointSummary;

/// The version of pgreach that writes the reports.
pub const PGREACH_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The terminal report.
    Table,
    /// One document with a schema version (docs/report.schema.json).
    Json,
    /// One JSON object per attempt, written as attempts finish.
    Ndjson,
    /// One row per attempt, written as attempts finish.
    Csv,
    /// The report as Markdown, for a postmortem document.
    Markdown,
    /// One self-contained HTML file with the timeline drawn as a chart.
    Html,
}

impl Format {
    /// Whether attempts are written one by one as they end.
    pub fn is_rows(self) -> bool {
        matches!(self, Format::Ndjson | Format::Csv)
    }
}

/// What a report is made of.
pub struct Report<'a> {
    pub summary: &'a Summary,
    pub stats: &'a Stats,
    /// The input files, as named on the command line.
    pub files: &'a [String],
    pub server_ports: &'a [u16],
    pub syn_timeout: Duration,
    /// Error lines about the input (file problems, undecodable packets).
    pub problems: Vec<String>,
    /// Facts about the input that are not errors (a trailing fragment).
    pub input_notes: Vec<String>,
    /// Whether filters narrowed the attempts.
    pub filtered: bool,
    /// A live capture's libpcap counters.
    pub capture: Option<CaptureCounters>,
    /// The capture filter the user gave (`-f`), if any.
    pub capture_filter: Option<String>,
    /// The zone times are printed in (`--tz`).
    pub zone: &'a Zone,
    /// The command line that made the report, for its header (none under --redact).
    pub command: Option<String>,
    /// When the report was made (RFC 3339), for its header.
    pub generated: Option<String>,
    /// Clients shown in the tables of the terminal, Markdown and HTML reports.
    pub max_rows: usize,
    /// The capture points the attempts were matched across, when there are several.
    pub points: &'a [PointSummary],
}

impl Report<'_> {
    /// Whether the attempts span more than one calendar day in the report's
    /// zone: every time then carries its date.
    fn spans_days(&self) -> bool {
        match (self.summary.first_seen, self.summary.last_seen) {
            (Some(a), Some(b)) => self.zone.date(a) != self.zone.date(b),
            _ => false,
        }
    }

    /// A time as tables show it: the time of day with milliseconds, with the
    /// date before it when the report spans days.
    pub fn clock(&self, t: crate::time::Timestamp) -> String {
        self.zone.clock(t, self.spans_days())
    }

    /// What a time column's header says of its times: the zone, and the
    /// date when all of them share it (`UTC, 2026-11-24`).
    pub fn zone_header(&self) -> String {
        match self.summary.first_seen {
            Some(first) if !self.spans_days() => format!("{}, {}", self.zone.name(), self.zone.date(first)),
            _ => self.zone.name().to_owned(),
        }
    }

    /// The diagnosis of this report's attempts.
    pub fn diagnose(&self) -> Diagnosis {
        let capture = CaptureFacts {
            unmatched_icmp: self.stats.unmatched_icmp,
            filter: self.capture_filter.clone(),
            blind_spots: diagnosis::blind_spots(self.stats),
        };
        diagnosis::diagnose(self.summary, self.syn_timeout, &capture)
    }

    fn ports_label(&self) -> String {
        let ports: Vec<String> = self.server_ports.iter().map(u16::to_string).collect();
        ports.join(",")
    }
}
