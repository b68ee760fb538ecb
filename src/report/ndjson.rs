//! The NDJSON report: one JSON object per attempt on one line, streamed as
//! attempts finish, for log pipelines.

use std::io::Write;

use crate::record::AttemptRecord;

/// One JSON object on one line.
pub fn line(a: &AttemptRecord, out: &mut dyn Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, a)?;
    out.write_all(b"\n")
}
