//! `cargo xtask record`: stages each scenario in the lab, captures it on the
//! server, and writes `captures/NAME.pcap` with `captures/NAME.expected.json`.
//!
//! The expected outcome of every attempt comes from what was staged (the
//! firewall rule in force, the server stopped, the port used), checked
//! against what libpq itself reported, never from pgreach's output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

mod dns;
mod keylog;
mod points;
mod tls;

use crate::lab::{finished, sh, Capture, Client, ClientResult, Lab, Psql, Sniffer, SERVER_NS, SERVER_V4};

/// One expected attempt, in the order the client made them.
#[derive(Serialize, Clone, Default)]
pub(crate) struct Expected {
    pub(crate) client: String,
    pub(crate) server: String,
    pub(crate) outcome: &'static str,
    pub(crate) tcp_outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) answer_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) answer_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) icmp_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gave_up: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) min_syns: Option<u32>,
    /// PostgreSQL's side, for logins: the error's SQLSTATE, the user in the
    /// startup message, the first authentication method, the encryption
    /// negotiated and the session's errors by SQLSTATE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sqlstate: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) auth: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) encryption: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session_errors: Option<BTreeMap<&'static str, u32>>,
    /// The pooler that answered in PostgreSQL's place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pooler: Option<&'static str>,
    /// For TLS connections: the version staged, and the certificate subject
    /// where the handshake shows it (TLS 1.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) certificate_subject: Option<&'static str>,
    /// For captures analyzed with a key log: the outcome the TLS records
    /// alone should give, without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) outcome_without_keys: Option<&'static str>,
    /// What libpq said, for the record.
    pub(crate) client_saw: String,
}

/// What a staged login should produce, at the PostgreSQL level.
#[derive(Clone, Copy)]
pub(crate) struct Want {
    pub(crate) outcome: &'static str,
    pub(crate) sqlstate: Option<&'static str>,
    /// How the first authentication request starts: `md5`, `sasl`, `ok`…
    pub(crate) auth: Option<&'static str>,
    pub(crate) encryption: Option<&'static str>,
    pub(crate) session_errors: &'static [(&'static str, u32)],
    /// What psql must print; empty for a clean success.
    pub(crate) psql_says: &'static str,
}

impl Want {
    pub(crate) const fn success(auth: &'static str) -> Want {
        Want {
            outcome: "success",
            sqlstate: None,
            auth: Some(auth),
            encryption: None,
            session_errors: &[],
            psql_says: "",
        }
    }

    pub(crate) const fn failed(outcome: &'static str, sqlstate: &'static str, psql_says: &'static str) -> Want {
        Want { outcome, sqlstate: Some(sqlstate), auth: None, encryption: None, session_errors: &[], psql_says }
    }
}

/// How a pooler's own connections to PostgreSQL end, as staged (how many
/// there are depends on the pooler's retry timing, not on the staging).
#[derive(Serialize, Clone, Copy)]
pub(crate) struct PoolerLegs {
    pub(crate) server: &'static str,
    pub(crate) outcome: &'static str,
}

#[derive(Serialize)]
struct ExpectedFile {
    scenario: String,
    description: String,
    /// Extra arguments for `pgreach analyze`.
    args: Vec<String>,
    attempts: Vec<Expected>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pooler_legs: Option<PoolerLegs>,
}

/// What the staging makes of one attempt.
#[derive(Clone, Copy)]
pub(crate) enum Staged {
    Connects,
    /// RST from the server host (nothing listening, or nft `reject with tcp reset`).
    Rst,
    /// nft `reject`: ICMP(v6) port unreachable from the server.
    IcmpPort,
    /// nft `reject with icmp(v6) … admin-prohibited`.
    IcmpAdmin,
    /// nft `drop`: no answer; the client gives up at its connect_timeout.
    Dropped,
}

pub(crate) struct Recorder<'a> {
    pub(crate) lab: &'a Lab,
    pub(crate) expected: Vec<Expected>,
    /// A pooler's own connections to PostgreSQL in the capture, as staged.
    pub(crate) pooler_legs: Option<PoolerLegs>,
}

