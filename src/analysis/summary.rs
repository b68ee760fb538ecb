//! Aggregating finished attempts into what reports show: totals, one
//! summary per client, and (when asked) the attempts themselves. Every
//! collection here is bounded, so a capture of any size fits in memory.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use foldhash::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use std::time::Duration;

use super::counts::OutcomeCounts;
use super::identity::{Identity, Logins};
use super::median::median;
use super::retry::PreferRetries;
use super::timeline::{Timeline, Window};
use crate::outcome::{AnswerKind, GaveUp, Outcome, SessionEnd, TcpOutcome};
use crate::pg::pooler::PoolerAnswer;
use crate::points::words::SynCounts;
use crate::record::{AttemptRecord, Location};
use crate::time::Timestamp;
use crate::tls::{Decryption, LoginShape};

/// Handshake samples kept per client for its median.
const MAX_HANDSHAKE_SAMPLES: usize = 4096;
/// Distinct users, databases or applications kept per client.
const MAX_NAMES: usize = 8;
/// Distinct server messages kept per outcome.
const MAX_MESSAGES: usize = 5;
/// Distinct answering (kind, address, TTL) kept per outcome, and servers
/// whose SYN-ACK TTLs are kept.
const MAX_SOURCES: usize = 16;
/// Failing logins told apart per client (a host runs a few applications).
const MAX_FAILING_LOGINS: usize = 16;
/// Failed attempts kept for "the latest failures".
const MAX_RECENT_FAILURES: usize = 5;
/// Timeout samples kept per outcome.
const MAX_SAMPLES: usize = 4096;

/// What the attempts of one outcome had in common, for the diagnosis.
#[derive(Debug, Clone, Default)]
pub struct OutcomeDetail {
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    /// Who answered the SYN (refusals, ICMP errors): kind, address, TTL → attempts.
    pub answers: BTreeMap<(AnswerKind, IpAddr, u8, Option<u8>), u64>,
    /// TTLs of the clients' SYNs as captured → attempts.
    pub client_ttls: BTreeMap<u8, u64>,
    /// Timeouts: SYNs per attempt → attempts, and the last SYN's time after the first.
    pub syn_counts: BTreeMap<u32, u64>,
    pub last_syn_ms: Vec<f64>,
    pub gave_up: BTreeMap<GaveUp, u64>,
    pub users: NameSet,
    pub databases: NameSet,
    pub applications: NameSet,
    /// The DNS names behind these attempts and the addresses they gave.
    pub dns_names: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Attempts no DNS answer in the capture explains.
    pub without_dns: u64,
    /// Unfinished logins: how far they got → attempts (a handful of phases).
    pub stopped_at: BTreeMap<String, u64>,
    /// How long each stayed there, in milliseconds (bounded sample).
    pub stopped_for_ms: Vec<f64>,
    /// Attempts a pooler answered itself, by pooler and setting (a handful).
    pub poolers: BTreeMap<PoolerAnswer, u64>,
    /// Attempts tied to the pooler's server leg: the server and how the
    /// pooler's attempts to it ended → client attempts.
    pub server_legs: BTreeMap<(SocketAddr, Outcome), u64>,
    /// Attempts the client closed while waiting, with no message from the server.
    pub gave_up_waiting: u64,
    /// Encrypted attempts: the TLS records' shape and who closed → attempts.
    pub tls_shapes: BTreeMap<String, u64>,
    /// Encrypted attempts: TLS version, cipher suite and certificate → attempts.
    pub tls_facts: BTreeMap<String, u64>,
    /// Encrypted attempts: what the records suggest about the login → attempts.
    pub tls_logins: BTreeMap<LoginShape, u64>,
    /// Several capture points: where the attempts' packets were lost (a
    /// handful of places) → attempts, SYNs counted, and the point nearest the client.
    pub locations: BTreeMap<Location, (u64, SynCounts, String)>,
}

