//! The grammar of spoken time, on tokens from [`crate::words::tokens`].

use jiff::civil::{Date, Time, Weekday};
use jiff::{SignedDuration, ToSpan};

use super::{Clock, Direction, Found, Roll, Spoken};
use crate::words::{number, ordinal};

type Toks<'a> = &'a [String];

fn word(t: Toks<'_>, i: usize) -> &str {
    t.get(i).map_or("", String::as_str)
}

/// What an expression gave: a day and a time said apart ("tomorrow's
/// post at 9") are put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Whole,
    DayOnly,
    TimeOnly,
}

/// The longest time expression in `t` (the earliest of equals); a day
/// said apart from its time ("cancel tomorrow's post at nine") joins it.
pub fn find(t: &[String], clock: &Clock, dir: Direction) -> Option<Found> {
    let mut all: Vec<(Found, Kind)> = Vec::new();
    for start in 0..t.len() {
        if let Some((spoken, len, kind)) = at(&t[start..], clock, dir) {
            all.push((Found { start, len, spoken, also: None }, kind));
        }
    }
    let (best, kind) = all.iter().max_by(|a, b| a.0.len.cmp(&b.0.len).then(b.0.start.cmp(&a.0.start)))?.clone();
    let other = match kind {
        Kind::DayOnly => Kind::TimeOnly,
        Kind::TimeOnly => Kind::DayOnly,
        Kind::Whole => return Some(best),
    };
    let apart = |f: &Found| f.start + f.len <= best.start || best.start + best.len <= f.start;
    let Some((partner, _)) = all.iter().filter(|(f, k)| *k == other && apart(f)).max_by_key(|(f, _)| f.len) else { return Some(best) };
    let (day, time) = if kind == Kind::DayOnly { (&best, partner) } else { (partner, &best) };
    match (&day.spoken, &time.spoken) {
        (Spoken::Day { date, roll, .. }, Spoken::Day { time: Some(_), .. }) => {
            // The time's am/pm was settled as if no day was said: settle it for this day.
            let (spec, _) = self::time(&t[time.start..])?;
            let tm = spec.on_day(spec.hint)?;
            let spoken = Spoken::Day { date: *date, time: Some(tm), roll: *roll };
            Some(Found { start: best.start, len: best.len, spoken, also: Some((partner.start, partner.len)) })
        }
        _ => Some(best),
    }
}

/// A time expression starting at `t[0]`, with its length and kind.
fn at(t: Toks, clock: &Clock, dir: Direction) -> Option<(Spoken, usize, Kind)> {
    if let Some((s, n)) = instant(t, clock).or_else(|| period(t, clock)) {
        return Some((s, n, Kind::Whole));
    }
    // A day, then maybe its time: "tomorrow at 9 am", "Friday evening".
    if let Some((d, n)) = day(t, clock, dir) {
        let (time, k) = match time(&t[n..]) {
            Some((spec, k)) => (Some(spec), k),
            None => (None, 0),
        };
        let hint = d.hint.or(time.and_then(|s| s.hint));
        let kind = if time.is_none() && d.hint.is_none() { Kind::DayOnly } else { Kind::Whole };
        let time = match time {
            Some(spec) => Some(spec.on_day(hint)?),
            None => d.hint.map(Hint::default_time),
        };
        return Some((Spoken::Day { date: d.date, time, roll: d.roll }, n + k, kind));
    }
    // A time, then maybe its day: "at 6 pm on Friday", "nine tomorrow".
    let (spec, n) = time(t)?;
    let rest = &t[n..];
    let skip = usize::from(word(rest, 0) == "on");
    if let Some((d, k)) = day(&rest[skip..], clock, dir) {
        let time = spec.on_day(d.hint.or(spec.hint))?;
        return Some((Spoken::Day { date: d.date, time: Some(time), roll: d.roll }, n + skip + k, Kind::Whole));
    }
    // Only a time: whichever comes next.
    let (date, time) = spec.next(clock)?;
    Some((Spoken::Day { date, time: Some(time), roll: Roll::Day }, n, Kind::TimeOnly))
}