impl Recorder<'_> {
    /// One psql attempt from `client` with the staged outcome; fails the
    /// recording if libpq did not see what the staging should produce.
    pub(crate) fn attempt(&mut self, client: &Client, v6: bool, port: u16, staged: Staged) -> Result<()> {
        let p = Psql { v6, port, ..Psql::default() };
        let result = client.run(&p)?;
        let expected = self.expect(client, &p, staged, &result)?;
        self.expected.push(expected);
        Ok(())
    }

    /// What `staged` makes of psql run `p` from `client`, checked against
    /// what libpq said (`r`).
    pub(crate) fn expect(&self, client: &Client, p: &Psql<'_>, staged: Staged, r: &ClientResult) -> Result<Expected> {
        let (host, v6, port) = (p.host(), p.v6, p.port);
        let (outcome, kind, code, gave_up, libpq_says) = match staged {
            // Trust authentication and `select 1`: a complete login.
            Staged::Connects => ("success", None, None, None, ""),
            Staged::Rst => ("refused", Some("rst"), None, None, "Connection refused"),
            Staged::IcmpPort => ("refused", Some("icmp"), Some(if v6 { 4 } else { 3 }), None, "Connection refused"),
            // Linux maps ICMPv6 admin-prohibited to EACCES, ICMP 3/13 to EHOSTUNREACH.
            Staged::IcmpAdmin => (
                "unreachable",
                Some("icmp"),
                Some(if v6 { 1 } else { 13 }),
                None,
                if v6 { "Permission denied" } else { "No route to host" },
            ),
            Staged::Dropped => ("timeout", None, None, Some("stopped_retransmitting"), "timeout expired"),
        };
        let as_staged = match staged {
            Staged::Connects => r.ok,
            _ => !r.ok && r.error.contains(libpq_says),
        };
        if !as_staged {
            bail!("{} → {host}:{port}: staged {outcome}, but libpq said: {:?}", client.v4, r.error);
        }
        Ok(Expected {
            client: if v6 { client.v6.clone() } else { client.v4.clone() },
            server: if v6 { format!("[{host}]:{port}") } else { format!("{host}:{port}") },
            outcome,
            tcp_outcome: if outcome == "success" { "established" } else { outcome },
            answer_kind: kind,
            answer_from: kind.map(|_| host.to_owned()),
            icmp_code: code,
            gave_up,
            min_syns: matches!(staged, Staged::Dropped).then_some(2),
            client_saw: if r.ok { "connected".to_owned() } else { first_line(&r.error) },
            ..Default::default()
        })
    }
}

impl Recorder<'_> {
    /// One psql run (which may make several attempts, as psql's password
    /// prompt does) with the PostgreSQL outcome of each attempt as staged.
    pub(crate) fn login(&mut self, client: &Client, p: &Psql<'_>, wants: &[Want]) -> Result<()> {
        let result = client.run(p)?;
        self.logged_in(client, p, wants, &result)
    }

    /// Checks what psql said against the last attempt's staging and records them all.
    pub(crate) fn logged_in(&mut self, client: &Client, p: &Psql<'_>, wants: &[Want], r: &ClientResult) -> Result<()> {
        let last = wants.last().context("a login wants an outcome")?;
        let as_staged = if last.psql_says.is_empty() { r.ok } else { r.error.contains(last.psql_says) };
        if !as_staged {
            bail!("{} as {}: staged {}, but psql said: {:?}", client.v4, p.user, last.outcome, r.error);
        }
        for want in wants {
            let host = p.host();
            self.expected.push(Expected {
                client: if p.v6 { client.v6.clone() } else { client.v4.clone() },
                server: if p.v6 { format!("[{host}]:{}", p.port) } else { format!("{host}:{}", p.port) },
                outcome: want.outcome,
                tcp_outcome: "established",
                sqlstate: want.sqlstate,
                // Refused or encrypted before the startup message: no user on the wire.
                user: (want.encryption != Some("ssl") && want.outcome != "ssl_refused").then(|| p.user.to_owned()),
                auth: want.auth,
                encryption: want.encryption,
                session_errors: (!want.session_errors.is_empty())
                    .then(|| want.session_errors.iter().copied().collect()),
                client_saw: if r.ok { "connected".to_owned() } else { first_line(&r.error) },
                ..Default::default()
            });
        }
        Ok(())
    }
}

pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

pub(crate) type Scenario = fn(&mut Recorder<'_>, &Path) -> Result<()>;

/// Every scenario: name, description, extra analyze args, and how to stage it.
/// The `pcapng` scenario is captured by dumpcap; the others by tcpdump.
fn scenarios() -> Vec<(&'static str, &'static str, Vec<&'static str>, Scenario)> {
    let mut all: Vec<(&'static str, &'static str, Vec<&'static str>, Scenario)> = vec![
        ("normal", "psql connects three times over IPv4 (Ethernet capture on the server's bridge port)", vec![], normal),
        ("ipv6", "psql connects over IPv6", vec![], ipv6),
        ("server_stopped", "PostgreSQL is stopped: the server host answers the SYN with RST", vec![], server_stopped),
        (
            "wrong_port",
            "psql connects to 5432, then to 5433 where nothing listens (analyzed with both ports)",
            vec!["--port", "5432", "--port", "5433"],
            wrong_port,
        ),
        (
            "nft_drop",
            "nft drops one client's SYNs to 5432; psql gives up at connect_timeout=2; later another client connects",
            vec![],
            nft_drop,
        ),
        ("nft_reject", "nft `reject`: ICMP port unreachable from the server", vec![], nft_reject),
        ("nft_reject_tcp_reset", "nft `reject with tcp reset`", vec![], nft_reject_tcp_reset),
        ("nft_reject_admin", "nft `reject with icmp type admin-prohibited` (ICMP 3/13)", vec![], nft_reject_admin),
        (
            "nft_drop_ipv6",
            "the same over IPv6",
            vec![],
            nft_drop_ipv6,
        ),
        (
            "cooked_any",
            "`tcpdump -i any` (Linux cooked v2) on a bridged host: every packet is captured twice; one session, one nft reject",
            vec![],
            cooked_any,
        ),
        (
            "cooked_v1",
            "`tcpdump -i any -y LINUX_SLL` (Linux cooked v1): one session, one nft reject over IPv6",
            vec![],
            cooked_v1,
        ),
        (
            "pcapng",
            "dumpcap (pcapng): a session, then nft `reject` (ICMP port unreachable)",
            vec![],
            pcapng,
        ),
        (
            "midstream",
            "the capture starts while a psql session is open; then a new session",
            vec![],
            midstream,
        ),
        ("pg_logins", "successful logins with scram-sha-256, md5 and trust authentication", vec![], pg_logins),
        (
            "pg_auth_failures",
            "a wrong password (scram); roles that do not exist under md5, scram-sha-256 and trust",
            vec![],
            pg_auth_failures,
        ),
        (
            "pg_hba_rejected",
            "a role matching a pg_hba.conf `reject` line; a replication connection with no pg_hba.conf line",
            vec![],
            pg_hba_rejected,
        ),
        ("pg_database_missing", "psql to a database that does not exist", vec![], pg_database_missing),
        (
            "pg_too_many_clients",
            "max_connections = 3 held by three sessions; a fourth client is turned away",
            vec![],
            pg_too_many_clients,
        ),
        (
            "pg_shutdown",
            "two sessions run while the server shuts down (fast); then a client finds it stopped",
            vec![],
            pg_shutdown,
        ),
        (
            "pg_terminate_backend",
            "a session ended by pg_terminate_backend from another client",
            vec![],
            pg_terminate_backend,
        ),
        (
            "pg_idle_session_timeout",
            "a session idle longer than idle_session_timeout (1 s)",
            vec![],
            pg_idle_session_timeout,
        ),
        (
            "pg_ssl",
            "sslmode=prefer and sslmode=require against a server without SSL (N), then sslmode=prefer with SSL on (S)",
            vec![],
            pg_ssl,
        ),
        (
            "pg_password_prompt",
            "psql without a password: asked, it closes, prompts on its terminal and reconnects with the password",
            vec![],
            pg_password_prompt,
        ),
        ("pg_query_errors", "a session whose queries fail: division by zero, a missing table", vec![], pg_query_errors),
        (
            "pg_pgbench",
            "pgbench -C (a new connection per transaction) with 2 clients and 5 transactions each, scram-sha-256",
            vec![],
            pg_pgbench,
        ),
        (
            "pg_lc_messages",
            "a wrong password against a server with lc_messages = fr_FR.UTF-8",
            vec![],
            pg_lc_messages,
        ),
        (
            "incident",
            "30 client addresses connect in rounds for about 90 s while the server's firewall and state change: \
             all fine; DROP for half the clients; REJECT admin-prohibited for all; server stopped; all fine again",
            vec![],
            incident,
        ),
    ];
    all.extend(crate::pooler::scenarios());
    all.extend(tls::scenarios());
    all.extend(keylog::scenarios());
    all
}

pub fn run(names: &[String]) -> Result<()> {
    if sh("id -u")?.trim() != "0" {
        bail!("record needs root (network namespaces, nftables, tcpdump)");
    }
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../captures");
    std::fs::create_dir_all(&out_dir)?;
    let wanted = |n: &str| names.is_empty() || names.iter().any(|x| x == n);
    let chosen: Vec<_> = scenarios().into_iter().filter(|(n, ..)| wanted(n)).collect();
    let at_points: Vec<&str> = points::names().into_iter().filter(|n| wanted(n)).collect();
    let wrong_host: Vec<&str> = dns::names_recorded().into_iter().filter(|n| wanted(n)).collect();
    if chosen.is_empty() && at_points.is_empty() && wrong_host.is_empty() {
        bail!("no such scenario: {}", names.join(", "));
    }
    if !chosen.is_empty() {
        record_flat(&out_dir, chosen)?;
    }
    // The routed lab replaces the flat one: both hold the server namespace.
    dns::record(&out_dir, &wrong_host)?;
    points::record(&out_dir.join("points"), &at_points)
}

/// Records scenarios captured at one point, on the server's bridge.
fn record_flat(out_dir: &Path, chosen: Vec<(&str, &str, Vec<&str>, Scenario)>) -> Result<()> {
    let lab = Lab::up(INCIDENT_CLIENTS)?;
    for (name, description, args, stage) in chosen {
        eprintln!("recording {name}…");
        lab.firewall("")?;
        let ext = if name == "pcapng" { "pcapng" } else { "pcap" };
        let pcap = out_dir.join(format!("{name}.{ext}"));
        let mut rec = Recorder { lab: &lab, expected: Vec::new(), pooler_legs: None };
        stage(&mut rec, &pcap).with_context(|| format!("scenario {name}"))?;
        let file = ExpectedFile {
            scenario: name.to_owned(),
            description: description.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
            attempts: rec.expected,
            pooler_legs: rec.pooler_legs,
        };
        std::fs::write(out_dir.join(format!("{name}.expected.json")), serde_json::to_string_pretty(&file)? + "\n")?;
        eprintln!("  {} attempts", file.attempts.len());
    }
    Ok(())
}

/// Captures on the server's bridge while `body` runs, then waits `tail` so
/// that silences after the last packet are in the capture too.
pub(crate) fn captured(
    pcap: &Path,
    iface: &str,
    extra: &[&str],
    tail: Duration,
    body: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let sniffer = if pcap.extension().is_some_and(|e| e == "pcapng") { Sniffer::Dumpcap } else { Sniffer::Tcpdump };
    let dump = Capture::start(SERVER_NS, sniffer, iface, pcap, extra)?;
    let result = body();
    sleep(tail);
    dump.stop()?;
    result
}

/// Single-client scenarios capture on the bridge port that leads to client 0:
/// the wire to the client. On the bridge device itself, the RST of nft's
/// `reject with tcp reset` is never seen: the kernel sends it straight out
/// of the port.
pub(crate) const CLIENT_PORT: &str = "p0";
/// The incident captures on the bridge device: every client's traffic.
pub(crate) const BRIDGE: &str = "br0";

pub(crate) const NO_TAIL: Duration = Duration::from_millis(200);
/// Long enough after a given-up SYN for its silence to show (twice the last
/// retransmission gap plus a second, and more).
pub(crate) const GIVE_UP_TAIL: Duration = Duration::from_secs(6);

fn normal(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        for _ in 0..3 {
            rec.attempt(&c, false, 5432, Staged::Connects)?;
        }
        Ok(())
    })
}

