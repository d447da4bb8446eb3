//! Cron expressions for recurring schedules: five fields, `minute hour
//! day-of-month month day-of-week`, each `*`, a number, a range `a-b`, a
//! step `*/n` or `a-b/n`, or a comma list of those; months and weekdays
//! also by name (`jan`, `mon`), Sunday as 0 or 7. As in Vixie cron, when
//! both day fields are restricted a day matching either is taken.
//!
//! Times are the account's local times ([`Cron::next_after`] takes the
//! zone): an occurrence in the hour the clocks skip does not happen, one in
//! the hour they repeat happens once (the first).

use jiff::civil::{Date, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field as a bit set of the values in `lo..=hi` it allows.
fn field(text: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + name_base);
        }
        s.parse::<u32>().map_err(|_| format!("`{s}` is not a number"))
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| format!("`{s}` is not a step")).and_then(|s| if s == 0 { Err("a step of 0".to_owned()) } else { Ok(s) })?),
            None => (item, 1),
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, hi),
                None => (value(r)?, value(r)?),
            },
        };
        if a < lo || b > hi || a > b {
            return Err(format!("`{item}` is outside {lo}-{hi}"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            let Some(next) = v.checked_add(step) else { break };
            v = next;
        }
    }
    Ok(bits)
}

impl std::str::FromStr for Cron {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [m, h, dom, mon, dow] = parts.as_slice() else {
            return Err(format!("`{s}`: five fields (minute hour day-of-month month day-of-week), e.g. `0 9 * * mon-fri`"));
        };
        let mut weekdays = field(dow, 0, 7, &WEEKDAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too.
        }
        Ok(Self {
            minutes: field(m, 0, 59, &[], 0)?,
            hours: field(h, 0, 23, &[], 0)?,
            days: field(dom, 1, 31, &[], 0)?,
            months: field(mon, 1, 12, &MONTHS, 1)?,
            weekdays,
            days_any: *dom == "*",
            weekdays_any: *dow == "*",
        })
    }
}

impl Cron {
    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first occurrence in `tz` strictly after `after_ms` (Unix ms),
    /// within the next two years.
    pub fn next_after(&self, tz: &TimeZone, after_ms: i64) -> Option<i64> {
        let start = Timestamp::from_millisecond(after_ms).ok()?.to_zoned(tz.clone());
        let mut date = start.date();
        for _ in 0..732 {
            if self.day_matches(date) {
                for h in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                    for m in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                        let Ok(t) = Time::new(h as i8, m as i8, 0, 0) else { continue };
                        let ambiguous = tz.to_ambiguous_zoned(date.to_datetime(t));
                        let ts = match ambiguous.offset() {
                            AmbiguousOffset::Gap { .. } => continue,
                            _ => ambiguous.earlier().ok()?.timestamp().as_millisecond(),
                        };
                        if ts > after_ms {
                            return Some(ts);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("instant").as_millisecond()
    }

    #[test]
    fn occurrences_in_local_time() {
        let paris = TimeZone::get("Europe/Paris").expect("zone");
        let weekdays: Cron = "30 9 * * mon-fri".parse().expect("cron");
        // Friday 2026-03-27 10:00 Paris -> Monday 09:30, now summer time (UTC+2).
        assert_eq!(weekdays.next_after(&paris, ms("2026-03-27T09:00:00Z")), Some(ms("2026-03-30T07:30:00Z")));
        let every: Cron = "*/20 8-9 1,15 * *".parse().expect("cron");
        assert_eq!(every.next_after(&paris, ms("2026-01-01T07:20:00Z")), Some(ms("2026-01-01T07:40:00Z")));
        assert_eq!(every.next_after(&paris, ms("2026-01-01T08:40:00Z")), Some(ms("2026-01-15T07:00:00Z")));
        // 02:30 on the spring-forward Sunday does not exist: the next day's.
        let night: Cron = "30 2 * * *".parse().expect("cron");
        assert_eq!(night.next_after(&paris, ms("2026-03-28T12:00:00Z")), Some(ms("2026-03-30T00:30:00Z")));
        // Fall back: 02:30 happens once, the first time.
        assert_eq!(night.next_after(&paris, ms("2026-10-24T12:00:00Z")), Some(ms("2026-10-25T00:30:00Z")));
        assert_eq!(night.next_after(&paris, ms("2026-10-25T00:30:00Z")), Some(ms("2026-10-26T01:30:00Z")));
        // Both day fields: either (the 13th, or any Friday).
        let either: Cron = "0 12 13 * fri".parse().expect("cron");
        assert_eq!(either.next_after(&TimeZone::UTC, ms("2026-02-10T00:00:00Z")), Some(ms("2026-02-13T12:00:00Z")));
        assert_eq!(either.next_after(&TimeZone::UTC, ms("2026-02-13T12:00:00Z")), Some(ms("2026-02-20T12:00:00Z")));
        let sunday: Cron = "0 0 * * 7".parse().expect("cron");
        assert_eq!(sunday.next_after(&TimeZone::UTC, ms("2026-02-10T00:00:00Z")), Some(ms("2026-02-15T00:00:00Z")));
        for bad in ["* * * *", "60 * * * *", "0 9 * * funday", "*/0 * * * *", "5-1 * * * *"] {
            assert!(bad.parse::<Cron>().is_err(), "{bad}");
        }
    }
}
