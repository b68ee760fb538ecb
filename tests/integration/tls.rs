//! TLS inside PostgreSQL connections, driven with built conversations:
//! without keys, the records' shape after the handshake decides whether
//! the server refused at the door, failed the login, or let it in.

use std::time::Duration;

use pgreach::analysis::diagnosis::{diagnose, CaptureFacts};
use pgreach::analysis::summary::Summary;
use pgreach::decode::LinkType;
use pgreach::engine::{Analyzer, Config};
use pgreach::outcome::Outcome;
use pgreach::record::AttemptRecord;
use pgreach::tls::LoginShape;

use crate::util::*;

const CISN: u32 = 17_000;
const SISN: u32 = 29_000;

/// A TCP connection whose sides send whole byte strings, 10 ms apart.
struct Conv {
    engine: Analyzer,
    client: &'static str,
    t: f64,
    seq: [u32; 2],
}

impl Conv {
    /// Connected from `client`, starting `t` seconds into the capture.
    fn connected(client: &'static str, t: f64) -> Conv {
        let mut c = Conv { engine: Analyzer::new(Config::default()), client, t, seq: [CISN + 1, SISN + 1] };
        c.seg(true, syn(CISN));
        c.seg(false, syn_ack(SISN, CISN + 1));
        c.seg(true, ack(CISN + 1, SISN + 1));
        c
    }

    /// Connected, SSLRequest sent and answered `S`.
    fn tls() -> Conv {
        let mut c = Conv::connected(CLIENT, 0.0);
        c.send(true, &[0, 0, 0, 8, 4, 210, 22, 47]);
        c.send(false, b"S");
        c
    }

    fn seg(&mut self, from_client: bool, seg: Seg) {
        self.t += 0.01;
        let (src, dst) = if from_client { (self.client, SERVER) } else { (SERVER, self.client) };
        self.engine.handle_packet(at(self.t), LinkType::Ethernet, &tcp_frame(src, dst, seg)).expect("decodes");
    }

    fn send(&mut self, from_client: bool, bytes: &[u8]) -> &mut Conv {
        let payload: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
        let (me, them) = if from_client { (0, 1) } else { (1, 0) };
        let s = data(self.seq[me], self.seq[them], payload);
        self.seq[me] += bytes.len() as u32;
        self.seg(from_client, s);
        self
    }

    /// TLS records of one type from one side, with bodies of these lengths.
    fn records(&mut self, from_client: bool, content_type: u8, lens: &[usize]) -> &mut Conv {
        let mut bytes = Vec::new();
        for &len in lens {
            bytes.extend_from_slice(&[content_type, 3, 3]);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
            bytes.extend(std::iter::repeat_n(0xa5, len));
        }
        self.send(from_client, &bytes)
    }

    /// A TLS 1.2-style handshake whose hellos are opaque: CCS and Finished each way.
    fn handshake(&mut self) -> &mut Conv {
        self.records(true, 22, &[200]).records(false, 22, &[90, 800, 4]);
        self.records(true, 22, &[70]).records(true, 20, &[1]).records(true, 22, &[40]);
        self.records(false, 20, &[1]).records(false, 22, &[40])
    }

    fn close(&mut self, by_client: bool) -> AttemptRecord {
        let (me, them) = if by_client { (0, 1) } else { (1, 0) };
        let (a, b) = (self.seq[me], self.seq[them]);
        self.seg(by_client, fin(a, b));
        self.seg(!by_client, fin(b, a + 1));
        self.seg(by_client, ack(a + 1, b + 1));
        self.engine.finish();
        let all: Vec<AttemptRecord> = std::iter::from_fn(|| self.engine.poll_finished()).collect();
        assert_eq!(all.len(), 1, "{all:#?}");
        all.into_iter().next().expect("one attempt")
    }
}

fn shape(a: &AttemptRecord) -> Option<LoginShape> {
    a.pg.as_ref()?.tls.as_ref()?.login
}

#[test]
fn ending_on_the_answer_to_the_startup_message_is_tls_rejected() {
    let a = Conv::tls().handshake().records(true, 23, &[110]).records(false, 23, &[150]).close(false);
    assert_eq!(a.outcome, Outcome::TlsRejected);
    assert_eq!(shape(&a), Some(LoginShape::RejectedAtStartup));
    assert!(a.outcome.is_failure());
}

#[test]
fn ending_on_an_answer_after_authentication_is_tls_login_failed() {
    let a = Conv::tls()
        .handshake()
        .records(true, 23, &[110])
        .records(false, 23, &[60])
        .records(true, 23, &[80])
        .records(false, 23, &[120])
        .records(true, 23, &[130])
        .records(false, 23, &[140])
        .records(false, 21, &[26])
        .close(false);
    assert_eq!(a.outcome, Outcome::TlsLoginFailed);
    let tls = a.pg.as_ref().and_then(|pg| pg.tls.as_ref()).expect("tls summary");
    assert_eq!((tls.flights.client_flights, tls.flights.server_flights), (3, 3));
    // Each built segment is 10 ms after the one before.
    assert!((tls.flights.last_answer_ms().expect("an answer") - 10.0).abs() < 1e-6);
    assert_eq!(tls.server_alerts, 1);
    assert!(tls.handshake_done);
}

