//! What the engine says about one connection attempt once it has ended:
//! its outcome and the evidence for it. These are the stable output types
//! that every report format reads; their serde names are documented in the README.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::decode::Unreachable;
use crate::pg::PgSummary;
use crate::time::Timestamp;

/// How one connection attempt ended, at the TCP level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpOutcome {
    /// The three-way handshake completed.
    Established,
    /// The SYN was answered by RST, or by ICMP port unreachable.
    Refused,
    /// ICMP net/host unreachable or administratively prohibited.
    Unreachable,
    /// The SYN was never answered.
    Timeout,
    /// SYN-ACK seen, never the client's final ACK.
    HandshakeIncomplete,
    /// The capture began after the handshake.
    Midstream,
    /// The capture ended too soon after the SYN to tell whether it was answered.
    CaptureEnded,
}

/// How one connection attempt ended, all told: the TCP outcome when the
/// handshake failed, otherwise what PostgreSQL answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// AuthenticationOk, then ReadyForQuery.
    Success,
    Refused,
    Unreachable,
    Timeout,
    HandshakeIncomplete,
    /// 28P01, or 28000 after credentials were asked for.
    AuthFailed,
    /// 28000 before any authentication request: pg_hba.conf.
    HbaRejected,
    /// 28000 after AuthenticationOk: the role is missing or may not log in.
    RoleMissing,
    /// 3D000.
    DatabaseMissing,
    /// 53300.
    TooManyClients,
    /// 57P03 (starting up, shutting down, recovery), 57P01/57P02 during login.
    ServerUnavailable,
    /// 08xxx, 0A000: the two ends disagree on the protocol.
    ProtocolError,
    /// Another error during login; its SQLSTATE is in the evidence.
    OtherError,
    /// The client required TLS and the server answered `N`.
    SslRefused,
    /// A FATAL after a successful login (57P01, 57P05, 25P03, 57P02…).
    Terminated,
    /// The client closed when asked for a password and sent none: psql's
    /// normal prompt before it reconnects with one. Not a failure.
    AuthAbandoned,
    /// A CancelRequest connection.
    CancelRequest,
    /// TLS or GSS encryption: the outcome is hidden.
    Tls,
    /// The traffic on the port is not PostgreSQL.
    NotPostgres,
    /// The capture lost bytes before the outcome could be read.
    Gap,
    /// The client connected and closed without a word (a port check).
    Probe,
    /// The connection closed during the login with no error message.
    Incomplete,
    Midstream,
    CaptureEnded,
}

impl Outcome {
    pub const ALL: [Outcome; 24] = [
        Outcome::Success,
        Outcome::Refused,
        Outcome::Unreachable,
        Outcome::Timeout,
        Outcome::HandshakeIncomplete,
        Outcome::AuthFailed,
        Outcome::HbaRejected,
        Outcome::RoleMissing,
        Outcome::DatabaseMissing,
        Outcome::TooManyClients,
        Outcome::ServerUnavailable,
        Outcome::ProtocolError,
        Outcome::OtherError,
        Outcome::SslRefused,
        Outcome::Terminated,
        Outcome::AuthAbandoned,
        Outcome::CancelRequest,
        Outcome::Tls,
        Outcome::NotPostgres,
        Outcome::Gap,
        Outcome::Probe,
        Outcome::Incomplete,
        Outcome::Midstream,
        Outcome::CaptureEnded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Refused => "refused",
            Outcome::Unreachable => "unreachable",
            Outcome::Timeout => "timeout",
            Outcome::HandshakeIncomplete => "handshake_incomplete",
            Outcome::AuthFailed => "auth_failed",
            Outcome::HbaRejected => "hba_rejected",
            Outcome::RoleMissing => "role_missing",
            Outcome::DatabaseMissing => "database_missing",
            Outcome::TooManyClients => "too_many_clients",
            Outcome::ServerUnavailable => "server_unavailable",
            Outcome::ProtocolError => "protocol_error",
            Outcome::OtherError => "other_error",
            Outcome::SslRefused => "ssl_refused",
            Outcome::Terminated => "terminated",
            Outcome::AuthAbandoned => "auth_abandoned",
            Outcome::CancelRequest => "cancel_request",
            Outcome::Tls => "tls",
            Outcome::NotPostgres => "not_postgres",
            Outcome::Gap => "gap",
            Outcome::Probe => "probe",
            Outcome::Incomplete => "incomplete",
            Outcome::Midstream => "midstream",
            Outcome::CaptureEnded => "capture_ended",
        }
    }

    /// The report column an outcome is counted in.
    pub fn column(self) -> Column {
        match self {
            Outcome::Success | Outcome::Terminated => Column::LoggedIn,
            Outcome::Refused => Column::Refused,
            Outcome::Unreachable => Column::Unreachable,
            Outcome::Timeout => Column::Timeout,
            Outcome::AuthFailed
            | Outcome::HbaRejected
            | Outcome::RoleMissing
            | Outcome::DatabaseMissing
            | Outcome::TooManyClients
            | Outcome::ServerUnavailable
            | Outcome::ProtocolError
            | Outcome::OtherError
            | Outcome::SslRefused => Column::LoginFailed,
            _ => Column::Other,
        }
    }

    /// Whether the client failed to connect or log in.
    pub fn is_failure(self) -> bool {
        matches!(self.column(), Column::Refused | Column::Unreachable | Column::Timeout | Column::LoginFailed)
            || self == Outcome::HandshakeIncomplete
    }
}

