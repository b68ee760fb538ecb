//! The fast path for capture files read without a filter: pcap and pcapng
//! records parsed in place in large buffered reads (pcap-parser), each
//! frame handed over where it lies in the buffer, never copied.
//!
//! It reads only what libpcap would read the same way. At anything else (a
//! damaged or cut record, trailing bytes, a time resolution other than a
//! decimal one down to nanoseconds, a second section, a packet longer than
//! the snapshot length, a simple packet block) it says `HandOver`, and the
//! file adapter lets libpcap read the file on from that packet: damaged
//! files keep libpcap's behaviour and words exactly.

use std::fs::File;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{create_reader, PcapBlockOwned, PcapError};

use crate::decode::LinkType;

/// Bytes read at a time: large reads, few system calls.
const BUFFER_BYTES: usize = 1 << 20;
/// libpcap's MAXIMUM_SNAPLEN: the longest record it reads whole for the
/// link types pgreach decodes.
const MAXIMUM_SNAPLEN: u32 = 262_144;
/// A classic pcap record header; a pcapng enhanced packet block's fields
/// before the packet data.
const PCAP_RECORD_HEADER: usize = 16;
const EPB_HEADER: usize = 28;

/// What the next record is.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A packet: its time (seconds since 1970 and nanoseconds), its bytes in [`FastReader::frame`].
    Packet { secs: i64, nanos: i64 },
    /// The file ended cleanly after its last record.
    End,
    /// Something only libpcap should judge: it reads on from here.
    HandOver,
}

/// One pcapng interface's clock: units per second (a power of ten) and the
/// seconds added to every time.
#[derive(Debug, Clone, Copy)]
struct Clock {
    units_per_sec: u64,
    offset_secs: i64,
}

#[derive(Debug)]
enum Format {
    /// The classic format: nanosecond times or microsecond ones.
    Pcap {
        nanos: bool,
    },
    Pcapng {
        interfaces: Vec<Clock>,
        first_link: Option<LinkType>,
    },
}

pub struct FastReader {
    inner: Box<dyn PcapReaderIterator + Send>,
    format: Option<Format>,
    link: LinkType,
    /// The file's snapshot length as libpcap applies it.
    snapshot: u32,
    /// The record handed out last: its length, and where its frame lies in `inner.data()`.
    pending: Option<(usize, usize, usize)>,
}

impl FastReader {
    /// Opens `path` for the fast path, or `None` when it is not a file
    /// pcap-parser recognises (libpcap then reads it, and says what is wrong).
    /// `link` is what libpcap read from the same file's header.
    pub fn open(path: &str, link: LinkType) -> Option<FastReader> {
        let file = File::open(path).ok()?;
        let inner = create_reader(BUFFER_BYTES, file).ok()?;
        Some(FastReader { inner, format: None, link, snapshot: MAXIMUM_SNAPLEN, pending: None })
    }

    /// The frame of the packet `next` returned last.
    pub fn frame(&self) -> &[u8] {
        match self.pending {
            Some((_, start, len)) => self.inner.data().get(start..start + len).unwrap_or_default(),
            None => &[],
        }
    }

    /// Moves past the packet handed out last and reads the next one.
    pub fn next(&mut self) -> Next {
        // Consumed without moving the rest to the buffer's start: only a
        // refill moves what is left, the part of one record.
        if let Some((consumed, ..)) = self.pending.take() {
            self.inner.consume_noshift(consumed);
        }
        loop {
            let (consumed, step) = match self.inner.next() {
                Ok((consumed, block)) => (consumed, read_block(&mut self.format, self.link, &mut self.snapshot, block)),
                Err(PcapError::Eof) => return Next::End,
                Err(PcapError::Incomplete(_)) => {
                    // A record reaches past the buffer: read more, unless
                    // the file ends inside it (libpcap words that).
                    let had = self.inner.data().len();
                    let refilled = !self.inner.reader_exhausted() && self.inner.refill().is_ok();
                    if !refilled || (self.inner.data().len() == had && !self.inner.reader_exhausted()) {
                        return Next::HandOver;
                    }
                    continue;
                }
                Err(_) => return Next::HandOver,
            };
            match step {
                Step::Skip => self.inner.consume_noshift(consumed),
                Step::Packet { secs, nanos, start, len } => {
                    self.pending = Some((consumed, start, len));
                    return Next::Packet { secs, nanos };
                }
                Step::HandOver => return Next::HandOver,
            }
        }
    }
}

