//! One PostgreSQL connection as seen from the wire: an explicit state machine
//! over both directions' messages, from the first startup packet to the end
//! of the session, and the outcome it adds up to.

use std::fmt;
use std::time::Duration;

use super::classify::{classify_login_error, LoginStage};
use super::framer::{Frame, FrameError, Framer, Mode, MAX_STARTUP_LEN};
use super::message::{self, AuthRequest, StartupPacket};
use super::pooler;
use super::summary::{Encryption, PgSummary};
use crate::outcome::{Outcome, Side};
use crate::stream::Chunk;
use crate::time::Timestamp;
use crate::tls::{KeyStore, LoginShape, TlsTrack};

/// Distinct SQLSTATEs counted per session; more are counted under "other".
const MAX_ERROR_CODES: usize = 32;
/// Authentication methods kept per session (a SASL exchange asks several times).
const MAX_AUTH_STEPS: usize = 4;
/// NoticeResponses kept with their fields; further ones are only counted.
const MAX_NOTICES_KEPT: usize = 4;
/// A server that has not answered a startup packet this long when the
/// capture ends is silent, not slow: PostgreSQL answers within milliseconds
/// unless it cannot fork or is stopped.
const SILENT_AT_CAPTURE_END: Duration = Duration::from_secs(10);

/// Where the connection is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The client's (next) startup packet is expected.
    AwaitStartup,
    /// SSLRequest or GSSENCRequest sent; the server's one-byte answer is expected.
    EncryptionRequested,
    /// StartupMessage sent; the server has not answered it yet.
    StartupSent,
    /// The server asked for credentials (a password, a SASL or GSS step).
    CredentialsAsked,
    /// The client answered; the server's verdict is expected.
    CredentialsSent,
    /// AuthenticationOk received; ReadyForQuery not yet.
    AuthOk,
    /// ReadyForQuery received: logged in.
    Ready,
    /// A FATAL error ended the login.
    LoginFailed,
    /// Encrypted from here on (TLS or GSS): nothing more is visible.
    Encrypted,
    /// A CancelRequest connection.
    Cancel,
    /// Not PostgreSQL.
    Foreign,
}

/// How far a login got, in words: the evidence of an unfinished one.
impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::AwaitStartup => "no startup message",
            Phase::EncryptionRequested => "encryption requested, no answer",
            Phase::StartupSent => "startup message sent, no answer",
            Phase::CredentialsAsked => "credentials asked for, none sent",
            Phase::CredentialsSent => "credentials sent, no verdict",
            Phase::AuthOk => "authenticated, not yet ready for queries",
            Phase::Ready => "logged in",
            Phase::LoginFailed => "login refused",
            Phase::Encrypted => "encrypted",
            Phase::Cancel => "cancel request",
            Phase::Foreign => "not PostgreSQL",
        })
    }
}

#[derive(Debug)]
pub struct PgSession {
    phase: Phase,
    client: Framer,
    server: Framer,
    summary: PgSummary,
    login_error_stage: LoginStage,
    /// When the current phase began (by the packet that began it).
    phase_since: Option<Timestamp>,
    /// The phase when the client closed, since when, and when it closed: a
    /// server's late answer (a resumed postmaster's, say) is not what the
    /// client saw.
    client_closed: Option<(Phase, Option<Timestamp>, Timestamp)>,
    ready_at: Option<Timestamp>,
    /// A ReadyForQuery after the login's: a query (or Sync) completed.
    query_completed: bool,
    client_spoke: bool,
    fatal_after_ready: bool,
    /// The capture began mid-session: per side (client, server), whether
    /// framing has been found yet. Always true for a session seen from its start.
    synced: [bool; 2],
    /// The TLS records, once TLS has begun.
    tls: Option<Box<TlsTrack>>,
    /// The key log to decrypt TLS with, if one was given.
    keys: Option<KeyStore>,
}

impl Default for PgSession {
    fn default() -> Self {
        PgSession {
            phase: Phase::AwaitStartup,
            client: Framer::new(Mode::Untyped),
            server: Framer::new(Mode::Typed),
            summary: PgSummary::default(),
            login_error_stage: LoginStage::BeforeAuthentication,
            phase_since: None,
            client_closed: None,
            ready_at: None,
            query_completed: false,
            client_spoke: false,
            fatal_after_ready: false,
            synced: [true, true],
            tls: None,
            keys: None,
        }
    }
}

impl PgSession {
    /// A session seen from its start, with a key log to decrypt TLS with.
    pub fn with_keys(keys: Option<KeyStore>) -> PgSession {
        PgSession { keys, ..PgSession::default() }
    }

