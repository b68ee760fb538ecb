//! The CSV report: one row per attempt, streamed as attempts finish, for
//! spreadsheets.

use std::io::Write;

use super::escape;
use crate::record::AttemptRecord;

/// The CSV columns, in order.
const CSV_HEADER: [&str; 35] = [
    "id",
    "start",
    "end",
    "client",
    "server",
    "outcome",
    "tcp_outcome",
    "handshake_ms",
    "login_ms",
    "syn_count",
    "answer_kind",
    "answer_from",
    "answer_ttl",
    "icmp_type",
    "icmp_code",
    "gave_up",
    "wait_ms",
    "session_end",
    "user",
    "database",
    "application_name",
    "auth",
    "encryption",
    "sqlstate",
    "severity",
    "message",
    "detail",
    "hint",
    "session_errors",
    "client_packets",
    "server_packets",
    "client_bytes",
    "server_bytes",
    "notes",
    "server_name",
];

/// The CSV header line.
pub fn header(out: &mut dyn Write) -> std::io::Result<()> {
    write_csv(&CSV_HEADER, out)
}

/// One record quoted by the csv crate and written at once, so that a row
/// reaches a pipe as soon as its attempt ends.
fn write_csv(fields: &[impl AsRef<[u8]>], out: &mut dyn Write) -> std::io::Result<()> {
    let mut writer = ::csv::Writer::from_writer(out);
    writer.write_record(fields).map_err(std::io::Error::other)?;
    writer.flush()
}

/// One attempt as a CSV row.
pub fn row(a: &AttemptRecord, out: &mut dyn Write) -> std::io::Result<()> {
    let text = |v: Option<String>| v.unwrap_or_default();
    let num = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
    let name = |v: &dyn erased::Named| v.name();
    let pg = a.pg.as_ref();
    let error = pg.and_then(|p| p.error.as_ref());
    let answer = a.answer.as_ref();
    let row: [String; 35] = [
        a.id.to_string(),
        a.start.to_string(),
        a.end.to_string(),
        a.client.to_string(),
        a.server.to_string(),
        a.outcome.to_string(),
        name(&a.tcp_outcome),
        num(a.handshake_ms),
        num(pg.and_then(|p| p.login_ms)),
        text(a.syn.as_ref().map(|s| s.count.to_string())),
        text(answer.map(|x| name(&x.kind))),
        text(answer.map(|x| x.from.to_string())),
        text(answer.map(|x| x.ttl.to_string())),
        text(answer.and_then(|x| x.icmp_type).map(|v| v.to_string())),
        text(answer.and_then(|x| x.icmp_code).map(|v| v.to_string())),
        text(a.gave_up.as_ref().map(|g| name(g))),
        num(a.wait_ms),
        text(a.session_end.as_ref().map(|e| name(e))),
        text(pg.and_then(|p| p.startup.user.clone())),
        text(pg.and_then(|p| p.startup.database.clone())),
        text(pg.and_then(|p| p.startup.application_name.clone())),
        text(pg.map(|p| p.auth.join(" "))),
        text(pg.and_then(|p| p.encryption.as_ref().map(|e| name(e)))),
        text(error.and_then(|e| e.code.clone())),
        text(error.and_then(|e| e.severity().map(str::to_owned))),
        text(error.and_then(|e| e.message.clone())),
        text(error.and_then(|e| e.detail.clone())),
        text(error.and_then(|e| e.hint.clone())),
        text(pg.map(|p| p.session_errors.iter().map(|(c, n)| format!("{c}:{n}")).collect::<Vec<_>>().join(" "))),
        a.traffic.client_packets.to_string(),
        a.traffic.server_packets.to_string(),
        a.traffic.client_bytes.to_string(),
        a.traffic.server_bytes.to_string(),
        a.notes.iter().map(|n| name(n)).collect::<Vec<_>>().join(" "),
        text(a.dns.as_ref().map(|l| l.name.clone())),
    ];
    write_csv(&row.map(|cell| escape::csv(&cell)), out)
}

/// The serde name of a unit enum value, as JSON shows it.
mod erased {
    pub trait Named {
        fn name(&self) -> String;
    }

    impl<T: serde::Serialize> Named for T {
        fn name(&self) -> String {
            serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        }
    }
}
