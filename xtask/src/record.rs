//! `cargo xtask record`: stages each scenario in the lab, captures it on the
//! server, and writes `captures/NAME.pcap` with `captures/NAME.expected.json`.
//!
//! The expected outcome of every attempt comes from what was staged (the
//! firewall rule in force, the server stopped, the port used), checked
//! against what libpq itself reported, never from pgreach's output.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::lab::{sh, Capture, Client, ClientResult, Lab, Sniffer, SERVER_V4, SERVER_V6};

/// One expected attempt, in the order the client made them.
#[derive(Serialize, Clone)]
struct Expected {
    client: String,
    server: String,
    outcome: &'static str,
    tcp_outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer_kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gave_up: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_syns: Option<u32>,
    /// What libpq said, for the record.
    client_saw: String,
}

#[derive(Serialize)]
struct ExpectedFile {
    scenario: String,
    description: String,
    /// Extra arguments for `pgreach analyze`.
    args: Vec<String>,
    attempts: Vec<Expected>,
}

/// What the staging makes of one attempt.
#[derive(Clone, Copy)]
enum Staged {
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

/// How long a client waits before giving up on an unanswered SYN.
const CONNECT_TIMEOUT: u32 = 2;

struct Recorder<'a> {
    lab: &'a Lab,
    expected: Vec<Expected>,
}

impl Recorder<'_> {
    /// One psql attempt from `client` with the staged outcome; fails the
    /// recording if libpq did not see what the staging should produce.
    fn attempt(&mut self, client: &Client, v6: bool, port: u16, staged: Staged) -> Result<()> {
        let host = if v6 { SERVER_V6 } else { SERVER_V4 };
        let result = client.psql(host, port, "select 1", CONNECT_TIMEOUT)?;
        let expected = self.expect(client, v6, port, staged, &result)?;
        self.expected.push(expected);
        Ok(())
    }

    fn expect(&self, client: &Client, v6: bool, port: u16, staged: Staged, r: &ClientResult) -> Result<Expected> {
        let host = if v6 { SERVER_V6 } else { SERVER_V4 };
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
        })
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
}

type Scenario = fn(&mut Recorder<'_>, &Path) -> Result<()>;

/// Every scenario: name, description, extra analyze args, and how to stage it.
/// The `pcapng` scenario is captured by dumpcap; the others by tcpdump.
fn scenarios() -> Vec<(&'static str, &'static str, Vec<&'static str>, Scenario)> {
    vec![
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
        (
            "incident",
            "30 client addresses connect in rounds for about 90 s while the server's firewall and state change: \
             all fine; DROP for half the clients; REJECT admin-prohibited for all; server stopped; all fine again",
            vec![],
            incident,
        ),
    ]
}

pub fn run(names: &[String]) -> Result<()> {
    if sh("id -u")?.trim() != "0" {
        bail!("record needs root (network namespaces, nftables, tcpdump)");
    }
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../captures");
    std::fs::create_dir_all(&out_dir)?;
    let chosen: Vec<_> =
        scenarios().into_iter().filter(|(n, ..)| names.is_empty() || names.iter().any(|x| x == n)).collect();
    if chosen.is_empty() {
        bail!("no such scenario: {}", names.join(", "));
    }
    let lab = Lab::up(INCIDENT_CLIENTS)?;
    for (name, description, args, stage) in chosen {
        eprintln!("recording {name}…");
        lab.firewall("")?;
        let ext = if name == "pcapng" { "pcapng" } else { "pcap" };
        let pcap = out_dir.join(format!("{name}.{ext}"));
        let mut rec = Recorder { lab: &lab, expected: Vec::new() };
        stage(&mut rec, &pcap).with_context(|| format!("scenario {name}"))?;
        let file = ExpectedFile {
            scenario: name.to_owned(),
            description: description.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
            attempts: rec.expected,
        };
        std::fs::write(out_dir.join(format!("{name}.expected.json")), serde_json::to_string_pretty(&file)? + "\n")?;
        eprintln!("  {} attempts", file.attempts.len());
    }
    Ok(())
}

/// Captures on the server's bridge while `body` runs, then waits `tail` so
/// that silences after the last packet are in the capture too.
fn captured(pcap: &Path, iface: &str, extra: &[&str], tail: Duration, body: impl FnOnce() -> Result<()>) -> Result<()> {
    let sniffer = if pcap.extension().is_some_and(|e| e == "pcapng") { Sniffer::Dumpcap } else { Sniffer::Tcpdump };
    let dump = Capture::start(sniffer, iface, pcap, extra)?;
    let result = body();
    sleep(tail);
    dump.stop()?;
    result
}

/// Single-client scenarios capture on the bridge port that leads to client 0:
/// the wire to the client. On the bridge device itself, the RST of nft's
/// `reject with tcp reset` is never seen: the kernel sends it straight out
/// of the port.
const CLIENT_PORT: &str = "p0";
/// The incident captures on the bridge device: every client's traffic.
const BRIDGE: &str = "br0";

const NO_TAIL: Duration = Duration::from_millis(200);
/// Long enough after a given-up SYN for its silence to show (twice the last
/// retransmission gap plus a second, and more).
const GIVE_UP_TAIL: Duration = Duration::from_secs(6);

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
    let mut session: Child = c.spawn_psql(SERVER_V4, "select pg_sleep(4)")?;
    // Let the session log in before the capture starts.
    sleep(Duration::from_millis(800));
    let result = captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        let status = session.wait().context("waiting for the open session")?;
        if !status.success() {
            bail!("the open psql session failed");
        }
        rec.expected.push(Expected {
            client: c.v4.clone(),
            server: format!("{SERVER_V4}:5432"),
            outcome: "midstream",
            tcp_outcome: "midstream",
            answer_kind: None,
            answer_from: None,
            icmp_code: None,
            gave_up: None,
            min_syns: None,
            client_saw: "connected before the capture started".to_owned(),
        });
        rec.attempt(&c, false, 5432, Staged::Connects)
    });
    let _ = session.kill();
    result
}

const INCIDENT_CLIENTS: usize = 30;

fn incident(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let lab = rec.lab;
    let clients = lab.clients.clone();
    let half: Vec<&Client> = clients.iter().step_by(2).collect();
    let drop_rule: String = half.iter().map(|c| format!("    ip saddr {} tcp dport 5432 drop\n", c.v4)).collect();
    // (firewall rules, server running, outcome for a client)
    let phases: Vec<(String, bool, Box<dyn Fn(&Client) -> Staged>)> = vec![
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
                    let handles: Vec<_> = clients
                        .iter()
                        .map(|c| s.spawn(move || c.psql(SERVER_V4, 5432, "select 1", CONNECT_TIMEOUT)))
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap_or_else(|_| bail!("client thread panicked"))).collect()
                });
                for (c, r) in clients.iter().zip(results) {
                    let e = rec.expect(c, false, 5432, outcome_for(c), &r?)?;
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
