//! The fast reader on a thread of its own: the kernel's copy of the file
//! and the record parsing run on the second core while the engine works
//! on the packets read before. Packets come over in batches (their bytes
//! side by side in one buffer), so the threads meet once per batch, and
//! the few batches on their way bound the memory.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::reader::{FastReader, Next};

/// Frame bytes per batch: a few hundred packets.
const BATCH_BYTES: usize = 256 * 1024;
/// Packets per batch, when they are small.
const BATCH_PACKETS: usize = 4096;
/// Batches filled ahead of the engine.
const AHEAD: usize = 4;

/// Packets read ahead, and how the reading stopped once it has.
#[derive(Default)]
struct Batch {
    frames: Vec<u8>,
    /// Each packet's time (seconds, nanoseconds) and where its frame ends in `frames`.
    packets: Vec<(i64, i64, usize)>,
    /// `End` or `HandOver`, after the last packet of the last batch.
    last: Option<Next>,
}

pub struct ReadAhead {
    batches: Receiver<Batch>,
    /// Emptied batches go back to the reading thread to be filled again.
    give_back: SyncSender<Batch>,
    batch: Batch,
    /// The packet handed out last, as an index into `batch.packets`.
    at: Option<usize>,
}

impl ReadAhead {
    /// Starts reading `fast` on its own thread. The thread stops at the
    /// file's end, at a hand-over, or when this reader is dropped.
    pub fn start(mut fast: FastReader) -> ReadAhead {
        let (filled, batches) = sync_channel(AHEAD);
        let (give_back, emptied) = sync_channel::<Batch>(AHEAD + 1);
        std::thread::spawn(move || loop {
            let mut batch = emptied.try_recv().unwrap_or_default();
            batch.frames.clear();
            batch.packets.clear();
            while batch.frames.len() < BATCH_BYTES && batch.packets.len() < BATCH_PACKETS {
                match fast.next() {
                    Next::Packet { secs, nanos } => {
                        batch.frames.extend_from_slice(fast.frame());
                        batch.packets.push((secs, nanos, batch.frames.len()));
                    }
                    last => {
                        batch.last = Some(last);
                        break;
                    }
                }
            }
            let done = batch.last.is_some();
            if filled.send(batch).is_err() || done {
                return;
            }
        });
        ReadAhead { batches, give_back, batch: Batch::default(), at: None }
    }

    /// The next packet, as [`FastReader::next`] says it.
    pub fn next(&mut self) -> Next {
        let next = self.at.map_or(0, |i| i + 1);
        if let Some(&(secs, nanos, _)) = self.batch.packets.get(next) {
            self.at = Some(next);
            return Next::Packet { secs, nanos };
        }
        if let Some(last) = self.batch.last.take() {
            self.at = None;
            self.batch.packets.clear();
            return last;
        }
        match self.batches.recv() {
            Ok(batch) => {
                let emptied = std::mem::replace(&mut self.batch, batch);
                // The thread has one of its own when none comes back.
                let _ = self.give_back.try_send(emptied);
                self.at = None;
                self.next()
            }
            // The reading thread is gone without saying how it ended:
            // libpcap reads on from here.
            Err(_) => Next::HandOver,
        }
    }

    /// The frame of the packet `next` returned last.
    pub fn frame(&self) -> &[u8] {
        let Some(i) = self.at else { return &[] };
        let start = i.checked_sub(1).and_then(|before| self.batch.packets.get(before)).map_or(0, |p| p.2);
        let end = self.batch.packets.get(i).map_or(0, |p| p.2);
        self.batch.frames.get(start..end).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::LinkType;
    use std::path::Path;

    /// Every packet and the ending, as a reader gives them.
    fn read(path: &Path, ahead: bool) -> Vec<(Next, Vec<u8>)> {
        let name = path.display().to_string();
        let fast = || FastReader::open(&name, LinkType::Ethernet);
        let mut seen = Vec::new();
        let mut step = |next: Next, frame: &[u8]| {
            let last = !matches!(next, Next::Packet { .. });
            seen.push((next, frame.to_vec()));
            last
        };
        if ahead {
            let mut reader = ReadAhead::start(fast().expect("opens"));
            while !step(reader.next(), reader.frame()) {}
        } else {
            let mut reader = fast().expect("opens");
            while !step(reader.next(), reader.frame()) {}
        }
        seen
    }

    /// A classic pcap of `count` frames of growing length.
    fn pcap(count: u32) -> Vec<u8> {
        let mut file = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
        file.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        file.extend_from_slice(&65535u32.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        for i in 0..count {
            let len = 60 + i % 1400;
            for field in [i, i % 1_000_000, len, len] {
                file.extend_from_slice(&field.to_le_bytes());
            }
            file.extend((0..len).map(|b| (b ^ i) as u8));
        }
        file
    }

    #[test]
    fn reading_ahead_hands_out_what_the_fast_reader_reads() {
        let dir = std::env::temp_dir();
        // Many batches, of both limits; then the same cut inside its last
        // record, which ends in a hand-over.
        let whole = pcap(3 * BATCH_PACKETS as u32 + 17);
        let mut cut = whole.clone();
        cut.truncate(whole.len() - 100);
        for (name, bytes) in [("whole", whole), ("cut", cut)] {
            let path = dir.join(format!("pgreach-read-ahead-{}-{name}.pcap", std::process::id()));
            std::fs::write(&path, bytes).expect("write");
            let (direct, ahead) = (read(&path, false), read(&path, true));
            std::fs::remove_file(&path).expect("remove");
            assert_eq!(direct.len(), 3 * BATCH_PACKETS + 17 + usize::from(name == "whole"), "{name}");
            assert!(direct == ahead, "{name}: read ahead differs");
        }
        let incident = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/incident.pcap");
        assert!(read(&incident, false) == read(&incident, true), "incident.pcap");
    }
}
