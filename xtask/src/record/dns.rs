//! The wrong host, recorded in the routed lab: clients that look their
//! server up in a dnsmasq on the router (`/etc/netns/pgr-c0/resolv.conf`)
//! and get the server, a stale address nobody holds (the router answers
//! ICMP host unreachable), NXDOMAIN, no answer at all, or an answer that
//! changes between two lookups; and, captured with `-i any` on the server,
//! PostgreSQL listening on localhost only and a second cluster on another
//! port. Written flat into `captures/NAME.pcap` with
//! `captures/NAME.expected.json`, whose `inferences` are the diagnosis
//! lines the staging implies.

use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::lab::{sh, Client, ClientResult, Psql, PG_BIN, SERVER_NS, WORK};
use crate::record::{first_line, Expected, Recorder, Staged, Want, NO_TAIL};
use crate::routed::{self, filter, Captures, Point, Routed, ROUTER_LAN_V4, ROUTER_NS, SERVER_V4};

/// dnsmasq listens on the router's client-side address: the clients' resolver.
const RESOLVER: &str = ROUTER_LAN_V4;
/// Addresses on the server's subnet that nobody holds: the router's ARP for
/// them fails and it answers the SYN with ICMP host unreachable.
const STALE: &str = "192.0.2.77";
const MOVED_TO: &str = "192.0.2.78";
/// The TTL dnsmasq gives its answers, in seconds.
const TTL: u32 = 60;
/// After a lookup no answer followed: longer than pgreach waits after the
/// last query (8 s), so the capture shows the client stopped asking.
const NO_ANSWER_TAIL: Duration = Duration::from_secs(10);
/// The second cluster's port.
const SECOND_PORT: u16 = 5433;

/// The lookup an attempt should name.
#[derive(Serialize)]
struct ExpectedLookup {
    name: &'static str,
    /// `None`: no answer came.
    rcode: Option<&'static str>,
    addresses: Vec<&'static str>,
}

#[derive(Serialize)]
struct DnsAttempt {
    #[serde(flatten)]
    attempt: Expected,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<ExpectedLookup>,
}

/// A line the diagnosis must hold under `outcome`, with that confidence.
#[derive(Serialize)]
struct ExpectedInference {
    outcome: &'static str,
    confidence: &'static str,
    contains: String,
}

#[derive(Serialize)]
struct ExpectedFile {
    scenario: &'static str,
    description: &'static str,
    args: Vec<&'static str>,
    attempts: Vec<DnsAttempt>,
    inferences: Vec<ExpectedInference>,
}

/// What a scenario stages, beside the lab.
struct Stager<'a> {
    rec: Recorder<'a>,
    attempts: Vec<DnsAttempt>,
    inferences: Vec<ExpectedInference>,
    dnsmasq: &'a Dnsmasq,
}

impl Stager<'_> {
    fn client(&self) -> Client {
        self.rec.lab.clients[0].clone()
    }

    /// psql to `name`, which the staging sends to `address`, ending as `staged`.
    fn psql_to_name(&mut self, name: &'static str, address: &'static str, staged: Staged) -> Result<&mut Expected> {
        let c = self.client();
        let p = Psql { host: Some(name), connect_timeout: 10, ..Psql::default() };
        let said = c.run(&p)?;
        let mut attempt = self.rec.expect(&c, &p, staged, &said)?;
        attempt.server = format!("{address}:5432");
        if attempt.answer_from.is_some() {
            attempt.answer_from = Some(address.to_owned());
        }
        let dns = ExpectedLookup { name, rcode: Some("no_error"), addresses: vec![address] };
        self.attempts.push(DnsAttempt { attempt, dns: Some(dns) });
        Ok(&mut self.attempts.last_mut().context("just pushed")?.attempt)
    }

    /// psql to `name` at the stale address: the router's ICMP host unreachable.
    fn unreachable(&mut self, name: &'static str, address: &'static str) -> Result<()> {
        // libpq says "No route to host" for ICMP host unreachable as for admin-prohibited.
        let attempt = self.psql_to_name(name, address, Staged::IcmpAdmin)?;
        attempt.answer_from = Some(ROUTER_LAN_V4.to_owned());
        attempt.icmp_code = Some(1);
        Ok(())
    }

    /// psql to `name`, whose lookup fails: no SYN, a `dns_failed` attempt.
    fn lookup_fails(&mut self, name: &'static str, rcode: Option<&'static str>, libpq_says: &str) -> Result<()> {
        let c = self.client();
        let said = c.run(&Psql { host: Some(name), ..Psql::default() })?;
        if said.ok || !said.error.contains(libpq_says) {
            bail!("psql host={name}: staged a failed lookup ({libpq_says}), but libpq said {:?}", said.error);
        }
        let attempt = failed_lookup(&c, &said);
        self.attempts.push(DnsAttempt { attempt, dns: Some(ExpectedLookup { name, rcode, addresses: vec![] }) });
        Ok(())
    }

    fn infer(&mut self, outcome: &'static str, confidence: &'static str, contains: String) {
        self.inferences.push(ExpectedInference { outcome, confidence, contains });
    }
}