/// "now", "in two hours", "in three days", "two hours from now".
fn instant(t: Toks, clock: &Clock) -> Option<(Spoken, usize)> {
    let now = Spoken::Instant(clock.now);
    match (word(t, 0), word(t, 1)) {
        ("now" | "immediately", _) => return Some((now, 1)),
        ("right", "now" | "away") => return Some((now, 2)),
        _ => {}
    }
    let (n, len) = if word(t, 0) == "in" {
        let (d, k) = duration(&t[1..])?;
        (d, 1 + k)
    } else {
        let (d, k) = duration(t)?;
        if (word(t, k), word(t, k + 1)) != ("from", "now") {
            return None;
        }
        (d, k + 2)
    };
    Some((Spoken::Instant(add(clock, n)?), len))
}

/// An amount of time: "two hours", "an hour and a half", "half an hour", "three days".
fn duration(t: Toks) -> Option<(Amount, usize)> {
    if (word(t, 0), word(t, 1), word(t, 2)) == ("half", "an", "hour") {
        return Some((Amount::Exact(SignedDuration::from_mins(30)), 3));
    }
    let (n, k) = number(t)?;
    // Past a century nothing is meant (and jiff's spans end near 20,000 years).
    if n > 36_500 {
        return None;
    }
    let unit = word(t, k);
    let n = i64::from(n);
    let amount = match unit.trim_end_matches('s') {
        "minute" | "min" => Amount::Exact(SignedDuration::from_mins(n)),
        "hour" | "hr" => Amount::Exact(SignedDuration::from_hours(n)),
        "day" => Amount::Days(n),
        "week" => Amount::Days(7 * n),
        _ => return None,
    };
    // "an hour and a half"
    if let (Amount::Exact(d), ("and", "a", "half")) = (&amount, (word(t, k + 1), word(t, k + 2), word(t, k + 3))) {
        let half = if unit.starts_with("hour") { SignedDuration::from_mins(30) } else { SignedDuration::from_secs(30) };
        return Some((Amount::Exact(*d + half), k + 4));
    }
    Some((amount, k + 1))
}

/// Hours move the instant; days move the calendar.
#[derive(Debug, Clone, Copy)]
enum Amount {
    Exact(SignedDuration),
    Days(i64),
}

fn add(clock: &Clock, a: Amount) -> Option<jiff::Timestamp> {
    match a {
        Amount::Exact(d) => clock.now.checked_add(d).ok(),
        Amount::Days(n) => Some(clock.now.to_zoned(clock.tz.clone()).checked_add(n.days()).ok()?.timestamp()),
    }
}

fn sub(clock: &Clock, a: Amount) -> Option<jiff::Timestamp> {
    match a {
        Amount::Exact(d) => clock.now.checked_sub(d).ok(),
        Amount::Days(n) => Some(clock.now.to_zoned(clock.tz.clone()).checked_sub(n.days()).ok()?.timestamp()),
    }
}

/// "this week", "last month", "next weekend", "the last 7 days", "the past week", "the next two hours".
fn period(t: Toks, clock: &Clock) -> Option<(Spoken, usize)> {
    let the = usize::from(word(t, 0) == "the");
    let t2 = &t[the..];
    let which = word(t2, 0);
    let today = clock.today();
    if the == 1 && which == "weekend" {
        // "the weekend": this one.
        let (s, _) = period(&["this".to_owned(), "weekend".to_owned()], clock)?;
        return Some((s, 2));
    }
    let shift = match which {
        "this" | "current" => 0,
        "next" | "coming" => 1,
        "last" | "past" | "previous" => -1,
        _ => return None,
    };
    // "the last 7 days", "the next two hours": counted from now.
    if let Some((amount, k)) = duration(&t2[1..]) {
        let (start, end) = if shift > 0 { (clock.now, add(clock, amount)?) } else { (sub(clock, amount)?, clock.now) };
        return (shift != 0).then_some((Spoken::Span { start, end }, the + 1 + k));
    }
    // "the past week", "the last hour": one of the unit, counted from now.
    if the == 1 && which != "this" && which != "current" {
        let amount = match word(t2, 1) {
            "hour" => Some(Amount::Exact(SignedDuration::from_hours(1))),
            "day" => Some(Amount::Days(1)),
            "week" => Some(Amount::Days(7)),
            _ => None,
        };
        if let Some(a) = amount {
            let (start, end) = if shift > 0 { (clock.now, add(clock, a)?) } else { (sub(clock, a)?, clock.now) };
            return Some((Spoken::Span { start, end }, 3));
        }
    }
    let (start, end) = match word(t2, 1) {
        "week" => {
            let monday = today.checked_sub(i64::from(today.weekday().to_monday_zero_offset()).days()).ok()?;
            let start = monday.checked_add((7 * shift).days()).ok()?;
            (start, start.checked_add(7.days()).ok()?)
        }
        "weekend" => {
            let sat = if today.weekday() == Weekday::Sunday { today.yesterday().ok()? } else { today.nth_weekday(1, Weekday::Saturday).ok()? };
            let sat = if today.weekday() == Weekday::Saturday { today } else { sat };
            let start = sat.checked_add((7 * shift).days()).ok()?;
            (start, start.checked_add(2.days()).ok()?)
        }
        "month" => {
            let first = today.first_of_month().checked_add(shift.months()).ok()?;
            (first, first.checked_add(1.month()).ok()?)
        }
        "year" => {
            let first = Date::new(today.year() + shift as i16, 1, 1).ok()?;
            (first, Date::new(first.year() + 1, 1, 1).ok()?)
        }
        _ => return None,
    };
    Some((Spoken::Dates { start, end }, the + 2))
}

