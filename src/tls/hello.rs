//! The TLS handshake messages sent in the clear: the hellos (randoms,
//! version, cipher suite, server name, ALPN) and, before TLS 1.3 encrypts
//! it, the server's certificate. Parsed with rusticata's `tls-parser` and
//! `x509-parser`; nothing here panics or grows without bound.

use serde::Serialize;
use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_message_handshake, parse_tls_server_hello_extensions, TlsCipherSuite,
    TlsExtension, TlsMessage, TlsMessageHandshake, TlsVersion,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::outcome::Side;
use crate::time::Timestamp;

/// The longest handshake message kept for parsing: a certificate chain of a
/// few certificates fits many times over; longer messages are skipped.
const MAX_HANDSHAKE_MESSAGE: usize = 64 * 1024;
/// A ServerHello with this random is a HelloRetryRequest (RFC 8446, 4.1.3).
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91, 0xC2, 0xA2, 0x11,
    0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];
/// Longest server name or ALPN protocol kept.
const MAX_NAME: usize = 255;

/// The server's certificate as the handshake showed it (TLS 1.2 only: TLS 1.3 encrypts it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Certificate {
    /// The subject's distinguished name, e.g. `CN=db.example.com`.
    pub subject: String,
    pub not_after: Timestamp,
    /// Whether it had expired when the connection was made: clients that
    /// verify certificates refuse it.
    pub expired: bool,
}

/// What the clear-text handshake said.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HelloFacts {
    /// `1.2`, `1.3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The IANA name, e.g. `TLS_AES_256_GCM_SHA384`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<String>,
    /// The host name the client asked for (SNI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The protocol the server chose by ALPN (`postgresql` for direct TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// The server asked the client to try again with another key share.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hello_retry: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
    #[serde(skip)]
    pub client_random: Option<[u8; 32]>,
    #[serde(skip)]
    pub server_random: Option<[u8; 32]>,
    #[serde(skip)]
    pub cipher_id: Option<u16>,
}

impl HelloFacts {
    pub fn is_tls13(&self) -> bool {
        self.version.as_deref() == Some("1.3")
    }
}

/// Collects one direction's clear-text handshake bytes into messages.
#[derive(Debug, Default)]
pub struct HandshakeReader {
    pending: Vec<u8>,
    /// Bytes of an over-long message still to skip.
    skipping: usize,
}

impl HandshakeReader {
    /// Feeds the body of a clear-text handshake record; fills in `facts`.
    pub fn feed(&mut self, side: Side, mut body: &[u8], ts: Timestamp, facts: &mut HelloFacts) {
        let skip = self.skipping.min(body.len());
        self.skipping -= skip;
        body = &body[skip..];
        self.pending.extend_from_slice(body);
        while let Some(header) = self.pending.get(..4) {
            let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
            if len > MAX_HANDSHAKE_MESSAGE {
                self.skipping = (4 + len).saturating_sub(self.pending.len());
                self.pending.clear();
                break;
            }
            if self.pending.len() < 4 + len {
                break;
            }
            if let Ok((_, TlsMessage::Handshake(message))) = parse_tls_message_handshake(&self.pending[..4 + len]) {
                learn(side, &message, ts, facts);
            }
            self.pending.drain(..4 + len);
        }
        if self.pending.is_empty() {
            self.pending = Vec::new();
        }
    }
}

fn learn(side: Side, message: &TlsMessageHandshake<'_>, ts: Timestamp, facts: &mut HelloFacts) {
    match (side, message) {
        (Side::Client, TlsMessageHandshake::ClientHello(hello)) => {
            // A second ClientHello (after a HelloRetryRequest) keeps the random.
            facts.client_random = facts.client_random.or_else(|| hello.random.try_into().ok());
            let extensions = hello.ext.and_then(|e| parse_tls_client_hello_extensions(e).ok()).unwrap_or_default().1;
            for ext in extensions {
                if let TlsExtension::SNI(names) = ext {
                    facts.server_name = names.first().map(|(_, name)| text(name));
                }
            }
        }
        (Side::Server, TlsMessageHandshake::ServerHello(hello)) => {
            let retry = hello.random == HELLO_RETRY_RANDOM;
            facts.hello_retry |= retry;
            let mut version = hello.version;
            let extensions = hello.ext.and_then(|e| parse_tls_server_hello_extensions(e).ok()).unwrap_or_default().1;
            for ext in extensions {
                match ext {
                    TlsExtension::SupportedVersions(v) if v.len() == 1 => version = v[0],
                    TlsExtension::ALPN(protocols) => facts.alpn = protocols.first().map(|p| text(p)),
                    _ => {}
                }
            }
            facts.version = Some(version_name(version));
            facts.cipher_id = Some(hello.cipher.0);
            facts.cipher_suite = Some(
                TlsCipherSuite::from_id(hello.cipher.0)
                    .map_or_else(|| format!("0x{:04x}", hello.cipher.0), |c| c.name.to_owned()),
            );
            if !retry {
                facts.server_random = hello.random.try_into().ok();
            }
        }
        (Side::Server, TlsMessageHandshake::Certificate(chain)) => {
            let Some(first) = chain.cert_chain.first() else { return };
            if let Ok((_, cert)) = X509Certificate::from_der(first.data) {
                let not_after = cert.validity().not_after.timestamp();
                facts.certificate = Some(Certificate {
                    subject: cert.subject().to_string(),
                    not_after: Timestamp::from_secs_nanos(not_after, 0),
                    expired: ts.as_secs_f64() > not_after as f64,
                });
            }
        }
        _ => {}
    }
}

fn version_name(v: TlsVersion) -> String {
    match v {
        TlsVersion::Ssl30 => "SSL 3.0".to_owned(),
        TlsVersion::Tls10 => "1.0".to_owned(),
        TlsVersion::Tls11 => "1.1".to_owned(),
        TlsVersion::Tls12 => "1.2".to_owned(),
        TlsVersion::Tls13 => "1.3".to_owned(),
        other => format!("0x{:04x}", other.0),
    }
}

/// A name from the wire, bounded; bytes that are not UTF-8 are replaced
/// (renderers escape the rest).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_NAME)]).into_owned()
}
