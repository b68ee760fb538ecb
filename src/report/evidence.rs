//! One line of evidence per attempt: what was seen on the wire that decided
//! its outcome. Shared by every report format that lists attempts.

use std::fmt::Write as _;
use std::time::Duration;

use super::words::ms;
use crate::dns::{Lookup, UNANSWERED_AFTER};
use crate::outcome::{AnswerKind, GaveUp, Outcome, SessionEnd, UnreachableKind};
use crate::pg::{Encryption, PgSummary};
use crate::points::words;
use crate::record::{AttemptRecord, NatKind, PathEvidence, SeenAnswer};
use crate::time::short;
use crate::tls::{Decryption, TlsSummary};

/// The one fact that decided an attempt's outcome, briefly: what the
/// server said, who answered the SYN, or how long the client waited.
pub fn reason(a: &AttemptRecord) -> String {
    if let Some(e) = a.pg.as_ref().and_then(|pg| pg.error.as_ref()) {
        return format!("{} {}: {}", e.severity().unwrap_or("?"), e.code(), e.message.as_deref().unwrap_or(""));
    }
    let located = a.path.as_ref().and_then(|p| p.location.as_ref()).map(|l| format!("; {}", words::short(l)));
    let located = located.unwrap_or_default();
    if let Some(answer) = answer_text(a) {
        return answer + &located;
    }
    if let (Some(syn), Some(wait)) = (&a.syn, a.wait_ms) {
        return format!("{} SYNs unanswered over {}{located}", syn.count, ms(wait));
    }
    a.outcome.to_string() + &located
}

/// Where the attempt was seen, at several capture points or through NAT:
/// where its packets were lost first, then what each point saw.
fn path_evidence(path: &PathEvidence) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(l) = &path.location {
        parts.push(words::short(l));
    }
    if !path.seen_at.is_empty() {
        let seen: Vec<String> = path
            .seen_at
            .iter()
            .map(|s| {
                let answer = match s.answer {
                    Some(SeenAnswer::SynAck) => ", SYN-ACK",
                    Some(SeenAnswer::Rst) => ", RST",
                    Some(SeenAnswer::Icmp) => ", ICMP error",
                    None => "",
                };
                format!("{} ({} SYN{}{answer})", s.point, s.syns, if s.syns == 1 { "" } else { "s" })
            })
            .collect();
        let only = if path.seen_at.len() == 1 && path.location.is_none() { " only" } else { "" };
        parts.push(format!("seen at {}{only}", seen.join(", ")));
    }
    if let Some(nat) = &path.nat {
        let kind = match nat.kind {
            NatKind::Source => "source",
            NatKind::Destination => "destination",
            NatKind::Both => "source and destination",
        };
        let pairs: Vec<String> =
            nat.pairs.iter().map(|p| format!("{}: {} → {}", p.point, p.client, p.server)).collect();
        parts.push(format!("{kind} NAT ({})", pairs.join(", ")));
    }
    parts
}

/// Who answered the SYN with a refusal, and how.
fn answer_text(a: &AttemptRecord) -> Option<String> {
    let answer = a.answer.as_ref()?;
    let what = match (answer.kind, answer.unreachable) {
        (AnswerKind::Rst, _) => "RST".to_owned(),
        (AnswerKind::Icmp, kind) => format!(
            "ICMP{} {} ({}/{})",
            if a.client.is_ipv6() { "v6" } else { "" },
            match kind {
                Some(UnreachableKind::Port) => "port unreachable",
                Some(UnreachableKind::Net) => "net unreachable",
                Some(UnreachableKind::Host) => "host unreachable",
                Some(UnreachableKind::AdminProhibited) => "admin prohibited",
                _ => "unreachable",
            },
            answer.icmp_type.unwrap_or_default(),
            answer.icmp_code.unwrap_or_default()
        ),
    };
    Some(format!("{what} from {} (ttl {}) after {}", answer.from, answer.ttl, ms(answer.after_ms)))
}

