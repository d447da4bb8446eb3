//! Spoken times across a DST change in two zones. Every expected instant
//! was worked out by hand from the zones' published rules for 2026
//! (America/New_York: clocks forward on 8 March at 02:00, back on
//! 1 November at 02:00; Europe/Berlin: forward on 29 March at 02:00, back
//! on 25 October at 03:00), not from this code's output.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use voice::when::{find, Clock, Direction};
use voice::words::tokens;

/// `(zone, now as RFC 3339 with offset, what is said, the instant expected)`.
const POINTS: &[(&str, &str, &str, &str)] = &[
    // New York, spring forward (Sat 7 March -> Sun 8 March).
    ("America/New_York", "2026-03-07T12:00:00-05:00", "tomorrow at nine a.m.", "2026-03-08T09:00:00-04:00"),
    ("America/New_York", "2026-03-07T12:00:00-05:00", "tomorrow at 2:30 am", "2026-03-08T03:30:00-04:00"),
    ("America/New_York", "2026-03-08T01:30:00-05:00", "in two hours", "2026-03-08T04:30:00-04:00"),
    ("America/New_York", "2026-03-07T23:00:00-05:00", "eight thirty", "2026-03-08T08:30:00-04:00"),
    ("America/New_York", "2026-03-05T10:00:00-05:00", "Friday at six p.m.", "2026-03-06T18:00:00-05:00"),
    ("America/New_York", "2026-03-07T10:00:00-05:00", "next Monday at 10", "2026-03-09T10:00:00-04:00"),
    ("America/New_York", "2026-03-07T10:00:00-05:00", "Sunday evening", "2026-03-08T19:00:00-04:00"),
    ("America/New_York", "2026-03-07T10:00:00-05:00", "in three days", "2026-03-10T10:00:00-04:00"),
    // New York, fall back (Sat 31 October -> Sun 1 November).
    ("America/New_York", "2026-10-31T20:00:00-04:00", "tomorrow at 1:30 am", "2026-11-01T01:30:00-04:00"),
    ("America/New_York", "2026-10-31T20:00:00-04:00", "tomorrow at noon", "2026-11-01T12:00:00-05:00"),
    ("America/New_York", "2026-11-01T00:30:00-04:00", "in two hours", "2026-11-01T01:30:00-05:00"),
    ("America/New_York", "2026-10-30T19:00:00-04:00", "Friday at six p.m.", "2026-11-06T18:00:00-05:00"),
    ("America/New_York", "2026-10-30T17:00:00-04:00", "Friday at six p.m.", "2026-10-30T18:00:00-04:00"),
    ("America/New_York", "2026-10-31T09:00:00-04:00", "Monday at 9:15 in the morning", "2026-11-02T09:15:00-05:00"),
    // Berlin, spring forward (Sat 28 March -> Sun 29 March).
    ("Europe/Berlin", "2026-03-28T10:00:00+01:00", "tomorrow at nine a.m.", "2026-03-29T09:00:00+02:00"),
    ("Europe/Berlin", "2026-03-28T10:00:00+01:00", "next Monday", "2026-03-30T09:00:00+02:00"),
    ("Europe/Berlin", "2026-03-29T01:00:00+01:00", "in an hour and a half", "2026-03-29T03:30:00+02:00"),
    ("Europe/Berlin", "2026-03-28T21:00:00+01:00", "at 2:30 am tomorrow", "2026-03-29T03:30:00+02:00"),
    ("Europe/Berlin", "2026-03-28T10:00:00+01:00", "the day after tomorrow at quarter to ten", "2026-03-30T09:45:00+02:00"),
    // Berlin, fall back (Sat 24 October -> Sun 25 October).
    ("Europe/Berlin", "2026-10-24T22:00:00+02:00", "eight thirty", "2026-10-25T08:30:00+01:00"),
    ("Europe/Berlin", "2026-10-24T22:00:00+02:00", "tomorrow at 2:30 am", "2026-10-25T02:30:00+02:00"),
    ("Europe/Berlin", "2026-10-25T01:30:00+02:00", "in two hours", "2026-10-25T02:30:00+01:00"),
    ("Europe/Berlin", "2026-10-22T12:00:00+02:00", "Friday at six p.m.", "2026-10-23T18:00:00+02:00"),
    ("Europe/Berlin", "2026-10-24T12:00:00+02:00", "Friday at six p.m.", "2026-10-30T18:00:00+01:00"),
    ("Europe/Berlin", "2026-10-24T12:00:00+02:00", "October 26th at 7:45 pm", "2026-10-26T19:45:00+01:00"),
    ("Europe/Berlin", "2026-10-24T12:00:00+02:00", "tonight", "2026-10-24T21:00:00+02:00"),
];

