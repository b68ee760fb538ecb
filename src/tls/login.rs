//! What the encrypted records after the handshake say about the login,
//! without keys: who sent how many records of what size, in which order,
//! and which side spoke last. PostgreSQL's login is a short exchange of flights
//! (startup message; zero to three authentication round trips; then either
//! the ParameterStatus burst and ReadyForQuery, or an ErrorResponse and
//! the server closing; libpq closes at once when it reads either an error
//! or a password request it cannot answer), so its shape shows through the
//! encryption.

use std::time::Duration;

use serde::Serialize;

use crate::outcome::Side;
use crate::time::{millis, Timestamp};

/// Flights kept with their sizes for the evidence; later ones are only counted.
const MAX_FLIGHTS: usize = 12;
/// Records of one side further apart than this are separate flights: a
/// server's answer to a login comes at once, a later FATAL does not.
const FLIGHT_GAP: Duration = Duration::from_secs(1);
/// Ciphertext bytes of a server flight that answers a login with success:
/// AuthenticationOk, about fourteen ParameterStatus messages (some 350
/// bytes), BackendKeyData and ReadyForQuery. Authentication requests and
/// ErrorResponses are far smaller.
const LOGIN_BURST_BYTES: u64 = 200;
/// The longest first authentication request: AuthenticationSASL offering
/// SCRAM-SHA-256-PLUS and SCRAM-SHA-256 (43 bytes); md5's is 13. An
/// ErrorResponse (severity twice, SQLSTATE, message, file, line, routine)
/// is longer.
const MAX_AUTH_REQUEST: u64 = 48;
/// The most client flights a password login takes: startup message,
/// SASLInitialResponse, SASLResponse (SCRAM). More means the session went on.
const MAX_LOGIN_FLIGHTS: u32 = 3;

/// Consecutive application records of one side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flight {
    pub side: Side,
    pub records: u32,
    /// Record bytes, headers excluded (ciphertext: plaintext plus the cipher's overhead).
    pub bytes: u64,
    /// Milliseconds from the first SYN to the flight's first record.
    pub at_ms: f64,
    #[serde(skip)]
    last: Timestamp,
}

/// What the records suggest about the login, as far as the outside shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginShape {
    /// The handshake did not finish, or the client sent no application record.
    NoApplicationData,
    /// The connection ended on the server's answer to the client's first
    /// application record (the startup message), an answer too long for an
    /// authentication request: refused before any authentication.
    RejectedAtStartup,
    /// The connection ended on the server's answer after one or more
    /// further client flights (authentication round trips), without a
    /// login-sized answer.
    FailedAfterAuthentication,
    /// The server answered with a login-sized burst and the session went on.
    LikelyLoggedIn,
    /// The connection ended on the server's first answer, small enough to
    /// be an authentication request (psql closing to prompt for a password).
    ClosedWhenAsked,
    /// Nothing decisive (still open at the capture's end, say).
    Undecided,
}

impl LoginShape {
    /// Whether the reading is an inference (the rest are plain facts).
    pub fn is_inference(self) -> bool {
        !matches!(self, LoginShape::NoApplicationData | LoginShape::Undecided)
    }

    /// What the shape suggests, in words.
    pub fn reading(self) -> &'static str {
        match self {
            LoginShape::NoApplicationData => "no application data after the handshake",
            LoginShape::RejectedAtStartup => {
                "refused before authentication: the connection ended on the server's answer to the startup message"
            }
            LoginShape::FailedAfterAuthentication => {
                "login failed: the connection ended on the server's answer after authentication round trips"
            }
            LoginShape::LikelyLoggedIn => "logged in: a login-sized answer, then more traffic",
            LoginShape::ClosedWhenAsked => {
                "asked for a password: the connection ended on the server's first, authentication-request-sized answer"
            }
            LoginShape::Undecided => "login not decided by the records",
        }
    }
}

/// The application records of a connection, as flights.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flights {
    /// The first flights, in order.
    pub first: Vec<Flight>,
    pub client_flights: u32,
    pub server_flights: u32,
    pub client_records: u64,
    pub server_records: u64,
    pub client_bytes: u64,
    pub server_bytes: u64,
    /// Whether a server flight of login-answer size was followed by more traffic.
    #[serde(skip)]
    login_answered: bool,
    #[serde(skip)]
    current: Option<Flight>,
}

impl Flights {
    /// One application record of `len` bytes from `side`.
    pub fn record(&mut self, side: Side, len: usize, ts: Timestamp, start: Timestamp) {
        let len = len as u64;
        match side {
            Side::Client => (self.client_records += 1, self.client_bytes += len),
            Side::Server => (self.server_records += 1, self.server_bytes += len),
        };
        if let Some(f) = self.current.as_mut().filter(|f| f.side == side && ts.since(f.last) <= FLIGHT_GAP) {
            f.records += 1;
            f.bytes += len;
            f.last = ts;
            return;
        }
        if let Some(done) = self.current.take() {
            self.close(done);
        }
        match side {
            Side::Client => self.client_flights += 1,
            Side::Server => self.server_flights += 1,
        }
        self.current = Some(Flight { side, records: 1, bytes: len, at_ms: millis(ts.since(start)), last: ts });
    }

    fn close(&mut self, flight: Flight) {
        if flight.side == Side::Server && flight.bytes >= LOGIN_BURST_BYTES {
            self.login_answered = true;
        }
        if self.first.len() < MAX_FLIGHTS {
            self.first.push(flight);
        }
    }

