//! Both legs of a pooler in one capture (taken on the pooler's host with
//! `-i any` and both ports): the pooler's own connections to PostgreSQL are
//! told apart from its clients', and a client's failed login is tied to
//! what the pooler met on its server leg meanwhile.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use crate::outcome::Outcome;
use crate::record::{AttemptRecord, ServerLeg};
use crate::time::Timestamp;

/// Server addresses remembered per server port (the pooler's and
/// PostgreSQL's hosts are few; a flood of them is no pooler).
const MAX_SERVERS: usize = 64;
/// Server-leg attempts kept to relate client failures to: a pooler retries
/// its server at server_login_retry (15 s by default), so a few hundred
/// cover any client's wait.
const MAX_LEG_ATTEMPTS: usize = 256;

#[derive(Debug, Default)]
pub struct Legs {
    servers: BTreeMap<u16, BTreeSet<IpAddr>>,
    remembered: usize,
    recent: VecDeque<(Timestamp, Timestamp, SocketAddr, Outcome)>,
}

impl Legs {
    /// A connection attempt began: its server end is a server on its port.
    pub fn on_new_attempt(&mut self, server: SocketAddr) {
        if self.remembered < MAX_SERVERS && self.servers.entry(server.port()).or_default().insert(server.ip()) {
            self.remembered += 1;
        }
    }

    /// Marks a pooler's own server connection, or ties a client's failed
    /// login to the server leg, as it finishes (attempts finish in order).
    pub fn relate(&mut self, record: &mut AttemptRecord) {
        if self.is_pooler_leg(record) {
            record.pooler_leg = true;
            if self.recent.len() == MAX_LEG_ATTEMPTS {
                self.recent.pop_front();
            }
            self.recent.push_back((record.start, record.end, record.server, record.outcome));
            return;
        }
        if !waited_for_a_server(record) {
            return;
        }
        let during = self.recent.iter().filter(|(start, end, ..)| *start <= record.end && *end >= record.start);
        let mut failed: BTreeMap<(SocketAddr, Outcome), u32> = BTreeMap::new();
        let mut worked = false;
        for &(_, _, server, outcome) in during {
            if outcome.is_failure() {
                *failed.entry((server, outcome)).or_default() += 1;
            } else if matches!(outcome, Outcome::Success | Outcome::Terminated) {
                worked = true;
            }
        }
        if worked {
            return;
        }
        if let Some((&(server, outcome), &attempts)) = failed.iter().max_by_key(|(_, n)| **n) {
            record.server_leg = Some(ServerLeg { server, attempts, outcome });
            record.outcome = Outcome::ServerUnavailable;
        }
    }

    /// The pooler's own connection: from an address that is a server on
    /// another server port (the pooler's host), or from loopback to
    /// loopback while another port has servers (a pooler reaching
    /// PostgreSQL on its own host).
    fn is_pooler_leg(&self, r: &AttemptRecord) -> bool {
        let (client, server) = (r.client.ip(), r.server.ip());
        self.servers.iter().filter(|(port, _)| **port != r.server.port()).any(|(_, hosts)| {
            hosts.contains(&client) || (client.is_loopback() && server.is_loopback() && !hosts.is_empty())
        })
    }
}

/// A login that ended the way a pooler without a server connection ends
/// it: the pooler kept the client waiting until it gave up, said it could
/// not find a free server connection, or said the server was down.
fn waited_for_a_server(r: &AttemptRecord) -> bool {
    let pooler_says_wait =
        r.pg.as_ref().and_then(|pg| pg.pooler).is_some_and(|p| p.setting.contains("query_wait_timeout"));
    match r.outcome {
        Outcome::ServerSilent | Outcome::Incomplete | Outcome::ServerUnavailable => true,
        Outcome::TooManyClients => pooler_says_wait,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::TcpOutcome;

    fn attempt(client: &str, server: &str, from: u64, to: u64, outcome: Outcome) -> AttemptRecord {
        let at = |s: u64| Timestamp::from_secs_nanos(s as i64, 0);
        let addresses = (client.parse().unwrap(), server.parse().unwrap());
        AttemptRecord::bare(0, addresses, (outcome, TcpOutcome::Established), (at(from), at(to)))
    }

    /// PgBouncer on 192.0.2.1:6432 reaches PostgreSQL on its own host's loopback.
    fn legs() -> Legs {
        let mut legs = Legs::default();
        legs.on_new_attempt("192.0.2.1:6432".parse().unwrap());
        legs.on_new_attempt("127.0.0.1:5432".parse().unwrap());
        legs
    }

    #[test]
    fn a_silent_pooler_whose_server_refused_is_server_unavailable() {
        let mut legs = legs();
        for t in [1, 2, 3] {
            let mut leg = attempt("127.0.0.1:40000", "127.0.0.1:5432", t, t, Outcome::Refused);
            legs.relate(&mut leg);
            assert!(leg.pooler_leg);
        }
        let mut client = attempt("192.0.2.100:50000", "192.0.2.1:6432", 0, 2, Outcome::ServerSilent);
        legs.relate(&mut client);
        assert!(!client.pooler_leg);
        assert_eq!(client.outcome, Outcome::ServerUnavailable);
        let leg = client.server_leg.unwrap();
        assert_eq!((leg.server.to_string(), leg.attempts, leg.outcome), ("127.0.0.1:5432".into(), 2, Outcome::Refused));
    }

    /// A busy pool: the pooler's server connections work, so a client's
    /// wait is the pool's size, not a dead server.
    #[test]
    fn a_working_server_leg_leaves_the_outcome() {
        let mut legs = legs();
        legs.relate(&mut attempt("127.0.0.1:40000", "127.0.0.1:5432", 1, 1, Outcome::Refused));
        legs.relate(&mut attempt("127.0.0.1:40001", "127.0.0.1:5432", 1, 9, Outcome::Success));
        let mut client = attempt("192.0.2.100:50000", "192.0.2.1:6432", 0, 3, Outcome::ServerSilent);
        legs.relate(&mut client);
        assert_eq!(client.outcome, Outcome::ServerSilent);
        assert_eq!(client.server_leg, None);
    }

    /// Failures of the leg outside the client's attempt, and outcomes a
    /// pooler's server cannot explain, are not tied.
    #[test]
    fn only_waits_during_leg_failures_are_tied() {
        let mut legs = legs();
        legs.relate(&mut attempt("127.0.0.1:40000", "127.0.0.1:5432", 10, 10, Outcome::Refused));
        let mut earlier = attempt("192.0.2.100:50000", "192.0.2.1:6432", 0, 3, Outcome::ServerSilent);
        legs.relate(&mut earlier);
        assert_eq!(earlier.outcome, Outcome::ServerSilent);
        let mut wrong_password = attempt("192.0.2.100:50001", "192.0.2.1:6432", 9, 11, Outcome::AuthFailed);
        legs.relate(&mut wrong_password);
        assert_eq!(wrong_password.outcome, Outcome::AuthFailed);
    }

    /// Without a second server port there is no pooler: loopback clients
    /// of PostgreSQL are clients.
    #[test]
    fn one_port_means_no_pooler() {
        let mut legs = Legs::default();
        legs.on_new_attempt("127.0.0.1:5432".parse().unwrap());
        let mut local = attempt("127.0.0.1:40000", "127.0.0.1:5432", 1, 1, Outcome::Refused);
        legs.relate(&mut local);
        assert!(!local.pooler_leg);
    }
}
