//! Several capture points: the same attempts captured in several places at
//! once (a client host, a router, the database host). Each point is
//! analyzed on its own; this module matches its attempts across points
//! ([`matching`]), dates each point's clock against the first ([`clock`]),
//! orders the points along the path and says where packets were lost
//! ([`location`]), and merges the copies NAT makes inside one capture
//! ([`nat`]). No I/O: records in, records out.

pub mod clock;
pub mod location;
pub mod matching;
pub mod naming;
pub mod nat;
pub mod words;

use serde::Serialize;

pub use naming::Point;

use crate::record::{AttemptRecord, Nat, NatKind, NatPair, PathEvidence, Sighting};
use crate::time::Timestamp;

/// The most attempts kept for matching, all points together (about 1 KiB
/// each): past it, a point's further attempts are reported as that point
/// saw them, unmatched, and a note says so.
pub const MAX_MATCHED: usize = 100_000;

/// One capture point as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PointSummary {
    pub name: String,
    pub files: Vec<String>,
    /// This point's clock minus the first point's, in seconds (0 for the
    /// first; the first point that saw an attempt when the first saw none).
    pub clock_offset_s: f64,
    /// Whether the offset was estimated (false: no attempt seen both here and at a dated point).
    pub clock_estimated: bool,
    /// Attempts this point saw.
    pub attempts_seen: u64,
}

/// The attempts one point saw.
pub struct PointRecords {
    pub point: Point,
    pub records: Vec<AttemptRecord>,
}

/// The points' attempts merged: each attempt once, with what each point saw.
pub struct Correlated {
    pub records: Vec<AttemptRecord>,
    pub points: Vec<PointSummary>,
    pub notes: Vec<String>,
}

/// Matches, dates and locates the attempts of several points.
pub fn correlate(points: Vec<PointRecords>) -> Correlated {
    let names: Vec<String> = points.iter().map(|p| p.point.name.clone()).collect();
    let (infos, mut records): (Vec<Point>, Vec<Vec<AttemptRecord>>) =
        points.into_iter().map(|p| (p.point, p.records)).unzip();
    let offsets = clock::offsets(&records);
    let mut notes = Vec::new();
    for (p, records) in records.iter_mut().enumerate() {
        let offset = offsets[p].unwrap_or(0);
        if records.is_empty() {
            // Most often a port: NAT publishing the server on another one.
            notes.push(format!(
                "capture point {}: no attempt on the server ports there; if NAT or a proxy puts the server on \
                 another port at this point, give that port too (-p)",
                names[p]
            ));
        } else if offsets[p].is_none() {
            notes.push(format!(
                "capture point {}: no attempt seen there was seen at another point, so its clock could not be \
                 compared; its times are taken as they are",
                names[p]
            ));
        }
        for r in records.iter_mut() {
            r.start = shift(r.start, offset);
            r.end = shift(r.end, offset);
        }
    }
    let spans: Vec<Option<(Timestamp, Timestamp)>> =
        records.iter().map(|rs| Some((rs.iter().map(|r| r.start).min()?, rs.iter().map(|r| r.end).max()?))).collect();
    let summaries = infos
        .into_iter()
        .zip(&records)
        .zip(&offsets)
        .map(|((point, rs), offset)| PointSummary {
            name: point.name,
            files: point.files,
            clock_offset_s: offset.unwrap_or(0) as f64 / 1e9,
            clock_estimated: offset.is_some(),
            attempts_seen: rs.len() as u64,
        })
        .collect();
    let groups = matching::group(records);
    let paths = location::Paths::learn(&groups, names.len());
    let mut alone = 0u64;
    let mut merged: Vec<AttemptRecord> = groups
        .into_iter()
        .filter_map(|mut group| {
            let path = paths.expected(&group, &spans);
            let location = location::locate(&group, &path, &names);
            let rank = |p: usize| path.iter().position(|&q| q == p).unwrap_or(usize::MAX);
            group.sort_by_key(|(p, _)| (rank(*p), *p));
            if group.len() == 1 && location.is_none() {
                alone += 1;
            }
            let seen_at = group.iter().map(|(p, r)| sighting(&names[*p], r)).collect();
            let nat = nat_of(&group, &names);
            let (_, mut record) = group.into_iter().next()?;
            record.path = Some(Box::new(PathEvidence { seen_at, location, nat }));
            Some(record)
        })
        .collect();
    merged.sort_by_key(|r| r.start);
    for (id, r) in merged.iter_mut().enumerate() {
        r.id = id as u64;
    }
    if alone > 0 {
        notes.push(format!(
            "{alone} attempt{} seen at one capture point only, where no other point was expected to see {}: \
             attempts are followed across points by their SYN, so a load balancer or proxy that ends TCP and \
             opens a new connection shows its two sides as unrelated attempts",
            if alone == 1 { " was" } else { "s were" },
            if alone == 1 { "it" } else { "them" }
        ));
    }
    Correlated { records: merged, points: summaries, notes }
}

fn shift(t: Timestamp, offset: i64) -> Timestamp {
    Timestamp::from_nanos(t.as_nanos().saturating_sub(offset))
}

/// What point `name` saw of the attempt.
fn sighting(name: &str, r: &AttemptRecord) -> Sighting {
    Sighting {
        point: name.to_owned(),
        client: r.client,
        server: r.server,
        outcome: r.outcome,
        syns: r.syn.as_ref().map_or(0, |s| s.count),
        answer: location::answer_of(r),
        first: r.start,
        last: r.end,
        syn_ttl: r.client_ttl,
        answer_ttl: location::answer_ttl(r),
        client_bytes: r.traffic.client_bytes,
        server_bytes: r.traffic.server_bytes,
    }
}

/// The pairs NAT gave the attempt, across points and inside a point; none
/// when every point saw the same pair.
fn nat_of(group: &[(usize, AttemptRecord)], names: &[String]) -> Option<Nat> {
    let mut pairs: Vec<NatPair> = Vec::new();
    for (p, r) in group {
        let inside = r.path.as_ref().and_then(|e| e.nat.as_ref()).map(|n| n.pairs.clone());
        let own = || vec![NatPair { point: names[*p].clone(), client: r.client, server: r.server }];
        for pair in inside.unwrap_or_else(own) {
            if !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
    }
    let first = pairs.first().map(|q| (q.client, q.server))?;
    let kind = pairs.iter().filter_map(|q| NatKind::between(first, (q.client, q.server))).reduce(NatKind::with)?;
    Some(Nat { kind, pairs })
}
