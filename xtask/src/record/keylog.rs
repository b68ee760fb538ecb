//! Scenarios with a TLS key log: a small Python client (its `ssl` module
//! writes the key log) logs in over TLS to the lab's PostgreSQL with
//! `ssl = on`. Each capture comes with `NAME.keylog`; the expected outcomes
//! are those of the staging as if unencrypted, and, for the analysis
//! without the key log, what the TLS records alone should say.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::tls::with_hostssl;
use super::{captured, client, Expected, Recorder, Scenario, CLIENT_PORT, NO_TAIL};
use crate::lab::{sh, Client, SERVER_V4};

/// The client, shipped beside this module.
const CLIENT_SCRIPT: &str = include_str!("pg_tls_client.py");
const WRONG_PASSWORD: &str = "not-the-md5-pass";

pub(super) fn scenarios() -> Vec<(&'static str, &'static str, Vec<&'static str>, Scenario)> {
    vec![
        (
            "tls_keylog_login",
            "a client writing a TLS key log logs in over TLS 1.3 (trust) and runs a query; analyzed with the key log",
            vec!["--keylog", "captures/tls_keylog_login.keylog"],
            tls_keylog_login,
        ),
        (
            "tls_keylog_wrong_password",
            "the same client with a wrong md5 password over TLS 1.3; analyzed with the key log",
            vec!["--keylog", "captures/tls_keylog_wrong_password.keylog"],
            tls_keylog_wrong_password,
        ),
        (
            "tls_keylog_database_missing",
            "the same client, the right md5 password, a database that does not exist, over TLS 1.3",
            vec!["--keylog", "captures/tls_keylog_database_missing.keylog"],
            tls_keylog_database_missing,
        ),
        (
            "tls12_keylog_wrong_password",
            "a wrong md5 password over TLS 1.2 (AES-GCM); analyzed with the key log",
            vec!["--keylog", "captures/tls12_keylog_wrong_password.keylog"],
            tls12_keylog_wrong_password,
        ),
        (
            "tls12_keylog_chacha_login",
            "a login over TLS 1.2 with ChaCha20-Poly1305; analyzed with the key log",
            vec!["--keylog", "captures/tls12_keylog_chacha_login.keylog"],
            tls12_keylog_chacha_login,
        ),
    ]
}

/// One staged login and what it should give.
struct Login {
    user: &'static str,
    database: &'static str,
    password: &'static str,
    tls: &'static str,
    ciphers: &'static str,
    /// As if unencrypted: the outcome and SQLSTATE; and the client's words.
    outcome: &'static str,
    sqlstate: Option<&'static str>,
    client_says: &'static str,
    /// What the records alone should say, without the key log.
    without_keys: &'static str,
}

fn run(rec: &mut Recorder<'_>, pcap: &Path, login: Login) -> Result<()> {
    let c = client(rec, 0);
    let keylog = pcap.with_extension("keylog");
    // A fresh key log: the client appends.
    let _ = std::fs::remove_file(&keylog);
    let script = std::env::temp_dir().join("pgreach-pg-tls-client.py");
    std::fs::write(&script, CLIENT_SCRIPT)?;
    with_hostssl(rec, &[], false, |rec| {
        captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
            let said = run_client(&c, &script, &keylog, &login)?;
            if !said.starts_with(login.client_says) {
                bail!("{} as {}: staged {}, but the client said {said:?}", c.v4, login.user, login.outcome);
            }
            rec.expected.push(Expected {
                client: c.v4.clone(),
                server: format!("{SERVER_V4}:5432"),
                outcome: login.outcome,
                tcp_outcome: "established",
                answer_kind: None,
                answer_from: None,
                icmp_code: None,
                gave_up: None,
                min_syns: None,
                sqlstate: login.sqlstate,
                // Decrypted: the startup message is read.
                user: Some(login.user.to_owned()),
                auth: None,
                encryption: Some("ssl"),
                session_errors: None,
                tls_version: Some(login.tls),
                certificate_subject: None,
                outcome_without_keys: Some(login.without_keys),
                pooler: None,
                client_saw: said,
            });
            Ok(())
        })
    })?;
    let logged = std::fs::read_to_string(&keylog).context("the client's key log")?;
    if logged.lines().count() == 0 {
        bail!("the client wrote no key log");
    }
    Ok(())
}

fn run_client(c: &Client, script: &Path, keylog: &Path, l: &Login) -> Result<String> {
    let out = sh(&format!(
        "ip netns exec {} python3 {} {SERVER_V4} 5432 {} {} {} {} '{}' {}",
        c.ns,
        script.display(),
        l.user,
        l.database,
        l.password,
        l.tls,
        l.ciphers,
        keylog.display()
    ))?;
    Ok(out.trim().to_owned())
}

fn tls_keylog_login(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let login = Login {
        user: "postgres",
        database: "postgres",
        password: "-",
        tls: "1.3",
        ciphers: "-",
        outcome: "success",
        sqlstate: None,
        client_says: "ok",
        without_keys: "tls",
    };
    run(rec, pcap, login)
}

fn wrong_password(tls: &'static str) -> Login {
    Login {
        user: "app_md5",
        database: "postgres",
        password: WRONG_PASSWORD,
        tls,
        ciphers: if tls == "1.2" { "ECDHE-RSA-AES128-GCM-SHA256" } else { "-" },
        outcome: "auth_failed",
        sqlstate: Some("28P01"),
        client_says: "error 28P01",
        without_keys: "tls_login_failed",
    }
}

fn tls_keylog_wrong_password(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    run(rec, pcap, wrong_password("1.3"))
}

fn tls12_keylog_wrong_password(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    run(rec, pcap, wrong_password("1.2"))
}

fn tls_keylog_database_missing(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let login = Login {
        user: "app_md5",
        database: "no_such_db",
        password: "md5-pass",
        tls: "1.3",
        ciphers: "-",
        outcome: "database_missing",
        sqlstate: Some("3D000"),
        client_says: "error 3D000",
        without_keys: "tls_login_failed",
    };
    run(rec, pcap, login)
}

fn tls12_keylog_chacha_login(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let login = Login {
        user: "postgres",
        database: "postgres",
        password: "-",
        tls: "1.2",
        ciphers: "ECDHE-RSA-CHACHA20-POLY1305",
        outcome: "success",
        sqlstate: None,
        client_says: "ok",
        without_keys: "tls",
    };
    run(rec, pcap, login)
}
