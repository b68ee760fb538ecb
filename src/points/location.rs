//! Location: which capture points lie nearer the client and which nearer
//! the server, and where between them an attempt's packets went missing.
//! A SYN's TTL is highest nearest the client (each router takes one off);
//! a SYN-ACK's is highest nearest the server. The order is learned per
//! server from every attempt seen at two points or more.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::matching::Group;
use crate::outcome::AnswerKind;
use crate::record::{AttemptRecord, Location, LocationKind, SeenAnswer};
use crate::time::Timestamp;

/// What answered the SYN at one point, if anything.
pub fn answer_of(r: &AttemptRecord) -> Option<SeenAnswer> {
    if r.server_ttl.is_some() {
        return Some(SeenAnswer::SynAck);
    }
    r.answer.as_ref().map(|a| match a.kind {
        AnswerKind::Rst => SeenAnswer::Rst,
        AnswerKind::Icmp => SeenAnswer::Icmp,
    })
}

/// The TTL of that answer as captured.
pub fn answer_ttl(r: &AttemptRecord) -> Option<u8> {
    r.server_ttl.or(r.answer.as_ref().map(|a| a.ttl))
}

/// The member nearest the client: the highest SYN TTL, then the first point.
fn client_side(group: &Group) -> Option<&(usize, AttemptRecord)> {
    group.iter().min_by_key(|(p, r)| (std::cmp::Reverse(r.client_ttl), *p))
}

/// Whether `a` is nearer the client than `b`, as their copies of one attempt show.
fn nearer_client(a: &AttemptRecord, b: &AttemptRecord) -> Option<bool> {
    match (a.client_ttl, b.client_ttl) {
        (Some(x), Some(y)) if x != y => Some(x > y),
        _ => match (answer_ttl(a), answer_ttl(b)) {
            (Some(x), Some(y)) if x != y => Some(x < y),
            _ => None,
        },
    }
}

/// The points along the path to each server, client side first.
pub struct Paths {
    by_server: HashMap<IpAddr, Vec<usize>>,
}

impl Paths {
    /// Learns the order from every attempt: each pair of points seen in one
    /// attempt votes; ties keep the order of the command line.
    pub fn learn(groups: &[Group], points: usize) -> Paths {
        let mut votes: HashMap<IpAddr, (BTreeSet<usize>, Vec<Vec<u64>>)> = HashMap::new();
        for group in groups {
            let Some(key) = server_key(group) else { continue };
            let (seen, tally) = votes.entry(key).or_insert_with(|| (BTreeSet::new(), vec![vec![0; points]; points]));
            for (p, a) in group {
                seen.insert(*p);
                for (q, b) in group {
                    if nearer_client(a, b) == Some(true) {
                        tally[*p][*q] += 1;
                    }
                }
            }
        }
        let by_server = votes
            .into_iter()
            .map(|(key, (seen, tally))| {
                let wins = |p: usize| seen.iter().filter(|&&q| tally[p][q] > tally[q][p]).count();
                let mut order: Vec<usize> = seen.iter().copied().collect();
                order.sort_by_key(|&p| (std::cmp::Reverse(wins(p)), p));
                (key, order)
            })
            .collect();
        Paths { by_server }
    }

    /// The points expected to see this attempt, client side first: those
    /// that saw it, and those that saw other attempts to its server and were
    /// capturing when it began.
    pub fn expected(&self, group: &Group, spans: &[Option<(Timestamp, Timestamp)>]) -> Vec<usize> {
        let start = group.iter().map(|(_, r)| r.start).min().unwrap_or_default();
        let order = server_key(group).and_then(|k| self.by_server.get(&k));
        order.map_or_else(Vec::new, |order| {
            let capturing = |p: usize| spans.get(p).copied().flatten().is_some_and(|(a, b)| a <= start && start <= b);
            order.iter().copied().filter(|&p| group.iter().any(|(q, _)| *q == p) || capturing(p)).collect()
        })
    }
}

/// The server's address as the client dialed it.
fn server_key(group: &Group) -> Option<IpAddr> {
    client_side(group).map(|(_, r)| r.server.ip())
}