/// Attempts to one server address and port: (attempts, first start, last start).
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// Refused by the server address itself (its RST or ICMP port unreachable).
    pub refused: (u64, Option<Timestamp>, Option<Timestamp>),
    /// Completed handshakes.
    pub connected: (u64, Option<Timestamp>, Option<Timestamp>),
}

/// An error message as the server sent it, kept per outcome for the diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerMessage {
    pub code: String,
    pub text: String,
    /// As sent (possibly localized): what libpq prints.
    pub severity: String,
}

impl ServerMessage {
    /// `SQLSTATE message`, as evidence and the JSON report list it.
    pub fn coded(&self) -> String {
        format!("{} {}", self.code, self.text)
    }

    /// What the client application saw, as libpq prints it: `FATAL:  text`.
    pub fn as_libpq(&self) -> String {
        format!("{}:  {}", self.severity, self.text)
    }
}

/// A few distinct names (users, databases, applications), bounded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NameSet {
    pub names: BTreeSet<String>,
    /// Distinct names beyond the first few, not kept.
    pub more: u64,
}

impl NameSet {
    pub(crate) fn add(&mut self, name: &str) {
        if self.names.contains(name) {
            return;
        }
        if self.names.len() < MAX_NAMES {
            self.names.insert(name.to_owned());
        } else {
            self.more += 1;
        }
    }
}

/// What one client address did over the capture.
#[derive(Debug, Clone, Serialize)]
pub struct ClientSummary {
    pub client: IpAddr,
    #[serde(flatten)]
    pub counts: OutcomeCounts,
    #[serde(rename = "start")]
    pub first_seen: Timestamp,
    #[serde(rename = "end")]
    pub last_seen: Timestamp,
    /// Median SYN to SYN-ACK time of its attempts, in milliseconds.
    pub median_handshake_ms: Option<f64>,
    /// The users, databases and application names in its startup messages.
    pub users: NameSet,
    pub databases: NameSet,
    pub applications: NameSet,
    /// Logins that worked after a failed attempt of the same login (same
    /// user, database and application), or after a failure that never said
    /// who it was: retries that worked.
    pub recovered: u64,
    /// Logins (user, database, application) whose failures went on to the
    /// end, and failures that never said who they were and no login followed.
    pub logins_still_failing: usize,
    /// Another login of this client logged in while one was failing: one
    /// application working while another fails, not a recovery.
    pub others_logged_in: bool,
    /// The outcome of its latest attempt.
    pub last_outcome: Option<Outcome>,
    #[serde(skip)]
    last_start: Option<Timestamp>,
    /// Logins failing since their last success (`None`: a failure that
    /// never said who it was), bounded.
    #[serde(skip)]
    failing: BTreeSet<Option<u64>>,
    #[serde(skip)]
    handshakes_ms: Vec<f64>,
}

/// Everything a report shows, built from the engine's finished attempts.
#[derive(Debug)]
pub struct Summary {
    pub totals: OutcomeCounts,
    /// Each client's place in `clients`: a small index that stays in cache,
    /// where a map of whole summaries would miss on every lookup.
    client_index: HashMap<IpAddr, u32>,
    clients: Vec<ClientSummary>,
    max_clients: usize,
    /// Attempts of clients beyond `max_clients`, counted together.
    pub other_clients: OutcomeCounts,
    attempts: Vec<AttemptRecord>,
    max_attempts: usize,
    /// Attempts not kept because `max_attempts` was reached.
    pub attempts_not_listed: u64,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    /// What the server said, by outcome: each distinct message and its count.
    messages: BTreeMap<Outcome, BTreeMap<ServerMessage, u64>>,
    pub details: BTreeMap<Outcome, OutcomeDetail>,
    /// TTLs of each server's SYN-ACKs → attempts.
    pub server_ttls: BTreeMap<IpAddr, BTreeMap<u8, u64>>,
    /// The server addresses attempts went to (bounded).
    pub servers: BTreeSet<IpAddr>,
    /// Whether any attempt was tied to a DNS answer: the capture holds DNS.
    pub dns_seen: bool,
    /// Per server address and port: who refused there and who connected
    /// there, and when (bounded), for the bind-address inferences.
    pub endpoints: BTreeMap<SocketAddr, Endpoint>,
    pub timeline: Timeline,
    /// When each login last worked, for recoveries.
    logins: Logins,
    /// A pooler's own connections to PostgreSQL, counted apart from the
    /// clients': the server and outcome → attempts (bounded).
    pub pooler_legs: BTreeMap<(SocketAddr, Outcome), u64>,
    /// The latest failed attempts, newest last, when kept (a copy of each
    /// failure: only the live view wants them).
    recent_failures: VecDeque<AttemptRecord>,
    keep_recent_failures: bool,
    /// libpq's clear-text retries of failed TLS attempts.
    pub prefer_retries: PreferRetries,
}

