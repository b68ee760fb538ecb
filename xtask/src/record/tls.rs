//! Scenarios inside TLS: the lab's PostgreSQL with `ssl = on` (its
//! self-signed certificate is made with openssl when the lab starts) and a
//! pg_hba.conf that only has `hostssl` lines, and psql with its default
//! sslmode (prefer). A TLS login that fails is retried by libpq without TLS,
//! and that retry is refused for having no encryption: both attempts are
//! expected, in order.

use std::path::Path;

use anyhow::{bail, Result};

use super::{captured, client, finished, hold_sessions, Recorder, Scenario, Want, BRIDGE, CLIENT_PORT, NO_TAIL};
use crate::lab::{Client, Psql};

/// Only encrypted connections may log in; `blocked` meets a `reject` line.
const HOSTSSL_ONLY: &str = "local all all trust
hostssl all app_scram all scram-sha-256
hostssl all app_md5 all md5
hostssl all blocked all reject
hostssl all all 192.0.2.0/24 trust
hostssl all all 2001:db8::/32 trust
";
/// The subject of the lab's certificate (`openssl req -subj /CN=pgreach-lab`).
const SUBJECT: &str = "CN=pgreach-lab";
const PASSWORD_FAILED: &str = "password authentication failed";
/// libpq's retry without TLS under a hostssl-only pg_hba.conf.
const NO_ENCRYPTION: &str = "no encryption";

pub(super) fn scenarios() -> Vec<(&'static str, &'static str, Vec<&'static str>, Scenario)> {
    vec![
        (
            "tls_login",
            "ssl = on, hostssl-only pg_hba.conf, psql's default sslmode: a trust and a scram-sha-256 login over TLS 1.3",
            vec![],
            tls_login,
        ),
        (
            "tls_wrong_password",
            "the same with a wrong password: the TLS login fails after SCRAM; libpq retries without TLS and \
             pg_hba.conf has no entry for unencrypted connections",
            vec![],
            tls_wrong_password,
        ),
        (
            "tls_database_missing",
            "the same with the right password and a database that does not exist",
            vec![],
            tls_database_missing,
        ),
        (
            "tls_hba_reject",
            "the same for a role with a `hostssl … reject` line: refused before authentication, then the retry",
            vec![],
            tls_hba_reject,
        ),
        (
            "tls_too_many_clients",
            "ssl = on and max_connections = 3 held by three TLS sessions: a fourth client is turned away over \
             TLS, and again on its retry without TLS",
            vec![],
            tls_too_many_clients,
        ),
        (
            "tls_password_prompt",
            "the same with psql asked for a password over TLS: it closes, prompts and reconnects with it (not a failure)",
            vec![],
            tls_password_prompt,
        ),
        (
            "tls12_wrong_password",
            "ssl_max_protocol_version = TLSv1.2 (the certificate is in the clear): a wrong password, then the retry",
            vec![],
            tls12_wrong_password,
        ),
    ]
}

/// A TLS attempt with this outcome (no user on the wire: it is encrypted).
const fn over_tls(outcome: &'static str, psql_says: &'static str) -> Want {
    Want { outcome, sqlstate: None, auth: None, encryption: Some("ssl"), session_errors: &[], psql_says }
}

/// Runs psql, checks it said every staged failure, and records the attempts;
/// the TLS ones with the version (and certificate) the server was set up for.
fn run_psql(rec: &mut Recorder<'_>, c: &Client, p: &Psql<'_>, wants: &[Want], tls12: bool) -> Result<()> {
    let r = c.run(p)?;
    for want in wants {
        if !r.error.contains(want.psql_says) {
            bail!("{} as {}: staged {}, but psql said: {:?}", c.v4, p.user, want.outcome, r.error);
        }
    }
    let before = rec.expected.len();
    rec.logged_in(c, p, wants, &r)?;
    for e in rec.expected[before..].iter_mut().filter(|e| e.encryption == Some("ssl")) {
        e.tls_version = Some(if tls12 { "1.2" } else { "1.3" });
        e.certificate_subject = tls12.then_some(SUBJECT);
    }
    Ok(())
}

