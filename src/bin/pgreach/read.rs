//! `analyze`'s reading: one capture point read by one analyzer, its NAT
//! copies merged as they come; or several points, each read by its own
//! analyzer, their attempts kept (up to a bound) and matched across points.

use pgreach::capture::{analyze_files, FilterError, Problems};
use pgreach::dns::DnsCounts;
use pgreach::engine::{Analyzer, Config, Stats};
use pgreach::handoff;
use pgreach::points::nat::NatMerger;
use pgreach::points::{self, Point, PointRecords, MAX_MATCHED};
use pgreach::record::AttemptRecord;
use pgreach::report::output::Output;
use pgreach::time::Timestamp;

/// What the reading adds to the report besides its attempts.
pub struct Read {
    /// The engine's counters, summed over the points.
    pub stats: Stats,
    /// Notes about the matching across points.
    pub notes: Vec<String>,
}

/// Reads every point's files into `output`.
pub fn read(
    points: &[Point],
    filter: Option<&str>,
    config: &Config,
    problems: &mut Problems,
    output: &mut Output,
    on_progress: &mut dyn FnMut(u64),
) -> Result<Read, FilterError> {
    match points {
        [one] => read_one(one, filter, config, problems, output, on_progress),
        _ => read_several(points, filter, config, problems, output, on_progress),
    }
}

fn read_one(
    point: &Point,
    filter: Option<&str>,
    config: &Config,
    problems: &mut Problems,
    output: &mut Output,
    on_progress: &mut dyn FnMut(u64),
) -> Result<Read, FilterError> {
    let mut analyzer = Analyzer::new(config.clone());
    // The engine reads on this thread while another merges NAT copies and
    // builds the report from the attempts it finishes.
    let (read, merged) = handoff::split(
        |hand: &mut dyn FnMut((AttemptRecord, Timestamp))| {
            let mut on_attempt = |record, capture_start| hand((record, capture_start));
            analyze_files(&point.files, filter, &mut analyzer, problems, &mut on_attempt, on_progress)
        },
        |attempts| {
            let mut merger = NatMerger::new(&point.name);
            let mut start = Timestamp::default();
            attempts.for_each(|(record, capture_start)| {
                start = capture_start;
                merger.push(record, &mut |r| output.attempt(r, capture_start));
            });
            merger.finish(&mut |r| output.attempt(r, start));
            merger.merged
        },
    );
    read?;
    let mut stats = analyzer.stats().clone();
    stats.attempts -= merged.min(stats.attempts);
    Ok(Read { stats, notes: Vec::new() })
}

fn read_several(
    points: &[Point],
    filter: Option<&str>,
    config: &Config,
    problems: &mut Problems,
    output: &mut Output,
    on_progress: &mut dyn FnMut(u64),
) -> Result<Read, FilterError> {
    let mut stats = Stats::default();
    let mut seen = Vec::new();
    let (mut kept, mut unmatched) = (0usize, 0u64);
    // Relative times (`--since +5m`) count from the first point's first packet.
    let mut start: Option<Timestamp> = None;
    let mut bytes_before = 0u64;
    for point in points {
        let mut analyzer = Analyzer::new(config.clone());
        let mut merger = NatMerger::new(&point.name);
        let mut records = Vec::new();
        let mut keep = |r: AttemptRecord, capture_start: Timestamp| {
            if kept < MAX_MATCHED {
                kept += 1;
                records.push(r);
            } else {
                unmatched += 1;
                output.attempt(r, start.unwrap_or(capture_start));
            }
        };
        let mut point_start = Timestamp::default();
        let mut on_attempt = |record, capture_start| {
            point_start = capture_start;
            merger.push(record, &mut |r| keep(r, capture_start));
        };
        let mut progress = |bytes| on_progress(bytes_before + bytes);
        analyze_files(&point.files, filter, &mut analyzer, problems, &mut on_attempt, &mut progress)?;
        merger.finish(&mut |r| keep(r, point_start));
        add(&mut stats, analyzer.stats());
        bytes_before += point.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum::<u64>();
        start = start.or(analyzer.stats().first_packet);
        seen.push(PointRecords { point: point.clone(), records });
    }
    let correlated = points::correlate(seen);
    let capture_start = start.unwrap_or_default();
    stats.attempts = unmatched + correlated.records.len() as u64;
    stats.first_packet = start;
    for record in correlated.records {
        output.attempt(record, capture_start);
    }
    output.set_points(correlated.points);
    let mut notes = correlated.notes;
    if unmatched > 0 {
        notes.push(format!(
            "{unmatched} attempts came after the {MAX_MATCHED} kept for matching across capture points: they are \
             reported as their point saw them, unmatched, so an attempt among them seen at several points is \
             counted once per point"
        ));
    }
    Ok(Read { stats, notes })
}

/// Adds one point's counters to the total (the first packet is the first
/// point's, and the attempts are counted once matched). Every field is
/// named, so that a new counter cannot be left out unnoticed.
fn add(total: &mut Stats, s: &Stats) {
    let Stats {
        packets,
        packets_on_port,
        undecodable,
        payload_cut,
        duplicates,
        stray_answers,
        stray_segments,
        unmatched_icmp,
        dns,
        evicted,
        evicted_midstream,
        untracked,
        held_over_budget,
        clock_jumps,
        pg_limits_cut,
        attempts: _,
        first_packet: _,
    } = *s;
    total.packets += packets;
    total.packets_on_port += packets_on_port;
    total.undecodable += undecodable;
    total.payload_cut += payload_cut;
    total.duplicates += duplicates;
    total.stray_answers += stray_answers;
    total.stray_segments += stray_segments;
    total.unmatched_icmp += unmatched_icmp;
    let DnsCounts {
        dns_answers,
        dns_unanswered,
        dns_failures_not_kept,
        dns_queries_not_followed,
        dns_answers_not_captured,
        dns_tcp_skipped,
    } = dns;
    total.dns.dns_answers += dns_answers;
    total.dns.dns_unanswered += dns_unanswered;
    total.dns.dns_failures_not_kept += dns_failures_not_kept;
    total.dns.dns_queries_not_followed += dns_queries_not_followed;
    total.dns.dns_answers_not_captured += dns_answers_not_captured;
    total.dns.dns_tcp_skipped += dns_tcp_skipped;
    total.evicted += evicted;
    total.evicted_midstream += evicted_midstream;
    total.untracked += untracked;
    total.held_over_budget += held_over_budget;
    total.clock_jumps += clock_jumps;
    total.pg_limits_cut += pg_limits_cut;
}
