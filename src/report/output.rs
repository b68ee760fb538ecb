//! Where finished attempts go: filtered, redacted, then written at once as
//! rows (ndjson, csv) or gathered into the summary that the other formats
//! render at the end. Shared by `analyze` and `live`.

use std::io::{self, Write};
use std::time::Duration;

use super::{csv, html, json, markdown, ndjson, text, Format, Report};
use crate::analysis::counts::OutcomeCounts;
use crate::analysis::filter::Filter;
use crate::analysis::summary::Summary;
use crate::analysis::timeline::MAX_SHOWN;
use crate::analysis::zone::Zone;
use crate::capture::CaptureCounters;
use crate::engine::Stats;
use crate::points::PointSummary;
use crate::record::AttemptRecord;
use crate::redact::Redactor;
use crate::time::{short, Timestamp};

/// Clients kept in the per-client summary; further ones are counted together.
const MAX_CLIENTS: usize = 100_000;

/// What to report and how.
pub struct OutputOptions {
    pub format: Format,
    /// List every attempt in the table and Markdown reports.
    pub connections: bool,
    /// Colour the terminal report.
    pub colour: bool,
    /// The terminal's width, to fit the terminal report to (none: no wrapping).
    pub width: Option<usize>,
    pub filter: Filter,
    pub redact: bool,
    pub max_listed: usize,
    pub max_rows: usize,
    pub bucket: Option<Duration>,
    pub ports: Vec<u16>,
    pub syn_timeout: Duration,
    /// The capture filter the user gave (`-f`), if any: the diagnosis says
    /// what it may have hidden.
    pub capture_filter: Option<String>,
    /// The zone times are printed in (`--tz`).
    pub zone: Zone,
    /// The command line and the time of making, for the HTML header.
    pub command: Option<String>,
    pub generated: Option<String>,
    /// Keep the latest failures (for a live view).
    pub recent_failures: bool,
}

pub struct Output {
    opts: OutputOptions,
    out: Box<dyn Write + Send>,
    redactor: Option<Redactor>,
    /// Every reported attempt by outcome, whatever the format (row formats
    /// keep no summary): for `--fail-on`.
    reported: OutcomeCounts,
    /// CSV's header waits for the first row or the end, so that a run that
    /// reads no input writes nothing.
    csv_header_due: bool,
    summary: Summary,
    /// The first write error; writing stops being useful after it.
    write_error: Option<io::Error>,
    /// The capture points, when there are several.
    points: Vec<PointSummary>,
}

impl Output {
    pub fn new(opts: OutputOptions, out: Box<dyn Write + Send>) -> Output {
        let lists_attempts = opts.connections || matches!(opts.format, Format::Json | Format::Markdown | Format::Html);
        let listed = if lists_attempts { opts.max_listed } else { 0 };
        let mut summary = Summary::new(MAX_CLIENTS, listed, opts.bucket);
        if opts.recent_failures {
            summary.keep_recent_failures();
        }
        Output {
            redactor: opts.redact.then(Redactor::default),
            summary,
            reported: OutcomeCounts::default(),
            csv_header_due: opts.format == Format::Csv,
            opts,
            out,
            write_error: None,
            points: Vec::new(),
        }
    }

    /// The capture points the attempts were matched across (several).
    pub fn set_points(&mut self, points: Vec<PointSummary>) {
        self.points = points;
    }

    /// The reported attempts by outcome.
    pub fn reported(&self) -> &OutcomeCounts {
        &self.reported
    }

    fn write_csv_header(&mut self) {
        if std::mem::take(&mut self.csv_header_due) {
            if let Err(e) = csv::header(&mut self.out) {
                self.write_error.get_or_insert(e);
            }
        }
    }

    pub fn attempt(&mut self, record: AttemptRecord, capture_start: Timestamp) {
        self.attempt_observed(record, capture_start, None);
    }

    /// [`Self::attempt`], and `observe` sees every attempt, filtered or not,
    /// as redaction left it: the live metrics, which must not show what
    /// --redact hides.
    pub fn attempt_observed(
        &mut self,
        mut record: AttemptRecord,
        capture_start: Timestamp,
        observe: Option<&mut dyn FnMut(&AttemptRecord)>,
    ) {
        let matched = self.opts.filter.matches(&record, capture_start);
        if !matched && observe.is_none() {
            return;
        }
        if let Some(r) = &mut self.redactor {
            r.redact(&mut record);
        }
        if let Some(observe) = observe {
            observe(&record);
        }
        if !matched {
            return;
        }
        self.reported.add(record.outcome);
        self.write_csv_header();
        let written = match self.opts.format {
            Format::Ndjson => ndjson::line(&record, &mut self.out),
            Format::Csv => csv::row(&record, &mut self.out),
            _ => {
                self.summary.add(record);
                Ok(())
            }
        };
        if self.write_error.is_none() {
            self.write_error = written.err();
        }
    }

    /// Rows reach a pipe as their attempt ends (live capture).
    pub fn flush_rows(&mut self) {
        if self.opts.format.is_rows() {
            if let Err(e) = self.out.flush() {
                self.write_error.get_or_insert(e);
            }
        }
    }

    /// The report as it stands, for a live view.
    pub fn report<'a>(
        &'a self,
        stats: &'a Stats,
        files: &'a [String],
        problems: Vec<String>,
        mut input_notes: Vec<String>,
        capture: Option<CaptureCounters>,
    ) -> Report<'a> {
        if let Some((asked, shown)) = self.summary.timeline.widened() {
            input_notes.push(format!(
                "timeline buckets widened from {} to {}: the capture's span would need more than {} of them",
                short(asked),
                short(shown),
                MAX_SHOWN
            ));
        }
        Report {
            summary: &self.summary,
            stats,
            files,
            server_ports: &self.opts.ports,
            syn_timeout: self.opts.syn_timeout,
            problems,
            input_notes,
            filtered: !self.opts.filter.is_empty(),
            capture,
            max_rows: self.opts.max_rows,
            capture_filter: self.opts.capture_filter.clone(),
            zone: &self.opts.zone,
            command: self.opts.command.clone(),
            generated: self.opts.generated.clone(),
            points: &self.points,
        }
    }

    /// Writes the final report (rows are already out) and flushes. A reader
    /// that went away (a closed pipe) is not an error.
    pub fn finish(
        mut self,
        stats: &Stats,
        files: &[String],
        problems: Vec<String>,
        input_notes: Vec<String>,
        capture: Option<CaptureCounters>,
    ) -> io::Result<()> {
        self.write_csv_header();
        // The report borrows the rest of `self` while it is written out.
        let mut out = std::mem::replace(&mut self.out, Box::new(io::sink()));
        let finished = {
            let report = self.report(stats, files, problems, input_notes, capture);
            match self.opts.format {
                Format::Table => out.write_all(
                    text::render(&report, self.opts.connections, self.opts.colour, self.opts.width).as_bytes(),
                ),
                Format::Json => json::write(&report, &mut out),
                Format::Markdown => out.write_all(markdown::render(&report, self.opts.connections).as_bytes()),
                Format::Html => out.write_all(html::render(&report).as_bytes()),
                Format::Csv | Format::Ndjson => Ok(()),
            }
        };
        match self.write_error.take().or(finished.err()).or(out.flush().err()) {
            Some(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
            _ => Ok(()),
        }
    }
}
