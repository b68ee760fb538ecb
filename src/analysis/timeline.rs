//! Outcomes over time: attempts counted in time buckets, and incident
//! windows (runs of buckets with failures). Memory is bounded: when a
//! capture spans more buckets than `MAX_BUCKETS`, the buckets are merged
//! into wider ones.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::counts::OutcomeCounts;
use super::identity::{Identity, Logins};
use crate::outcome::Outcome;
use crate::record::AttemptRecord;
use crate::time::Timestamp;

/// Bucket widths for an automatic choice; each is a multiple of the one
/// before, so buckets merge exactly.
const NICE_SECS: [u64; 12] = [1, 5, 10, 30, 60, 300, 600, 1800, 3600, 21_600, 43_200, 86_400];
/// Buckets stored at most.
const MAX_BUCKETS: usize = 4096;
/// Buckets an automatic width aims to show at most.
const TARGET_SHOWN: u64 = 60;
/// Buckets shown at most, empty ones included: a --bucket width far below
/// the capture's span (1µs over a day) is widened to this many rather than
/// drawing billions of empty rows.
pub const MAX_SHOWN: u64 = 4096;
/// Failing client addresses kept per bucket (for "clients affected").
const MAX_CLIENTS_PER_BUCKET: usize = 128;

#[derive(Debug, Clone, Default)]
struct Bucket {
    counts: OutcomeCounts,
    failing_clients: BTreeSet<IpAddr>,
    /// More failing clients than were kept.
    clients_overflow: bool,
    /// Failing logins and when each last failed, for recovery.
    failing_logins: BTreeMap<Identity, Timestamp>,
    /// More failing logins than were kept.
    logins_overflow: bool,
    first_failure: Option<Timestamp>,
    last_failure: Option<Timestamp>,
}

impl Bucket {
    fn merge(&mut self, other: Bucket) {
        self.counts.merge(&other.counts);
        for ip in other.failing_clients {
            self.add_client(ip);
        }
        self.clients_overflow |= other.clients_overflow;
        for (who, at) in other.failing_logins {
            self.add_failing_login(who, at);
        }
        self.logins_overflow |= other.logins_overflow;
        self.first_failure = min_opt(self.first_failure, other.first_failure);
        self.last_failure = max_opt(self.last_failure, other.last_failure);
    }

    fn add_failing_login(&mut self, who: Identity, at: Timestamp) {
        let room = self.failing_logins.len() < MAX_CLIENTS_PER_BUCKET;
        match self.failing_logins.get_mut(&who) {
            Some(last) => *last = (*last).max(at),
            None if room => {
                self.failing_logins.insert(who, at);
            }
            None => self.logins_overflow = true,
        }
    }

    fn add_client(&mut self, ip: IpAddr) {
        if self.failing_clients.len() < MAX_CLIENTS_PER_BUCKET {
            self.failing_clients.insert(ip);
        } else if !self.failing_clients.contains(&ip) {
            self.clients_overflow = true;
        }
    }
}

fn min_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[derive(Debug)]
pub struct Timeline {
    /// The stored width, in nanoseconds; buckets are aligned to multiples of it.
    width: i64,
    /// The width asked for with --bucket (kept unless the bound forces wider).
    chosen: Option<i64>,
    buckets: BTreeMap<i64, Bucket>,
}

/// One bucket as reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct BucketView {
    pub start: Timestamp,
    #[serde(flatten)]
    pub counts: OutcomeCounts,
    pub failures: u64,
}

/// A run of buckets with failures.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The first and last failing attempt's start.
    pub start: Timestamp,
    pub end: Timestamp,
    pub duration_ms: f64,
    pub failed_attempts: u64,
    /// Distinct failing clients (a lower bound when `clients_at_least`).
    pub clients_affected: usize,
    pub clients_at_least: bool,
    /// The failure outcomes in the window, most attempts first.
    pub outcomes: Vec<(Outcome, u64)>,
    /// Whether some attempt succeeded before the window.
    pub success_before: bool,
    /// Whether the window recovered: every login that failed in it logged
    /// in afterwards (a failure that never said who it was: any login from
    /// its address). With more failing logins than a bucket keeps, whether
    /// any attempt succeeded after it.
    pub success_after: bool,
    /// Failing logins of the window that never logged in afterwards.
    pub not_recovered: usize,
}

