//! Commands as people type or say them, and what each must be read as. Shared by the grammar's test (`voice/tests/grammar.rs`)
//! and the end-to-end test on `serve` (`tests/voice.rs`, which also checks what the posting service did). Times are written
//! relative to when the test runs ("+1d 09:00": tomorrow at nine) and worked out here with jiff's calendar arithmetic, apart
//! from the code under test.

#![allow(dead_code, clippy::panic, clippy::expect_used)]

use jiff::civil::{Time, Weekday};
use jiff::{ToSpan, Zoned};

/// Whether a command must wait for a confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// It must (destructive, ambiguous or unsure).
    Yes,
    /// It must not.
    No,
    /// Either (what it finds decides).
    Any,
}

/// One command.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// What is said (`{post_id}`: a post the end-to-end test made).
    pub said: &'static str,
    /// The intent it must be read as.
    pub intent: &'static str,
    /// Arguments that must be so: `topic`, `text`, `n`, `campaign`, `metric`, `subject`, `name`, `selector`, `post_id`,
    /// `at` (see [`at`]), `period` (see [`period`]).
    pub expect: &'static [(&'static str, &'static str)],
    /// Whether it waits for a confirmation.
    pub confirm: Confirm,
    /// Outside the grammar: the model reads it (the grammar must not claim it).
    pub model: bool,
}

const fn c(said: &'static str, intent: &'static str, expect: &'static [(&'static str, &'static str)], confirm: Confirm) -> Case {
    Case { said, intent, expect, confirm, model: false }
}

const fn m(said: &'static str, intent: &'static str, expect: &'static [(&'static str, &'static str)], confirm: Confirm) -> Case {
    Case { said, intent, expect, confirm, model: true }
}

use Confirm::{Any, No, Yes};

