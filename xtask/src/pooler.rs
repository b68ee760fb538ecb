//! Recorded scenarios with a pooler and with servers that go quiet: Debian's
//! PgBouncer (run as the postgres user, its own ini and auth file in the
//! lab's directory) on the server host's port 6432 in front of the lab's
//! PostgreSQL, a postmaster stopped with SIGSTOP, and a client that never
//! answers the password request.

use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::lab::{sh, ClientResult, Psql, SERVER_NS, SERVER_V4, WORK};
use crate::record::{captured, client, Expected, PoolerLegs, Recorder, Scenario, Want, CLIENT_PORT, NO_TAIL};

const PGBOUNCER_PORT: u16 = 6432;
/// PgBouncer's own directory: ini, auth file, log, pid file.
const DIR: &str = "/tmp/pgreach-lab/pgbouncer";
/// The `[databases]` entry clients use; PgBouncer logs in to PostgreSQL
/// over loopback as the client's user, with the auth file's password.
const DATABASE: &str = "appdb";

pub fn scenarios() -> Vec<(&'static str, &'static str, Vec<&'static str>, Scenario)> {
    vec![
        (
            "pgbouncer",
            "psql through PgBouncer 1.18: a login, a wrong password, a database PgBouncer does not know",
            vec![],
            pgbouncer_logins,
        ),
        (
            "pgbouncer_max_client_conn",
            "PgBouncer with max_client_conn = 2 held by two sessions; a third client is turned away",
            vec![],
            pgbouncer_max_client_conn,
        ),
        (
            "pgbouncer_query_wait_timeout",
            "PgBouncer with default_pool_size = 1 held by a session; a second client logs in and waits past \
             query_wait_timeout = 2 s",
            vec![],
            pgbouncer_query_wait_timeout,
        ),
        (
            "pgbouncer_server_down",
            "PostgreSQL stopped behind a running PgBouncer, captured on the client's wire",
            vec![],
            pgbouncer_server_down_client_leg,
        ),
        (
            "pgbouncer_server_down_any",
            "PostgreSQL stopped behind a running PgBouncer, captured with -i any on the pooler's host: both legs",
            vec![],
            pgbouncer_server_down_both_legs,
        ),
        (
            "pgpool",
            "Pgpool-II 4.3 (raw mode, num_init_children = 2, reserved_connections = 1) on 9999: a login; a second \
             client while one session is held is turned away; PostgreSQL stopped: the backend connection fails, \
             then all backends are down",
            vec!["--port", "9999"],
            pgpool,
        ),
        (
            "pg_sigstop",
            "the postmaster stopped with SIGSTOP: TCP connects, the startup packet is never answered, psql gives \
             up at connect_timeout = 2; then SIGCONT",
            vec![],
            pg_sigstop,
        ),
        (
            "pg_auth_timeout",
            "authentication_timeout = 1 s; a client sends its startup packet and never answers the password request",
            vec![],
            pg_auth_timeout,
        ),
    ]
}

/// A PgBouncer running in the server namespace until dropped.
struct Bouncer;

impl Bouncer {
    /// Starts PgBouncer with `settings` added to its `[pgbouncer]` section.
    fn start(settings: &[(&str, &str)]) -> Result<Bouncer> {
        sh(&format!("rm -rf {DIR} && mkdir -p {DIR} && chown postgres {DIR}"))?;
        let extra: String = settings.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let ini = format!(
            "[databases]\n{DATABASE} = host=127.0.0.1 port=5432 dbname=postgres\n\n[pgbouncer]\n\
             listen_addr = {SERVER_V4}\nlisten_port = {PGBOUNCER_PORT}\nunix_socket_dir =\n\
             auth_type = md5\nauth_file = {DIR}/userlist.txt\nlogfile = {DIR}/pgbouncer.log\n\
             pidfile = {DIR}/pgbouncer.pid\npool_mode = session\n{extra}"
        );
        std::fs::write(format!("{DIR}/pgbouncer.ini"), ini)?;
        std::fs::write(format!("{DIR}/userlist.txt"), "\"app_md5\" \"md5-pass\"\n")?;
        sh(&format!("chown postgres {DIR}/* && chmod 600 {DIR}/userlist.txt"))?;
        sh(&format!("ip netns exec {SERVER_NS} su postgres -c 'pgbouncer -d -q {DIR}/pgbouncer.ini'"))?;
        // Bounded wait for the listening socket.
        for _ in 0..50 {
            let listening = sh(&format!("ip netns exec {SERVER_NS} ss -Hltn 'sport = :{PGBOUNCER_PORT}'"))?;
            if !listening.trim().is_empty() {
                return Ok(Bouncer);
            }
            sleep(Duration::from_millis(100));
        }
        bail!(
            "PgBouncer did not start: {}",
            std::fs::read_to_string(format!("{DIR}/pgbouncer.log")).unwrap_or_default()
        )
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = sh(&format!("kill $(cat {DIR}/pgbouncer.pid) 2>/dev/null; sleep 0.3"));
    }
}

