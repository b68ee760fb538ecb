//! One direction of a TCP connection as a byte stream, in sequence order:
//! retransmitted bytes dropped, out-of-order segments held up to a bound,
//! and bytes the capture never had reported as a gap of known length.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::seq::SeqNumber;

/// At most this many out-of-order segments are held per direction…
pub const MAX_HELD_SEGMENTS: usize = 16;
/// …and at most this many bytes (sixteen full segments of a 1500-byte MTU
/// fit; jumbo frames do not); beyond either, the hole is declared a gap.
pub const MAX_HELD_BYTES: usize = 32 * 1024;
/// What holding a segment costs beyond its bytes (its entry and the
/// allocator's share), charged to the budget so that one-byte segments
/// cannot hold more memory than the budget says.
pub const HELD_SEGMENT_OVERHEAD: usize = 64;
/// An acknowledgment further ahead than this is not believed (a corrupt or
/// unrelated segment), so it cannot fabricate a gap.
const MAX_ACK_JUMP: i32 = 1 << 30;

/// What the stream hands on, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    Data(&'a [u8]),
    /// This many bytes were on the wire but are not in the capture.
    Gap(u32),
}

/// The out-of-order bytes all streams together may hold: one budget shared
/// by every stream of an engine, so that many flows each holding a little
/// cannot add up to an unbounded amount. Shared through an `Arc` so that a
/// stream dropped with data held gives it back, and the engine stays `Send`
/// for the live driver's thread.
#[derive(Debug, Clone)]
pub struct HeldBudget(Arc<BudgetState>);

#[derive(Debug)]
struct BudgetState {
    limit: usize,
    used: AtomicUsize,
    refused: AtomicU64,
}

impl HeldBudget {
    pub fn new(limit: usize) -> HeldBudget {
        HeldBudget(Arc::new(BudgetState { limit, used: AtomicUsize::new(0), refused: AtomicU64::new(0) }))
    }

    /// Bytes held now across all streams.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Out-of-order segments not held because the budget was spent: the
    /// holes before them were declared gaps at once.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        let used = self.used();
        if used + n > self.0.limit {
            self.0.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.0.used.store(used + n, Ordering::Relaxed);
        true
    }

    fn give_back(&self, n: usize) {
        self.0.used.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for HeldBudget {
    /// Unlimited, for a stream on its own (tests).
    fn default() -> Self {
        HeldBudget::new(usize::MAX)
    }
}

#[derive(Debug, Default)]
pub struct Stream {
    /// The sequence number of the next byte to hand on; unknown until the
    /// SYN or the first segment.
    next: Option<SeqNumber>,
    held: Vec<Held>,
    /// What `held` costs, as charged to `budget`.
    held_bytes: usize,
    budget: HeldBudget,
    /// The sender's FIN has been handed on: nothing more is expected.
    finished: bool,
    /// Bytes reported as gaps so far.
    pub gap_bytes: u64,
    /// The highest acknowledgment from the other side.
    acked: Option<SeqNumber>,
}

#[derive(Debug)]
struct Held {
    seq: SeqNumber,
    bytes: Vec<u8>,
    /// Wire bytes beyond `bytes` that the capture cut (snap length).
    cut: u32,
    fin: bool,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.budget.give_back(self.held_bytes);
    }
}

impl Stream {
    /// A stream whose held data counts against `budget`.
    pub fn with_budget(budget: HeldBudget) -> Stream {
        let mut stream = Stream::default();
        stream.budget = budget;
        stream
    }

    /// The stream starts after the SYN's sequence number.
    pub fn start_after_syn(&mut self, isn: SeqNumber) {
        self.next = Some(isn + 1);
    }

