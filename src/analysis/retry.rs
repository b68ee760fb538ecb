//! libpq's `sslmode=prefer` retry: when a TLS attempt fails, libpq
//! reconnects at once without TLS, and the server's answer to that second
//! attempt (often "no pg_hba.conf entry … no encryption") is a consequence
//! of the first failure, not its cause. Pairs them up so the diagnosis can
//! name the cause.

use std::collections::BTreeMap;

use foldhash::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::outcome::Outcome;
use crate::pg::Encryption;
use crate::record::AttemptRecord;
use crate::time::Timestamp;

/// How soon after a failed TLS attempt ends its clear-text retry starts:
/// libpq reconnects at once, within a round trip.
const RETRY_WINDOW: Duration = Duration::from_secs(1);
/// Failed TLS attempts remembered at once (each for `RETRY_WINDOW`).
const MAX_PENDING: usize = 4096;

/// Failed TLS attempts and the clear-text retries that followed them.
#[derive(Debug, Default)]
pub struct PreferRetries {
    /// (client address, server) → when the failed TLS attempt ended, and how.
    pending: HashMap<(IpAddr, SocketAddr), (Timestamp, Outcome)>,
    /// (the TLS attempt's outcome, the retry's outcome) → pairs.
    pub pairs: BTreeMap<(Outcome, Outcome), u64>,
}

impl PreferRetries {
    /// Looks at the next finished attempt; returns the outcome of the TLS
    /// attempt it retried, if it is such a retry.
    pub fn add(&mut self, a: &AttemptRecord) -> Option<Outcome> {
        let key = (a.client.ip(), a.server);
        if matches!(a.outcome, Outcome::TlsRejected | Outcome::TlsLoginFailed) {
            if self.pending.len() >= MAX_PENDING {
                self.pending.retain(|_, (end, _)| a.start.since(*end) <= RETRY_WINDOW);
            }
            if self.pending.len() < MAX_PENDING {
                self.pending.insert(key, (a.end, a.outcome));
            }
            return None;
        }
        let pg = a.pg.as_ref()?;
        // The retry sends its startup message in the clear, with no SSLRequest.
        if pg.encryption.is_some_and(|e| e != Encryption::SslRefused) || pg.startup.user.is_none() {
            return None;
        }
        let (end, cause) = *self.pending.get(&key)?;
        if a.start.since(end) > RETRY_WINDOW || end.since(a.start) > RETRY_WINDOW {
            return None;
        }
        self.pending.remove(&key);
        *self.pairs.entry((cause, a.outcome)).or_default() += 1;
        Some(cause)
    }

    /// Retries that got `outcome`, by the failure they followed.
    pub fn causes_of(&self, outcome: Outcome) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        self.pairs.iter().filter(move |((_, r), _)| *r == outcome).map(|((c, _), n)| (*c, *n))
    }

    /// What the retries of failed TLS attempts with `outcome` got.
    pub fn retries_of(&self, outcome: Outcome) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        self.pairs.iter().filter(move |((c, _), _)| *c == outcome).map(|((_, r), n)| (*r, *n))
    }
}
