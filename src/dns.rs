//! DNS beside the attempts: the answers clients got just before they
//! connected, so that an attempt to the wrong place names the lookup that
//! sent it there (a stale record, a name that did not resolve). Responses
//! over UDP are decoded with simple-dns (which refuses compression loops and
//! oversized names); only what a report needs is kept, and it is bounded:
//! a few lookups per client, a bounded number of clients.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;
use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag, RCODE};

use crate::time::Timestamp;

/// Addresses and aliases kept per answer.
const MAX_ANSWERS: usize = 8;
/// Lookups remembered per client: the latest ones.
const LOOKUPS_PER_CLIENT: usize = 8;
/// Clients whose lookups are remembered; past it, the least recent goes.
const MAX_CLIENTS: usize = 10_000;
/// How long after a lookup an attempt is tied to it when the answer's TTL
/// is shorter (resolvers and libpq keep an address a little longer).
const MIN_WINDOW_SECS: u32 = 30;
/// Names longer than this are cut (DNS allows 255 bytes).
const MAX_NAME_LEN: usize = 255;
/// Failed lookups kept until the capture ends, when it is known which names
/// are database names.
const MAX_FAILED: usize = 10_000;
/// Failed lookups of one name by one client within this many seconds are one
/// failure (a resolver retried, A and AAAA asked apart, search domains).
const FAILURE_BURST_SECS: u64 = 5;
/// Database names remembered (names behind attempts to a server port).
const MAX_DB_NAMES: usize = 1000;

/// How a lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rcode {
    NoError,
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// SERVFAIL: the resolver could not answer.
    ServFail,
    Refused,
    Other,
}

impl Rcode {
    /// Whether the name could not be resolved at all (an empty NOERROR, an
    /// IPv4-only name asked for AAAA, is not a failure).
    pub fn is_failure(self) -> bool {
        matches!(self, Rcode::NxDomain | Rcode::ServFail | Rcode::Refused)
    }

    fn of(r: RCODE) -> Rcode {
        match r {
            RCODE::NoError => Rcode::NoError,
            RCODE::NameError => Rcode::NxDomain,
            RCODE::ServerFailure => Rcode::ServFail,
            RCODE::Refused => Rcode::Refused,
            _ => Rcode::Other,
        }
    }
}

/// One answered lookup, as attempts' evidence shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lookup {
    /// The name asked for, without the trailing dot.
    pub name: String,
    pub rcode: Rcode,
    /// The addresses in the answer (A and AAAA), at most 8.
    pub addresses: Vec<IpAddr>,
    /// The CNAME chain, in answer order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The smallest TTL among the address records, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// When the answer was captured.
    pub at: Timestamp,
    /// The resolver that answered.
    pub resolver: IpAddr,
}

/// Decodes a DNS response to a question about a name (A or AAAA); `None`
/// for queries, other questions and anything that does not parse.
pub fn parse_response(payload: &[u8], resolver: IpAddr, at: Timestamp) -> Option<Lookup> {
    let packet = Packet::parse(payload).ok()?;
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    let question = packet.questions.first()?;
    let mut name = question.qname.to_string();
    name.truncate(MAX_NAME_LEN);
    let mut lookup = Lookup {
        name,
        rcode: Rcode::of(packet.rcode()),
        addresses: Vec::new(),
        aliases: Vec::new(),
        ttl: None,
        at,
        resolver,
    };
    for record in &packet.answers {
        let address = match &record.rdata {
            RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
            RData::AAAA(a) => Some(IpAddr::V6(Ipv6Addr::from(a.address))),
            RData::CNAME(c) if lookup.aliases.len() < MAX_ANSWERS => {
                let mut alias = c.0.to_string();
                alias.truncate(MAX_NAME_LEN);
                lookup.aliases.push(alias);
                None
            }
            _ => None,
        };
        if let Some(address) = address.filter(|_| lookup.addresses.len() < MAX_ANSWERS) {
            lookup.addresses.push(address);
            lookup.ttl = Some(lookup.ttl.map_or(record.ttl, |t| t.min(record.ttl)));
        }
    }
    Some(lookup)
}

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
            .filter(|(_, l)| !known || used.names.contains(&l.name) || patterns.iter().any(|p| matches(p, &l.name)))
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
    pub fn add(&mut self, name: &str) {
        if self.names.len() < MAX_DB_NAMES && !self.names.contains(name) {
            self.names.insert(name.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response for `name` with the given rcode and A records (ttl 60).
    fn response(name: &str, rcode: u8, addresses: &[[u8; 4]]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80 | rcode, 0, 1, 0, addresses.len() as u8, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        for a in addresses {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            m.extend_from_slice(a);
        }
        m
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_secs_nanos(1_700_000_000 + s, 0)
    }

    const RESOLVER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53));

    #[test]
    fn answers_and_failures() {
        let ok = parse_response(&response("db.lab.test", 0, &[[192, 0, 2, 1]]), RESOLVER, at(0)).unwrap();
        assert_eq!(ok.name, "db.lab.test");
        assert_eq!(ok.rcode, Rcode::NoError);
        assert_eq!(ok.addresses, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(ok.ttl, Some(60));
        let missing = parse_response(&response("missing.lab.test", 3, &[]), RESOLVER, at(0)).unwrap();
        assert_eq!(missing.rcode, Rcode::NxDomain);
        assert!(missing.addresses.is_empty());
        // A query is not an answer.
        let mut query = response("db.lab.test", 0, &[]);
        query[2] = 0x01;
        assert!(parse_response(&query, RESOLVER, at(0)).is_none());
    }

    #[test]
    fn hostile_messages_never_panic() {
        let good = response("db.lab.test", 0, &[[192, 0, 2, 1], [192, 0, 2, 2]]);
        for len in 0..good.len() {
            let _ = parse_response(&good[..len], RESOLVER, at(0));
        }
        // A name that points at itself: a compression loop.
        let mut looped = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_response(&looped, RESOLVER, at(0)).is_none());
        // Counts that promise more records than there are bytes.
        let mut lying = good.clone();
        lying[7] = 0xff;
        let _ = parse_response(&lying, RESOLVER, at(0));
        // Every single-byte change of a good message.
        for i in 0..good.len() {
            for v in [0u8, 0x3f, 0xc0, 0xff] {
                let mut m = good.clone();
                m[i] = v;
                let _ = parse_response(&m, RESOLVER, at(0));
            }
        }
    }

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