    /// Feeds a segment's payload: `bytes` as captured, `wire_len` as sent.
    pub fn on_segment(
        &mut self,
        seq: SeqNumber,
        bytes: &[u8],
        wire_len: u32,
        fin: bool,
        out: &mut impl FnMut(Chunk<'_>),
    ) {
        if self.finished || (wire_len == 0 && !fin) {
            return;
        }
        let next = *self.next.get_or_insert(seq);
        let ahead = seq.distance_from(next);
        if ahead > 0 {
            self.hold(seq, bytes, wire_len, fin, out);
            return;
        }
        self.deliver(seq, bytes, wire_len, fin, out);
        self.release_held(out);
    }

    /// The other side acknowledged up to `ack`. Bytes before it that the
    /// capture never had are a gap; that is settled in `finish`, because a
    /// capture from several interfaces can show an ACK before its data.
    pub fn on_ack(&mut self, ack: SeqNumber) {
        let Some(next) = self.next else { return };
        let ahead = ack.distance_from(next);
        if ahead > 0 && ahead <= MAX_ACK_JUMP && self.acked.is_none_or(|a| ack.distance_from(a) > 0) {
            self.acked = Some(ack);
        }
    }

    /// The connection is over: whatever is held is handed on, holes as gaps,
    /// and acknowledged bytes never seen as a final gap.
    pub fn finish(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        while let Some(first) = self.lowest_held() {
            let seq = self.held[first].seq;
            self.flush_to(seq, out);
            self.release_held(out);
        }
        if let Some(acked) = self.acked.take() {
            if !self.finished {
                self.flush_to(acked, out);
            }
        }
    }

    fn deliver(&mut self, seq: SeqNumber, bytes: &[u8], wire_len: u32, fin: bool, out: &mut impl FnMut(Chunk<'_>)) {
        let Some(next) = self.next else { return };
        // Bytes before `next` were handed on already (a retransmission or overlap).
        let skip = next.distance_from(seq).max(0) as u32;
        let new_wire = wire_len.saturating_sub(skip);
        if new_wire > 0 {
            let captured = bytes.get(skip as usize..).unwrap_or_default();
            let captured = &captured[..captured.len().min(new_wire as usize)];
            if !captured.is_empty() {
                out(Chunk::Data(captured));
            }
            let cut = new_wire - captured.len() as u32;
            if cut > 0 {
                self.gap_bytes += u64::from(cut);
                out(Chunk::Gap(cut));
            }
            self.next = Some(next + new_wire);
        }
        if fin && seq + wire_len == self.next.unwrap_or(next) {
            self.finished = true;
        }
    }

    fn hold(&mut self, seq: SeqNumber, bytes: &[u8], wire_len: u32, fin: bool, out: &mut impl FnMut(Chunk<'_>)) {
        if self.held.iter().any(|h| h.seq == seq) {
            return; // a retransmission of a held segment
        }
        let cost = bytes.len() + HELD_SEGMENT_OVERHEAD;
        // No room in this stream: the hole before the lowest held segment is lost.
        while !self.held.is_empty() && (self.held.len() >= MAX_HELD_SEGMENTS || self.held_bytes + cost > MAX_HELD_BYTES)
        {
            self.flush_lowest(out);
        }
        if !self.budget.take(cost) {
            // No room across all streams: this hole is lost now, not later.
            self.flush_through(seq, out);
            self.deliver(seq, bytes, wire_len, fin, out);
            self.release_held(out);
            return;
        }
        let cut = wire_len - (bytes.len() as u32).min(wire_len);
        self.held_bytes += cost;
        self.held.push(Held { seq, bytes: bytes.to_vec(), cut, fin });
        if self.held_bytes > MAX_HELD_BYTES {
            // A single segment larger than the whole allowance.
            self.flush_lowest(out);
        }
    }

    /// Declares the hole before the lowest held segment lost.
    fn flush_lowest(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        if let Some(first) = self.lowest_held() {
            let target = self.held[first].seq;
            self.flush_to(target, out);
            self.release_held(out);
        }
    }

    /// Declares every hole before `target` lost, handing on the held
    /// segments between them.
    fn flush_through(&mut self, target: SeqNumber, out: &mut impl FnMut(Chunk<'_>)) {
        while let (Some(first), Some(next)) = (self.lowest_held(), self.next) {
            let seq = self.held[first].seq;
            if target.distance_from(next) <= 0 || target.distance_from(seq) <= 0 {
                break;
            }
            self.flush_to(seq, out);
            self.release_held(out);
        }
        self.flush_to(target, out);
    }

    /// Declares the bytes from `next` up to `target` lost, handing on held
    /// segments that start before `target` on the way.
    fn flush_to(&mut self, target: SeqNumber, out: &mut impl FnMut(Chunk<'_>)) {
        self.release_held(out);
        let Some(next) = self.next else { return };
        let missing = target.distance_from(next);
        if missing > 0 {
            self.gap_bytes += missing as u64;
            out(Chunk::Gap(missing as u32));
            self.next = Some(target);
            self.release_held(out);
        }
    }

    /// Hands on held segments that now start at or before `next`.
    fn release_held(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        while let Some(i) = self.lowest_held() {
            let (Some(next), seq) = (self.next, self.held[i].seq) else { return };
            if seq.distance_from(next) > 0 {
                return;
            }
            let h = self.held.swap_remove(i);
            let cost = h.bytes.len() + HELD_SEGMENT_OVERHEAD;
            self.held_bytes -= cost;
            self.budget.give_back(cost);
            let wire = h.bytes.len() as u32 + h.cut;
            self.deliver(h.seq, &h.bytes, wire, h.fin, out);
        }
    }

    fn lowest_held(&self) -> Option<usize> {
        let next = self.next?;
        self.held.iter().enumerate().min_by_key(|(_, h)| h.seq.distance_from(next)).map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stream: &mut Stream, segs: &[(u32, &[u8])]) -> Vec<String> {
        let mut got = Vec::new();
        for &(seq, bytes) in segs {
            stream.on_segment(SeqNumber(seq), bytes, bytes.len() as u32, false, &mut |c| got.push(show(c)));
        }
        stream.finish(&mut |c| got.push(show(c)));
        got
    }

    fn show(c: Chunk<'_>) -> String {
        match c {
            Chunk::Data(d) => String::from_utf8_lossy(d).into_owned(),
            Chunk::Gap(n) => format!("<gap {n}>"),
        }
    }

    fn started() -> Stream {
        let mut s = Stream::default();
        s.start_after_syn(SeqNumber(99));
        s
    }

    #[test]
    fn in_order_and_retransmitted() {
        let got = run(&mut started(), &[(100, b"abc"), (100, b"abc"), (101, b"bcde"), (105, b"f")]);
        assert_eq!(got.concat(), "abcdef");
    }

    #[test]
    fn out_of_order_is_reordered() {
        let got = run(&mut started(), &[(103, b"def"), (106, b"g"), (100, b"abc")]);
        assert_eq!(got.concat(), "abcdefg");
    }

    #[test]
    fn a_hole_that_never_fills_is_a_gap() {
        let got = run(&mut started(), &[(100, b"ab"), (105, b"fg")]);
        assert_eq!(got, ["ab", "<gap 3>", "fg"]);
    }

    #[test]
    fn cut_payload_is_a_gap_of_the_rest() {
        let mut s = started();
        let mut got = Vec::new();
        s.on_segment(SeqNumber(100), b"ab", 10, false, &mut |c| got.push(show(c)));
        s.on_segment(SeqNumber(110), b"z", 1, false, &mut |c| got.push(show(c)));
        assert_eq!(got, ["ab", "<gap 8>", "z"]);
    }

    #[test]
    fn ack_beyond_the_data_reveals_a_gap() {
        let mut s = started();
        let mut got = Vec::new();
        s.on_segment(SeqNumber(100), b"ab", 2, false, &mut |c| got.push(show(c)));
        s.on_ack(SeqNumber(110));
        assert_eq!(got, ["ab"], "not before the end: the data may still come");
        s.finish(&mut |c| got.push(show(c)));
        assert_eq!(got, ["ab", "<gap 8>"]);
    }

    #[test]
    fn holding_is_bounded() {
        let mut s = started();
        let mut gaps = 0;
        let chunk = [b'x'; 1000];
        for i in 0..200u32 {
            // Every segment leaves a one-byte hole before it.
            s.on_segment(SeqNumber(101 + i * 1001), &chunk, 1000, false, &mut |c| {
                if matches!(c, Chunk::Gap(_)) {
                    gaps += 1
                }
            });
            assert!(s.held.len() <= MAX_HELD_SEGMENTS && s.held_bytes <= MAX_HELD_BYTES);
        }
        assert!(gaps > 100);
    }
}
