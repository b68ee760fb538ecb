//! A file's bytes read on a thread of their own: the kernel's copy of the
//! file into memory (a third of reading a large capture) runs on the
//! second core while the engine works on the bytes read before. Chunks
//! are large, few are on their way at once, and emptied ones come back to
//! be filled again, so memory stays a few MiB whatever the file's size.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes per chunk: large reads, few system calls and few hand-overs.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Chunks filled ahead of the reader.
const AHEAD: usize = 4;

/// What the reading thread sends.
enum Sent {
    /// A chunk and how many of its bytes were read.
    Bytes(Vec<u8>, usize),
    End,
    Failed,
}

/// The next bytes of a file, as [`Chunks::next`] gives them.
pub enum Chunk {
    Bytes(Vec<u8>, usize),
    End,
    /// A read failed (or the thread is gone): libpcap should read on.
    Failed,
}

pub struct Chunks {
    /// Taken when dropped: the thread stops once nobody receives.
    filled: Option<Receiver<Sent>>,
    give_back: SyncSender<Vec<u8>>,
    thread: Option<JoinHandle<()>>,
}

impl Chunks {
    /// Starts reading `file` on its own thread, `chunk_bytes` at a time.
    /// The thread stops at the end, at an error, or when this is dropped.
    pub fn start(mut file: File, chunk_bytes: usize) -> Chunks {
        let (send, filled) = sync_channel(AHEAD);
        let (give_back, emptied) = sync_channel::<Vec<u8>>(AHEAD + 1);
        let thread = std::thread::spawn(move || {
            let mut at_end = false;
            while !at_end {
                // Chunks keep their full length: a new one is zeroed once.
                let mut chunk = emptied.try_recv().unwrap_or_else(|_| vec![0; chunk_bytes]);
                let (mut len, mut failed) = (0, false);
                while let Some(space) = chunk.get_mut(len..).filter(|space| !space.is_empty()) {
                    match file.read(space) {
                        Ok(0) => {
                            at_end = true;
                            break;
                        }
                        Ok(n) => len += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if len > 0 && send.send(Sent::Bytes(chunk, len)).is_err() {
                    return;
                }
                if failed {
                    let _ = send.send(Sent::Failed);
                    return;
                }
            }
            let _ = send.send(Sent::End);
        });
        Chunks { filled: Some(filled), give_back, thread: Some(thread) }
    }

    pub fn next(&mut self) -> Chunk {
        match self.filled.as_ref().map(Receiver::recv) {
            Some(Ok(Sent::Bytes(chunk, len))) => Chunk::Bytes(chunk, len),
            Some(Ok(Sent::End)) => Chunk::End,
            Some(Ok(Sent::Failed) | Err(_)) | None => Chunk::Failed,
        }
    }

    /// Hands a chunk back to be filled again.
    pub fn recycle(&mut self, chunk: Vec<u8>) {
        let _ = self.give_back.try_send(chunk);
    }
}

impl Drop for Chunks {
    /// A reader dropped early (a hand-over to libpcap) waits for its thread
    /// to stop, at its next read or send: no thread outlives its file.
    fn drop(&mut self) {
        drop(self.filled.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chunks_are_the_file() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = std::env::temp_dir().join(format!("pgreach-chunks-{}", std::process::id()));
        std::fs::write(&path, &bytes).expect("write");
        for chunk_bytes in [1, 4096, 99_999, 100_000, CHUNK_BYTES] {
            let mut chunks = Chunks::start(File::open(&path).expect("open"), chunk_bytes);
            let mut read = Vec::new();
            loop {
                match chunks.next() {
                    Chunk::Bytes(chunk, len) => {
                        read.extend_from_slice(&chunk[..len]);
                        chunks.recycle(chunk);
                    }
                    Chunk::End => break,
                    Chunk::Failed => panic!("a read failed"),
                }
            }
            assert!(read == bytes, "{chunk_bytes}-byte chunks");
        }
        std::fs::remove_file(&path).expect("remove");
    }

    #[test]
    fn a_reader_dropped_early_stops_its_thread() {
        let path = std::env::temp_dir().join(format!("pgreach-chunks-drop-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 64 * 1024]).expect("write");
        let mut chunks = Chunks::start(File::open(&path).expect("open"), 1024);
        assert!(matches!(chunks.next(), Chunk::Bytes(_, 1024)));
        // The thread waits to send more than fits on the way: dropping the
        // reader stops it, and the drop (which joins it) returns.
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(chunks);
            let _ = done.send(());
        });
        assert!(dropped.recv_timeout(std::time::Duration::from_secs(10)).is_ok(), "the reading thread did not stop");
        std::fs::remove_file(&path).expect("remove");
    }
}
