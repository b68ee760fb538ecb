//! DNS messages as pgreach reads them: the name a client asked for, and
//! what the answer gave it. Parsing is simple-dns's (it refuses compression
//! loops, names over 255 bytes and records past the message's end); only
//! questions about a name's addresses (A, AAAA, ANY) are kept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag, QTYPE, RCODE, TYPE};

use crate::time::Timestamp;

/// Addresses and aliases kept per answer.
const MAX_ANSWERS: usize = 8;
/// Names longer than this are cut (DNS allows 255 bytes).
const MAX_NAME_LEN: usize = 255;

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

    /// The name DNS tools print for it.
    pub fn mnemonic(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::ServFail => "SERVFAIL",
            Rcode::Refused => "REFUSED",
            Rcode::Other => "another rcode",
        }
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

/// One lookup, as attempts' evidence shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lookup {
    /// The name asked for, without the trailing dot.
    pub name: String,
    /// How the resolver answered; `None` when no answer came before the
    /// client gave up.
    pub rcode: Option<Rcode>,
    /// The addresses in the answer (A and AAAA), at most 8.
    pub addresses: Vec<IpAddr>,
    /// The CNAME chain, in answer order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The smallest TTL among the address records, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// When the answer was captured (for no answer: when the client asked).
    pub at: Timestamp,
    /// The resolver that answered (or was asked).
    pub resolver: IpAddr,
}

impl Lookup {
    /// Whether the name did not resolve: a failure rcode, or no answer.
    pub fn failed(&self) -> bool {
        self.rcode.is_none_or(Rcode::is_failure)
    }

    /// A query that no answer followed.
    pub fn unanswered(name: String, resolver: IpAddr, asked: Timestamp) -> Lookup {
        Lookup { name, rcode: None, addresses: Vec::new(), aliases: Vec::new(), ttl: None, at: asked, resolver }
    }
}

/// The message's first question, when it asks for a name's addresses.
fn address_question(packet: &Packet<'_>) -> Option<String> {
    let question = packet.questions.first()?;
    match question.qtype {
        QTYPE::TYPE(TYPE::A | TYPE::AAAA) | QTYPE::ANY => {}
        _ => return None,
    }
    let mut name = question.qname.to_string();
    name.truncate(MAX_NAME_LEN);
    Some(name)
}

/// The name a query asks addresses for; `None` for responses, other
/// questions and anything that does not parse.
pub fn parse_query(payload: &[u8]) -> Option<String> {
    let packet = Packet::parse(payload).ok()?;
    if packet.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    address_question(&packet)
}

