//! Time in an account's zone (`jiff`, IANA zones, DST-correct both ways):
//! reading a requested time, the local day a daily cap counts, and the
//! next free slot of a weekly schedule.
//!
//! Instants are stored as UTC milliseconds and never shifted: a local time
//! is turned into an instant once, in the zone the account has then. A
//! local time that does not exist (the hour skipped when clocks go
//! forward) is refused with the reason when a person asked for it, and
//! moved past the gap when it is a recurring slot; one that exists twice
//! (clocks go back) is the first of the two.

use std::collections::BTreeMap;

use jiff::civil::{DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, Disambiguation, TimeZone};
use jiff::{Timestamp, Zoned};

/// A time zone by IANA name, or why not.
pub fn zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| format!("`{name}` is not an IANA time zone (such as Europe/Paris or America/New_York)"))
}

/// A requested time: RFC 3339 with an offset (`2026-03-29T09:00:00+02:00`,
/// `...Z`) as it says, or a local date-time without one
/// (`2026-03-29T09:00`) in `tz`. Unix ms.
pub fn parse_time(text: &str, tz: &TimeZone) -> Result<i64, String> {
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    let civil: DateTime =
        text.parse().map_err(|_| format!("`{text}` is not a time: use RFC 3339 (2026-03-29T09:00:00Z) or a local 2026-03-29T09:00"))?;
    let ambiguous = tz.to_ambiguous_zoned(civil);
    if matches!(ambiguous.offset(), AmbiguousOffset::Gap { .. }) {
        return Err(format!(
            "{civil} does not exist in {}: the clocks skip it (daylight saving time); pick a time after the change",
            tz.iana_name().unwrap_or("the account's zone")
        ));
    }
    let zoned = ambiguous.disambiguate(Disambiguation::Earlier).map_err(|e| e.to_string())?;
    Ok(zoned.timestamp().as_millisecond())
}

/// The local day around `at_ms` in `tz`: `[midnight, next midnight)` in
/// Unix ms (23 or 25 hours on a DST change).
pub fn local_day(tz: &TimeZone, at_ms: i64) -> (i64, i64) {
    let at = Timestamp::from_millisecond(at_ms).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned(tz.clone());
    let start = at.start_of_day().unwrap_or_else(|_| at.clone());
    let end = start.tomorrow().and_then(|t| t.start_of_day()).map(|z| z.timestamp().as_millisecond());
    (start.timestamp().as_millisecond(), end.unwrap_or(at_ms + 86_400_000))
}

/// A weekday's key in a campaign's slots.
pub fn weekday_key(w: Weekday) -> &'static str {
    match w {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

/// Check a weekly schedule: weekday keys (`mon`..`sun`) to `HH:MM` times.
pub fn check_slots(slots: &BTreeMap<String, Vec<String>>) -> Result<(), String> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    for (day, times) in slots {
        if !DAYS.contains(&day.as_str()) {
            return Err(format!("`{day}` is not a weekday (use {})", DAYS.join(", ")));
        }
        for t in times {
            t.parse::<Time>().map_err(|_| format!("`{t}` on {day} is not a time of day (HH:MM)"))?;
        }
    }
    Ok(())
}

/// The first slot of `slots` in `tz` strictly after `after_ms` that is not
/// in `taken` (Unix ms), within the next eight weeks.
pub fn next_slot(slots: &BTreeMap<String, Vec<String>>, tz: &TimeZone, after_ms: i64, taken: &[i64]) -> Option<i64> {
    let after = Timestamp::from_millisecond(after_ms).ok()?.to_zoned(tz.clone());
    let mut date = after.date();
    for _ in 0..56 {
        let mut times: Vec<Time> =
            slots.get(weekday_key(date.weekday())).into_iter().flatten().filter_map(|t| t.parse::<Time>().ok()).collect();
        times.sort();
        for t in times {
            // A slot in the skipped hour is taken just after the gap.
            let Ok(z) = date.to_datetime(t).to_zoned(tz.clone()) else { continue };
            let ms = z.timestamp().as_millisecond();
            if ms > after_ms && !taken.contains(&ms) {
                return Some(ms);
            }
        }
        date = date.tomorrow().ok()?;
    }
    None
}

