//! From a reading to what is done: [`plan`] finds what the command means in
//! the posting service (the account, the campaign by name, the post to
//! cancel, the link asked about) and writes the post where one is to be
//! written, so a confirmation shows exactly what will happen; [`execute`]
//! does it through `posting::api::ops`, under the caller's key.

use jiff::Timestamp;
use platform::auth::Caller;
use posting::analytics::{GroupBy, Row};
use posting::api::ops;
use posting::api::ApiError;
use posting::model::{Account, Post, State};
use posting::Posting;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::intent::{Intent, Metric, Parsed, Selector, Subject};
use crate::matching::{best, Match};
use crate::when::Clock;

/// Candidates written for a post scheduled by voice, the best kept: two
/// rank well enough and keep a spoken command near a second or two on a
/// CPU (the voice bench: four took about twice as long as two).
const SCHEDULE_CANDIDATES: usize = 2;

/// What a command will do, kept until it is confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Plan {
    /// Store these drafts.
    Drafts { account_id: String, topic: String, n: u32, campaign_id: Option<String> },
    /// Schedule this text at this instant (RFC 3339).
    Schedule { account_id: String, text: String, at: String, made_with_ai: bool, campaign_id: Option<String> },
    /// Cancel this post.
    Cancel { post_id: String },
    /// Set this campaign's status.
    Campaign { campaign_id: String, name: String, status: String },
    /// List the scheduled posts in `[from_ms, to_ms)`.
    Posts { account_id: Option<String>, from_ms: i64, to_ms: i64 },
    /// Report a figure.
    Report { metric: Metric, subject: Subject, key: Option<String>, label: String, campaign_id: Option<String>, from_ms: i64, to_ms: i64 },
}

/// What planning found.
#[derive(Debug)]
pub enum Step {
    /// Ready, with what it will do in words; `ambiguous` when a name
    /// matched more than one thing (the best is planned).
    Ready { plan: Plan, preview: String, ambiguous: bool },
    /// Something needed is missing or wrong: say what.
    Ask(String),
}

/// What a command runs with.
pub struct Context<'a> {
    /// The posting service.
    pub posting: &'a Posting,
    /// Whose key.
    pub caller: &'a Caller,
    /// The account it is about, when known.
    pub account: Option<&'a Account>,
    /// The campaign it is limited to (the request's `campaign`).
    pub campaign_id: Option<&'a str>,
    /// Now, in the account's zone.
    pub clock: &'a Clock,
}

fn ms(rfc: Option<&String>) -> Option<i64> {
    rfc.and_then(|s| s.parse::<jiff::Zoned>().ok().map(|z| z.timestamp()).or_else(|| s.parse::<Timestamp>().ok())).map(|t| t.as_millisecond())
}

impl Context<'_> {
    fn show(&self, at_ms: i64) -> String {
        Timestamp::from_millisecond(at_ms).map_or_else(|_| at_ms.to_string(), |t| t.to_zoned(self.clock.tz.clone()).strftime("%a %-d %b %Y %H:%M %Z").to_string())
    }

    fn account(&self) -> Result<&Account, String> {
        self.account.ok_or_else(|| "Which account? Name it in `account` (several are set up, or none is yet).".to_owned())
    }
}

