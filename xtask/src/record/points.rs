//! Scenarios captured at several points at once in the routed lab: on the
//! client's interface, on the router's server-side interface and on the
//! server's interface, into `captures/points/NAME.POINT.pcap` beside
//! `captures/points/NAME.expected.json`.
//!
//! Each attempt's `location` (where its packets stopped, or between which
//! points its answer was forged) follows from the rule staged and where it
//! sits on the path; `nat` from the translation staged on the router.

use std::path::{Path, PathBuf};
use std::thread::sleep;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::lab::{Client, Psql, SERVER_NS};
use crate::record::{Expected, Recorder, Staged, Want, GIVE_UP_TAIL, NO_TAIL};
use crate::routed::{self, filter, masquerade, Captures, Point, Routed, ROUTER_LAN_V4, ROUTER_NS};

/// Where an attempt's fault lies, as the points see it.
#[derive(Serialize, Clone, Copy)]
struct Location {
    kind: &'static str,
    from: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'static str>,
}

/// The SYNs reached the server's interface; nothing answered there.
const DROPPED_AT_SERVER: Location = Location { kind: "dropped_at", from: "server", to: None };
/// The SYNs left the client and never reached the router's server side.
const LOST_BEFORE_ROUTER: Location = Location { kind: "lost_between", from: "client", to: Some("router") };
/// The server's SYN-ACKs passed the router's server side and never reached the client.
const ANSWER_LOST_AFTER_ROUTER: Location = Location { kind: "answer_lost_between", from: "router", to: Some("client") };
/// The client got an answer the router's server side never saw: the router made it.
const FORGED_BEFORE_ROUTER: Location = Location { kind: "forged_between", from: "client", to: Some("router") };

#[derive(Serialize)]
struct Nat {
    kind: &'static str,
}

/// One expected attempt: the fields flat captures use, and where it failed.
#[derive(Serialize)]
struct PointAttempt {
    #[serde(flatten)]
    attempt: Expected,
    location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nat: Option<Nat>,
}

#[derive(Serialize)]
struct PointFile {
    name: &'static str,
    file: String,
}

#[derive(Serialize)]
struct ExpectedFile {
    scenario: &'static str,
    description: &'static str,
    /// Extra arguments for `pgreach analyze`.
    args: Vec<&'static str>,
    /// The first point is the clock reference.
    points: Vec<PointFile>,
    attempts: Vec<PointAttempt>,
}

/// Where a scenario captures.
#[derive(Clone, Copy)]
enum Taps {
    /// Client, router (server side) and server, in that order.
    Three,
    /// `tcpdump -i any` on the router only: each packet on both of its sides.
    RouterAny,
}

impl Taps {
    fn points(self) -> Vec<(&'static str, Point)> {
        match self {
            Taps::Three => vec![("client", Point::client(0)), ("router", Point::router()), ("server", Point::server())],
            Taps::RouterAny => vec![("router", Point::router_any())],
        }
    }
}

/// The attempts of one scenario, with the NAT staged for them.
struct Stager<'a> {
    rec: Recorder<'a>,
    attempts: Vec<PointAttempt>,
    nat: Option<&'static str>,
}

impl Stager<'_> {
    fn client(&self) -> Client {
        self.rec.lab.clients[0].clone()
    }

    /// One psql run whose TCP outcome is `staged`, failed at `location`.
    fn attempt(&mut self, p: &Psql<'_>, staged: Staged, location: Option<Location>) -> Result<&mut Expected> {
        let c = self.client();
        let said = c.run(p)?;
        let attempt = self.rec.expect(&c, p, staged, &said)?;
        self.attempts.push(PointAttempt { attempt, location, nat: self.nat.map(|kind| Nat { kind }) });
        Ok(&mut self.attempts.last_mut().context("just pushed")?.attempt)
    }

    /// One psql login that ends as `want`, with nothing lost.
    fn login(&mut self, p: &Psql<'_>, want: Want) -> Result<()> {
        let c = self.client();
        self.rec.login(&c, p, &[want])?;
        for attempt in self.rec.expected.drain(..) {
            self.attempts.push(PointAttempt { attempt, location: None, nat: self.nat.map(|kind| Nat { kind }) });
        }
        Ok(())
    }
}

