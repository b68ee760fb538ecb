//! The PostgreSQL layer driven with built conversations: framing across
//! segment boundaries, reordering, gaps, and each way a login can end.

use pgreach::decode::LinkType;
use pgreach::engine::{Analyzer, Config};
use pgreach::outcome::{Outcome, TcpOutcome};
use pgreach::record::AttemptRecord;

use crate::util::*;

const CISN: u32 = 7_000;
const SISN: u32 = 9_000;

/// A TCP connection under construction: sequence numbers advance as bytes are sent.
pub(crate) struct Conv {
    engine: Analyzer,
    t: f64,
    client_seq: u32,
    server_seq: u32,
}

impl Conv {
    pub(crate) fn new() -> Conv {
        let mut c =
            Conv { engine: Analyzer::new(Config::default()), t: 0.0, client_seq: CISN + 1, server_seq: SISN + 1 };
        c.seg(true, syn(CISN));
        c.seg(false, syn_ack(SISN, CISN + 1));
        c.seg(true, ack(CISN + 1, SISN + 1));
        c
    }

    /// A connection the capture joins after its handshake and login.
    fn joined() -> Conv {
        Conv { engine: Analyzer::new(Config::default()), t: 0.0, client_seq: CISN + 5000, server_seq: SISN + 9000 }
    }

    fn seg(&mut self, from_client: bool, seg: Seg) {
        self.t += 0.001;
        let (src, dst) = if from_client { (CLIENT, SERVER) } else { (SERVER, CLIENT) };
        self.engine.handle_packet(at(self.t), LinkType::Ethernet, &tcp_frame(src, dst, seg)).expect("decodes");
    }

    /// The segment that sends `bytes` next from one side, without sending it.
    fn next_segment(&mut self, from_client: bool, bytes: &[u8]) -> Seg {
        let payload: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
        let (seq, ack) =
            if from_client { (self.client_seq, self.server_seq) } else { (self.server_seq, self.client_seq) };
        let n = bytes.len() as u32;
        if from_client {
            self.client_seq += n;
        } else {
            self.server_seq += n;
        }
        data(seq, ack, payload)
    }

    /// Sends `bytes` in segments of at most `size` bytes.
    fn send(&mut self, from_client: bool, bytes: &[u8], size: usize) -> &mut Conv {
        for piece in bytes.chunks(size.max(1)) {
            let seg = self.next_segment(from_client, piece);
            self.seg(from_client, seg);
        }
        self
    }

    pub(crate) fn client(&mut self, bytes: &[u8]) -> &mut Conv {
        self.send(true, bytes, usize::MAX)
    }

    pub(crate) fn server(&mut self, bytes: &[u8]) -> &mut Conv {
        self.send(false, bytes, usize::MAX)
    }

    /// Lets time pass with no packet.
    pub(crate) fn wait(&mut self, secs: f64) -> &mut Conv {
        self.t += secs;
        self
    }

    /// A bare ACK from the client: time passes for the capture, not for the login.
    pub(crate) fn client_ack(&mut self) -> &mut Conv {
        let (c, s) = (self.client_seq, self.server_seq);
        self.seg(true, ack(c, s));
        self
    }

    pub(crate) fn close_by_client(&mut self) -> &mut Conv {
        let (c, s) = (self.client_seq, self.server_seq);
        self.seg(true, fin(c, s));
        self.seg(false, fin(s, c + 1));
        self.seg(true, ack(c + 1, s + 1));
        self
    }

    pub(crate) fn close_by_server(&mut self) -> &mut Conv {
        let (c, s) = (self.client_seq, self.server_seq);
        self.seg(false, fin(s, c));
        self.seg(true, fin(c, s + 1));
        self.seg(false, ack(s + 1, c + 1));
        self
    }

    pub(crate) fn finish(&mut self) -> AttemptRecord {
        self.engine.finish();
        let all: Vec<AttemptRecord> = std::iter::from_fn(|| self.engine.poll_finished()).collect();
        assert_eq!(all.len(), 1, "{all:#?}");
        all.into_iter().next().unwrap()
    }
}

// Message builders (protocol chapter, "Message Formats").

pub(crate) fn untyped(code: u32, rest: &[u8]) -> Vec<u8> {
    let mut m = ((rest.len() + 8) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&code.to_be_bytes());
    m.extend_from_slice(rest);
    m
}

pub(crate) fn startup(version: u32, user: &str, database: &str) -> Vec<u8> {
    startup_of_app(version, user, database, "test")
}