/// psql to PgBouncer as app_md5.
fn through_bouncer<'a>(password: &'a str, dbname: &'a str, commands: &'a [&'a str]) -> Psql<'a> {
    Psql { port: PGBOUNCER_PORT, user: "app_md5", password: Some(password), dbname, commands, ..Psql::default() }
}

/// PgBouncer 1.18 sends its own errors with SQLSTATE 08P01.
const POOLER_SQLSTATE: &str = "08P01";

fn pgbouncer_logins(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    let _bouncer = Bouncer::start(&[])?;
    captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        rec.login(&c, &through_bouncer("md5-pass", DATABASE, &["select 1"]), &[Want::success("md5")])?;
        let wrong = Want::failed("auth_failed", POOLER_SQLSTATE, "password authentication failed");
        rec.login(&c, &through_bouncer("not-the-password", DATABASE, &["select 1"]), &[wrong])?;
        mark_pooler(rec, "pgbouncer");
        let missing = Want::failed("database_missing", POOLER_SQLSTATE, "no such database: appdb2");
        rec.login(&c, &through_bouncer("md5-pass", "appdb2", &["select 1"]), &[missing])?;
        mark_pooler(rec, "pgbouncer");
        Ok(())
    })
}

fn pgbouncer_max_client_conn(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    let _bouncer = Bouncer::start(&[("max_client_conn", "2")])?;
    captured(pcap, crate::record::BRIDGE, &[], NO_TAIL, || {
        let held = hold_bouncer_sessions(rec, 1..3, &["select pg_sleep(4)"])?;
        let refused =
            Want::failed("too_many_clients", POOLER_SQLSTATE, "no more connections allowed (max_client_conn)");
        rec.login(&c, &through_bouncer("md5-pass", DATABASE, &["select 1"]), &[refused])?;
        mark_pooler(rec, "pgbouncer");
        finish_held(rec, held)
    })
}

fn pgbouncer_query_wait_timeout(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    let _bouncer = Bouncer::start(&[("default_pool_size", "1"), ("query_wait_timeout", "2")])?;
    captured(pcap, crate::record::BRIDGE, &[], NO_TAIL, || {
        let held = hold_bouncer_sessions(rec, 1..2, &["select pg_sleep(5)"])?;
        // PgBouncer lets the client log in (the pool has its server's
        // parameters), then finds no free server connection for its query.
        let waited =
            Want { auth: Some("md5"), ..Want::failed("too_many_clients", POOLER_SQLSTATE, "query_wait_timeout") };
        rec.login(&c, &through_bouncer("md5-pass", DATABASE, &["select 1"]), &[waited])?;
        mark_pooler(rec, "pgbouncer");
        finish_held(rec, held)
    })
}

/// Sessions through PgBouncer from clients `range` that run `sql`, in the background.
fn hold_bouncer_sessions(
    rec: &Recorder<'_>,
    range: std::ops::Range<usize>,
    sql: &'static [&'static str],
) -> Result<Vec<(crate::lab::Client, std::process::Child)>> {
    let mut held = Vec::new();
    for i in range {
        let c = client(rec, i);
        let child = c.spawn(&through_bouncer("md5-pass", DATABASE, sql))?;
        held.push((c, child));
    }
    sleep(Duration::from_millis(1500));
    Ok(held)
}

fn finish_held(rec: &mut Recorder<'_>, held: Vec<(crate::lab::Client, std::process::Child)>) -> Result<()> {
    for (c, child) in held {
        let r = crate::lab::finished(child)?;
        rec.logged_in(&c, &through_bouncer("md5-pass", DATABASE, &[]), &[Want::success("md5")], &r)?;
    }
    Ok(())
}

/// PgBouncer 1.18 holds the login of a client whose server it cannot reach
/// (it sends the password request, then nothing); libpq gives up at its
/// connect_timeout.
const SERVER_DOWN_SAYS: &str = "timeout expired";

