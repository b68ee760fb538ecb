//! DNS beside the attempts: the answers clients got just before they
//! connected, so that an attempt to the wrong place names the lookup that
//! sent it there (a stale record), and the lookups that failed, so that a
//! database name that did not resolve is reported though no SYN followed.
//! Messages over UDP and over TCP (port 53) feed the same tables; all of
//! them bounded.

mod lookups;
mod message;
mod pending;
mod tcp;

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

pub use message::{parse_query, parse_response, Lookup, Rcode};
pub use pending::UNANSWERED_AFTER;

use crate::decode::{TcpSegment, UdpDatagram};
use crate::time::Timestamp;
use lookups::{DbNames, FailedLookups, Lookups};
use pending::Pending;
use tcp::TcpStreams;

/// Where resolvers listen.
pub const DNS_PORT: u16 = 53;

/// Counts of what the DNS traffic held, for the engine's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DnsCounts {
    /// DNS answers (A/AAAA questions) seen, over UDP and TCP, to tie attempts
    /// to the names behind them.
    pub dns_answers: u64,
    /// Names asked that no answer followed within 8 s of the last query: failed lookups.
    pub dns_unanswered: u64,
    /// Failed lookups beyond the bound kept for `dns_failed` (10,000), not reported.
    pub dns_failures_not_kept: u64,
    /// DNS queries not followed because 10,000 names were waiting for answers.
    pub dns_queries_not_followed: u64,
    /// Queries with no answer in the capture from clients that connected
    /// to a server port after asking: the answer came but was not captured
    /// (a capture of one direction only), so they are not failed lookups.
    pub dns_answers_not_captured: u64,
    /// DNS-over-TCP messages not read: a gap in the stream, a message over
    /// 16 KiB, a connection pushed out by 256 newer ones.
    pub dns_tcp_skipped: u64,
}

/// Everything the DNS traffic says about the names behind attempts.
#[derive(Debug, Default)]
pub struct Dns {
    lookups: Lookups,
    failed: FailedLookups,
    db_names: DbNames,
    pending: Pending,
    tcp: TcpStreams,
    answers: u64,
    unanswered: u64,
}

impl Dns {
    /// Whether a TCP segment belongs to a DNS connection.
    pub fn carries(seg: &TcpSegment<'_>) -> bool {
        seg.src.port() == DNS_PORT || seg.dst.port() == DNS_PORT
    }

    /// A UDP datagram: a query to port 53 or an answer from it.
    pub fn on_udp(&mut self, datagram: &UdpDatagram<'_>, at: Timestamp) {
        self.on_message(datagram.payload, datagram.src, datagram.dst, at);
    }

    /// A segment of a DNS connection: each message it completes.
    pub fn on_tcp(&mut self, seg: &TcpSegment<'_>, at: Timestamp) {
        let mut messages = Vec::new();
        self.tcp.on_segment(seg, at, |m| messages.push(m.to_vec()));
        for m in messages {
            self.on_message(&m, seg.src, seg.dst, at);
        }
    }

    fn on_message(&mut self, payload: &[u8], from: SocketAddr, to: SocketAddr, at: Timestamp) {
        if from.port() == DNS_PORT {
            if let Some(lookup) = parse_response(payload, from.ip(), at) {
                self.answers += 1;
                self.pending.answered(to.ip(), &lookup.name, from.ip());
                // An empty answer (an IPv4-only name asked for AAAA) ties no attempt.
                if lookup.failed() {
                    self.failed.add(to, lookup);
                } else if !lookup.addresses.is_empty() {
                    self.lookups.add(to.ip(), lookup);
                }
                return;
            }
        }
        if to.port() == DNS_PORT {
            if let Some(name) = parse_query(payload) {
                self.pending.asked(from, to.ip(), name, at);
            }
        }
    }

    /// The clock moved to `now`: queries waiting too long are failures.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let (failed, unanswered) = (&mut self.failed, &mut self.unanswered);
        self.pending.given_up(now, |client, lookup| {
            *unanswered += 1;
            failed.add(client, lookup);
        });
    }

    /// `client` sent a SYN to a server port: its earlier queries were answered.
    pub fn client_connected(&mut self, client: IpAddr, at: Timestamp) {
        self.pending.connected(client, at);
    }

    /// The lookup that gave `server` to `client` shortly before `at`.
    pub fn behind(&self, client: IpAddr, server: IpAddr, at: Timestamp) -> Option<&Lookup> {
        self.lookups.behind(client, server, at)
    }

    /// A name clients used to reach a server port: a database name.
    pub fn used(&mut self, name: &str) {
        self.db_names.add(name);
    }

    /// At the capture's end (`now`): the failed lookups of database names,
    /// names used or matching `patterns`; when neither names any, every
    /// failure. Taken once.
    pub fn take_failures(&mut self, patterns: &[String], now: Timestamp) -> Vec<(SocketAddr, Lookup)> {
        self.handle_timeout(now);
        let failed = std::mem::take(&mut self.failed);
        self.failed.dropped = failed.dropped;
        failed.of_database_names(&self.db_names, patterns)
    }

    pub fn counts(&self) -> DnsCounts {
        DnsCounts {
            dns_answers: self.answers,
            dns_unanswered: self.unanswered,
            dns_failures_not_kept: self.failed.dropped,
            dns_queries_not_followed: self.pending.not_followed,
            dns_answers_not_captured: self.pending.answers_not_captured,
            dns_tcp_skipped: self.tcp.skipped,
        }
    }
}
