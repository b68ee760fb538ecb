//! Compressed captures: gzip data (`.pcap.gz`, `.pcapng.gz`, or a
//! compressed stream on standard input, told by its magic bytes, not its
//! name) is decompressed on a thread into a pipe that libpcap reads like a
//! file, so filters and every format work on it unchanged.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;

use flate2::read::MultiGzDecoder;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Where libpcap reads an input from.
pub enum Readable {
    /// The file itself.
    Path,
    /// A pipe fed by a thread: the path of its read end, kept open until
    /// libpcap has opened it, and where the thread says why it stopped early
    /// (said before it closes the pipe, so it is there when libpcap meets
    /// the end).
    Pipe { path: String, read_end: OwnedFd, failed: mpsc::Receiver<io::Error> },
}

/// How to read `path` (`-` is standard input): gzip data through a
/// decompressing pipe; standard input always through a pipe, since its
/// first bytes must be read to tell; any other file directly.
pub fn readable(path: &str) -> io::Result<Readable> {
    let mut head = [0u8; 2];
    if path == "-" {
        let mut stdin = io::stdin().lock();
        let n = read_head(&mut stdin, &mut head)?;
        drop(stdin);
        let head = head[..n].to_vec();
        return feed(move || io::Cursor::new(head).chain(io::stdin().lock()));
    }
    let mut file = File::open(path)?;
    if read_head(&mut file, &mut head)? < 2 || head != GZIP_MAGIC {
        return Ok(Readable::Path);
    }
    let file = File::open(path)?;
    feed(move || file)
}

/// Reads up to two bytes; fewer only at the end of the input.
fn read_head(input: &mut impl Read, head: &mut [u8; 2]) -> io::Result<usize> {
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A pipe fed by a thread with the input the closure opens, decompressed
/// when it starts with gzip's magic.
fn feed<R: Read + 'static>(open: impl FnOnce() -> R + Send + 'static) -> io::Result<Readable> {
    let (read_end, write_end) = nix::unistd::pipe().map_err(io::Error::from)?;
    let path = format!("/dev/fd/{}", read_end.as_raw_fd());
    let (tx, failed) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = File::from(write_end);
        let copied = copy(open(), &mut out);
        match copied {
            // libpcap stopped reading (a bad file, or it read all it wanted).
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => drop(tx.send(e)),
            Ok(()) => {}
        }
        drop(out);
    });
    Ok(Readable::Pipe { path, read_end, failed })
}

/// Copies the input to the pipe, decompressing it if it is gzip.
fn copy(mut input: impl Read, out: &mut File) -> io::Result<()> {
    let mut head = [0u8; 2];
    let n = read_head(&mut input, &mut head)?;
    let whole = io::Cursor::new(head[..n].to_vec()).chain(input);
    if n == 2 && head == GZIP_MAGIC {
        io::copy(&mut MultiGzDecoder::new(whole), out).map(drop)
    } else {
        io::copy(&mut { whole }, out).map(drop)
    }
}
