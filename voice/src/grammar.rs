//! The command grammar: a deterministic reading of the commands Starling
//! knows, from the verbs and the words around them (the way voice
//! assistants match sentence templates before any model is asked). What it
//! reads in full it is sure of; what it cannot read goes to the model
//! ([`crate::model`]).
//!
//! The time words are found first ([`crate::when::find`]) and taken out, so
//! "about our new earbuds for Friday at six p.m." leaves the topic "our new
//! earbuds".

use crate::intent::{Arguments, Intent, Metric, Parsed, Reader, Selector, Subject};
use crate::when::{self, Clock, Direction, Found};
use crate::words::{number, spans, Token};

/// How sure a full reading is.
pub const SURE: f64 = 0.95;
/// How sure a reading that misses or assumes something is.
pub const UNSURE: f64 = 0.5;

/// The command `text` as the grammar reads it (`Unknown` when it does not).
pub fn read(text: &str, clock: &Clock) -> Parsed {
    let (quoted, rest) = quoted(text);
    let toks = spans(&rest);
    let words: Vec<String> = toks.iter().map(|t| t.text.clone()).collect();
    // The words of a post ("... saying we continue the sale") are not the command's.
    let command = words.iter().position(|w| LITERAL.contains(&w.as_str())).map_or(&words[..], |i| &words[..i]);
    let intent = classify(command);
    if intent == Intent::Unknown {
        return Parsed::unknown(Reader::Grammar);
    }
    let dir = if intent == Intent::ReportMetric { Direction::Past } else { Direction::Future };
    let found = when::find(&words, clock, dir);
    let mut r = Reading { text: &rest, toks: &toks, found: found.as_ref(), clock, args: Arguments::default(), doubts: Vec::new() };
    if let Some(f) = r.found {
        let mut said = r.original(f.start, f.start + f.len);
        if let Some((s, l)) = f.also {
            let other = r.original(s, s + l);
            said = if s < f.start { format!("{other} {said}") } else { format!("{said} {other}") };
        }
        r.args.when = Some(said);
    }
    match intent {
        Intent::GenerateDrafts => r.generate(),
        Intent::SchedulePost => r.schedule(quoted),
        Intent::ListPosts => r.list(),
        Intent::CancelPost => r.cancel(),
        Intent::PauseCampaign | Intent::ResumeCampaign => r.campaign(),
        Intent::ReportMetric => r.report(),
        Intent::Unknown => {}
    }
    let confidence = if r.doubts.is_empty() { SURE } else { UNSURE };
    Parsed { intent, args: r.args, confidence, reader: Reader::Grammar, doubts: r.doubts }
}

/// Text in double quotes (a literal post), and the rest with it blanked
/// (same length, so the places of the other words hold).
fn quoted(text: &str) -> (Option<String>, String) {
    let Some(open) = text.find(['"', '\u{201c}']) else { return (None, text.to_owned()) };
    let inner = open + text[open..].chars().next().map_or(1, char::len_utf8);
    let Some(close) = text[inner..].find(['"', '\u{201d}']).map(|c| inner + c) else { return (None, text.to_owned()) };
    let end = close + text[close..].chars().next().map_or(1, char::len_utf8);
    let rest = format!("{}{}{}", &text[..open], " ".repeat(end - open), &text[end..]);
    let literal = text[inner..close].trim();
    ((!literal.is_empty()).then(|| literal.to_owned()), rest)
}

fn has(w: &[String], set: &[&str]) -> bool {
    w.iter().any(|x| set.contains(&x.as_str()))
}

fn pos(w: &[String], set: &[&str]) -> Option<usize> {
    w.iter().position(|x| set.contains(&x.as_str()))
}

