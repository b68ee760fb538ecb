//! NAT inside one capture: `-i any` on a NAT router or a Docker host sees
//! each connection twice, before and after translation, with the same SYN
//! sequence number and different address pairs, the SYN's TTL one lower
//! after the routing. The two copies become one attempt, the client's side
//! kept, with both pairs as `nat` evidence.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use std::time::Duration;

use crate::record::{AttemptRecord, Nat, NatKind, NatPair, PathEvidence};
use crate::time::Timestamp;

/// Copies of one SYN are captured within microseconds; a second apart is
/// another attempt that drew the same sequence number.
const SAME_SYN: Duration = Duration::from_secs(1);
/// Both copies of an attempt end on the same packets, so the engine hands
/// them out together: an attempt is let go once the attempts handed out
/// after it end this much later than those before it did.
const HOLD: Duration = Duration::from_secs(5);
/// The most attempts held waiting for a twin (a few MiB; a SYN flood ends
/// more than this many attempts in five seconds): past it the oldest goes
/// on unmerged.
pub const MAX_HELD: usize = 8192;

/// An attempt waiting for its twin.
struct Held {
    record: AttemptRecord,
    /// The latest end seen when it came.
    came: Option<Timestamp>,
    /// The attempt held before it with the same SYN sequence number.
    same_isn_before: Option<u64>,
}

/// Merges the copies of each attempt as the engine finishes them, keeping
/// their order.
pub struct NatMerger {
    point: String,
    held: VecDeque<Held>,
    /// The number of attempts let go so far: `held[i]` is attempt `released + i`.
    released: u64,
    /// The latest attempt held for each SYN sequence number; the ones
    /// before it are chained through [`Held::same_isn_before`].
    by_isn: HashMap<u32, u64>,
    latest_end: Option<Timestamp>,
    /// Copies merged into another attempt.
    pub merged: u64,
}

impl NatMerger {
    /// For the capture point named `point` (the pairs' evidence names it).
    pub fn new(point: &str) -> NatMerger {
        NatMerger {
            point: point.to_owned(),
            held: VecDeque::new(),
            released: 0,
            by_isn: HashMap::new(),
            latest_end: None,
            merged: 0,
        }
    }

    /// Takes one finished attempt; hands on those no twin can follow any more.
    pub fn push(&mut self, record: AttemptRecord, out: &mut dyn FnMut(AttemptRecord)) {
        self.latest_end = self.latest_end.max(Some(record.end));
        match self.twin_of(&record) {
            Some(i) => {
                let slot = &mut self.held[i].record;
                *slot = merge(&self.point, std::mem::replace(slot, record.clone()), record);
                self.merged += 1;
            }
            None => {
                let number = self.released + self.held.len() as u64;
                let same_isn_before = record.client_isn.and_then(|isn| self.by_isn.insert(isn, number));
                self.held.push_back(Held { record, came: self.latest_end, same_isn_before });
            }
        }
        while let Some(Held { came, .. }) = self.held.front() {
            let waited = match (self.latest_end, came) {
                (Some(now), Some(then)) => now.since(*then) > HOLD,
                _ => false,
            };
            let due = waited || self.held.len() > MAX_HELD;
            if !due {
                break;
            }
            self.release(out);
        }
    }

    /// The capture has ended: hands on every attempt held.
    pub fn finish(&mut self, out: &mut dyn FnMut(AttemptRecord)) {
        while !self.held.is_empty() {
            self.release(out);
        }
    }

    fn release(&mut self, out: &mut dyn FnMut(AttemptRecord)) {
        let Some(Held { record, .. }) = self.held.pop_front() else { return };
        // Held attempts before the latest of an ISN are released first, so
        // the entry goes with the last of them.
        if let Some(isn) = record.client_isn {
            if self.by_isn.get(&isn) == Some(&self.released) {
                self.by_isn.remove(&isn);
            }
        }
        self.released += 1;
        out(record);
    }

    /// The held attempt that is the other copy of `record`: the same SYN
    /// sequence number, another address pair with a port in common (NAT
    /// rewrites one side), SYN TTLs one apart (one copy was routed), first
    /// SYNs close together.
    fn twin_of(&self, record: &AttemptRecord) -> Option<usize> {
        let isn = record.client_isn?;
        record.syn.as_ref()?;
        let ttl = record.client_ttl?;
        // From the latest held attempt of this ISN back: the earliest that fits wins.
        let mut twin = None;
        let mut next = self.by_isn.get(&isn).copied();
        while let Some(i) = next.and_then(|n| usize::try_from(n.checked_sub(self.released)?).ok()) {
            let Some(entry) = self.held.get(i) else { break };
            let held = &entry.record;
            let routed = held.client_ttl.is_some_and(|t| t.abs_diff(ttl) == 1);
            let apart =
                if held.start > record.start { held.start.since(record.start) } else { record.start.since(held.start) };
            let ports_kept = held.server.port() == record.server.port() || held.client.port() == record.client.port();
            let other_pair = (held.client, held.server) != (record.client, record.server);
            if held.syn.is_some() && routed && other_pair && ports_kept && apart <= SAME_SYN {
                twin = Some(i);
            }
            next = entry.same_isn_before;
        }
        twin
    }
}