pub(crate) fn startup_of_app(version: u32, user: &str, database: &str, application: &str) -> Vec<u8> {
    let params = format!("user\0{user}\0database\0{database}\0application_name\0{application}\0\0");
    untyped(version, params.as_bytes())
}

pub(crate) fn ssl_request() -> Vec<u8> {
    untyped(80_877_103, &[])
}

pub(crate) fn typed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

pub(crate) fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(extra);
    typed(b'R', &body)
}

pub(crate) fn error(severity: &str, code: &str, message: &str) -> Vec<u8> {
    typed(b'E', format!("S{severity}\0V{severity}\0C{code}\0M{message}\0\0").as_bytes())
}

pub(crate) fn logged_in() -> Vec<u8> {
    let mut m = auth(0, &[]);
    m.extend(typed(b'S', b"server_version\x0015.4\0"));
    m.extend(typed(b'S', b"application_name\0\0"));
    m.extend(typed(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]));
    m.extend(typed(b'Z', b"I"));
    m
}

const SECRET: &str = "md5-s3cret-hash-0123456789abcdef";

pub(crate) fn password() -> Vec<u8> {
    typed(b'p', format!("{SECRET}\0").as_bytes())
}

/// A whole md5 login and session, the client's and the server's bytes.
fn md5_session() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let client = vec![ssl_request(), startup(196_608, "app", "shop"), password(), typed(b'X', &[])];
    let server = vec![b"N".to_vec(), auth(5, &[1, 2, 3, 4]), logged_in()];
    (client, server)
}

#[test]
fn login_split_at_every_byte_boundary() {
    let (client, server) = md5_session();
    let longest = client.iter().chain(&server).map(Vec::len).max().unwrap();
    for size in 1..=longest {
        let mut c = Conv::new();
        c.send(true, &client[0], size).send(false, &server[0], size);
        c.send(true, &client[1], size).send(false, &server[1], size);
        c.send(true, &client[2], size).send(false, &server[2], size);
        c.send(true, &client[3], size).close_by_client();
        let a = c.finish();
        assert_eq!(a.outcome, Outcome::Success, "segments of {size} bytes");
        let pg = a.pg.as_ref().unwrap();
        assert_eq!(pg.startup.user.as_deref(), Some("app"));
        assert_eq!(pg.startup.database.as_deref(), Some("shop"));
        assert_eq!(pg.auth, ["md5", "ok"]);
        assert_eq!(pg.server_version.as_deref(), Some("15.4"));
        assert_eq!(pg.backend_pid, Some(12345));
        assert!(pg.credentials_sent && pg.terminate_sent);
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains(SECRET), "the password hash leaked: {json}");
    }
}

#[test]
fn out_of_order_and_retransmitted_segments() {
    let mut c = Conv::new();
    c.client(&startup(196_608, "app", "shop")).server(&auth(5, &[9; 4])).client(&password());
    // The server's login burst in three segments, captured in the order 3, 1, 2, then 1 again.
    let burst = logged_in();
    let thirds: Vec<Seg> = burst.chunks(burst.len() / 3 + 1).map(|p| c.next_segment(false, p)).collect();
    for i in [2, 0, 1, 0] {
        c.seg(false, thirds[i]);
    }
    let a = c.close_by_client().finish();
    assert_eq!(a.outcome, Outcome::Success);
    assert_eq!(a.pg.as_ref().unwrap().server_messages, 6, "R, R, S, S, K, Z: the retransmission is not counted twice");
}

/// The server's error was lost by the capture; the client's ACK shows it was sent.
#[test]
fn a_lost_answer_is_a_gap() {
    let mut c = Conv::new();
    c.client(&startup(196_608, "app", "shop"));
    let lost = c.next_segment(false, &error("FATAL", "28000", "no pg_hba.conf entry"));
    let _ = lost; // never captured
    let a = c.close_by_server().finish();
    assert_eq!(a.outcome, Outcome::Gap);
    assert!(a.pg.unwrap().framing_lost);
}