/// What comes after these is a post's own words.
const LITERAL: &[&str] = &["saying", "says", "reading"];
const CANCEL: &[&str] = &["cancel", "delete", "remove", "unschedule", "scrap", "drop", "kill", "cancelled", "axe"];
const PAUSE: &[&str] = &["pause", "suspend", "halt", "freeze"];
const RESUME: &[&str] = &["resume", "unpause", "restart", "reactivate", "continue", "reenable", "unfreeze"];
const CAMPAIGN: &[&str] = &["campaign", "campaigns"];
const POSTS: &[&str] = &[
    "post", "posts", "tweet", "tweets", "draft", "drafts", "idea", "ideas", "option", "options", "variation", "variations", "version",
    "versions", "caption", "captions", "thread", "threads", "toot", "toots", "update", "updates",
];
const WRITE: &[&str] = &["write", "generate", "draft", "brainstorm", "create", "come", "give", "make", "suggest", "compose", "prepare"];
const LIST: &[&str] = &["scheduled", "queued", "planned", "upcoming", "coming", "queue", "lined", "pipeline", "calendar"];
const ASK: &[&str] = &["what", "what's", "which", "show", "list", "tell", "give", "how", "any", "anything", "is", "are", "do", "have", "get"];

/// The metric a word names.
fn metric(w: &str) -> Option<Metric> {
    Some(match w {
        "click" | "clicks" | "clicked" => Metric::Clicks,
        "impression" | "impressions" | "views" | "viewed" | "reach" | "seen" => Metric::Impressions,
        "engagement" | "engagements" | "engaged" => Metric::Engagement,
        "revenue" | "earn" | "earned" | "earnings" | "money" | "sales" | "income" | "commission" | "make" | "made" => Metric::Revenue,
        "likes" | "liked" | "hearts" => Metric::Likes,
        "reposts" | "retweets" | "reposted" | "retweeted" | "shares" | "boosts" => Metric::Reposts,
        "replies" | "comments" => Metric::Replies,
        "ctr" | "clickthrough" | "click-through" => Metric::Ctr,
        _ => return None,
    })
}

/// The intent from the verbs, most specific first (a cancel names a
/// scheduled post; a report may say "post").
fn classify(w: &[String]) -> Intent {
    let asks = w.first().is_some_and(|f| ASK.contains(&f.as_str())) || has(w, &["how", "what", "what's", "tell", "show"]);
    let metric_word = w.iter().any(|x| metric(x).is_some() && !matches!(x.as_str(), "make" | "made" | "seen"))
        || (has(w, &["how"]) && has(w, &["much", "many"]) && has(w, &["make", "made", "earn", "earned"]));
    if has(w, CANCEL) && !has(w, CAMPAIGN) {
        return Intent::CancelPost;
    }
    if has(w, PAUSE) || (has(w, &["stop"]) && has(w, CAMPAIGN)) || (has(w, &["hold"]) && has(w, CAMPAIGN)) {
        return Intent::PauseCampaign;
    }
    let again = has(w, &["again", "back"]) && has(w, &["start", "turn", "switch", "run", "running"]);
    if has(w, RESUME) || (again && has(w, CAMPAIGN)) {
        return Intent::ResumeCampaign;
    }
    if asks && metric_word {
        return Intent::ReportMetric;
    }
    if asks && has(w, LIST) && !has(w, &["about"]) {
        return Intent::ListPosts;
    }
    if has(w, &["list"]) && has(w, POSTS) {
        return Intent::ListPosts;
    }
    let writes = pos(w, WRITE).is_some_and(|i| {
        // "come up with", "give me", "make me"
        !matches!(w[i].as_str(), "come") || w.get(i + 1).is_some_and(|n| n == "up")
    });
    let plural_or_counted = w.iter().enumerate().any(|(i, x)| {
        POSTS.contains(&x.as_str()) && (x.ends_with('s') || (i > 0 && number(&w[i - 1..]).is_some_and(|(n, _)| n > 1)))
    });
    // "post", "tweet" are verbs first in a command or after "please",
    // "to", "you" ("can you tweet about..."); elsewhere they are nouns.
    let verb_post = w.iter().enumerate().any(|(i, x)| {
        ["post", "tweet", "toot"].contains(&x.as_str()) && (i == 0 || ["please", "to", "you", "and", "then"].contains(&w[i - 1].as_str()))
    });
    let put_out = w.windows(2).any(|p| ["put", "send", "get"].contains(&p[0].as_str()) && p[1] == "out");
    let schedules = has(w, &["schedule", "publish", "queue", "share", "announce"]) || verb_post || put_out;
    if writes && has(w, POSTS) && (plural_or_counted || !schedules) && !has(w, &["schedule", "publish"]) {
        return Intent::GenerateDrafts;
    }
    if schedules {
        return Intent::SchedulePost;
    }
    Intent::Unknown
}