/// What `parsed` will do, or what is missing.
pub async fn plan(cx: &Context<'_>, parsed: &Parsed) -> Result<Step, ApiError> {
    let a = &parsed.args;
    let now_ms = cx.clock.now.as_millisecond();
    let ask = |s: &str| Ok(Step::Ask(s.to_owned()));
    match parsed.intent {
        Intent::Unknown => ask("Sorry, I did not understand. Try: \"Schedule a post about our new earbuds for Friday at 6 pm\", \"What's scheduled tomorrow?\", \"Pause the coffee grinder campaign\" or \"How many clicks did the running shoes link get yesterday?\""),
        Intent::GenerateDrafts => {
            let account = match cx.account() {
                Ok(a) => a,
                Err(e) => return Ok(Step::Ask(e)),
            };
            let Some(topic) = a.topic.clone() else { return ask("What should the drafts be about?") };
            let n = a.n.unwrap_or(3);
            let preview = format!("write {n} draft(s) about {topic} for @{}", account.handle);
            let plan = Plan::Drafts { account_id: account.id.clone(), topic, n, campaign_id: cx.campaign_id.map(str::to_owned) };
            Ok(Step::Ready { plan, preview, ambiguous: false })
        }
        Intent::SchedulePost => {
            let account = match cx.account() {
                Ok(a) => a,
                Err(e) => return Ok(Step::Ask(e)),
            };
            let Some(at) = ms(a.scheduled_at.as_ref()) else { return ask("When should it go out? Say a day and a time, such as \"Friday at 6 pm\".") };
            // "now" was read a moment ago, to the second: it still means now.
            let at = if (now_ms - 5_000..=now_ms).contains(&at) { now_ms } else { at };
            if at < now_ms {
                return Ok(Step::Ask(format!("{} has passed; say a time ahead.", cx.show(at))));
            }
            let (text, made_with_ai) = match (&a.text, &a.topic) {
                (Some(t), _) => (t.clone(), false),
                (None, Some(topic)) => {
                    let drafts = ops::drafts(cx.posting, cx.caller, account, topic, SCHEDULE_CANDIDATES).await?;
                    let Some(d) = drafts.into_iter().next() else { return ask("The model wrote nothing that keeps the post rules; try another topic.") };
                    (d.text, true)
                }
                (None, None) => return ask("What should the post say, or what should it be about?"),
            };
            let at_rfc = Timestamp::from_millisecond(at).map(|t| t.to_string()).unwrap_or_default();
            let preview = format!("schedule on @{} for {}: \"{text}\"", account.handle, cx.show(at));
            let plan = Plan::Schedule { account_id: account.id.clone(), text, at: at_rfc, made_with_ai, campaign_id: cx.campaign_id.map(str::to_owned) };
            Ok(Step::Ready { plan, preview, ambiguous: false })
        }
        Intent::ListPosts => {
            let from_ms = ms(a.from.as_ref()).unwrap_or(now_ms);
            let to_ms = ms(a.to.as_ref()).unwrap_or(now_ms + 7 * 86_400_000);
            let preview = format!("list the posts scheduled from {} to {}", cx.show(from_ms), cx.show(to_ms));
            Ok(Step::Ready { plan: Plan::Posts { account_id: cx.account.map(|a| a.id.clone()), from_ms, to_ms }, preview, ambiguous: false })
        }
        Intent::CancelPost => cancel(cx, parsed).await,
        Intent::PauseCampaign | Intent::ResumeCampaign => {
            let Some(said) = &a.campaign else { return ask("Which campaign? Say its name.") };
            let status = if parsed.intent == Intent::PauseCampaign { "paused" } else { "active" };
            let campaigns = ops::campaigns(cx.posting, cx.caller).await?;
            let (c, others) = match best(said, &campaigns, |c| vec![c.name.clone(), c.niche.clone()]) {
                Match::None => return Ok(Step::Ask(format!("No campaign is called anything like \"{said}\"."))),
                Match::One(c) => (c, Vec::new()),
                Match::Several(cs) => (cs[0], cs[1..].iter().map(|o| format!("\"{}\"", o.name)).collect()),
            };
            let verb = if status == "paused" { "pause" } else { "resume" };
            let mut preview = format!("{verb} campaign \"{}\"", c.name);
            let ambiguous = !others.is_empty();
            if ambiguous {
                preview.push_str(&format!(" (\"{said}\" also fits: {})", others.join(", ")));
            }
            Ok(Step::Ready { plan: Plan::Campaign { campaign_id: c.id.clone(), name: c.name.clone(), status: status.into() }, preview, ambiguous })
        }
        Intent::ReportMetric => report(cx, parsed).await,
    }
}

