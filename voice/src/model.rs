//! The language model's reading, for commands the grammar did not read: a
//! chat request under a JSON schema (so the answer always parses), routed
//! and recorded like any API call (the binary implements [`Model`] with
//! the gateway). A small model guesses, so its reading is never trusted to
//! act alone: every argument must be words the person said, the intent
//! must fit a word said, and its confidence stays below the bar for
//! acting without a confirmation.

use futures_util::future::BoxFuture;
use platform::auth::Caller;
use serde_json::{json, Value};

use crate::grammar::UNSURE;
use crate::intent::{Arguments, Intent, Metric, Parsed, Reader, Subject};
use crate::when::{self, Clock, Direction};
use crate::words::tokens;

/// A call to another part of the process that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The HTTP status that fits.
    pub status: u16,
    /// What went wrong.
    pub message: String,
    /// The request field it names, where it names one.
    pub param: Option<String>,
}

/// Answers a chat under a JSON schema.
pub trait Model: Send + Sync {
    /// The JSON object the model (`route`, or the local model) answers to
    /// `system` and `user` under `schema`, on behalf of `caller`.
    fn json<'a>(&'a self, caller: &'a Caller, route: Option<&'a str>, system: &'a str, user: &'a str, schema: &'a Value) -> BoxFuture<'a, Result<Value, Failure>>;
}

/// The schema the model answers under.
pub fn schema() -> Value {
    let intents: Vec<&str> = Intent::ALL.iter().map(|i| i.as_str()).collect();
    let metrics: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
    json!({
        "type": "object",
        "properties": {
            "intent": {"enum": intents},
            "topic": {"type": "string", "maxLength": 120},
            "when": {"type": "string", "maxLength": 60},
            "campaign": {"type": "string", "maxLength": 60},
            "metric": {"enum": metrics},
            "name": {"type": "string", "maxLength": 60},
            "n": {"type": "integer", "minimum": 1, "maximum": 16}
        },
        "required": ["intent"],
        "additionalProperties": false
    })
}

/// What the model is told: the intents, then examples.
pub const SYSTEM: &str = "You turn a social media manager's spoken command into JSON. Intents: \
generate_drafts (write n posts about a topic), schedule_post (post about a topic at a time), \
list_posts (what is scheduled), cancel_post, pause_campaign, resume_campaign, \
report_metric (clicks, impressions, engagement or revenue of a link or campaign), unknown (anything else). \
Copy topic, when, campaign and name word for word from the command.";

