//! TLS inside a PostgreSQL connection (after SSLRequest was answered `S`,
//! or from a direct TLS ClientHello): the record layer's boundaries, the
//! clear-text handshake, what the encrypted records' shape says about the
//! login, and, with a key log's secrets, the records decrypted for the
//! PostgreSQL decoder.

mod decrypt;
mod hello;
mod keylog;
mod login;
mod records;

use serde::Serialize;
use tls_parser::TlsRecordType;

use decrypt::{NoKeys, SessionKeys};
pub use hello::{Certificate, HelloFacts};
pub use keylog::{KeyLog, KeyLogRead, KeyStore, MoreText};
pub use login::{Flight, Flights, LoginShape};

use records::{Record, RecordReader, RecordsLost};

use crate::outcome::Side;
use crate::time::Timestamp;

/// The encrypted body of a TLS 1.3 alert: two bytes, the inner content
/// type and AEAD's 16-byte tag. No PostgreSQL message is that short (five
/// bytes at least), so such records are alerts.
const TLS13_ALERT_LEN: usize = 2 + 1 + 16;
/// Encrypted bytes kept per connection while its keys are not in a growing
/// (live) key log yet: a login's records, with a certificate chain.
const MAX_WAITING_BYTES: usize = 16 * 1024;

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
    /// With a key log: whether this session was decrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
}

/// What a key log did for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decryption {
    /// Its records were decrypted and read as PostgreSQL.
    Decrypted,
    /// The key log has no secret for it.
    NoKey,
    /// Its cipher suite is not one pgreach decrypts (only AEAD suites are).
    UnsupportedCipher,
    /// A record did not decrypt with the logged secret (a wrong key, a key
    /// update, or lost bytes): what came after it was not read.
    Failed,
}

/// Where decryption stands for a session.
#[derive(Debug)]
enum Keys {
    /// No key log was given.
    None,
    /// Not looked up yet, or not found yet (a live key log may still get it).
    Wanted,
    Found(Box<SessionKeys>),
    Stopped(Decryption),
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
    store: Option<KeyStore>,
    keys: Keys,
    /// Per side: a record decrypted with the application keys.
    opened: [bool; 2],
    /// Decrypted application data of the bytes just fed (one segment's worth).
    plaintext: Vec<(Side, Vec<u8>)>,
    /// Encrypted records that came before their keys, in order (bounded).
    waiting: Vec<(Side, [u8; 5], Vec<u8>)>,
    waiting_bytes: usize,
}

impl TlsTrack {
    /// `start`: when TLS began, for the flights' times; `store`: the key log, if any.
    pub fn new(start: Timestamp, store: Option<KeyStore>) -> TlsTrack {
        TlsTrack {
            keys: if store.is_some() { Keys::Wanted } else { Keys::None },
            store,
            opened: [false; 2],
            plaintext: Vec::new(),
            waiting: Vec::new(),
            waiting_bytes: 0,
            readers: Default::default(),
            handshakes: Default::default(),
            cipher_changed: [false; 2],
            finished: [false; 2],
            start,
            summary: TlsSummary::default(),
        }
    }