/// Decodes a DNS response to a question about a name's addresses; `None`
/// for queries, other questions and anything that does not parse.
pub fn parse_response(payload: &[u8], resolver: IpAddr, at: Timestamp) -> Option<Lookup> {
    let packet = Packet::parse(payload).ok()?;
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    let mut lookup = Lookup {
        name: address_question(&packet)?,
        rcode: Some(Rcode::of(packet.rcode())),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A response for `name` with the given rcode and A records (ttl 60).
    pub fn response(name: &str, rcode: u8, addresses: &[[u8; 4]]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80 | rcode, 0, 1, 0, addresses.len() as u8, 0, 0, 0, 0];
        m.extend_from_slice(&labels(name));
        m.extend_from_slice(&[0, 1, 0, 1]);
        for a in addresses {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            m.extend_from_slice(a);
        }
        m
    }

    /// `name` as DNS labels, with the closing empty label.
    fn labels(name: &str) -> Vec<u8> {
        let mut m = Vec::new();
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m
    }

    pub fn at(s: i64) -> Timestamp {
        Timestamp::from_secs_nanos(1_700_000_000 + s, 0)
    }

    pub const RESOLVER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53));

    fn parse(m: &[u8]) -> Option<Lookup> {
        parse_response(m, RESOLVER, at(0))
    }

    #[test]
    fn answers_failures_and_queries() {
        let ok = parse(&response("db.lab.test", 0, &[[192, 0, 2, 1]])).unwrap();
        assert_eq!(ok.name, "db.lab.test");
        assert_eq!(ok.rcode, Some(Rcode::NoError));
        assert_eq!(ok.addresses, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(ok.ttl, Some(60));
        assert!(!ok.failed());
        let missing = parse(&response("missing.lab.test", 3, &[])).unwrap();
        assert_eq!(missing.rcode, Some(Rcode::NxDomain));
        assert!(missing.addresses.is_empty() && missing.failed());
        // A query is not an answer, and an answer is not a query.
        let mut query = response("db.lab.test", 0, &[]);
        query[2] = 0x01;
        assert!(parse(&query).is_none());
        assert_eq!(parse_query(&query).as_deref(), Some("db.lab.test"));
        assert_eq!(parse_query(&response("db.lab.test", 0, &[])), None);
        // A reverse lookup (PTR) is not about a server's address.
        let mut ptr = response("1.2.0.192.in-addr.arpa", 3, &[]);
        let qtype = ptr.len() - 3;
        ptr[qtype] = 12;
        assert!(parse(&ptr).is_none());
        assert!(Lookup::unanswered("db.lab.test".into(), RESOLVER, at(0)).failed());
    }

    #[test]
    fn truncated_messages_are_not_read() {
        let good = response("db.lab.test", 0, &[[192, 0, 2, 1], [192, 0, 2, 2]]);
        assert_eq!(parse(&good).unwrap().addresses.len(), 2);
        // Cut anywhere, a message promising two answers parses as nothing.
        for len in 0..good.len() {
            assert!(parse(&good[..len]).is_none(), "cut at {len}");
        }
        // An A record whose length says 4 but that holds 3.
        let mut short = response("db.lab.test", 0, &[[192, 0, 2, 1]]);
        short.pop();
        assert!(parse(&short).is_none());
        // Counts that promise more records than there are bytes.
        let mut lying = good.clone();
        lying[7] = 0xff;
        assert!(parse(&lying).is_none());
    }

    #[test]
    fn compression_loops_are_refused() {
        // The question's name is a pointer to itself.
        let mut looped = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse(&looped).is_none());
        // Two pointers to each other: the answer's name to the CNAME's data,
        // the CNAME's data back to the answer's name.
        let mut pair = response("db.lab.test", 0, &[]);
        pair[7] = 1;
        let owner = pair.len();
        pair.extend_from_slice(&[0xc0, (owner + 12) as u8, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, owner as u8]);
        assert!(parse(&pair).is_none());
        // A pointer past the end of the message.
        let mut beyond = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        beyond.extend_from_slice(&[0xc0, 0xff, 0, 1, 0, 1]);
        assert!(parse(&beyond).is_none());
    }

    #[test]
    fn oversized_names_are_refused_or_cut() {
        // 5 labels of 63 bytes: 320 bytes, over DNS's 255.
        let long = vec!["x".repeat(63); 5].join(".");
        assert!(parse(&response(&long, 0, &[[192, 0, 2, 1]])).is_none());
        // A label longer than 63 bytes (its length byte reads as a pointer or a reserved type).
        assert!(parse(&response(&"y".repeat(64), 0, &[])).is_none());
        // Within the limit: kept whole, never over 255 bytes.
        let fits = vec!["z".repeat(63); 3].join(".");
        let got = parse(&response(&fits, 0, &[])).unwrap();
        assert_eq!(got.name, fits);
        assert!(got.name.len() <= MAX_NAME_LEN);
    }

    #[test]
    fn many_records_keep_at_most_eight_addresses() {
        let addresses: Vec<[u8; 4]> = (1..=40).map(|i| [192, 0, 2, i]).collect();
        let got = parse(&response("db.lab.test", 0, &addresses)).unwrap();
        assert_eq!(got.addresses.len(), MAX_ANSWERS);
    }

    #[test]
    fn every_single_byte_change_is_safe() {
        let good = response("db.lab.test", 0, &[[192, 0, 2, 1], [192, 0, 2, 2]]);
        for i in 0..good.len() {
            for v in [0u8, 0x3f, 0x40, 0x80, 0xc0, 0xff] {
                let mut m = good.clone();
                m[i] = v;
                if let Some(l) = parse(&m) {
                    assert!(l.name.len() <= MAX_NAME_LEN && l.addresses.len() <= MAX_ANSWERS);
                }
                let _ = parse_query(&m);
            }
        }
    }
}
