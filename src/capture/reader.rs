//! The fast path for capture files read without a filter: pcap and pcapng
//! records parsed in place (pcap-parser) in large chunks that a thread of
//! their own reads ahead ([`super::read_ahead`]), each frame handed over
//! where it lies, never copied; only a record that spans two chunks is put
//! together in a small buffer of its own.
//!
//! It reads only what libpcap would read the same way. At anything else (a
//! damaged or cut record, trailing bytes, a time resolution other than a
//! decimal one down to nanoseconds, a second section, a packet longer than
//! the snapshot length, a simple packet block) it says `HandOver`, and the
//! file adapter lets libpcap read the file on from that packet: damaged
//! files keep libpcap's behaviour and words exactly.

use std::fs::File;

use pcap_parser::nom::{Err as NomErr, Needed};
use pcap_parser::pcap::{parse_pcap_frame, parse_pcap_frame_be, parse_pcap_header};
use pcap_parser::pcapng::{parse_block_be, parse_block_le, parse_sectionheaderblock, Block};
use pcap_parser::PcapBlockOwned;

use super::read_ahead::{Chunk, Chunks, CHUNK_BYTES};
use crate::decode::LinkType;

/// The longest record put together across chunks; a longer one (a damaged
/// length) is libpcap's to judge.
const MAX_RECORD: usize = CHUNK_BYTES;
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
        big_endian: bool,
    },
    Pcapng {
        big_endian: bool,
        interfaces: Vec<Clock>,
        first_link: Option<LinkType>,
    },
}

/// Where the bytes being parsed are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Chunk,
    /// A record that spans chunks, put together in `joined`.
    Joined,
}

/// Why a block could not be parsed from the bytes at hand.
enum Short {
    /// More bytes are needed: this many, when the parser knows.
    Incomplete(Option<usize>),
    Invalid,
}

pub struct FastReader {
    chunks: Chunks,
    chunk: Vec<u8>,
    /// The bytes of `chunk` read from the file, and how far parsing got.
    chunk_len: usize,
    at: usize,
    joined: Vec<u8>,
    joined_at: usize,
    place: Place,
    /// The file has no more chunks.
    ended: bool,
    format: Option<Format>,
    link: LinkType,
    /// The file's snapshot length as libpcap applies it.
    snapshot: u32,
    /// The frame of the packet handed out last: where, from, and its length.
    frame: Option<(Place, usize, usize)>,
}

impl FastReader {
    /// Opens `path` for the fast path, or `None` when it is not a file
    /// pcap-parser recognises (libpcap then reads it, and says what is wrong).
    /// `link` is what libpcap read from the same file's header.
    pub fn open(path: &str, link: LinkType) -> Option<FastReader> {
        Self::open_in_chunks(path, link, CHUNK_BYTES)
    }

    fn open_in_chunks(path: &str, link: LinkType, chunk_bytes: usize) -> Option<FastReader> {
        let mut chunks = Chunks::start(File::open(path).ok()?, chunk_bytes);
        let Chunk::Bytes(chunk, chunk_len) = chunks.next() else { return None };
        let head = chunk.get(..chunk_len).unwrap_or_default();
        let recognised = match parse_sectionheaderblock(head) {
            Ok(_) | Err(NomErr::Incomplete(_)) => true,
            Err(_) => parse_pcap_header(head).is_ok(),
        };
        if !recognised {
            return None;
        }
        Some(FastReader {
            chunks,
            chunk,
            chunk_len,
            at: 0,
            joined: Vec::new(),
            joined_at: 0,
            place: Place::Chunk,
            ended: false,
            format: None,
            link,
            snapshot: MAXIMUM_SNAPLEN,
            frame: None,
        })
    }

    /// The frame of the packet `next` returned last.
    pub fn frame(&self) -> &[u8] {
        let Some((place, start, len)) = self.frame else { return &[] };
        let bytes = match place {
            Place::Chunk => self.chunk.get(..self.chunk_len).unwrap_or_default(),
            Place::Joined => &self.joined,
        };
        bytes.get(start..start + len).unwrap_or_default()
    }

    /// Moves past the packet handed out last and reads the next one.
    pub fn next(&mut self) -> Next {
        self.frame = None;
        loop {
            if self.place == Place::Joined && self.joined_at == self.joined.len() {
                self.place = Place::Chunk;
            }
            if self.place == Place::Chunk && self.at == self.chunk_len && !self.next_chunk() {
                return if self.ended { Next::End } else { Next::HandOver };
            }
            let (data, base) = match self.place {
                Place::Chunk => (self.chunk.get(self.at..self.chunk_len).unwrap_or_default(), self.at),
                Place::Joined => (self.joined.get(self.joined_at..).unwrap_or_default(), self.joined_at),
            };
            let (consumed, step) = match parse_block(self.format.as_ref(), data) {
                Ok((consumed, block)) => (consumed, read_block(&mut self.format, self.link, &mut self.snapshot, block)),
                Err(Short::Incomplete(more)) => {
                    if !self.join_more(more) {
                        return Next::HandOver;
                    }
                    continue;
                }
                Err(Short::Invalid) => return Next::HandOver,
            };
            match self.place {
                Place::Chunk => self.at += consumed,
                Place::Joined => self.joined_at += consumed,
            }
            match step {
                Step::Skip => {}
                Step::Packet { secs, nanos, start, len } => {
                    self.frame = Some((self.place, base + start, len));
                    return Next::Packet { secs, nanos };
                }
                Step::HandOver => return Next::HandOver,
            }
        }
    }