/// Where the attempt's packets stopped, along `path` (client side first),
/// from what each point saw; `None` where nothing was lost.
pub fn locate(group: &Group, path: &[usize], names: &[String]) -> Option<Location> {
    let at = |i: usize| group.iter().find(|(p, _)| *p == path[i]).map(|(_, r)| r);
    let answer = |i: usize| at(i).and_then(answer_of);
    let name = |i: usize| names.get(path[i]).cloned().unwrap_or_default();
    let n = path.len();
    if n < 2 || at(0).is_none() {
        return None;
    }
    let between = |kind, from: usize, to: usize| Some(Location { kind, from: name(from), to: Some(name(to)) });
    // The answer travels toward the client: the first point (from the server's
    // side) that saw it, next to one that did not. An answer the client's
    // side saw was not lost: a point that missed it is off its return path
    // (asymmetric routing).
    let answer_lost = |is: &dyn Fn(Option<SeenAnswer>) -> bool| {
        if is(answer(0)) {
            return None;
        }
        (0..n - 1).rev().find(|&i| is(answer(i + 1)) && !is(answer(i))).map(|i| (i + 1, i))
    };
    if (0..n).any(|i| answer(i) == Some(SeenAnswer::SynAck)) {
        let (from, to) = answer_lost(&|a| a == Some(SeenAnswer::SynAck))?;
        return between(LocationKind::AnswerLostBetween, from, to);
    }
    let refused = |a: Option<SeenAnswer>| matches!(a, Some(SeenAnswer::Rst | SeenAnswer::Icmp));
    if let Some(last) = (0..n).rev().find(|&i| refused(answer(i))) {
        if last + 1 < n {
            return between(LocationKind::ForgedBetween, last, last + 1);
        }
        let (from, to) = answer_lost(&refused)?;
        return between(LocationKind::AnswerLostBetween, from, to);
    }
    let reached = (0..n).rev().find(|&i| at(i).is_some_and(|r| r.syn.is_some()))?;
    if reached + 1 == n {
        Some(Location { kind: LocationKind::DroppedAt, from: name(reached), to: None })
    } else {
        between(LocationKind::LostBetween, reached, reached + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Outcome, TcpOutcome};
    use crate::record::{Answer, SynEvidence};

    const NAMES: [&str; 3] = ["client", "router", "server"];

    fn names() -> Vec<String> {
        NAMES.iter().map(|s| (*s).to_owned()).collect()
    }

    /// What point `p` saw: a SYN with `ttl`, and an answer (`a`: SYN-ACK, `r`: RST, `-`: none).
    fn seen(p: usize, ttl: u8, answer: char) -> (usize, AttemptRecord) {
        let pair = ("192.0.2.10:4000".parse().unwrap(), "192.0.2.66:5432".parse().unwrap());
        let mut r = AttemptRecord::bare(0, pair, (Outcome::Timeout, TcpOutcome::Timeout), Default::default());
        r.client_ttl = Some(ttl);
        r.syn = Some(SynEvidence { count: 2, at_ms: vec![0.0, 1000.0] });
        match answer {
            'a' => r.server_ttl = Some(64 - (2 - p as u8)),
            'r' => {
                r.answer = Some(Answer {
                    kind: AnswerKind::Rst,
                    from: r.server.ip(),
                    ttl: 64,
                    icmp_type: None,
                    icmp_code: None,
                    unreachable: None,
                    after_ms: 0.1,
                })
            }
            _ => {}
        }
        (p, r)
    }

    type Placed = Option<(LocationKind, String, Option<String>)>;

    fn place(groups: &[Group], which: usize) -> Placed {
        let paths = Paths::learn(groups, 3);
        let span = Some((Timestamp::from_nanos(i64::MIN / 2), Timestamp::from_nanos(i64::MAX / 2)));
        let path = paths.expected(&groups[which], &[span; 3]);
        locate(&groups[which], &path, &names()).map(|l| (l.kind, l.from, l.to))
    }

    /// A login seen at all three points, to teach the order.
    fn login() -> Group {
        vec![seen(2, 63, 'a'), seen(0, 64, 'a'), seen(1, 63, 'a')]
    }

    #[test]
    fn each_kind_of_loss_is_located() {
        use LocationKind::*;
        let s = |x: &str| x.to_owned();
        let cases: Vec<(Group, Placed)> = vec![
            (vec![seen(0, 64, '-'), seen(1, 63, '-'), seen(2, 63, '-')], Some((DroppedAt, s("server"), None))),
            (vec![seen(0, 64, '-')], Some((LostBetween, s("client"), Some(s("router"))))),
            (
                vec![seen(0, 64, '-'), seen(1, 63, 'a'), seen(2, 63, 'a')],
                Some((AnswerLostBetween, s("router"), Some(s("client")))),
            ),
            (vec![seen(0, 64, 'r')], Some((ForgedBetween, s("client"), Some(s("router"))))),
            (vec![seen(0, 64, 'r'), seen(1, 63, 'r'), seen(2, 63, 'r')], None),
            (login(), None),
            // The router is off the return path: the client got its SYN-ACK.
            (vec![seen(0, 64, 'a'), seen(1, 63, '-'), seen(2, 63, 'a')], None),
        ];
        for (i, (attempt, expected)) in cases.into_iter().enumerate() {
            let groups = vec![login(), attempt];
            assert_eq!(place(&groups, 1), expected, "case {i}");
        }
    }

    #[test]
    fn a_point_that_never_saw_the_server_is_not_expected() {
        let groups = vec![vec![seen(0, 64, 'a'), seen(2, 63, 'a')], vec![seen(0, 64, '-')]];
        let paths = Paths::learn(&groups, 3);
        let span = Some((Timestamp::from_nanos(i64::MIN / 2), Timestamp::from_nanos(i64::MAX / 2)));
        assert_eq!(paths.expected(&groups[1], &[span; 3]), [0, 2]);
        assert_eq!(paths.expected(&groups[1], &[span, None, None]), [0]);
    }
}