/// What one block is to the reader.
enum Step {
    Skip,
    Packet { secs: i64, nanos: i64, start: usize, len: usize },
    HandOver,
}

/// Reads one block: a header sets the format, a packet is placed.
fn read_block(format: &mut Option<Format>, link: LinkType, snapshot: &mut u32, block: PcapBlockOwned<'_>) -> Step {
    match (format.as_mut(), block) {
        (None, PcapBlockOwned::LegacyHeader(header)) => {
            if header.is_modified_format() || header.version_major != 2 {
                return Step::HandOver;
            }
            *snapshot = libpcap_snapshot(header.snaplen);
            *format = Some(Format::Pcap { nanos: header.is_nanosecond_precision() });
            Step::Skip
        }
        (Some(Format::Pcap { nanos }), PcapBlockOwned::Legacy(record)) => {
            let limit = if *nanos { 1_000_000_000 } else { 1_000_000 };
            if record.caplen > *snapshot || record.ts_usec >= limit {
                return Step::HandOver;
            }
            let scale = if *nanos { 1 } else { 1000 };
            // A classic pcap's seconds are unsigned (to 2106).
            Step::Packet {
                secs: i64::from(record.ts_sec),
                nanos: i64::from(record.ts_usec) * scale,
                start: PCAP_RECORD_HEADER,
                len: record.caplen as usize,
            }
        }
        (None, PcapBlockOwned::NG(Block::SectionHeader(_))) => {
            *format = Some(Format::Pcapng { interfaces: Vec::new(), first_link: None });
            Step::Skip
        }
        (Some(Format::Pcapng { interfaces, first_link }), PcapBlockOwned::NG(block)) => {
            pcapng_block(interfaces, first_link, link, snapshot, block)
        }
        _ => Step::HandOver,
    }
}

fn pcapng_block(
    interfaces: &mut Vec<Clock>,
    first_link: &mut Option<LinkType>,
    link: LinkType,
    snapshot: &mut u32,
    block: Block<'_>,
) -> Step {
    match block {
        Block::InterfaceDescription(idb) => {
            let this_link = LinkType::from_dlt(i32::from(idb.linktype.0 as u16));
            // libpcap refuses interfaces of another link type than the first.
            if this_link != Some(link) || first_link.is_some_and(|l| Some(l) != this_link) {
                return Step::HandOver;
            }
            if first_link.is_none() {
                *first_link = this_link;
                *snapshot = libpcap_snapshot(idb.snaplen);
            }
            // Decimal resolutions down to nanoseconds only: libpcap's
            // scaling of the others is its own.
            let Some(units_per_sec) = (idb.if_tsresol <= 9).then(|| 10u64.pow(u32::from(idb.if_tsresol))) else {
                return Step::HandOver;
            };
            interfaces.push(Clock { units_per_sec, offset_secs: idb.if_tsoffset });
            Step::Skip
        }
        Block::EnhancedPacket(epb) => {
            let Some(clock) = interfaces.get(epb.if_id as usize) else { return Step::HandOver };
            if epb.caplen > *snapshot || epb.data.len() < epb.caplen as usize {
                return Step::HandOver;
            }
            let t = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
            let Ok(secs) = i64::try_from(t / clock.units_per_sec) else { return Step::HandOver };
            let frac = t % clock.units_per_sec;
            Step::Packet {
                // As libpcap adds it: in wrapping 64-bit arithmetic.
                secs: secs.wrapping_add(clock.offset_secs),
                nanos: (frac * (1_000_000_000 / clock.units_per_sec)) as i64,
                start: EPB_HEADER,
                len: epb.caplen as usize,
            }
        }
        Block::SectionHeader(_) | Block::SimplePacket(_) => Step::HandOver,
        // Statistics, name resolution, secrets, custom blocks: libpcap skips them too.
        _ => Step::Skip,
    }
}

