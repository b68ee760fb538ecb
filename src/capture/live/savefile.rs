//! `-w FILE`: the captured packets written as a pcap file (nanosecond
//! timestamps), rotated every `-C` bytes as tcpdump does (FILE, FILE1,
//! FILE2, …), so an incident can be analyzed again later. Written here
//! rather than through libpcap's dumper so that files are created as
//! [`crate::outfile`] makes them (owner only, beside the destination,
//! renamed into place when complete) and rotation needs no unsafe file handles.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::outfile::{self, Pending, Target};
use crate::time::Timestamp;

/// pcap's magic for nanosecond timestamps.
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;

/// When `-w` starts a new file: after so many bytes (`-C`), after so long
/// (`-G`), and how many files at most before the oldest is written over
/// (`-W`, a ring as tcpdump keeps with `-C`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rotation {
    pub bytes: Option<u64>,
    pub every: Option<std::time::Duration>,
    pub files: Option<u32>,
}

pub struct Savefile {
    base: PathBuf,
    linktype: u32,
    snaplen: u32,
    rotation: Rotation,
    /// The first packet's time in the current file (for `-G`).
    file_started: Option<Timestamp>,
    file: BufWriter<File>,
    /// Where the current file goes when complete (none for a stream).
    pending: Option<Pending>,
    written: u64,
    /// The number of the current file (0: the base name).
    index: u32,
    /// Rotation stopped after a file could not be created (reported once).
    rotation_failed: bool,
}

impl Savefile {
    pub fn create(base: &Path, linktype: u32, snaplen: u32, rotation: Rotation) -> io::Result<Savefile> {
        let (file, pending) = open(base)?;
        let mut s = Savefile {
            base: base.to_owned(),
            linktype,
            snaplen,
            rotation,
            file_started: None,
            file,
            pending,
            written: 0,
            index: 0,
            rotation_failed: false,
        };
        s.write_header()?;
        Ok(s)
    }

    /// The file being written now.
    pub fn current_path(&self) -> PathBuf {
        numbered(&self.base, self.index)
    }