/// Stages ssl = on (with `settings`) and the hostssl-only pg_hba.conf around `body`.
pub(super) fn with_hostssl(
    rec: &mut Recorder<'_>,
    settings: &[(&str, &str)],
    restart: bool,
    body: impl FnOnce(&mut Recorder<'_>) -> Result<()>,
) -> Result<()> {
    let lab = rec.lab;
    let mut all = vec![("ssl", "on")];
    all.extend_from_slice(settings);
    lab.settings(&all, restart)?;
    lab.hba(Some(HOSTSSL_ONLY))?;
    let result = body(rec);
    lab.hba(None)?;
    lab.settings(&[], restart)?;
    result
}

fn tls_login(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    with_hostssl(rec, &[], false, |rec| {
        captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
            let logged_in = over_tls("tls", "");
            run_psql(rec, &c, &Psql::default(), &[logged_in], false)?;
            let scram = Psql { user: "app_scram", password: Some("scram-pass"), ..Psql::default() };
            run_psql(rec, &c, &scram, &[logged_in], false)
        })
    })
}

fn wrong_password(rec: &mut Recorder<'_>, pcap: &Path, tls12: bool) -> Result<()> {
    let c = client(rec, 0);
    let settings: &[(&str, &str)] = if tls12 { &[("ssl_max_protocol_version", "TLSv1.2")] } else { &[] };
    with_hostssl(rec, settings, false, |rec| {
        captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
            let wrong = Psql { user: "app_scram", password: Some("not-the-password"), ..Psql::default() };
            let wants =
                [over_tls("tls_login_failed", PASSWORD_FAILED), Want::failed("hba_rejected", "28000", NO_ENCRYPTION)];
            run_psql(rec, &c, &wrong, &wants, tls12)
        })
    })
}

fn tls_wrong_password(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    wrong_password(rec, pcap, false)
}

fn tls12_wrong_password(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    wrong_password(rec, pcap, true)
}

fn tls_database_missing(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    with_hostssl(rec, &[], false, |rec| {
        captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
            let p = Psql { user: "app_scram", password: Some("scram-pass"), dbname: "no_such_db", ..Psql::default() };
            let wants = [over_tls("tls_login_failed", "database \"no_such_db\" does not exist")];
            run_psql(rec, &c, &p, &wants, false)
        })
    })
}

fn tls_hba_reject(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    with_hostssl(rec, &[], false, |rec| {
        captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
            let p = Psql { user: "blocked", ..Psql::default() };
            let wants = [
                over_tls("tls_rejected", "pg_hba.conf rejects connection"),
                Want::failed("hba_rejected", "28000", NO_ENCRYPTION),
            ];
            run_psql(rec, &c, &p, &wants, false)
        })
    })
}

fn tls_too_many_clients(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    let limits = [("max_connections", "3"), ("superuser_reserved_connections", "0"), ("max_wal_senders", "0")];
    with_hostssl(rec, &limits, true, |rec| {
        captured(pcap, BRIDGE, &[], NO_TAIL, || {
            let held = hold_sessions(rec, 1..4, &["select pg_sleep(4)"])?;
            let wants = [
                over_tls("tls_rejected", "too many clients already"),
                Want::failed("too_many_clients", "53300", "too many clients already"),
            ];
            run_psql(rec, &c, &Psql::default(), &wants, false)?;
            for (held_client, child) in held {
                let r = finished(child)?;
                let before = rec.expected.len();
                rec.logged_in(&held_client, &Psql::default(), &[over_tls("tls", "")], &r)?;
                for e in &mut rec.expected[before..] {
                    e.tls_version = Some("1.3");
                }
            }
            Ok(())
        })
    })
}

fn tls_password_prompt(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    with_hostssl(rec, &[], false, |rec| {
        captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
            let prompt = Psql { user: "app_scram", typed_password: Some("scram-pass"), ..Psql::default() };
            let over = over_tls("tls", "");
            run_psql(rec, &c, &prompt, &[over, over], false)
        })
    })
}
