//! One PostgreSQL connection as seen from the wire: an explicit state machine
//! over both directions' messages, from the first startup packet to the end
//! of the session, and the outcome it adds up to.

use std::collections::BTreeMap;

use serde::Serialize;

use super::classify::{classify_login_error, LoginStage};
use super::framer::{Frame, FrameError, Framer, Mode, MAX_STARTUP_LEN};
use super::message::{self, AuthRequest, ErrorFields, StartupPacket, StartupParams};
use crate::outcome::{Outcome, Side};
use crate::stream::Chunk;
use crate::time::Timestamp;
use crate::tls::{KeyStore, LoginShape, TlsSummary, TlsTrack};

/// Distinct SQLSTATEs counted per session; more are counted under "other".
const MAX_ERROR_CODES: usize = 32;
/// Authentication methods kept per session (a SASL exchange asks several times).
const MAX_AUTH_STEPS: usize = 4;
/// NoticeResponses kept with their fields; further ones are only counted.
const MAX_NOTICES_KEPT: usize = 4;

/// Where the connection is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The client's (next) startup packet is expected.
    AwaitStartup,
    /// SSLRequest or GSSENCRequest sent; the server's one-byte answer is expected.
    EncryptionRequested,
    /// StartupMessage sent; authentication in progress.
    Authenticating,
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

/// How encryption was negotiated, if it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    /// SSLRequest answered `N`: the client may go on in cleartext.
    SslRefused,
    /// SSLRequest answered `S`: TLS follows.
    Ssl,
    /// An old server answered SSLRequest with an ErrorResponse.
    SslError,
    /// The client started with a TLS ClientHello (`sslnegotiation=direct`).
    DirectTls,
    GssRefused,
    Gss,
}

/// What the session showed, for the report. Never holds a password, a SASL
/// message, an MD5 hash or a GSS token: those are recognised, not read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PgSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// `3.0`, `3.2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(flatten)]
    pub startup: StartupParams,
    /// Authentication requests, in order (`md5`, `sasl (SCRAM-SHA-256)`, `ok`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auth: Vec<String>,
    /// Whether the client answered an authentication request.
    pub credentials_sent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_hot_standby: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_pid: Option<u32>,
    /// NegotiateProtocolVersion: the newest minor version the server supports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negotiated_minor: Option<u32>,
    /// Milliseconds from the first SYN to ReadyForQuery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_ms: Option<f64>,
    /// The error that ended the login, or the FATAL that ended the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Boxed: most sessions have none, and every tracked connection carries a summary.
    pub error: Option<Box<ErrorFields>>,
    /// What the protocol cannot tell apart for this outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ambiguity: Option<&'static str>,
    /// Errors during the session (after login), by SQLSTATE.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub session_errors: BTreeMap<String, u32>,
    pub notices: u32,
    /// The first NoticeResponses, every field (a warning at login, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first_notices: Vec<ErrorFields>,
    /// The client sent Terminate.
    pub terminate_sent: bool,
    pub client_messages: u64,
    pub server_messages: u64,
    /// Why this is not PostgreSQL, for `not_postgres`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_postgres: Option<String>,
    /// Message framing was lost where the capture lost bytes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub framing_lost: bool,
    /// Times framing was found again after such a gap (at a segment that
    /// starts with whole messages): later messages were still read.
    #[serde(skip_serializing_if = "is_zero")]
    pub framing_resyncs: u32,
    /// The TLS layer, for encrypted connections (boxed: most have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<TlsSummary>>,
}

#[derive(Debug)]
pub struct PgSession {
    phase: Phase,
    client: Framer,
    server: Framer,
    summary: PgSummary,
    login_error_stage: LoginStage,
    /// The server asked for credentials and the client has not answered yet.
    awaiting_credentials: bool,
    ready_at: Option<Timestamp>,
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
            awaiting_credentials: false,
            ready_at: None,
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
                self.phase = Phase::AwaitStartup;
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

    fn client_data(&mut self, mut data: &[u8], ts: Timestamp) {
        if !self.client_spoke && self.phase == Phase::AwaitStartup && !self.client.mid_message() {
            if let Some(reason) = foreign_client_bytes(data) {
                self.phase = Phase::Foreign;
                if reason == DIRECT_TLS {
                    self.phase = Phase::Encrypted;
                    self.summary.encryption = Some(Encryption::DirectTls);
                    let mut tls = Box::new(TlsTrack::new(ts, self.keys.clone()));
                    tls.on_data(Side::Client, data, ts);
                    self.tls = Some(tls);
                } else {
                    self.summary.not_postgres = Some(reason.to_owned());
                }
                return;
            }
        }
        self.client_spoke = true;
        let keep = |tag: u8| if tag == 0 { MAX_STARTUP_LEN as usize } else { 0 };
        while let Some(frame) = self.client.next_frame(&mut data, keep) {
            let Frame::Message { tag, body, .. } = frame else { continue };
            self.summary.client_messages += 1;
            match tag {
                0 => match message::startup_packet(body) {
                    // The answer decides; until then, assume the refusal.
                    StartupPacket::SslRequest => self.request_encryption(Encryption::SslRefused),
                    StartupPacket::GssEncRequest => self.request_encryption(Encryption::GssRefused),
                    StartupPacket::CancelRequest => self.phase = Phase::Cancel,
                    StartupPacket::Startup { major, minor, params } => {
                        self.summary.protocol = Some(format!("{major}.{minor}"));
                        self.summary.startup = params;
                        self.phase = Phase::Authenticating;
                        self.client.mode = Mode::Typed;
                    }
                    StartupPacket::Unknown { code } => {
                        self.phase = Phase::Foreign;
                        self.summary.not_postgres = Some(format!("unknown startup request code {code}"));
                    }
                },
                // PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse:
                // recognised by their type, never read.
                b'p' => {
                    self.summary.credentials_sent = true;
                    self.awaiting_credentials = false;
                }
                b'X' => self.summary.terminate_sent = true,
                _ => {}
            }
            if matches!(self.phase, Phase::Cancel | Phase::Foreign) {
                return;
            }
        }
        if let Some(FrameError::BadLength { tag: 0, len }) = self.client.error() {
            self.phase = Phase::Foreign;
            self.summary.not_postgres = Some(format!("the client's first packet has an impossible length ({len})"));
        }
    }

