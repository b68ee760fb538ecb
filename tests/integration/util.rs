//! Helpers: building packets and pcap files, running the pgreach binary.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use etherparse::PacketBuilder;
use pgreach::time::Timestamp;

/// When examples/ says its reports were made (SOURCE_DATE_EPOCH; `cargo
/// xtask examples` uses the same), 2026-11-24T12:00:00Z.
pub const EXAMPLES_MADE_AT: &str = "1795521600";
pub const CLIENT: &str = "192.0.2.50:40000";
pub const SERVER: &str = "192.0.2.1:5432";
pub const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Seconds from the start of a test capture.
pub fn at(secs: f64) -> Timestamp {
    Timestamp::from_nanos(1_700_000_000_000_000_000 + (secs * 1e9) as i64)
}

/// TCP flags for a built segment.
#[derive(Clone, Copy, Default)]
pub struct Seg {
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub ack: Option<u32>,
    pub seq: u32,
    pub ttl: u8,
    pub payload: &'static [u8],
}

pub fn syn(seq: u32) -> Seg {
    Seg { syn: true, seq, ..Seg::default() }
}
pub fn syn_ack(seq: u32, ack: u32) -> Seg {
    Seg { syn: true, seq, ack: Some(ack), ..Seg::default() }
}
pub fn ack(seq: u32, ack: u32) -> Seg {
    Seg { seq, ack: Some(ack), ..Seg::default() }
}
pub fn rst_ack(seq: u32, ack: u32) -> Seg {
    Seg { rst: true, seq, ack: Some(ack), ..Seg::default() }
}
pub fn fin(seq: u32, ack: u32) -> Seg {
    Seg { fin: true, seq, ack: Some(ack), ..Seg::default() }
}
pub fn data(seq: u32, ack: u32, payload: &'static [u8]) -> Seg {
    Seg { seq, ack: Some(ack), payload, ..Seg::default() }
}

/// An Ethernet frame carrying `seg` from `src` to `dst`.
pub fn tcp_frame(src: &str, dst: &str, seg: Seg) -> Vec<u8> {
    let (src, dst) = (addr(src), addr(dst));
    let ttl = if seg.ttl == 0 { 64 } else { seg.ttl };
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let b = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), ttl),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), ttl),
        _ => panic!("mixed address families"),
    };
    let mut t = b.tcp(src.port(), dst.port(), seg.seq, 64240);
    if seg.syn {
        t = t.syn();
    }
    if seg.fin {
        t = t.fin();
    }
    if seg.rst {
        t = t.rst();
    }
    if let Some(a) = seg.ack {
        t = t.ack(a);
    }
    let mut out = Vec::new();
    t.write(&mut out, seg.payload).expect("build frame");
    out
}

/// An Ethernet frame carrying a UDP datagram (a DNS answer, say).
pub fn udp_frame(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = (addr(src), addr(dst));
    let b = PacketBuilder::ethernet2(MAC_B, MAC_A);
    let b = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed address families"),
    };
    let mut out = Vec::new();
    b.udp(src.port(), dst.port()).write(&mut out, payload).expect("build frame");
    out
}

/// The IP and first 8 TCP bytes of a SYN, as an ICMP error quotes them.
pub fn quoted_syn(client: &str, server: &str, seq: u32) -> Vec<u8> {
    let frame = tcp_frame(client, server, syn(seq));
    let ip = &frame[14..];
    let ip_len = if addr(client).is_ipv4() { 20 } else { 40 };
    ip[..ip_len + 8].to_vec()
}

/// An ICMP (v4) or ICMPv6 destination-unreachable from `from` to the client, quoting its SYN.
pub fn icmp_frame(from: &str, client: &str, server: &str, seq: u32, icmp_type: u8, code: u8) -> Vec<u8> {
    let quoted = quoted_syn(client, server, seq);
    let from: IpAddr = from.parse().expect("address");
    let to = addr(client).ip();
    let b = PacketBuilder::ethernet2(MAC_B, MAC_A);
    let mut out = Vec::new();
    match (from, to) {
        (IpAddr::V4(f), IpAddr::V4(t)) => {
            b.ipv4(f.octets(), t.octets(), 64).icmpv4_raw(icmp_type, code, [0; 4]).write(&mut out, &quoted)
        }
        (IpAddr::V6(f), IpAddr::V6(t)) => {
            b.ipv6(f.octets(), t.octets(), 64).icmpv6_raw(icmp_type, code, [0; 4]).write(&mut out, &quoted)
        }
        _ => panic!("mixed address families"),
    }
    .expect("build icmp");
    out
}

/// A classic little-endian pcap file with the given link type and records
/// (timestamp, captured bytes, original length).
pub fn pcap_bytes(linktype: u32, snaplen: u32, records: &[(Timestamp, Vec<u8>, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&snaplen.to_le_bytes());
    out.extend_from_slice(&linktype.to_le_bytes());
    for (ts, bytes, orig) in records {
        let nanos = ts.as_nanos();
        out.extend_from_slice(&((nanos / 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(((nanos % 1_000_000_000) / 1000) as u32).to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&orig.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// A scratch file for one test.
pub fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgreach-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

pub fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the pgreach binary.
pub fn pgreach(args: &[&str]) -> Output {
    pgreach_with_stdin(args, None)
}

pub fn pgreach_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgreach"))
        .args(args)
        .current_dir(project_root())
        // Reports say when they were made; the examples are made at this time.
        .env("SOURCE_DATE_EPOCH", EXAMPLES_MADE_AT)
        // A key log in the environment would change what the tests see.
        .env_remove("SSLKEYLOGFILE")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgreach");
    if let Some(bytes) = stdin {
        child.stdin.take().expect("stdin").write_all(bytes).expect("feed stdin");
    }
    child.wait_with_output().expect("pgreach output")
}

/// Runs `pgreach analyze --format json` and parses the document.
pub fn analyze_json(args: &[&str]) -> (serde_json::Value, Output) {
    let mut full = vec!["analyze", "--format", "json"];
    full.extend_from_slice(args);
    let out = pgreach(&full);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON from {args:?}: {e}\nstderr: {}", String::from_utf8_lossy(&out.stderr)));
    (doc, out)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A small deterministic generator (xorshift64) for mutation tests: the same
/// inputs every run, so a failure reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
