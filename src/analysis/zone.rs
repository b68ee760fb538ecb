//! The time zone people read a report in (`--tz`: UTC by default, the
//! host's local zone, or a fixed offset), and the times they type into
//! `--since`/`--until`: RFC 3339 with any offset, a date-time with an
//! explicit zone, or a time of day on the capture's date. JSON and CSV stay
//! in UTC; this is for what people read.

use std::time::Duration;

use jiff::tz::{Offset, TimeZone};
use jiff::Zoned;

use crate::time::Timestamp;

/// A time zone to print and read times in.
#[derive(Debug, Clone)]
pub struct Zone {
    tz: TimeZone,
    /// What headers call it: `UTC`, `local`, `UTC+01:00`.
    name: String,
}

impl Default for Zone {
    fn default() -> Zone {
        Zone::utc()
    }
}

impl Zone {
    pub fn utc() -> Zone {
        Zone { tz: TimeZone::UTC, name: "UTC".to_owned() }
    }

    /// The host's zone (read by the caller, e.g. from /etc/localtime).
    pub fn local(tz: TimeZone) -> Zone {
        let name = tz.iana_name().map_or_else(|| "local".to_owned(), str::to_owned);
        Zone { tz, name }
    }

    /// `--tz` values: `UTC`, `±HH:MM` (`+01:00`, `-05:30`). `local` is the
    /// caller's, which reads the system's zone.
    pub fn parse_fixed(s: &str) -> Result<Zone, String> {
        if s.eq_ignore_ascii_case("utc") || s == "Z" {
            return Ok(Zone::utc());
        }
        let bad = || format!("{s:?}: not a zone (UTC, local, or an offset such as +01:00 or -05:30)");
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if !(0..=18).contains(&h) || !(0..60).contains(&m) || h.to_string().len() > 2 {
            return Err(bad());
        }
        let seconds = sign * (h * 3600 + m * 60);
        let offset = Offset::from_seconds(seconds).map_err(|_| bad())?;
        Ok(Zone { tz: TimeZone::fixed(offset), name: format!("UTC{s}") })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_utc(&self) -> bool {
        self.name == "UTC"
    }

    fn zoned(&self, t: Timestamp) -> Option<Zoned> {
        jiff::Timestamp::from_nanosecond(i128::from(t.as_nanos())).ok().map(|ts| ts.to_zoned(self.tz.clone()))
    }

    /// The calendar date of `t` in this zone, `2026-11-24`.
    pub fn date(&self, t: Timestamp) -> String {
        self.zoned(t).map_or_else(|| t.to_string(), |z| z.strftime("%Y-%m-%d").to_string())
    }

    /// The time of day with milliseconds, `09:25:54.541`; with the date
    /// before it when `with_date`.
    pub fn clock(&self, t: Timestamp, with_date: bool) -> String {
        let format = if with_date { "%Y-%m-%d %H:%M:%S%.3f" } else { "%H:%M:%S%.3f" };
        self.zoned(t).map_or_else(|| t.to_string(), |z| z.strftime(format).to_string())
    }

    /// A full instant: RFC 3339 with microseconds, `Z` in UTC and the
    /// offset elsewhere.
    pub fn instant(&self, t: Timestamp) -> String {
        if self.is_utc() {
            return t.to_string();
        }
        self.zoned(t).map_or_else(|| t.to_string(), |z| z.strftime("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string())
    }

    /// The instant at `time_of_day` on the date `reference` has in this zone.
    pub fn on_date_of(&self, reference: Timestamp, time_of_day: Duration) -> Timestamp {
        let Some(z) = self.zoned(reference) else { return reference };
        let Ok(midnight) = z.start_of_day() else { return reference };
        let nanos = midnight.timestamp().as_nanosecond() + time_of_day.as_nanos() as i128;
        Timestamp::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }
}

/// Parses an absolute time as people type it: RFC 3339 with `Z` or any
/// offset (`2026-11-24T09:26:00+01:00`), or a date-time with its zone in
/// brackets (`2026-11-24T09:26:00[Europe/Berlin]`). A date-time with no zone
/// at all is refused: whose 09:26 it means cannot be known.
pub fn parse_instant(s: &str) -> Result<Timestamp, String> {
    let from = |ts: jiff::Timestamp| Timestamp::from_nanos(i64::try_from(ts.as_nanosecond()).unwrap_or(i64::MAX));
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(from(ts));
    }
    if let Ok(z) = s.parse::<Zoned>() {
        return Ok(from(z.timestamp()));
    }
    Err(format!(
        "{s:?}: not a time with its zone; write 2026-11-24T09:26:00Z, 2026-11-24T09:26:00+01:00, \
         2026-11-24T09:26:00[Europe/Berlin], 09:26:00 (on the capture's date, in --tz) or +90s (after the \
         capture's start)"
    ))
}

/// Parses a time of day, `09:26` or `09:26:00` or `09:26:00.5`.
pub fn parse_time_of_day(s: &str) -> Option<Duration> {
    // jiff would read the time out of a whole date-time; only a bare time is one.
    let bare = s.bytes().all(|b| b.is_ascii_digit() || b == b':' || b == b'.');
    if !bare {
        return None;
    }
    let t: jiff::civil::Time = s.parse().ok()?;
    let nanos = (i64::from(t.hour()) * 3600 + i64::from(t.minute()) * 60 + i64::from(t.second())) * 1_000_000_000
        + i64::from(t.subsec_nanosecond());
    Some(Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Timestamp {
        parse_instant(rfc3339).unwrap()
    }

    #[test]
    fn instants_with_any_offset_or_zone_and_never_without() {
        let utc = at("2026-11-24T08:26:00Z");
        assert_eq!(at("2026-11-24T09:26:00+01:00"), utc);
        assert_eq!(at("2026-11-24T03:26:00-05:00"), utc);
        assert_eq!(at("2026-11-24T09:26:00[Europe/Berlin]"), utc);
        let refused = parse_instant("2026-11-24 09:26:00").unwrap_err();
        assert!(refused.contains("2026-11-24T09:26:00+01:00"), "{refused}");
        assert!(parse_instant("yesterday").is_err());
    }

    #[test]
    fn printing_in_a_zone_and_a_time_of_day_on_the_capture_date() {
        let t = at("2026-11-24T23:30:00.123Z");
        let plus_one = Zone::parse_fixed("+01:00").unwrap();
        assert_eq!(plus_one.clock(t, false), "00:30:00.123");
        assert_eq!(plus_one.clock(t, true), "2026-11-25 00:30:00.123");
        assert_eq!(plus_one.date(t), "2026-11-25");
        assert_eq!(plus_one.instant(t), "2026-11-25T00:30:00.123000+01:00");
        assert_eq!(Zone::utc().instant(t), t.to_string());
        assert_eq!(Zone::utc().clock(t, false), "23:30:00.123");
        assert_eq!(parse_time_of_day("2026-11-24T09:26:00+01:00"), None, "a date-time is not a time of day");
        let nine = parse_time_of_day("09:26").unwrap();
        assert_eq!(Zone::utc().on_date_of(t, nine), at("2026-11-24T09:26:00Z"));
        assert_eq!(plus_one.on_date_of(t, nine), at("2026-11-25T08:26:00Z"), "the capture's date in that zone");
        for bad in ["01:00", "+1", "+25:00", "+01:60", "CET"] {
            assert!(Zone::parse_fixed(bad).is_err(), "{bad}");
        }
        assert_eq!(Zone::parse_fixed("-05:30").unwrap().name(), "UTC-05:30");
    }
}
