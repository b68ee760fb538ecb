//! Queries still waiting for an answer. A name asked by a client that no
//! answer followed within a few seconds of its last retry is a lookup that
//! failed: the client gave up ("Temporary failure in name resolution").
//! Retries (a resolver's own, A and AAAA asked apart, another resolver
//! asked) are one query, known by the client's address and the name.
//! Bounded: a fixed number of names waiting, and an order list a few times
//! that size.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::message::Lookup;
use crate::time::Timestamp;

/// How long after its last query a name with no answer is given up. glibc
/// waits 5 s (resolv.conf's `timeout`) before it asks again, up to 6.7 s
/// with three nameservers; musl asks again every second: a name asked
/// nobody for longer than that is one the client stopped asking for.
pub const UNANSWERED_AFTER: Duration = Duration::from_secs(8);
/// Names waiting for an answer at once; more are not followed (counted).
const MAX_WAITING: usize = 10_000;
/// Resolvers remembered as answering (answers can be forged from anywhere).
const MAX_ANSWERING: usize = 1024;

/// A client and a name in lower case (resolvers may mix the case of a
/// query's letters; the answer repeats them).
type Key = (IpAddr, String);

#[derive(Debug)]
struct Waiting {
    /// The client's address and port of the first query.
    client: SocketAddr,
    /// The name as first asked.
    name: String,
    resolver: IpAddr,
    first: Timestamp,
    last: Timestamp,
}

/// The queries no answer has followed yet.
#[derive(Debug, Default)]
pub struct Pending {
    waiting: HashMap<Key, Waiting>,
    /// Every query's key with its time, oldest first: an entry is current
    /// while it matches the query's `last` (lazy deletion).
    order: VecDeque<(Timestamp, Key)>,
    /// Resolvers seen answering: a silence from one of these is real, not
    /// a capture that holds one direction only.
    answering: HashSet<IpAddr>,
    /// Names waiting per client, so that a client's SYN finds its own
    /// queries without a scan when it has none.
    per_client: HashMap<IpAddr, usize>,
    /// Queries not followed because too many names were waiting.
    pub not_followed: u64,
    /// Queries whose answer the capture lacks: the client connected after
    /// asking, so it got an address (a capture of one direction only).
    pub answers_not_captured: u64,
}

fn key(client: IpAddr, name: &str) -> Key {
    (client, name.to_ascii_lowercase())
}

impl Pending {
    /// A client asked `resolver` for `name`.
    pub fn asked(&mut self, client: SocketAddr, resolver: IpAddr, name: String, at: Timestamp) {
        let k = key(client.ip(), &name);
        if let Some(w) = self.waiting.get_mut(&k) {
            if at <= w.last {
                // A retry at or before the latest: that one's order entry stands.
                return;
            }
            w.last = at;
        } else if self.waiting.len() >= MAX_WAITING {
            self.not_followed += 1;
            return;
        } else {
            self.waiting.insert(k.clone(), Waiting { client, name, resolver, first: at, last: at });
            *self.per_client.entry(client.ip()).or_default() += 1;
        }
        self.order.push_back((at, k));
        if self.order.len() > 4 * MAX_WAITING {
            let waiting = &self.waiting;
            self.order.retain(|(t, k)| waiting.get(k).is_some_and(|w| w.last == *t));
        }
    }

    /// An answer for `name` came to `client` from `resolver`.
    pub fn answered(&mut self, client: IpAddr, name: &str, resolver: IpAddr) {
        if self.answering.len() < MAX_ANSWERING {
            self.answering.insert(resolver);
        }
        if self.waiting.remove(&key(client, name)).is_some() {
            self.forget_one(client);
        }
    }

    /// `client` opened a connection to a server port at `at`: what it asked
    /// before of a resolver never seen answering got an answer the capture
    /// lacks (a filter or a route that shows one direction only), so none
    /// of those queries is a failed lookup.
    pub fn connected(&mut self, client: IpAddr, at: Timestamp) {
        if !self.per_client.contains_key(&client) {
            return;
        }
        let before = self.waiting.len();
        let answering = &self.answering;
        self.waiting.retain(|(ip, _), w| *ip != client || w.first > at || answering.contains(&w.resolver));
        let gone = before - self.waiting.len();
        self.answers_not_captured += gone as u64;
        for _ in 0..gone {
            self.forget_one(client);
        }
    }

    fn forget_one(&mut self, client: IpAddr) {
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }

    /// The queries whose last retry is `UNANSWERED_AFTER` before `now`,
    /// each as a lookup that got no answer, dated when first asked.
    pub fn given_up(&mut self, now: Timestamp, mut each: impl FnMut(SocketAddr, Lookup)) {
        while let Some((t, _)) = self.order.front() {
            if now.since(*t) < UNANSWERED_AFTER {
                return;
            }
            let Some((t, k)) = self.order.pop_front() else { return };
            if self.waiting.get(&k).is_some_and(|w| w.last == t) {
                if let Some(w) = self.waiting.remove(&k) {
                    self.forget_one(w.client.ip());
                    each(w.client, Lookup::unanswered(w.name, w.resolver, w.first));
                }
            }
        }
    }

    /// Names waiting now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::tests::{at, RESOLVER};

    fn client(port: u16) -> SocketAddr {
        SocketAddr::new("192.0.2.100".parse().unwrap(), port)
    }

    fn given_up(p: &mut Pending, now: i64) -> Vec<(SocketAddr, Lookup)> {
        let mut out = Vec::new();
        p.given_up(at(now), |c, l| out.push((c, l)));
        out
    }

    #[test]
    fn retries_are_one_query_given_up_after_the_last() {
        let mut p = Pending::default();
        // glibc: A and AAAA, then both again 5 s later, then it gives up.
        for t in [0, 5] {
            p.asked(client(33000), RESOLVER, "slow.lab.test".into(), at(t));
            p.asked(client(33000), RESOLVER, "Slow.Lab.Test".into(), at(t));
        }
        assert!(given_up(&mut p, 12).is_empty(), "7 s after the last retry: still waiting");
        let out = given_up(&mut p, 13);
        assert_eq!(out.len(), 1);
        let (c, l) = &out[0];
        assert_eq!((*c, l.name.as_str(), l.at, l.rcode), (client(33000), "slow.lab.test", at(0), None));
        assert_eq!(p.len(), 0);
        assert!(given_up(&mut p, 100).is_empty());
    }

    #[test]
    fn an_answer_from_any_resolver_ends_the_wait() {
        let mut p = Pending::default();
        p.asked(client(33000), RESOLVER, "db.lab.test".into(), at(0));
        p.asked(client(33001), "192.0.2.54".parse().unwrap(), "other.lab.test".into(), at(0));
        p.answered(client(1).ip(), "DB.lab.test", RESOLVER);
        let out = given_up(&mut p, 60);
        assert_eq!(out.iter().map(|(_, l)| l.name.as_str()).collect::<Vec<_>>(), ["other.lab.test"]);
    }

    #[test]
    fn a_client_that_connects_after_asking_got_its_answer() {
        let mut p = Pending::default();
        p.asked(client(33000), RESOLVER, "db.lab.test".into(), at(0));
        p.asked(SocketAddr::new("192.0.2.101".parse().unwrap(), 33000), RESOLVER, "db.lab.test".into(), at(0));
        p.connected(client(1).ip(), at(1));
        // A query after the connection is still waited on.
        p.asked(client(33000), RESOLVER, "later.lab.test".into(), at(2));
        p.connected(client(1).ip(), at(1));
        let out = given_up(&mut p, 60);
        let names: Vec<_> = out.iter().map(|(c, l)| (c.ip().to_string(), l.name.as_str())).collect();
        assert_eq!(names, [("192.0.2.101".to_owned(), "db.lab.test"), ("192.0.2.100".to_owned(), "later.lab.test")]);
        assert_eq!(p.answers_not_captured, 1);
        assert!(p.per_client.is_empty());
        // A resolver seen answering others was silent for real.
        p.answered(client(1).ip(), "other.lab.test", RESOLVER);
        p.asked(client(33000), RESOLVER, "db.lab.test".into(), at(100));
        p.connected(client(1).ip(), at(101));
        assert_eq!(given_up(&mut p, 200).len(), 1);
    }

    #[test]
    fn a_flood_of_names_is_bounded() {
        let mut p = Pending::default();
        for i in 0..(MAX_WAITING + 50) {
            p.asked(client(33000), RESOLVER, format!("n{i}.test"), at(0));
        }
        assert_eq!(p.len(), MAX_WAITING);
        assert_eq!(p.not_followed, 50);
        // Retries of one name keep the order list bounded too.
        for i in 0..(5 * MAX_WAITING) {
            p.asked(client(33000), RESOLVER, "n0.test".into(), at(i as i64 / 10_000));
        }
        assert!(p.order.len() <= 4 * MAX_WAITING + 1);
        assert_eq!(given_up(&mut p, 1000).len(), MAX_WAITING);
    }
}
