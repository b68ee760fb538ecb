//! Clock offsets between capture points: two hosts' clocks disagree, and
//! the same SYN seen at two points dates one point's clock against the
//! other's. Each point's offset is against the first point's clock (the
//! first that saw any SYN: a point that saw none has no clock to compare).

use std::collections::HashMap;

use crate::record::AttemptRecord;

/// Each point's offset in nanoseconds (its clock minus the reference's),
/// or `None` for a point that shares no SYN with a point already dated: the
/// median, over the SYNs seen at both, of the difference of their first
/// sightings. Only attempts with as many SYNs at both points count: where
/// the first SYNs were lost between them, the later point's first is a
/// retransmission, seconds late. The transit time between two points is in
/// it too: it is the estimate's error, a millisecond or so on one network.
pub fn offsets(points: &[Vec<AttemptRecord>]) -> Vec<Option<i64>> {
    let firsts: Vec<HashMap<u32, (i64, u32)>> = points.iter().map(|records| first_syns(records)).collect();
    let mut found: Vec<Option<i64>> = vec![None; points.len()];
    if let Some(reference) = firsts.iter().position(|f| !f.is_empty()).or((!points.is_empty()).then_some(0)) {
        found[reference] = Some(0);
    }
    // Each pass dates the points that share SYNs with a point already dated.
    loop {
        let mut progress = false;
        for p in 0..points.len() {
            if found[p].is_some() {
                continue;
            }
            let via = (0..points.len()).find_map(|q| {
                let base = found[q]?;
                let mut diffs: Vec<i64> = firsts[p]
                    .iter()
                    .filter_map(|(isn, (at, syns))| {
                        let (there, syns_there) = firsts[q].get(isn)?;
                        (syns == syns_there).then(|| at.saturating_sub(*there))
                    })
                    .collect();
                median(&mut diffs).map(|d| d.saturating_add(base))
            });
            if via.is_some() {
                found[p] = via;
                progress = true;
            }
        }
        if !progress {
            return found;
        }
    }
}

/// The first-SYN time and the SYNs of each sequence number seen once at a
/// point (a number seen twice there cannot say which attempt it dates).
fn first_syns(records: &[AttemptRecord]) -> HashMap<u32, (i64, u32)> {
    let mut firsts: HashMap<u32, Option<(i64, u32)>> = HashMap::new();
    for r in records {
        if let (Some(isn), Some(syn)) = (r.client_isn, &r.syn) {
            firsts.entry(isn).and_modify(|seen| *seen = None).or_insert(Some((r.start.as_nanos(), syn.count)));
        }
    }
    firsts.into_iter().filter_map(|(isn, at)| Some((isn, at?))).collect()
}

fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { values[mid - 1] / 2 + values[mid] / 2 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Outcome, TcpOutcome};
    use crate::record::SynEvidence;
    use crate::time::Timestamp;

    fn syn(isn: u32, at_ns: i64) -> AttemptRecord {
        syns(isn, at_ns, 1)
    }

    fn syns(isn: u32, at_ns: i64, count: u32) -> AttemptRecord {
        let t = Timestamp::from_nanos(at_ns);
        let pair = ("192.0.2.10:4000".parse().unwrap(), "192.0.2.66:5432".parse().unwrap());
        let mut r = AttemptRecord::bare(0, pair, (Outcome::Success, TcpOutcome::Established), (t, t));
        r.client_isn = Some(isn);
        r.syn = Some(SynEvidence { count, at_ms: vec![0.0] });
        r
    }

    #[test]
    fn an_attempt_whose_first_syns_were_lost_between_the_points_does_not_count() {
        let s = 1_000_000_000;
        // The server saw only the third SYN of attempts 2 and 3, seconds late.
        let client = vec![syns(1, 0, 1), syns(2, 10 * s, 3), syns(3, 20 * s, 3)];
        let server = vec![syns(1, s, 1), syns(2, 14 * s, 1), syns(3, 24 * s, 1)];
        assert_eq!(offsets(&[client, server]), [Some(0), Some(s)]);
    }

    #[test]
    fn the_median_difference_dates_each_point_even_through_another() {
        let s = 1_000_000_000;
        let ms = 1_000_000;
        let client = vec![syn(1, 0), syn(2, s), syn(3, 2 * s)];
        // 5 s ahead with 1 ms of transit, one outlier; and a SYN the client did not see.
        let server = vec![syn(1, 5 * s + ms), syn(2, 6 * s + ms), syn(3, 99 * s), syn(4, 10 * s)];
        // Shares a SYN with the server only: dated through it.
        let far = vec![syn(4, 40 * s)];
        let lone = vec![syn(9, 0)];
        let got = offsets(&[client.clone(), server.clone(), far, lone]);
        assert_eq!(got, [Some(0), Some(5 * s + ms), Some(35 * s + ms), None]);
        // A first point that saw no SYN: the next one is the reference.
        assert_eq!(offsets(&[Vec::new(), client, server]), [None, Some(0), Some(5 * s + ms)]);
    }
}