impl Summary {
    /// `max_clients` bounds the per-client table (a spoofed SYN flood has
    /// millions of sources); `max_attempts` bounds the attempt list (0 keeps none).
    pub fn new(max_clients: usize, max_attempts: usize, bucket: Option<Duration>) -> Summary {
        Summary {
            totals: OutcomeCounts::default(),
            client_index: HashMap::default(),
            clients: Vec::new(),
            max_clients,
            other_clients: OutcomeCounts::default(),
            attempts: Vec::new(),
            max_attempts,
            attempts_not_listed: 0,
            first_seen: None,
            last_seen: None,
            messages: BTreeMap::new(),
            details: BTreeMap::new(),
            server_ttls: BTreeMap::new(),
            servers: BTreeSet::new(),
            endpoints: BTreeMap::new(),
            dns_seen: false,
            timeline: Timeline::new(bucket),
            logins: Logins::default(),
            pooler_legs: BTreeMap::new(),
            recent_failures: VecDeque::new(),
            keep_recent_failures: false,
            prefer_retries: PreferRetries::default(),
        }
    }

    pub fn add(&mut self, record: AttemptRecord) {
        if record.pooler_leg {
            let key = (record.server, record.outcome);
            if self.pooler_legs.contains_key(&key) || self.pooler_legs.len() < MAX_SOURCES {
                *self.pooler_legs.entry(key).or_default() += 1;
            }
            self.keep(record);
            return;
        }
        if self.keep_recent_failures && record.outcome.is_failure() {
            if self.recent_failures.len() == MAX_RECENT_FAILURES {
                self.recent_failures.pop_front();
            }
            self.recent_failures.push_back(record.clone());
        }
        self.prefer_retries.add(&record);
        self.totals.add(record.outcome);
        self.timeline.add(&record);
        if record.outcome == Outcome::Success {
            self.logins.add(Identity::of(&record), record.start);
        }
        self.add_detail(&record);
        self.first_seen = Some(self.first_seen.map_or(record.start, |t| t.min(record.start)));
        self.last_seen = Some(self.last_seen.map_or(record.end, |t| t.max(record.end)));
        if let Some(error) = record.pg.as_ref().and_then(|pg| pg.error.as_ref()) {
            let said = ServerMessage {
                code: error.code().to_owned(),
                text: error.message.clone().unwrap_or_default(),
                severity: error.severity.clone().unwrap_or_default(),
            };
            let seen = self.messages.entry(record.outcome).or_default();
            if seen.contains_key(&said) || seen.len() < MAX_MESSAGES {
                *seen.entry(said).or_default() += 1;
            }
        }
        let ip = record.client.ip();
        let room = self.clients.len() < self.max_clients;
        match self.client_index.get(&ip) {
            Some(&at) => self.clients[at as usize].add(&record),
            None if room => {
                let mut c = ClientSummary {
                    client: ip,
                    counts: OutcomeCounts::default(),
                    first_seen: record.start,
                    last_seen: record.end,
                    median_handshake_ms: None,
                    users: NameSet::default(),
                    databases: NameSet::default(),
                    applications: NameSet::default(),
                    recovered: 0,
                    logins_still_failing: 0,
                    others_logged_in: false,
                    last_outcome: None,
                    last_start: None,
                    failing: BTreeSet::new(),
                    handshakes_ms: Vec::new(),
                };
                c.add(&record);
                self.client_index.insert(ip, self.clients.len() as u32);
                self.clients.push(c);
            }
            None => self.other_clients.add(record.outcome),
        }
        self.keep(record);
    }

