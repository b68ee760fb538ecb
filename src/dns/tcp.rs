//! DNS over TCP: each direction of a connection to port 53 carries
//! messages framed by a 2-byte length (RFC 1035 §4.2.2, RFC 7766). Clients
//! fall back to it when a UDP answer was truncated, so a large answer is
//! only there. Each direction is followed from its SYN, in order; a gap
//! (a lost segment, a cut payload) loses the framing, and that direction is
//! dropped rather than guessed at. Bounded: a fixed number of directions,
//! each holding at most one message.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::decode::TcpSegment;
use crate::seq::SeqNumber;
use crate::time::Timestamp;

/// The longest message kept: an answer with a few hundred addresses. Longer
/// ones (zone transfers) hold nothing a report uses and are skipped.
const MAX_MESSAGE: usize = 16 * 1024;
/// Directions followed at once; past it, the least recently active goes.
/// With `MAX_MESSAGE`, at most 4 MiB held.
const MAX_DIRECTIONS: usize = 256;
/// The length prefix.
const PREFIX: usize = 2;

/// One direction of a connection: where it is in its message stream.
#[derive(Debug)]
struct Direction {
    /// The sequence number of the next byte expected.
    next: SeqNumber,
    reading: Reading,
    last: Timestamp,
}

/// What the next bytes of a direction are.
#[derive(Debug)]
enum Reading {
    /// A message's length prefix and body, collected here until whole.
    Message(Vec<u8>),
    /// The rest of a message over `MAX_MESSAGE`, passed over.
    Skipping { remaining: usize },
}

/// The DNS-over-TCP directions being followed, by sender and receiver.
#[derive(Debug, Default)]
pub struct TcpStreams {
    directions: HashMap<(SocketAddr, SocketAddr), Direction>,
    /// Messages or directions not read: a gap or a cut payload, a message
    /// over `MAX_MESSAGE`, a direction pushed out by newer ones.
    pub skipped: u64,
}

impl TcpStreams {
    /// Reads one segment of a connection to or from port 53, calling `each`
    /// with every whole message it completes.
    pub fn on_segment(&mut self, seg: &TcpSegment<'_>, at: Timestamp, mut each: impl FnMut(&[u8])) {
        let key = (seg.src, seg.dst);
        if seg.flags.rst {
            self.directions.remove(&key);
            self.directions.remove(&(seg.dst, seg.src));
            return;
        }
        let mut start = seg.seq;
        if seg.flags.syn {
            if !self.directions.contains_key(&key) && self.directions.len() >= MAX_DIRECTIONS {
                self.evict_idlest();
            }
            start = seg.seq + 1;
            let fresh = Direction { next: start, reading: Reading::Message(Vec::new()), last: at };
            self.directions.insert(key, fresh);
        }
        let Some(direction) = self.directions.get_mut(&key) else { return };
        direction.last = at;
        let already_read = direction.next.distance_from(start);
        let cut = seg.payload.len() < seg.wire_payload_len as usize;
        let wire_end = start + seg.wire_payload_len;
        if already_read < 0 || (cut && wire_end.distance_from(direction.next) > 0) {
            // Bytes are missing before this segment, or the capture cut some
            // not read yet: the framing is lost.
            self.directions.remove(&key);
            self.skipped += 1;
            return;
        }
        // A retransmission repeats bytes already read: only what follows them is new.
        let new = seg.payload.get(already_read as usize..).unwrap_or_default();
        direction.next = direction.next + new.len() as u32;
        self.skipped += read(&mut direction.reading, new, &mut each);
        if seg.flags.fin {
            self.directions.remove(&key);
        }
    }

    fn evict_idlest(&mut self) {
        if let Some(key) = self.directions.iter().min_by_key(|(_, d)| d.last).map(|(k, _)| *k) {
            self.directions.remove(&key);
            self.skipped += 1;
        }
    }

    /// Directions followed now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.directions.len()
    }
}