/// A lookup that failed, as pgreach reports it: the client and its
/// resolver, no TCP at all.
fn failed_lookup(c: &Client, said: &ClientResult) -> Expected {
    Expected {
        client: c.v4.clone(),
        server: format!("{RESOLVER}:53"),
        outcome: "dns_failed",
        tcp_outcome: "not_attempted",
        client_saw: first_line(&said.error),
        ..Default::default()
    }
}

/// dnsmasq in the router namespace, answering from a hosts file for
/// `lab.test` (NXDOMAIN for any other name there), forwarding nothing.
struct Dnsmasq;

const HOSTS: &str = "/tmp/pgreach-lab/dns-hosts";
const PID: &str = "/tmp/pgreach-lab/dnsmasq.pid";

impl Dnsmasq {
    fn start(hosts: &str) -> Result<Dnsmasq> {
        std::fs::write(HOSTS, hosts)?;
        routed::exec(
            ROUTER_NS,
            &format!(
                "dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --addn-hosts={HOSTS} --local=/lab.test/ \
                 --listen-address={RESOLVER} --bind-interfaces --local-ttl={TTL} --user=root --group=root \
                 --pid-file={PID} --log-queries --log-facility={WORK}/dnsmasq.log"
            ),
        )?;
        Ok(Dnsmasq)
    }

    /// Replaces the names and has dnsmasq read them again (SIGHUP also empties its cache).
    fn hosts(&self, hosts: &str) -> Result<()> {
        std::fs::write(HOSTS, hosts)?;
        sh(&format!("kill -HUP $(cat {PID})"))?;
        sleep(Duration::from_millis(300));
        Ok(())
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = sh(&format!("test -s {PID} && kill $(cat {PID})"));
    }
}

/// The client's resolver: `/etc/netns/NS/resolv.conf`, which `ip netns
/// exec` puts in place of /etc/resolv.conf; removed when dropped.
struct ResolvConf(String);