/// One line of evidence for an attempt: what was seen on the wire that decided its outcome.
pub fn evidence(a: &AttemptRecord) -> String {
    let mut parts = a.path.as_deref().map(path_evidence).unwrap_or_default();
    if let Some(lookup) = &a.dns {
        parts.push(lookup_text(a, lookup));
    }
    if let Some(answer) = answer_text(a) {
        parts.push(answer);
    }
    if let Some(syn) = &a.syn {
        if syn.count > 1 || a.outcome == Outcome::Timeout {
            let times: Vec<String> = syn.at_ms.iter().map(|&t| short(Duration::from_secs_f64(t / 1e3))).collect();
            let more = if syn.count as usize > syn.at_ms.len() { ", …" } else { "" };
            parts.push(format!("{} SYNs at {}{more}", syn.count, times.join(", ")));
        }
    }
    if let Some(why) = a.gave_up {
        let wait = a.wait_ms.map_or(String::new(), ms);
        parts.push(match why {
            GaveUp::StoppedRetransmitting => format!("no SYN after {wait}: the client gave up"),
            GaveUp::ClientReset => format!("client reset after {wait}"),
            GaveUp::NewAttempt => format!("client retried with a new SYN after {wait}"),
            GaveUp::StillWaitingAtCaptureEnd => format!("capture ended after {wait}, client still waiting"),
        });
    }
    if let Some(h) = a.handshake_ms {
        parts.push(format!("handshake {}", ms(h)));
    }
    if let Some(end) = a.session_end {
        parts.push(
            match end {
                SessionEnd::FinClient => "closed by client (FIN)",
                SessionEnd::FinServer => "closed by server (FIN)",
                SessionEnd::RstClient => "reset by client (RST)",
                SessionEnd::RstServer => "reset by server (RST)",
                SessionEnd::Open => "open at capture end",
            }
            .to_owned(),
        );
    }
    if a.pooler_leg {
        parts.push("the pooler's own connection to PostgreSQL".to_owned());
    }
    if let Some(pg) = &a.pg {
        parts.extend(pg_evidence(pg));
    }
    if let Some(leg) = &a.server_leg {
        parts.push(format!("meanwhile the pooler's {} attempts to {}: {}", leg.attempts, leg.server, leg.outcome));
    }
    let t = &a.traffic;
    parts.push(format!(
        "{}↑ {}↓ packets, {}↑ {}↓ bytes",
        t.client_packets, t.server_packets, t.client_bytes, t.server_bytes
    ));
    for note in &a.notes {
        parts.push(serde_json::to_value(note).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default());
    }
    parts.join("; ")
}

/// What the PostgreSQL conversation showed, briefly: who logged in where,
/// how, and what the server said.
fn pg_evidence(pg: &PgSummary) -> Vec<String> {
    let mut parts = Vec::new();
    match pg.encryption {
        Some(Encryption::SslRefused) => parts.push("SSL refused (N)".to_owned()),
        Some(Encryption::Ssl) => parts.push("SSL accepted (S): encrypted".to_owned()),
        Some(Encryption::SslError) => parts.push("SSLRequest answered with an error".to_owned()),
        Some(Encryption::DirectTls) => parts.push("direct TLS".to_owned()),
        Some(Encryption::GssRefused) => parts.push("GSS encryption refused".to_owned()),
        Some(Encryption::Gss) => parts.push("GSS encrypted".to_owned()),
        None => {}
    }
    if let Some(user) = &pg.startup.user {
        let db = pg.startup.database.as_deref().unwrap_or(user);
        let mut who = format!("{user}@{db}");
        if let Some(app) = pg.startup.application_name.as_deref().filter(|a| !a.is_empty()) {
            let _ = write!(who, " ({app})");
        }
        if let Some(r) = &pg.startup.replication {
            let _ = write!(who, " replication={r}");
        }
        parts.push(who);
    }
    if !pg.auth.is_empty() {
        parts.push(format!("auth {}", pg.auth.join(" → ")));
    }
    if let Some(v) = &pg.server_version {
        parts.push(format!("server {v}"));
    }
    if let Some(login) = pg.login_ms {
        parts.push(format!("login {}", ms(login)));
    }
    if let Some(p) = &pg.pooler {
        parts.push(format!("{} answered (look at {})", p.name, p.setting));
    }
    if let Some(e) = &pg.error {
        let mut said = format!("{} {}: {}", e.severity().unwrap_or("?"), e.code(), e.message.as_deref().unwrap_or(""));
        if let Some(d) = &e.detail {
            let _ = write!(said, " DETAIL: {d}");
        }
        if let Some(h) = &e.hint {
            let _ = write!(said, " HINT: {h}");
        }
        parts.push(said);
    }
    if let Some(n) = pg.first_notices.first() {
        let more = if pg.notices > 1 { format!(" (+{} more notices)", pg.notices - 1) } else { String::new() };
        parts.push(format!(
            "{} {}: {}{more}",
            n.severity().unwrap_or("NOTICE"),
            n.code(),
            n.message.as_deref().unwrap_or("")
        ));
    }
    if !pg.session_errors.is_empty() {
        let errs: Vec<String> = pg.session_errors.iter().map(|(code, n)| format!("{code}×{n}")).collect();
        parts.push(format!("session errors {}", errs.join(" ")));
    }
    if pg.terminate_sent {
        parts.push("Terminate".to_owned());
    }
    if let (Some(at), Some(for_ms)) = (&pg.stopped_at, pg.stopped_for_ms) {
        parts.push(format!("stopped at: {at} ({})", ms(for_ms)));
    }
    if let Some(why) = &pg.not_postgres {
        parts.push(why.clone());
    }
    if pg.framing_lost {
        parts.push("framing lost at a capture gap".to_owned());
    }
    if let Some(tls) = &pg.tls {
        parts.extend(tls_evidence(tls));
    }
    parts
}