async fn cancel(cx: &Context<'_>, parsed: &Parsed) -> Result<Step, ApiError> {
    let a = &parsed.args;
    let now_ms = cx.clock.now.as_millisecond();
    let mut posts: Vec<Post> = ops::posts(cx.posting, cx.caller, State::Scheduled, cx.account.map(|a| a.id.as_str())).await?;
    posts.retain(|p| p.scheduled_ms.is_some_and(|t| t > now_ms));
    posts.sort_by_key(|p| p.scheduled_ms);
    let (post, ambiguous) = match a.selector {
        Some(Selector::Id) => {
            let Some(id) = &a.post_id else { return Ok(Step::Ask("Which post id?".into())) };
            (posts.iter().find(|p| &p.id == id), false)
        }
        Some(Selector::Next) => (posts.first(), false),
        Some(Selector::Last) => (posts.iter().max_by_key(|p| p.created_ms), false),
        Some(Selector::Time) => {
            let Some(at) = ms(a.scheduled_at.as_ref()) else { return Ok(Step::Ask("At what time is the post you mean?".into())) };
            // The post at that time, else those within half an hour of it;
            // a day said without a time: that local day.
            let (exact, near): (Vec<&Post>, Vec<&Post>) = if a.time_assumed {
                let (start, end) = local_day(at, cx);
                let day: Vec<&Post> = posts.iter().filter(|p| p.scheduled_ms.is_some_and(|t| t >= start && t < end)).collect();
                (Vec::new(), day)
            } else {
                let within = |ms: i64| posts.iter().filter(|p| p.scheduled_ms.is_some_and(|t| (t - at).abs() <= ms)).collect::<Vec<_>>();
                (within(59_999), within(30 * 60_000))
            };
            match (exact.as_slice(), near.as_slice()) {
                ([one], _) => (Some(*one), false),
                ([first, ..], _) => (Some(*first), true),
                ([], [one]) => (Some(*one), false),
                ([], [first, ..]) => (Some(*first), true),
                ([], []) => (None, false),
            }
        }
        None => return Ok(Step::Ask("Which post? Say \"the next post\", its time, or its id.".into())),
    };
    let Some(post) = post else { return Ok(Step::Ask("No scheduled post matches that.".into())) };
    let at = post.scheduled_ms.map_or_else(String::new, |t| cx.show(t));
    let preview = format!("cancel the post of {at}: \"{}\"", ops::first_text(post));
    Ok(Step::Ready { plan: Plan::Cancel { post_id: post.id.clone() }, preview, ambiguous })
}

/// The local day (in the account's zone) around `at_ms`, in Unix ms.
fn local_day(at_ms: i64, cx: &Context<'_>) -> (i64, i64) {
    let day = Timestamp::from_millisecond(at_ms).ok().map(|t| t.to_zoned(cx.clock.tz.clone())).and_then(|z| {
        let start = z.start_of_day().ok()?;
        let end = start.tomorrow().ok()?.start_of_day().ok()?;
        Some((start.timestamp().as_millisecond(), end.timestamp().as_millisecond()))
    });
    day.unwrap_or((at_ms, at_ms + 86_400_000))
}