    fn request_encryption(&mut self, refused: Encryption) {
        self.summary.encryption = Some(refused);
        self.phase = Phase::EncryptionRequested;
        self.server.mode = Mode::SslAnswer;
    }

    fn server_data(&mut self, mut data: &[u8], ts: Timestamp) {
        if !self.client_spoke && self.phase == Phase::AwaitStartup {
            self.phase = Phase::Foreign;
            self.summary.not_postgres = Some(format!("the server spoke first ({})", describe_bytes(data)));
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
                            self.phase = Phase::Encrypted;
                            if !gss {
                                self.tls = Some(Box::new(TlsTrack::new(ts, self.keys.clone())));
                            }
                            return;
                        }
                        _ => self.phase = Phase::AwaitStartup,
                    }
                }
                Frame::Message { tag, body, .. } => {
                    let (tag, body) = (tag, body.to_vec());
                    self.server_message(tag, &body, ts);
                }
            }
        }
        if self.server.error().is_some() && self.summary.server_messages == 0 {
            self.phase = Phase::Foreign;
            self.summary.not_postgres = Some("the server's answer is not a PostgreSQL message".to_owned());
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
                    self.phase = Phase::AuthOk;
                    self.login_error_stage = LoginStage::AfterAuthenticationOk;
                } else {
                    self.login_error_stage = LoginStage::DuringAuthentication;
                    self.awaiting_credentials = request.wants_answer();
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
                if self.phase != Phase::Ready {
                    self.ready_at = Some(ts);
                }
                self.phase = Phase::Ready;
            }
            b'E' => {
                let fields = message::error_fields(body);
                if self.phase == Phase::EncryptionRequested {
                    self.summary.encryption = Some(Encryption::SslError);
                }
                if self.phase == Phase::Ready {
                    // After login only FATAL ends the session; a localized
                    // severity without V counts as an ordinary error.
                    if fields.is_fatal() == Some(true) {
                        self.fatal_after_ready = true;
                        self.summary.error = Some(Box::new(fields));
                    } else {
                        self.count_session_error(fields.code());
                    }
                } else {
                    // Any error before ReadyForQuery ends the login.
                    self.phase = Phase::LoginFailed;
                    self.summary.error = Some(Box::new(fields));
                }
            }
            b'N' => {
                self.summary.notices = self.summary.notices.saturating_add(1);
                if self.summary.first_notices.len() < MAX_NOTICES_KEPT {
                    self.summary.first_notices.push(message::error_fields(body));
                }
            }
            _ => {}
        }
    }

    fn count_session_error(&mut self, code: &str) {
        let errors = &mut self.summary.session_errors;
        let key = if errors.contains_key(code) || errors.len() < MAX_ERROR_CODES { code } else { "other" };
        *errors.entry(key.to_owned()).or_default() += 1;
    }

    /// The outcome and summary once the connection is over. `closed_by_client`
    /// says whether the client ended the TCP connection; `capture_ended` that
    /// the capture stopped before the connection did.
    pub fn finish(mut self, closed_by_client: bool, capture_ended: bool, start: Timestamp) -> (Outcome, PgSummary) {
        self.summary.login_ms = self.ready_at.map(|t| crate::time::millis(t.since(start)));
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
        let outcome = match self.phase {
            Phase::Foreign => Outcome::NotPostgres,
            Phase::Cancel => Outcome::CancelRequest,
            Phase::Encrypted => match login {
                Some(LoginShape::RejectedAtStartup) => Outcome::TlsRejected,
                Some(LoginShape::FailedAfterAuthentication) => Outcome::TlsLoginFailed,
                _ => Outcome::Tls,
            },
            Phase::LoginFailed => {
                let error = self.summary.error.as_deref().cloned().unwrap_or_default();
                let (outcome, ambiguity) = classify_login_error(&error, self.login_error_stage);
                self.summary.ambiguity = ambiguity;
                outcome
            }
            Phase::Ready if self.fatal_after_ready => Outcome::Terminated,
            Phase::Ready => Outcome::Success,
            _ if self.summary.framing_lost => Outcome::Gap,
            Phase::AwaitStartup if self.summary.encryption == Some(Encryption::SslRefused) && !capture_ended => {
                Outcome::SslRefused
            }
            Phase::AwaitStartup if !self.client_spoke && !capture_ended => Outcome::Probe,
            Phase::Authenticating if self.awaiting_credentials && closed_by_client => Outcome::AuthAbandoned,
            _ => undecided,
        };
        (outcome, self.summary)
    }
}

const DIRECT_TLS: &str = "TLS ClientHello";

fn is_zero(n: &u32) -> bool {
    *n == 0
}

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