/// `(zone, now, what is said, start, end)` of periods.
const PERIODS: &[(&str, &str, &str, &str, &str)] = &[
    // The day before is 25 hours long.
    ("America/New_York", "2026-11-02T10:00:00-05:00", "yesterday", "2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"),
    ("America/New_York", "2026-03-09T10:00:00-04:00", "last week", "2026-03-02T00:00:00-05:00", "2026-03-09T00:00:00-04:00"),
    ("America/New_York", "2026-03-07T10:00:00-05:00", "this week", "2026-03-02T00:00:00-05:00", "2026-03-09T00:00:00-04:00"),
    // Hours are exact: 24 of them before 10:00 on the short day began at 09:00.
    ("America/New_York", "2026-03-08T10:00:00-04:00", "the last 24 hours", "2026-03-07T09:00:00-05:00", "2026-03-08T10:00:00-04:00"),
    ("Europe/Berlin", "2026-11-02T10:00:00+01:00", "last week", "2026-10-26T00:00:00+01:00", "2026-11-02T00:00:00+01:00"),
    ("Europe/Berlin", "2026-10-26T10:00:00+01:00", "yesterday", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00"),
    ("Europe/Berlin", "2026-03-30T10:00:00+02:00", "last month", "2026-02-01T00:00:00+01:00", "2026-03-01T00:00:00+01:00"),
    ("Europe/Berlin", "2026-03-27T10:00:00+01:00", "next week", "2026-03-30T00:00:00+02:00", "2026-04-06T00:00:00+02:00"),
];

fn clock(zone: &str, now: &str) -> Clock {
    Clock { now: now.parse::<Timestamp>().expect("now"), tz: TimeZone::get(zone).expect("zone") }
}

fn offset(z: &jiff::Zoned) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

#[test]
fn points_across_dst_in_two_zones() {
    let mut wrong = Vec::new();
    for &(zone, now, said, want) in POINTS {
        let c = clock(zone, now);
        let got = find(&tokens(said), &c, Direction::Future).and_then(|f| f.point(&c)).map(|p| offset(&p.at));
        if got.as_deref() != Some(want) {
            wrong.push(format!("{zone} at {now}: {said:?} -> {got:?}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), POINTS.len(), wrong.join("\n"));
}

#[test]
fn periods_across_dst_in_two_zones() {
    let mut wrong = Vec::new();
    for &(zone, now, said, start, end) in PERIODS {
        let c = clock(zone, now);
        let got = find(&tokens(said), &c, Direction::Past).and_then(|f| f.period(&c)).map(|p| (offset(&p.start), offset(&p.end)));
        if got != Some((start.to_owned(), end.to_owned())) {
            wrong.push(format!("{zone} at {now}: {said:?} -> {got:?}, want {start} .. {end}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), PERIODS.len(), wrong.join("\n"));
}

#[test]
fn a_day_and_its_time_said_apart_are_one_instant() {
    let c = clock("America/New_York", "2026-10-31T20:00:00-04:00");
    let f = find(&tokens("cancel tomorrow's post at nine a.m."), &c, Direction::Future).expect("found");
    assert_eq!(offset(&f.point(&c).expect("point").at), "2026-11-01T09:00:00-05:00");
}

#[test]
fn counts_are_not_times() {
    let c = clock("UTC", "2026-12-06T10:00:00Z");
    assert_eq!(find(&tokens("write three posts about coffee"), &c, Direction::Future), None);
    assert_eq!(find(&tokens("give me 5 tweets"), &c, Direction::Future), None);
}
