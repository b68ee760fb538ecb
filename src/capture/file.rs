//! The file adapter: reads pcap and pcapng files (or standard input) into
//! the engine, merging several files in timestamp order, and says where any
//! problem is, by file and packet number.

use pcap::{Capture, Offline, Precision};

use std::io;
use std::sync::mpsc;

use super::gzip::{self, Readable};
use super::reader::{FastReader, Next};
use super::{Damage, FilterError, Problem, Problems, StepsBack, UnsupportedLink};
use crate::decode::LinkType;
use crate::engine::Analyzer;
use crate::record::AttemptRecord;
use crate::time::Timestamp;

/// One open capture file and the packet it will hand out next.
struct Source {
    name: String,
    capture: Capture<Offline>,
    link: LinkType,
    /// Packets read so far (the number of the pending one).
    read: u64,
    /// Bytes of packet data read so far.
    bytes: u64,
    /// The latest timestamp read, and the packets dated before it.
    latest: Option<Timestamp>,
    steps_back: StepsBack,
    /// A classic pcap file, whose 32-bit seconds are unsigned (to 2106);
    /// libpcap sign-extends them, which would date a packet after
    /// 2038-01-19 in 1901.
    unsigned_seconds: bool,
    pending: Option<Timestamp>,
    /// The pending packet's bytes, when libpcap read it.
    frame: Vec<u8>,
    /// The zero-copy reader, for a file read without a filter until it
    /// meets something only libpcap should judge.
    fast: Option<FastReader>,
    /// Why the thread feeding libpcap's pipe (gzip, standard input) stopped
    /// early, if it did.
    feeder_failed: Option<mpsc::Receiver<io::Error>>,
}

impl Source {
    /// Reads the next packet into `pending`/`frame`; at the end or on a read
    /// error the source is exhausted.
    fn advance(&mut self, problems: &mut Problems) {
        self.pending = None;
        if let Some(fast) = &mut self.fast {
            match fast.next() {
                Next::Packet { secs, nanos } => {
                    let len = fast.frame().len();
                    return self.accept(secs, nanos, len);
                }
                Next::End => return self.end(problems),
                Next::HandOver => {
                    // libpcap reads on from this packet: it passes over
                    // those already read, which it reads the same way.
                    self.fast = None;
                    for _ in 0..self.read {
                        if self.capture.next_packet().is_err() {
                            break;
                        }
                    }
                }
            }
        }
        let error = match self.capture.next_packet() {
            Ok(packet) => {
                let mut secs = packet.header.ts.tv_sec;
                if self.unsigned_seconds && secs < 0 {
                    secs = i64::from(secs as u32);
                }
                let nanos = packet.header.ts.tv_usec;
                self.frame.clear();
                self.frame.extend_from_slice(packet.data);
                return self.accept(secs, nanos, self.frame.len());
            }
            Err(e) => e,
        };
        self.end(problems);
        // The decompression failed: libpcap met the end of what it was given.
        if let Some(e) = self.feeder_failed.as_ref().and_then(|f| f.try_recv().ok()) {
            return self.fail(problems, &e);
        }
        match error {
            pcap::Error::NoMorePackets => {}
            // Fewer bytes than a record header after the last packet: trailing
            // junk (a newline appended in transfer), not a lost packet.
            pcap::Error::PcapError(msg) if msg.contains("header bytes") => {
                problems.trailing_fragment.push(self.name.clone());
            }
            // An impossible record length or a cut record: libpcap cannot
            // find the next record, so the file ends here; what came
            // before is whole and stays in the report.
            e => self.fail(problems, &e),
        }
    }

    /// A packet read: it is pending, counted, and its time checked.
    fn accept(&mut self, secs: i64, nanos: i64, len: usize) {
        self.read += 1;
        self.bytes += len as u64;
        let ts = Timestamp::from_secs_nanos(secs, nanos);
        if let Some(latest) = self.latest.filter(|&l| ts < l) {
            self.steps_back.packets += 1;
            self.steps_back.largest = self.steps_back.largest.max(latest.since(ts));
        }
        self.latest = self.latest.max(Some(ts));
        self.pending = Some(ts);
    }

