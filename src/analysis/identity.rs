//! Who made an attempt, as far as the capture tells, and whether a failure
//! recovered: a failure counts as recovered only when the same login — the
//! client address with the same user, database and application_name —
//! later logged in. One host often runs several applications; the success
//! of one is not the retry of another. A failure that never showed who it
//! was (refused, timeout: no startup message) recovers with any login from
//! its address.

use foldhash::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use crate::record::AttemptRecord;
use crate::time::Timestamp;

/// Logins remembered for "logged in later"; past this, a login not yet
/// seen is judged by its address alone.
const MAX_LOGINS: usize = 100_000;

/// One attempt's identity: the client address and, when its startup
/// message was seen, a fingerprint of its user, database and application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub client: IpAddr,
    /// `None` when the attempt never showed who it was.
    pub login: Option<u64>,
}

impl Identity {
    pub fn of(a: &AttemptRecord) -> Identity {
        let login = a.pg.as_ref().map(|pg| &pg.startup).filter(|s| s.user.is_some()).map(|s| {
            // A fixed-key hasher: the same login gives the same fingerprint in every run.
            let mut h = DefaultHasher::new();
            // libpq defaults the database to the user name.
            let database = s.database.as_ref().or(s.user.as_ref());
            (&s.user, database, s.application_name.as_ref().filter(|a| !a.is_empty())).hash(&mut h);
            h.finish()
        });
        Identity { client: a.client.ip(), login }
    }
}

/// When each login and each client address last logged in (bounded).
#[derive(Debug, Default)]
pub struct Logins {
    by_login: HashMap<Identity, Timestamp>,
    by_client: HashMap<IpAddr, Timestamp>,
}

impl Logins {
    /// Records a successful login.
    pub fn add(&mut self, who: Identity, at: Timestamp) {
        if self.by_login.len() < MAX_LOGINS || self.by_login.contains_key(&who) {
            let last = self.by_login.entry(who).or_insert(at);
            *last = (*last).max(at);
        }
        if self.by_client.len() < MAX_LOGINS || self.by_client.contains_key(&who.client) {
            let last = self.by_client.entry(who.client).or_insert(at);
            *last = (*last).max(at);
        }
    }

    /// Whether `who`, which failed at `failed_at`, logged in afterwards.
    pub fn recovered_after(&self, who: Identity, failed_at: Timestamp) -> bool {
        let later = |t: Option<&Timestamp>| t.is_some_and(|t| *t > failed_at);
        match who.login {
            // Beyond the bound a login may be missing: its address tells what is known.
            Some(_) if !self.by_login.contains_key(&who) && self.by_login.len() >= MAX_LOGINS => {
                later(self.by_client.get(&who.client))
            }
            Some(_) => later(self.by_login.get(&who)),
            None => later(self.by_client.get(&who.client)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_secs_nanos(1_700_000_000 + s, 0)
    }

    #[test]
    fn a_failure_recovers_only_with_its_own_login_unless_it_never_said_who_it_was() {
        let host: IpAddr = "192.0.2.7".parse().unwrap();
        let billing = Identity { client: host, login: Some(1) };
        let reports = Identity { client: host, login: Some(2) };
        let refused = Identity { client: host, login: None };
        let mut logins = Logins::default();
        logins.add(billing, at(10));
        assert!(logins.recovered_after(billing, at(5)));
        assert!(!logins.recovered_after(billing, at(10)), "a login at the same moment is not after");
        assert!(!logins.recovered_after(reports, at(5)), "another application's login");
        assert!(logins.recovered_after(refused, at(5)), "the host reached the server again");
        assert!(!logins.recovered_after(refused, at(11)));
    }
}
