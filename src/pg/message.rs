//! Decoding the PostgreSQL messages pgreach reads from their frames. Every
//! read is bounds-checked; a body that ends early yields what it had.
//! Password, SASL and GSS payloads are never decoded or kept.

use serde::Serialize;

/// Startup-phase request codes (protocol chapter, "Message Formats").
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// Longest kept text of one error field or parameter value.
const MAX_TEXT: usize = 1024;
/// Most startup parameters whose names are kept beyond the known ones.
const MAX_OTHER_PARAMS: usize = 16;

/// The client's first packet(s), before the regular message flow.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    CancelRequest,
    Startup {
        major: u16,
        minor: u16,
        params: StartupParams,
    },
    /// A length-prefixed packet with a code PostgreSQL does not know.
    Unknown {
        code: u32,
    },
}

/// The startup parameters worth reporting. Values of other parameters are
/// not kept (`options` can carry anything), only their names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StartupParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other: Vec<String>,
}

pub fn startup_packet(body: &[u8]) -> StartupPacket {
    let mut r = Reader(body);
    let Some(code) = r.u32() else { return StartupPacket::Unknown { code: 0 } };
    match code {
        SSL_REQUEST => StartupPacket::SslRequest,
        GSSENC_REQUEST => StartupPacket::GssEncRequest,
        CANCEL_REQUEST => StartupPacket::CancelRequest,
        _ if code >> 16 == 3 => {
            let mut params = StartupParams::default();
            while let Some(name) = r.cstr() {
                if name.is_empty() {
                    break;
                }
                let value = r.cstr().unwrap_or_default();
                let slot = match name.as_str() {
                    "user" => &mut params.user,
                    "database" => &mut params.database,
                    "application_name" => &mut params.application_name,
                    "replication" => &mut params.replication,
                    _ => {
                        if params.other.len() < MAX_OTHER_PARAMS {
                            params.other.push(name);
                        }
                        continue;
                    }
                };
                *slot = Some(value);
            }
            StartupPacket::Startup { major: 3, minor: (code & 0xffff) as u16, params }
        }
        _ => StartupPacket::Unknown { code },
    }
}

/// An authentication request from the server ('R').
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    Ok,
    KerberosV5,
    Cleartext,
    Md5,
    Gss,
    GssContinue,
    Sspi,
    Sasl { mechanisms: Vec<String> },
    SaslContinue,
    SaslFinal,
    Unknown(u32),
}

impl AuthRequest {
    /// The method's name as reports show it.
    pub fn method(&self) -> String {
        match self {
            AuthRequest::Ok => "ok".into(),
            AuthRequest::KerberosV5 => "kerberos5".into(),
            AuthRequest::Cleartext => "password".into(),
            AuthRequest::Md5 => "md5".into(),
            AuthRequest::Gss | AuthRequest::GssContinue => "gss".into(),
            AuthRequest::Sspi => "sspi".into(),
            AuthRequest::Sasl { mechanisms } => format!("sasl ({})", mechanisms.join(", ")),
            AuthRequest::SaslContinue | AuthRequest::SaslFinal => "sasl".into(),
            AuthRequest::Unknown(code) => format!("unknown ({code})"),
        }
    }

    /// Whether the server asks the client for a secret (a password, a SASL
    /// exchange, a GSS token): an answer from the client is expected.
    pub fn wants_answer(&self) -> bool {
        !matches!(self, AuthRequest::Ok | AuthRequest::SaslFinal | AuthRequest::Unknown(_))
    }
}

