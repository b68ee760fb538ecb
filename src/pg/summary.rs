//! What the PostgreSQL layer says about one connection once it is over: how
//! encryption was negotiated, the startup parameters, authentication, the
//! server's error and notices, and how far a login got. Every report reads
//! it; the session state machine ([`super::session`]) fills it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::message::{ErrorFields, StartupParams};
use super::pooler::PoolerAnswer;
use crate::tls::TlsSummary;

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
    /// The pooler whose own error ended the connection, and its setting to look at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooler: Option<PoolerAnswer>,
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
    /// How far an unfinished login got (`startup message sent, no answer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// Milliseconds it stayed there until the connection (or the capture) ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_for_ms: Option<f64>,
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
    /// Messages a limit cut short or left out: bodies read only in part,
    /// texts over 1 KiB, NoticeResponses past those kept, SQLSTATEs past 32.
    #[serde(skip_serializing_if = "is_zero")]
    pub limits_cut: u32,
    /// The TLS layer, for encrypted connections (boxed: most have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<TlsSummary>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
