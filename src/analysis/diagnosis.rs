//! The diagnosis: each outcome class seen, ranked by the clients it
//! affected, with what those clients saw, what it means, the inferences only
//! a capture allows (each with how sure it is), and what to check next.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use super::explain::explain;
use super::median::median;
use super::summary::{Endpoint, NameSet, OutcomeDetail, Summary};
use crate::engine::Stats;
use crate::outcome::{AnswerKind, GaveUp, Outcome};
use crate::points::words;
use crate::time::{short, Timestamp};

/// How sure an inference is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Read off the packets.
    Certain,
    /// The usual reading of what the packets show; other explanations exist.
    Likely,
    /// A hint only.
    Possible,
}

impl Confidence {
    /// How reports mark it: `[seen]`, `[likely]`, `[possibly]`.
    pub fn label(self) -> &'static str {
        match self {
            Confidence::Certain => "seen",
            Confidence::Likely => "likely",
            Confidence::Possible => "possibly",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Inference {
    pub text: String,
    pub confidence: Confidence,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub outcome: Outcome,
    pub failure: bool,
    pub clients: usize,
    pub attempts: u64,
    #[serde(rename = "start")]
    pub first: Option<Timestamp>,
    #[serde(rename = "end")]
    pub last: Option<Timestamp>,
    /// The server's most frequent message as libpq prints it, when the
    /// capture has one; otherwise what clients usually see for this outcome.
    pub client_sees: String,
    pub meaning: String,
    pub evidence: Vec<Inference>,
    pub next_steps: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub findings: Vec<Finding>,
    /// Clients where a failed login later logged in: retries that worked.
    pub recovered_clients: Vec<IpAddr>,
    /// Clients where one login failed to the end while another worked:
    /// another application on the same host, not a recovery.
    pub other_logins_clients: Vec<IpAddr>,
    /// What a limit kept the engine from following: failures there would not show.
    pub blind_spots: Vec<BlindSpot>,
}

/// A limit that cut something: how much, what, and the flag that sets it.
#[derive(Debug, Clone, Serialize)]
pub struct BlindSpot {
    pub count: u64,
    pub what: &'static str,
    pub flag: &'static str,
}

/// The limits the engine hit during the capture.
pub fn blind_spots(st: &Stats) -> Vec<BlindSpot> {
    [
        (st.evicted, "attempts ended early to make room (flow table full): how they ended is unknown", "--max-flows"),
        (
            st.evicted_midstream,
            "connections joined midstream ended early to make room (flow table full)",
            "--max-flows",
        ),
        (st.untracked, "packets of unknown connections not tracked (flow table full)", "--max-flows"),
        (
            st.held_over_budget,
            "out-of-order segments not held (held-data budget spent): the holes before them were read as lost",
            "--max-held-mib",
        ),
    ]
    .into_iter()
    .filter(|(count, ..)| *count > 0)
    .map(|(count, what, flag)| BlindSpot { count, what, flag })
    .collect()
}

/// How the capture was taken, as far as it bears on the diagnosis.
#[derive(Debug, Clone, Default)]
pub struct CaptureFacts {
    /// ICMP errors quoting a server port that matched no SYN.
    pub unmatched_icmp: u64,
    /// The capture filter the user gave (`-f`), if any.
    pub filter: Option<String>,
    /// What the engine's limits cut (see [`blind_spots`]).
    pub blind_spots: Vec<BlindSpot>,
}

pub fn diagnose(s: &Summary, syn_timeout: Duration, capture: &CaptureFacts) -> Diagnosis {
    let mut outcomes: Vec<Outcome> = s.totals.outcomes().collect();
    // An outcome seen only as libpq's retry after a failed TLS attempt is a
    // consequence: it comes after the failures that are causes.
    let only_retries = |o: Outcome| s.prefer_retries.causes_of(o).map(|(_, n)| n).sum::<u64>() >= s.totals.get(o);
    outcomes.sort_by_key(|&o| {
        (!o.is_failure(), only_retries(o), std::cmp::Reverse(s.clients_with(o)), std::cmp::Reverse(s.totals.get(o)))
    });
    let findings = outcomes
        .into_iter()
        .map(|outcome| {
            let e = explain(outcome, syn_timeout);
            let detail = s.details.get(&outcome).cloned().unwrap_or_default();
            Finding {
                outcome,
                failure: outcome.is_failure(),
                clients: s.clients_with(outcome),
                attempts: s.totals.get(outcome),
                first: detail.first,
                last: detail.last,
                client_sees: match s.messages(outcome).first() {
                    Some((said, _)) => said.as_libpq(),
                    // Every one gave up waiting: a time-out, whatever the outcome's usual words.
                    None if detail.gave_up_waiting == s.totals.get(outcome) && detail.gave_up_waiting > 0 => {
                        GAVE_UP_WAITING.to_owned()
                    }
                    None => e.client_sees.to_owned(),
                },
                meaning: e.meaning,
                evidence: evidence(s, outcome, &detail, capture),
                // Located between capture points: the place to look is known.
                next_steps: if detail.locations.is_empty() { e.next_steps } else { LOCATED_NEXT_STEPS },
            }
        })
        .collect();
    let clients = s.clients();
    let recovered_clients = clients.iter().filter(|c| c.recovered > 0).map(|c| c.client).collect();
    let other_logins_clients =
        clients.iter().filter(|c| c.others_logged_in && c.logins_still_failing > 0).map(|c| c.client).collect();
    Diagnosis { findings, recovered_clients, other_logins_clients, blind_spots: capture.blind_spots.clone() }
}

fn evidence(s: &Summary, outcome: Outcome, d: &OutcomeDetail, capture: &CaptureFacts) -> Vec<Inference> {
    let mut out = Vec::new();
    let mut say = |confidence, text: String| out.push(Inference { text, confidence });
    for (location, (n, syns, first)) in &d.locations {
        let attempts = if *n == 1 { "1 attempt".to_owned() } else { format!("{n} attempts") };
        say(Confidence::Likely, format!("{attempts}: {}", words::sentence(location, first, *syns)));
    }
    for ((kind, from, ttl, code), n) in &d.answers {
        say(Confidence::Certain, answered(*kind, *from, *ttl, *code, *n));
        if let Some(inference) = who_answered(s, *kind, *from, *ttl, *code) {
            say(Confidence::Likely, inference);
        }
    }
    if outcome == Outcome::Timeout {
        timeout_evidence(s, d, &mut say);
        if let Some((confidence, text)) = icmp_blind_spot(s, capture) {
            say(confidence, text);
        }
        if let Some(hops) = capture_point(&d.client_ttls) {
            say(Confidence::Possible, hops);
        }
    }
    dns_evidence(s, outcome, d, &mut say);
    if outcome == Outcome::Refused {
        listen_evidence(s, &mut say);
    }
    for (facts, n) in &d.tls_facts {
        say(Confidence::Certain, format!("{facts} ({n}×)"));
    }
    for (shape, n) in &d.tls_shapes {
        say(Confidence::Certain, format!("encrypted records after the TLS handshake ({n}×): {shape}"));
    }
    if let Some(reading) = tls_reading(outcome) {
        say(Confidence::Likely, reading.to_owned());
    } else {
        for (login, n) in &d.tls_logins {
            let confidence = if login.is_inference() { Confidence::Likely } else { Confidence::Certain };
            say(confidence, format!("{} ({n}×)", login.reading()));
        }
    }
    for (retry, n) in s.prefer_retries.retries_of(outcome) {
        say(
            Confidence::Certain,
            format!(
                "{n}× the same client reconnected at once without TLS (libpq's sslmode=prefer retry) and got \
                 {retry}: a consequence of this failure, not a second cause"
            ),
        );
        if retry == Outcome::HbaRejected {
            say(
                Confidence::Likely,
                "pg_hba.conf has no entry for unencrypted connections from these clients (hostssl only), so the \
                 retry was refused; fix the TLS login's failure"
                    .to_owned(),
            );
        }
    }
    for (cause, n) in s.prefer_retries.causes_of(outcome) {
        say(
            Confidence::Certain,
            format!(
                "{n}× this was libpq's retry without TLS (sslmode=prefer) right after a TLS attempt that ended \
                 {cause}: that failure is the cause, this answer its consequence"
            ),
        );
    }
    for (label, names) in [("users", &d.users), ("databases", &d.databases), ("applications", &d.applications)] {
        if !names.names.is_empty() {
            say(Confidence::Certain, format!("{label}: {}", list(names)));
        }
    }
    for (&(server, leg_outcome), n) in &d.server_legs {
        let tried = s.pooler_legs.get(&(server, leg_outcome)).copied().unwrap_or(0);
        say(
            Confidence::Certain,
            format!(
                "{n} of these waited on a pooler that could not get a server connection: its {tried} attempt{} to \
                 PostgreSQL at {server} in the capture {}",
                if tried == 1 { "" } else { "s" },
                leg_verb(leg_outcome)
            ),
        );
    }
    for (answer, n) in &d.poolers {
        say(
            Confidence::Certain,
            format!(
                "{} answered {n} of these itself, not PostgreSQL: look at its {} first",
                answer.name, answer.setting
            ),
        );
    }
    for (said, n) in s.messages(outcome) {
        say(Confidence::Certain, format!("the server said ({n}×): {}", said.coded()));
    }
    for (stopped_at, n) in &d.stopped_at {
        say(Confidence::Certain, format!("{n} login{} stopped at: {stopped_at}", if *n == 1 { "" } else { "s" }));
    }
    let waited = median(&mut d.stopped_for_ms.clone()).map(|ms| Duration::from_secs_f64(ms / 1e3));
    match (outcome, waited) {
        (Outcome::ServerSilent, Some(w)) => say(
            Confidence::Likely,
            format!(
                "the clients gave up after waiting {} (median) for the server's answer: a timeout of theirs \
                 (libpq's connect_timeout counts from the connection's start, so it is at least that)",
                short(w)
            ),
        ),
        (Outcome::AuthTimeout, Some(w)) => say(
            Confidence::Likely,
            format!(
                "the server closed {} (median) after asking for credentials: its authentication_timeout is about \
                 that long",
                short(w)
            ),
        ),
        _ => {}
    }
    out
}

const LOCATED_NEXT_STEPS: &str = "Look where the capture points place the loss (above): the firewall rules, routes \
     and security groups of the hosts and devices between those two points, or of the host where the packets stopped.";
const GAVE_UP_WAITING: &str = "no message: the client gave up waiting (libpq: timeout expired, with connect_timeout)";

/// What PostgreSQL did to the pooler's attempts, in words.
fn leg_verb(outcome: Outcome) -> String {
    match outcome {
        Outcome::Refused => "were refused (nothing listens there: the server is down)".to_owned(),
        Outcome::Timeout => "went unanswered".to_owned(),
        Outcome::Unreachable => "could not reach it".to_owned(),
        Outcome::AuthFailed | Outcome::HbaRejected | Outcome::RoleMissing => {
            format!("could not log in ({outcome}): the pooler's own credentials or PostgreSQL's pg_hba.conf")
        }
        Outcome::TooManyClients => "were turned away (PostgreSQL's max_connections were taken)".to_owned(),
        other => format!("ended with {other}"),
    }
}

/// What the TLS records' shape means for an encrypted outcome.
fn tls_reading(outcome: Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::TlsRejected => Some(
            "the connection ended on the server's answer to the startup message, too long for an authentication \
             request and too short for a login, with no authentication round trip: PostgreSQL refused the client \
             before authentication",
        ),
        Outcome::TlsLoginFailed => Some(
            "the client answered authentication requests and the connection ended on the server's answer, \
             without the burst of messages a successful login sends: the login failed at or after authentication",
        ),
        _ => None,
    }
}

fn answered(kind: AnswerKind, from: IpAddr, ttl: u8, code: Option<u8>, n: u64) -> String {
    match (kind, code) {
        (AnswerKind::Rst, _) => format!("{n} SYNs answered by RST from {from} (TTL {ttl})"),
        (AnswerKind::Icmp, code) => {
            format!(
                "{n} SYNs answered by ICMP destination unreachable (code {}) from {from} (TTL {ttl})",
                code.unwrap_or(0)
            )
        }
    }
}

/// Who answered: the server host itself (its SYN-ACKs have the same TTL), or
/// a device in the path (another address, or another TTL).
fn who_answered(s: &Summary, kind: AnswerKind, from: IpAddr, ttl: u8, code: Option<u8>) -> Option<String> {
    match (kind, s.server_ttls.get(&from)) {
        (AnswerKind::Rst, Some(ttls)) if ttls.contains_key(&ttl) => Some(format!(
            "the RST has the TTL of {from}'s own SYN-ACKs ({ttl}): the server host answered — nothing listened on \
             the port, or its own firewall rejects with tcp-reset"
        )),
        (AnswerKind::Rst, Some(ttls)) => {
            let seen: Vec<String> = ttls.keys().map(u8::to_string).collect();
            Some(format!(
                "the RST carries {from}'s address but TTL {ttl}, while its SYN-ACKs carry {}: a device in the path \
                 answered in the server's name (a firewall REJECT with tcp-reset)",
                seen.join("/")
            ))
        }
        (AnswerKind::Rst, None) => Some(format!(
            "{from} answered with RST; no SYN-ACK from it in this capture to compare TTLs with, so whether the host \
             or a firewall in front of it answered cannot be told"
        )),
        (AnswerKind::Icmp, _) if s.servers.contains(&from) => Some(format!(
            "the ICMP error came from the server's own address {from}: its host firewall rejects the port"
        )),
        (AnswerKind::Icmp, _) => Some(format!(
            "the ICMP error came from {from}, not from the server: a firewall or router in the path {}",
            if matches!(code, Some(9 | 10 | 13)) { "rejects this traffic" } else { "could not deliver it" }
        )),
    }
}

/// Timeouts: the SYN schedule, when clients gave up (and the connect_timeout
/// that fits), and whether the server answered other clients meanwhile.
fn timeout_evidence(s: &Summary, d: &OutcomeDetail, say: &mut impl FnMut(Confidence, String)) {
    if let Some((&syns, _)) = d.syn_counts.iter().max_by_key(|(_, n)| **n) {
        let median = median(&mut d.last_syn_ms.clone()).unwrap_or(0.0);
        say(
            Confidence::Certain,
            format!(
                "most attempts sent {syns} SYN{} with no answer; the last one {} after the first (median)",
                if syns == 1 { "" } else { "s" },
                short(Duration::from_secs_f64(median / 1e3))
            ),
        );
        let gave_up = d.gave_up.get(&GaveUp::StoppedRetransmitting).copied().unwrap_or(0);
        if gave_up > 0 && syns >= 2 {
            // The client stopped before its next retransmission: Linux's next
            // SYN comes one gap later (linear) or two gaps later (exponential).
            let low = median / 1e3;
            let gap = if syns >= 2 { low / f64::from(syns - 1) } else { 1.0 };
            let high = low + gap.max(1.0);
            let timeout = low.floor() as u64 + 1;
            say(
                Confidence::Likely,
                format!(
                    "{gave_up} attempts stopped retransmitting between {:.1} s and {:.1} s after the first SYN: the \
                     client gave up, as a connect_timeout of about {timeout} s makes libpq do",
                    low, high
                ),
            );
        }
        if let Some(waiting) = d.gave_up.get(&GaveUp::StillWaitingAtCaptureEnd) {
            say(Confidence::Certain, format!("{waiting} attempts were still retransmitting when the capture ended"));
        }
    }
    let (with_answers, periods) = s.timeline.timeout_periods_with_answers();
    if periods > 0 {
        if with_answers > 0 {
            say(
                Confidence::Likely,
                format!(
                    "in {with_answers} of {periods} periods with timeouts the server answered other clients: the \
                     SYNs were dropped for these clients only (a firewall DROP matching them), or the listen queue \
                     was full — not a dead host or a general routing hole"
                ),
            );
        } else {
            say(
                Confidence::Possible,
                "the server answered no one while these SYNs went unanswered: the host, its port or the path to it \
                 was down for everyone"
                    .to_owned(),
            );
        }
    }
}

/// The names the clients looked up before these attempts, and, for a
/// failure, whether the same name gave other clients an address that worked.
fn dns_evidence(s: &Summary, outcome: Outcome, d: &OutcomeDetail, say: &mut impl FnMut(Confidence, String)) {
    let addresses = |set: &BTreeSet<IpAddr>| set.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if s.dns_seen && outcome.is_failure() && d.without_dns > 0 {
        say(
            Confidence::Possible,
            format!(
                "{} of these attempts went to an address no DNS answer in this capture gave: a hard-coded address, \
                 /etc/hosts, or an answer cached before the capture began",
                d.without_dns
            ),
        );
    }
    for (name, got) in &d.dns_names {
        if got.is_empty() {
            say(Confidence::Certain, format!("the clients looked up {name} and got no address: it did not resolve"));
            continue;
        }
        say(Confidence::Certain, format!("the clients looked up {name} just before and got {}", addresses(got)));
        let worked = s.details.get(&Outcome::Success).and_then(|ok| ok.dns_names.get(name));
        if let Some(worked) = worked.filter(|w| outcome.is_failure() && w.is_disjoint(got)) {
            say(
                Confidence::Likely,
                format!(
                    "{name} also gave {}, where clients logged in: {} is a stale or wrong answer (an old record \
                     still cached, split-horizon DNS, a migration half done)",
                    addresses(worked),
                    addresses(got)
                ),
            );
        }
    }
}

/// Where PostgreSQL listens, from refusals beside connections: refused on
/// one address while another address of the same host took connections on
/// that port (listen_addresses); refused on one port while another port of
/// that address took them (a second cluster, a port mismatch); refused on
/// loopback with nothing on loopback ever taking one (localhost is the
/// client itself, in a container say).
fn listen_evidence(s: &Summary, say: &mut impl FnMut(Confidence, String)) {
    // Two spans of attempts within a minute of each other count as at the same time.
    let overlap =
        |a: &(u64, Option<Timestamp>, Option<Timestamp>), b: &(u64, Option<Timestamp>, Option<Timestamp>)| match (
            a.1, a.2, b.1, b.2,
        ) {
            (Some(a0), Some(a1), Some(b0), Some(b1)) => {
                a0 <= b1 + Duration::from_secs(60) && b0 <= a1 + Duration::from_secs(60)
            }
            _ => false,
        };
    let connected: Vec<(&SocketAddr, &Endpoint)> = s.endpoints.iter().filter(|(_, e)| e.connected.0 > 0).collect();
    for (refused_at, e) in s.endpoints.iter().filter(|(_, e)| e.refused.0 > 0) {
        let (ip, port) = (refused_at.ip(), refused_at.port());
        // Another address of the same host: one of the two is loopback (a
        // capture on the server host), or its SYN-ACKs carry the TTL the RST did.
        let same_host = |other: IpAddr| ip.is_loopback() != other.is_loopback() || s.server_ttls.contains_key(&other);
        let other_address: Vec<String> = connected
            .iter()
            .filter(|(a, c)| a.port() == port && a.ip() != ip && same_host(a.ip()) && overlap(&e.refused, &c.connected))
            .map(|(a, _)| a.ip().to_string())
            .collect();
        if !other_address.is_empty() && !ip.is_loopback() {
            say(
                Confidence::Likely,
                format!(
                    "{ip} refused port {port} while {} took connections on it at the same time: PostgreSQL listens \
                     on {} only (listen_addresses; its default is localhost) — add {ip}",
                    other_address.join(", "),
                    other_address.join(", ")
                ),
            );
        }
        let other_port: Vec<String> = connected
            .iter()
            .filter(|(a, c)| a.ip() == ip && a.port() != port && overlap(&e.refused, &c.connected))
            .map(|(a, _)| a.port().to_string())
            .collect();
        if !other_port.is_empty() {
            say(
                Confidence::Likely,
                format!(
                    "{ip} refused port {port} while it took connections on port {} at the same time: the clients \
                     use the wrong port, or a second cluster is down (check the port in the clients' settings and \
                     the clusters running there)",
                    other_port.join(", ")
                ),
            );
        }
        let loopback_works = connected.iter().any(|(a, _)| a.ip().is_loopback());
        if ip.is_loopback() && !loopback_works {
            say(
                Confidence::Possible,
                format!(
                    "{ip}:{port} was refused and nothing on loopback took a connection: if the client runs in a \
                     container or another host than PostgreSQL, localhost is the client itself — give the \
                     server's address instead"
                ),
            );
        }
    }
}

/// Whether the capture could have missed the ICMP errors that would turn a
/// timeout into `unreachable`: a `-f` filter that lets no ICMP through, or a
/// capture with not a single ICMP error (taken with `tcp port 5432`, say).
fn icmp_blind_spot(s: &Summary, capture: &CaptureFacts) -> Option<(Confidence, String)> {
    const CAPTURE: &str = "capture with `tcp port 5432 or icmp or icmp6` (the server ports and the ICMP errors)";
    if let Some(filter) = capture.filter.as_ref().filter(|f| !f.contains("icmp")) {
        return Some((
            Confidence::Likely,
            format!(
                "the filter `{filter}` lets no ICMP through: an ICMP unreachable or admin-prohibited answer to these \
                 SYNs would not be seen, so some timeouts may be `unreachable`; {CAPTURE}"
            ),
        ));
    }
    let icmp_answers = s.details.values().flat_map(|d| d.answers.keys()).any(|a| a.0 == AnswerKind::Icmp);
    (!icmp_answers && capture.unmatched_icmp == 0).then(|| {
        (
            Confidence::Possible,
            format!(
                "the capture holds no ICMP error at all: if it was taken with a filter such as `tcp port 5432`, ICMP \
                 answers were filtered out and some timeouts may be `unreachable`; {CAPTURE}"
            ),
        )
    })
}

/// How far the capture point is from the clients, from their SYNs' TTL.
fn capture_point(ttls: &BTreeMap<u8, u64>) -> Option<String> {
    let (&ttl, _) = ttls.iter().max_by_key(|(_, n)| **n)?;
    let initial = [64u16, 128, 255].into_iter().find(|&i| u16::from(ttl) <= i)?;
    let hops = initial - u16::from(ttl);
    Some(if hops == 0 {
        format!("the clients' SYNs arrive with TTL {ttl}, their initial value: the capture point is on the clients' own segment")
    } else {
        format!(
            "the clients' SYNs arrive with TTL {ttl}: about {hops} router hop{} from the clients to the capture point",
            if hops == 1 { "" } else { "s" }
        )
    })
}

fn list(names: &NameSet) -> String {
    let mut s = names.names.iter().cloned().collect::<Vec<_>>().join(", ");
    if names.more > 0 {
        s.push_str(&format!(" and {} more", names.more));
    }
    s
}