fn ipv6(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || rec.attempt(&c, true, 5432, Staged::Connects))
}

fn server_stopped(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    let lab = rec.lab;
    lab.stop_server()?;
    let result = captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        rec.attempt(&c, false, 5432, Staged::Rst)?;
        rec.attempt(&c, true, 5432, Staged::Rst)
    });
    lab.start_server()?;
    result
}

fn wrong_port(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        rec.attempt(&c, false, 5432, Staged::Connects)?;
        rec.attempt(&c, false, 5433, Staged::Rst)
    })
}

/// A pcap file does not say when the capture stopped, only when its last
/// packet came: in a DROP scenario another client connects after the first
/// gave up, so the capture shows it was still running. The rule drops only
/// the first client's SYNs.
fn dropped_then_later_traffic(rec: &mut Recorder<'_>, pcap: &Path, v6: bool) -> Result<()> {
    let (c, other) = (rec.lab.clients[0].clone(), rec.lab.clients[1].clone());
    let rule = if v6 {
        format!("    ip6 saddr {} tcp dport 5432 drop", c.v6)
    } else {
        format!("    ip saddr {} tcp dport 5432 drop", c.v4)
    };
    rec.lab.firewall(&rule)?;
    captured(pcap, BRIDGE, &[], NO_TAIL, || {
        rec.attempt(&c, v6, 5432, Staged::Dropped)?;
        sleep(GIVE_UP_TAIL);
        rec.attempt(&other, v6, 5432, Staged::Connects)
    })
}

