//! What the lookups seen so far say: each client's recent answers (to tie
//! an attempt to the lookup that gave its address), the lookups that failed
//! (kept until the capture ends, when it is known which names are database
//! names) and the names clients used to reach a server port. All bounded:
//! a few lookups per client, a bounded number of clients and failures.

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use foldhash::HashMap;

use super::message::Lookup;
use crate::time::Timestamp;

/// Lookups remembered per client: the latest ones.
const LOOKUPS_PER_CLIENT: usize = 8;
/// Clients whose lookups are remembered; past it, the least recent goes.
const MAX_CLIENTS: usize = 10_000;
/// How long after a lookup an attempt is tied to it when the answer's TTL
/// is shorter (resolvers and libpq keep an address a little longer).
const MIN_WINDOW_SECS: u32 = 30;
/// Failed lookups kept until the capture ends, when it is known which names
/// are database names.
const MAX_FAILED: usize = 10_000;
/// Failed lookups of one name by one client within this many seconds are one
/// failure (a resolver retried, A and AAAA asked apart, search domains).
const FAILURE_BURST_SECS: u64 = 5;
/// Database names remembered (names behind attempts to a server port).
const MAX_DB_NAMES: usize = 1000;

/// The recent lookups of each client (bounded).
#[derive(Debug, Default)]
pub struct Lookups {
    by_client: HashMap<IpAddr, VecDeque<Lookup>>,
    /// Clients in the order they last looked something up, for eviction.
    order: VecDeque<(Timestamp, IpAddr)>,
}

impl Lookups {
    /// Remembers an answer the client got.
    pub fn add(&mut self, client: IpAddr, lookup: Lookup) {
        if !self.by_client.contains_key(&client) && self.by_client.len() >= MAX_CLIENTS {
            self.evict_one();
        }
        self.order.push_back((lookup.at, client));
        let recent = self.by_client.entry(client).or_default();
        if recent.len() == LOOKUPS_PER_CLIENT {
            recent.pop_front();
        }
        recent.push_back(lookup);
        // The order list holds one entry per lookup; keep it near the map's size.
        if self.order.len() > 2 * MAX_CLIENTS * LOOKUPS_PER_CLIENT {
            self.order.retain(|(at, c)| self.by_client.get(c).and_then(|l| l.back()).is_some_and(|l| l.at == *at));
        }
    }

    /// Forgets the client whose latest lookup is the oldest.
    fn evict_one(&mut self) {
        while let Some((at, client)) = self.order.pop_front() {
            let latest = self.by_client.get(&client).and_then(|l| l.back()).map(|l| l.at);
            if latest == Some(at) {
                self.by_client.remove(&client);
                return;
            }
        }
    }

    /// The lookup that gave `server` to `client` shortly before `at`: the
    /// latest one whose answer holds the address, within its TTL (or 30 s).
    pub fn behind(&self, client: IpAddr, server: IpAddr, at: Timestamp) -> Option<&Lookup> {
        self.by_client.get(&client)?.iter().rev().find(|l| {
            let window = u64::from(l.ttl.unwrap_or(0).max(MIN_WINDOW_SECS));
            l.at <= at && at.since(l.at).as_secs() <= window && l.addresses.contains(&server)
        })
    }
}

/// Lookups that failed, by the client's address and port, kept until the
/// capture ends (bounded; a burst of retries is one).
#[derive(Debug, Default)]
pub struct FailedLookups {
    kept: Vec<(SocketAddr, Lookup)>,
    /// Failed lookups beyond the bound, not kept.
    pub dropped: u64,
}

impl FailedLookups {
    pub fn add(&mut self, client: SocketAddr, lookup: Lookup) {
        let repeat = self.kept.iter().rev().take(64).any(|(c, l)| {
            c.ip() == client.ip() && l.name == lookup.name && lookup.at.since(l.at).as_secs() < FAILURE_BURST_SECS
        });
        if repeat {
            return;
        }
        if self.kept.len() < MAX_FAILED {
            self.kept.push((client, lookup));
        } else {
            self.dropped += 1;
        }
    }