/// 66 commands: every intent, several phrasings each, destructive, ambiguous and nonsense ones.
pub const CASES: &[Case] = &[
    // Drafts.
    c("Write three posts about summer hiking gear", "generate_drafts", &[("n", "3"), ("topic", "summer hiking gear")], No),
    c("Generate five tweets about our espresso machine", "generate_drafts", &[("n", "5"), ("topic", "our espresso machine")], No),
    c("Give me 2 post ideas about cold brew", "generate_drafts", &[("n", "2"), ("topic", "cold brew")], No),
    c("Draft a post about the new coffee grinder", "generate_drafts", &[("n", "1"), ("topic", "the new coffee grinder")], No),
    c("Can you come up with four tweets about running shoes?", "generate_drafts", &[("n", "4"), ("topic", "running shoes")], No),
    c("Brainstorm some posts on home workouts", "generate_drafts", &[("n", "3"), ("topic", "home workouts")], No),
    c("Write a couple of tweets about our summer sale", "generate_drafts", &[("n", "2"), ("topic", "our summer sale")], No),
    c("Create 6 drafts about sustainable packaging please", "generate_drafts", &[("n", "6"), ("topic", "sustainable packaging")], No),
    // Scheduling.
    c("Schedule a tweet about our new wireless earbuds for Friday at six p.m.", "schedule_post", &[("topic", "our new wireless earbuds"), ("at", "fri 18:00")], No),
    c("Post about the summer sale tomorrow at nine a.m.", "schedule_post", &[("topic", "the summer sale"), ("at", "+1d 09:00")], No),
    c("Schedule a post about cold brew for tomorrow at 9:30 in the morning", "schedule_post", &[("topic", "cold brew"), ("at", "+1d 09:30")], No),
    c("Tweet about our espresso machine on Monday at 10", "schedule_post", &[("topic", "our espresso machine"), ("at", "mon 10:00")], No),
    c("Publish a post about running shoes next Tuesday at noon", "schedule_post", &[("topic", "running shoes"), ("at", "next-tue 12:00")], No),
    c("Schedule \"Our store opens early this Saturday!\" for Friday at 8 am", "schedule_post", &[("text", "Our store opens early this Saturday!"), ("at", "fri 08:00")], No),
    c("Post saying thanks for 10,000 followers tomorrow at 6 pm", "schedule_post", &[("text", "thanks for 10,000 followers"), ("at", "+1d 18:00")], No),
    c("Schedule a post about our cold brew kit in two hours", "schedule_post", &[("topic", "our cold brew kit"), ("at", "+2h")], No),
    c("Share a post about the grinder sale on December 24th at 7 pm", "schedule_post", &[("topic", "the grinder sale"), ("at", "12-24 19:00")], No),
    c("Queue a tweet about weekend brunch for Saturday morning", "schedule_post", &[("topic", "weekend brunch"), ("at", "sat 09:00")], No),
    c("Schedule a post about our podcast for eight thirty", "schedule_post", &[("topic", "our podcast"), ("at", "next 08:30")], No),
    c("Post about the new blend in 45 minutes", "schedule_post", &[("topic", "the new blend"), ("at", "+45m")], No),
    c("Post the summer sale announcement tomorrow at nine thirty in the morning", "schedule_post", &[("topic", "the summer sale announcement"), ("at", "+1d 09:30")], No),
    c("Schedule a tweet about the espresso machine", "schedule_post", &[("topic", "the espresso machine")], No),
    // No time of day: 09:00 is assumed, so it is confirmed first.
    c("Schedule a tweet about coffee tomorrow", "schedule_post", &[("topic", "coffee"), ("at", "+1d 09:00")], Yes),
    // Listing.
    c("What's scheduled for tomorrow?", "list_posts", &[("period", "tomorrow")], No),
    c("Show me the posts scheduled for next week", "list_posts", &[("period", "next-week")], No),
    c("What is scheduled this week?", "list_posts", &[("period", "this-week")], No),
    c("List my scheduled posts", "list_posts", &[("period", "default7")], No),
    c("What's coming up on Friday?", "list_posts", &[("period", "fri")], No),
    c("Which posts are queued for today?", "list_posts", &[("period", "today")], No),
    c("Do I have anything scheduled for the weekend?", "list_posts", &[("period", "this-weekend")], No),
    c("What's in the queue?", "list_posts", &[("period", "default7")], No),
    // Cancelling: always confirmed.
    c("Cancel the next post", "cancel_post", &[("selector", "next")], Yes),
    c("Delete my next tweet", "cancel_post", &[("selector", "next")], Yes),
    c("Cancel tomorrow's post at 9 a.m.", "cancel_post", &[("selector", "time"), ("at", "+1d 09:00")], Yes),
    c("Remove the post scheduled for Friday at 6 pm", "cancel_post", &[("selector", "time"), ("at", "fri 18:00")], Yes),
    c("Cancel the last post I scheduled", "cancel_post", &[("selector", "last")], Yes),
    c("Cancel the 6 pm post on Friday", "cancel_post", &[("selector", "time"), ("at", "fri 18:00")], Yes),
    c("Unschedule post {post_id}", "cancel_post", &[("selector", "id"), ("post_id", "{post_id}")], Yes),
    // Pausing: always confirmed; "summer" fits two campaigns.
    c("Pause the coffee grinder campaign", "pause_campaign", &[("campaign", "coffee grinder")], Yes),
    c("Stop the running shoes campaign", "pause_campaign", &[("campaign", "running shoes")], Yes),
    c("Put the coffee grinder campaign on hold", "pause_campaign", &[("campaign", "coffee grinder")], Yes),
    c("Pause campaign running shoes spring", "pause_campaign", &[("campaign", "running shoes spring")], Yes),
    c("Pause the summer campaign", "pause_campaign", &[("campaign", "summer")], Yes),
    c("Suspend the coffee grinder campaign for now", "pause_campaign", &[("campaign", "coffee grinder")], Yes),
    // Resuming.
    c("Resume the coffee grinder campaign", "resume_campaign", &[("campaign", "coffee grinder")], No),
    c("Restart the running shoes campaign", "resume_campaign", &[("campaign", "running shoes")], No),
    c("Turn the coffee grinder campaign back on", "resume_campaign", &[("campaign", "coffee grinder")], No),
    c("Unpause the summer sale campaign", "resume_campaign", &[("campaign", "summer sale")], No),
    c("Start the running shoes campaign again", "resume_campaign", &[("campaign", "running shoes")], No),
    // Reports.
    c("How many clicks did the running shoes link get yesterday?", "report_metric", &[("metric", "clicks"), ("subject", "link"), ("name", "running shoes"), ("period", "yesterday")], No),
    c("How many clicks did the link to the running shoes get yesterday?", "report_metric", &[("metric", "clicks"), ("subject", "link"), ("name", "running shoes"), ("period", "yesterday")], No),
    c("How many impressions did my last post get?", "report_metric", &[("metric", "impressions"), ("subject", "post"), ("name", "last")], No),
    c("What was the revenue for the coffee grinder campaign last week?", "report_metric", &[("metric", "revenue"), ("subject", "campaign"), ("name", "coffee grinder"), ("period", "last-week")], No),
    c("What's my engagement this month?", "report_metric", &[("metric", "engagement"), ("subject", "all"), ("period", "this-month")], No),
    c("How many clicks did the coffee grinder campaign get this week?", "report_metric", &[("metric", "clicks"), ("subject", "campaign"), ("name", "coffee grinder"), ("period", "this-week")], No),
    c("How much money did the running shoes campaign make last month?", "report_metric", &[("metric", "revenue"), ("subject", "campaign"), ("name", "running shoes"), ("period", "last-month")], No),
    c("Show me impressions for the summer sale campaign today", "report_metric", &[("metric", "impressions"), ("subject", "campaign"), ("name", "summer sale"), ("period", "today")], No),
    c("How many likes did my last tweet get?", "report_metric", &[("metric", "likes"), ("subject", "post"), ("name", "last")], No),
    c("What's the click-through rate of the running shoes link this week?", "report_metric", &[("metric", "ctr"), ("subject", "link"), ("name", "running shoes"), ("period", "this-week")], No),
    // Nonsense.
    c("Purple monkey dishwasher", "unknown", &[], No),
    c("Tell me a joke", "unknown", &[], No),
    c("Hello there", "unknown", &[], No),
    c("Order a pizza for tomorrow at 8", "unknown", &[], No),
    c("Play some music", "unknown", &[], No),
    // Outside the grammar: the model's reading, confirmed before anything changes.
    m("Any chance you could jot down a few tweet ideas on latte art", "generate_drafts", &[("topic", "latte art")], Any),
    m("Switch off the running shoes campaign", "pause_campaign", &[("campaign", "running shoes")], Yes),
];