/// The next time of a campaign's schedule strictly after `after_ms`: the
/// earlier of its weekly slots and its cron expression, not in `taken`,
/// before its end; None past its end or once it has `max_posts` (`made`
/// so far).
pub fn campaign_next(c: &crate::model::Campaign, tz: &TimeZone, after_ms: i64, taken: &[i64], made: i64) -> Option<i64> {
    if c.max_posts.is_some_and(|m| made >= m) {
        return None;
    }
    let weekly = next_slot(&c.slots, tz, after_ms, taken);
    let cron = c.cron().and_then(|cron| {
        let mut at = after_ms;
        // Skip occurrences already taken (bounded: a year of minutes is never scanned).
        for _ in 0..1000 {
            let next = cron.next_after(tz, at)?;
            if !taken.contains(&next) {
                return Some(next);
            }
            at = next;
        }
        None
    });
    let next = match (weekly, cron) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }?;
    (c.ends_ms.is_none_or(|end| next < end)).then_some(next)
}

/// `ms` in `tz`, for messages (`2026-03-29T09:00:00+02:00[Europe/Paris]`).
pub fn show(ms: i64, tz: &TimeZone) -> String {
    Timestamp::from_millisecond(ms).map(|t| Zoned::new(t, tz.clone()).to_string()).unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("instant").as_millisecond()
    }

    #[test]
    fn local_times_across_both_dst_changes() {
        let paris = zone("Europe/Paris").expect("zone");
        // Spring forward (2026-03-29, 02:00 -> 03:00): 02:30 does not exist.
        let err = parse_time("2026-03-29T02:30", &paris).expect_err("gap");
        assert!(err.contains("does not exist"), "{err}");
        assert_eq!(parse_time("2026-03-29T09:00", &paris), Ok(ms("2026-03-29T07:00:00Z")));
        assert_eq!(parse_time("2026-03-28T09:00", &paris), Ok(ms("2026-03-28T08:00:00Z")));
        // Fall back (2026-10-25, 03:00 -> 02:00): 02:30 twice, the first.
        assert_eq!(parse_time("2026-10-25T02:30", &paris), Ok(ms("2026-10-25T00:30:00Z")));
        // With an offset, as said.
        assert_eq!(parse_time("2026-03-29T09:00:00-04:00", &paris), Ok(ms("2026-03-29T13:00:00Z")));
        assert!(zone("Mars/Olympus").is_err());
        assert!(parse_time("tomorrow", &paris).is_err());

        // A 23-hour and a 25-hour day.
        let (s, e) = local_day(&paris, ms("2026-03-29T12:00:00Z"));
        assert_eq!((s, e - s), (ms("2026-03-28T23:00:00Z"), 23 * 3_600_000));
        let (s, e) = local_day(&paris, ms("2026-10-25T12:00:00Z"));
        assert_eq!((s, e - s), (ms("2026-10-24T22:00:00Z"), 25 * 3_600_000));
    }

    #[test]
    fn weekly_slots_keep_their_local_time_over_dst() {
        let ny = zone("America/New_York").expect("zone");
        let slots: BTreeMap<String, Vec<String>> =
            [("sat".to_owned(), vec!["09:00".to_owned()]), ("sun".to_owned(), vec!["02:30".to_owned(), "09:00".to_owned()])].into();
        check_slots(&slots).expect("valid");
        // US spring forward: Sunday 2026-03-08, 02:00 -> 03:00.
        let sat = next_slot(&slots, &ny, ms("2026-03-07T00:00:00Z"), &[]).expect("slot");
        assert_eq!(sat, ms("2026-03-07T14:00:00Z")); // 09:00 EST
        let gap = next_slot(&slots, &ny, sat, &[]).expect("slot");
        assert_eq!(gap, ms("2026-03-08T07:30:00Z")); // 02:30 skipped: 03:30 EDT
        let sun = next_slot(&slots, &ny, gap, &[]).expect("slot");
        assert_eq!(sun, ms("2026-03-08T13:00:00Z")); // 09:00 EDT
        assert_eq!(next_slot(&slots, &ny, ms("2026-03-07T00:00:00Z"), &[sat, gap]), Some(sun));
        let bad: BTreeMap<String, Vec<String>> = [("funday".to_owned(), vec!["09:00".to_owned()])].into();
        assert!(check_slots(&bad).is_err());
        let bad: BTreeMap<String, Vec<String>> = [("mon".to_owned(), vec!["25:00".to_owned()])].into();
        assert!(check_slots(&bad).is_err());
    }
}
