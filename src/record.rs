//! What the engine says about one connection attempt once it has ended:
//! its outcome and the evidence for it. These are the stable output types
//! that every report format reads; their serde names are documented in the README.

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::decode::Unreachable;
use crate::dns::Lookup;
use crate::outcome::{AnswerKind, GaveUp, Outcome, SessionEnd, TcpOutcome, UnreachableKind};
use crate::pg::PgSummary;
use crate::time::Timestamp;

/// Who answered a SYN with a refusal or an error, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// `rst` or `icmp`.
    pub kind: AnswerKind,
    /// The address the answer came from: the server, or a firewall or router.
    pub from: IpAddr,
    /// IPv4 TTL / IPv6 hop limit of the answer as captured.
    pub ttl: u8,
    /// ICMP type and code, for ICMP answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// What the ICMP message says: `port`, `net`, `host`, `admin_prohibited`, `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<UnreachableKind>,
    /// Milliseconds from the first SYN to the answer.
    pub after_ms: f64,
}

impl From<Unreachable> for UnreachableKind {
    fn from(u: Unreachable) -> Self {
        match u {
            Unreachable::Port => UnreachableKind::Port,
            Unreachable::Net => UnreachableKind::Net,
            Unreachable::Host => UnreachableKind::Host,
            Unreachable::AdminProhibited => UnreachableKind::AdminProhibited,
            Unreachable::Other => UnreachableKind::Other,
        }
    }
}

/// The client's SYNs of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynEvidence {
    /// SYNs sent, the first included.
    pub count: u32,
    /// Milliseconds from the first SYN to each SYN (the first is 0); at most
    /// the first 16 are kept.
    pub at_ms: Vec<f64>,
}

/// Packets and payload bytes each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Traffic {
    pub client_packets: u64,
    pub server_packets: u64,
    pub client_bytes: u64,
    pub server_bytes: u64,
}

/// Facts worth knowing that do not change the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Note {
    /// The SYN-ACK was not captured; the client's ACK shows the handshake completed.
    HandshakeInferred,
    /// A RST whose acknowledgment number did not match the SYN (the client ignores such a RST).
    IgnoredRstBadAck,
    /// A SYN-ACK that did not acknowledge this SYN.
    IgnoredSynAckBadAck,
    /// The client kept retransmitting after an ICMP error (some stacks ignore them).
    RetransmittedAfterIcmp,
    /// The flow table was full; this attempt was ended early to make room.
    Evicted,
    /// A new SYN reused the ports while this connection still looked open.
    Superseded,
    /// The SYN-ACK was retransmitted (the client's ACK was lost or late).
    SynAckRetransmitted,
    /// A live capture dropped packets while this attempt was in progress: a
    /// lost packet could have changed its outcome.
    CaptureDropsDuring,
}

/// What the pooler's server leg showed while a client waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerLeg {
    /// The PostgreSQL server the pooler connected to.
    pub server: SocketAddr,
    /// The pooler's attempts to it during the client's attempt, and how they ended.
    pub attempts: u32,
    pub outcome: Outcome,
}

/// One connection attempt and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// Order in which the engine first saw the attempt.
    pub id: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The outcome, all told.
    pub outcome: Outcome,
    /// The outcome at the TCP level.
    pub tcp_outcome: TcpOutcome,
    /// The first and last packet of the attempt.
    pub start: Timestamp,
    pub end: Timestamp,
    /// The client's SYNs; absent for midstream connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn: Option<SynEvidence>,
    /// Milliseconds from the first SYN to the first SYN-ACK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_ms: Option<f64>,
    /// TTL / hop limit of the client's first SYN: how far the capture point is from the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ttl: Option<u8>,
    /// TTL / hop limit of the server's SYN-ACK, to compare with a refusal's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_ttl: Option<u8>,
    /// The refusal or ICMP error that answered the SYN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// For timeouts: why the attempt is over, and how long the client waited
    /// (first SYN to the last SYN or RST, or to the capture's end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<GaveUp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<f64>,
    /// For established and midstream connections: how they ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_end: Option<SessionEnd>,
    pub traffic: Traffic,
    /// What PostgreSQL said, for established connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg: Option<Box<PgSummary>>,
    /// The DNS answer that gave the client this server's address shortly
    /// before, when the capture holds it: the name the client asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Box<Lookup>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// A pooler's own connection to PostgreSQL (seen on the pooler's host),
    /// not a client's: counted apart.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pooler_leg: bool,
    /// For a client whose login through a pooler failed: what the pooler's
    /// connections to PostgreSQL met meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_leg: Option<ServerLeg>,
    /// The client's initial sequence number: NAT keeps it, so it follows
    /// the attempt from one capture point to the next. Not written: it
    /// tells a reader nothing.
    #[serde(skip)]
    pub client_isn: Option<u32>,
    /// Where the attempt was seen, when it was seen at several capture
    /// points or twice in one capture through NAT.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub path: Option<Box<PathEvidence>>,
}

/// An attempt followed across capture points (or across NAT inside one
/// capture): what each point saw, where the fault lies, what NAT did.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PathEvidence {
    /// One entry per point that saw the attempt, from the client's side to the server's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seen_at: Vec<Sighting>,
    /// Where packets were lost or forged, when the points disagree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The attempt's address pairs differ between points (or copies): NAT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<Nat>,
}