/// The instant `spec` means from `now`: `+1d 09:00` (days ahead, local time), `fri 18:00` (the coming Friday, today if still
/// ahead), `next-tue 12:00` (the first Tuesday after today), `sat 09:00`, `12-24 19:00` (this year's, else next year's),
/// `next 08:30` (08:30 or 20:30, whichever comes first), `+2h`, `+45m` (exact).
pub fn at(spec: &str, now: &Zoned) -> Zoned {
    if let Some(h) = spec.strip_prefix('+').and_then(|s| s.strip_suffix('h')) {
        return now.checked_add(h.parse::<i64>().expect("hours").hours()).expect("time");
    }
    if let Some(m) = spec.strip_prefix('+').and_then(|s| s.strip_suffix('m')) {
        return now.checked_add(m.parse::<i64>().expect("minutes").minutes()).expect("time");
    }
    let (day, time) = spec.split_once(' ').expect("day and time");
    let time: Time = format!("{time}:00").parse().expect("time of day");
    let today = now.date();
    let on = |d: jiff::civil::Date| d.to_datetime(time).to_zoned(now.time_zone().clone()).expect("zoned");
    if day == "next" {
        let pm = Time::new(time.hour() + 12, time.minute(), 0, 0).expect("pm");
        let tomorrow = today.tomorrow().expect("d");
        let options = [on(today), today.to_datetime(pm).to_zoned(now.time_zone().clone()).expect("zoned"), on(tomorrow)];
        return options.into_iter().filter(|z| z > now).min().expect("one ahead");
    }
    if let Some(d) = day.strip_prefix('+').and_then(|d| d.strip_suffix('d')) {
        return on(today.checked_add(d.parse::<i64>().expect("days").days()).expect("date"));
    }
    if let Some((mo, dd)) = day.split_once('-').filter(|(m, _)| m.chars().all(|c| c.is_ascii_digit())) {
        let this = jiff::civil::date(today.year(), mo.parse().expect("month"), dd.parse().expect("day"));
        return if on(this) > *now { on(this) } else { on(jiff::civil::date(today.year() + 1, this.month(), this.day())) };
    }
    let (next, name) = match day.strip_prefix("next-") {
        Some(n) => (true, n),
        None => (false, day),
    };
    let wd = weekday(name);
    // The coming one: today if it is that day and the time is ahead; "next-": the first after today.
    let mut d = today;
    if next || today.weekday() != wd || on(today) <= *now {
        d = today.nth_weekday(1, wd).expect("weekday");
    }
    on(d)
}

