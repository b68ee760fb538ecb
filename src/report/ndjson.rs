//! The NDJSON report: one JSON object per attempt on one line, streamed as
//! attempts finish, for log pipelines.

use std::io::Write;

use super::attempt_json::AttemptJson;
use crate::record::AttemptRecord;

/// One JSON object on one line, with the pgreach version that wrote it.
pub fn line(a: &AttemptRecord, out: &mut dyn Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &AttemptJson::standalone(a))?;
    out.write_all(b"\n")
}
