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
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const WORK: &str = "/tmp/pgreach-lab";

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

impl Client {
    /// Runs psql from this client against `host:port` and returns what libpq said.
    pub fn psql(&self, host: &str, port: u16, sql: &str, connect_timeout: u32) -> Result<ClientResult> {
        let conninfo = format!(
            "host={host} port={port} user=postgres dbname=postgres connect_timeout={connect_timeout} application_name=pgreach-lab"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, &format!("{PG_BIN}/psql"), &conninfo, "-X", "-q", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        Ok(ClientResult { ok: out.status.success(), error: String::from_utf8_lossy(&out.stderr).trim().to_owned() })
    }

    /// Starts psql in the background (for sessions that outlive a capture's start).
    pub fn spawn_psql(&self, host: &str, sql: &str) -> Result<Child> {
        let conninfo = format!("host={host} port=5432 user=postgres dbname=postgres application_name=pgreach-lab");
        Command::new("ip")
            .args(["netns", "exec", &self.ns, &format!("{PG_BIN}/psql"), &conninfo, "-X", "-q", "-c", sql])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting psql")
    }
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
        sh(&format!("mkdir -p {WORK} && chown postgres {WORK}"))?;
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
        let data_dir = Path::new(WORK).join("data");
        let pg = |c: &str| sh(&format!("su postgres -c '{PG_BIN}/{c}'"));
        pg(&format!("initdb -D {} -A trust --no-sync -E UTF8 --locale=C.UTF-8", data_dir.display()))?;
        sh(&format!(
            "cat >> {dir}/postgresql.conf <<'EOF'\nlisten_addresses = '*'\nport = 5432\nunix_socket_directories = '{WORK}'\nfsync = off\nEOF\n\
             cat >> {dir}/pg_hba.conf <<'EOF'\nhost all all 192.0.2.0/24 trust\nhost all all 2001:db8::/32 trust\nEOF",
            dir = data_dir.display()
        ))?;
        let lab = Lab { clients, data_dir };
        lab.start_server()?;
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

fn teardown() {
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

/// A running capture in the server namespace.
pub struct Capture {
    child: Child,
    sniffer: Sniffer,
}

impl Capture {
    /// Starts capturing on `iface` into `file` (extra flags in `extra`).
    pub fn start(sniffer: Sniffer, iface: &str, file: &Path, extra: &[&str]) -> Result<Capture> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", SERVER_NS]);
        match sniffer {
            // Immediate mode: without it the last packets wait in a TPACKET_V3
            // block and are lost when tcpdump stops.
            Sniffer::Tcpdump => cmd
                .args(["tcpdump", "-i", iface, "--immediate-mode", "-B", "32768", "-U", "-s", "0"])
                .args(["-n", "-Z", "root", "-w"]),
            Sniffer::Dumpcap => cmd.args(["dumpcap", "-i", iface, "-B", "32", "-n", "-w"]),
        };
        cmd.arg(file).args(extra).stdout(Stdio::null()).stderr(std::fs::File::create(format!("{WORK}/capture.log"))?);
        let child = cmd.spawn().context("starting the capture (tcpdump / dumpcap installed?)")?;
        // The sniffer needs a moment to open the interface.
        sleep(Duration::from_millis(1500));
        Ok(Capture { child, sniffer })
    }

    pub fn stop(mut self) -> Result<()> {
        sleep(Duration::from_millis(500));
        sh(&format!("kill -INT {}", self.child.id()))?;
        self.child.wait()?;
        // The sniffer's own count: a capture that lost packets is no ground truth.
        let log = std::fs::read_to_string(format!("{WORK}/capture.log")).unwrap_or_default();
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
