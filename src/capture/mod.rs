//! The input side: packets from capture files ([`file`]) or from an
//! interface ([`live`]), two thin adapters around the engine, and what both
//! produce beside the engine's attempts: problems with the input, filter
//! errors, and libpcap's counters.

pub mod file;
mod gzip;
pub mod live;
mod read_ahead;
mod reader;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::decode::{DecodeError, LinkType};
use crate::time::short;

pub use file::analyze_files;

/// How many examples of each kind of bad packet are kept for the error lines.
const EXAMPLES_PER_KIND: usize = 3;

/// One problem with the input: what, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as named on the command line (`-` for standard input).
    pub file: String,
    /// 1-based packet number within the file, when the problem is one packet.
    pub packet: Option<u64>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.packet {
            Some(n) => write!(f, "{}: packet {}: {}", self.file, n, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Packets of one file dated before a packet read earlier (a clock
/// stepped back, multi-queue NICs, a damaged timestamp).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepsBack {
    pub packets: u64,
    /// The largest step back.
    pub largest: Duration,
}

/// Where a file's reading stopped, and how much of it was analyzed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub file: String,
    /// 1-based number of the record that could not be read.
    pub packet: u64,
    /// libpcap's words for what is wrong with it.
    pub reason: String,
    pub analyzed_packets: u64,
    pub analyzed_bytes: u64,
}

/// Problems found while reading: the ones that stopped a file, and a few
/// examples of each kind of undecodable packet with a count of the rest.
#[derive(Debug, Default)]
pub struct Problems {
    /// A file that could not be used at all (not opened, not a capture,
    /// an unsupported link type).
    pub file_errors: Vec<Problem>,
    /// A file whose reading stopped at a damaged record (an impossible
    /// length, a cut): what came before it is analyzed.
    pub damaged: Vec<Damage>,
    /// Undecodable packets by kind: examples, and how many in all.
    pub bad_packets: BTreeMap<String, (Vec<Problem>, u64)>,
    /// Files that end in a fragment shorter than a record header.
    pub trailing_fragment: Vec<String>,
    /// Files with packets dated before one read earlier.
    pub steps_back: Vec<(String, StepsBack)>,
}

impl Problems {
    /// An undecodable packet: kept as an example, or counted.
    pub fn bad_packet(&mut self, file: &str, packet: u64, err: &DecodeError) {
        let (examples, count) = self.bad_packets.entry(err.kind()).or_default();
        *count += 1;
        if examples.len() < EXAMPLES_PER_KIND {
            examples.push(Problem { file: file.to_owned(), packet: Some(packet), message: err.to_string() });
        }
    }

    /// Whether some input could not be read at all (as opposed to bad packets inside it).
    pub fn has_file_errors(&self) -> bool {
        !self.file_errors.is_empty()
    }

    /// Whether some file was read only up to a damaged record.
    pub fn has_damage(&self) -> bool {
        !self.damaged.is_empty()
    }

    /// Facts about the input for the report's summary: what a damaged file
    /// left out, and trailing fragments.
    pub fn notes(&self) -> Vec<String> {
        let damage = self.damaged.iter().map(|d| {
            format!(
                "{} is damaged at packet {}: the report covers its first {} packets ({} bytes of packet data), not the rest",
                d.file, d.packet, d.analyzed_packets, d.analyzed_bytes
            )
        });
        let steps = self.steps_back.iter().map(|(file, s)| {
            format!(
                "{file}: {} dated before a packet read earlier (by up to {}); intervals that would be negative count as zero",
                if s.packets == 1 { "1 packet is".to_owned() } else { format!("{} packets are", s.packets) },
                short(s.largest)
            )
        });
        let fragments = self
            .trailing_fragment
            .iter()
            .map(|f| format!("{f} ends in a fragment too short to be a packet record (ignored)"));
        damage.chain(steps).chain(fragments).collect()
    }

    /// One line per problem: file errors, damaged files, then bad-packet
    /// examples and the count of the rest.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.file_errors.iter().map(|p| p.to_string()).collect();
        lines.extend(self.damaged.iter().map(|d| {
            format!(
                "{}: packet {}: cannot read further ({}); the first {} packets were analyzed, the rest of this file is skipped",
                d.file, d.packet, d.reason, d.analyzed_packets
            )
        }));
        for (kind, (examples, count)) in &self.bad_packets {
            lines.extend(examples.iter().map(|p| p.to_string()));
            let rest = count - examples.len() as u64;
            if rest > 0 {
                lines.push(format!("{rest} more packets with the same problem ({kind})"));
            }
        }
        lines
    }
}

/// A tool failure before any packet: the filter expression is wrong.
#[derive(Debug, thiserror::Error)]
#[error("invalid filter expression {expr:?}: {reason}")]
pub struct FilterError {
    pub expr: String,
    pub reason: String,
}

/// libpcap's counters: packets the filter passed, and drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CaptureCounters {
    pub received: u64,
    /// No room in the kernel buffer: pgreach did not read fast enough.
    pub kernel_dropped: u64,
    /// Dropped by the interface or its driver.
    pub interface_dropped: u64,
}

impl CaptureCounters {
    pub fn dropped(&self) -> u64 {
        self.kernel_dropped + self.interface_dropped
    }
}

/// A link type pgreach cannot decode, from a file header or an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedLink {
    pub dlt: i32,
    /// libpcap's name for it, when it has one.
    pub name: Option<String>,
}

impl UnsupportedLink {
    pub fn of(datalink: pcap::Linktype) -> UnsupportedLink {
        UnsupportedLink { dlt: datalink.0, name: datalink.get_name().ok() }
    }
}

impl fmt::Display for UnsupportedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link type {}", self.dlt)?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        write!(f, " is not supported; pgreach reads {}", LinkType::SUPPORTED)
    }
}
