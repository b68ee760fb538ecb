//! A routed lab: client namespaces on a switch, a router namespace that
//! forwards between the clients' subnet and the server's, and PostgreSQL in
//! the server namespace. One path, three places to capture it (a client's
//! interface, the router's server-side interface, the server's interface)
//! and a router to drop, reject or translate packets in between.
//!
//! ```text
//! pgr-c0 eth0 192.0.2.10 ─┐                               2001:db8:1::10 …
//! pgr-c1 eth0 192.0.2.11 ─┤ pgr-sw (bridge)
//!                         └─ lan 192.0.2.1/26  pgr-rt  wan 192.0.2.65/26 ── eth0 192.0.2.66 pgr-srv
//!                            2001:db8:1::1/64          2001:db8:2::1/64      2001:db8:2::66
//! ```
//!
//! The switch has a namespace of its own so that the router holds only its
//! two interfaces: `tcpdump -i any` there sees each packet once on each side.

use std::path::Path;

use anyhow::Result;

use crate::lab::{sh, teardown, Capture, Client, Lab, Psql, Sniffer, SERVER_NS};

pub const ROUTER_NS: &str = "pgr-rt";
const SWITCH_NS: &str = "pgr-sw";
/// The router's interface toward the clients; its addresses are the clients' gateway.
pub const ROUTER_LAN: &str = "lan";
pub const ROUTER_LAN_V4: &str = "192.0.2.1";
pub const ROUTER_LAN_V6: &str = "2001:db8:1::1";
/// The router's interface toward the server.
pub const ROUTER_WAN: &str = "wan";
pub const ROUTER_WAN_V4: &str = "192.0.2.65";
pub const ROUTER_WAN_V6: &str = "2001:db8:2::1";
pub const SERVER_V4: &str = "192.0.2.66";
pub const SERVER_V6: &str = "2001:db8:2::66";
/// Each client's and the server's one interface.
pub const HOST_IFACE: &str = "eth0";

/// Runs a shell command in namespace `ns`, failing with its output if it fails.
pub fn exec(ns: &str, cmd: &str) -> Result<String> {
    sh(&format!("ip netns exec {ns} bash -c {}", quote(cmd)))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The routed lab; dropping it tears every namespace down.
pub struct Routed {
    /// The clients and the server's PostgreSQL (`lab.sql`, `lab.stop_server`…).
    pub lab: Lab,
}

impl Routed {
    /// Builds the namespaces, turns forwarding on in the router and starts
    /// PostgreSQL. Leftovers of an interrupted run are removed first.
    pub fn up(client_count: usize) -> Result<Routed> {
        teardown();
        for ns in [SERVER_NS, ROUTER_NS, SWITCH_NS] {
            add_namespace(ns)?;
        }
        exec(SWITCH_NS, "ip link add br0 type bridge && ip link set br0 up")?;
        sh(&format!("ip link add {ROUTER_LAN} netns {ROUTER_NS} type veth peer name uplink netns {SWITCH_NS}"))?;
        sh(&format!("ip link add {ROUTER_WAN} netns {ROUTER_NS} type veth peer name {HOST_IFACE} netns {SERVER_NS}"))?;
        exec(SWITCH_NS, "ip link set uplink master br0 && ip link set uplink up")?;
        exec(
            ROUTER_NS,
            &format!(
                "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 && \
                 ip addr add {ROUTER_LAN_V4}/26 dev {ROUTER_LAN} && ip -6 addr add {ROUTER_LAN_V6}/64 dev {ROUTER_LAN} nodad && \
                 ip addr add {ROUTER_WAN_V4}/26 dev {ROUTER_WAN} && ip -6 addr add {ROUTER_WAN_V6}/64 dev {ROUTER_WAN} nodad && \
                 ip link set {ROUTER_LAN} up && ip link set {ROUTER_WAN} up"
            ),
        )?;
        host(SERVER_NS, SERVER_V4, SERVER_V6, ROUTER_WAN_V4, ROUTER_WAN_V6)?;
        let mut clients = Vec::new();
        for i in 0..client_count {
            let ns = format!("pgr-c{i}");
            let (v4, v6) = (format!("192.0.2.{}", 10 + i), format!("2001:db8:1::{:x}", 0x10 + i));
            add_namespace(&ns)?;
            sh(&format!("ip link add {HOST_IFACE} netns {ns} type veth peer name s{i} netns {SWITCH_NS}"))?;
            exec(SWITCH_NS, &format!("ip link set s{i} master br0 && ip link set s{i} up"))?;
            host(&ns, &v4, &v6, ROUTER_LAN_V4, ROUTER_LAN_V6)?;
            clients.push(Client { ns, v4, v6 });
        }
        Ok(Routed { lab: Lab::serve(clients)? })
    }

    /// psql to the server over IPv4 or IPv6, as the lab's defaults otherwise.
    pub fn psql(v6: bool) -> Psql<'static> {
        Psql { v6, host: Some(if v6 { SERVER_V6 } else { SERVER_V4 }), ..Psql::default() }
    }

    /// Removes every nftables rule in the router and the server.
    pub fn clear_rules(&self) -> Result<()> {
        for ns in [ROUTER_NS, SERVER_NS] {
            exec(ns, "nft flush ruleset")?;
        }
        Ok(())
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        teardown();
    }
}

