//! What the encrypted records after the handshake say about the login,
//! without keys: who sent how many records of what size, in which order,
//! and who closed first. PostgreSQL's login is a short exchange of flights
//! (startup message; zero to three authentication round trips; then either
//! the ParameterStatus burst and ReadyForQuery, or an ErrorResponse and
//! the server closing), so its shape shows through the encryption.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginShape {
    /// The handshake did not finish, or the client sent no application record.
    NoApplicationData,
    /// The server closed after answering the client's first application
    /// record (the startup message): refused before any authentication.
    RejectedAtStartup,
    /// The server closed after one or more further client flights
    /// (authentication round trips).
    FailedAfterAuthentication,
    /// The server answered with a login-sized burst and the session went on.
    LikelyLoggedIn,
    /// The client closed after the server's first, small answer: an
    /// authentication request it did not answer (psql prompting for a password).
    ClosedWhenAsked,
    /// Nothing decisive (still open at the capture's end, say).
    Undecided,
}

impl LoginShape {
    /// What the shape suggests, in words, marked as the inference it is.
    pub fn reading(self) -> &'static str {
        match self {
            LoginShape::NoApplicationData => "no application data after the handshake",
            LoginShape::RejectedAtStartup => {
                "[likely] refused before authentication: the server closed right after the startup message"
            }
            LoginShape::FailedAfterAuthentication => {
                "[likely] login failed: the server closed after authentication round trips"
            }
            LoginShape::LikelyLoggedIn => "[likely] logged in: a login-sized answer, then more traffic",
            LoginShape::ClosedWhenAsked => {
                "[likely] asked for a password: the client closed on the server's first small answer"
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
        // Anything after a login-sized answer means the login had worked.
        if flight.side == Side::Server && flight.bytes >= LOGIN_BURST_BYTES {
            self.login_answered = true;
        }
        if self.first.len() < MAX_FLIGHTS {
            self.first.push(flight);
        }
    }

    /// The shape of the login. `server_closed` says the server ended the
    /// connection first; `capture_ended` that the capture stopped before it ended.
    pub fn shape(&mut self, server_closed: bool, capture_ended: bool) -> LoginShape {
        let last = self.current.take();
        // The final flight is kept but proves nothing about what came before it.
        let went_on = self.login_answered || self.client_flights > MAX_LOGIN_FLIGHTS;
        let last_answer = last.as_ref().filter(|f| f.side == Side::Server).map(|f| f.bytes);
        if let Some(f) = last {
            if self.first.len() < MAX_FLIGHTS {
                self.first.push(f);
            }
        }
        match self.client_flights {
            0 => LoginShape::NoApplicationData,
            _ if went_on => LoginShape::LikelyLoggedIn,
            _ if capture_ended => LoginShape::Undecided,
            1 if server_closed => LoginShape::RejectedAtStartup,
            _ if server_closed => LoginShape::FailedAfterAuthentication,
            // A login-sized last answer that the client closed on: it logged in and left.
            _ if last_answer.is_some_and(|b| b >= LOGIN_BURST_BYTES) => LoginShape::LikelyLoggedIn,
            1 if last_answer.is_some() => LoginShape::ClosedWhenAsked,
            _ => LoginShape::Undecided,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flights as (side, record sizes); each 10 ms after the previous.
    fn shape(flights: &[(Side, &[usize])], server_closed: bool) -> LoginShape {
        let start = Timestamp::from_secs_nanos(100, 0);
        let mut f = Flights::default();
        let mut t = start;
        for (side, records) in flights {
            for &len in *records {
                f.record(*side, len, t, start);
            }
            t = t + Duration::from_millis(10);
        }
        f.shape(server_closed, false)
    }

    use Side::{Client as C, Server as S};

    #[test]
    fn server_closing_after_the_startup_message_is_a_rejection() {
        // hba reject or too many clients: startup, then ErrorResponse.
        assert_eq!(shape(&[(C, &[69, 87]), (S, &[140])], true), LoginShape::RejectedAtStartup);
    }

    #[test]
    fn server_closing_after_authentication_round_trips_is_a_failed_login() {
        // SCRAM: startup, SASL, initial response, continue, final response, error.
        let scram: &[(Side, &[usize])] =
            &[(C, &[69, 87]), (S, &[60]), (C, &[70]), (S, &[110]), (C, &[130]), (S, &[130])];
        assert_eq!(shape(scram, true), LoginShape::FailedAfterAuthentication);
        // md5: startup, request, password, error.
        assert_eq!(
            shape(&[(C, &[87]), (S, &[30]), (C, &[60]), (S, &[120])], true),
            LoginShape::FailedAfterAuthentication
        );
    }

    #[test]
    fn a_login_burst_followed_by_more_is_a_login() {
        let session: &[(Side, &[usize])] = &[(C, &[69, 87]), (S, &[438]), (C, &[31]), (S, &[83]), (C, &[22])];
        assert_eq!(shape(session, false), LoginShape::LikelyLoggedIn);
        // A FATAL later (pg_terminate_backend): still logged in first.
        assert_eq!(shape(&[(C, &[87]), (S, &[438]), (C, &[31]), (S, &[120])], true), LoginShape::LikelyLoggedIn);
    }

    #[test]
    fn the_client_closing_on_a_small_first_answer_is_a_password_prompt() {
        assert_eq!(shape(&[(C, &[69, 87]), (S, &[60])], false), LoginShape::ClosedWhenAsked);
    }

    #[test]
    fn no_application_record_is_no_login() {
        assert_eq!(shape(&[(S, &[800])], true), LoginShape::NoApplicationData);
    }

    #[test]
    fn a_slow_second_server_record_is_a_new_flight() {
        let start = Timestamp::from_secs_nanos(0, 0);
        let mut f = Flights::default();
        f.record(C, 87, start, start);
        f.record(S, 438, start + Duration::from_millis(5), start);
        f.record(S, 120, start + Duration::from_secs(5), start);
        assert_eq!(f.server_flights, 2);
        assert_eq!(f.shape(true, false), LoginShape::LikelyLoggedIn);
    }
}