/// A result lost by the capture in the middle of a session: framing is
/// found again at the next segment that starts with whole messages, so the
/// FATAL that ends the session is still read.
#[test]
fn framing_resumes_after_a_gap_at_a_message_boundary() {
    let mut c = Conv::new();
    c.client(&startup(196_608, "app", "shop")).server(&logged_in());
    c.client(&typed(b'Q', b"select big\0"));
    let lost = c.next_segment(false, &[typed(b'T', &[0; 40]), typed(b'D', &[1; 900])].concat());
    let _ = lost; // never captured
    c.server(&[typed(b'D', &[2; 900]), typed(b'C', b"SELECT 2\0"), typed(b'Z', b"I")].concat());
    c.client(&typed(b'Q', b"select 1/0\0"));
    c.server(&[error("ERROR", "22012", "division by zero"), typed(b'Z', b"I")].concat());
    c.server(&error("FATAL", "57P01", "terminating connection due to administrator command"));
    let a = c.close_by_server().finish();
    assert_eq!(a.outcome, Outcome::Terminated);
    let pg = a.pg.unwrap();
    assert!(pg.framing_lost);
    assert_eq!(pg.framing_resyncs, 1);
    assert_eq!(pg.session_errors.get("22012"), Some(&1));

    // Bytes that do not start with messages after the gap: framing stays lost.
    let mut c = Conv::new();
    c.client(&startup(196_608, "app", "shop")).server(&logged_in());
    let _lost = c.next_segment(false, &typed(b'D', &[1; 100]));
    c.server(&[0xff; 64]);
    c.server(&[b'D', 0, 0]);
    let a = c.close_by_server().finish();
    assert_eq!(a.outcome, Outcome::Success, "logged in; what followed the gap is unknown");
    let pg = a.pg.unwrap();
    assert!(pg.framing_lost);
    assert_eq!(pg.framing_resyncs, 0);
}

/// A capture that begins mid-session still reads what follows: the session's
/// errors, and the FATAL that ends it; the login itself stays unknown.
#[test]
fn midstream_sessions_are_read_from_the_first_message_boundary() {
    let mut c = Conv::joined();
    // The tail of a DataRow whose start the capture missed: not a boundary.
    c.server(&[7; 300]);
    c.client(&typed(b'Q', b"select 1/0\0"));
    c.server(&[error("ERROR", "22012", "division by zero"), typed(b'Z', b"I")].concat());
    c.server(&error("FATAL", "57P01", "terminating connection due to administrator command"));
    let a = c.close_by_server().finish();
    assert_eq!(a.tcp_outcome, TcpOutcome::Midstream);
    assert_eq!(a.outcome, Outcome::Terminated);
    let pg = a.pg.unwrap();
    assert_eq!(pg.session_errors.get("22012"), Some(&1));
    assert_eq!(pg.error.unwrap().code(), "57P01");
    assert!(!pg.framing_lost, "joining late is not a gap");
    assert_eq!(pg.login_ms, None);

    let mut c = Conv::joined();
    c.client(&typed(b'X', b""));
    let a = c.close_by_client().finish();
    assert_eq!(a.outcome, Outcome::Midstream);
    assert!(a.pg.unwrap().terminate_sent);

    // Nothing readable: no PostgreSQL summary at all.
    let mut c = Conv::joined();
    c.server(&[7; 300]);
    let a = c.close_by_client().finish();
    assert_eq!(a.outcome, Outcome::Midstream);
    assert!(a.pg.is_none());
}

/// NoticeResponses keep their fields (the first four); all are counted.
#[test]
fn notices_are_kept_with_their_fields() {
    let notice = |i: u32| {
        let mut body = Vec::new();
        for (code, value) in [
            (b'S', "WARNING".to_owned()),
            (b'V', "WARNING".to_owned()),
            (b'C', "01000".to_owned()),
            (b'M', format!("notice {i}")),
        ] {
            body.push(code);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        typed(b'N', &body)
    };
    let mut c = Conv::new();
    c.client(&startup(196_608, "app", "shop"));
    c.server(&[auth(0, &[]), notice(1), notice(2), typed(b'Z', b"I")].concat());
    c.client(&typed(b'Q', b"select 1\0"));
    c.server(&(3..=6).map(notice).collect::<Vec<_>>().concat());
    let a = c.close_by_client().finish();
    assert_eq!(a.outcome, Outcome::Success);
    let pg = a.pg.unwrap();
    assert_eq!(pg.notices, 6);
    let kept: Vec<&str> = pg.first_notices.iter().filter_map(|n| n.message.as_deref()).collect();
    assert_eq!(kept, ["notice 1", "notice 2", "notice 3", "notice 4"]);
    assert_eq!(pg.first_notices[0].code(), "01000");
    assert_eq!(pg.first_notices[0].severity_nonlocalized.as_deref(), Some("WARNING"));
}

#[test]
fn login_errors_by_stage() {
    // No authentication request before the error: pg_hba.conf.
    let a = Conv::new()
        .client(&startup(196_608, "app", "shop"))
        .server(&error("FATAL", "28000", "x"))
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::HbaRejected);
    assert!(a.pg.unwrap().ambiguity.is_some());
    // After AuthenticationOk: the role check.
    let a = Conv::new()
        .client(&startup(196_608, "ghost", "shop"))
        .server(&[auth(0, &[]), error("FATAL", "28000", "x")].concat())
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::RoleMissing);
    let a = Conv::new()
        .client(&startup(196_608, "app", "gone"))
        .server(&[auth(0, &[]), error("FATAL", "3D000", "x")].concat())
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::DatabaseMissing);
    let a = Conv::new()
        .client(&startup(196_608, "app", "shop"))
        .server(&error("FATAL", "53300", "x"))
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::TooManyClients);
    let a = Conv::new()
        .client(&startup(196_608, "app", "shop"))
        .server(&error("FATAL", "57P03", "x"))
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::ServerUnavailable);
}