/// A namespace whose interfaces send no IPv6 router solicitations: the
/// captures hold the scenario's packets, not the hosts' chatter.
pub fn add_namespace(ns: &str) -> Result<()> {
    sh(&format!("ip netns add {ns}"))?;
    exec(ns, "ip link set lo up && sysctl -qw net.ipv6.conf.default.router_solicitations=0").map(drop)
}

/// Addresses host namespace `ns`'s interface and routes everything through `gateway`.
fn host(ns: &str, v4: &str, v6: &str, gateway_v4: &str, gateway_v6: &str) -> Result<()> {
    exec(
        ns,
        &format!(
            "ip addr add {v4}/26 dev {HOST_IFACE} && ip -6 addr add {v6}/64 dev {HOST_IFACE} nodad && \
             ip link set {HOST_IFACE} up && ip route add default via {gateway_v4} && \
             ip -6 route add default via {gateway_v6}"
        ),
    )
    .map(drop)
}

/// Replaces nftables table `inet NAME` in namespace `ns` with `body` (its
/// chains); an empty body deletes it. Other tables stay as they are.
pub fn nft_table(ns: &str, name: &str, body: &str) -> Result<()> {
    let mut script = format!("table inet {name} {{}}\ndelete table inet {name}\n");
    if !body.trim().is_empty() {
        script.push_str(&format!("table inet {name} {{\n{body}\n}}\n"));
    }
    let path = Path::new(crate::lab::WORK).join(format!("{ns}-{name}.nft"));
    std::fs::write(&path, script)?;
    exec(ns, &format!("nft -f {}", path.display())).map(drop)
}

/// Sets the rules of filter hook `hook` (`input`, `forward`, `output`…) in
/// namespace `ns`, one per line (empty: accept all).
pub fn filter(ns: &str, hook: &str, rules: &str) -> Result<()> {
    let body = if rules.trim().is_empty() {
        String::new()
    } else {
        format!("  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n{rules}\n  }}")
    };
    nft_table(ns, &format!("lab_{hook}"), &body)
}

/// Source NAT on the router: connections leave its server-side interface
/// from the router's address there (masquerade), or not.
pub fn masquerade(on: bool) -> Result<()> {
    let body = format!(
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         oifname \"{ROUTER_WAN}\" masquerade\n  }}"
    );
    nft_table(ROUTER_NS, "lab_snat", if on { &body } else { "" })
}

/// Destination NAT on the router (a published port): connections to the
/// router's client-side address at `port` go to the server's `to_port`.
pub fn publish(port: u16, to_port: u16) -> Result<()> {
    let body = format!(
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    \
         iifname \"{ROUTER_LAN}\" ip daddr {ROUTER_LAN_V4} tcp dport {port} dnat ip to {SERVER_V4}:{to_port}\n  }}"
    );
    nft_table(ROUTER_NS, "lab_dnat", &body)
}

/// Where a capture listens: a namespace and an interface (or `any`).
#[derive(Debug, Clone)]
pub struct Point {
    pub ns: String,
    pub iface: String,
}

impl Point {
    /// Client `i`'s own interface.
    pub fn client(i: usize) -> Point {
        Point { ns: format!("pgr-c{i}"), iface: HOST_IFACE.to_owned() }
    }

    /// The router's server-side interface: the point in the middle.
    pub fn router() -> Point {
        Point { ns: ROUTER_NS.to_owned(), iface: ROUTER_WAN.to_owned() }
    }

    /// Every interface of the router at once, before and after its NAT.
    pub fn router_any() -> Point {
        Point { ns: ROUTER_NS.to_owned(), iface: "any".to_owned() }
    }

    pub fn server() -> Point {
        Point { ns: SERVER_NS.to_owned(), iface: HOST_IFACE.to_owned() }
    }
}

/// tcpdump running at several points at once, each into its own file.
pub struct Captures(Vec<Capture>);

impl Captures {
    /// Starts every capture, then waits once for them all to listen.
    pub fn start(points: &[(Point, &Path)]) -> Result<Captures> {
        let mut running = Vec::new();
        for (point, file) in points {
            running.push(Capture::begin(&point.ns, Sniffer::Tcpdump, &point.iface, file, &[])?);
        }
        Capture::settle();
        Ok(Captures(running))
    }

    /// Stops them all; fails if any could not, or if any dropped packets.
    pub fn stop(self) -> Result<()> {
        let mut first_error = Ok(());
        for capture in self.0 {
            let stopped = capture.stop();
            if first_error.is_ok() {
                first_error = stopped;
            }
        }
        first_error
    }
}
