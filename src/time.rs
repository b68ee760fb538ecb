//! Capture time: packet timestamps and the durations between them.
//!
//! The engine never reads a clock of its own; every instant comes from a
//! packet header (files) or from the driver (live capture).

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Serialize, Serializer};

/// An instant, in nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    pub fn from_secs_nanos(secs: i64, nanos: i64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Seconds since the epoch, for machine-readable output.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// The time from `earlier` to `self`, zero when `earlier` is later
    /// (timestamps from multi-queue NICs can step back a little).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// Whether the instant is a saturated bound rather than a time a
    /// capture said (a header's seconds far out of range).
    pub const fn is_out_of_range(self) -> bool {
        self.0 == i64::MIN || self.0 == i64::MAX
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
    }
}

/// RFC 3339 in UTC with microseconds: what people paste into postmortems.
/// Every instant pgreach can hold (1677 to 2262) fits, before 1970 too: a
/// damaged or sign-extended header must print, not panic. A value that
/// saturated is marked as such.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000_000);
        let micros = self.0.rem_euclid(1_000_000_000) / 1_000;
        let (year, month, day) = civil_date(secs.div_euclid(86_400));
        let of_day = secs.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        )?;
        if self.is_out_of_range() {
            f.write_str(" (out of range)")?;
        }
        Ok(())
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (negative
/// before it). Days are counted in 400-year eras of 146,097 days starting on
/// 1 March, so that the leap day is the last day of an era's year.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Milliseconds with microsecond precision, the unit of every duration in
/// pgreach's output.
pub fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// A short human form of a duration for tables: `850µs`, `12.3ms`, `4.05s`, `2m07s`.
pub fn short(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else if us < 60_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_rfc3339_utc_micros() {
        let t = Timestamp::from_secs_nanos(1_700_000_000, 123_456_789);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456Z");
    }

    #[test]
    fn displays_any_instant_without_panicking() {
        let cases = [
            (0, "1970-01-01T00:00:00.000000Z"),
            (-1_000, "1969-12-31T23:59:59.999999Z"),
            // A classic pcap's seconds 0x80000000, sign-extended by libpcap.
            (-2_147_483_648_000_000_000, "1901-12-13T20:45:52.000000Z"),
            (2_147_483_648_000_000_000, "2038-01-19T03:14:08.000000Z"),
            // The last second a 32-bit unsigned field can hold.
            (4_294_967_295_000_000_000, "2106-02-07T06:28:15.000000Z"),
            (951_782_400_000_000_000, "2000-02-29T00:00:00.000000Z"),
            (i64::MIN, "1677-09-21T00:12:43.145224Z (out of range)"),
            (i64::MAX, "2262-04-11T23:47:16.854775Z (out of range)"),
        ];
        for (nanos, text) in cases {
            assert_eq!(Timestamp::from_nanos(nanos).to_string(), text, "{nanos}");
        }
    }

    #[test]
    fn civil_dates_agree_with_counting_days() {
        // Walk day by day from 1600 to 2400 and compare with a plain count.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = -135_140; // 1600-01-01
        for year in 1600..2400 {
            for month in 1..=12u32 {
                let len = match month {
                    2 if leap(year) => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                for day in 1..=len {
                    assert_eq!(civil_date(days), (year, month, day));
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn since_saturates_when_time_steps_back() {
        let a = Timestamp::from_nanos(1_000);
        let b = Timestamp::from_nanos(400);
        assert_eq!(b.since(a), Duration::ZERO);
        assert_eq!(a.since(b), Duration::from_nanos(600));
    }

    #[test]
    fn short_forms() {
        assert_eq!(short(Duration::from_micros(850)), "850µs");
        assert_eq!(short(Duration::from_micros(12_340)), "12.3ms");
        assert_eq!(short(Duration::from_millis(4_050)), "4.05s");
        assert_eq!(short(Duration::from_secs(127)), "2m07s");
    }
}