    /// Takes the next chunk as the current one; false at the end of the
    /// file (`ended`) or when the reading failed.
    fn next_chunk(&mut self) -> bool {
        match self.chunks.next() {
            Chunk::Bytes(chunk, len) => {
                let emptied = std::mem::replace(&mut self.chunk, chunk);
                self.chunks.recycle(emptied);
                (self.chunk_len, self.at) = (len, 0);
                true
            }
            Chunk::End => {
                self.ended = true;
                false
            }
            Chunk::Failed => false,
        }
    }

    /// A record reaches past the bytes at hand: puts it together from this
    /// chunk's rest and the next chunks' first bytes, `more` of them when
    /// the parser knows. False when the file ends inside it (libpcap words
    /// that) or it is too long to be whole.
    fn join_more(&mut self, more: Option<usize>) -> bool {
        if self.place == Place::Chunk {
            self.joined.clear();
            self.joined_at = 0;
            self.joined.extend_from_slice(self.chunk.get(self.at..self.chunk_len).unwrap_or_default());
            self.at = self.chunk_len;
            self.place = Place::Joined;
        }
        let mut wanted = more.unwrap_or(PCAP_RECORD_HEADER).max(1);
        if self.joined.len() - self.joined_at + wanted > MAX_RECORD {
            return false;
        }
        while wanted > 0 {
            if self.at == self.chunk_len && !self.next_chunk() {
                return false;
            }
            let take = wanted.min(self.chunk_len - self.at);
            self.joined.extend_from_slice(self.chunk.get(self.at..self.at + take).unwrap_or_default());
            self.at += take;
            wanted -= take;
        }
        true
    }
}

/// The next block of a file in `format` (none yet: its header) from `data`:
/// the bytes it takes, and the block.
fn parse_block<'a>(format: Option<&Format>, data: &'a [u8]) -> Result<(usize, PcapBlockOwned<'a>), Short> {
    let parsed = match format {
        None => match parse_sectionheaderblock(data) {
            Ok((rest, shb)) => Ok((rest, PcapBlockOwned::NG(Block::SectionHeader(shb)))),
            Err(NomErr::Incomplete(needed)) => Err(NomErr::Incomplete(needed)),
            Err(_) => parse_pcap_header(data).map(|(rest, header)| (rest, PcapBlockOwned::LegacyHeader(header))),
        },
        Some(Format::Pcap { big_endian: false, .. }) => parse_pcap_frame(data).map(|(r, b)| (r, b.into())),
        Some(Format::Pcap { big_endian: true, .. }) => parse_pcap_frame_be(data).map(|(r, b)| (r, b.into())),
        Some(Format::Pcapng { big_endian: false, .. }) => parse_block_le(data).map(|(r, b)| (r, b.into())),
        Some(Format::Pcapng { big_endian: true, .. }) => parse_block_be(data).map(|(r, b)| (r, b.into())),
    };
    match parsed {
        Ok((rest, block)) => Ok((data.len() - rest.len(), block)),
        Err(NomErr::Incomplete(Needed::Size(n))) => Err(Short::Incomplete(Some(n.get()))),
        Err(NomErr::Incomplete(Needed::Unknown)) => Err(Short::Incomplete(None)),
        Err(_) => Err(Short::Invalid),
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
            *format = Some(Format::Pcap { nanos: header.is_nanosecond_precision(), big_endian: header.is_bigendian() });
            Step::Skip
        }
        (Some(Format::Pcap { nanos, .. }), PcapBlockOwned::Legacy(record)) => {
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
        (None, PcapBlockOwned::NG(Block::SectionHeader(shb))) => {
            *format = Some(Format::Pcapng { big_endian: shb.big_endian(), interfaces: Vec::new(), first_link: None });
            Step::Skip
        }
        (Some(Format::Pcapng { interfaces, first_link, .. }), PcapBlockOwned::NG(block)) => {
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
    fn compare(path: &Path, chunk_bytes: usize) -> Option<(u64, bool)> {
        let name = path.display().to_string();
        let mut libpcap = pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano).ok()?;
        let link = LinkType::from_dlt(libpcap.get_datalink().0)?;
        let unsigned_seconds = libpcap.major_version() == 2;
        let mut fast = FastReader::open_in_chunks(&name, link, chunk_bytes)
            .unwrap_or_else(|| panic!("{name}: libpcap opens it, pcap-parser not"));
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
            let Some((n, ended)) = compare(path, CHUNK_BYTES) else { continue };
            packets += n;
            whole += u32::from(ended);
            pcapng += u32::from(ended && path.extension().is_some_and(|e| e == "pcapng"));
            // Chunks far smaller than a record: every record is put
            // together across chunks, and read the same.
            for chunk_bytes in [7, 61, 1500] {
                assert_eq!(
                    compare(path, chunk_bytes),
                    Some((n, ended)),
                    "{} in {chunk_bytes}-byte chunks",
                    path.display()
                );
            }
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