/// What the TLS layer showed: version, cipher, certificate, the records
/// after the handshake and what they suggest.
fn tls_evidence(tls: &TlsSummary) -> Vec<String> {
    let mut parts = Vec::new();
    let h = &tls.hello;
    if let Some(v) = &h.version {
        parts.push(format!("TLS {v} {}", h.cipher_suite.as_deref().unwrap_or("")).trim_end().to_owned());
    }
    if let Some(alpn) = &h.alpn {
        parts.push(format!("ALPN {alpn}"));
    }
    if let Some(c) = &h.certificate {
        let expired = if c.expired { " (EXPIRED at connection time)" } else { "" };
        parts.push(format!("certificate {} valid until {}{expired}", c.subject, c.not_after));
    }
    if let Some(alert) = &tls.alert {
        parts.push(format!("alert {alert}"));
    }
    match tls.decryption {
        Some(Decryption::Decrypted) => parts.push("decrypted with the key log".to_owned()),
        Some(Decryption::NoKey) => parts.push("no key for this session in the key log".to_owned()),
        Some(Decryption::UnsupportedCipher) => parts.push("cipher suite not decrypted (AEAD suites only)".to_owned()),
        Some(Decryption::Failed) => parts.push("the key log's secret did not decrypt every record".to_owned()),
        None => {}
    }
    if !tls.handshake_done {
        parts.push("TLS handshake not finished".to_owned());
    }
    parts.push(format!("records after the handshake: {}", tls.flights.describe()));
    if let Some(answer) = tls.flights.last_answer_ms() {
        parts.push(format!("the server's last answer after {}", ms(answer)));
    }
    if let Some(login) = tls.login {
        let mark = if login.is_inference() { "[likely] " } else { "" };
        parts.push(format!("{mark}{}", login.reading()));
    }
    if let Some(lost) = &tls.records_lost {
        parts.push(format!("TLS records lost ({lost})"));
    }
    parts
}

/// `looked up db.lab.test (via db-1.lab.test) → 192.0.2.77, 192.0.2.78 (ttl 60s) from 192.0.2.53, 1.2ms before`;
/// for a failure, `looked up missing.lab.test: NXDOMAIN from 192.0.2.53` or
/// `looked up slow.lab.test: no answer from 192.0.2.53 within 5s`.
fn lookup_text(a: &AttemptRecord, l: &Lookup) -> String {
    let via = if l.aliases.is_empty() { String::new() } else { format!(" (via {})", l.aliases.join(" → ")) };
    match l.rcode {
        None => {
            let wait = UNANSWERED_AFTER.as_secs();
            return format!("looked up {}: no answer from {} within {wait}s", l.name, l.resolver);
        }
        Some(rcode) if l.failed() => {
            return format!("looked up {}{via}: {} from {}", l.name, rcode.mnemonic(), l.resolver)
        }
        Some(_) => {}
    }
    let addresses: Vec<String> = l.addresses.iter().map(ToString::to_string).collect();
    let ttl = l.ttl.map_or(String::new(), |t| format!(" (ttl {t}s)"));
    let before = short(a.start.since(l.at));
    format!("looked up {}{via} → {}{ttl} from {}, {before} before", l.name, addresses.join(", "), l.resolver)
}