/// Feeds a direction's next bytes; returns how many messages were skipped.
fn read(reading: &mut Reading, mut bytes: &[u8], each: &mut impl FnMut(&[u8])) -> u64 {
    let mut skipped = 0;
    while !bytes.is_empty() {
        match reading {
            Reading::Skipping { remaining } => {
                let n = (*remaining).min(bytes.len());
                bytes = &bytes[n..];
                *remaining -= n;
                if *remaining == 0 {
                    *reading = Reading::Message(Vec::new());
                }
            }
            Reading::Message(buf) => {
                let want = match buf.get(..PREFIX) {
                    Some(prefix) => PREFIX + usize::from(u16::from_be_bytes([prefix[0], prefix[1]])),
                    None => PREFIX,
                };
                if want > PREFIX + MAX_MESSAGE {
                    skipped += 1;
                    *reading = Reading::Skipping { remaining: want - buf.len() };
                    continue;
                }
                let n = (want - buf.len()).min(bytes.len());
                buf.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if buf.len() == want && want > PREFIX {
                    each(&buf[PREFIX..]);
                    buf.clear();
                } else if buf.len() == want && buf.len() == PREFIX && buf[..] == [0, 0] {
                    // An empty message: nothing to read.
                    buf.clear();
                }
            }
        }
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TcpFlags;
    use crate::dns::message::tests::at;

    const CLIENT: &str = "192.0.2.100:40053";
    const RESOLVER: &str = "192.0.2.53:53";

    fn seg<'a>(seq: u32, flags: &str, payload: &'a [u8]) -> TcpSegment<'a> {
        TcpSegment {
            src: RESOLVER.parse().unwrap(),
            dst: CLIENT.parse().unwrap(),
            ttl: 64,
            seq: SeqNumber(seq),
            ack: SeqNumber(0),
            flags: TcpFlags { syn: flags.contains('S'), fin: flags.contains('F'), rst: flags.contains('R'), ack: true },
            payload,
            wire_payload_len: payload.len() as u32,
        }
    }

    /// Feeds segments in order, returning the messages they completed.
    fn run(streams: &mut TcpStreams, segs: &[TcpSegment<'_>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for s in segs {
            streams.on_segment(s, at(0), |m| out.push(m.to_vec()));
        }
        out
    }

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        messages.iter().flat_map(|m| [&(m.len() as u16).to_be_bytes()[..], m].concat()).collect()
    }

    #[test]
    fn messages_split_and_joined_across_segments() {
        let bytes = framed(&[b"first", b"second message", b"3"]);
        // Every way of cutting the stream in two gives the same three messages.
        for cut in 0..=bytes.len() {
            let mut s = TcpStreams::default();
            let (a, b) = bytes.split_at(cut);
            let out = run(&mut s, &[seg(999, "S", b""), seg(1000, "", a), seg(1000 + cut as u32, "", b)]);
            assert_eq!(out, [&b"first"[..], b"second message", b"3"], "cut at {cut}");
            assert_eq!(s.skipped, 0);
        }
    }

    #[test]
    fn retransmissions_are_read_once_and_gaps_drop_the_direction() {
        let bytes = framed(&[b"one", b"two"]);
        let mut s = TcpStreams::default();
        let out = run(
            &mut s,
            &[seg(u32::MAX, "S", b""), seg(0, "", &bytes[..4]), seg(0, "", &bytes[..6]), seg(4, "", &bytes[4..])],
        );
        assert_eq!(out, [&b"one"[..], b"two"], "across the sequence wrap, the repeat read once");
        let out = run(&mut s, &[seg(bytes.len() as u32 + 10, "", &framed(&[b"lost"]))]);
        assert!(out.is_empty());
        assert_eq!((s.skipped, s.len()), (1, 0), "a gap: the direction is dropped");
        // Not followed from its SYN: not read.
        assert!(run(&mut s, &[seg(5000, "", &framed(&[b"midstream"]))]).is_empty());
        // A payload the capture cut short loses the framing too.
        let mut cut = seg(1000, "", b"\0\x05ab");
        cut.wire_payload_len = 7;
        assert!(run(&mut s, &[seg(999, "S", b""), cut]).is_empty());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn oversized_messages_are_skipped_and_the_next_read() {
        let big = vec![7u8; MAX_MESSAGE + 1];
        let bytes = framed(&[&big, b"after"]);
        let mut s = TcpStreams::default();
        let mut segs = vec![seg(0, "S", b"")];
        for (i, chunk) in bytes.chunks(1400).enumerate() {
            segs.push(seg(1 + (i * 1400) as u32, "", chunk));
        }
        assert_eq!(run(&mut s, &segs), [b"after"]);
        assert_eq!(s.skipped, 1);
    }

    #[test]
    fn fin_and_rst_end_a_direction_and_the_table_is_bounded() {
        let mut s = TcpStreams::default();
        run(&mut s, &[seg(0, "S", b""), seg(1, "F", b"")]);
        assert_eq!(s.len(), 0);
        run(&mut s, &[seg(0, "S", b""), seg(1, "R", b"")]);
        assert_eq!(s.len(), 0);
        for port in 0..(MAX_DIRECTIONS as u16 + 20) {
            let mut syn = seg(0, "S", b"");
            syn.dst.set_port(port);
            s.on_segment(&syn, at(i64::from(port)), |_| {});
        }
        assert_eq!(s.len(), MAX_DIRECTIONS);
        assert_eq!(s.skipped, 20);
    }

    #[test]
    fn any_bytes_in_any_pieces_never_panic() {
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let mut s = TcpStreams::default();
            let mut seq = next() as u32;
            s.on_segment(&seg(seq, "S", b""), at(0), |_| {});
            seq = seq.wrapping_add(1);
            for _ in 0..(next() % 8) {
                let len = (next() % 300) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let jitter = (next() % 5) as u32;
                let start = if jitter == 0 { seq.wrapping_sub(3) } else { seq };
                s.on_segment(&seg(start, "", &bytes), at(0), |m| assert!(m.len() <= MAX_MESSAGE));
                seq = seq.wrapping_add(len as u32);
            }
        }
    }
}