    /// The next in-order bytes of one side; what they decrypt to is in
    /// `take_plaintext` afterwards.
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
        if matches!(self.keys, Keys::Found(_)) {
            self.keys = Keys::Stopped(Decryption::Failed);
        }
    }

    /// The application data decrypted since last asked, by side, in order.
    pub fn take_plaintext(&mut self) -> Vec<(Side, Vec<u8>)> {
        std::mem::take(&mut self.plaintext)
    }

    /// Whether any record has been decrypted.
    pub fn decrypting(&self) -> bool {
        self.opened.contains(&true)
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
        let encrypted = if tls13 {
            record.is(TlsRecordType::ApplicationData)
        } else {
            self.cipher_changed[s] && !record.is(TlsRecordType::ChangeCipherSpec)
        };
        if encrypted && !matches!(self.keys, Keys::None | Keys::Stopped(_)) {
            self.decrypt(side, &record, tls13);
        }
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

    /// Decrypts one encrypted record with the key log's secrets, looking
    /// them up at the first such record (and again while none are found:
    /// a live key log may get them a moment after the packets). Records
    /// that arrive before their keys wait, bounded, to be decrypted then.
    fn decrypt(&mut self, side: Side, record: &Record<'_>, tls13: bool) {
        let len = record.body.len() as u16;
        let v = record.version.to_be_bytes();
        let header = [record.content_type, v[0], v[1], (len >> 8) as u8, len as u8];
        if matches!(self.keys, Keys::Wanted) && !self.look_up_keys() {
            let grows = self.store.as_ref().is_some_and(KeyStore::grows);
            if grows && self.waiting_bytes + record.body.len() <= MAX_WAITING_BYTES {
                self.waiting_bytes += record.body.len();
                self.waiting.push((side, header, record.body.to_vec()));
            }
            return;
        }
        self.open(side, &header, record.body, tls13);
    }

    /// Looks the session's keys up; on success decrypts the records that
    /// waited for them. True when the keys are there.
    fn look_up_keys(&mut self) -> bool {
        self.keys = match self.session_keys() {
            Ok(keys) => Keys::Found(Box::new(keys)),
            Err(NoKeys::Missing) => return false,
            Err(NoKeys::Unsupported) => Keys::Stopped(Decryption::UnsupportedCipher),
        };
        let tls13 = self.summary.hello.is_tls13();
        self.waiting_bytes = 0;
        for (side, header, body) in std::mem::take(&mut self.waiting) {
            self.open(side, &header, &body, tls13);
        }
        matches!(self.keys, Keys::Found(_))
    }

    /// At the end (or on a timer): one more look for the keys of records
    /// still waiting.
    pub fn retry_keys(&mut self) {
        if matches!(self.keys, Keys::Wanted) && !self.waiting.is_empty() {
            self.look_up_keys();
        }
    }

    fn open(&mut self, side: Side, header: &[u8; 5], body: &[u8], tls13: bool) {
        let Keys::Found(keys) = &mut self.keys else { return };
        let direction = match side {
            Side::Client => &mut keys.client,
            Side::Server => &mut keys.server,
        };
        match direction.open(header, body) {
            Some(opened) => {
                self.opened[side as usize] = true;
                if opened.content_type == u8::from(TlsRecordType::ApplicationData) {
                    match self.plaintext.last_mut() {
                        Some((last, bytes)) if *last == side => bytes.extend_from_slice(&opened.plaintext),
                        _ => self.plaintext.push((side, opened.plaintext)),
                    }
                }
            }
            // TLS 1.3: records before the first that opens with the
            // application keys are the handshake's (other keys).
            None if tls13 && !self.opened[side as usize] => {}
            None => self.keys = Keys::Stopped(Decryption::Failed),
        }
    }

    fn session_keys(&self) -> Result<SessionKeys, NoKeys> {
        let h = &self.summary.hello;
        let (Some(store), Some(random), Some(cipher)) = (&self.store, h.client_random, h.cipher_id) else {
            return Err(NoKeys::Missing);
        };
        let secrets = store.lookup(&random).ok_or(NoKeys::Missing)?;
        if h.is_tls13() {
            decrypt::tls13_keys(cipher, &secrets)
        } else {
            let server_random = h.server_random.ok_or(NoKeys::Missing)?;
            decrypt::tls12_keys(cipher, &secrets, &random, &server_random)
        }
    }

    /// The summary, with the login's shape; `capture_ended`: the connection
    /// was still open when the capture stopped.
    pub fn finish(mut self, capture_ended: bool) -> TlsSummary {
        let shape = self.summary.flights.shape(self.record_overhead(), capture_ended);
        self.summary.login = Some(shape);
        self.summary.decryption = match self.keys {
            Keys::None => None,
            Keys::Stopped(why) => Some(why),
            _ if self.opened == [true, true] => Some(Decryption::Decrypted),
            // One side's records never opened: its secret is wrong.
            _ if self.decrypting() => Some(Decryption::Failed),
            // Looked for and never found, or no encrypted record at all.
            Keys::Wanted | Keys::Found(_) => self.summary.hello.cipher_id.map(|_| Decryption::NoKey),
        };
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

#[cfg(test)]
mod tests;