/// PostgreSQL is stopped while PgBouncer runs; a client logs in through it.
/// On the client's wire the pooler only goes quiet (`server_silent`); on the
/// pooler's host both legs show why (`server_unavailable`), and the
/// pooler's own connections to PostgreSQL are refused.
fn pgbouncer_server_down(rec: &mut Recorder<'_>, pcap: &Path, iface: &str) -> Result<()> {
    let c = client(rec, 0);
    let lab = rec.lab;
    let _bouncer = Bouncer::start(&[("server_login_retry", "1"), ("query_wait_timeout", "3")])?;
    lab.stop_server()?;
    let result = captured(pcap, iface, &[], NO_TAIL, || {
        let both_legs = iface == "any";
        let outcome = if both_legs { "server_unavailable" } else { "server_silent" };
        let down =
            Want { sqlstate: None, auth: Some("md5"), ..Want::failed(outcome, POOLER_SQLSTATE, SERVER_DOWN_SAYS) };
        let r = c.run(&through_bouncer("md5-pass", DATABASE, &["select 1"]))?;
        if r.ok {
            bail!("a login through PgBouncer worked with PostgreSQL stopped");
        }
        rec.logged_in(&c, &through_bouncer("md5-pass", DATABASE, &[]), &[down], &r)?;
        if both_legs {
            rec.pooler_legs = Some(PoolerLegs { server: "127.0.0.1:5432", outcome: "refused" });
        }
        Ok(())
    });
    lab.start_server()?;
    result
}

fn pgbouncer_server_down_client_leg(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    pgbouncer_server_down(rec, pcap, CLIENT_PORT)
}

fn pgbouncer_server_down_both_legs(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    pgbouncer_server_down(rec, pcap, "any")
}

const PGPOOL_PORT: u16 = 9999;
/// Pgpool-II's own directory: its configuration, sockets, pid file and log.
const PGPOOL_DIR: &str = "/tmp/pgreach-lab/pgpool";

/// A Pgpool-II running in the server namespace until dropped.
struct Pgpool(std::process::Child);

impl Pgpool {
    fn start() -> Result<Pgpool> {
        let d = PGPOOL_DIR;
        sh(&format!("rm -rf {d} && mkdir -p {d}/oiddir && chown -R postgres {d}"))?;
        // Raw mode, one backend: PostgreSQL on the same host, reached over
        // the lab's trusted network, so no pool_passwd is needed.
        let conf = format!(
            "backend_clustering_mode = 'raw'\nlisten_addresses = '{SERVER_V4}'\nport = {PGPOOL_PORT}\n\
             unix_socket_directories = '{d}'\npcp_listen_addresses = ''\npcp_socket_dir = '{d}'\n\
             wd_ipc_socket_dir = '{d}'\npid_file_name = '{d}/pgpool.pid'\nlogdir = '{d}'\n\
             memqcache_oiddir = '{d}/oiddir'\nbackend_hostname0 = '{SERVER_V4}'\nbackend_port0 = 5432\n\
             backend_weight0 = 1\nbackend_flag0 = 'ALLOW_TO_FAILOVER'\nnum_init_children = 2\n\
             reserved_connections = 1\nmax_pool = 1\nhealth_check_period = 0\nsr_check_period = 0\n\
             use_watchdog = off\nenable_pool_hba = off\nlog_destination = 'stderr'\n"
        );
        std::fs::write(format!("{d}/pgpool.conf"), conf)?;
        std::fs::write(format!("{d}/pcp.conf"), "")?;
        std::fs::write(format!("{d}/pool_hba.conf"), "host all all 0.0.0.0/0 trust\n")?;
        sh(&format!("chown postgres {d}/*"))?;
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", SERVER_NS, "su", "postgres", "-c"])
            .arg(format!("pgpool -n -f {d}/pgpool.conf -F {d}/pcp.conf -a {d}/pool_hba.conf >{d}/pgpool.log 2>&1"))
            .spawn()
            .context("starting pgpool")?;
        for _ in 0..50 {
            let listening = sh(&format!("ip netns exec {SERVER_NS} ss -Hltn 'sport = :{PGPOOL_PORT}'"))?;
            if !listening.trim().is_empty() {
                // Its children start just after the listening socket.
                sleep(Duration::from_millis(500));
                return Ok(Pgpool(child));
            }
            sleep(Duration::from_millis(100));
        }
        bail!("Pgpool-II did not start: {}", std::fs::read_to_string(format!("{d}/pgpool.log")).unwrap_or_default())
    }
}

impl Drop for Pgpool {
    fn drop(&mut self) {
        let d = PGPOOL_DIR;
        let _ = sh(&format!(
            "ip netns exec {SERVER_NS} su postgres -c 'pgpool -f {d}/pgpool.conf -m fast stop' >/dev/null 2>&1"
        ));
        let _ = self.0.wait();
    }
}

/// psql to Pgpool-II as postgres, without SSL: Pgpool-II turns a client away
/// before reading its SSLRequest, and libpq then reports only "error
/// response during SSL exchange".
fn through_pgpool(commands: &'static [&'static str]) -> Psql<'static> {
    Psql { port: PGPOOL_PORT, sslmode: "disable", commands, ..Psql::default() }
}