#[test]
fn a_session_that_carried_on_stays_tls_and_likely_logged_in() {
    let a = Conv::tls()
        .handshake()
        .records(true, 23, &[110])
        .records(false, 23, &[460])
        .records(true, 23, &[40])
        .records(false, 23, &[90])
        .records(true, 23, &[29])
        .close(true);
    assert_eq!(a.outcome, Outcome::Tls);
    assert_eq!(shape(&a), Some(LoginShape::LikelyLoggedIn));
}

#[test]
fn the_client_leaving_when_asked_for_a_password_is_not_a_failure() {
    let a = Conv::tls().handshake().records(true, 23, &[110]).records(false, 23, &[60]).close(true);
    assert_eq!(a.outcome, Outcome::Tls);
    assert_eq!(shape(&a), Some(LoginShape::ClosedWhenAsked));
}

#[test]
fn a_handshake_the_server_ends_is_not_read_as_a_login() {
    let a = Conv::tls().records(true, 22, &[200]).records(false, 21, &[2]).close(false);
    assert_eq!(a.outcome, Outcome::Tls);
    let tls = a.pg.as_ref().and_then(|pg| pg.tls.as_ref()).expect("tls summary");
    assert_eq!(tls.login, Some(LoginShape::NoApplicationData));
    assert!(!tls.handshake_done);
}

#[test]
fn bytes_that_are_not_tls_stop_the_record_reader_without_a_verdict() {
    let a = Conv::tls().send(true, b"GET / HTTP/1.1\r\n\r\n").close(false);
    assert_eq!(a.outcome, Outcome::Tls);
    let tls = a.pg.as_ref().and_then(|pg| pg.tls.as_ref()).expect("tls summary");
    assert!(tls.records_lost.as_deref().is_some_and(|w| w.contains("client")), "{tls:?}");
}

/// psql with sslmode=prefer and a wrong password against a hostssl-only
/// pg_hba.conf: the TLS login fails, libpq retries in the clear at once and
/// is refused for having no encryption. The diagnosis names the first as
/// the cause.
#[test]
fn a_prefer_retry_is_named_as_the_consequence_of_the_tls_failure() {
    let failed = Conv::tls()
        .handshake()
        .records(true, 23, &[110])
        .records(false, 23, &[60])
        .records(true, 23, &[80])
        .records(false, 23, &[120])
        .records(true, 23, &[130])
        .records(false, 23, &[140])
        .close(false);
    let retry_port = "192.0.2.50:40123";
    assert_ne!(addr(retry_port), failed.client, "the retry comes from a new port");
    let mut clear = Conv::connected(retry_port, failed.end.since(at(0.0)).as_secs_f64() + 0.001);
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0app\0database\0app\0\0");
    startup[3] = startup.len() as u8;
    clear.send(true, &startup);
    let message = b"SFATAL\0VFATAL\0C28000\0Mno pg_hba.conf entry for host, no encryption\0\0";
    let mut error = vec![b'E', 0, 0, 0, (message.len() + 4) as u8];
    error.extend_from_slice(message);
    clear.send(false, &error);
    let retry = clear.close(false);
    assert_eq!((failed.outcome, retry.outcome), (Outcome::TlsLoginFailed, Outcome::HbaRejected));

    let mut summary = Summary::new(100, 100, None);
    summary.add(failed);
    summary.add(retry);
    let d = diagnose(&summary, Duration::from_secs(3), &CaptureFacts::default());
    let order: Vec<Outcome> = d.findings.iter().map(|f| f.outcome).collect();
    assert_eq!(order, [Outcome::TlsLoginFailed, Outcome::HbaRejected], "the cause ranks first");
    let says = |f: usize, what: &str| d.findings[f].evidence.iter().any(|e| e.text.contains(what));
    assert!(says(0, "sslmode=prefer retry) and got hba_rejected"), "{:#?}", d.findings[0].evidence);
    assert!(says(1, "right after a TLS attempt that ended tls_login_failed"), "{:#?}", d.findings[1].evidence);
}

/// A clear-text attempt long after a failed TLS one is not its retry.
#[test]
fn a_later_clear_text_attempt_is_not_a_retry() {
    let failed = Conv::tls().handshake().records(true, 23, &[110]).records(false, 23, &[150]).close(false);
    let mut clear = Conv::connected("192.0.2.50:40124", 30.0);
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0app\0\0");
    startup[3] = startup.len() as u8;
    clear.send(true, &startup);
    let later = clear.close(true);
    let mut summary = Summary::new(100, 100, None);
    summary.add(failed);
    summary.add(later);
    assert!(summary.prefer_retries.pairs.is_empty());
}