pub fn auth_request(body: &[u8]) -> AuthRequest {
    let mut r = Reader(body);
    match r.u32() {
        Some(0) => AuthRequest::Ok,
        Some(2) => AuthRequest::KerberosV5,
        Some(3) => AuthRequest::Cleartext,
        Some(5) => AuthRequest::Md5,
        Some(7) => AuthRequest::Gss,
        Some(8) => AuthRequest::GssContinue,
        Some(9) => AuthRequest::Sspi,
        Some(10) => {
            let mut mechanisms = Vec::new();
            while let Some(m) = r.cstr() {
                if m.is_empty() || mechanisms.len() >= 8 {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl { mechanisms }
        }
        Some(11) => AuthRequest::SaslContinue,
        Some(12) => AuthRequest::SaslFinal,
        Some(code) => AuthRequest::Unknown(code),
        None => AuthRequest::Unknown(u32::MAX),
    }
}

/// ParameterStatus ('S'): a name and a value (which may be empty).
pub fn parameter_status(body: &[u8]) -> Option<(String, String)> {
    let mut r = Reader(body);
    let name = r.cstr()?;
    let value = r.cstr().unwrap_or_default();
    Some((name, value))
}

/// BackendKeyData ('K'): the backend's process id. The secret key is not read.
pub fn backend_pid(body: &[u8]) -> Option<u32> {
    Reader(body).u32()
}

/// NegotiateProtocolVersion ('v'): the newest minor version the server supports.
pub fn negotiated_minor(body: &[u8]) -> Option<u32> {
    Reader(body).u32()
}

/// The fields of an ErrorResponse or NoticeResponse, each as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorFields {
    /// S: severity, possibly localized.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// V: severity, never localized (PostgreSQL 9.6 and later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity_nonlocalized: Option<String>,
    /// C: SQLSTATE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_position: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_query: Option<String>,
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routine: Option<String>,
}

impl ErrorFields {
    /// The severity to act on: the non-localized one when the server sent it.
    pub fn severity(&self) -> Option<&str> {
        self.severity_nonlocalized.as_deref().or(self.severity.as_deref())
    }

    /// FATAL or PANIC: the server ends the session after it. Without V, a
    /// localized S is not trusted; the caller decides from the phase.
    pub fn is_fatal(&self) -> Option<bool> {
        match self.severity_nonlocalized.as_deref().or(self.severity.as_deref()) {
            Some("FATAL" | "PANIC") => Some(true),
            Some("ERROR" | "WARNING" | "NOTICE" | "DEBUG" | "INFO" | "LOG") => Some(false),
            _ => None,
        }
    }

    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }
}

/// Reads the fields of an ErrorResponse or NoticeResponse body. Unknown
/// field types are skipped, as the protocol requires of clients.
pub fn error_fields(body: &[u8]) -> ErrorFields {
    let mut f = ErrorFields::default();
    let mut r = Reader(body);
    while let Some(kind) = r.u8() {
        if kind == 0 {
            break;
        }
        let Some(value) = r.cstr() else { break };
        let slot = match kind {
            b'S' => &mut f.severity,
            b'V' => &mut f.severity_nonlocalized,
            b'C' => &mut f.code,
            b'M' => &mut f.message,
            b'D' => &mut f.detail,
            b'H' => &mut f.hint,
            b'P' => &mut f.position,
            b'p' => &mut f.internal_position,
            b'q' => &mut f.internal_query,
            b'W' => &mut f.context,
            b's' => &mut f.schema,
            b't' => &mut f.table,
            b'c' => &mut f.column,
            b'd' => &mut f.data_type,
            b'n' => &mut f.constraint,
            b'F' => &mut f.file,
            b'L' => &mut f.line,
            b'R' => &mut f.routine,
            _ => continue,
        };
        *slot = Some(value);
    }
    f
}

/// Whether a NUL-separated field of this body is longer than the text kept
/// of it (each field's type byte or name aside).
pub fn has_long_text(body: &[u8]) -> bool {
    body.split(|&b| b == 0).any(|field| field.len() > MAX_TEXT + 1)
}

