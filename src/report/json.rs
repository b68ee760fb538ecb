//! The JSON report: one document with the same data as the terminal report.
//! Field names are stable and documented in the README; `schema_version`
//! changes when one changes meaning.

use std::collections::BTreeMap;

use serde::Serialize;

use super::attempt_json::AttemptJson;
use super::Report;
use crate::analysis::counts::OutcomeCounts;
use crate::analysis::diagnosis::Diagnosis;
use crate::analysis::summary::ClientSummary;
use crate::analysis::timeline::{BucketView, Window};
use crate::capture::CaptureCounters;
use crate::engine::Stats;
use crate::outcome::Outcome;
use crate::points::PointSummary;
use crate::time::Timestamp;

pub const SCHEMA_VERSION: u32 = 2;

#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    pgreach_version: &'static str,
    files: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    points: &'a [PointSummary],
    server_ports: &'a [u16],
    syn_timeout_ms: f64,
    #[serde(rename = "start")]
    first_seen: Option<Timestamp>,
    #[serde(rename = "end")]
    last_seen: Option<Timestamp>,
    stats: &'a Stats,
    totals: OutcomeCounts,
    clients: Vec<ClientSummary>,
    other_clients: OutcomeCounts,
    attempts: Vec<AttemptJson<'a>>,
    attempts_not_listed: u64,
    diagnosis: Diagnosis,
    timeline: TimelineDoc,
    windows: Vec<Window>,
    /// What the server said, by outcome: "SQLSTATE message" and how often.
    server_said: BTreeMap<Outcome, Vec<Said>>,
    problems: &'a [String],
    input_notes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    capture: Option<CaptureCounters>,
}

#[derive(Serialize)]
struct TimelineDoc {
    bucket_ms: f64,
    buckets: Vec<BucketView>,
}

#[derive(Serialize)]
struct Said {
    message: String,
    count: u64,
}

/// Writes the document to `out` as it is serialised: a report of many
/// clients and attempts is never held whole in memory.
pub fn write(report: &Report<'_>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let s = report.summary;
    let doc = Document {
        schema_version: SCHEMA_VERSION,
        pgreach_version: super::PGREACH_VERSION,
        files: report.files,
        points: report.points,
        server_ports: report.server_ports,
        syn_timeout_ms: crate::time::millis(report.syn_timeout),
        first_seen: s.first_seen,
        last_seen: s.last_seen,
        stats: report.stats,
        totals: s.totals.clone(),
        clients: s.clients(),
        other_clients: s.other_clients.clone(),
        attempts: s.attempts().into_iter().map(AttemptJson::new).collect(),
        attempts_not_listed: s.attempts_not_listed,
        diagnosis: report.diagnose(),
        timeline: TimelineDoc {
            bucket_ms: crate::time::millis(s.timeline.shown_width()),
            buckets: s.timeline.buckets(),
        },
        windows: s.windows(),
        server_said: s
            .totals
            .outcomes()
            .map(|o| {
                (
                    o,
                    s.messages(o)
                        .into_iter()
                        .map(|(said, count)| Said { message: said.coded(), count })
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, said)| !said.is_empty())
            .collect(),
        problems: &report.problems,
        input_notes: &report.input_notes,
        capture: report.capture,
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    out.write_all(b"\n")
}