impl ResolvConf {
    fn set(ns: &str, options: &str) -> Result<ResolvConf> {
        let dir = format!("/etc/netns/{ns}");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(format!("{dir}/resolv.conf"), format!("nameserver {RESOLVER}\noptions {options}\n"))?;
        Ok(ResolvConf(dir))
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The names at first: the server's, and one nobody's address (`STALE`).
const NAMES: &str = "192.0.2.66 db.lab.test moving.lab.test\n192.0.2.77 stale.lab.test\n";

/// Where a scenario captures: the client's interface, or every interface
/// (loopback too) of the client or of the server host.
#[derive(Clone, Copy)]
enum Tap {
    Client,
    ClientAny,
    ServerAny,
}

type Stage = fn(&mut Stager<'_>) -> Result<()>;
/// Name, description, extra analyze args, the client's resolver options, tap, staging.
type Scenario = (&'static str, &'static str, Vec<&'static str>, &'static str, Tap, Stage);

fn scenarios() -> Vec<Scenario> {
    vec![
        (
            "dns_names",
            "a client resolves its server's name with a dnsmasq on the router: db.lab.test (the server, logs in), \
             stale.lab.test (an address nobody holds: ICMP host unreachable from the router), moving.lab.test \
             (the server, then, after the record changed, an address nobody holds)",
            vec![],
            "timeout:1 attempts:2",
            Tap::Client,
            names,
        ),
        (
            "dns_nxdomain",
            "psql host=missing.lab.test: the resolver says NXDOMAIN, no SYN is sent",
            vec![],
            "timeout:1 attempts:2",
            Tap::Client,
            nxdomain,
        ),
        (
            "dns_no_answer",
            "psql host=db.lab.test while the router drops the client's DNS queries: glibc asks twice (timeout:1 \
             attempts:2) and gives up",
            vec![],
            "timeout:1 attempts:2",
            Tap::Client,
            no_answer,
        ),
        (
            "dns_tcp",
            "the client's resolver asks over TCP (options use-vc): db.lab.test logs in, stale.lab.test is unreachable",
            vec![],
            "use-vc timeout:1 attempts:2",
            Tap::Client,
            over_tcp,
        ),
        (
            "listen_localhost",
            "PostgreSQL with listen_addresses = 'localhost', captured with -i any on its host: a client over the \
             network is refused twice while a local client logs in over 127.0.0.1",
            vec![],
            "",
            Tap::ServerAny,
            listen_localhost,
        ),
        (
            "second_cluster",
            "the cluster on 5432 is stopped while a second cluster runs on 5433, captured with -i any on the \
             server: the client on 5432 is refused, on 5433 it logs in",
            vec!["--port", "5432", "--port", "5433"],
            "",
            Tap::ServerAny,
            second_cluster,
        ),
        (
            "localhost_in_client",
            "psql host=127.0.0.1 on a client host without PostgreSQL (as in a container), captured with -i any \
             there: refused on loopback",
            vec![],
            "",
            Tap::ClientAny,
            localhost_in_client,
        ),
    ]
}

/// The names of the scenarios in this module.
pub(crate) fn names_recorded() -> Vec<&'static str> {
    scenarios().into_iter().map(|(name, ..)| name).collect()
}

/// Records the scenarios named in `chosen` into `out_dir` (none: nothing).
pub(crate) fn record(out_dir: &Path, chosen: &[&str]) -> Result<()> {
    if chosen.is_empty() {
        return Ok(());
    }
    let routed = Routed::up(1)?;
    let dnsmasq = Dnsmasq::start(NAMES)?;
    for (name, description, args, options, tap, stage) in scenarios().into_iter().filter(|(n, ..)| chosen.contains(n)) {
        eprintln!("recording {name}…");
        routed.clear_rules()?;
        dnsmasq.hosts(NAMES)?;
        let resolv = ResolvConf::set(&routed.lab.clients[0].ns, options)?;
        let pcap = out_dir.join(format!("{name}.pcap"));
        let point = match tap {
            Tap::Client => Point::client(0),
            Tap::ClientAny => Point { ns: routed.lab.clients[0].ns.clone(), iface: "any".to_owned() },
            Tap::ServerAny => Point { ns: SERVER_NS.to_owned(), iface: "any".to_owned() },
        };
        let mut st = Stager {
            rec: Recorder { lab: &routed.lab, expected: Vec::new(), pooler_legs: None },
            attempts: Vec::new(),
            inferences: Vec::new(),
            dnsmasq: &dnsmasq,
        };
        let captures = Captures::start(&[(point, pcap.as_path())])?;
        let staged = stage(&mut st);
        sleep(NO_TAIL);
        captures.stop()?;
        drop(resolv);
        staged.with_context(|| format!("scenario {name}"))?;
        let file = ExpectedFile { scenario: name, description, args, attempts: st.attempts, inferences: st.inferences };
        std::fs::write(out_dir.join(format!("{name}.expected.json")), serde_json::to_string_pretty(&file)? + "\n")?;
        eprintln!("  {} attempts", file.attempts.len());
    }
    Ok(())
}

fn names(st: &mut Stager<'_>) -> Result<()> {
    st.psql_to_name("db.lab.test", SERVER_V4, Staged::Connects)?;
    st.unreachable("stale.lab.test", STALE)?;
    st.psql_to_name("moving.lab.test", SERVER_V4, Staged::Connects)?;
    st.dnsmasq.hosts(&format!("{SERVER_V4} db.lab.test\n{MOVED_TO} moving.lab.test\n{STALE} stale.lab.test\n"))?;
    st.unreachable("moving.lab.test", MOVED_TO)?;
    st.infer("unreachable", "certain", format!("looked up stale.lab.test just before and got {STALE}"));
    st.infer("unreachable", "likely", format!("moving.lab.test also gave {SERVER_V4}, where clients logged in"));
    st.infer("success", "certain", format!("looked up db.lab.test just before and got {SERVER_V4}"));
    Ok(())
}

fn nxdomain(st: &mut Stager<'_>) -> Result<()> {
    st.lookup_fails("missing.lab.test", Some("nx_domain"), "could not translate host name \"missing.lab.test\"")?;
    st.infer("dns_failed", "certain", "looked up missing.lab.test and got no address".to_owned());
    Ok(())
}

fn no_answer(st: &mut Stager<'_>) -> Result<()> {
    let client = st.client().v4;
    filter(ROUTER_NS, "input", &format!("    ip saddr {client} udp dport 53 drop"))?;
    st.lookup_fails("db.lab.test", None, "Temporary failure in name resolution")?;
    // A capture ends with its last packet: the resolver answers again, and
    // the client logs in, well after it stopped asking.
    sleep(NO_ANSWER_TAIL);
    filter(ROUTER_NS, "input", "")?;
    st.psql_to_name("db.lab.test", SERVER_V4, Staged::Connects)?;
    st.infer("dns_failed", "certain", "looked up db.lab.test and got no address".to_owned());
    Ok(())
}

fn over_tcp(st: &mut Stager<'_>) -> Result<()> {
    st.psql_to_name("db.lab.test", SERVER_V4, Staged::Connects)?;
    st.unreachable("stale.lab.test", STALE)?;
    st.infer("unreachable", "certain", format!("looked up stale.lab.test just before and got {STALE}"));
    Ok(())
}

/// A psql on the server host itself, over loopback (the lab's pg_hba.conf
/// lets app_scram in from anywhere with its password).
fn local_login(st: &mut Stager<'_>) -> Result<()> {
    let local = Client { ns: SERVER_NS.to_owned(), v4: "127.0.0.1".to_owned(), v6: "::1".to_owned() };
    let p = Psql { host: Some("127.0.0.1"), user: "app_scram", password: Some("scram-pass"), ..Psql::default() };
    st.rec.login(&local, &p, &[Want::success("sasl")])?;
    for attempt in st.rec.expected.drain(..) {
        st.attempts.push(DnsAttempt { attempt, dns: None });
    }
    Ok(())
}

/// psql from the client straight to the server's address at `port`.
fn direct(st: &mut Stager<'_>, port: u16, staged: Staged) -> Result<()> {
    let c = st.client();
    let p = Psql { port, ..Routed::psql(false) };
    let said = c.run(&p)?;
    let attempt = st.rec.expect(&c, &p, staged, &said)?;
    st.attempts.push(DnsAttempt { attempt, dns: None });
    Ok(())
}

fn listen_localhost(st: &mut Stager<'_>) -> Result<()> {
    let lab = st.rec.lab;
    lab.settings(&[("listen_addresses", "localhost")], true)?;
    let staged = (|| {
        direct(st, 5432, Staged::Rst)?;
        local_login(st)?;
        direct(st, 5432, Staged::Rst)
    })();
    lab.settings(&[], true)?;
    staged?;
    st.infer("refused", "likely", format!("{SERVER_V4} refused port 5432 while 127.0.0.1 took connections"));
    st.infer("refused", "likely", "PostgreSQL listens on 127.0.0.1 only".to_owned());
    Ok(())
}

/// A second cluster of its own (initdb) on port 5433, listening everywhere,
/// trusting the lab's clients; stopped when dropped.
struct SecondCluster(String);

impl SecondCluster {
    fn start() -> Result<SecondCluster> {
        let dir = format!("{WORK}/data{SECOND_PORT}");
        let pg = |c: &str| sh(&format!("ip netns exec {SERVER_NS} su postgres -c '{PG_BIN}/{c}'"));
        pg(&format!("initdb -D {dir} -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null"))?;
        sh(&format!(
            "printf \"listen_addresses = '*'\\nport = {SECOND_PORT}\\nunix_socket_directories = '{WORK}'\\nfsync = off\\n\" \
             >> {dir}/postgresql.conf && echo 'host all all 192.0.2.0/24 trust' >> {dir}/pg_hba.conf"
        ))?;
        pg(&format!("pg_ctl -D {dir} -l {WORK}/second.log -w start >/dev/null"))?;
        Ok(SecondCluster(dir))
    }
}

impl Drop for SecondCluster {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "ip netns exec {SERVER_NS} su postgres -c '{PG_BIN}/pg_ctl -D {} -m immediate -w stop' >/dev/null 2>&1",
            self.0
        ));
    }
}

fn second_cluster(st: &mut Stager<'_>) -> Result<()> {
    let lab = st.rec.lab;
    lab.stop_server()?;
    let staged = (|| {
        let _second = SecondCluster::start()?;
        direct(st, 5432, Staged::Rst)?;
        direct(st, SECOND_PORT, Staged::Connects)?;
        direct(st, 5432, Staged::Rst)
    })();
    lab.start_server()?;
    staged?;
    st.infer(
        "refused",
        "likely",
        format!("{SERVER_V4} refused port 5432 while it took connections on port {SECOND_PORT}"),
    );
    Ok(())
}

/// The client's own loopback: nothing listens there.
fn localhost_in_client(st: &mut Stager<'_>) -> Result<()> {
    let c = st.client();
    let p = Psql { host: Some("127.0.0.1"), ..Psql::default() };
    let said = c.run(&p)?;
    let mut attempt = st.rec.expect(&c, &p, Staged::Rst, &said)?;
    attempt.client = "127.0.0.1".to_owned();
    st.attempts.push(DnsAttempt { attempt, dns: None });
    st.infer("refused", "possible", "127.0.0.1:5432 was refused and nothing on loopback took a connection".to_owned());
    Ok(())
}
