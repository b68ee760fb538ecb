//! The outcome vocabulary: how an attempt ended (at the TCP level and all
//! told), who did what, and why the client stopped. A leaf: the PostgreSQL
//! layer decides outcomes and the attempt record carries them, so both import
//! these words and neither imports the other.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

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
    /// No SYN was sent: the client's DNS lookup of the server's name failed.
    NotAttempted,
}

/// How one connection attempt ended, all told: the TCP outcome when the
/// handshake failed, otherwise what PostgreSQL answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// AuthenticationOk, then ReadyForQuery.
    Success,
    /// The lookup of a database server's name failed (NXDOMAIN, SERVFAIL,
    /// REFUSED): the client never connected.
    DnsFailed,
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
    /// The handshake completed and the client sent its startup packet (or
    /// its credentials), but the server never answered it before the client
    /// gave up (or the capture ended long after): a hung or overloaded
    /// postmaster, a pooler waiting for a server connection.
    ServerSilent,
    /// The server asked for credentials, the client never answered, and the
    /// server closed the connection (authentication_timeout).
    AuthTimeout,
    /// The client closed when asked for a password and sent none: psql's
    /// normal prompt before it reconnects with one. Not a failure.
    AuthAbandoned,
    /// A CancelRequest connection.
    CancelRequest,
    /// TLS or GSS encryption: the outcome is hidden (or, for TLS, the
    /// session went on past the login: likely logged in).
    Tls,
    /// TLS: the server closed right after the client's first application
    /// record (the startup message), before any authentication round trip.
    TlsRejected,
    /// TLS: the server closed after one or more authentication round trips.
    TlsLoginFailed,
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
    pub const ALL: [Outcome; 29] = [
        Outcome::Success,
        Outcome::DnsFailed,
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
        Outcome::ServerSilent,
        Outcome::AuthTimeout,
        Outcome::Terminated,
        Outcome::AuthAbandoned,
        Outcome::CancelRequest,
        Outcome::Tls,
        Outcome::TlsRejected,
        Outcome::TlsLoginFailed,
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
            Outcome::DnsFailed => "dns_failed",
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
            Outcome::ServerSilent => "server_silent",
            Outcome::AuthTimeout => "auth_timeout",
            Outcome::Terminated => "terminated",
            Outcome::AuthAbandoned => "auth_abandoned",
            Outcome::CancelRequest => "cancel_request",
            Outcome::Tls => "tls",
            Outcome::TlsRejected => "tls_rejected",
            Outcome::TlsLoginFailed => "tls_login_failed",
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
            // The client could not even look the server up: no route to it, as far as it knows.
            Outcome::DnsFailed => Column::Unreachable,
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
            | Outcome::SslRefused
            | Outcome::ServerSilent
            | Outcome::AuthTimeout
            | Outcome::TlsRejected
            | Outcome::TlsLoginFailed => Column::LoginFailed,
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
            TcpOutcome::NotAttempted => Outcome::DnsFailed,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;

    /// An outcome's name as reports print it.
    fn from_str(s: &str) -> Result<Outcome, String> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
            format!("{s:?}: not an outcome (one of {})", names.join(", "))
        })
    }
}

/// Which end of the connection did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Client,
    Server,
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

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn every_outcome_parses_from_its_name() {
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>(), Ok(o));
        }
        assert!("broken".parse::<Outcome>().unwrap_err().contains("auth_failed"));
    }
}