async fn report(cx: &Context<'_>, parsed: &Parsed) -> Result<Step, ApiError> {
    let a = &parsed.args;
    let now_ms = cx.clock.now.as_millisecond();
    let metric = a.metric.unwrap_or(Metric::Clicks);
    let from_ms = ms(a.from.as_ref()).unwrap_or(now_ms - 30 * 86_400_000);
    let to_ms = ms(a.to.as_ref()).unwrap_or(now_ms + 1);
    let subject = a.subject.unwrap_or(Subject::All);
    let name = a.name.clone().or_else(|| a.campaign.clone());
    let (key, label, campaign_id, ambiguous) = match (subject, name) {
        (Subject::Link, Some(said)) => {
            let links = ops::links(cx.posting, cx.caller).await?;
            let m = best(&said, &links, |(l, product)| {
                let mut names: Vec<String> = product.iter().cloned().collect();
                names.extend(l.utm_content.iter().cloned());
                names.push(l.code.clone());
                names.push(l.target.clone());
                names
            });
            let (l, ambiguous) = match m {
                Match::None => return Ok(Step::Ask(format!("No link is for anything like \"{said}\"."))),
                Match::One(l) => (l, false),
                // Several links to one product are one thing asked about: their sum.
                Match::Several(ls) => (ls[0], ls.iter().any(|x| x.1 != ls[0].1)),
            };
            let label = format!("the {} link", l.1.clone().unwrap_or_else(|| l.0.code.clone()));
            // A product's links count together (by its id); a link to no product alone (by its code).
            let key = l.0.product_id.as_ref().map_or_else(|| format!("code:{}", l.0.code), |p| format!("product:{p}"));
            (Some(key), label, None, ambiguous)
        }
        (Subject::Campaign, Some(said)) => {
            let campaigns = ops::campaigns(cx.posting, cx.caller).await?;
            let (c, ambiguous) = match best(&said, &campaigns, |c| vec![c.name.clone(), c.niche.clone()]) {
                Match::None => return Ok(Step::Ask(format!("No campaign is called anything like \"{said}\"."))),
                Match::One(c) => (c, false),
                Match::Several(cs) => (cs[0], true),
            };
            (Some(c.id.clone()), format!("campaign \"{}\"", c.name), Some(c.id.clone()), ambiguous)
        }
        (Subject::Post, _) => {
            let mut posted = ops::posts(cx.posting, cx.caller, State::Posted, cx.account.map(|a| a.id.as_str())).await?;
            posted.sort_by_key(|p| p.posted_ms);
            let Some(last) = posted.last() else { return Ok(Step::Ask("Nothing has been posted yet.".into())) };
            let label = format!("your last post (\"{}\")", ops::first_text(last));
            (Some(last.id.clone()), label, None, false)
        }
        _ => (None, "everything".into(), None, false),
    };
    // A post's figures count from when it went out, whatever the period.
    let (from_ms, to_ms) = if subject == Subject::Post { (0, now_ms + 1) } else { (from_ms, to_ms) };
    let preview = format!("report {} for {label}", metric.as_str());
    let plan = Plan::Report { metric, subject, key, label, campaign_id, from_ms, to_ms };
    Ok(Step::Ready { plan, preview, ambiguous })
}