/// The snapshot length libpcap applies to a file's records: the header's,
/// unless it is 0 or beyond the maximum.
fn libpcap_snapshot(snaplen: u32) -> u32 {
    if snaplen == 0 || snaplen > MAXIMUM_SNAPLEN {
        MAXIMUM_SNAPLEN
    } else {
        snaplen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// Every capture file under `dir`, recursively.
    fn captures(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                captures(&path, out);
            } else if path.extension().is_some_and(|e| e == "pcap" || e == "pcapng" || e == "cap") {
                out.push(path);
            }
        }
    }

    /// The fast reader against libpcap on one file: the same packets (times
    /// and bytes) until the file ends or the fast reader hands it over.
    /// Returns the packets compared and whether the end was reached.
    fn compare(path: &Path) -> Option<(u64, bool)> {
        let name = path.display().to_string();
        let mut libpcap = pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano).ok()?;
        let link = LinkType::from_dlt(libpcap.get_datalink().0)?;
        let unsigned_seconds = libpcap.major_version() == 2;
        let mut fast =
            FastReader::open(&name, link).unwrap_or_else(|| panic!("{name}: libpcap opens it, pcap-parser not"));
        let mut packets = 0;
        loop {
            match fast.next() {
                Next::Packet { secs, nanos } => {
                    packets += 1;
                    let theirs = libpcap.next_packet().unwrap_or_else(|e| panic!("{name}: packet {packets}: {e}"));
                    let mut their_secs = theirs.header.ts.tv_sec;
                    if unsigned_seconds && their_secs < 0 {
                        their_secs = i64::from(their_secs as u32);
                    }
                    assert_eq!((secs, nanos), (their_secs, theirs.header.ts.tv_usec), "{name}: packet {packets}");
                    assert_eq!(fast.frame(), theirs.data, "{name}: packet {packets}");
                }
                Next::End => {
                    assert!(
                        matches!(libpcap.next_packet(), Err(pcap::Error::NoMorePackets)),
                        "{name}: libpcap reads on after {packets} packets"
                    );
                    return Some((packets, true));
                }
                Next::HandOver => return Some((packets, false)),
            }
        }
    }

    #[test]
    fn the_fast_reader_reads_what_libpcap_reads_on_every_capture() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        captures(&root.join("captures"), &mut files);
        captures(&root.join("../shared/corpus"), &mut files);
        let (mut whole, mut pcapng, mut packets) = (0, 0, 0);
        for path in &files {
            let Some((n, ended)) = compare(path) else { continue };
            packets += n;
            whole += u32::from(ended);
            pcapng += u32::from(ended && path.extension().is_some_and(|e| e == "pcapng"));
        }
        // The recorded captures are whole files: all of them are read to
        // their end on the fast path, pcapng among them.
        assert!(whole >= 40, "{whole} of {} files read to their end", files.len());
        assert!(pcapng >= 1, "no pcapng file read to its end");
        assert!(packets > 5_000, "{packets} packets compared");
    }

    /// A pcap header and `records` (time in seconds and microseconds, frame).
    fn pcap(snaplen: u32, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut file = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
        file.extend_from_slice(&[2, 0, 4, 0]);
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&snaplen.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        for (secs, micros, frame) in records {
            for field in [*secs, *micros, frame.len() as u32, frame.len() as u32] {
                file.extend_from_slice(&field.to_le_bytes());
            }
            file.extend_from_slice(frame);
        }
        file
    }

    fn read_all(name: &str, bytes: &[u8]) -> Vec<Next> {
        let path = std::env::temp_dir().join(format!("pgreach-reader-{}-{name}.pcap", std::process::id()));
        std::fs::write(&path, bytes).expect("write");
        let mut fast = FastReader::open(&path.display().to_string(), LinkType::Ethernet).expect("opens");
        let mut seen = Vec::new();
        loop {
            let next = fast.next();
            let last = !matches!(next, Next::Packet { .. });
            seen.push(next);
            if last {
                break;
            }
        }
        std::fs::remove_file(&path).expect("remove");
        seen
    }

    #[test]
    fn seconds_past_2038_stay_positive_and_microseconds_become_nanoseconds() {
        let seen = read_all("2038", &pcap(65535, &[(0x9000_0000, 7, &[0; 60])]));
        assert_eq!(seen, [Next::Packet { secs: 0x9000_0000, nanos: 7000 }, Next::End]);
    }

    #[test]
    fn what_only_libpcap_should_judge_is_handed_over() {
        let frame = [0u8; 60];
        // A record longer than the snapshot length (libpcap cuts it).
        assert_eq!(read_all("snaplen", &pcap(40, &[(1, 0, &frame)])), [Next::HandOver]);
        // Microseconds beyond a second.
        assert_eq!(read_all("micros", &pcap(65535, &[(1, 1_000_000, &frame)])), [Next::HandOver]);
        // A record cut by the end of the file, after a whole one.
        let mut cut = pcap(65535, &[(1, 0, &frame), (2, 0, &frame)]);
        cut.truncate(cut.len() - 10);
        assert_eq!(read_all("cut", &cut), [Next::Packet { secs: 1, nanos: 0 }, Next::HandOver]);
    }
}