impl Timeline {
    /// `bucket`: the width asked for, or `None` to choose one from the capture's span.
    pub fn new(bucket: Option<Duration>) -> Timeline {
        let chosen = bucket.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX).max(1));
        Timeline { width: chosen.unwrap_or(1_000_000_000), chosen, buckets: BTreeMap::new() }
    }

    pub fn add(&mut self, a: &AttemptRecord) {
        let index = a.start.as_nanos().div_euclid(self.width);
        let bucket = self.buckets.entry(index).or_default();
        bucket.counts.add(a.outcome);
        if a.outcome.is_failure() {
            bucket.add_client(a.client.ip());
            bucket.add_failing_login(Identity::of(a), a.start);
            bucket.first_failure = min_opt(bucket.first_failure, Some(a.start));
            bucket.last_failure = max_opt(bucket.last_failure, Some(a.start));
        }
        if self.buckets.len() > MAX_BUCKETS {
            self.coarsen();
        }
    }

    /// Merges buckets into ones twice as wide (for a chosen width) or the
    /// next automatic width.
    fn coarsen(&mut self) {
        let secs = (self.width / 1_000_000_000) as u64;
        let factor = match (self.chosen, NICE_SECS.iter().find(|&&n| n > secs)) {
            (None, Some(&next)) if secs > 0 && next % secs == 0 => (next / secs) as i64,
            _ => 2,
        };
        self.width = self.width.saturating_mul(factor);
        let old = std::mem::take(&mut self.buckets);
        for (index, bucket) in old {
            self.buckets.entry(index.div_euclid(factor)).or_default().merge(bucket);
        }
    }

    /// The span from the first stored bucket's start to the last one's end, in nanoseconds.
    fn span(&self) -> u128 {
        match (self.buckets.first_key_value(), self.buckets.last_key_value()) {
            (Some((a, _)), Some((b, _))) => (i128::from(*b) - i128::from(*a) + 1) as u128 * self.width as u128,
            _ => 0,
        }
    }

    /// The width shown: the chosen one, or the smallest automatic width
    /// (a multiple of the stored one) that shows the span in about 60
    /// buckets; in both cases doubled until the span needs at most
    /// `MAX_SHOWN` buckets.
    pub fn shown_width(&self) -> Duration {
        let span = self.span();
        let mut width = if self.chosen.is_some() {
            self.width as u128
        } else {
            let stored_secs = (self.width / 1_000_000_000) as u64;
            let secs = NICE_SECS
                .iter()
                .copied()
                .filter(|n| *n >= stored_secs && n % stored_secs.max(1) == 0)
                .find(|n| span / (u128::from(*n) * 1_000_000_000) < u128::from(TARGET_SHOWN))
                .unwrap_or(*NICE_SECS.last().unwrap_or(&86_400));
            u128::from(secs) * 1_000_000_000
        };
        while span.div_ceil(width.max(1)) > u128::from(MAX_SHOWN) {
            width *= 2;
        }
        Duration::from_nanos(u64::try_from(width).unwrap_or(u64::MAX))
    }

    /// The width asked for with --bucket and the wider one shown, when the
    /// capture's span would have needed more than `MAX_SHOWN` buckets.
    pub fn widened(&self) -> Option<(Duration, Duration)> {
        let asked = Duration::from_nanos(u64::try_from(self.chosen?).unwrap_or(u64::MAX));
        let shown = self.shown_width();
        (shown > asked).then_some((asked, shown))
    }

    /// The buckets at the shown width, from the first to the last, empty ones included.
    fn shown(&self) -> Vec<(i64, Bucket)> {
        let width = i64::try_from(self.shown_width().as_nanos()).unwrap_or(i64::MAX).max(self.width);
        let factor = (width / self.width).max(1);
        let mut merged: BTreeMap<i64, Bucket> = BTreeMap::new();
        for (index, bucket) in &self.buckets {
            merged.entry(index.div_euclid(factor)).or_default().merge(bucket.clone());
        }
        let (Some(&first), Some(&last)) = (merged.keys().next(), merged.keys().next_back()) else { return Vec::new() };
        (first..=last).map(|i| (i * width, merged.remove(&i).unwrap_or_default())).collect()
    }

    pub fn buckets(&self) -> Vec<BucketView> {
        self.shown()
            .into_iter()
            .map(|(start, b)| BucketView {
                start: Timestamp::from_nanos(start),
                failures: b.counts.failures(),
                counts: b.counts,
            })
            .collect()
    }

    /// Shown buckets with timeouts, and how many of them also saw the server
    /// answer some other attempt (a SYN-ACK, a login, an error).
    pub fn timeout_periods_with_answers(&self) -> (usize, usize) {
        let answered = |b: &Bucket| {
            b.counts.outcomes().any(|o| {
                !matches!(
                    o,
                    Outcome::Timeout
                        | Outcome::Refused
                        | Outcome::Unreachable
                        | Outcome::CaptureEnded
                        | Outcome::Midstream
                )
            })
        };
        let with_timeouts: Vec<Bucket> =
            self.shown().into_iter().map(|(_, b)| b).filter(|b| b.counts.get(Outcome::Timeout) > 0).collect();
        (with_timeouts.iter().filter(|b| answered(b)).count(), with_timeouts.len())
    }

    /// Incident windows: maximal runs of buckets with failures; `logins`
    /// tells which failing logins recovered.
    pub fn windows(&self, logins: &Logins) -> Vec<Window> {
        let shown = self.shown();
        let mut windows = Vec::new();
        let mut i = 0;
        while i < shown.len() {
            if shown[i].1.counts.failures() == 0 {
                i += 1;
                continue;
            }
            let from = i;
            let mut run = Bucket::default();
            while i < shown.len() && shown[i].1.counts.failures() > 0 {
                run.merge(shown[i].1.clone());
                i += 1;
            }
            let succeeded = |range: &[(i64, Bucket)]| range.iter().any(|(_, b)| b.counts.get(Outcome::Success) > 0);
            let start = run.first_failure.unwrap_or_default();
            let end = run.last_failure.unwrap_or_default();
            let mut outcomes: Vec<(Outcome, u64)> =
                run.counts.outcomes().filter(|o| o.is_failure()).map(|o| (o, run.counts.get(o))).collect();
            outcomes.sort_by_key(|o| std::cmp::Reverse(o.1));
            let not_recovered =
                run.failing_logins.iter().filter(|(who, at)| !logins.recovered_after(**who, **at)).count();
            let any_success_after = succeeded(&shown[i..]) || shown[i - 1].1.counts.get(Outcome::Success) > 0;
            windows.push(Window {
                start,
                end,
                duration_ms: crate::time::millis(end.since(start)),
                failed_attempts: run.counts.failures(),
                clients_affected: run.failing_clients.len(),
                clients_at_least: run.clients_overflow,
                outcomes,
                success_before: succeeded(&shown[..from]) || shown[from].1.counts.get(Outcome::Success) > 0,
                success_after: if run.logins_overflow { any_success_after } else { not_recovered == 0 },
                not_recovered,
            });
        }
        windows
    }
}