#[test]
fn after_login_errors_are_counted_and_a_fatal_ends_it() {
    let a = Conv::new()
        .client(&startup(196_608, "app", "shop"))
        .server(&logged_in())
        .client(&typed(b'Q', b"select 1/0\0"))
        .server(&[error("ERROR", "22012", "division by zero"), typed(b'Z', b"I")].concat())
        .client(&typed(b'Q', b"select 1/0\0"))
        .server(&[error("ERROR", "22012", "division by zero"), typed(b'Z', b"I")].concat())
        .server(&error("FATAL", "57P05", "terminating connection due to idle-session timeout"))
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::Terminated);
    let pg = a.pg.unwrap();
    assert_eq!(pg.session_errors.get("22012"), Some(&2));
    assert_eq!(pg.error.unwrap().code(), "57P05");
}

#[test]
fn password_prompt_is_abandoned_not_failed() {
    let a = Conv::new().client(&startup(196_608, "app", "shop")).server(&auth(5, &[1; 4])).close_by_client().finish();
    assert_eq!(a.outcome, Outcome::AuthAbandoned);
    assert!(!a.outcome.is_failure());
}

#[test]
fn a_server_that_never_answers_the_startup_is_silent() {
    // The client gives up at its connect_timeout.
    let a = Conv::new().client(&startup(196_608, "app", "shop")).wait(2.0).close_by_client().finish();
    assert_eq!(a.outcome, Outcome::ServerSilent);
    assert!(a.outcome.is_failure());
    let pg = a.pg.unwrap();
    assert_eq!(pg.stopped_at.as_deref(), Some("startup message sent, no answer"));
    assert!(pg.stopped_for_ms.unwrap() >= 2000.0, "{:?}", pg.stopped_for_ms);
    // An unanswered SSLRequest is silence too.
    let a = Conv::new().client(&ssl_request()).wait(2.0).close_by_client().finish();
    assert_eq!(a.outcome, Outcome::ServerSilent);
    // Still waiting long before the capture's end; and only just before it.
    let a = Conv::new().client(&startup(196_608, "app", "shop")).wait(30.0).client_ack().finish();
    assert_eq!(a.outcome, Outcome::ServerSilent);
    let a = Conv::new().client(&startup(196_608, "app", "shop")).finish();
    assert_eq!(a.outcome, Outcome::CaptureEnded);
    // The server closing without a word is not silence: it died or was killed.
    let a = Conv::new().client(&startup(196_608, "app", "shop")).close_by_server().finish();
    assert_eq!(a.outcome, Outcome::Incomplete);
}

#[test]
fn a_server_that_gives_up_on_an_unanswered_password_request_is_auth_timeout() {
    let a = Conv::new()
        .client(&startup(196_608, "app", "shop"))
        .server(&auth(10, b"SCRAM-SHA-256\0\0"))
        .wait(60.0)
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::AuthTimeout);
    assert!(a.outcome.is_failure());
    assert_eq!(a.pg.unwrap().stopped_at.as_deref(), Some("credentials asked for, none sent"));
    // Credentials sent and no verdict before the server closed: not a time-out of the client's.
    let a = Conv::new()
        .client(&startup(196_608, "app", "shop"))
        .server(&auth(5, &[1; 4]))
        .client(&password())
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::Incomplete);
    assert_eq!(a.pg.unwrap().stopped_at.as_deref(), Some("credentials sent, no verdict"));
}