    /// The shape of the login. `overhead`: the cipher's bytes per record
    /// (to estimate plaintext sizes); `capture_ended`: the connection was
    /// still open when the capture stopped.
    pub fn shape(&mut self, overhead: usize, capture_ended: bool) -> LoginShape {
        let last = self.current.take();
        // Anything after a login-sized answer means the login had worked.
        let went_on = self.login_answered || self.client_flights > MAX_LOGIN_FLIGHTS;
        let plain = |f: &Flight| f.bytes.saturating_sub(overhead as u64 * u64::from(f.records));
        // The connection ended on a server flight: the client sent nothing after it.
        let last_answer = last.as_ref().filter(|f| f.side == Side::Server).map(plain);
        if let Some(f) = last {
            if self.first.len() < MAX_FLIGHTS {
                self.first.push(f);
            }
        }
        match (self.client_flights, last_answer) {
            (0, _) => LoginShape::NoApplicationData,
            _ if went_on => LoginShape::LikelyLoggedIn,
            (_, Some(bytes)) if bytes >= LOGIN_BURST_BYTES => LoginShape::LikelyLoggedIn,
            _ if capture_ended => LoginShape::Undecided,
            (1, Some(bytes)) if bytes <= MAX_AUTH_REQUEST => LoginShape::ClosedWhenAsked,
            (1, Some(_)) => LoginShape::RejectedAtStartup,
            (_, Some(_)) => LoginShape::FailedAfterAuthentication,
            (_, None) => LoginShape::Undecided,
        }
    }
}

impl Flights {
    /// The first flights in words, e.g. `client 1 record (87 B) → server 1 record (140 B)`.
    pub fn describe(&self) -> String {
        let mut words: Vec<String> = self
            .first
            .iter()
            .map(|f| {
                let who = match f.side {
                    Side::Client => "client",
                    Side::Server => "server",
                };
                let s = if f.records == 1 { "" } else { "s" };
                format!("{who} {} record{s} ({} B)", f.records, f.bytes)
            })
            .collect();
        let total = self.client_flights.saturating_add(self.server_flights) as usize;
        if total > words.len() {
            words.push(format!("… {} flights in all", total));
        }
        if words.is_empty() {
            return "no application record".to_owned();
        }
        words.join(" → ")
    }

    /// Milliseconds from the client's last flight to the server flight that
    /// answered it (among the first flights): how long the server took
    /// over its last answer (an error comes at once; auth_delay shows here).
    pub fn last_answer_ms(&self) -> Option<f64> {
        self.first
            .windows(2)
            .rev()
            .find(|pair| pair[0].side == Side::Client && pair[1].side == Side::Server)
            .map(|pair| pair[1].at_ms - pair[0].at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flights as (side, record sizes); each 10 ms after the previous.
    fn shape(flights: &[(Side, &[usize])], capture_ended: bool) -> LoginShape {
        let start = Timestamp::from_secs_nanos(100, 0);
        let mut f = Flights::default();
        let mut t = start;
        for (side, records) in flights {
            for &len in *records {
                f.record(*side, len, t, start);
            }
            t = t + Duration::from_millis(10);
        }
        f.shape(17, capture_ended)
    }

    use Side::{Client as C, Server as S};

    #[test]
    fn ending_on_the_answer_to_the_startup_message_is_a_rejection() {
        // hba reject or too many clients: startup, then ErrorResponse.
        assert_eq!(shape(&[(C, &[69, 87]), (S, &[103])], false), LoginShape::RejectedAtStartup);
    }

    #[test]
    fn ending_on_an_answer_after_authentication_round_trips_is_a_failed_login() {
        // SCRAM: startup, SASL, initial response, continue, final response, error.
        let scram: &[(Side, &[usize])] =
            &[(C, &[69, 87]), (S, &[60]), (C, &[70]), (S, &[110]), (C, &[130]), (S, &[130])];
        assert_eq!(shape(scram, false), LoginShape::FailedAfterAuthentication);
        // md5: startup, request, password, error.
        let md5: &[(Side, &[usize])] = &[(C, &[87]), (S, &[30]), (C, &[60]), (S, &[120])];
        assert_eq!(shape(md5, false), LoginShape::FailedAfterAuthentication);
        // Still open at the capture's end: not decided.
        assert_eq!(shape(md5, true), LoginShape::Undecided);
    }

    #[test]
    fn a_login_burst_followed_by_more_is_a_login() {
        let session: &[(Side, &[usize])] = &[(C, &[69, 87]), (S, &[438]), (C, &[31]), (S, &[83]), (C, &[22])];
        assert_eq!(shape(session, false), LoginShape::LikelyLoggedIn);
        // A FATAL later (pg_terminate_backend): still logged in first.
        assert_eq!(shape(&[(C, &[87]), (S, &[438]), (C, &[31]), (S, &[120])], false), LoginShape::LikelyLoggedIn);
    }

    #[test]
    fn ending_on_a_first_answer_the_size_of_an_auth_request_is_a_password_prompt() {
        assert_eq!(shape(&[(C, &[69, 87]), (S, &[60])], false), LoginShape::ClosedWhenAsked);
        // md5's request.
        assert_eq!(shape(&[(C, &[87]), (S, &[30])], false), LoginShape::ClosedWhenAsked);
    }

    #[test]
    fn no_application_record_is_no_login() {
        assert_eq!(shape(&[(S, &[800])], false), LoginShape::NoApplicationData);
    }

    #[test]
    fn a_slow_second_server_record_is_a_new_flight() {
        let start = Timestamp::from_secs_nanos(0, 0);
        let mut f = Flights::default();
        f.record(C, 87, start, start);
        f.record(S, 438, start + Duration::from_millis(5), start);
        f.record(S, 120, start + Duration::from_secs(5), start);
        assert_eq!(f.server_flights, 2);
        assert_eq!(f.shape(17, false), LoginShape::LikelyLoggedIn);
    }
}