fn nft_drop(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    dropped_then_later_traffic(rec, pcap, false)
}

fn nft_reject(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    rec.lab.firewall("    tcp dport 5432 reject")?;
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        rec.attempt(&c, false, 5432, Staged::IcmpPort)?;
        rec.attempt(&c, true, 5432, Staged::IcmpPort)
    })
}

fn nft_reject_tcp_reset(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    rec.lab.firewall("    tcp dport 5432 reject with tcp reset")?;
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || rec.attempt(&c, false, 5432, Staged::Rst))
}

fn nft_reject_admin(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    rec.lab.firewall(
        "    meta nfproto ipv4 tcp dport 5432 reject with icmp type admin-prohibited\n    \
         meta nfproto ipv6 tcp dport 5432 reject with icmpv6 type admin-prohibited",
    )?;
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        rec.attempt(&c, false, 5432, Staged::IcmpAdmin)?;
        rec.attempt(&c, true, 5432, Staged::IcmpAdmin)
    })
}

fn nft_drop_ipv6(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    dropped_then_later_traffic(rec, pcap, true)
}

fn cooked_any(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    let lab = rec.lab;
    captured(pcap, "any", &[], NO_TAIL, || {
        rec.attempt(&c, false, 5432, Staged::Connects)?;
        lab.firewall("    tcp dport 5432 reject")?;
        rec.attempt(&c, false, 5432, Staged::IcmpPort)
    })
}

fn cooked_v1(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    let lab = rec.lab;
    captured(pcap, "any", &["-y", "LINUX_SLL"], NO_TAIL, || {
        rec.attempt(&c, true, 5432, Staged::Connects)?;
        lab.firewall("    tcp dport 5432 reject")?;
        rec.attempt(&c, true, 5432, Staged::IcmpPort)
    })
}