    /// Lists the attempt, while there is room.
    fn keep(&mut self, record: AttemptRecord) {
        if self.attempts.len() < self.max_attempts {
            self.attempts.push(record);
        } else {
            self.attempts_not_listed += 1;
        }
    }

    /// Clients with the most failed attempts first, then the busiest, then by address.
    pub fn clients(&self) -> Vec<ClientSummary> {
        let mut clients: Vec<ClientSummary> = self.clients.iter().cloned().map(ClientSummary::finish).collect();
        clients.sort_by(|a, b| {
            b.counts
                .failures()
                .cmp(&a.counts.failures())
                .then(b.counts.attempts.cmp(&a.counts.attempts))
                .then(a.client.cmp(&b.client))
        });
        clients
    }

    /// Incident windows, each judged recovered only when the logins that
    /// failed in it logged in afterwards.
    pub fn windows(&self) -> Vec<Window> {
        self.timeline.windows(&self.logins)
    }

    /// Keep the latest failed attempts from now on.
    pub fn keep_recent_failures(&mut self) {
        self.keep_recent_failures = true;
    }

    /// The latest failed attempts (in the order they ended), newest last.
    pub fn recent_failures(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.recent_failures.iter()
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Clients that had at least one attempt with this outcome.
    pub fn clients_with(&self, outcome: Outcome) -> usize {
        self.clients.iter().filter(|c| c.counts.get(outcome) > 0).count()
    }

    fn add_detail(&mut self, a: &AttemptRecord) {
        if self.servers.len() < MAX_SOURCES {
            self.servers.insert(a.server.ip());
        }
        let room = self.endpoints.len() < MAX_SOURCES;
        if room || self.endpoints.contains_key(&a.server) {
            let e = self.endpoints.entry(a.server).or_default();
            let span = match a.tcp_outcome {
                TcpOutcome::Refused if a.answer.as_ref().is_some_and(|x| x.from == a.server.ip()) => &mut e.refused,
                TcpOutcome::Established => &mut e.connected,
                _ => return self.add_outcome_detail(a),
            };
            span.0 += 1;
            span.1 = Some(span.1.map_or(a.start, |t: Timestamp| t.min(a.start)));
            span.2 = Some(span.2.map_or(a.start, |t: Timestamp| t.max(a.start)));
        }
        self.add_outcome_detail(a);
    }

    fn add_outcome_detail(&mut self, a: &AttemptRecord) {
        self.dns_seen |= a.dns.is_some();
        if let Some(ttl) = a.server_ttl {
            let room = self.server_ttls.len() < MAX_SOURCES;
            if let Some(ttls) = self.server_ttls.get_mut(&a.server.ip()) {
                *ttls.entry(ttl).or_default() += 1;
            } else if room {
                self.server_ttls.insert(a.server.ip(), BTreeMap::from([(ttl, 1)]));
            }
        }
        let d = self.details.entry(a.outcome).or_default();
        if let Some((path, l)) = a.path.as_deref().and_then(|p| Some((p, p.location.as_ref()?))) {
            if d.locations.contains_key(l) || d.locations.len() < MAX_SOURCES {
                let first = path.seen_at.first().map(|s| s.point.clone()).unwrap_or_default();
                let (n, syns, _) = d.locations.entry(l.clone()).or_insert((0, SynCounts::default(), first));
                let these = SynCounts::of(path, l);
                *n += 1;
                syns.first += these.first;
                syns.from += these.from;
            }
        }
        d.first = Some(d.first.map_or(a.start, |t| t.min(a.start)));
        d.last = Some(d.last.map_or(a.start, |t| t.max(a.start)));
        if let Some(answer) = &a.answer {
            let key = (answer.kind, answer.from, answer.ttl, answer.icmp_code);
            if d.answers.contains_key(&key) || d.answers.len() < MAX_SOURCES {
                *d.answers.entry(key).or_default() += 1;
            }
        }
        if let Some(ttl) = a.client_ttl {
            *d.client_ttls.entry(ttl).or_default() += 1;
        }
        if let Some(syn) = a.syn.as_ref().filter(|_| a.outcome == Outcome::Timeout) {
            *d.syn_counts.entry(syn.count).or_default() += 1;
            if d.last_syn_ms.len() < MAX_SAMPLES {
                d.last_syn_ms.push(syn.at_ms.last().copied().unwrap_or(0.0));
            }
        }
        if let Some(why) = a.gave_up {
            *d.gave_up.entry(why).or_default() += 1;
        }
        if a.dns.is_none() && a.tcp_outcome != TcpOutcome::Midstream {
            d.without_dns += 1;
        }
        if let Some(lookup) = &a.dns {
            if d.dns_names.contains_key(&lookup.name) || d.dns_names.len() < MAX_NAMES {
                let addresses = d.dns_names.entry(lookup.name.clone()).or_default();
                // A failed lookup gave no address (its server is the resolver).
                if addresses.len() < MAX_NAMES && a.outcome != Outcome::DnsFailed {
                    addresses.insert(a.server.ip());
                }
            }
        }
        let said_nothing = a.pg.as_ref().is_some_and(|pg| pg.error.is_none() && pg.stopped_at.is_some());
        if said_nothing && matches!(a.session_end, Some(SessionEnd::FinClient | SessionEnd::RstClient)) {
            d.gave_up_waiting += 1;
        }
        if let Some(leg) = &a.server_leg {
            *d.server_legs.entry((leg.server, leg.outcome)).or_default() += 1;
        }
        if let Some(answer) = a.pg.as_ref().and_then(|pg| pg.pooler) {
            *d.poolers.entry(answer).or_default() += 1;
        }
        if let Some(stopped_at) = a.pg.as_ref().and_then(|pg| pg.stopped_at.as_ref()) {
            *d.stopped_at.entry(stopped_at.clone()).or_default() += 1;
        }
        // Only closed connections: an open one's wait was cut by the capture's end.
        let closed = a.session_end.is_some_and(|e| e != SessionEnd::Open);
        if let Some(ms) = a.pg.as_ref().and_then(|pg| pg.stopped_for_ms).filter(|_| closed) {
            if d.stopped_for_ms.len() < MAX_SAMPLES {
                d.stopped_for_ms.push(ms);
            }
        }
        if let Some(tls) = a.pg.as_ref().and_then(|pg| pg.tls.as_deref()) {
            let closed = match a.session_end {
                Some(SessionEnd::FinServer | SessionEnd::RstServer) => ", then the server closed",
                Some(SessionEnd::FinClient | SessionEnd::RstClient) => ", then the client closed",
                _ => "",
            };
            count_bounded(&mut d.tls_shapes, format!("{}{closed}", tls.flights.describe()));
            let h = &tls.hello;
            let mut facts = format!("TLS {}", h.version.as_deref().unwrap_or("version not seen"));
            if let Some(cipher) = &h.cipher_suite {
                facts.push_str(&format!(" {cipher}"));
            }
            if let Some(c) = &h.certificate {
                let expired = if c.expired { ", EXPIRED at connection time" } else { "" };
                facts.push_str(&format!(", certificate {} valid until {}{expired}", c.subject, c.not_after));
            }
            match tls.decryption {
                Some(Decryption::Decrypted) => facts.push_str(", decrypted with the key log"),
                Some(Decryption::NoKey) => facts.push_str(", no key in the key log"),
                Some(Decryption::UnsupportedCipher) => facts.push_str(", cipher suite not decrypted"),
                Some(Decryption::Failed) => facts.push_str(", the key log's secret did not decrypt every record"),
                None => {}
            }
            count_bounded(&mut d.tls_facts, facts);
            if let Some(login) = tls.login {
                *d.tls_logins.entry(login).or_default() += 1;
            }
        }
        if let Some(startup) = a.pg.as_ref().map(|pg| &pg.startup) {
            if let Some(user) = &startup.user {
                d.users.add(user);
                d.databases.add(startup.database.as_ref().unwrap_or(user));
            }
            if let Some(app) = startup.application_name.as_ref().filter(|a| !a.is_empty()) {
                d.applications.add(app);
            }
        }
    }

    /// The server's messages for an outcome, most frequent first.
    pub fn messages(&self, outcome: Outcome) -> Vec<(&ServerMessage, u64)> {
        let mut list: Vec<(&ServerMessage, u64)> =
            self.messages.get(&outcome).map(|m| m.iter().map(|(s, n)| (s, *n)).collect()).unwrap_or_default();
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        list
    }

    /// The kept attempts, in the order they started.
    pub fn attempts(&self) -> Vec<&AttemptRecord> {
        let mut list: Vec<&AttemptRecord> = self.attempts.iter().collect();
        list.sort_by_key(|a| (a.start, a.id));
        list
    }
}

/// Counts `key`, keeping at most `MAX_SOURCES` distinct keys.
fn count_bounded(map: &mut BTreeMap<String, u64>, key: String) {
    if map.contains_key(&key) || map.len() < MAX_SOURCES {
        *map.entry(key).or_default() += 1;
    }
}

impl ClientSummary {
    fn add(&mut self, record: &AttemptRecord) {
        self.counts.add(record.outcome);
        if self.last_start.is_none_or(|t| record.start >= t) {
            self.last_start = Some(record.start);
            self.last_outcome = Some(record.outcome);
        }
        let login = Identity::of(record).login;
        if record.outcome.is_failure() {
            // Past the bound, a failure is kept as one that never said who it was.
            let key = if self.failing.len() < MAX_FAILING_LOGINS { login } else { None };
            self.failing.insert(key);
        } else if record.outcome == Outcome::Success {
            let own = self.failing.remove(&login);
            let unnamed = self.failing.remove(&None);
            if own || unnamed {
                self.recovered += 1;
            }
            if !self.failing.is_empty() {
                self.others_logged_in = true;
            }
        }
        self.first_seen = self.first_seen.min(record.start);
        self.last_seen = self.last_seen.max(record.end);
        if let Some(ms) = record.handshake_ms {
            if self.handshakes_ms.len() < MAX_HANDSHAKE_SAMPLES {
                self.handshakes_ms.push(ms);
            }
        }
        if let Some(startup) = record.pg.as_ref().map(|pg| &pg.startup) {
            // libpq defaults the database to the user name.
            let database = startup.database.as_ref().or(startup.user.as_ref());
            for (set, name) in [
                (&mut self.users, startup.user.as_ref()),
                (&mut self.databases, database),
                (&mut self.applications, startup.application_name.as_ref().filter(|a| !a.is_empty())),
            ] {
                if let Some(name) = name {
                    set.add(name);
                }
            }
        }
    }

    fn finish(mut self) -> ClientSummary {
        self.median_handshake_ms = median(&mut self.handshakes_ms);
        self.logins_still_failing = self.failing.len();
        self
    }
}
