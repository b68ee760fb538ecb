//! A small network lab on this machine: a server namespace with a bridge,
//! PostgreSQL 15 and nftables, and client namespaces bridged into it. All
//! addresses are in 192.0.2.0/24 and 2001:db8::/32 (documentation ranges),
//! reachable only inside these namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub const SERVER_NS: &str = "pgr-srv";
pub const SERVER_V4: &str = "192.0.2.1";
pub const SERVER_V6: &str = "2001:db8::1";
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const WORK: &str = "/tmp/pgreach-lab";
/// Who may log in how. `ghost_*` roles do not exist; `blocked` hits a
/// `reject` line; replication connections have no line at all.
const HBA: &str = "local all all trust
host all app_scram all scram-sha-256
host all app_md5 all md5
host all ghost_md5 all md5
host all ghost_scram all scram-sha-256
host all blocked all reject
host all all 192.0.2.0/24 trust
host all all 2001:db8::/32 trust
";

/// Runs a shell command, failing with its output if it fails.
pub fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("bash").arg("-c").arg(cmd).output().with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!("`{cmd}` failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A client host: its own namespace and address.
#[derive(Debug, Clone)]
pub struct Client {
    pub ns: String,
    pub v4: String,
    pub v6: String,
}

/// What a libpq client reported for one connection attempt.
#[derive(Debug, Clone)]
pub struct ClientResult {
    pub ok: bool,
    /// libpq's error text (empty on success).
    pub error: String,
}

/// How one psql run connects and what it does.
#[derive(Clone)]
pub struct Psql<'a> {
    pub v6: bool,
    pub port: u16,
    pub user: &'a str,
    pub dbname: &'a str,
    pub password: Option<&'a str>,
    pub sslmode: &'a str,
    /// More conninfo, e.g. `replication=database`.
    pub extra: &'a str,
    pub application_name: &'a str,
    /// Another server address or name than the lab's own (the routed lab's).
    pub host: Option<&'a str>,
    pub connect_timeout: u32,
    /// Each is one `-c` command.
    pub commands: &'a [&'a str],
    /// A shell pipeline whose output is psql's standard input.
    pub stdin_from: Option<&'a str>,
    /// No PGPASSWORD: psql prompts on a terminal (a pty from `script`) and
    /// this is typed in.
    pub typed_password: Option<&'a str>,
}

impl Default for Psql<'_> {
    fn default() -> Self {
        Psql {
            v6: false,
            port: 5432,
            user: "postgres",
            dbname: "postgres",
            password: None,
            sslmode: "prefer",
            extra: "",
            application_name: "pgreach-lab",
            host: None,
            connect_timeout: 2,
            commands: &["select 1"],
            stdin_from: None,
            typed_password: None,
        }
    }
}

impl Psql<'_> {
    pub fn host(&self) -> &str {
        if let Some(host) = self.host {
            host
        } else if self.v6 {
            SERVER_V6
        } else {
            SERVER_V4
        }
    }

    fn shell(&self) -> String {
        let conninfo = format!(
            "host={} port={} user={} dbname={} sslmode={} connect_timeout={} application_name={} {}",
            self.host(),
            self.port,
            self.user,
            self.dbname,
            self.sslmode,
            self.connect_timeout,
            self.application_name,
            self.extra
        );
        let mut cmd = format!("{PG_BIN}/psql {} -X -q -P pager=off", quote(&conninfo));
        for c in self.commands {
            cmd.push_str(&format!(" -c {}", quote(c)));
        }
        if let Some(pw) = self.password {
            cmd = format!("PGPASSWORD={} {cmd}", quote(pw));
        }
        if let Some(source) = self.stdin_from {
            cmd = format!("{source} | {cmd}");
        }
        if let Some(pw) = self.typed_password {
            cmd = format!("(sleep 1; echo {}) | script -qec {} /dev/null", quote(pw), quote(&cmd));
        }
        cmd
    }
}

/// Single-quotes a string for the shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Client {
    fn command(&self, p: &Psql<'_>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "bash", "-c", &p.shell()]).stdin(Stdio::null());
        cmd
    }

    /// Runs psql and returns what libpq and the server said.
    pub fn run(&self, p: &Psql<'_>) -> Result<ClientResult> {
        let out = self.command(p).output().context("running psql")?;
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok(ClientResult { ok: out.status.success(), error: said.trim().to_owned() })
    }

    /// Runs pgbench (select-only, as app_scram over scram-sha-256) with
    /// `args`; returns its report.
    pub fn pgbench(&self, args: &str) -> Result<String> {
        sh(&format!(
            "ip netns exec {} env PGPASSWORD=scram-pass PGAPPNAME=pgbench {PG_BIN}/pgbench -h {SERVER_V4} -U app_scram -n -S {args} postgres 2>&1",
            self.ns
        ))
    }

    /// Starts psql in the background (a session held open while something happens).
    pub fn spawn(&self, p: &Psql<'_>) -> Result<Child> {
        self.command(p).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("starting psql")
    }
}

