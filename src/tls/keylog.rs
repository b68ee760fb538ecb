//! TLS key logs in the NSS format that browsers, OpenSSL, Go's crypto/tls,
//! Java agents and Python's `ssl` write (`SSLKEYLOGFILE`): one secret per
//! line, keyed by the ClientHello's random. The file is read by the binary;
//! the engine only gets its text. Secrets never leave this module's types
//! except to derive keys, and no `Debug` output shows them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

/// Sessions kept at most: a key log that grows without end (a long-running
/// application) must not exhaust memory; the oldest are not dropped, the
/// newest are refused and counted.
const MAX_SESSIONS: usize = 1_000_000;
/// The longest secret any TLS version logs (SHA-384 sized).
const MAX_SECRET: usize = 48;

/// One session's secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SessionSecrets {
    /// TLS 1.2: the master secret (`CLIENT_RANDOM`).
    pub master: Option<Vec<u8>>,
    /// TLS 1.3: the first application traffic secrets.
    pub client_traffic: Option<Vec<u8>>,
    pub server_traffic: Option<Vec<u8>>,
}

impl SessionSecrets {
    /// Whether they decrypt a session: TLS 1.2's master secret, or both of
    /// TLS 1.3's traffic secrets (an application writes them one line at a
    /// time, so a session can be half known for a moment).
    pub fn is_complete(&self) -> bool {
        self.master.is_some() || (self.client_traffic.is_some() && self.server_traffic.is_some())
    }
}

impl fmt::Debug for SessionSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecrets { .. }")
    }
}

/// What reading a key log's text found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLogRead {
    pub lines_used: u64,
    /// Lines that are neither comments nor a known label with valid hex.
    pub lines_ignored: u64,
    /// Sessions refused because the store was full.
    pub sessions_refused: u64,
}

/// The secrets of many sessions, by client random.
#[derive(Default)]
pub struct KeyLog {
    sessions: HashMap<[u8; 32], SessionSecrets>,
    /// The end of a last line that had no newline yet (a log still being written).
    partial_line: String,
}

impl fmt::Debug for KeyLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyLog {{ sessions: {} }}", self.sessions.len())
    }
}

impl KeyLog {
    /// Adds the next piece of a key log's text; a line cut at the end of
    /// `text` waits for the rest.
    pub fn add_text(&mut self, text: &str) -> KeyLogRead {
        let mut read = KeyLogRead::default();
        let mut pending = std::mem::take(&mut self.partial_line);
        pending.push_str(text);
        let complete = match pending.rfind('\n') {
            Some(end) => {
                self.partial_line = pending[end + 1..].to_owned();
                &pending[..end]
            }
            None => {
                // Bounded: a "line" longer than any key log line is junk.
                if pending.len() <= 512 {
                    self.partial_line = pending;
                }
                return read;
            }
        };
        for line in complete.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match self.add_line(line) {
                Some(true) => read.lines_used += 1,
                Some(false) => read.sessions_refused += 1,
                None => read.lines_ignored += 1,
            }
        }
        read
    }

    /// `None` for a line that is not a usable key log line; `Some(false)` when the store is full.
    fn add_line(&mut self, line: &str) -> Option<bool> {
        let mut words = line.split_ascii_whitespace();
        let (label, random, secret) = (words.next()?, words.next()?, words.next()?);
        let random: [u8; 32] = hex(random)?.try_into().ok()?;
        let secret = hex(secret).filter(|s| !s.is_empty() && s.len() <= MAX_SECRET)?;
        if !self.sessions.contains_key(&random) && self.sessions.len() >= MAX_SESSIONS {
            return Some(false);
        }
        #[derive(PartialEq)]
        enum Slot {
            Master,
            ClientTraffic,
            ServerTraffic,
        }
        let slot = match label {
            "CLIENT_RANDOM" => Slot::Master,
            "CLIENT_TRAFFIC_SECRET_0" => Slot::ClientTraffic,
            "SERVER_TRAFFIC_SECRET_0" => Slot::ServerTraffic,
            // Handshake secrets and exporters are valid lines pgreach does not need.
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
            | "SERVER_HANDSHAKE_TRAFFIC_SECRET"
            | "EXPORTER_SECRET"
            | "CLIENT_EARLY_TRAFFIC_SECRET"
            | "EARLY_EXPORTER_SECRET" => return Some(true),
            _ => return None,
        };
        let session = self.sessions.entry(random).or_default();
        match slot {
            Slot::Master => session.master = Some(secret),
            Slot::ClientTraffic => session.client_traffic = Some(secret),
            Slot::ServerTraffic => session.server_traffic = Some(secret),
        }
        Some(true)
    }

    pub fn get(&self, client_random: &[u8; 32]) -> Option<&SessionSecrets> {
        self.sessions.get(client_random)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// New key log text, asked for when a session's secrets are missing: the
/// driver's way to read what an application appended since (a live key log).
pub type MoreText = Box<dyn FnMut() -> String + Send>;

/// A key log shared by the engine and its connections; the driver adds text,
/// up front or, live, through a `MoreText` it installs.
///
/// One pointer wide: every tracked connection carries a copy.
#[derive(Clone, Default)]
pub struct KeyStore(Arc<Shared>);

#[derive(Default)]
struct Shared {
    log: RwLock<KeyLog>,
    more: Mutex<Option<MoreText>>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyStore {{ sessions: {}, grows: {} }}", self.sessions(), self.grows())
    }
}