/// Carry `plan` out: the result and a sentence for the person.
pub async fn execute(cx: &Context<'_>, plan: &Plan) -> Result<(Value, String), ApiError> {
    let p = cx.posting;
    match plan {
        Plan::Drafts { account_id, topic, n, campaign_id } => {
            let account = ops::accounts(p, cx.caller).await?.into_iter().find(|a| &a.id == account_id).ok_or_else(|| ApiError::not_found("account", account_id))?;
            let drafts = ops::drafts(p, cx.caller, &account, topic, *n as usize).await?;
            let mut made = Vec::new();
            for d in drafts.iter().take(*n as usize) {
                let new = ops::NewPost { account_id: account_id.clone(), text: d.text.clone(), campaign_id: campaign_id.clone(), made_with_ai: true, scheduled_at: None };
                let post = ops::create_post(p, cx.caller, new).await?;
                made.push(json!({"post_id": post.id, "text": d.text, "score": d.score}));
            }
            let reply = format!("I wrote {} draft(s) about {topic}; they wait for your approval.", made.len());
            Ok((json!({"drafts": made}), reply))
        }
        Plan::Schedule { account_id, text, at, made_with_ai, campaign_id } => {
            // Confirmed after its time: it would go out at once, not when it was asked for.
            if ms(Some(at)).is_some_and(|t| t < cx.clock.now.as_millisecond() - 60_000) {
                return Err(ApiError::conflict(format!("{} has passed; say the command again with a new time", ms(Some(at)).map_or_else(String::new, |t| cx.show(t)))));
            }
            let new = ops::NewPost { account_id: account_id.clone(), text: text.clone(), campaign_id: campaign_id.clone(), made_with_ai: *made_with_ai, scheduled_at: Some(at.clone()) };
            let post = ops::create_post(p, cx.caller, new).await?;
            let when = post.scheduled_ms.map_or_else(String::new, |t| cx.show(t));
            Ok((json!({"post": post}), format!("Scheduled for {when}: \"{text}\"")))
        }
        Plan::Cancel { post_id } => {
            let post = ops::cancel_post(p, cx.caller, post_id).await?;
            Ok((json!({"post": post}), format!("Cancelled: \"{}\"", ops::first_text(&post))))
        }
        Plan::Campaign { campaign_id, name, status } => {
            let c = ops::set_campaign_status(p, cx.caller, campaign_id, status).await?;
            let verb = if status == "paused" { "paused" } else { "resumed" };
            Ok((json!({"campaign": c}), format!("Campaign \"{name}\" is {verb}.")))
        }
        Plan::Posts { account_id, from_ms, to_ms } => {
            let mut posts = ops::posts(p, cx.caller, State::Scheduled, account_id.as_deref()).await?;
            posts.retain(|post| post.scheduled_ms.is_some_and(|t| t >= *from_ms && t < *to_ms));
            posts.sort_by_key(|post| post.scheduled_ms);
            let lines: Vec<String> = posts.iter().map(|post| format!("{}: {}", post.scheduled_ms.map_or_else(String::new, |t| cx.show(t)), ops::first_text(post))).collect();
            let reply = match lines.len() {
                0 => "Nothing is scheduled then.".to_owned(),
                n => format!("{n} post(s) scheduled. {}", lines.join("; ")),
            };
            let list: Vec<Value> = posts.iter().map(|post| json!({"id": post.id, "scheduled_ms": post.scheduled_ms, "text": ops::first_text(post)})).collect();
            Ok((json!({"posts": list, "from_ms": from_ms, "to_ms": to_ms}), reply))
        }
        Plan::Report { metric, subject, key, label, campaign_id, from_ms, to_ms } => {
            let by = match subject {
                Subject::Link => GroupBy::Product,
                Subject::Post => GroupBy::Post,
                Subject::Campaign | Subject::All => GroupBy::Campaign,
            };
            let by = if key.as_deref().is_some_and(|k| k.starts_with("code:")) { GroupBy::Link } else { by };
            let rows = ops::analytics(p, cx.caller, by, *from_ms, *to_ms, campaign_id.as_deref()).await?;
            let wanted = key.as_deref().map(|k| k.split_once(':').map_or(k, |(_, v)| v));
            let chosen: Vec<&Row> = rows.iter().filter(|r| wanted.is_none_or(|w| r.key == w)).collect();
            let value = figure(*metric, &chosen);
            let shown = match metric {
                Metric::Engagement | Metric::Ctr => format!("{:.2}%", value * 100.0),
                Metric::Revenue => format!("{value:.2}"),
                _ => format!("{value}"),
            };
            let period = format!("from {} to {}", cx.show(*from_ms), cx.show(*to_ms));
            let reply = format!("{label}: {shown} {} {period}.", metric.as_str());
            Ok((json!({"metric": metric, "value": value, "subject": subject, "label": label, "from_ms": from_ms, "to_ms": to_ms}), reply))
        }
    }
}

/// `metric` over `rows` (rates from the summed counts).
fn figure(metric: Metric, rows: &[&Row]) -> f64 {
    let sum = |f: fn(&Row) -> i64| rows.iter().map(|r| f(r)).sum::<i64>() as f64;
    let impressions = sum(|r| r.impressions);
    let rate = |n: f64| if impressions > 0.0 { n / impressions } else { 0.0 };
    match metric {
        Metric::Clicks => sum(|r| r.link_clicks),
        Metric::Impressions => impressions,
        Metric::Likes => sum(|r| r.likes),
        Metric::Reposts => sum(|r| r.reposts),
        Metric::Replies => sum(|r| r.replies),
        Metric::Posts => sum(|r| r.posts),
        Metric::Revenue => rows.iter().map(|r| r.revenue_estimate).sum(),
        Metric::Ctr => rate(sum(|r| r.link_clicks)),
        Metric::Engagement => rows.iter().map(|r| r.engagement_rate * r.impressions as f64).sum::<f64>() / impressions.max(1.0),
    }
}
