//! Reading pcap and pcapng files (or standard input) into the engine: a thin
//! adapter that merges several files in timestamp order and says where any
//! problem is, by file and packet number.

use std::collections::BTreeMap;
use std::fmt;

use pcap::{Capture, Offline, Precision};

use crate::decode::{DecodeError, LinkType};
use crate::engine::Analyzer;
use crate::record::AttemptRecord;
use crate::time::Timestamp;

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

/// Problems found while reading: the ones that stopped a file, and a few
/// examples of each kind of undecodable packet with a count of the rest.
#[derive(Debug, Default)]
pub struct Problems {
    /// A file that could not be opened or read to its end.
    pub file_errors: Vec<Problem>,
    /// Undecodable packets by kind: examples, and how many in all.
    pub bad_packets: BTreeMap<String, (Vec<Problem>, u64)>,
    /// Files that end in a fragment shorter than a record header.
    pub trailing_fragment: Vec<String>,
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

    /// Facts about the input that are not errors, for the report's summary.
    pub fn notes(&self) -> Vec<String> {
        self.trailing_fragment
            .iter()
            .map(|f| format!("{f} ends in a fragment too short to be a packet record (ignored)"))
            .collect()
    }

    /// One line per problem: file errors, then bad-packet examples and the count of the rest.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.file_errors.iter().map(|p| p.to_string()).collect();
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

/// One open capture file and the packet it will hand out next.
struct Source {
    name: String,
    capture: Capture<Offline>,
    link: LinkType,
    /// Packets read so far (the number of the pending one).
    read: u64,
    pending: Option<Timestamp>,
    frame: Vec<u8>,
}

impl Source {
    /// Reads the next packet into `pending`/`frame`; at the end or on a read
    /// error the source is exhausted.
    fn advance(&mut self, problems: &mut Problems) {
        self.pending = None;
        match self.capture.next_packet() {
            Ok(packet) => {
                self.read += 1;
                let ts = Timestamp::from_secs_nanos(packet.header.ts.tv_sec, packet.header.ts.tv_usec);
                self.frame.clear();
                self.frame.extend_from_slice(packet.data);
                self.pending = Some(ts);
            }
            Err(pcap::Error::NoMorePackets) => {}
            // Fewer bytes than a record header after the last packet: trailing
            // junk (a newline appended in transfer), not a lost packet.
            Err(pcap::Error::PcapError(msg)) if msg.contains("header bytes") => {
                problems.trailing_fragment.push(self.name.clone());
            }
            Err(e) => problems.file_errors.push(Problem {
                file: self.name.clone(),
                packet: Some(self.read + 1),
                message: format!("cannot read further, the rest of this file is skipped: {e}"),
            }),
        }
    }
}

/// Opens each file, then feeds every packet of all of them to the engine in
/// timestamp order, and tells the engine the capture has ended. Each attempt
/// goes to `on_attempt` as soon as it is over (with the capture's first
/// packet time), so memory follows the live connections, not the file size.
/// A file that cannot be used is reported and skipped; the others are still analyzed.
/// How often (in packets) `on_progress` hears how far the reading got.
const PROGRESS_EVERY: u64 = 8192;
/// A pcap record header; pcapng's are a little larger, so progress is an estimate.
const RECORD_HEADER_BYTES: u64 = 16;

pub fn analyze_files(
    paths: &[String],
    filter: Option<&str>,
    analyzer: &mut Analyzer,
    problems: &mut Problems,
    on_attempt: &mut dyn FnMut(AttemptRecord, Timestamp),
    on_progress: &mut dyn FnMut(u64),
) -> Result<(), FilterError> {
    let mut sources = Vec::new();
    for path in paths {
        if let Some(source) = open(path, filter, problems)? {
            sources.push(source);
        }
    }
    for source in &mut sources {
        source.advance(problems);
    }
    let (mut bytes_read, mut packets) = (0u64, 0u64);
    loop {
        // Few files at a time: a scan beats a heap here.
        let next = sources.iter_mut().filter(|s| s.pending.is_some()).min_by_key(|s| s.pending);
        let Some(source) = next else { break };
        let ts = source.pending.unwrap_or_default();
        if let Err(e) = analyzer.handle_packet(ts, source.link, &source.frame) {
            problems.bad_packet(&source.name, source.read, &e);
        }
        drain(analyzer, on_attempt);
        bytes_read += RECORD_HEADER_BYTES + source.frame.len() as u64;
        packets += 1;
        if packets % PROGRESS_EVERY == 0 {
            on_progress(bytes_read);
        }
        source.advance(problems);
    }
    analyzer.finish();
    drain(analyzer, on_attempt);
    Ok(())
}

fn drain(analyzer: &mut Analyzer, on_attempt: &mut dyn FnMut(AttemptRecord, Timestamp)) {
    let start = analyzer.stats().first_packet.unwrap_or_default();
    while let Some(record) = analyzer.poll_finished() {
        on_attempt(record, start);
    }
}

fn open(path: &str, filter: Option<&str>, problems: &mut Problems) -> Result<Option<Source>, FilterError> {
    let file_problem = |message: String| Problem { file: path.to_owned(), packet: None, message };
    let mut capture = match Capture::from_file_with_precision(path, Precision::Nano) {
        Ok(c) => c,
        Err(e) => {
            problems.file_errors.push(file_problem(format!("cannot open as a pcap or pcapng capture: {e}")));
            return Ok(None);
        }
    };
    let dlt = capture.get_datalink();
    let Some(link) = LinkType::from_dlt(dlt.0) else {
        let name = dlt.get_name().map(|n| format!(" ({n})")).unwrap_or_default();
        problems.file_errors.push(file_problem(format!(
            "link type {}{name} is not supported; pgreach reads {}",
            dlt.0,
            LinkType::SUPPORTED
        )));
        return Ok(None);
    };
    if let Some(expr) = filter {
        capture.filter(expr, true).map_err(|e| FilterError { expr: expr.to_owned(), reason: e.to_string() })?;
    }
    Ok(Some(Source { name: path.to_owned(), capture, link, read: 0, pending: None, frame: Vec::new() }))
}