type Stage = fn(&mut Stager<'_>) -> Result<()>;

/// Every scenario: name, description, extra analyze args, where it is
/// captured, and how it is staged.
fn scenarios() -> Vec<(&'static str, &'static str, Vec<&'static str>, Taps, Stage)> {
    vec![
        ("points_login", "a psql login with a password (scram-sha-256) through the router", vec![], Taps::Three, login),
        (
            "points_server_drop",
            "nft drops the SYNs in the server host's input; psql gives up at connect_timeout = 2; later a login",
            vec![],
            Taps::Three,
            server_drop,
        ),
        (
            "points_forward_drop",
            "nft drops the SYNs in the router's forward path; psql gives up at connect_timeout = 2; later a login",
            vec![],
            Taps::Three,
            forward_drop,
        ),
        (
            "points_synack_drop",
            "the router drops the server's SYN-ACKs on their way back; psql gives up at connect_timeout = 2; \
             later a login",
            vec![],
            Taps::Three,
            synack_drop,
        ),
        (
            "points_router_reset",
            "the router rejects the SYN with a TCP reset (nft `reject with tcp reset` in its forward path)",
            vec![],
            Taps::Three,
            router_reset,
        ),
        (
            "points_router_admin",
            "the router rejects the SYN with ICMP admin-prohibited (3/13) from its client-side address",
            vec![],
            Taps::Three,
            router_admin,
        ),
        (
            "points_snat_login",
            "a psql login through source NAT (masquerade) on the router's server-side interface",
            vec![],
            Taps::Three,
            snat_login,
        ),
        (
            "points_snat_server_drop",
            "through source NAT on the router, nft drops the SYNs in the server host's input; later a login",
            vec![],
            Taps::Three,
            snat_server_drop,
        ),
        (
            "points_snat_any",
            "`tcpdump -i any` on the router during a psql login through its source NAT: each packet before and \
             after translation",
            vec![],
            Taps::RouterAny,
            snat_login,
        ),
        (
            "points_dnat_login",
            "the router publishes its port 5433 to the server's 5432 (destination NAT); a psql login to it",
            vec!["--port", "5432", "--port", "5433"],
            Taps::Three,
            dnat_login,
        ),
    ]
}

/// The names of the scenarios in this module.
pub(crate) fn names() -> Vec<&'static str> {
    scenarios().into_iter().map(|(name, ..)| name).collect()
}