fn pcapng(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    let lab = rec.lab;
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        rec.attempt(&c, false, 5432, Staged::Connects)?;
        lab.firewall("    tcp dport 5432 reject")?;
        rec.attempt(&c, false, 5432, Staged::IcmpPort)
    })
}

fn midstream(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = rec.lab.clients[0].clone();
    let session = c.spawn(&Psql { commands: &["select pg_sleep(4)"], ..Psql::default() })?;
    // Let the session log in before the capture starts.
    sleep(Duration::from_millis(800));
    let result = captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        if !finished(session)?.ok {
            bail!("the open psql session failed");
        }
        rec.expected.push(Expected {
            client: c.v4.clone(),
            server: format!("{SERVER_V4}:5432"),
            outcome: "midstream",
            tcp_outcome: "midstream",
            client_saw: "connected before the capture started".to_owned(),
            ..Default::default()
        });
        rec.attempt(&c, false, 5432, Staged::Connects)
    });
    result
}

const INCIDENT_CLIENTS: usize = 30;

/// One phase of the incident: firewall rules, whether the server runs, and
/// the outcome staged for each client.
type IncidentPhase<'a> = (String, bool, Box<dyn Fn(&Client) -> Staged + 'a>);

fn incident(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let lab = rec.lab;
    let clients = lab.clients.clone();
    let half: Vec<&Client> = clients.iter().step_by(2).collect();
    let drop_rule: String = half.iter().map(|c| format!("    ip saddr {} tcp dport 5432 drop\n", c.v4)).collect();
    let phases: Vec<IncidentPhase> = vec![
        (String::new(), true, Box::new(|_| Staged::Connects)),
        (
            drop_rule,
            true,
            Box::new(
                move |c: &Client| {
                    if half.iter().any(|h| h.v4 == c.v4) {
                        Staged::Dropped
                    } else {
                        Staged::Connects
                    }
                },
            ),
        ),
        ("    tcp dport 5432 reject with icmp type admin-prohibited".to_owned(), true, Box::new(|_| Staged::IcmpAdmin)),
        (String::new(), false, Box::new(|_| Staged::Rst)),
        (String::new(), true, Box::new(|_| Staged::Connects)),
    ];
    captured(pcap, BRIDGE, &[], GIVE_UP_TAIL, || {
        for (rules, running, outcome_for) in &phases {
            lab.firewall(rules)?;
            if !running {
                lab.stop_server()?;
            }
            for _round in 0..3 {
                // Every client connects at once; the round ends when all have an answer.
                let results: Vec<Result<ClientResult>> = std::thread::scope(|s| {
                    let handles: Vec<_> = clients.iter().map(|c| s.spawn(move || c.run(&Psql::default()))).collect();
                    handles.into_iter().map(|h| h.join().unwrap_or_else(|_| bail!("client thread panicked"))).collect()
                });
                for (c, r) in clients.iter().zip(results) {
                    let e = rec.expect(c, &Psql::default(), outcome_for(c), &r?)?;
                    rec.expected.push(e);
                }
                sleep(Duration::from_secs(4));
            }
            if !running {
                lab.start_server()?;
            }
        }
        Ok(())
    })
}

pub(crate) fn client(rec: &Recorder<'_>, i: usize) -> Client {
    rec.lab.clients[i].clone()
}

fn pg_logins(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        let scram = Psql { user: "app_scram", password: Some("scram-pass"), ..Psql::default() };
        rec.login(&c, &scram, &[Want::success("sasl")])?;
        let md5 = Psql { user: "app_md5", password: Some("md5-pass"), ..Psql::default() };
        rec.login(&c, &md5, &[Want::success("md5")])?;
        rec.login(&c, &Psql::default(), &[Want::success("ok")])
    })
}

const PASSWORD_FAILED: &str = "password authentication failed";