/// A cursor over a message body; every read checks the bounds.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        let bytes = self.0.get(..4)?;
        self.0 = &self.0[4..];
        Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A NUL-terminated string (lossy UTF-8, at most MAX_TEXT bytes kept);
    /// `None` if there is no terminator.
    fn cstr(&mut self) -> Option<String> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let text = &self.0[..end.min(MAX_TEXT)];
        let s = String::from_utf8_lossy(text).into_owned();
        self.0 = &self.0[end + 1..];
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_parameters_in_any_order() {
        let mut body = 196608u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"database\0shop\0options\0-c geqo=off\0user\0app\0application_name\0\0\0");
        match startup_packet(&body) {
            StartupPacket::Startup { major: 3, minor: 0, params } => {
                assert_eq!(params.user.as_deref(), Some("app"));
                assert_eq!(params.database.as_deref(), Some("shop"));
                assert_eq!(params.application_name.as_deref(), Some(""));
                assert_eq!(params.other, ["options"], "names only, never values");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_3_2_and_special_requests() {
        assert!(matches!(startup_packet(&196610u32.to_be_bytes()), StartupPacket::Startup { minor: 2, .. }));
        assert_eq!(startup_packet(&80877103u32.to_be_bytes()), StartupPacket::SslRequest);
        assert_eq!(startup_packet(&80877104u32.to_be_bytes()), StartupPacket::GssEncRequest);
        assert_eq!(startup_packet(&[1, 2]), StartupPacket::Unknown { code: 0 });
    }

    #[test]
    fn auth_requests() {
        assert_eq!(auth_request(&[0, 0, 0, 0]), AuthRequest::Ok);
        assert_eq!(auth_request(&[0, 0, 0, 5, 1, 2, 3, 4]), AuthRequest::Md5);
        let mut sasl = 10u32.to_be_bytes().to_vec();
        sasl.extend_from_slice(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        assert_eq!(auth_request(&sasl).method(), "sasl (SCRAM-SHA-256-PLUS, SCRAM-SHA-256)");
        assert_eq!(auth_request(&[0, 0]), AuthRequest::Unknown(u32::MAX));
    }

    #[test]
    fn parameter_status_with_an_empty_value() {
        assert_eq!(parameter_status(b"application_name\0\0"), Some(("application_name".into(), String::new())));
        assert_eq!(parameter_status(b"server_version\x0015.4\0"), Some(("server_version".into(), "15.4".into())));
        assert_eq!(parameter_status(b"truncated"), None);
    }

    #[test]
    fn every_error_field() {
        let body = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"app\"\0Ddetail\0Hhint\0P12\0p3\0qiq\0Wctx\0sschema\0ttable\0ccolumn\0dtype\0nconstraint\0Fauth.c\0L326\0Rauth_failed\0Zunknown\0\0";
        let f = error_fields(body);
        assert_eq!(f.severity(), Some("FATAL"));
        assert_eq!(f.code(), "28P01");
        assert_eq!(f.message.as_deref(), Some("password authentication failed for user \"app\""));
        assert_eq!(
            (f.detail.as_deref(), f.hint.as_deref(), f.position.as_deref(), f.context.as_deref()),
            (Some("detail"), Some("hint"), Some("12"), Some("ctx"))
        );
        assert_eq!(
            (f.schema.as_deref(), f.table.as_deref(), f.column.as_deref()),
            (Some("schema"), Some("table"), Some("column"))
        );
        assert_eq!(
            (f.constraint.as_deref(), f.file.as_deref(), f.line.as_deref()),
            (Some("constraint"), Some("auth.c"), Some("326"))
        );
        assert_eq!(f.routine.as_deref(), Some("auth_failed"));
        assert_eq!(f.is_fatal(), Some(true));
    }

    #[test]
    fn localized_severity_without_v_is_not_trusted() {
        let f = error_fields("SВАЖНО\0C28P01\0\0".as_bytes());
        assert_eq!(f.is_fatal(), None);
        let f = error_fields("SВАЖНО\0VFATAL\0C28P01\0\0".as_bytes());
        assert_eq!(f.is_fatal(), Some(true));
    }

    #[test]
    fn truncated_bodies_never_panic() {
        let body = b"SFATAL\0C28P01\0Mmessage\0\0";
        for len in 0..body.len() {
            let _ = error_fields(&body[..len]);
            let _ = startup_packet(&body[..len]);
            let _ = auth_request(&body[..len]);
            let _ = parameter_status(&body[..len]);
        }
    }
}