fn weekday(name: &str) -> Weekday {
    match name {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        other => panic!("weekday {other}"),
    }
}

/// The local period `spec` means from `now`: `today`, `tomorrow`, `yesterday`, `this-week`, `next-week`, `last-week`
/// (Monday to Monday), `this-month`, `last-month`, `this-weekend` (Saturday and Sunday), a weekday (`fri`: that whole day,
/// the coming one), `default7` (the next seven days from now), `default30` (the last thirty days).
pub fn period(spec: &str, now: &Zoned) -> (Zoned, Zoned) {
    let tz = now.time_zone().clone();
    let midnight = |d: jiff::civil::Date| d.to_zoned(tz.clone()).expect("midnight");
    let today = now.date();
    let day = |d: jiff::civil::Date| (midnight(d), midnight(d.tomorrow().expect("d")));
    let monday = today.checked_sub((today.weekday().to_monday_zero_offset() as i64).days()).expect("monday");
    let week = |w: i64| {
        let m = monday.checked_add((7 * w).days()).expect("week");
        (midnight(m), midnight(m.checked_add(7.days()).expect("w")))
    };
    match spec {
        "today" => day(today),
        "tomorrow" => day(today.tomorrow().expect("d")),
        "yesterday" => day(today.yesterday().expect("d")),
        "this-week" => week(0),
        "next-week" => week(1),
        "last-week" => week(-1),
        "this-month" => (midnight(today.first_of_month()), midnight(today.first_of_month().checked_add(1.month()).expect("m"))),
        "last-month" => (midnight(today.first_of_month().checked_sub(1.month()).expect("m")), midnight(today.first_of_month())),
        "this-weekend" => {
            let sat = match today.weekday() {
                Weekday::Saturday => today,
                Weekday::Sunday => today.yesterday().expect("d"),
                _ => today.nth_weekday(1, Weekday::Saturday).expect("sat"),
            };
            (midnight(sat), midnight(sat.checked_add(2.days()).expect("d")))
        }
        "default7" => (now.clone(), now.checked_add(7.days()).expect("d")),
        "default30" => (now.checked_sub(30.days()).expect("d"), now.clone()),
        wd => {
            let w = weekday(wd);
            let d = if today.weekday() == w { today } else { today.nth_weekday(1, w).expect("weekday") };
            day(d)
        }
    }
}

/// How `args` (the answer's `arguments`) differs from what `case` expects at `now`; empty when it does not. Instants may be a
/// minute apart ("in two hours" is read a moment after `now`).
pub fn differences(case: &Case, intent: &str, args: &serde_json::Value, now: &Zoned, post_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    if intent != case.intent {
        out.push(format!("intent {intent}, want {}", case.intent));
        return out;
    }
    let instant = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<Zoned>().ok());
    let near = |a: &Zoned, b: &Zoned| (a.timestamp().as_second() - b.timestamp().as_second()).abs() <= 60;
    for &(key, want) in case.expect {
        let want = want.replace("{post_id}", post_id);
        match key {
            "at" => {
                let want = at(&want, now);
                match instant(&args["scheduled_at"]) {
                    Some(got) if near(&got, &want) => {}
                    got => out.push(format!("scheduled_at {got:?}, want {want}")),
                }
            }
            "period" => {
                let (from, to) = period(&want, now);
                match (instant(&args["from"]), instant(&args["to"])) {
                    (Some(a), Some(b)) if near(&a, &from) && near(&b, &to) => {}
                    (a, b) => out.push(format!("period {a:?} .. {b:?}, want {from} .. {to}")),
                }
            }
            "n" => {
                if args["n"].as_u64().map(|n| n.to_string()).as_deref() != Some(want.as_str()) {
                    out.push(format!("n {}, want {want}", args["n"]));
                }
            }
            _ => {
                let got = args[key].as_str().map(str::to_lowercase);
                if got.as_deref() != Some(want.to_lowercase().as_str()) {
                    out.push(format!("{key} {}, want {want:?}", args[key]));
                }
            }
        }
    }
    out
}