fn pg_auth_failures(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    let failed = Want::failed("auth_failed", "28P01", PASSWORD_FAILED);
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        let wrong = Psql { user: "app_scram", password: Some("not-the-password"), ..Psql::default() };
        rec.login(&c, &wrong, &[failed])?;
        // PostgreSQL hides a missing role behind a (mock) challenge under password methods.
        for user in ["ghost_md5", "ghost_scram"] {
            rec.login(&c, &Psql { user, password: Some("whatever"), ..Psql::default() }, &[failed])?;
        }
        let trust = Psql { user: "ghost_trust", ..Psql::default() };
        rec.login(&c, &trust, &[Want::failed("role_missing", "28000", "role \"ghost_trust\" does not exist")])
    })
}

fn pg_hba_rejected(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        let blocked = Psql { user: "blocked", ..Psql::default() };
        rec.login(&c, &blocked, &[Want::failed("hba_rejected", "28000", "pg_hba.conf rejects connection")])?;
        let replication = Psql { extra: "replication=true", commands: &["IDENTIFY_SYSTEM"], ..Psql::default() };
        let no_entry = Want::failed("hba_rejected", "28000", "no pg_hba.conf entry for replication connection");
        rec.login(&c, &replication, &[no_entry])
    })
}

fn pg_database_missing(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        let p = Psql { dbname: "no_such_db", ..Psql::default() };
        rec.login(&c, &p, &[Want::failed("database_missing", "3D000", "database \"no_such_db\" does not exist")])
    })
}

/// Starts sessions from clients `from..to` that sleep, and waits for them to be in.
fn hold_sessions(
    rec: &Recorder<'_>,
    clients: std::ops::Range<usize>,
    sql: &'static [&'static str],
) -> Result<Vec<(Client, std::process::Child)>> {
    let mut held = Vec::new();
    for i in clients {
        let c = client(rec, i);
        let child = c.spawn(&Psql { commands: sql, application_name: "held", ..Psql::default() })?;
        held.push((c, child));
    }
    sleep(Duration::from_millis(1500));
    Ok(held)
}

fn pg_too_many_clients(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let lab = rec.lab;
    lab.settings(&[("max_connections", "3"), ("superuser_reserved_connections", "0"), ("max_wal_senders", "0")], true)?;
    let c = client(rec, 0);
    let result = captured(pcap, BRIDGE, &[], NO_TAIL, || {
        let held = hold_sessions(rec, 1..4, &["select pg_sleep(4)"])?;
        rec.login(&c, &Psql::default(), &[Want::failed("too_many_clients", "53300", "too many clients already")])?;
        for (held_client, child) in held {
            let r = finished(child)?;
            rec.logged_in(&held_client, &Psql::default(), &[Want::success("ok")], &r)?;
        }
        Ok(())
    });
    lab.settings(&[], true)?;
    result
}

fn pg_shutdown(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let lab = rec.lab;
    let c = client(rec, 0);
    let terminated = Want {
        auth: Some("ok"),
        ..Want::failed("terminated", "57P01", "terminating connection due to administrator command")
    };
    let result = captured(pcap, BRIDGE, &[], NO_TAIL, || {
        let held = hold_sessions(rec, 1..3, &["select pg_sleep(10)"])?;
        lab.stop_server()?;
        for (held_client, child) in held {
            let r = finished(child)?;
            rec.logged_in(&held_client, &Psql::default(), &[terminated], &r)?;
        }
        rec.attempt(&c, false, 5432, Staged::Rst)
    });
    lab.start_server()?;
    result
}

fn pg_terminate_backend(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    captured(pcap, BRIDGE, &[], NO_TAIL, || {
        let held = hold_sessions(rec, 1..2, &["select pg_sleep(10)"])?;
        let kill = Psql {
            commands: &["select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'held'"],
            ..Psql::default()
        };
        rec.login(&c, &kill, &[Want::success("ok")])?;
        let terminated = Want {
            auth: Some("ok"),
            ..Want::failed("terminated", "57P01", "terminating connection due to administrator command")
        };
        for (held_client, child) in held {
            let r = finished(child)?;
            rec.logged_in(&held_client, &Psql::default(), &[terminated], &r)?;
        }
        Ok(())
    })
}