    /// The pending packet's bytes.
    fn frame(&self) -> &[u8] {
        self.fast.as_ref().map_or(&self.frame, FastReader::frame)
    }

    /// The file is read: what is worth a note about its timestamps.
    fn end(&mut self, problems: &mut Problems) {
        if self.steps_back.packets > 0 {
            problems.steps_back.push((self.name.clone(), self.steps_back));
        }
    }

    /// The rest of this file cannot be read (a damaged record, or the
    /// decompression failed): what came before is analyzed.
    fn fail(&self, problems: &mut Problems, e: &dyn std::fmt::Display) {
        problems.damaged.push(Damage {
            file: self.name.clone(),
            packet: self.read + 1,
            reason: e.to_string(),
            analyzed_packets: self.read,
            analyzed_bytes: self.bytes,
        });
    }
}

/// How often (in packets) `on_progress` hears how far the reading got.
const PROGRESS_EVERY: u64 = 8192;
/// A pcap record header; pcapng's are a little larger, so progress is an estimate.
const RECORD_HEADER_BYTES: u64 = 16;

/// Opens each file, then feeds every packet of all of them to the engine in
/// timestamp order, and tells the engine the capture has ended. Each attempt
/// goes to `on_attempt` as soon as it is over (with the capture's first
/// packet time), so memory follows the live connections, not the file size.
/// A file that cannot be used is reported and skipped; the others are still analyzed.
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
        let frame = source.frame();
        if let Err(e) = analyzer.handle_packet(ts, source.link, frame) {
            problems.bad_packet(&source.name, source.read, &e);
        }
        drain(analyzer, on_attempt);
        bytes_read += RECORD_HEADER_BYTES + frame.len() as u64;
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
    let cannot_open = |e: &dyn std::fmt::Display| file_problem(format!("cannot open as a pcap or pcapng capture: {e}"));
    let (libpcap_path, pipe) = match gzip::readable(path) {
        Ok(Readable::Path) => (path.to_owned(), None),
        Ok(Readable::Pipe { path, read_end, failed }) => (path, Some((read_end, failed))),
        Err(e) => {
            problems.file_errors.push(cannot_open(&e));
            return Ok(None);
        }
    };
    let opened = Capture::from_file_with_precision(&libpcap_path, Precision::Nano);
    // libpcap holds its own descriptor of the pipe now (or failed, and the
    // feeder then stops at a broken pipe).
    let feeder_failed = pipe.map(|(read_end, failed)| {
        drop(read_end);
        failed
    });
    let mut capture = match opened {
        Ok(c) => c,
        Err(e) => {
            problems.file_errors.push(cannot_open(&e));
            return Ok(None);
        }
    };
    let datalink = capture.get_datalink();
    let Some(link) = LinkType::from_dlt(datalink.0) else {
        problems.file_errors.push(file_problem(UnsupportedLink::of(datalink).to_string()));
        return Ok(None);
    };
    if let Some(expr) = filter {
        capture.filter(expr, true).map_err(|e| FilterError { expr: expr.to_owned(), reason: e.to_string() })?;
    }
    // A file read whole (no filter, not through a pipe) takes the fast path;
    // libpcap has checked its header, and keeps the filter and the pipes.
    let fast = (filter.is_none() && feeder_failed.is_none()).then(|| FastReader::open(path, link)).flatten();
    // libpcap reports pcapng files as version 1, classic pcap as 2.
    let unsigned_seconds = capture.major_version() == 2;
    Ok(Some(Source {
        name: path.to_owned(),
        capture,
        link,
        read: 0,
        bytes: 0,
        latest: None,
        steps_back: StepsBack::default(),
        unsigned_seconds,
        pending: None,
        frame: Vec::new(),
        fast,
        feeder_failed,
    }))
}
