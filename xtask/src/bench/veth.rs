//! Two network namespaces joined by one veth pair, for the pgbench capture:
//! the server in one, its clients in the other. The pair has a 1500-byte MTU
//! and its segmentation offloads off, so TCP cuts its segments to the MSS
//! itself and the capture holds Ethernet frames of at most 1514 bytes, as
//! on a real network (on loopback, or with offloads on, it sees segments of
//! up to 64 KiB).
//!
//! ```text
//! pgr-bench-srv veth0 192.0.2.249/30 ── veth0 192.0.2.250/30 pgr-bench-cli
//! ```

use anyhow::{Context, Result};

use crate::lab::{quote, sh};
use crate::routed::{add_namespace, exec};

pub const SERVER_NS: &str = "pgr-bench-srv";
pub const CLIENT_NS: &str = "pgr-bench-cli";
pub const SERVER_V4: &str = "192.0.2.249";
pub const CLIENT_V4: &str = "192.0.2.250";
/// Each end of the pair has this name in its own namespace.
pub const IFACE: &str = "veth0";
const MTU: u32 = 1500;
/// The largest Ethernet frame the pair carries: the MTU and its header.
pub const MAX_FRAME: u32 = MTU + 14;

/// The two namespaces; dropping this deletes them.
pub struct NamespacePair(());

impl NamespacePair {
    /// Makes the namespaces and the pair. Leftovers of an interrupted run
    /// are deleted first.
    pub fn up() -> Result<NamespacePair> {
        sh("command -v ethtool")
            .context("the veth's offloads are turned off with ethtool (apt-get install ethtool)")?;
        delete();
        // Made before the namespaces, so that an error below deletes them.
        let pair = NamespacePair(());
        add_namespace(SERVER_NS)?;
        add_namespace(CLIENT_NS)?;
        sh(&format!("ip link add {IFACE} netns {SERVER_NS} type veth peer name {IFACE} netns {CLIENT_NS}"))?;
        for (ns, v4) in [(SERVER_NS, SERVER_V4), (CLIENT_NS, CLIENT_V4)] {
            exec(
                ns,
                &format!(
                    "ip link set {IFACE} mtu {MTU} && ethtool -K {IFACE} tso off gso off gro off && \
                     ip addr add {v4}/30 dev {IFACE} && ip link set {IFACE} up"
                ),
            )?;
        }
        Ok(pair)
    }

    /// `cmd` as a shell command run in the clients' namespace.
    pub fn in_client(&self, cmd: &str) -> String {
        format!("ip netns exec {CLIENT_NS} bash -c {}", quote(cmd))
    }
}

impl Drop for NamespacePair {
    fn drop(&mut self) {
        delete();
    }
}

/// Deletes the two namespaces if they exist (the pair goes with them).
fn delete() {
    for ns in [SERVER_NS, CLIENT_NS] {
        let _ = sh(&format!("ip netns del {ns} 2>/dev/null"));
    }
}
