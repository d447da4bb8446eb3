//! Dates, times and periods as people say them ("tomorrow at nine a.m.",
//! "Friday at six p.m.", "next Monday", "in two hours", "eight thirty",
//! "last week"), found in an utterance's tokens and resolved in the
//! account's time zone.
//!
//! Calendar words move the local date and keep the local time (tomorrow
//! at 9 is 9:00 on the wall clock, 23 or 25 hours away across a DST
//! change); durations move the instant ("in two hours" is 7,200 s whatever
//! the clock does). A local time the clock skips is taken as the time it
//! becomes (02:30 on a spring-forward night is 03:30); a repeated one as
//! its first occurrence (jiff's `compatible` rule, as for RFC 5545).
//!
//! Choices where speech is ambiguous (what a scheduler user expects):
//! - "Friday" is the coming Friday, today if it is Friday and the time is
//!   still ahead; "next Friday" is the first Friday after today; "last
//!   Friday" the one before. Asked about the past (reports), a bare
//!   weekday is the last one.
//! - An hour without am/pm: with a day given, 1 to 7 is afternoon or
//!   evening (nobody schedules posts at 6 a.m. by saying "at six") and 8
//!   to 11 morning; without a day, whichever comes next.
//! - A day without a time: 09:00, marked as assumed.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// Now, where the account is.
#[derive(Debug, Clone)]
pub struct Clock {
    /// The instant "now" means.
    pub now: Timestamp,
    /// The account's zone.
    pub tz: TimeZone,
}

impl Clock {
    fn today(&self) -> Date {
        self.now.to_zoned(self.tz.clone()).date()
    }

    fn zoned(&self, dt: DateTime) -> Option<Zoned> {
        dt.to_zoned(self.tz.clone()).ok()
    }
}

/// Which way an ambiguous day points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Scheduling: the coming one.
    Future,
    /// Reports: the last one.
    Past,
}

/// A time expression found in an utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Index of its first token.
    pub start: usize,
    /// Tokens it spans.
    pub len: usize,
    /// What it says.
    pub spoken: Spoken,
    /// `(start, len)` of a second part said apart: the time of "tomorrow's post at nine".
    pub also: Option<(usize, usize)>,
}

impl Found {
    /// Whether token `i` is part of the expression.
    pub fn covers(&self, i: usize) -> bool {
        let within = |(s, l): (usize, usize)| (s..s + l).contains(&i);
        within((self.start, self.len)) || self.also.is_some_and(within)
    }
}

/// What a time expression says.
#[derive(Debug, Clone, PartialEq)]
pub enum Spoken {
    /// An instant ("now", "in two hours").
    Instant(Timestamp),
    /// A day, and maybe a time on it ("tomorrow", "Friday at 6 pm", "at nine").
    Day {
        /// The local date.
        date: Date,
        /// The local time, when one was said.
        time: Option<Time>,
        /// How far it moves if it has passed (a bare weekday or hour).
        roll: Roll,
    },
    /// Local dates `[start, end)` ("this week", "last month", "the last 7 days").
    Dates {
        /// First day.
        start: Date,
        /// The day after the last.
        end: Date,
    },
    /// Instants `[start, end)` ("the last 24 hours", "the next two hours").
    Span {
        /// From.
        start: Timestamp,
        /// Until.
        end: Timestamp,
    },
}

/// How a day said without its week (or a time without its day) moves
/// once it has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roll {
    /// It stays (a date, "tomorrow").
    No,
    /// To the next day ("at 9 pm" said at 10 pm).
    Day,
    /// To the next week ("Friday at 6 pm" said on Friday at 7 pm).
    Week,
}

/// A resolved point in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The instant, in the account's zone.
    pub at: Zoned,
    /// No time of day was said: 09:00 was assumed.
    pub time_assumed: bool,
}

/// A resolved period `[start, end)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// From.
    pub start: Zoned,
    /// Until (exclusive).
    pub end: Zoned,
}

impl Found {
    /// The point it names (None for a period such as "this week").
    pub fn point(&self, clock: &Clock) -> Option<Point> {
        match &self.spoken {
            // To the second: "in two hours" is not meant to the nanosecond.
            Spoken::Instant(t) => Some(Point { at: Timestamp::from_second(t.as_second()).ok()?.to_zoned(clock.tz.clone()), time_assumed: false }),
            Spoken::Day { date, time, roll } => {
                let (time, time_assumed) = match time {
                    Some(t) => (*t, false),
                    None => (Time::constant(9, 0, 0, 0), true),
                };
                let mut at = clock.zoned(date.to_datetime(time))?;
                let step = match roll {
                    Roll::No => 0,
                    Roll::Day => 1,
                    Roll::Week => 7,
                };
                if step > 0 && at.timestamp() <= clock.now {
                    at = clock.zoned(date.checked_add(step.days()).ok()?.to_datetime(time))?;
                }
                Some(Point { at, time_assumed })
            }
            Spoken::Dates { .. } | Spoken::Span { .. } => None,
        }
    }

    /// The period it names: a day is the whole local day.
    pub fn period(&self, clock: &Clock) -> Option<Period> {
        let day = |start: Date, end: Date| -> Option<Period> {
            Some(Period { start: clock.zoned(start.to_datetime(Time::midnight()))?, end: clock.zoned(end.to_datetime(Time::midnight()))? })
        };
        match &self.spoken {
            Spoken::Instant(_) => None,
            Spoken::Day { date, .. } => day(*date, date.tomorrow().ok()?),
            Spoken::Dates { start, end } => day(*start, *end),
            Spoken::Span { start, end } => Some(Period { start: start.to_zoned(clock.tz.clone()), end: end.to_zoned(clock.tz.clone()) }),
        }
    }
}

mod parse;
pub use parse::find;