    /// A session the capture joined after its login: taken as logged in,
    /// read from the first segment of each side that starts with messages.
    pub fn midstream() -> PgSession {
        PgSession {
            phase: Phase::Ready,
            client: Framer::unsynced(Mode::Typed),
            server: Framer::unsynced(Mode::Typed),
            client_spoke: true,
            synced: [false, false],
            ..PgSession::default()
        }
    }

    /// Feeds the next in-order piece of one direction.
    pub fn on_chunk(&mut self, side: Side, chunk: Chunk<'_>, ts: Timestamp) {
        if let Some(tls) = self.tls.as_deref_mut() {
            match chunk {
                Chunk::Data(data) => tls.on_data(side, data, ts),
                Chunk::Gap(_) => tls.on_gap(side),
            }
            let plaintext = tls.take_plaintext();
            if let (Chunk::Gap(n), true) = (chunk, tls.decrypting()) {
                self.on_clear_chunk(side, Chunk::Gap(n), ts);
            }
            self.on_decrypted(plaintext, ts);
            return;
        }
        self.on_clear_chunk(side, chunk, ts);
    }

    /// Decrypted application data: read on as if it were clear, from the startup message.
    fn on_decrypted(&mut self, plaintext: Vec<(Side, Vec<u8>)>, ts: Timestamp) {
        for (side, bytes) in plaintext {
            if self.phase == Phase::Encrypted {
                self.enter(Phase::AwaitStartup, ts);
            }
            self.on_clear_chunk(side, Chunk::Data(&bytes), ts);
        }
    }

    /// Feeds the next in-order piece of one direction's PostgreSQL bytes.
    fn on_clear_chunk(&mut self, side: Side, chunk: Chunk<'_>, ts: Timestamp) {
        if matches!(self.phase, Phase::Encrypted | Phase::Cancel | Phase::Foreign) {
            return;
        }
        match chunk {
            Chunk::Data(data) => {
                let (framer, known_tag): (_, fn(u8) -> bool) = match side {
                    Side::Client => (&mut self.client, is_client_tag),
                    Side::Server => (&mut self.server, is_server_tag),
                };
                if framer.resync(data, known_tag) {
                    let synced = &mut self.synced[side as usize];
                    if *synced {
                        self.summary.framing_resyncs = self.summary.framing_resyncs.saturating_add(1);
                    }
                    *synced = true;
                }
                // Bytes after a gap that framing was not found in are unreadable.
                if framer.error() == Some(&FrameError::Gap) {
                    return;
                }
                match side {
                    Side::Client => self.client_data(data, ts),
                    Side::Server => self.server_data(data, ts),
                }
            }
            Chunk::Gap(n) => {
                let framer = match side {
                    Side::Client => &mut self.client,
                    Side::Server => &mut self.server,
                };
                framer.gap(n);
                if framer.error().is_some() && self.synced[side as usize] {
                    self.summary.framing_lost = true;
                }
            }
        }
    }

    /// The client sent FIN or RST: what it saw is what it had by now.
    pub fn on_client_close(&mut self, ts: Timestamp) {
        self.client_closed.get_or_insert((self.phase, self.phase_since, ts));
    }

    /// Every phase change goes through here, so that `phase_since` holds.
    fn enter(&mut self, phase: Phase, ts: Timestamp) {
        // A refused login stays refused: a startup packet the client sent
        // before it read the refusal changes nothing.
        if self.phase != phase && self.phase != Phase::LoginFailed {
            self.phase = phase;
            self.phase_since = Some(ts);
        }
    }

    fn foreign(&mut self, reason: String, ts: Timestamp) {
        self.enter(Phase::Foreign, ts);
        self.summary.not_postgres = Some(reason);
    }