/// Worked examples, as user/assistant turns in one prompt.
const EXAMPLES: &[(&str, &str)] = &[
    ("Could you whip up four tweets on vegan snacks", r#"{"intent":"generate_drafts","topic":"vegan snacks","n":4}"#),
    ("Get something out about the spring sale tomorrow at noon", r#"{"intent":"schedule_post","topic":"the spring sale","when":"tomorrow at noon"}"#),
    ("Anything going out on Monday", r#"{"intent":"list_posts","when":"Monday"}"#),
    ("Take the hiking boots campaign offline", r#"{"intent":"pause_campaign","campaign":"hiking boots"}"#),
    ("How did the yoga mat link do last week", r#"{"intent":"report_metric","metric":"clicks","name":"yoga mat","when":"last week"}"#),
    ("What a lovely day", r#"{"intent":"unknown"}"#),
];

/// The user turn: the examples, then the command.
pub fn user_prompt(command: &str) -> String {
    let mut s = String::new();
    for (said, json) in EXAMPLES {
        s.push_str(&format!("Command: {said}\nJSON: {json}\n"));
    }
    s.push_str(&format!("Command: {command}\nJSON:"));
    s
}

/// Words that must be among the command's for the model's intent to stand.
fn grounds(intent: Intent) -> &'static [&'static str] {
    match intent {
        Intent::GenerateDrafts => &["write", "generate", "draft", "drafts", "idea", "ideas", "create", "brainstorm", "suggest", "compose", "whip", "posts", "tweets", "options"],
        Intent::SchedulePost => &["schedule", "post", "tweet", "publish", "share", "queue", "send", "out", "plan", "announce", "toot"],
        Intent::ListPosts => &["scheduled", "queue", "queued", "upcoming", "coming", "planned", "list", "show", "calendar", "lined", "going"],
        Intent::CancelPost => &["cancel", "delete", "remove", "unschedule", "scrap", "drop", "kill", "axe", "undo", "forget"],
        Intent::PauseCampaign => &["pause", "stop", "halt", "hold", "suspend", "freeze", "offline", "off"],
        Intent::ResumeCampaign => &["resume", "restart", "unpause", "continue", "again", "back", "reactivate", "online", "on"],
        Intent::ReportMetric => &[
            "clicks", "click", "impressions", "views", "engagement", "revenue", "earn", "earned", "money", "sales", "likes", "stats",
            "numbers", "performance", "perform", "performing", "do", "doing", "did",
        ],
        Intent::Unknown => &[],
    }
}

/// The model's answer `v` to `command`, checked against what was said.
pub fn parsed(v: &Value, command: &str, clock: &Clock) -> Parsed {
    let words = tokens(command);
    let lower = command.to_lowercase();
    let intent = v["intent"].as_str().and_then(|s| Intent::ALL.iter().copied().find(|i| i.as_str() == s)).unwrap_or(Intent::Unknown);
    if intent == Intent::Unknown || !words.iter().any(|w| grounds(intent).contains(&w.as_str())) {
        return Parsed::unknown(Reader::Model);
    }
    let mut doubts = vec!["read by the language model, not the command grammar".to_owned()];
    // Only words that were said.
    let said = |key: &str, doubts: &mut Vec<String>| -> Option<String> {
        let s = v[key].as_str()?.trim();
        if s.is_empty() {
            return None;
        }
        if lower.contains(&s.to_lowercase()) {
            Some(s.to_owned())
        } else {
            doubts.push(format!("the model's {key} `{s}` was not said; left out"));
            None
        }
    };
    let mut args = Arguments { topic: said("topic", &mut doubts), campaign: said("campaign", &mut doubts), name: said("name", &mut doubts), ..Arguments::default() };
    if intent == Intent::GenerateDrafts {
        args.n = Some(v["n"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(3).clamp(1, 16));
    }
    if intent == Intent::ReportMetric {
        args.metric = v["metric"].as_str().and_then(|s| Metric::ALL.iter().copied().find(|m| m.as_str() == s)).or(Some(Metric::Clicks));
        args.subject = Some(match (&args.name, &args.campaign) {
            (Some(_), _) if words.iter().any(|w| w == "link") => Subject::Link,
            (_, Some(_)) => Subject::Campaign,
            (Some(_), None) => Subject::Link,
            (None, None) => Subject::All,
        });
        if args.subject == Some(Subject::Campaign) {
            args.name = args.campaign.take();
        }
    }
    let dir = if intent == Intent::ReportMetric { Direction::Past } else { Direction::Future };
    if let Some(w) = said("when", &mut doubts) {
        match when::find(&tokens(&w), clock, dir) {
            Some(f) => {
                args.when = Some(w);
                if let Some(p) = f.point(clock).filter(|_| matches!(intent, Intent::SchedulePost | Intent::CancelPost)) {
                    args.scheduled_at = Some(p.at.to_string());
                    args.time_assumed = p.time_assumed;
                }
                if let Some(p) = f.period(clock).filter(|_| matches!(intent, Intent::ListPosts | Intent::ReportMetric)) {
                    args.from = Some(p.start.to_string());
                    args.to = Some(p.end.to_string());
                }
            }
            None => doubts.push(format!("`{w}` is not a time this server reads")),
        }
    }
    Parsed { intent, args, confidence: UNSURE, reader: Reader::Model, doubts }
}