/// Waits for a background psql and returns what it said.
pub fn finished(child: Child) -> Result<ClientResult> {
    let out = child.wait_with_output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(ClientResult { ok: out.status.success(), error: said.trim().to_owned() })
}

pub struct Lab {
    pub clients: Vec<Client>,
    data_dir: PathBuf,
}

impl Lab {
    /// Builds the namespaces and starts PostgreSQL. Leftovers of an
    /// interrupted run are removed first.
    pub fn up(client_count: usize) -> Result<Lab> {
        teardown();
        sh(&format!("ip netns add {SERVER_NS}"))?;
        let srv = |c: &str| sh(&format!("ip netns exec {SERVER_NS} {c}"));
        srv("ip link set lo up")?;
        srv("ip link add br0 type bridge")?;
        srv(&format!("ip addr add {SERVER_V4}/24 dev br0"))?;
        srv(&format!("ip -6 addr add {SERVER_V6}/64 dev br0 nodad"))?;
        srv("ip link set br0 up")?;
        let mut clients = Vec::new();
        for i in 0..client_count {
            let ns = format!("pgr-c{i}");
            let v4 = format!("192.0.2.{}", 100 + i);
            let v6 = format!("2001:db8::{:x}", 0x100 + i);
            sh(&format!("ip netns add {ns}"))?;
            sh(&format!("ip link add c{i} netns {ns} type veth peer name p{i} netns {SERVER_NS}"))?;
            srv(&format!("ip link set p{i} master br0"))?;
            srv(&format!("ip link set p{i} up"))?;
            let cli = |c: &str| sh(&format!("ip netns exec {ns} {c}"));
            cli("ip link set lo up")?;
            cli(&format!("ip addr add {v4}/24 dev c{i}"))?;
            cli(&format!("ip -6 addr add {v6}/64 dev c{i} nodad"))?;
            cli(&format!("ip link set c{i} up"))?;
            clients.push(Client { ns, v4, v6 });
        }
        Lab::serve(clients)
    }

    /// Starts PostgreSQL in the server namespace, which must exist, for
    /// `clients`: listening on every address, the lab's pg_hba.conf, a
    /// self-signed certificate and the lab's roles.
    pub fn serve(clients: Vec<Client>) -> Result<Lab> {
        sh(&format!("mkdir -p {WORK} && chown postgres {WORK}"))?;
        let data_dir = Path::new(WORK).join("data");
        let pg = |c: &str| sh(&format!("su postgres -c '{PG_BIN}/{c}'"));
        pg(&format!("initdb -D {} -A trust --no-sync -E UTF8 --locale=C.UTF-8", data_dir.display()))?;
        let dir = data_dir.display();
        sh(&format!(
            "cat >> {dir}/postgresql.conf <<'EOF'\nlisten_addresses = '*'\nport = 5432\nunix_socket_directories = '{WORK}'\n\
             fsync = off\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nEOF\n\
             cat > {dir}/pg_hba.conf <<'EOF'\n{HBA}EOF\n\
             cd {dir} && openssl req -x509 -newkey rsa:2048 -nodes -keyout server.key -out server.crt -days 2 \
             -subj /CN=pgreach-lab 2>/dev/null && chown postgres server.key server.crt && chmod 600 server.key"
        ))?;
        // French server messages need the locale; PostgreSQL ships the translations.
        sh("locale -a | grep -qi '^fr_FR.utf8$' || localedef -i fr_FR -f UTF-8 fr_FR.UTF-8")?;
        let lab = Lab { clients, data_dir };
        lab.start_server()?;
        lab.sql(
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE app_scram LOGIN PASSWORD 'scram-pass';\n\
             SET password_encryption = 'md5'; CREATE ROLE app_md5 LOGIN PASSWORD 'md5-pass';\n\
             CREATE ROLE blocked LOGIN;",
        )?;
        Ok(lab)
    }

    pub fn start_server(&self) -> Result<()> {
        sh(&format!(
            "ip netns exec {SERVER_NS} su postgres -c '{PG_BIN}/pg_ctl -D {} -l {WORK}/server.log -w start' >/dev/null",
            self.data_dir.display()
        ))
        .map(drop)
    }

    pub fn stop_server(&self) -> Result<()> {
        sh(&format!(
            "ip netns exec {SERVER_NS} su postgres -c '{PG_BIN}/pg_ctl -D {} -m fast -w stop' >/dev/null",
            self.data_dir.display()
        ))
        .map(drop)
    }

    /// Runs SQL as the superuser over the Unix socket.
    pub fn sql(&self, sql: &str) -> Result<String> {
        let path = format!("{WORK}/lab.sql");
        std::fs::write(&path, sql)?;
        sh(&format!(
            "chmod 644 {path} && su postgres -c '{PG_BIN}/psql -h {WORK} -X -q -At -v ON_ERROR_STOP=1 -f {path}'"
        ))
    }