    fn client_data(&mut self, mut data: &[u8], ts: Timestamp) {
        if !self.client_spoke && self.phase == Phase::AwaitStartup && !self.client.mid_message() {
            if let Some(reason) = foreign_client_bytes(data) {
                if reason == DIRECT_TLS {
                    self.enter(Phase::Encrypted, ts);
                    self.summary.encryption = Some(Encryption::DirectTls);
                    let mut tls = Box::new(TlsTrack::new(ts, self.keys.clone()));
                    tls.on_data(Side::Client, data, ts);
                    self.tls = Some(tls);
                } else {
                    self.foreign(reason.to_owned(), ts);
                }
                return;
            }
        }
        self.client_spoke = true;
        let keep = |tag: u8| if tag == 0 { MAX_STARTUP_LEN as usize } else { 0 };
        while let Some(frame) = self.client.next_frame(&mut data, keep) {
            let Frame::Message { tag, body, .. } = frame else { continue };
            self.summary.client_messages += 1;
            if tag == 0 && message::has_long_text(body) {
                self.summary.limits_cut = self.summary.limits_cut.saturating_add(1);
            }
            match tag {
                0 => match message::startup_packet(body) {
                    // The answer decides; until then, assume the refusal.
                    StartupPacket::SslRequest => self.request_encryption(Encryption::SslRefused, ts),
                    StartupPacket::GssEncRequest => self.request_encryption(Encryption::GssRefused, ts),
                    StartupPacket::CancelRequest => self.enter(Phase::Cancel, ts),
                    StartupPacket::Startup { major, minor, params } => {
                        self.summary.protocol = Some(format!("{major}.{minor}"));
                        self.summary.startup = params;
                        self.enter(Phase::StartupSent, ts);
                        self.client.mode = Mode::Typed;
                    }
                    StartupPacket::Unknown { code } => self.foreign(format!("unknown startup request code {code}"), ts),
                },
                // PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse:
                // recognised by their type, never read.
                b'p' => {
                    self.summary.credentials_sent = true;
                    if self.phase == Phase::CredentialsAsked {
                        self.enter(Phase::CredentialsSent, ts);
                    }
                }
                b'X' => self.summary.terminate_sent = true,
                _ => {}
            }
            if matches!(self.phase, Phase::Cancel | Phase::Foreign) {
                return;
            }
        }
        if let Some(&FrameError::BadLength { tag: 0, len }) = self.client.error() {
            self.foreign(format!("the client's first packet has an impossible length ({len})"), ts);
        }
    }

    fn request_encryption(&mut self, refused: Encryption, ts: Timestamp) {
        self.summary.encryption = Some(refused);
        self.enter(Phase::EncryptionRequested, ts);
        self.server.mode = Mode::SslAnswer;
    }

    fn server_data(&mut self, mut data: &[u8], ts: Timestamp) {
        // Pgpool-II turns a client away (too many clients) as it accepts
        // the connection, before reading a word: an ErrorResponse first is a
        // refusal, anything else is another protocol's greeting.
        if !self.client_spoke && self.phase == Phase::AwaitStartup && data.first() != Some(&b'E') {
            self.foreign(format!("the server spoke first ({})", describe_bytes(data)), ts);
            return;
        }
        let keep = |tag: u8| match tag {
            b'R' => 256,
            b'E' | b'N' => 8192,
            b'S' => 1024,
            b'K' => 4,
            b'Z' | b'v' => 4,
            _ => 0,
        };
        while let Some(frame) = self.server.next_frame(&mut data, keep) {
            self.summary.server_messages += 1;
            match frame {
                Frame::SslAnswer(answer) => {
                    self.server.mode = Mode::Typed;
                    let gss = self.summary.encryption == Some(Encryption::GssRefused);
                    match answer {
                        b'S' | b'G' => {
                            self.summary.encryption = Some(if gss { Encryption::Gss } else { Encryption::Ssl });
                            self.enter(Phase::Encrypted, ts);
                            if !gss {
                                self.tls = Some(Box::new(TlsTrack::new(ts, self.keys.clone())));
                            }
                            return;
                        }
                        _ => self.enter(Phase::AwaitStartup, ts),
                    }
                }
                Frame::Message { tag, body, len } => {
                    let texts = matches!(tag, b'E' | b'N' | b'S');
                    if texts && (body.len() < len as usize || message::has_long_text(body)) {
                        self.summary.limits_cut = self.summary.limits_cut.saturating_add(1);
                    }
                    let (tag, body) = (tag, body.to_vec());
                    self.server_message(tag, &body, ts);
                }
            }
        }
        if self.server.error().is_some() && self.summary.server_messages == 0 {
            self.foreign("the server's answer is not a PostgreSQL message".to_owned(), ts);
        } else if self.server.error().is_some() {
            self.summary.framing_lost = true;
        }
    }