    fn write_header(&mut self) -> io::Result<()> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_NANOS.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&self.snaplen.to_le_bytes());
        h.extend_from_slice(&self.linktype.to_le_bytes());
        self.file.write_all(&h)?;
        self.written = h.len() as u64;
        Ok(())
    }

    /// Appends one packet; rotates first when the file is full. A rotation
    /// that fails (the directory is not writable after the privilege drop)
    /// is returned as an error once, and the current file goes on growing.
    pub fn write(&mut self, ts: Timestamp, original_len: u32, data: &[u8]) -> io::Result<()> {
        let mut rotation = Ok(());
        let full = self.rotation.bytes.is_some_and(|limit| self.written >= limit);
        let old = match (self.rotation.every, self.file_started) {
            (Some(every), Some(started)) => ts.since(started) >= every,
            _ => false,
        };
        if (full || old) && !self.rotation_failed {
            rotation = self.rotate();
        }
        self.file_started.get_or_insert(ts);
        let nanos = ts.as_nanos();
        let mut rec = Vec::with_capacity(16);
        rec.extend_from_slice(&(nanos.div_euclid(1_000_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&(nanos.rem_euclid(1_000_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&(data.len() as u32).to_le_bytes());
        rec.extend_from_slice(&original_len.to_le_bytes());
        self.file.write_all(&rec)?;
        self.file.write_all(data)?;
        self.written += 16 + data.len() as u64;
        rotation
    }

    fn rotate(&mut self) -> io::Result<()> {
        // With -W, the numbers go round and the oldest file is written over.
        let index = match self.rotation.files {
            Some(files) => (self.index + 1) % files.max(1),
            None => self.index + 1,
        };
        let next = numbered(&self.base, index);
        match open(&next) {
            Ok((file, pending)) => {
                self.publish()?;
                self.file = file;
                self.pending = pending;
                self.index = index;
                self.file_started = None;
                self.write_header()
            }
            Err(e) => {
                self.rotation_failed = true;
                Err(io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}; writing on in {}", next.display(), self.current_path().display()),
                ))
            }
        }
    }

    /// Flushes the current file and renames it into place; it may go on
    /// growing there.
    pub fn publish(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.pending.as_mut().map_or(Ok(()), Pending::publish)
    }

    /// Gives the current file to another owner, through its descriptor.
    pub fn hand_to(&self, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::fchown(self.file.get_ref(), Some(uid), Some(gid))
    }
}

fn open(path: &Path) -> io::Result<(BufWriter<File>, Option<Pending>)> {
    Ok(match outfile::create(path)? {
        Target::File(file, pending) => (BufWriter::new(file), Some(pending)),
        Target::Stream(file) => (BufWriter::new(file), None),
    })
}

/// tcpdump's names: FILE, FILE1, FILE2, …
fn numbered(base: &Path, index: u32) -> PathBuf {
    if index == 0 {
        return base.to_owned();
    }
    let mut name = base.as_os_str().to_owned();
    name.push(index.to_string());
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_with_tcpdump_names_and_every_file_reads_back() {
        let dir = std::env::temp_dir().join(format!("pgreach-savefile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("cap.pcap");
        let mut s = Savefile::create(&base, 1, 65535, Rotation { bytes: Some(10_000), ..Rotation::default() }).unwrap();
        let frame = [0xabu8; 1000];
        for i in 0..25 {
            s.write(Timestamp::from_nanos(1_700_000_000_000_000_000 + i), 1500, &frame).unwrap();
        }
        s.publish().unwrap();
        let mut total = 0;
        for name in ["cap.pcap", "cap.pcap1", "cap.pcap2"] {
            let path = dir.join(name);
            let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
            assert_eq!(mode & 0o777, outfile::MODE, "{name}");
            let mut cap = pcap::Capture::from_file_with_precision(&path, pcap::Precision::Nano).unwrap();
            while let Ok(p) = cap.next_packet() {
                assert_eq!((p.header.caplen, p.header.len), (1000, 1500));
                total += 1;
            }
        }
        assert!(!dir.join("cap.pcap3").exists());
        assert_eq!(total, 25);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Packets' times in seconds, written with a rotation; the packets each
    /// file holds, by file name.
    fn write_with(rotation: Rotation, times: &[u64], label: &str) -> Vec<(String, usize)> {
        let dir = std::env::temp_dir().join(format!("pgreach-savefile-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = dir.join("cap.pcap");
        let mut s = Savefile::create(&base, 1, 65535, rotation).unwrap();
        for &t in times {
            s.write(Timestamp::from_secs_nanos(1_700_000_000 + t as i64, 0), 100, &[0u8; 100]).unwrap();
        }
        s.publish().unwrap();
        let mut files: Vec<(String, usize)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let mut cap = pcap::Capture::from_file_with_precision(&p, pcap::Precision::Nano).unwrap();
                let mut n = 0;
                while cap.next_packet().is_ok() {
                    n += 1;
                }
                (p.file_name().unwrap().to_string_lossy().into_owned(), n)
            })
            .collect();
        files.sort();
        std::fs::remove_dir_all(&dir).unwrap();
        files
    }

    #[test]
    fn rotates_by_time_and_keeps_a_ring_of_files() {
        let every = Some(std::time::Duration::from_secs(60));
        // One packet every 30 s for 5 minutes: a new file each minute.
        let times: Vec<u64> = (0..10).map(|i| i * 30).collect();
        let by_time = write_with(Rotation { every, ..Rotation::default() }, &times, "g");
        let names: Vec<&str> = by_time.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cap.pcap", "cap.pcap1", "cap.pcap2", "cap.pcap3", "cap.pcap4"]);
        assert!(by_time.iter().all(|(_, n)| *n == 2), "{by_time:?}");
        // With -W 3 the same run keeps three files, the latest minutes.
        let ring = write_with(Rotation { every, files: Some(3), ..Rotation::default() }, &times, "w");
        let names: Vec<&str> = ring.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cap.pcap", "cap.pcap1", "cap.pcap2"]);
        assert_eq!(ring.iter().map(|(_, n)| n).sum::<usize>(), 6, "the oldest two minutes were written over");
    }
}
