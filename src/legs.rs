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