/// Words trailing a name or topic that are not part of it.
const FILLER: &[&str] = &["please", "thanks", "thank", "you", "for", "me", "us", "now", "ok", "okay", "the", "a", "an", "to", "and", "on", "at", "in", "of", "get", "got", "do", "did", "have", "has", "had", "make", "made", "bring", "brought", "is", "was"];
/// Words before a time expression that belong to it ("for Friday", "on Monday").
const CONNECTOR: &[&str] = &["for", "on", "at", "in", "during", "over", "from", "by", "this", "scheduled", "due", "going"];

struct Reading<'a> {
    text: &'a str,
    toks: &'a [Token],
    found: Option<&'a Found>,
    clock: &'a Clock,
    args: Arguments,
    doubts: Vec<String>,
}

impl Reading<'_> {
    fn word(&self, i: usize) -> &str {
        self.toks.get(i).map_or("", |t| t.text.as_str())
    }

    /// The original text of tokens `a..b`.
    fn original(&self, a: usize, b: usize) -> String {
        match (self.toks.get(a), b.checked_sub(1).and_then(|l| self.toks.get(l))) {
            (Some(x), Some(y)) if a < b => self.text[x.span.start..y.span.end].to_owned(),
            _ => String::new(),
        }
    }

    /// Whether token `i` is the time expression or its connector.
    fn in_time(&self, i: usize) -> bool {
        let connects = |start: usize| i + 1 == start && CONNECTOR.contains(&self.word(i));
        self.found.is_some_and(|f| f.covers(i) || connects(f.start) || f.also.is_some_and(|(s, _)| connects(s)))
    }

    /// The words after the first of `markers` (not the time words), up to
    /// the time expression, trimmed of filler: a topic or a name.
    fn after(&self, markers: &[&str]) -> Option<(usize, usize)> {
        let m = (0..self.toks.len()).find(|&i| markers.contains(&self.word(i)) && !self.in_time(i))?;
        let mut end = m + 1;
        while end < self.toks.len() && !self.in_time(end) {
            end += 1;
        }
        self.trim_end(m + 1, end)
    }

    /// `a..b` without filler at its end (a topic keeps its "our", "the").
    fn trim_end(&self, a: usize, mut b: usize) -> Option<(usize, usize)> {
        while b > a && FILLER.contains(&self.word(b - 1)) {
            b -= 1;
        }
        (a < b).then_some((a, b))
    }

    /// `a..b` without filler at either end; None if nothing is left.
    fn trim(&self, mut a: usize, mut b: usize) -> Option<(usize, usize)> {
        while a < b && ["the", "a", "an", "my", "our", "some"].contains(&self.word(a)) {
            a += 1;
        }
        while b > a && FILLER.contains(&self.word(b - 1)) {
            b -= 1;
        }
        (a < b).then_some((a, b))
    }

    fn resolve_point(&mut self) {
        let Some(f) = self.found else { return };
        match f.point(self.clock) {
            Some(p) => {
                self.args.scheduled_at = Some(p.at.to_string());
                self.args.time_assumed = p.time_assumed;
                if p.time_assumed {
                    self.doubts.push("no time of day was said; 09:00 was assumed".into());
                }
            }
            None => self.doubts.push("that is a period, not a time".into()),
        }
    }

    fn resolve_period(&mut self, default_days: i64) {
        let period = match self.found.and_then(|f| f.period(self.clock)) {
            Some(p) => p,
            None => {
                let now = self.clock.now.to_zoned(self.clock.tz.clone());
                let other = if default_days > 0 { now.checked_add(jiff::Span::new().days(default_days)) } else { now.checked_sub(jiff::Span::new().days(-default_days)) };
                let Ok(other) = other else { return };
                if default_days > 0 { when::Period { start: now, end: other } } else { when::Period { start: other, end: now } }
            }
        };
        self.args.from = Some(period.start.to_string());
        self.args.to = Some(period.end.to_string());
    }

    fn generate(&mut self) {
        // The first post noun after the verb ("draft" first is the verb).
        let obj = (1..self.toks.len()).find(|&i| POSTS.contains(&self.word(i)));
        let words: Vec<String> = self.toks.iter().map(|t| t.text.clone()).collect();
        let n = obj.and_then(|o| (o.saturating_sub(3)..o).find_map(|j| number(&words[j..]).filter(|&(_, k)| j + k == o || j + k + 1 == o).map(|(n, _)| n)));
        self.args.n = Some(n.unwrap_or(3).clamp(1, 16));
        match self.after(&["about", "regarding", "featuring", "promoting", "covering", "on", "for"]) {
            Some((a, b)) => self.args.topic = Some(self.original(a, b)),
            None => self.doubts.push("no topic was said".into()),
        }
    }

    fn schedule(&mut self, quoted: Option<String>) {
        let said = self.after(LITERAL).map(|(a, b)| self.original(a, b));
        match quoted.or(said) {
            Some(text) => self.args.text = Some(text),
            None => match self.after(&["about", "regarding", "featuring", "promoting", "covering", "on"]).or_else(|| self.object()) {
                Some((a, b)) => self.args.topic = Some(self.original(a, b)),
                None => self.doubts.push("neither a topic nor the words of the post were said".into()),
            },
        }
        if self.found.is_none() {
            self.doubts.push("no time was said".into());
        }
        self.resolve_point();
    }

    /// What follows the verb: "post the summer sale announcement ..." is
    /// about "the summer sale announcement" ("a tweet", "a post" skipped).
    fn object(&self) -> Option<(usize, usize)> {
        let verbs = ["schedule", "publish", "queue", "share", "announce", "post", "tweet", "toot", "out"];
        let v = (0..self.toks.len()).find(|&i| verbs.contains(&self.word(i)) && !self.in_time(i))?;
        let mut a = v + 1;
        while a < self.toks.len() && (["a", "an", "new", "another"].contains(&self.word(a)) || POSTS.contains(&self.word(a))) {
            a += 1;
        }
        let mut b = a;
        while b < self.toks.len() && !self.in_time(b) {
            b += 1;
        }
        self.trim_end(a, b)
    }

    fn list(&mut self) {
        self.resolve_period(7);
    }

    fn cancel(&mut self) {
        if let Some(id) = self.toks.iter().find(|t| t.text.starts_with("post_")) {
            self.args.selector = Some(Selector::Id);
            // Ids are case-sensitive: as written, not lowered.
            self.args.post_id = Some(self.text[id.span.clone()].to_owned());
        } else if self.found.is_some() {
            self.args.selector = Some(Selector::Time);
            self.resolve_point();
            self.doubts.retain(|d| !d.starts_with("no time of day"));
        } else if self.toks.iter().any(|t| ["last", "latest", "newest"].contains(&t.text.as_str())) {
            self.args.selector = Some(Selector::Last);
        } else if self.toks.iter().any(|t| ["next", "upcoming", "first"].contains(&t.text.as_str())) {
            self.args.selector = Some(Selector::Next);
        } else {
            self.doubts.push("which post was not said".into());
        }
    }

    /// The campaign's name: "the coffee grinder campaign", "campaign coffee grinder".
    fn campaign(&mut self) {
        if self.found.is_some() {
            self.doubts.push("a campaign is paused or resumed now and stays so; a date for it is not kept".into());
        }
        if !self.toks.iter().any(|t| CAMPAIGN.contains(&t.text.as_str())) {
            self.doubts.push("the word \"campaign\" was not said".into());
        }
        let c = (0..self.toks.len()).find(|&i| CAMPAIGN.contains(&self.word(i)));
        let verb = (0..self.toks.len()).find(|&i| PAUSE.iter().chain(RESUME).chain(&["stop", "start", "turn", "switch", "put", "hold"]).any(|v| *v == self.word(i)));
        let span = match (verb, c) {
            (Some(v), Some(c)) if v < c => self.trim(v + 1, c).or_else(|| self.trim(c + 1, self.end_before_time(c + 1))),
            (_, Some(c)) => self.trim(c + 1, self.end_before_time(c + 1)),
            (Some(v), None) => self.trim(v + 1, self.end_before_time(v + 1)),
            (None, None) => None,
        };
        let span = span.map(|(a, b)| {
            // "put the coffee campaign on hold" / "start the coffee campaign again": not part of the name.
            let mut b = b;
            while b > a && ["again", "back", "on", "up", "hold", "running", "please"].contains(&self.word(b - 1)) {
                b -= 1;
            }
            (a, b)
        });
        match span.filter(|(a, b)| a < b) {
            Some((a, b)) => self.args.campaign = Some(self.original(a, b)),
            None => self.doubts.push("which campaign was not said".into()),
        }
    }

    fn end_before_time(&self, from: usize) -> usize {
        (from..self.toks.len()).find(|&i| self.in_time(i)).unwrap_or(self.toks.len())
    }

    fn report(&mut self) {
        let words: Vec<&str> = self.toks.iter().map(|t| t.text.as_str()).collect();
        let m = words.iter().find_map(|w| metric(w).filter(|_| !matches!(*w, "make" | "made" | "seen")));
        let ctr = words.windows(2).any(|p| p == ["click", "through"]) || words.contains(&"ctr");
        self.args.metric = Some(if ctr { Metric::Ctr } else { m.unwrap_or(Metric::Revenue) });
        let named = |kind: &[&str]| (0..words.len()).find(|&i| kind.contains(&words[i]) && !self.in_time(i));
        if let Some(l) = named(&["link", "links", "url"]) {
            self.args.subject = Some(Subject::Link);
            self.name_before(l);
        } else if let Some(c) = named(CAMPAIGN) {
            self.args.subject = Some(Subject::Campaign);
            self.name_before(c);
        } else if let Some(p) = named(&["post", "tweet", "toot"]) {
            self.args.subject = Some(Subject::Post);
            if words[..p].iter().any(|w| ["last", "latest", "newest", "recent", "most"].contains(w)) || self.found.is_none() {
                self.args.name = Some("last".into());
            } else {
                self.name_before(p);
            }
        } else {
            self.args.subject = Some(Subject::All);
        }
        self.resolve_period(-30);
    }

    /// The words before the noun at `noun` back to a determiner or a verb.
    fn name_before(&mut self, noun: usize) {
        let mut a = noun;
        while a > 0 && !["the", "my", "our", "for", "from", "of", "did", "does", "has", "on", "through", "via", "by"].contains(&self.word(a - 1)) && metric(self.word(a - 1)).is_none() {
            a -= 1;
        }
        // "the link to the running shoes": the name after it.
        let after = || {
            let start = noun + 1 + usize::from(["to", "for", "of", "about"].contains(&self.word(noun + 1)));
            let mut end = start;
            while end < self.toks.len() && !self.in_time(end) && !["get", "got", "do", "did", "have", "has", "had", "make", "made", "bring", "brought", "earn", "earned", "this", "last", "so"].contains(&self.word(end)) {
                end += 1;
            }
            self.trim(start, end)
        };
        match self.trim(a, noun).or_else(after) {
            Some((a, b)) => self.args.name = Some(self.original(a, b)),
            None => self.doubts.push(format!("which {} was not said", self.word(noun))),
        }
    }
}