    /// Sets server parameters with ALTER SYSTEM and reloads (or restarts,
    /// for those that need it). An empty list resets them all.
    pub fn settings(&self, settings: &[(&str, &str)], restart: bool) -> Result<()> {
        let mut sql = String::new();
        if settings.is_empty() {
            sql.push_str("ALTER SYSTEM RESET ALL;\n");
        }
        for (name, value) in settings {
            sql.push_str(&format!("ALTER SYSTEM SET {name} = '{value}';\n"));
        }
        sql.push_str("SELECT pg_reload_conf();\n");
        self.sql(&sql)?;
        if restart {
            self.stop_server()?;
            self.start_server()?;
        }
        // A reload is asynchronous; give the postmaster a moment.
        sleep(Duration::from_millis(500));
        Ok(())
    }

    /// Replaces pg_hba.conf (`None`: the lab's own) and reloads.
    pub fn hba(&self, lines: Option<&str>) -> Result<()> {
        std::fs::write(self.data_dir.join("pg_hba.conf"), lines.unwrap_or(HBA))?;
        self.sql("SELECT pg_reload_conf();")?;
        sleep(Duration::from_millis(500));
        Ok(())
    }

    /// pgbench's tables, readable by app_scram.
    pub fn pgbench_tables(&self) -> Result<()> {
        sh(&format!("su postgres -c '{PG_BIN}/pgbench -i -s 1 -q -h {WORK} postgres' >/dev/null 2>&1"))?;
        self.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_scram;").map(drop)
    }

    /// Replaces the server's nftables input rules (empty: accept all).
    pub fn firewall(&self, rules: &str) -> Result<()> {
        let script = format!(
            "flush ruleset\ntable inet lab {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{rules}\n  }}\n}}\n"
        );
        let path = format!("{WORK}/rules.nft");
        std::fs::write(&path, script)?;
        sh(&format!("ip netns exec {SERVER_NS} nft -f {path}")).map(drop)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        teardown();
    }
}

/// Stops the lab's PostgreSQL and deletes every `pgr-` namespace and the
/// lab's directory: what an interrupted run may have left.
pub fn teardown() {
    let _ = sh(&format!(
        "su postgres -c '{PG_BIN}/pg_ctl -D {WORK}/data -m immediate stop' >/dev/null 2>&1; \
         for ns in $(ip netns list | awk '{{print $1}}' | grep -E '^pgr-'); do ip netns del $ns; done; rm -rf {WORK}"
    ));
}

/// The program that captures: tcpdump writes pcap, dumpcap pcapng.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sniffer {
    Tcpdump,
    Dumpcap,
}

/// A running capture in a namespace.
pub struct Capture {
    child: Child,
    sniffer: Sniffer,
    /// The sniffer's standard error: its packet counts.
    log: PathBuf,
}

impl Capture {
    /// Starts capturing in namespace `ns` on `iface` into `file` (extra
    /// flags in `extra`), and waits until the sniffer listens.
    pub fn start(ns: &str, sniffer: Sniffer, iface: &str, file: &Path, extra: &[&str]) -> Result<Capture> {
        let capture = Capture::begin(ns, sniffer, iface, file, extra)?;
        Capture::settle();
        Ok(capture)
    }

    /// Starts the sniffer without waiting: call `settle` before the first
    /// packet that matters (once for several captures).
    pub fn begin(ns: &str, sniffer: Sniffer, iface: &str, file: &Path, extra: &[&str]) -> Result<Capture> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        match sniffer {
            // Immediate mode: without it the last packets wait in a TPACKET_V3
            // block and are lost when tcpdump stops.
            Sniffer::Tcpdump => cmd
                .args(["tcpdump", "-i", iface, "--immediate-mode", "-B", "32768", "-U", "-s", "0"])
                .args(["-n", "-Z", "root", "-w"]),
            Sniffer::Dumpcap => cmd.args(["dumpcap", "-i", iface, "-B", "32", "-n", "-w"]),
        };
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let log = Path::new(WORK).join(format!("{name}.log"));
        cmd.arg(file).args(extra).stdout(Stdio::null()).stderr(std::fs::File::create(&log)?);
        let child = cmd.spawn().context("starting the capture (tcpdump / dumpcap installed?)")?;
        Ok(Capture { child, sniffer, log })
    }

    /// The sniffer needs a moment to open the interface.
    pub fn settle() {
        sleep(Duration::from_millis(1500));
    }

    pub fn stop(mut self) -> Result<()> {
        sleep(Duration::from_millis(500));
        sh(&format!("kill -INT {}", self.child.id()))?;
        self.child.wait()?;
        // The sniffer's own count: a capture that lost packets is no ground truth.
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let counts: Vec<&str> = log.lines().filter(|l| l.contains("packets") || l.contains("Packets")).collect();
        eprintln!("  capture: {}", counts.join("; "));
        let dropped = match self.sniffer {
            Sniffer::Tcpdump => log.lines().any(|l| l.contains("dropped by kernel") && !l.starts_with("0 ")),
            // "Packets received/dropped on interface 'p0': 10/0 (…)"
            Sniffer::Dumpcap => log.lines().any(|l| l.contains("received/dropped") && !l.contains("/0 (")),
        };
        if dropped {
            bail!("the capture dropped packets: {log}");
        }
        Ok(())
    }
}