/// Records the scenarios named in `chosen` into `out_dir` (none: nothing).
pub(crate) fn record(out_dir: &Path, chosen: &[&str]) -> Result<()> {
    if chosen.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(out_dir)?;
    let routed = Routed::up(1)?;
    for (name, description, args, taps, stage) in scenarios().into_iter().filter(|(n, ..)| chosen.contains(n)) {
        eprintln!("recording {name}…");
        routed.clear_rules()?;
        let files: Vec<(&'static str, Point, PathBuf)> = taps
            .points()
            .into_iter()
            .map(|(point, at)| (point, at, out_dir.join(format!("{name}.{point}.pcap"))))
            .collect();
        let taps: Vec<(Point, &Path)> = files.iter().map(|(_, at, file)| (at.clone(), file.as_path())).collect();
        let mut st = Stager {
            rec: Recorder { lab: &routed.lab, expected: Vec::new(), pooler_legs: None },
            attempts: Vec::new(),
            nat: None,
        };
        let captures = Captures::start(&taps)?;
        let staged = stage(&mut st);
        sleep(NO_TAIL);
        captures.stop()?;
        staged.with_context(|| format!("scenario {name}"))?;
        // A SYN-ACK the server still retransmits would land in the next scenario's captures.
        routed::exec(SERVER_NS, "ss -K state syn-recv >/dev/null")?;
        let file = ExpectedFile {
            scenario: name,
            description,
            args,
            points: files.iter().map(|(point, _, file)| PointFile { name: point, file: file_name(file) }).collect(),
            attempts: st.attempts,
        };
        std::fs::write(out_dir.join(format!("{name}.expected.json")), serde_json::to_string_pretty(&file)? + "\n")?;
        eprintln!("  {} attempts", file.attempts.len());
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn scram() -> Psql<'static> {
    Psql { user: "app_scram", password: Some("scram-pass"), ..Routed::psql(false) }
}

/// A pcap file does not say when the capture stopped, only when its last
/// packet came: after a dropped attempt the client waits, the rule of
/// `hook` in `ns` goes, and it connects again, so the captures show they
/// still ran after it gave up.
fn then_connects(st: &mut Stager<'_>, ns: &str, hook: &str) -> Result<()> {
    sleep(GIVE_UP_TAIL);
    filter(ns, hook, "")?;
    st.attempt(&Routed::psql(false), Staged::Connects, None).map(drop)
}

fn login(st: &mut Stager<'_>) -> Result<()> {
    st.login(&scram(), Want::success("sasl"))
}

fn server_drop(st: &mut Stager<'_>) -> Result<()> {
    filter(SERVER_NS, "input", "    tcp dport 5432 drop")?;
    st.attempt(&Routed::psql(false), Staged::Dropped, Some(DROPPED_AT_SERVER))?;
    then_connects(st, SERVER_NS, "input")
}

fn forward_drop(st: &mut Stager<'_>) -> Result<()> {
    filter(ROUTER_NS, "forward", "    iifname \"lan\" tcp dport 5432 drop")?;
    st.attempt(&Routed::psql(false), Staged::Dropped, Some(LOST_BEFORE_ROUTER))?;
    then_connects(st, ROUTER_NS, "forward")
}

/// The connection's SYN marks it; its SYN-ACKs are dropped for as long as the
/// server retransmits them, while the later connection is not marked.
fn synack_drop(st: &mut Stager<'_>) -> Result<()> {
    let drop_answers = "    iifname \"wan\" ct mark 1 tcp flags & (syn | ack) == syn | ack drop";
    let mark = "    iifname \"lan\" tcp dport 5432 tcp flags & (syn | ack) == syn ct mark set 1";
    filter(ROUTER_NS, "forward", &format!("{mark}\n{drop_answers}"))?;
    st.attempt(&Routed::psql(false), Staged::Dropped, Some(ANSWER_LOST_AFTER_ROUTER))?;
    sleep(GIVE_UP_TAIL);
    filter(ROUTER_NS, "forward", drop_answers)?;
    st.attempt(&Routed::psql(false), Staged::Connects, None).map(drop)
}

/// nft's reset carries the server's address as its source.
fn router_reset(st: &mut Stager<'_>) -> Result<()> {
    filter(ROUTER_NS, "forward", "    iifname \"lan\" tcp dport 5432 reject with tcp reset")?;
    st.attempt(&Routed::psql(false), Staged::Rst, Some(FORGED_BEFORE_ROUTER)).map(drop)
}

/// The router's ICMP error comes from its own client-side address.
fn router_admin(st: &mut Stager<'_>) -> Result<()> {
    let rule = "    iifname \"lan\" meta nfproto ipv4 tcp dport 5432 reject with icmp type admin-prohibited";
    filter(ROUTER_NS, "forward", rule)?;
    let attempt = st.attempt(&Routed::psql(false), Staged::IcmpAdmin, Some(FORGED_BEFORE_ROUTER))?;
    attempt.answer_from = Some(ROUTER_LAN_V4.to_owned());
    Ok(())
}

fn snat_login(st: &mut Stager<'_>) -> Result<()> {
    masquerade(true)?;
    st.nat = Some("source");
    st.login(&scram(), Want::success("sasl"))
}

fn snat_server_drop(st: &mut Stager<'_>) -> Result<()> {
    masquerade(true)?;
    st.nat = Some("source");
    server_drop(st)
}

fn dnat_login(st: &mut Stager<'_>) -> Result<()> {
    routed::publish(5433, 5432)?;
    st.nat = Some("destination");
    st.login(&Psql { host: Some(ROUTER_LAN_V4), port: 5433, ..scram() }, Want::success("sasl"))
}
