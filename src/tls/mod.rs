//! TLS inside a PostgreSQL connection (after SSLRequest was answered `S`,
//! or from a direct TLS ClientHello): the record layer's boundaries, the
//! clear-text handshake, and what the encrypted records' shape says about
//! the login.

mod hello;
mod login;
mod records;

use serde::Serialize;
use tls_parser::TlsRecordType;

pub use hello::{Certificate, HelloFacts};
pub use login::{Flight, Flights, LoginShape};
use records::{Record, RecordReader, RecordsLost};

use crate::outcome::Side;
use crate::time::Timestamp;

/// The encrypted body of a TLS 1.3 alert: two bytes, the inner content
/// type and AEAD's 16-byte tag. No PostgreSQL message is that short (five
/// bytes at least), so such records are alerts.
const TLS13_ALERT_LEN: usize = 2 + 1 + 16;

/// What the TLS layer of one connection showed, for the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TlsSummary {
    #[serde(flatten)]
    pub hello: HelloFacts,
    /// Both sides finished the handshake (their Finished messages went out).
    pub handshake_done: bool,
    /// An alert sent in the clear (during the handshake): who, and its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// Encrypted alerts after the handshake (close_notify, usually), by side.
    pub client_alerts: u32,
    pub server_alerts: u32,
    /// The application records after the handshake, as flights.
    pub flights: Flights,
    /// What their shape suggests about the login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<LoginShape>,
    /// Where the records could no longer be followed, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_lost: Option<String>,
}

/// The TLS layer of one connection as it goes by.
#[derive(Debug)]
pub struct TlsTrack {
    readers: [RecordReader; 2],
    handshakes: [hello::HandshakeReader; 2],
    /// Per side: ChangeCipherSpec sent (TLS 1.2: what follows is encrypted).
    cipher_changed: [bool; 2],
    /// Per side: its Finished went out (encrypted from then on).
    finished: [bool; 2],
    start: Timestamp,
    summary: TlsSummary,
}

impl TlsTrack {
    /// `start`: the attempt's first packet, for the flights' times.
    pub fn new(start: Timestamp) -> TlsTrack {
        TlsTrack {
            readers: Default::default(),
            handshakes: Default::default(),
            cipher_changed: [false; 2],
            finished: [false; 2],
            start,
            summary: TlsSummary::default(),
        }
    }

    /// The next in-order bytes of one side.
    pub fn on_data(&mut self, side: Side, data: &[u8], ts: Timestamp) {
        let mut reader = std::mem::take(&mut self.readers[side as usize]);
        reader.feed(data, &mut |record| self.on_record(side, record, ts));
        if let Some(lost) = reader.lost() {
            self.note_lost(side, lost);
        }
        self.readers[side as usize] = reader;
    }

    /// The capture lost bytes of one side.
    pub fn on_gap(&mut self, side: Side) {
        self.readers[side as usize].gap();
        self.note_lost(side, RecordsLost::Gap);
    }

    fn note_lost(&mut self, side: Side, lost: RecordsLost) {
        if self.summary.records_lost.is_none() {
            let why = match lost {
                RecordsLost::Gap => "the capture lost bytes",
                RecordsLost::NotTls => "a record header no TLS peer sends",
            };
            self.summary.records_lost = Some(format!("{} side: {why}", side_name(side)));
        }
    }

    fn on_record(&mut self, side: Side, record: Record<'_>, ts: Timestamp) {
        let s = side as usize;
        let tls13 = self.summary.hello.is_tls13();
        if record.is(TlsRecordType::Handshake) {
            if self.cipher_changed[s] && !tls13 {
                // TLS 1.2: the encrypted Finished.
                self.finished[s] = true;
            } else {
                self.handshakes[s].feed(side, record.body, ts, &mut self.summary.hello);
            }
        } else if record.is(TlsRecordType::ChangeCipherSpec) {
            // In TLS 1.3 it is only there for middleboxes.
            self.cipher_changed[s] = true;
        } else if record.is(TlsRecordType::Alert) {
            self.on_alert(side, record.body);
        } else if record.is(TlsRecordType::ApplicationData) {
            self.on_encrypted(side, record.body.len(), ts, tls13);
        }
        self.summary.handshake_done = self.finished == [true, true];
    }

    fn on_alert(&mut self, side: Side, body: &[u8]) {
        match body {
            [level, description] if self.summary.alert.is_none() && !self.cipher_changed[side as usize] => {
                let name = tls_parser::TlsAlertDescription(*description);
                let level = if *level == 2 { "fatal" } else { "warning" };
                self.summary.alert = Some(format!("{level} {name:?} from the {}", side_name(side)));
            }
            _ => self.count_alert(side),
        }
    }

    fn count_alert(&mut self, side: Side) {
        match side {
            Side::Client => self.summary.client_alerts = self.summary.client_alerts.saturating_add(1),
            Side::Server => self.summary.server_alerts = self.summary.server_alerts.saturating_add(1),
        }
    }

    /// An application-data record: in TLS 1.3 also the encrypted handshake.
    fn on_encrypted(&mut self, side: Side, len: usize, ts: Timestamp, tls13: bool) {
        let s = side as usize;
        if tls13 {
            match side {
                // The server's records before the client's Finished are its
                // handshake (EncryptedExtensions … Finished).
                Side::Server if !self.finished[Side::Client as usize] => {
                    self.finished[s] = true;
                    return;
                }
                // The client's first encrypted record is its Finished.
                Side::Client if !self.finished[s] => {
                    self.finished[s] = true;
                    return;
                }
                _ if len == TLS13_ALERT_LEN => {
                    self.count_alert(side);
                    return;
                }
                _ => {}
            }
        }
        self.summary.flights.record(side, len, ts, self.start);
    }

    /// The summary, with the login's shape; `capture_ended`: the connection
    /// was still open when the capture stopped.
    pub fn finish(mut self, capture_ended: bool) -> TlsSummary {
        let shape = self.summary.flights.shape(self.record_overhead(), capture_ended);
        self.summary.login = Some(shape);
        self.summary
    }
}

impl TlsTrack {
    /// Bytes an encrypted record adds to its plaintext: TLS 1.3 the inner
    /// content type and a 16-byte tag; TLS 1.2 AES-GCM an 8-byte explicit
    /// nonce too; ChaCha20-Poly1305 only the tag.
    fn record_overhead(&self) -> usize {
        let h = &self.summary.hello;
        let suite = h.cipher_suite.as_deref().unwrap_or("");
        match h.version.as_deref() {
            Some("1.2") if suite.contains("CHACHA20") => 16,
            Some("1.2") if suite.contains("GCM") => 24,
            _ => 17,
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Server => "server",
    }
}