    fn server_message(&mut self, tag: u8, body: &[u8], ts: Timestamp) {
        match tag {
            b'R' => {
                let request = message::auth_request(body);
                if self.summary.auth.len() < MAX_AUTH_STEPS {
                    self.summary.auth.push(request.method());
                }
                if request == AuthRequest::Ok {
                    self.enter(Phase::AuthOk, ts);
                    self.login_error_stage = LoginStage::AfterAuthenticationOk;
                } else {
                    self.login_error_stage = LoginStage::DuringAuthentication;
                    if request.wants_answer() {
                        self.enter(Phase::CredentialsAsked, ts);
                    }
                }
            }
            b'S' => match message::parameter_status(body) {
                Some((name, value)) if name == "server_version" => self.summary.server_version = Some(value),
                Some((name, value)) if name == "in_hot_standby" => self.summary.in_hot_standby = Some(value),
                _ => {}
            },
            b'K' => self.summary.backend_pid = message::backend_pid(body),
            b'v' => self.summary.negotiated_minor = message::negotiated_minor(body),
            b'Z' => {
                if self.phase == Phase::Ready {
                    self.query_completed = true;
                } else {
                    self.ready_at = Some(ts);
                }
                self.enter(Phase::Ready, ts);
            }
            b'E' => {
                let fields = message::error_fields(body);
                if self.phase == Phase::EncryptionRequested {
                    self.summary.encryption = Some(Encryption::SslError);
                }
                if self.phase == Phase::Ready {
                    // After login only FATAL ends the session; a localized
                    // severity without V counts as an ordinary error. A
                    // pooler's own error after login always ends it (older
                    // PgBouncer releases call it ERROR).
                    let pooler_ends_it = pooler::classify(&fields, Outcome::Terminated).is_some();
                    if fields.is_fatal() == Some(true) || pooler_ends_it {
                        self.fatal_after_ready = true;
                        self.summary.error = Some(Box::new(fields));
                    } else {
                        self.count_session_error(fields.code());
                    }
                } else {
                    // Any error before ReadyForQuery ends the login; the
                    // first says why (Pgpool-II follows a backend's error
                    // with its own "unable to forward message").
                    if self.phase != Phase::LoginFailed {
                        self.summary.error = Some(Box::new(fields));
                    }
                    self.enter(Phase::LoginFailed, ts);
                }
            }
            b'N' => {
                self.summary.notices = self.summary.notices.saturating_add(1);
                let kept = self.summary.first_notices.len() < MAX_NOTICES_KEPT;
                self.summary.limits_cut = self.summary.limits_cut.saturating_add(u32::from(!kept));
                if kept {
                    self.summary.first_notices.push(message::error_fields(body));
                }
            }
            _ => {}
        }
    }

    fn count_session_error(&mut self, code: &str) {
        let errors = &mut self.summary.session_errors;
        let key = if errors.contains_key(code) || errors.len() < MAX_ERROR_CODES { code } else { "other" };
        self.summary.limits_cut = self.summary.limits_cut.saturating_add(u32::from(key == "other"));
        *errors.entry(key.to_owned()).or_default() += 1;
    }