/// The per-client table's outcome columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    LoggedIn,
    Refused,
    Unreachable,
    Timeout,
    LoginFailed,
    Other,
}

impl From<TcpOutcome> for Outcome {
    fn from(t: TcpOutcome) -> Outcome {
        match t {
            // An established connection's outcome is PostgreSQL's; without
            // it, nothing was decided before the capture ended.
            TcpOutcome::Established | TcpOutcome::CaptureEnded => Outcome::CaptureEnded,
            TcpOutcome::Refused => Outcome::Refused,
            TcpOutcome::Unreachable => Outcome::Unreachable,
            TcpOutcome::Timeout => Outcome::Timeout,
            TcpOutcome::HandshakeIncomplete => Outcome::HandshakeIncomplete,
            TcpOutcome::Midstream => Outcome::Midstream,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which end of the connection did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Client,
    Server,
}

/// Who answered a SYN with a refusal or an error, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// `rst` or `icmp`.
    pub kind: AnswerKind,
    /// The address the answer came from: the server, or a firewall or router.
    pub from: IpAddr,
    /// IPv4 TTL / IPv6 hop limit of the answer as captured.
    pub ttl: u8,
    /// ICMP type and code, for ICMP answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// What the ICMP message says: `port`, `net`, `host`, `admin_prohibited`, `other`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<UnreachableKind>,
    /// Milliseconds from the first SYN to the answer.
    pub after_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    Rst,
    Icmp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnreachableKind {
    Port,
    Net,
    Host,
    AdminProhibited,
    Other,
}

impl From<Unreachable> for UnreachableKind {
    fn from(u: Unreachable) -> Self {
        match u {
            Unreachable::Port => UnreachableKind::Port,
            Unreachable::Net => UnreachableKind::Net,
            Unreachable::Host => UnreachableKind::Host,
            Unreachable::AdminProhibited => UnreachableKind::AdminProhibited,
            Unreachable::Other => UnreachableKind::Other,
        }
    }
}

/// The client's SYNs of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynEvidence {
    /// SYNs sent, the first included.
    pub count: u32,
    /// Milliseconds from the first SYN to each SYN (the first is 0); at most
    /// the first 16 are kept.
    pub at_ms: Vec<f64>,
}

/// Why a SYN-only attempt was judged over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GaveUp {
    /// The client stopped retransmitting (silence for longer than its backoff).
    StoppedRetransmitting,
    /// The client sent RST.
    ClientReset,
    /// The client started a new attempt (a new SYN sequence) from the same port.
    NewAttempt,
    /// The capture ended while the client was still retransmitting.
    StillWaitingAtCaptureEnd,
}

/// How an established connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    FinClient,
    FinServer,
    RstClient,
    RstServer,
    /// Still open when the capture ended.
    Open,
}

impl SessionEnd {
    pub fn by(side: Side, rst: bool) -> SessionEnd {
        match (side, rst) {
            (Side::Client, false) => SessionEnd::FinClient,
            (Side::Server, false) => SessionEnd::FinServer,
            (Side::Client, true) => SessionEnd::RstClient,
            (Side::Server, true) => SessionEnd::RstServer,
        }
    }
}

/// Packets and payload bytes each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Traffic {
    pub client_packets: u64,
    pub server_packets: u64,
    pub client_bytes: u64,
    pub server_bytes: u64,
}

/// Facts worth knowing that do not change the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Note {
    /// The SYN-ACK was not captured; the client's ACK shows the handshake completed.
    HandshakeInferred,
    /// A RST whose acknowledgment number did not match the SYN (the client ignores such a RST).
    IgnoredRstBadAck,
    /// A SYN-ACK that did not acknowledge this SYN.
    IgnoredSynAckBadAck,
    /// The client kept retransmitting after an ICMP error (some stacks ignore them).
    RetransmittedAfterIcmp,
    /// The flow table was full; this attempt was ended early to make room.
    Evicted,
    /// A new SYN reused the ports while this connection still looked open.
    Superseded,
    /// The SYN-ACK was retransmitted (the client's ACK was lost or late).
    SynAckRetransmitted,
    /// A live capture dropped packets while this attempt was in progress: a
    /// lost packet could have changed its outcome.
    CaptureDropsDuring,
}

/// One connection attempt and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// Order in which the engine first saw the attempt.
    pub id: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The outcome, all told.
    pub outcome: Outcome,
    /// The outcome at the TCP level.
    pub tcp_outcome: TcpOutcome,
    /// The first and last packet of the attempt.
    pub start: Timestamp,
    pub end: Timestamp,
    /// The client's SYNs; absent for midstream connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn: Option<SynEvidence>,
    /// Milliseconds from the first SYN to the first SYN-ACK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_ms: Option<f64>,
    /// TTL / hop limit of the client's first SYN: how far the capture point is from the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ttl: Option<u8>,
    /// TTL / hop limit of the server's SYN-ACK, to compare with a refusal's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_ttl: Option<u8>,
    /// The refusal or ICMP error that answered the SYN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// For timeouts: why the attempt is over, and how long the client waited
    /// (first SYN to the last SYN or RST, or to the capture's end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gave_up: Option<GaveUp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<f64>,
    /// For established and midstream connections: how they ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_end: Option<SessionEnd>,
    pub traffic: Traffic,
    /// What PostgreSQL said, for established connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg: Option<PgSummary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
}