fn pgpool(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let lab = rec.lab;
    let (c, other) = (client(rec, 0), client(rec, 1));
    let pool = Pgpool::start()?;
    let result = captured(pcap, crate::record::BRIDGE, &[], NO_TAIL, || {
        rec.login(&c, &through_pgpool(&["select 1"]), &[Want::success("ok")])?;
        let held = other.spawn(&through_pgpool(&["select pg_sleep(3)"]))?;
        sleep(Duration::from_millis(1500));
        let full = Want::failed("too_many_clients", "53300", "Sorry, too many clients already");
        rec.login(&c, &through_pgpool(&["select 1"]), &[full])?;
        mark_pooler(rec, "pgpool");
        let r = crate::lab::finished(held)?;
        rec.logged_in(&other, &through_pgpool(&[]), &[Want::success("ok")], &r)?;
        lab.stop_server()?;
        // The first client finds the backend gone ("failed to create a
        // backend connection", and Pgpool-II fails the node over); the next
        // finds every node down. Both are Pgpool-II's own XX000 errors.
        let down = Want::failed("server_unavailable", "XX000", "backend");
        for _ in 0..2 {
            rec.login(&c, &through_pgpool(&["select 1"]), &[down])?;
            mark_pooler(rec, "pgpool");
        }
        Ok(())
    });
    drop(pool);
    lab.start_server()?;
    result
}

/// Marks the last expected attempt as answered by a pooler itself.
fn mark_pooler(rec: &mut Recorder<'_>, name: &'static str) {
    if let Some(e) = rec.expected.last_mut() {
        e.pooler = Some(name);
    }
}

/// The postmaster's process id, from its pid file.
fn postmaster_pid() -> Result<u32> {
    let pidfile = std::fs::read_to_string(format!("{WORK}/data/postmaster.pid")).context("postmaster.pid")?;
    pidfile.lines().next().and_then(|l| l.trim().parse().ok()).context("postmaster.pid's first line")
}

fn pg_sigstop(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let c = client(rec, 0);
    let pid = postmaster_pid()?;
    let result = captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        sh(&format!("kill -STOP {pid}"))?;
        let r = c.run(&Psql::default());
        sh(&format!("kill -CONT {pid}"))?;
        let r = r?;
        if r.ok || !r.error.contains("timeout expired") {
            bail!("staged a silent server, but psql said: {:?}", r.error);
        }
        rec.expected.push(silent_or_timed_out(&c.v4, "server_silent", &r));
        // The postmaster, resumed, serves the next client.
        rec.login(&c, &Psql::default(), &[Want::success("ok")])
    });
    // The stopped postmaster's queued connection is served after SIGCONT.
    sleep(Duration::from_millis(500));
    result
}

/// The startup packet of a protocol 3.0 login as app_md5 to postgres.
fn startup_packet() -> Vec<u8> {
    let params = b"user\0app_md5\0database\0postgres\0application_name\0silent-client\0\0";
    let mut packet = ((params.len() + 8) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&196_608u32.to_be_bytes());
    packet.extend_from_slice(params);
    packet
}

fn pg_auth_timeout(rec: &mut Recorder<'_>, pcap: &Path) -> Result<()> {
    let lab = rec.lab;
    let c = client(rec, 0);
    lab.settings(&[("authentication_timeout", "1")], false)?;
    let packet = format!("{WORK}/startup.bin");
    std::fs::write(&packet, startup_packet())?;
    let result = captured(pcap, CLIENT_PORT, &[], NO_TAIL, || {
        // Sends the startup packet, reads until the server closes (bounded
        // by timeout), and never answers the md5 request in between.
        let said = sh(&format!(
            "ip netns exec {} timeout 10 bash -c 'exec 3<>/dev/tcp/{SERVER_V4}/5432; cat {packet} >&3; \
             start=$SECONDS; cat <&3 | head -c 64 | od -An -c | head -1; echo \"closed after $((SECONDS - start)) s\"'",
            c.ns
        ))?;
        if !said.contains('R') || !said.contains("closed after") {
            bail!("staged an unanswered md5 request, but the client read: {said:?}");
        }
        // What the client saw: the server closing on it (od's dump of the request is above it).
        let closed = said.lines().last().unwrap_or_default().to_owned();
        rec.expected.push(silent_or_timed_out(&c.v4, "auth_timeout", &ClientResult { ok: false, error: closed }));
        Ok(())
    });
    lab.settings(&[], false)?;
    result
}

/// An attempt that connected and got no verdict: the server stayed silent,
/// or gave up on the client.
fn silent_or_timed_out(client: &str, outcome: &'static str, r: &ClientResult) -> Expected {
    Expected {
        client: client.to_owned(),
        server: format!("{SERVER_V4}:5432"),
        outcome,
        tcp_outcome: "established",
        // psql's first packet is an SSLRequest (sslmode=prefer): a silent
        // server never gets to see the user.
        user: (outcome == "auth_timeout").then(|| "app_md5".to_owned()),
        auth: (outcome == "auth_timeout").then_some("md5"),
        client_saw: crate::record::first_line(&r.error),
        ..Default::default()
    }
}
