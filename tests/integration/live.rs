//! `pgreach live` end to end, as root (CI runs as root): a real PostgreSQL
//! on loopback and real psql clients; a DROP staged with nftables between
//! two network namespaces; the privilege drop and the -w file; the terminal
//! view under tmux; the Prometheus endpoint.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{pgreach, project_root, temp_file};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PASSWORD: &str = "live-test-secret";

/// Whether this test can run: root, with PostgreSQL 15. Outside CI a
/// machine without them skips; in CI that is a failure.
pub(crate) fn can_run(what: &str) -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let ok = root && Path::new(PG_BIN).join("postgres").exists();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root with PostgreSQL 15: {what} must run");
        eprintln!("SKIPPED {what}: needs root and PostgreSQL 15");
    }
    ok
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub(crate) fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A PostgreSQL 15 server on 127.0.0.1 with a role `app` (scram-sha-256),
/// stopped and removed on drop.
struct PgServer {
    dir: PathBuf,
    port: u16,
}

impl PgServer {
    fn start() -> PgServer {
        let port = free_port();
        let dir = PathBuf::from(format!("/tmp/pgreach-test-pg-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        run_ok(Command::new("chown").args(["postgres", dir.to_str().unwrap()]));
        let data = dir.join("data");
        let as_postgres = |cmd: String| run_ok(Command::new("su").args(["postgres", "-c", &cmd]));
        as_postgres(format!("{PG_BIN}/initdb -D {} -A trust -U postgres >/dev/null", data.display()));
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\n",
            dir.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        as_postgres(format!("{PG_BIN}/pg_ctl -D {} -l {}/log -w start >/dev/null", data.display(), dir.display()));
        let server = PgServer { dir, port };
        server.psql("postgres", None, &format!("CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")).expect("create role");
        server
    }

    /// Runs psql over TCP; `Err` with its error output when it fails.
    fn psql(&self, user: &str, password: Option<&str>, sql: &str) -> Result<(), String> {
        self.psql_to(self.port, user, password, sql)
    }

    fn psql_to(&self, port: u16, user: &str, password: Option<&str>, sql: &str) -> Result<(), String> {
        let out = Command::new(format!("{PG_BIN}/psql"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", "postgres", "-w", "-c", sql])
            .env("PGPASSWORD", password.unwrap_or(""))
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .expect("psql");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args(["postgres", "-c", &format!("{PG_BIN}/pg_ctl -D {}/data -m immediate stop", self.dir.display())])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `pgreach live`, its standard output and error read by threads.
pub(crate) struct LiveRun {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl LiveRun {
    pub(crate) fn start(prefix: &[&str], args: &[&str]) -> LiveRun {
        LiveRun::start_exe(env!("CARGO_BIN_EXE_pgreach"), prefix, args)
    }

    /// Runs `exe` (a copy of pgreach) rather than the built binary.
    pub(crate) fn start_exe(exe: &str, prefix: &[&str], args: &[&str]) -> LiveRun {
        let mut cmd = Command::new(prefix.first().copied().unwrap_or(exe));
        if !prefix.is_empty() {
            cmd.args(&prefix[1..]).arg(exe);
        }
        let mut child = cmd
            .arg("live")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pgreach live");
        let lines = |r: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        let run = LiveRun { child, stdout, stderr };
        let started = run.stderr.recv_timeout(Duration::from_secs(15)).expect("pgreach live says it is capturing");
        assert!(started.contains("capturing on"), "{started}");
        // libpcap delivers from the moment the socket is bound; a moment for the filter.
        std::thread::sleep(Duration::from_millis(300));
        run
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ctrl-C, then everything it printed; asserts it exits 0.
    pub(crate) fn interrupt(self) -> String {
        let (status, stdout, stderr) = self.stop_with("-INT");
        assert!(status.success(), "exit {status:?}: {stderr:?}");
        stdout
    }

    /// The signal given (`-TERM`), then its exit status, standard output and error lines.
    fn stop_with(mut self, signal: &str) -> (std::process::ExitStatus, String, Vec<String>) {
        run_ok(Command::new("kill").args([signal, &self.pid().to_string()]));
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "pgreach live did not stop on {signal}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let err: Vec<String> = self.stderr.try_iter().collect();
        std::thread::sleep(Duration::from_millis(100));
        (status, self.stdout.try_iter().collect::<Vec<_>>().join("\n"), err)
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn outcomes(doc: &Value) -> Vec<(String, Option<String>)> {
    let mut v: Vec<(String, Option<String>)> = doc["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["outcome"].as_str().unwrap().to_owned(), a["pg"]["user"].as_str().map(str::to_owned)))
        .collect();
    v.sort();
    v
}

pub(crate) fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn live_on_loopback_reports_what_real_clients_saw() {
    if !can_run("live on loopback") {
        return;
    }
    let pg = PgServer::start();
    let closed = free_port();
    let metrics_port = free_port();
    let (port, closed_s, metrics) = (pg.port.to_string(), closed.to_string(), format!("127.0.0.1:{metrics_port}"));
    let live =
        LiveRun::start(&[], &["-i", "lo", "-p", &port, "-p", &closed_s, "--format", "json", "--metrics", &metrics]);
    pg.psql("app", Some(PASSWORD), "SELECT 1").expect("a good login");
    let wrong = pg.psql("app", Some("not-the-password"), "SELECT 1").expect_err("a wrong password fails");
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    let refused = pg.psql_to(closed, "app", Some(PASSWORD), "SELECT 1").expect_err("nothing listens there");
    assert!(refused.contains("Connection refused"), "{refused}");
    // The metrics count them while the capture runs (attempts end at FIN or RST).
    std::thread::sleep(Duration::from_millis(1500));
    let scraped = http_get(metrics_port, "/metrics");
    for want in [
        format!("pgreach_attempts_total{{server=\"127.0.0.1:{port}\",outcome=\"success\"}} 1"),
        format!("pgreach_attempts_total{{server=\"127.0.0.1:{port}\",outcome=\"auth_failed\"}} 1"),
        format!("pgreach_attempts_total{{server=\"127.0.0.1:{closed}\",outcome=\"refused\"}} 1"),
        "pgreach_client_attempts_total{client=\"127.0.0.1\",outcome=\"success\"} 1".to_owned(),
        "pgreach_login_seconds_count 1".to_owned(),
        format!("pgreach_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(scraped.contains(&want), "metrics lack {want}:\n{scraped}");
    }
    let report = live.interrupt();
    let doc: Value = serde_json::from_str(&report).unwrap_or_else(|e| panic!("final JSON report: {e}\n{report}"));
    assert_eq!(
        outcomes(&doc),
        vec![
            ("auth_failed".to_owned(), Some("app".to_owned())),
            ("refused".to_owned(), None),
            ("success".to_owned(), Some("app".to_owned())),
        ]
    );
    assert_eq!(doc["files"], serde_json::json!(["live:lo"]));
    assert_eq!(doc["capture"]["kernel_dropped"], 0);
    assert!(doc["capture"]["received"].as_u64().unwrap() >= 10);
}

#[test]
fn sigterm_and_sighup_end_a_live_run_with_its_final_report() {
    if !can_run("live on loopback") {
        return;
    }
    for signal in ["-TERM", "-HUP"] {
        let closed = free_port();
        let port = closed.to_string();
        let live = LiveRun::start(&[], &["-i", "lo", "-p", &port, "--format", "json", "--fail-on", "refused"]);
        let refused = TcpStream::connect(("127.0.0.1", closed));
        assert!(refused.is_err(), "nothing listens on {closed}");
        std::thread::sleep(Duration::from_millis(500));
        let (status, report, err) = live.stop_with(signal);
        assert_eq!(status.code(), Some(3), "{signal}: --fail-on refused matched: {err:?}");
        let doc: Value =
            serde_json::from_str(&report).unwrap_or_else(|e| panic!("{signal}: final report: {e}\n{report}"));
        assert_eq!(outcomes(&doc), vec![("refused".to_owned(), None)], "{signal}");
    }
}

#[test]
fn w_dash_writes_the_capture_to_standard_output_and_the_report_to_standard_error() {
    if !can_run("live -w -") {
        return;
    }
    let closed = free_port();
    let dir = temp_file("w-dash", b"");
    std::fs::remove_file(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("out.pcap");
    let child = Command::new(env!("CARGO_BIN_EXE_pgreach"))
        .args(["live", "-i", "lo", "-p", &closed.to_string(), "-w", "-", "--format", "json", "--duration", "3s"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&pcap).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgreach live");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(TcpStream::connect(("127.0.0.1", closed)).is_err());
    let out = child.wait_with_output().expect("pgreach live ends at --duration");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let report: Value = serde_json::from_str(&err[err.find('{').expect("a JSON report on stderr")..]).expect("JSON");
    assert_eq!(outcomes(&report), vec![("refused".to_owned(), None)]);
    // What went to standard output is a capture that reads back the same.
    let again = pgreach(&["analyze", "--format", "json", "-p", &closed.to_string(), pcap.to_str().unwrap()]);
    let doc: Value = serde_json::from_slice(&again.stdout).expect("the capture analyzes");
    assert_eq!(outcomes(&doc), vec![("refused".to_owned(), None)]);
    // Standard output cannot be rotated, and -W needs a rotation.
    let rotate = pgreach(&["live", "-i", "lo", "-w", "-", "-C", "1"]);
    assert_eq!(rotate.status.code(), Some(2));
    let ring = pgreach(&["live", "-i", "lo", "-w", "x.pcap", "-W", "3"]);
    assert_eq!(ring.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&ring.stderr).contains("give -C or -G"));
}

/// Network namespaces with a veth pair, removed on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip_in(ns: &str, args: &str) {
    let mut full = vec!["netns", "exec", ns, "ip"];
    full.extend(args.split_whitespace());
    run_ok(Command::new("ip").args(&full));
}

#[test]
fn a_dropped_syn_is_a_timeout_while_the_capture_runs() {
    if !can_run("live DROP in namespaces") {
        return;
    }
    // Names and addresses of this test only (the recorder's lab uses others).
    let (srv, cli) = ("pgrlive-srv", "pgrlive-cli");
    for ns in [srv, cli] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        run_ok(Command::new("ip").args(["netns", "add", ns]));
    }
    let _guard = Namespaces(vec![srv.to_owned(), cli.to_owned()]);
    run_ok(
        Command::new("ip")
            .args(["link", "add", "pgrlv-s", "netns", srv, "type", "veth", "peer", "pgrlv-c", "netns", cli]),
    );
    ip_in(srv, "addr add 192.0.2.249/24 dev pgrlv-s");
    ip_in(srv, "link set pgrlv-s up");
    ip_in(cli, "addr add 192.0.2.250/24 dev pgrlv-c");
    ip_in(cli, "link set pgrlv-c up");
    let rules = temp_file(
        "pgreach-live-drop.nft",
        b"table inet pgrlive {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 5432 drop\n }\n}\n",
    );
    run_ok(Command::new("ip").args(["netns", "exec", srv, "nft", "-f", rules.to_str().unwrap()]));
    let live =
        LiveRun::start(&["ip", "netns", "exec", srv], &["-i", "pgrlv-s", "--format", "ndjson", "--syn-timeout", "1s"]);
    // A client that gives up after 4 s (as a connect_timeout does): SYNs at 0, 1 and 3 s.
    let mut client = Command::new("ip")
        .args(["netns", "exec", cli, "timeout", "4", "bash", "-c", "exec 3<>/dev/tcp/192.0.2.249/5432"])
        .stderr(Stdio::null())
        .spawn()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = live.stdout.recv_timeout(left).expect("an ndjson line for the dropped attempt");
        if !line.is_empty() {
            break line;
        }
    };
    let mut live = live;
    assert!(live.child.try_wait().unwrap().is_none(), "reported while pgreach still captures");
    let _ = client.wait();
    let a: Value = serde_json::from_str(&line).expect("ndjson");
    assert_eq!(a["outcome"], "timeout", "{a}");
    assert_eq!(a["client"].as_str().unwrap().split(':').next(), Some("192.0.2.250"));
    assert!(a["syn"]["count"].as_u64().unwrap() >= 2, "retransmitted SYNs: {a}");
    assert_eq!(a["gave_up"], "stopped_retransmitting");
    let rest = live.interrupt();
    assert!(rest.trim().is_empty(), "nothing else happened: {rest}");
}

#[test]
fn drops_to_nobody_and_writes_a_private_pcap() {
    if !can_run("privilege drop") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = temp_file("pgreach-live-w", b"");
    let _ = std::fs::remove_file(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("live.pcap");
    let closed = free_port();
    let live =
        LiveRun::start(&[], &["-i", "lo", "-p", &closed.to_string(), "--format", "json", "-w", pcap.to_str().unwrap()]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", live.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let nobody = String::from_utf8(run_ok(Command::new("id").args(["-u", "nobody"])).stdout).unwrap();
    let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    assert_eq!(uids, vec![nobody.trim(); 4], "real, effective, saved and filesystem uid are nobody's");
    let meta = std::fs::metadata(&pcap).unwrap();
    assert_eq!(meta.mode() & 0o077, 0, "owner-only: {:o}", meta.mode());
    assert_eq!(meta.uid().to_string(), nobody.trim());
    for _ in 0..3 {
        assert!(TcpStream::connect(("127.0.0.1", closed)).is_err());
    }
    // And once over IPv6.
    assert!(TcpStream::connect(("::1", closed)).is_err());
    let report: Value = serde_json::from_str(&live.interrupt()).unwrap();
    assert_eq!(report["totals"]["refused"], 4);
    let clients: Vec<&str> =
        report["clients"].as_array().unwrap().iter().map(|c| c["client"].as_str().unwrap()).collect();
    assert!(clients.contains(&"::1") && clients.contains(&"127.0.0.1"), "{clients:?}");
    // The file holds the same capture.
    let out = pgreach(&["analyze", "-p", &closed.to_string(), "--format", "json", pcap.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["totals"], report["totals"]);
}

#[test]
fn without_permission_one_line_says_how_to_get_it() {
    if !can_run("permission error") {
        return;
    }
    let out = run_out(Command::new("runuser").args([
        "-u",
        "nobody",
        "--",
        env!("CARGO_BIN_EXE_pgreach"),
        "live",
        "-i",
        "lo",
    ]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no permission to capture on lo") && err.contains("setcap cap_net_raw,cap_net_admin=eip"),
        "{err}"
    );
}

fn run_out(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// tmux on the named session's own server (a `-L` socket named after it):
/// tests running at once never share a server, so one whose last session
/// ends cannot take the server away from another ("server exited unexpectedly").
fn tmux(args: &[&str]) -> String {
    let session = args.windows(2).find(|w| w[0] == "-t" || w[0] == "-s").map(|w| w[1]);
    let mut cmd = Command::new("tmux");
    if let Some(session) = session {
        cmd.args(["-L", session]);
    }
    String::from_utf8(run_ok(cmd.args(args)).stdout).unwrap()
}

/// A detached tmux session running a shell command; the pane stays after
/// the command exits, and the session is killed on drop.
struct TmuxSession(String);

impl TmuxSession {
    fn start(label: &str, width: u16, command: &str) -> TmuxSession {
        TmuxSession::sized(label, width, 50, command)
    }

    fn sized(label: &str, width: u16, height: u16, command: &str) -> TmuxSession {
        let name = format!("pgreach-{label}-{}", std::process::id());
        // One tmux command line, so the pane is kept even if the command exits at once.
        let (width, height) = (width.to_string(), height.to_string());
        let set = ["set-option", "-t", &name, "remain-on-exit", "on"];
        let command = lingering(command);
        tmux(
            &[&["new-session", "-d", "-s", &name, "-x", &width, "-y", &height, "bash", "-c", &command, ";"][..], &set]
                .concat(),
        );
        TmuxSession(name)
    }
}

/// The command, then a shell that stays until the session is killed: tmux
/// may stop reading a pane whose process has exited before it has drained
/// its output, cutting what a test waits for.
fn lingering(command: &str) -> String {
    format!("{command}; exec sleep 120")
}

impl Drop for TmuxSession {
    fn drop(&mut self) {
        // The session's own server leaves its socket behind when it ends.
        let socket = Command::new("tmux")
            .args(["-L", &self.0, "display-message", "-p", "-t", &self.0, "#{socket_path}"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        let _ = Command::new("tmux").args(["-L", &self.0, "kill-session", "-t", &self.0]).output();
        if let Some(socket) = socket.filter(|s| !s.is_empty()) {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// Waits until the pane shows `want`, or fails with what it shows.
fn pane_shows(session: &str, want: &str) -> String {
    pane_shows_within(session, want, Duration::from_secs(15))
}

/// The same, waiting up to `wait` (a long report takes tmux a while to draw
/// on a busy machine).
fn pane_shows_within(session: &str, want: &str, wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    loop {
        let pane = tmux(&["capture-pane", "-p", "-t", session]);
        if pane.contains(want) {
            return pane;
        }
        assert!(Instant::now() < deadline, "the pane never showed {want:?}:\n{pane}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn terminal_view_updates_in_place_under_tmux() {
    if !can_run("tmux view") {
        return;
    }
    let closed = free_port();
    // The shell says how pgreach exited (tmux's own record of it is racy).
    let cmd = format!("{} live -i lo -p {closed}; echo exit=$?", env!("CARGO_BIN_EXE_pgreach"));
    let tmux_session = TmuxSession::start("live", 220, &cmd);
    let session = &tmux_session.0;
    pane_shows(session, "No connection attempt has ended yet");
    assert!(TcpStream::connect(("127.0.0.1", closed)).is_err());
    let first = pane_shows(session, "1 attempt from 1 client");
    assert!(first.contains("pgreach live on lo"), "{first}");
    for _ in 0..2 {
        assert!(TcpStream::connect(("127.0.0.1", closed)).is_err());
    }
    let later = pane_shows(session, "3 attempts from 1 client");
    assert!(later.contains("127.0.0.1"), "{later}");
    // Who just failed, and why, in a line each.
    assert!(later.contains("Latest failures:"), "{later}");
    assert_eq!(later.matches(&format!("→ 127.0.0.1:{closed} refused: RST from 127.0.0.1")).count(), 3, "{later}");
    tmux(&["send-keys", "-t", session, "C-c", ""]);
    // The final report replaces the view on the normal screen, and Ctrl-C is a normal end.
    let end = pane_shows(session, "refused: 1 client, 3 attempts");
    assert!(!end.contains("Ctrl-C for the final report"), "{end}");
    pane_shows(session, "exit=0");
}

/// Every line the pane holds, its scrollback included, with the lines the
/// terminal wrapped joined again: what the program wrote, line by line.
fn pane_lines(session: &str) -> Vec<String> {
    tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", session]).lines().map(str::to_owned).collect()
}

#[test]
fn the_report_fits_80_and_120_column_terminals() {
    let staged: BTreeSet<String> = serde_json::from_str::<Value>(
        &std::fs::read_to_string(project_root().join("captures/incident.expected.json")).unwrap(),
    )
    .unwrap()["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["client"].as_str().unwrap().to_owned())
        .collect();
    for width in [80u16, 120] {
        // The incident's report, and every attempt of a smaller capture
        // (the incident's 450 would outrun the pane's history).
        let cmd = format!(
            "cd {0}; {1} analyze captures/incident.pcap; {1} analyze --connections captures/nft_reject.pcap; \
             echo finished",
            project_root().display(),
            env!("CARGO_BIN_EXE_pgreach")
        );
        let session = TmuxSession::sized(&format!("width{width}"), width, 50, &cmd);
        pane_shows_within(&session.0, "finished", Duration::from_secs(120));
        let lines = pane_lines(&session.0);
        let long: Vec<&String> = lines.iter().filter(|l| l.trim_end().chars().count() > usize::from(width)).collect();
        assert!(long.is_empty(), "{width} columns: {} lines too long: {:?}", long.len(), &long[..long.len().min(3)]);
        let text = lines.join("\n");
        for client in &staged {
            assert!(text.contains(&format!("{client}:")), "{width} columns: {client} is not whole");
        }
        assert!(text.contains("refused: 30 clients, 90 attempts"), "{width}");
    }
}

#[test]
fn the_live_view_keeps_its_status_line_on_a_small_screen() {
    if !can_run("live view") {
        return;
    }
    let closed = free_port();
    let cmd = format!("{} live -i lo -p {closed}; echo exit=$?", env!("CARGO_BIN_EXE_pgreach"));
    let session = TmuxSession::sized("small", 80, 24, &cmd);
    pane_shows(&session.0, "No connection attempt has ended yet");
    for _ in 0..6 {
        assert!(TcpStream::connect(("127.0.0.1", closed)).is_err());
    }
    let view = pane_shows(&session.0, "6 attempts from 1 client");
    let first = view.lines().next().unwrap_or_default();
    assert!(first.starts_with("pgreach live on lo"), "the status line is first: {view}");
    let lines = tmux(&["capture-pane", "-p", "-J", "-t", &session.0]);
    assert!(lines.lines().all(|l| l.trim_end().chars().count() <= 80), "{lines}");
    tmux(&["send-keys", "-t", &session.0, "C-c", ""]);
    pane_shows(&session.0, "exit=0");
}

#[test]
fn any_interface_is_a_cooked_capture_that_works() {
    if !can_run("-i any") {
        return;
    }
    let listed = String::from_utf8(pgreach(&["interfaces"]).stdout).unwrap();
    assert!(listed.lines().any(|l| l.starts_with("lo\t") && l.contains("loopback")), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("any\t")), "{listed}");
    let closed = free_port();
    let live = LiveRun::start(&[], &["-i", "any", "-p", &closed.to_string(), "--format", "json"]);
    for _ in 0..2 {
        assert!(TcpStream::connect(("127.0.0.1", closed)).is_err());
    }
    std::thread::sleep(Duration::from_millis(300));
    let doc: Value = serde_json::from_str(&live.interrupt()).unwrap();
    assert_eq!(doc["totals"]["attempts"], 2);
    assert_eq!(doc["totals"]["refused"], 2);
}

/// Colour on a terminal, none with NO_COLOR (issue: the terminal table).
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    if !can_run("colour under tmux") {
        return;
    }
    let root = crate::util::project_root().display().to_string();
    let bin = env!("CARGO_BIN_EXE_pgreach");
    let script = format!(
        "cd {root} && {bin} analyze captures/nft_reject.pcap | tail -5; echo ====; NO_COLOR=1 {bin} analyze captures/nft_reject.pcap | tail -5; echo done-both"
    );
    let tmux_session = TmuxSession::start("colour", 250, &script);
    let session = &tmux_session.0;
    pane_shows(session, "done-both");
    let pane = tmux(&["capture-pane", "-e", "-p", "-t", session]);
    let (coloured, plain) = pane.split_once("====").expect("both runs");
    assert!(!coloured.contains('\u{1b}'), "piped through tail: no colour even from a terminal session");
    assert!(!plain.contains('\u{1b}'));
    // Straight on the terminal: red refused counts; with NO_COLOR none.
    let script = format!("cd {root} && {bin} analyze captures/nft_reject.pcap; echo ====; NO_COLOR=1 {bin} analyze captures/nft_reject.pcap; echo done-again");
    tmux(&["respawn-pane", "-k", "-t", session, "bash", "-c", &lingering(&script)]);
    pane_shows(session, "done-again");
    let pane = tmux(&["capture-pane", "-e", "-p", "-S", "-200", "-t", session]);
    let (coloured, plain) = pane.rsplit_once("====").expect("both runs");
    assert!(
        coloured.contains("\u{1b}[31m") || coloured.contains("\u{1b}[38;5;9m") || coloured.contains("\u{1b}[91m"),
        "red on a terminal:\n{coloured}"
    );
    assert!(!plain.contains("\u{1b}[3"), "NO_COLOR:\n{plain}");
}

#[test]
fn setup_errors_are_one_line_each() {
    if !can_run("live set-up errors") {
        return;
    }
    for (args, says) in [
        (vec!["-i", "nosuch0"], "cannot capture on nosuch0"),
        (vec!["-i", "lo", "-w", "/nonexistent-dir/x.pcap"], "cannot create /nonexistent-dir/x.pcap"),
        (vec!["-i", "lo", "-Z", "nosuch-user"], "cannot drop privileges to user \"nosuch-user\""),
        (vec!["-i", "lo", "-f", "tcp port"], "invalid filter expression"),
    ] {
        let mut full = vec!["live"];
        full.extend(&args);
        let out = pgreach(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// A reading that takes more than a moment shows a progress line on the
/// terminal's standard error, and it is gone when the report is printed.
#[test]
fn progress_shows_on_a_terminal_for_a_slow_read() {
    if !can_run("progress under tmux") {
        return;
    }
    use crate::util::{at, pcap_bytes, syn, tcp_frame};
    let dir = temp_file("pgreach-progress", b"");
    let _ = std::fs::remove_file(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("capture.fifo");
    run_ok(Command::new("mkfifo").arg(&fifo));
    // 40,000 SYNs from one client port each: enough packets for several progress updates.
    let records: Vec<_> = (0..40_000u32)
        .map(|i| {
            let client = format!("192.0.2.{}:{}", 10 + i % 200, 1024 + i / 200);
            let frame = tcp_frame(&client, "192.0.2.1:5432", syn(i));
            let len = frame.len() as u32;
            (at(f64::from(i) * 0.001), frame, len)
        })
        .collect();
    let bytes = pcap_bytes(1, 65535, &records);
    let cmd = format!("{} analyze - < {}; echo analyzed", env!("CARGO_BIN_EXE_pgreach"), fifo.display());
    let tmux_session = TmuxSession::start("progress", 200, &cmd);
    let session = &tmux_session.0;
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let half = bytes.len() / 2;
    writer.write_all(&bytes[..half]).unwrap();
    writer.flush().unwrap();
    // Reading stalls here for longer than the moment after which the bar shows.
    std::thread::sleep(Duration::from_millis(1500));
    writer.write_all(&bytes[half..half + 600 * 1024]).unwrap();
    writer.flush().unwrap();
    let during = pane_shows(session, " read (");
    assert!(!during.contains("analyzed"), "{during}");
    writer.write_all(&bytes[half + 600 * 1024..]).unwrap();
    drop(writer);
    let after = pane_shows(session, "analyzed");
    assert!(after.contains("40000 attempts from 200 clients"), "{after}");
    assert!(!after.contains(" read ("), "the bar is cleared: {after}");
}