#[test]
fn ssl_answers() {
    let a = Conv::new()
        .client(&ssl_request())
        .server(b"S")
        .client(&[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5])
        .close_by_client()
        .finish();
    assert_eq!(a.outcome, Outcome::Tls);
    let a = Conv::new().client(&ssl_request()).server(b"N").close_by_client().finish();
    assert_eq!(a.outcome, Outcome::SslRefused);
    // A very old server answers SSLRequest with an ErrorResponse.
    let a = Conv::new()
        .client(&ssl_request())
        .server(&error("FATAL", "08P01", "unsupported frontend protocol"))
        .close_by_server()
        .finish();
    assert_eq!(a.outcome, Outcome::ProtocolError);
    assert_eq!(a.pg.unwrap().encryption, Some(pgreach::pg::Encryption::SslError));
    // PostgreSQL 17 `sslnegotiation=direct`: a ClientHello straight away.
    let a = Conv::new().client(&[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5]).close_by_client().finish();
    assert_eq!(a.outcome, Outcome::Tls);
    assert_eq!(a.pg.unwrap().encryption, Some(pgreach::pg::Encryption::DirectTls));
}

#[test]
fn protocol_3_2_negotiated_down() {
    let mut body = 0u32.to_be_bytes().to_vec();
    body.extend_from_slice(&0u32.to_be_bytes());
    let a = Conv::new()
        .client(&startup(196_610, "app", "shop"))
        .server(&[typed(b'v', &body), logged_in()].concat())
        .close_by_client()
        .finish();
    assert_eq!(a.outcome, Outcome::Success);
    let pg = a.pg.unwrap();
    assert_eq!(pg.protocol.as_deref(), Some("3.2"));
    assert_eq!(pg.negotiated_minor, Some(0));
}

#[test]
fn not_postgres() {
    let a = Conv::new().client(b"GET / HTTP/1.1\r\nHost: db\r\n\r\n").close_by_client().finish();
    assert_eq!(a.outcome, Outcome::NotPostgres);
    assert!(a.pg.unwrap().not_postgres.unwrap().contains("HTTP"));
    // A MySQL server greets first.
    let greeting = [0x4a, 0, 0, 0, 0x0a, b'8', b'.', b'0'];
    let a = Conv::new().server(&greeting).close_by_client().finish();
    assert_eq!(a.outcome, Outcome::NotPostgres);
    assert!(a.pg.unwrap().not_postgres.unwrap().contains("MySQL"));
}

#[test]
fn probe_and_cancel_request() {
    assert_eq!(Conv::new().close_by_client().finish().outcome, Outcome::Probe);
    let cancel = untyped(80_877_102, &[0, 0, 0x30, 0x39, 9, 9, 9, 9]);
    assert_eq!(Conv::new().client(&cancel).close_by_server().finish().outcome, Outcome::CancelRequest);
}

#[test]
fn capture_ends_during_the_login() {
    let a = Conv::new().client(&startup(196_608, "app", "shop")).server(&auth(10, b"SCRAM-SHA-256\0\0")).finish();
    assert_eq!(a.outcome, Outcome::CaptureEnded);
    assert_eq!(a.pg.unwrap().auth, ["sasl (SCRAM-SHA-256)"]);
}

/// 32 MB of COPY data passes through; nothing of it is kept.
#[test]
fn large_copy_streams_through() {
    let mut c = Conv::new();
    c.client(&startup(196_608, "app", "shop")).server(&logged_in());
    c.client(&typed(b'Q', b"copy t from stdin\0")).server(&typed(b'G', &[0, 0, 0]));
    let row = typed(b'd', &[b'x'; 65_531]);
    for _ in 0..512 {
        c.send(true, &row, 1448);
    }
    c.client(&typed(b'c', &[])).server(&typed(b'C', b"COPY 512\0")).close_by_client();
    let a = c.finish();
    assert_eq!(a.outcome, Outcome::Success);
    assert!(a.pg.unwrap().client_messages > 512);
    assert_eq!(a.traffic.client_bytes as usize, startup(196_608, "app", "shop").len() + 23 + 512 * row.len() + 5);
}

/// Mutated conversations, cut anywhere and split anyhow: the engine never
/// panics and still reports the one attempt.
#[test]
fn mutated_conversations_never_panic() {
    let (client, server) = md5_session();
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15u64);
    let mut next = move || rng.next();
    for _ in 0..2_000 {
        let mut c = Conv::new();
        for (from_client, msg) in client.iter().map(|m| (true, m)).chain(server.iter().map(|m| (false, m))) {
            let mut bytes = msg.clone();
            for _ in 0..(next() % 4) {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            bytes.truncate(1 + (next() as usize) % bytes.len());
            let size = 1 + (next() as usize) % 16;
            c.send(from_client, &bytes, size);
        }
        if next() % 2 == 0 {
            c.close_by_client();
        }
        let a = c.finish();
        assert_eq!(a.tcp_outcome, pgreach::outcome::TcpOutcome::Established);
    }
}