fn pg_idle_session_timeout(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        let idle = Psql {
            extra: "options='-c idle_session_timeout=1000'",
            commands: &[],
            stdin_from: Some("(echo 'select 1;'; sleep 3; echo 'select 2;')"),
            ..Psql::default()
        };
        let want = Want { auth: Some("ok"), ..Want::failed("terminated", "57P05", "idle-session timeout") };
        rec.login(&c, &idle, &[want])
    })
}

fn pg_ssl(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let lab = rec.lab;
    let c = client(rec, 0);
    let result = captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        let prefer = Psql { sslmode: "prefer", ..Psql::default() };
        rec.login(&c, &prefer, &[Want { encryption: Some("ssl_refused"), ..Want::success("ok") }])?;
        let require = Psql { sslmode: "require", ..Psql::default() };
        let refused = Want {
            outcome: "ssl_refused",
            sqlstate: None,
            auth: None,
            encryption: Some("ssl_refused"),
            session_errors: &[],
            psql_says: "server does not support SSL, but SSL was required",
        };
        rec.login(&c, &require, &[refused])?;
        lab.settings(&[("ssl", "on")], false)?;
        let tls = Want {
            outcome: "tls",
            sqlstate: None,
            auth: None,
            encryption: Some("ssl"),
            session_errors: &[],
            psql_says: "",
        };
        rec.login(&c, &prefer, &[tls])
    });
    lab.settings(&[], false)?;
    result
}

fn pg_password_prompt(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        let prompt = Psql { user: "app_scram", typed_password: Some("scram-pass"), ..Psql::default() };
        let abandoned = Want {
            outcome: "auth_abandoned",
            sqlstate: None,
            auth: Some("sasl"),
            encryption: None,
            session_errors: &[],
            psql_says: "",
        };
        rec.login(&c, &prompt, &[abandoned, Want::success("sasl")])
    })
}

fn pg_query_errors(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        let p = Psql { commands: &["select 1/0", "select * from no_such_table", "select 1"], ..Psql::default() };
        let want = Want {
            session_errors: &[("22012", 1), ("42P01", 1)],
            psql_says: "division by zero",
            ..Want::success("ok")
        };
        rec.login(&c, &p, &[want])
    })
}

/// pgbench -C: each transaction on its own connection, plus the one pgbench
/// opens first to read the scale of its select-only script's tables.
fn pg_pgbench(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    const CLIENTS: u32 = 2;
    const TRANSACTIONS: u32 = 5;
    let c = client(rec, 0);
    rec.lab.pgbench_tables()?;
    let mut report = String::new();
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        report = c.pgbench(&format!("-C -c {CLIENTS} -j 1 -t {TRANSACTIONS}"))?;
        Ok(())
    })?;
    let processed = report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .context("pgbench's report")?
        .trim()
        .to_owned();
    let want = format!("{0}/{0}", CLIENTS * TRANSACTIONS);
    if processed != want {
        bail!("pgbench processed {processed}, staged {want}: {report}");
    }
    let p = Psql { user: "app_scram", password: Some("scram-pass"), ..Psql::default() };
    let said = ClientResult { ok: true, error: String::new() };
    let wants = vec![Want::success("sasl"); (1 + CLIENTS * TRANSACTIONS) as usize];
    rec.logged_in(&c, &p, &wants, &said)
}

fn pg_lc_messages(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let lab = rec.lab;
    let c = client(rec, 0);
    lab.settings(&[("lc_messages", "fr_FR.UTF-8")], false)?;
    let result = captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        let wrong = Psql { user: "app_scram", password: Some("not-the-password"), ..Psql::default() };
        rec.login(&c, &wrong, &[Want::failed("auth_failed", "28P01", "authentification par mot de passe")])
    });
    lab.settings(&[], false)?;
    result
}
