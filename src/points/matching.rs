//! Matching: the same attempt at several capture points. An attempt is
//! known by its client's SYN sequence number, which routers and NAT keep;
//! the copies must also start close together (once the clocks are
//! corrected) and, when NAT changed the pair, keep one of the two ports.
//! An attempt without a SYN (joined midstream) is matched by its pair.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::record::AttemptRecord;
use crate::time::Timestamp;

/// How far apart the first sightings of one attempt at two points may be:
/// a point past the one that dropped the first SYNs sees a retransmission
/// only (Linux's seventh SYN goes a minute after the first).
const MATCH_WINDOW: Duration = Duration::from_secs(70);

/// One attempt: each point's record of it, with the point's index.
pub type Group = Vec<(usize, AttemptRecord)>;

/// Groups the points' records (times on one clock) into attempts, in
/// order of their first sighting.
pub fn group(points: Vec<Vec<AttemptRecord>>) -> Vec<Group> {
    let mut all: Vec<(usize, AttemptRecord)> =
        points.into_iter().enumerate().flat_map(|(p, records)| records.into_iter().map(move |r| (p, r))).collect();
    all.sort_by_key(|(p, r)| (r.start, *p));
    let mut groups: Vec<Group> = Vec::new();
    let mut by_isn: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut by_pair: HashMap<(SocketAddr, SocketAddr), Vec<usize>> = HashMap::new();
    for (point, record) in all {
        let candidates = match (record.client_isn, &record.syn) {
            (Some(isn), Some(_)) => by_isn.entry(isn).or_default(),
            _ => by_pair.entry((record.client, record.server)).or_default(),
        };
        let joined = candidates.iter().copied().find(|&g| fits(&groups[g], point, &record));
        match joined {
            Some(g) => groups[g].push((point, record)),
            None => {
                candidates.push(groups.len());
                groups.push(vec![(point, record)]);
            }
        }
    }
    groups
}

/// Whether `record`, seen at `point`, is the attempt `group` holds.
fn fits(group: &Group, point: usize, record: &AttemptRecord) -> bool {
    let Some((_, first)) = group.first() else { return false };
    let near = |a: Timestamp, b: Timestamp| (if a > b { a.since(b) } else { b.since(a) }) <= MATCH_WINDOW;
    if group.iter().any(|(p, _)| *p == point) || !near(first.start, record.start) {
        return false;
    }
    group.iter().all(|(_, r)| {
        let same_pair = (r.client, r.server) == (record.client, record.server);
        let syn = record.syn.is_some() && r.syn.is_some();
        same_pair || (syn && (r.client.port() == record.client.port() || r.server.port() == record.server.port()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Outcome, TcpOutcome};
    use crate::record::SynEvidence;

    fn seen(client: &str, isn: Option<u32>, at_s: i64) -> AttemptRecord {
        let t = Timestamp::from_secs_nanos(at_s, 0);
        let pair = (client.parse().unwrap(), "192.0.2.66:5432".parse().unwrap());
        let mut r = AttemptRecord::bare(0, pair, (Outcome::Timeout, TcpOutcome::Timeout), (t, t));
        r.client_isn = isn;
        r.syn = isn.map(|_| SynEvidence { count: 1, at_ms: vec![0.0] });
        r
    }

    fn shape(groups: &[Group]) -> Vec<Vec<usize>> {
        groups.iter().map(|g| g.iter().map(|(p, _)| *p).collect()).collect()
    }

    #[test]
    fn one_syn_at_three_points_is_one_attempt() {
        let groups = group(vec![
            vec![seen("192.0.2.10:4000", Some(1), 0), seen("192.0.2.10:4001", Some(2), 1)],
            vec![seen("192.0.2.254:4000", Some(1), 0)],
            vec![seen("192.0.2.254:4000", Some(1), 0), seen("192.0.2.10:4001", Some(2), 1)],
        ]);
        assert_eq!(shape(&groups), [vec![0, 1, 2], vec![0, 2]]);
    }

    #[test]
    fn far_apart_or_without_a_common_port_stays_apart() {
        let mut other_ports = seen("192.0.2.12:4200", Some(5), 0);
        other_ports.server = "192.0.2.67:6432".parse().unwrap();
        let groups = group(vec![
            vec![seen("192.0.2.10:4000", Some(1), 0), seen("192.0.2.11:4100", Some(5), 0)],
            vec![seen("192.0.2.10:4000", Some(1), 500), other_ports],
        ]);
        assert_eq!(shape(&groups), [vec![0], vec![0], vec![1], vec![1]]);
    }

    #[test]
    fn midstream_connections_match_by_their_pair() {
        let groups = group(vec![vec![seen("192.0.2.10:4000", None, 0)], vec![seen("192.0.2.10:4000", None, 2)]]);
        assert_eq!(shape(&groups), [vec![0, 1]]);
    }
}