/// What one capture point saw of an attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sighting {
    pub point: String,
    /// The addresses as this point saw them (NAT may have changed them).
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The outcome as this point alone would judge it.
    pub outcome: Outcome,
    pub syns: u32,
    /// What this point saw answer the SYN, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<SeenAnswer>,
    /// First and last packet here, on the first point's clock.
    pub first: Timestamp,
    pub last: Timestamp,
    /// TTL / hop limit of the first SYN here, and of the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_ttl: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_ttl: Option<u8>,
    /// Payload bytes from the client and from the server seen here.
    pub client_bytes: u64,
    pub server_bytes: u64,
}

/// What answered a SYN at one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeenAnswer {
    SynAck,
    Rst,
    Icmp,
}

/// Where an attempt's packets went missing (or were made up), between
/// named capture points.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    pub kind: LocationKind,
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    /// The SYNs reached `from`, the point nearest the server, and nothing answered there.
    DroppedAt,
    /// The SYNs left `from` and never reached `to`.
    LostBetween,
    /// The answer left `from` toward the client and never reached `to`.
    AnswerLostBetween,
    /// A RST or ICMP error seen at `from` that `to`, nearer the server, never
    /// saw: a device between them sent it.
    ForgedBetween,
}

/// The address pairs one attempt had at different points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nat {
    pub kind: NatKind,
    pub pairs: Vec<NatPair>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NatKind {
    /// The client's address or port was rewritten (SNAT, masquerading).
    Source,
    /// The server's address or port was rewritten (DNAT, a published port).
    Destination,
    Both,
}

impl NatKind {
    /// What rewrote the pairs `a` into `b`, if anything did.
    pub fn between(a: (SocketAddr, SocketAddr), b: (SocketAddr, SocketAddr)) -> Option<NatKind> {
        match (a.0 != b.0, a.1 != b.1) {
            (true, true) => Some(NatKind::Both),
            (true, false) => Some(NatKind::Source),
            (false, true) => Some(NatKind::Destination),
            (false, false) => None,
        }
    }

    /// Both rewrites, when two pairs show one each.
    pub fn with(self, other: NatKind) -> NatKind {
        if self == other {
            self
        } else {
            NatKind::Both
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatPair {
    pub point: String,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

impl AttemptRecord {
    /// An attempt with its addresses, outcome and times, and no evidence yet.
    pub fn bare(
        id: u64,
        (client, server): (SocketAddr, SocketAddr),
        (outcome, tcp_outcome): (Outcome, TcpOutcome),
        (start, end): (Timestamp, Timestamp),
    ) -> AttemptRecord {
        AttemptRecord {
            id,
            client,
            server,
            outcome,
            tcp_outcome,
            start,
            end,
            syn: None,
            handshake_ms: None,
            client_ttl: None,
            server_ttl: None,
            answer: None,
            gave_up: None,
            wait_ms: None,
            session_end: None,
            traffic: Traffic::default(),
            pg: None,
            dns: None,
            notes: Vec::new(),
            pooler_leg: false,
            server_leg: None,
            client_isn: None,
            path: None,
        }
    }

    /// A lookup of the server's name that failed: no SYN was ever sent.
    pub fn dns_failed(id: u64, client: SocketAddr, lookup: Lookup) -> AttemptRecord {
        let ends = (Outcome::DnsFailed, TcpOutcome::NotAttempted);
        let mut record =
            AttemptRecord::bare(id, (client, SocketAddr::new(lookup.resolver, 53)), ends, (lookup.at, lookup.at));
        record.dns = Some(Box::new(lookup));
        record
    }

    /// The Community ID v1 of the attempt's TCP flow (seed 0), the identifier
    /// Zeek and Suricata log for the same connection, so their logs join with
    /// pgreach's: SHA-1 over the seed, the two endpoints ordered so that both
    /// directions hash alike, and the protocol; base64, prefixed `1:`.
    pub fn community_id(&self) -> String {
        const TCP: u8 = 6;
        let (a, b) = (self.client, self.server);
        let (first, second) = if (a.ip(), a.port()) <= (b.ip(), b.port()) { (a, b) } else { (b, a) };
        let mut hash = Sha1::new();
        hash.update(0u16.to_be_bytes());
        for ip in [first.ip(), second.ip()] {
            match ip {
                IpAddr::V4(v4) => hash.update(v4.octets()),
                IpAddr::V6(v6) => hash.update(v6.octets()),
            }
        }
        hash.update([TCP, 0]);
        hash.update(first.port().to_be_bytes());
        hash.update(second.port().to_be_bytes());
        format!("1:{}", base64::engine::general_purpose::STANDARD.encode(hash.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Outcome, TcpOutcome};

    fn attempt(client: &str, server: &str) -> AttemptRecord {
        let ends = (Outcome::Refused, TcpOutcome::Refused);
        AttemptRecord::bare(0, (client.parse().unwrap(), server.parse().unwrap()), ends, Default::default())
    }

    #[test]
    fn community_id_matches_the_spec_vector_both_ways() {
        // The Community ID spec's TCP example: 1.2.3.4:1122 -> 5.6.7.8:3344, seed 0.
        let expected = "1:wCb3OG7yAFWelaUydu0D+125CLM=";
        assert_eq!(attempt("1.2.3.4:1122", "5.6.7.8:3344").community_id(), expected);
        assert_eq!(attempt("5.6.7.8:3344", "1.2.3.4:1122").community_id(), expected);
    }
}