    /// The outcome and summary once the connection is over. `closed_by_client`
    /// says whether the client ended the TCP connection; `capture_ended` that
    /// the capture stopped before the connection did; `end` is when it ended
    /// (or the capture did).
    pub fn finish(
        mut self,
        closed_by_client: bool,
        capture_ended: bool,
        start: Timestamp,
        end: Timestamp,
    ) -> (Outcome, PgSummary) {
        self.summary.login_ms = self.ready_at.map(|t| crate::time::millis(t.since(start)));
        let closed_by_server = !closed_by_client && !capture_ended;
        let (phase, since, end) = match self.client_closed {
            Some(at_close) if closed_by_client => at_close,
            _ => (self.phase, self.phase_since, end),
        };
        let waited = since.map_or(Duration::ZERO, |since| end.since(since));
        let undecided = if capture_ended { Outcome::CaptureEnded } else { Outcome::Incomplete };
        // Records whose keys reached a live key log late are read now.
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.retry_keys();
            let plaintext = tls.take_plaintext();
            let end = self.ready_at.unwrap_or(start);
            self.on_decrypted(plaintext, end);
        }
        let login = self.tls.take().and_then(|tls| {
            let tls = tls.finish(capture_ended);
            let login = tls.login;
            self.summary.tls = Some(Box::new(tls));
            login
        });
        let outcome = match phase {
            Phase::Foreign => Outcome::NotPostgres,
            Phase::Cancel => Outcome::CancelRequest,
            Phase::Encrypted => match login {
                Some(LoginShape::RejectedAtStartup) => Outcome::TlsRejected,
                Some(LoginShape::FailedAfterAuthentication) => Outcome::TlsLoginFailed,
                _ => Outcome::Tls,
            },
            Phase::LoginFailed => {
                let error = self.summary.error.as_deref().cloned().unwrap_or_default();
                let (by_sqlstate, ambiguity) = classify_login_error(&error, self.login_error_stage);
                self.summary.ambiguity = ambiguity;
                match pooler::classify(&error, by_sqlstate) {
                    Some((answer, outcome)) => {
                        // What PostgreSQL's SQLSTATE leaves open is not a pooler's question.
                        self.summary.ambiguity = None;
                        self.summary.pooler = Some(answer);
                        outcome
                    }
                    None => {
                        if by_sqlstate == Outcome::ProtocolError && pooler::not_from_postgres(&error) {
                            self.summary.ambiguity = Some(NOT_FROM_POSTGRES);
                        }
                        by_sqlstate
                    }
                }
            }
            Phase::Ready if self.fatal_after_ready => {
                let error = self.summary.error.as_deref().cloned().unwrap_or_default();
                match pooler::classify(&error, Outcome::Terminated) {
                    Some((answer, outcome)) => {
                        self.summary.pooler = Some(answer);
                        // A pooler lets a client log in before it has a server
                        // connection for it: no query done means no working session.
                        if outcome.is_failure() && !self.query_completed {
                            outcome
                        } else {
                            Outcome::Terminated
                        }
                    }
                    None => Outcome::Terminated,
                }
            }
            Phase::Ready => Outcome::Success,
            _ if self.summary.framing_lost => Outcome::Gap,
            Phase::AwaitStartup if self.summary.encryption == Some(Encryption::SslRefused) && !capture_ended => {
                Outcome::SslRefused
            }
            Phase::AwaitStartup if !self.client_spoke && !capture_ended => Outcome::Probe,
            Phase::CredentialsAsked if closed_by_client => Outcome::AuthAbandoned,
            // PostgreSQL closes at authentication_timeout without a word:
            // its FATAL is not sent to a client that has not authenticated.
            Phase::CredentialsAsked if closed_by_server => Outcome::AuthTimeout,
            // No answer to the startup packet, or no verdict on the
            // credentials (a pooler waiting for a server, a hung
            // authentication server), until the client gave up.
            Phase::StartupSent | Phase::EncryptionRequested | Phase::CredentialsSent | Phase::AuthOk
                if closed_by_client || (capture_ended && waited >= SILENT_AT_CAPTURE_END) =>
            {
                Outcome::ServerSilent
            }
            _ => undecided,
        };
        // How far a login got explains only the outcomes of one that stopped short.
        let unfinished = matches!(
            outcome,
            Outcome::Incomplete | Outcome::CaptureEnded | Outcome::ServerSilent | Outcome::AuthTimeout
        );
        if unfinished {
            self.summary.stopped_at = Some(phase.to_string());
            self.summary.stopped_for_ms = Some(crate::time::millis(waited));
        }
        (outcome, self.summary)
    }
}

const DIRECT_TLS: &str = "TLS ClientHello";

const NOT_FROM_POSTGRES: &str =
    "the error lacks the source file, line and routine PostgreSQL sends with every error: a \
     pooler or proxy wrote it, in words pgreach does not know; its message says what happened";

/// Message types a client sends after the startup packet.
fn is_client_tag(tag: u8) -> bool {
    b"QPBEDCSHFfcdpX".contains(&tag)
}

/// Message types a server sends.
fn is_server_tag(tag: u8) -> bool {
    b"RSKZENvCDTtnsIcdGHWAV123".contains(&tag)
}

/// Why the client's first bytes cannot start a startup packet, if they cannot.
/// A startup packet's length is at most 10000, so its first byte is 0.
fn foreign_client_bytes(data: &[u8]) -> Option<&'static str> {
    match data {
        [] | [0, ..] => None,
        [0x16, 0x03, ..] => Some(DIRECT_TLS),
        _ if data.starts_with(b"GET ") || data.starts_with(b"POST ") || data.starts_with(b"HEAD ") => {
            Some("the client sent an HTTP request")
        }
        _ if data.starts_with(b"SSH-") => Some("the client sent an SSH banner"),
        _ => Some("the client's first bytes are not a PostgreSQL startup packet"),
    }
}

/// A short, printable description of a peer's first bytes.
fn describe_bytes(data: &[u8]) -> String {
    if data.starts_with(b"SSH-") {
        return "an SSH banner".to_owned();
    }
    if data.len() > 4 && data[3] == 0 && data.get(4) == Some(&10) {
        return "a MySQL server greeting".to_owned();
    }
    let shown: String = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("first bytes {shown}")
}
