//! The PostgreSQL session read from both directions of a connection:
//! arbitrary chunks, gaps and direction changes, from the start or joined
//! midstream, then the summary. No panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgreach::outcome::Side;
use pgreach::pg::PgSession;
use pgreach::stream::Chunk;
use pgreach::time::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut rest)) = data.split_first() else { return };
    let mut session = if control & 1 == 0 { PgSession::default() } else { PgSession::midstream() };
    let mut ts = Timestamp::from_secs_nanos(1_700_000_000, 0);
    // Each piece: a header byte (direction, gap or data, length) then its bytes.
    while let Some((&head, more)) = rest.split_first() {
        let side = if head & 0x80 == 0 { Side::Client } else { Side::Server };
        let len = usize::from(head & 0x3f) * 4 + 1;
        ts = ts + std::time::Duration::from_millis(u64::from(head));
        if head & 0x40 != 0 && len < 8 {
            session.on_chunk(side, Chunk::Gap(len as u32 * 1000), ts);
            rest = more;
            continue;
        }
        let (bytes, after) = more.split_at(len.min(more.len()));
        session.on_chunk(side, Chunk::Data(bytes), ts);
        rest = after;
    }
    let start = Timestamp::from_secs_nanos(1_700_000_000, 0);
    let _ = session.finish(control & 2 != 0, control & 4 != 0, start, ts);
});
