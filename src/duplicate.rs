//! Second copies of a segment: `tcpdump -i any` on a bridge or a bond
//! captures every packet twice, and the copy is not a retransmission.

use std::time::Duration;

use crate::decode::{TcpFlags, TcpSegment};
use crate::outcome::Side;
use crate::seq::SeqNumber;
use crate::time::Timestamp;

/// A segment identical to the previous one from the same side within this
/// window is a copy of it: no TCP stack retransmits a SYN sooner than 1 s.
const DUPLICATE_WINDOW: Duration = Duration::from_millis(100);

/// What makes two captured segments copies of one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentId {
    seq: SeqNumber,
    ack: SeqNumber,
    flags: TcpFlags,
    len: u32,
}

impl SegmentId {
    fn of(seg: &TcpSegment<'_>) -> SegmentId {
        SegmentId { seq: seg.seq, ack: seg.ack, flags: seg.flags, len: seg.wire_payload_len }
    }
}

/// The last segment from the client and from the server.
#[derive(Debug, Default)]
pub struct LastSegments([Option<(SegmentId, Timestamp)>; 2]);

impl LastSegments {
    /// Remembers the segment; whether it was a copy of the previous one from its side.
    pub fn is_copy(&mut self, seg: &TcpSegment<'_>, side: Side, ts: Timestamp) -> bool {
        let id = SegmentId::of(seg);
        let slot = &mut self.0[side as usize];
        if slot.is_some_and(|(prev, at)| prev == id && ts.since(at) < DUPLICATE_WINDOW) {
            return true;
        }
        *slot = Some((id, ts));
        false
    }
}