/// A day said: its date, how it rolls, and the part of the day it names.
struct Day {
    date: Date,
    roll: Roll,
    hint: Option<Hint>,
}

/// "morning", "afternoon", "evening", "night".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    Morning,
    Afternoon,
    Evening,
    Night,
}

impl Hint {
    fn of(w: &str) -> Option<Self> {
        Some(match w {
            "morning" => Self::Morning,
            "afternoon" => Self::Afternoon,
            "evening" => Self::Evening,
            "night" | "tonight" => Self::Night,
            _ => return None,
        })
    }

    /// The time a day part means when no time is said.
    fn default_time(self) -> Time {
        let h = match self {
            Self::Morning => 9,
            Self::Afternoon => 15,
            Self::Evening => 19,
            Self::Night => 21,
        };
        Time::constant(h, 0, 0, 0)
    }

    fn pm(self) -> bool {
        self != Self::Morning
    }
}

fn weekday(w: &str) -> Option<Weekday> {
    // Whole names only: "sat", "wed" and "sun" are words too.
    Some(match w.strip_suffix('s').unwrap_or(w) {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

fn month(w: &str) -> Option<i8> {
    const NAMES: [&str; 12] = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"];
    // Whole names (and "sept"): a month is only taken before a day number anyway.
    let w = if w == "sept" { "september" } else { w };
    NAMES.iter().position(|m| *m == w).map(|i| i as i8 + 1)
}

/// "today", "tonight", "tomorrow (morning)", "yesterday", "the day after
/// tomorrow", "(on) (this|next|last) Friday (evening)", "December 12th",
/// "the 12th (of December)".
fn day(t: Toks, clock: &Clock, dir: Direction) -> Option<(Day, usize)> {
    let today = clock.today();
    let on = usize::from(word(t, 0) == "on");
    let t = &t[on..];
    let plain = |date: Date, n: usize| Some((Day { date, roll: Roll::No, hint: None }, n));
    let (mut d, mut n) = match (word(t, 0), word(t, 1), word(t, 2), word(t, 3)) {
        ("the", "day", "after", "tomorrow") => plain(today.checked_add(2.days()).ok()?, 4)?,
        ("the", "day", "before", "yesterday") => plain(today.checked_sub(2.days()).ok()?, 4)?,
        ("today", ..) => plain(today, 1)?,
        ("tonight", ..) => (Day { date: today, roll: Roll::No, hint: Some(Hint::Night) }, 1),
        ("tomorrow", ..) => plain(today.tomorrow().ok()?, 1)?,
        ("yesterday", ..) => plain(today.yesterday().ok()?, 1)?,
        ("this", w, ..) if Hint::of(w).is_some() => (Day { date: today, roll: Roll::No, hint: Hint::of(w) }, 2),
        (w0, w1, ..) => {
            let (shift, k) = match w0 {
                "this" | "coming" => (0, 1),
                "next" => (1, 1),
                "last" | "previous" => (-1, 1),
                _ => (0, 0),
            };
            if let Some(wd) = weekday(if k == 1 { w1 } else { w0 }) {
                let date = match (shift, dir) {
                    (1, _) => today.nth_weekday(1, wd).ok()?,
                    (-1, _) => today.nth_weekday(-1, wd).ok()?,
                    (_, _) if today.weekday() == wd => today,
                    (_, Direction::Future) => today.nth_weekday(1, wd).ok()?,
                    (_, Direction::Past) => today.nth_weekday(-1, wd).ok()?,
                };
                let roll = if k == 0 && dir == Direction::Future { Roll::Week } else { Roll::No };
                (Day { date, roll, hint: None }, k + 1)
            } else {
                calendar_date(t, today, dir)?
            }
        }
    };
    if let Some(h) = Hint::of(word(t, n)) {
        d.hint = Some(h);
        n += 1;
    }
    Some((d, on + n))
}

/// "December 12(th)", "12th of December", "the 12th (of December)".
fn calendar_date(t: Toks, today: Date, dir: Direction) -> Option<(Day, usize)> {
    let (m, dnum, n) = if let Some(m) = month(word(t, 0)) {
        let the = usize::from(word(t, 1) == "the");
        let (d, k) = ordinal(&t[1 + the..]).or_else(|| number(&t[1 + the..]).filter(|&(d, _)| d <= 31))?;
        (Some(m), d, 1 + the + k)
    } else {
        let the = usize::from(word(t, 0) == "the");
        let (d, k) = ordinal(&t[the..])?;
        if word(t, the + k) == "of" {
            let m = month(word(t, the + k + 1))?;
            (Some(m), d, the + k + 2)
        } else if the == 1 {
            (None, d, the + k)
        } else {
            return None;
        }
    };
    let day = i8::try_from(dnum).ok()?;
    let date = match m {
        Some(m) => {
            let this = Date::new(today.year(), m, day).ok()?;
            match dir {
                Direction::Future if this < today => Date::new(today.year() + 1, m, day).ok()?,
                Direction::Past if this > today => Date::new(today.year() - 1, m, day).ok()?,
                _ => this,
            }
        }
        None => {
            let this = Date::new(today.year(), today.month(), day).ok()?;
            match dir {
                Direction::Future if this < today => this.checked_add(1.month()).ok()?,
                Direction::Past if this > today => this.checked_sub(1.month()).ok()?,
                _ => this,
            }
        }
    };
    Some((Day { date, roll: Roll::No, hint: None }, n))
}

/// A spoken time of day before am/pm is settled.
#[derive(Debug, Clone, Copy)]
struct TimeSpec {
    hour: u32,
    minute: u32,
    /// Some(true): pm; Some(false): am; None: not said.
    pm: Option<bool>,
    /// A part of the day said with it ("in the evening").
    hint: Option<Hint>,
    /// noon/midnight: no am/pm to settle.
    fixed: bool,
}

impl TimeSpec {
    fn with(self, hour: u32) -> Option<Time> {
        Time::new(i8::try_from(hour).ok()?, i8::try_from(self.minute).ok()?, 0, 0).ok()
    }

    /// The time on a day that was said: am/pm as said, or as the day part
    /// hints, or 1-7 afternoon and 8-11 morning.
    fn on_day(self, hint: Option<Hint>) -> Option<Time> {
        let h = self.hour;
        let pm = self.pm.or(hint.map(Hint::pm));
        let hour = match (self.fixed, pm) {
            (true, _) => h,
            (false, Some(true)) if h < 12 => h + 12,
            (false, Some(false)) if h == 12 => 0,
            (false, Some(_)) => h,
            (false, None) if (1..=7).contains(&h) => h + 12,
            (false, None) => h,
        };
        self.with(hour)
    }

    /// Without a day: today or tomorrow, whichever comes first (either half
    /// of the day when am/pm was not said).
    fn next(self, clock: &Clock) -> Option<(Date, Time)> {
        let today = clock.today();
        let pm = self.pm.or(self.hint.map(Hint::pm));
        let hours: Vec<u32> = match (self.fixed, pm) {
            (false, None) if (1..=11).contains(&self.hour) => vec![self.hour, self.hour + 12],
            _ => vec![self.on_day(self.hint)?.hour() as u32],
        };
        let mut options = Vec::new();
        for date in [today, today.tomorrow().ok()?] {
            for &h in &hours {
                let time = self.with(h)?;
                let at = clock.zoned(date.to_datetime(time))?;
                if at.timestamp() > clock.now {
                    options.push((at.timestamp(), date, time));
                }
            }
        }
        options.into_iter().min_by_key(|o| o.0).map(|(_, d, t)| (d, t))
    }
}

/// "at 6 pm", "6:30", "eight thirty", "nine o'clock", "noon", "half past
/// six", "quarter to ten", "at seven in the evening". A bare number counts
/// only after "at" or with minutes, am/pm or o'clock (so "three posts" is
/// not three o'clock).
fn time(t: Toks) -> Option<(TimeSpec, usize)> {
    let at = usize::from(word(t, 0) == "at" || word(t, 0) == "around" || word(t, 0) == "by");
    let t2 = &t[at..];
    let fixed = |hour| TimeSpec { hour, minute: 0, pm: None, hint: None, fixed: true };
    let (mut spec, mut n, sure) = match (word(t2, 0), word(t2, 1)) {
        ("noon" | "midday", _) => (fixed(12), 1, true),
        ("midnight", _) => (fixed(0), 1, true),
        ("half", "past") | ("quarter", "past" | "to") => {
            let (h, k) = number(&t2[2..]).filter(|&(h, _)| (1..=12).contains(&h))?;
            let (hour, minute) = match word(t2, 0) {
                "half" => (h, 30),
                _ if word(t2, 1) == "past" => (h, 15),
                _ => ((h + 10) % 12 + 1, 45),
            };
            (TimeSpec { hour, minute, pm: None, hint: None, fixed: false }, 2 + k, true)
        }
        (w, _) if w.contains(':') || (w.contains('.') && w.chars().next().is_some_and(|c| c.is_ascii_digit())) => {
            let (h, m) = w.split_once([':', '.'])?;
            let (hour, minute) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            if hour > 23 || minute > 59 || m.len() != 2 {
                return None;
            }
            (TimeSpec { hour, minute, pm: None, hint: None, fixed: hour == 0 || hour > 12 }, 1, true)
        }
        _ => {
            let (hour, k) = number(t2).filter(|&(h, _)| h <= 23)?;
            if word(t2, 0) == "a" || word(t2, 0) == "an" {
                return None;
            }
            // Minutes: "thirty", "forty five", "oh five", "15".
            let (minute, m) = match (word(t2, k), number(&t2[k..])) {
                ("oh", _) => number(&t2[k + 1..]).filter(|&(m, _)| m < 10).map_or((0, 0), |(m, j)| (m, j + 1)),
                (_, Some((m, j))) if (10..60).contains(&m) && !is_unit(word(t2, k + j)) => (m, j),
                _ => (0, 0),
            };
            (TimeSpec { hour, minute, pm: None, hint: None, fixed: hour == 0 || hour > 12 }, k + m, at == 1 || m > 0)
        }
    };
    let mut said = sure;
    match word(t2, n) {
        "o'clock" | "oclock" => {
            n += 1;
            said = true;
        }
        _ => {}
    }
    match word(t2, n) {
        "am" => {
            spec.pm = Some(false);
            n += 1;
            said = true;
        }
        "pm" => {
            spec.pm = Some(true);
            n += 1;
            said = true;
        }
        _ => {}
    }
    // "in the morning", "in the evening", "at night", "tonight".
    match (word(t2, n), word(t2, n + 1), word(t2, n + 2)) {
        ("in", "the", w) if Hint::of(w).is_some() => {
            spec.hint = Hint::of(w);
            n += 3;
        }
        ("at", "night", _) => {
            spec.hint = Some(Hint::Night);
            n += 2;
        }
        _ => {}
    }
    if spec.fixed && spec.pm.is_some() && spec.hour > 12 {
        return None;
    }
    said.then_some((spec, at + n))
}

fn is_unit(w: &str) -> bool {
    matches!(w.trim_end_matches('s'), "minute" | "min" | "hour" | "hr" | "day" | "week" | "post" | "tweet" | "draft")
}