impl KeyStore {
    pub fn add_text(&self, text: &str) -> KeyLogRead {
        match self.0.log.write() {
            Ok(mut log) => log.add_text(text),
            Err(poisoned) => poisoned.into_inner().add_text(text),
        }
    }

    /// Installs the reader of text appended later (live): secrets may then
    /// come after their session's first packets.
    pub fn set_more_text(&self, more: MoreText) {
        if let Ok(mut slot) = self.0.more.lock() {
            *slot = Some(more);
        }
    }

    /// Whether secrets may still arrive after their session's packets.
    pub fn grows(&self) -> bool {
        self.0.more.lock().is_ok_and(|m| m.is_some())
    }

    /// A copy of one session's secrets; when missing, the text appended
    /// since is read first (live).
    pub fn lookup(&self, client_random: &[u8; 32]) -> Option<SessionSecrets> {
        let known = self.get(client_random);
        if known.as_ref().is_some_and(SessionSecrets::is_complete) {
            return known;
        }
        // Missing, or half written when last read: read what was appended since.
        let more = self.0.more.lock().ok().and_then(|mut more| more.as_mut().map(|read| read()));
        match more {
            Some(text) if !text.is_empty() => {
                self.add_text(&text);
                self.get(client_random)
            }
            _ => known,
        }
    }

    fn get(&self, client_random: &[u8; 32]) -> Option<SessionSecrets> {
        let log = self.0.log.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        log.get(client_random).cloned()
    }

    pub fn sessions(&self) -> usize {
        self.0.log.read().map_or(0, |log| log.len())
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 2 * 64 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANDOM: &str = "cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef6283024dece7";

    #[test]
    fn reads_tls12_and_tls13_lines_and_skips_the_rest() {
        let mut log = KeyLog::default();
        let text = format!(
            "# comment\nCLIENT_RANDOM {RANDOM} {}\nCLIENT_TRAFFIC_SECRET_0 {RANDOM} {}\n\
             SERVER_HANDSHAKE_TRAFFIC_SECRET {RANDOM} {}\nnonsense line\nCLIENT_RANDOM zz {}\n",
            "11".repeat(48),
            "22".repeat(32),
            "33".repeat(32),
            "44".repeat(48)
        );
        let read = log.add_text(&text);
        assert_eq!((read.lines_used, read.lines_ignored), (3, 2));
        let random: [u8; 32] = hex(RANDOM).unwrap().try_into().unwrap();
        let s = log.get(&random).expect("session");
        assert_eq!(s.master.as_deref(), Some(&[0x11; 48][..]));
        assert_eq!(s.client_traffic.as_deref(), Some(&[0x22; 32][..]));
        assert_eq!(s.server_traffic, None);
        assert!(!format!("{s:?}{log:?}").contains("11"), "no secret in Debug output");
    }

    #[test]
    fn a_line_written_in_two_pieces_is_read_once_whole() {
        let mut log = KeyLog::default();
        let line = format!("SERVER_TRAFFIC_SECRET_0 {RANDOM} {}\n", "ab".repeat(32));
        let (a, b) = line.split_at(40);
        assert_eq!(log.add_text(a).lines_used, 0);
        assert_eq!(log.add_text(b).lines_used, 1);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let mut log = KeyLog::default();
        for text in ["\u{0}\u{ff}", "CLIENT_RANDOM", "CLIENT_RANDOM é é\n", &"x".repeat(10_000), "\n\n\n"] {
            log.add_text(text);
        }
        assert!(log.partial_line.len() <= 512);
    }

    #[test]
    fn a_session_half_written_when_first_read_is_read_again() {
        // The application writes its client secret, then (a moment later,
        // after pgreach already looked) the server's.
        let store = KeyStore::default();
        let mut pieces = vec![
            format!("SERVER_TRAFFIC_SECRET_0 {RANDOM} {}\n", "bb".repeat(32)),
            format!("CLIENT_TRAFFIC_SECRET_0 {RANDOM} {}\n", "aa".repeat(32)),
        ];
        store.set_more_text(Box::new(move || pieces.pop().unwrap_or_default()));
        let random: [u8; 32] = hex(RANDOM).unwrap().try_into().unwrap();
        let first = store.lookup(&random).expect("the client's secret is there");
        assert!(!first.is_complete());
        let second = store.lookup(&random).expect("both now");
        assert!(second.is_complete(), "the server's secret, appended later, is read");
    }
}
