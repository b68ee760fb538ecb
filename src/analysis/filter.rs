//! Which attempts a report covers: by client network, server, time and outcome.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use super::zone::{parse_instant, parse_time_of_day, Zone};
use crate::outcome::Outcome;
use crate::record::AttemptRecord;
use crate::time::Timestamp;

/// A point in time given on the command line: absolute, relative to the
/// capture's first packet, or a time of day on the capture's date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    At(Timestamp),
    AfterStart(Duration),
    /// On the date of the capture's first packet, in the report's zone.
    TimeOfDay(Duration),
}

impl TimeBound {
    fn resolve(self, capture_start: Timestamp, zone: &Zone) -> Timestamp {
        match self {
            TimeBound::At(t) => t,
            TimeBound::AfterStart(d) => capture_start + d,
            TimeBound::TimeOfDay(d) => zone.on_date_of(capture_start, d),
        }
    }
}

impl FromStr for TimeBound {
    type Err = String;

    /// `+90s` / `+5m` after the capture's start, `09:26:00` on its date, or
    /// an instant with its zone (see [`parse_instant`]).
    fn from_str(s: &str) -> Result<TimeBound, String> {
        if let Some(rel) = s.strip_prefix('+') {
            return humantime::parse_duration(rel)
                .map(TimeBound::AfterStart)
                .map_err(|e| format!("{s:?}: not a duration after the capture's start ({e})"));
        }
        if let Some(time_of_day) = parse_time_of_day(s) {
            return Ok(TimeBound::TimeOfDay(time_of_day));
        }
        parse_instant(s).map(TimeBound::At)
    }
}

/// A server given as an address, or an address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMatch {
    Ip(IpAddr),
    Socket(SocketAddr),
}

impl FromStr for ServerMatch {
    type Err = String;

    fn from_str(s: &str) -> Result<ServerMatch, String> {
        s.parse::<SocketAddr>()
            .map(ServerMatch::Socket)
            .or_else(|_| s.parse::<IpAddr>().map(ServerMatch::Ip))
            .map_err(|_| format!("{s:?}: not an address or address:port"))
    }
}

/// All the conditions an attempt must meet; an empty list matches all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub clients: Vec<IpNet>,
    pub servers: Vec<ServerMatch>,
    pub since: Option<TimeBound>,
    pub until: Option<TimeBound>,
    pub outcomes: Vec<Outcome>,
    /// The zone a time of day is read in.
    pub zone: Zone,
}

impl Filter {
    /// Whether the attempt is in the report. Times compare with its start.
    pub fn matches(&self, a: &AttemptRecord, capture_start: Timestamp) -> bool {
        (self.clients.is_empty() || self.clients.iter().any(|net| net.contains(&a.client.ip())))
            && (self.servers.is_empty()
                || self.servers.iter().any(|s| match *s {
                    ServerMatch::Ip(ip) => a.server.ip() == ip,
                    ServerMatch::Socket(sock) => a.server == sock,
                }))
            && self.since.is_none_or(|t| a.start >= t.resolve(capture_start, &self.zone))
            && self.until.is_none_or(|t| a.start < t.resolve(capture_start, &self.zone))
            && (self.outcomes.is_empty() || self.outcomes.contains(&a.outcome))
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
            && self.servers.is_empty()
            && self.since.is_none()
            && self.until.is_none()
            && self.outcomes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_time_bounds_and_servers() {
        assert_eq!("+90s".parse::<TimeBound>(), Ok(TimeBound::AfterStart(Duration::from_secs(90))));
        assert_eq!(
            "2023-11-14T22:13:20Z".parse::<TimeBound>(),
            Ok(TimeBound::At(Timestamp::from_secs_nanos(1_700_000_000, 0)))
        );
        assert_eq!("09:26".parse::<TimeBound>(), Ok(TimeBound::TimeOfDay(Duration::from_secs(9 * 3600 + 26 * 60))));
        assert!("yesterday".parse::<TimeBound>().is_err());
        assert!("2023-11-14 22:13:20".parse::<TimeBound>().is_err(), "no zone: refused, not taken as UTC");
        assert!(matches!("[2001:db8::1]:5432".parse::<ServerMatch>(), Ok(ServerMatch::Socket(_))));
    }
}