    /// The failures of database names: names in `used` (behind attempts to a
    /// server port) or matching `patterns` (`db.example.com`, `*.example.com`);
    /// when neither names any, every failure.
    pub fn of_database_names(self, used: &DbNames, patterns: &[String]) -> Vec<(SocketAddr, Lookup)> {
        let known = !used.names.is_empty() || !patterns.is_empty();
        self.kept
            .into_iter()
            .filter(|(_, l)| {
                !known
                    || used.names.contains(&l.name.to_ascii_lowercase())
                    || patterns.iter().any(|p| matches(p, &l.name))
            })
            .collect()
    }
}

/// `db.example.com` matches itself; `*.example.com` any name under it.
fn matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.trim_end_matches('.').to_ascii_lowercase(), name.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(domain) => name.ends_with(&format!(".{domain}")),
        None => name == pattern,
    }
}

/// The names clients used to reach a server port (bounded).
#[derive(Debug, Default)]
pub struct DbNames {
    names: BTreeSet<String>,
}

impl DbNames {
    /// Names are kept in lower case: DNS names are compared without it.
    pub fn add(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        if self.names.len() < MAX_DB_NAMES && !self.names.contains(&name) {
            self.names.insert(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::parse_response;
    use crate::dns::message::tests::{at, response, RESOLVER};
    use std::net::Ipv4Addr;

    #[test]
    fn failures_of_database_names_only_once_a_burst() {
        let client: SocketAddr = "192.0.2.100:33000".parse().unwrap();
        let failed = |name: &str, t: i64| parse_response(&response(name, 3, &[]), RESOLVER, at(t)).unwrap();
        let mut f = FailedLookups::default();
        f.add(client, failed("missing.lab.test", 0));
        f.add(client, failed("missing.lab.test", 1));
        f.add(client, failed("ads.example.org", 2));
        f.add(client, failed("missing.lab.test", 10));
        let mut used = DbNames::default();
        let all = |f: &FailedLookups| FailedLookups { kept: f.kept.clone(), dropped: 0 };
        assert_eq!(all(&f).of_database_names(&used, &[]).len(), 3, "no database name known: every failure");
        let under = all(&f).of_database_names(&used, &["*.lab.test".to_owned()]);
        assert_eq!(under.len(), 2, "the burst is one, ten seconds later another");
        used.add("ads.example.org");
        assert_eq!(f.of_database_names(&used, &[]).len(), 1);
        assert!(matches("*.lab.test", "Missing.Lab.Test") && !matches("*.lab.test", "lab.test"));
    }

    #[test]
    fn an_attempt_is_tied_to_the_lookup_that_gave_its_address() {
        let client: IpAddr = "192.0.2.100".parse().unwrap();
        let server: IpAddr = "192.0.2.77".parse().unwrap();
        let mut lookups = Lookups::default();
        lookups
            .add(client, parse_response(&response("stale.lab.test", 0, &[[192, 0, 2, 77]]), RESOLVER, at(0)).unwrap());
        assert_eq!(lookups.behind(client, server, at(1)).map(|l| l.name.as_str()), Some("stale.lab.test"));
        assert!(lookups.behind(client, server, at(-1)).is_none(), "before the lookup");
        assert!(lookups.behind(client, server, at(61)).is_none(), "past its TTL");
        assert!(lookups.behind(client, "192.0.2.1".parse().unwrap(), at(1)).is_none(), "another address");
        assert!(lookups.behind("192.0.2.101".parse().unwrap(), server, at(1)).is_none(), "another client");
        // Bounded: many clients evict the least recent.
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            let c = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
            lookups.add(c, parse_response(&response("x.test", 0, &[[192, 0, 2, 1]]), RESOLVER, at(2)).unwrap());
        }
        assert!(lookups.by_client.len() <= MAX_CLIENTS);
        assert!(lookups.behind(client, server, at(3)).is_none(), "the oldest client went first");
    }
}