/// One attempt from two copies: the client's side (the SYN with the higher
/// TTL, not yet routed) is kept; the other copy's pair joins the evidence.
pub fn merge(point: &str, a: AttemptRecord, b: AttemptRecord) -> AttemptRecord {
    let (mut kept, other) = if b.client_ttl > a.client_ttl { (b, a) } else { (a, b) };
    let kind = NatKind::between((kept.client, kept.server), (other.client, other.server));
    let path = kept.path.get_or_insert_with(Box::default);
    let nat = path.nat.get_or_insert_with(|| Nat {
        kind: kind.unwrap_or(NatKind::Source),
        pairs: vec![NatPair { point: point.to_owned(), client: kept.client, server: kept.server }],
    });
    if let Some(kind) = kind {
        nat.kind = nat.kind.with(kind);
    }
    let pair = NatPair { point: point.to_owned(), client: other.client, server: other.server };
    if !nat.pairs.contains(&pair) {
        nat.pairs.push(pair);
    }
    if let Some(theirs) = other.path.and_then(|p: Box<PathEvidence>| p.nat) {
        nat.kind = nat.kind.with(theirs.kind);
        for pair in theirs.pairs {
            if !nat.pairs.contains(&pair) {
                nat.pairs.push(pair);
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Outcome, TcpOutcome};
    use crate::record::SynEvidence;

    fn attempt(id: u64, client: &str, server: &str, isn: u32, at_ms: i64, ttl: u8) -> AttemptRecord {
        let t = Timestamp::from_nanos(at_ms * 1_000_000);
        let ends = (Outcome::Timeout, TcpOutcome::Timeout);
        let mut r = AttemptRecord::bare(id, (client.parse().unwrap(), server.parse().unwrap()), ends, (t, t));
        r.client_isn = Some(isn);
        r.client_ttl = Some(ttl);
        r.syn = Some(SynEvidence { count: 1, at_ms: vec![0.0] });
        r
    }

    fn run(records: Vec<AttemptRecord>) -> Vec<AttemptRecord> {
        let mut merger = NatMerger::new("router");
        let mut out = Vec::new();
        for r in records {
            merger.push(r, &mut |r| out.push(r));
        }
        merger.finish(&mut |r| out.push(r));
        out
    }

    #[test]
    fn the_two_copies_of_a_snat_connection_are_one_attempt() {
        let out = run(vec![
            attempt(0, "192.0.2.254:40000", "192.0.2.66:5432", 7, 0, 63),
            attempt(1, "192.0.2.10:40000", "192.0.2.66:5432", 7, 0, 64),
            attempt(2, "192.0.2.11:40001", "192.0.2.66:5432", 8, 5, 64),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].client, "192.0.2.10:40000".parse().unwrap(), "the client's side is kept");
        let nat = out[0].path.as_ref().and_then(|p| p.nat.as_ref()).unwrap();
        assert_eq!(nat.kind, NatKind::Source);
        assert_eq!(nat.pairs.len(), 2);
        assert!(out[1].path.is_none());
    }

    #[test]
    fn unrelated_attempts_are_not_merged() {
        // The same sequence number, but seconds apart, with both ports
        // changed, or from two clients at the same distance (a fixed ISN).
        let out = run(vec![
            attempt(0, "192.0.2.10:40000", "192.0.2.66:5432", 7, 0, 64),
            attempt(1, "192.0.2.11:40000", "192.0.2.66:5432", 7, 5_000, 63),
            attempt(2, "192.0.2.12:40002", "192.0.2.67:6432", 7, 10, 63),
            attempt(3, "192.0.2.13:40003", "192.0.2.66:5432", 7, 10, 64),
            attempt(4, "192.0.2.10:40000", "192.0.2.66:5432", 9, 0, 63),
        ]);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|r| r.path.is_none()));
        let ids: Vec<u64> = out.iter().map(|r| r.id).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4], "order is kept");
    }

    #[test]
    fn attempts_are_let_go_once_their_twin_cannot_come() {
        let mut merger = NatMerger::new("p");
        let mut out = Vec::new();
        merger.push(attempt(0, "192.0.2.10:1", "192.0.2.66:5432", 1, 0, 64), &mut |r| out.push(r));
        assert!(out.is_empty());
        merger.push(attempt(1, "192.0.2.10:2", "192.0.2.66:5432", 2, 4_000, 64), &mut |r| out.push(r));
        assert!(out.is_empty(), "held until an attempt ends 5 s after the latest end when it came");
        merger.push(attempt(2, "192.0.2.10:3", "192.0.2.66:5432", 3, 8_000, 64), &mut |r| out.push(r));
        assert_eq!(out.len(), 1);
        assert!(merger.by_isn.len() == 2 && merger.held.len() == 2);
    }
}