/// The key log's secrets and the password a client sent appear in no
/// output format, decrypted or not; the report says the session was decrypted.
#[test]
fn secrets_and_passwords_never_appear_in_any_output() {
    for name in ["tls_keylog_wrong_password", "tls12_keylog_wrong_password"] {
        let keylog = format!("captures/{name}.keylog");
        let text = std::fs::read_to_string(project_root().join(&keylog)).expect("key log");
        let secrets: Vec<&str> =
            text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_whitespace().nth(2)).collect();
        assert!(!secrets.is_empty(), "{name}: the key log has secrets");
        let pcap = format!("captures/{name}.pcap");
        for format in crate::formats::FORMATS {
            let args = ["analyze", "--connections", "--format", format, "--keylog", &keylog, &pcap];
            let out = pgreach(&args);
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
            let shown = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).to_lowercase();
            assert!(shown.contains("28p01"), "{args:?}: the decrypted error is reported");
            assert!(!shown.contains("not-the-md5-pass"), "{args:?} shows the password");
            for secret in &secrets {
                assert!(!shown.contains(&secret.to_lowercase()), "{args:?} shows a secret");
                assert!(!shown.contains(&secret[..16].to_lowercase()), "{args:?} shows part of a secret");
            }
        }
    }
}

/// A key log that cannot be read is one clear error line, not a panic.
#[test]
fn an_unreadable_key_log_is_one_error_line() {
    let out = pgreach(&["analyze", "--keylog", "/nonexistent/keys.log", "captures/tls_login.pcap"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/keys.log"), "{err}");
}

/// A key log without the capture's sessions decrypts nothing and says so.
#[test]
fn a_key_log_without_the_session_says_no_key() {
    let (doc, out) = analyze_json(&["--keylog", "captures/tls_keylog_login.keylog", "captures/tls_login.pcap"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for a in doc["attempts"].as_array().expect("attempts") {
        assert_eq!(a["outcome"], "tls");
        assert_eq!(a["pg"]["tls"]["decryption"], "no_key");
    }
}

/// A handshake message: type, 24-bit length, body.
fn handshake_message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, (body.len() >> 8) as u8, body.len() as u8];
    m.extend_from_slice(body);
    m
}

/// PostgreSQL 17's direct TLS (`sslnegotiation=direct`): the client's first
/// bytes are a ClientHello offering ALPN `postgresql`, with no SSLRequest.
/// It is followed the same way; a server answering the startup message with
/// an error and closing is `tls_rejected`.
#[test]
fn direct_tls_is_followed_like_tls_after_sslrequest() {
    let alpn = b"\x00\x10\x00\x0d\x00\x0b\x0apostgresql";
    let mut hello = vec![3, 3];
    hello.extend([7; 32]);
    hello.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
    hello.extend((alpn.len() as u16).to_be_bytes());
    hello.extend_from_slice(alpn);
    let versions = b"\x00\x2b\x00\x02\x03\x04";
    let mut server_hello = vec![3, 3];
    server_hello.extend([9; 32]);
    server_hello.extend([0, 0x13, 0x01, 0]);
    server_hello.extend((versions.len() as u16).to_be_bytes());
    server_hello.extend_from_slice(versions);

    let mut c = Conv::connected(CLIENT, 0.0);
    let mut first = vec![22, 3, 1];
    let message = handshake_message(1, &hello);
    first.extend((message.len() as u16).to_be_bytes());
    first.extend(message);
    c.send(true, &first);
    let message = handshake_message(2, &server_hello);
    let mut answer = vec![22, 3, 3];
    answer.extend((message.len() as u16).to_be_bytes());
    answer.extend(message);
    c.send(false, &answer);
    // The encrypted handshake, the client's Finished, then the login.
    c.records(false, 23, &[800, 300, 53]).records(true, 23, &[53]);
    let a = c.records(true, 23, &[110]).records(false, 23, &[140]).close(false);
    let pg = a.pg.as_ref().expect("pg");
    assert_eq!(pg.encryption, Some(pgreach::pg::Encryption::DirectTls));
    let tls = pg.tls.as_ref().expect("tls summary");
    assert_eq!(tls.hello.version.as_deref(), Some("1.3"));
    assert_eq!(tls.hello.cipher_suite.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
    assert_eq!((tls.flights.client_flights, tls.flights.server_flights), (1, 1), "{:?}", tls.flights);
    assert_eq!(a.outcome, Outcome::TlsRejected);
}

/// --redact hides the host names the TLS handshake shows (the certificate's subject).
#[test]
fn redact_hides_the_certificate_subject() {
    let (doc, _) = analyze_json(&["captures/tls12_wrong_password.pcap"]);
    assert_eq!(doc["attempts"][0]["pg"]["tls"]["certificate"]["subject"], "CN=pgreach-lab");
    let (doc, out) = analyze_json(&["--redact", "captures/tls12_wrong_password.pcap"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pgreach-lab"));
    assert_eq!(doc["attempts"][0]["pg"]["tls"]["certificate"]["subject"], "redacted");
}
