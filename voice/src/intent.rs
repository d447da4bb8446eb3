//! What a command asks for: its [`Intent`] and [`Arguments`], as the
//! grammar ([`crate::grammar`]) or the model ([`crate::model`]) read them.

use serde::{Deserialize, Serialize};

/// The commands Starling understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// Write `n` drafts about a topic.
    GenerateDrafts,
    /// Schedule a post (a topic to write about, or the literal text) at a time.
    SchedulePost,
    /// The posts scheduled in a period.
    ListPosts,
    /// Cancel a scheduled post (the next, the one at a time, or by id).
    CancelPost,
    /// Pause a campaign (matched by name).
    PauseCampaign,
    /// Resume a paused campaign.
    ResumeCampaign,
    /// A figure (clicks, impressions, engagement, revenue...) for a link,
    /// campaign or post over a period.
    ReportMetric,
    /// Not understood.
    Unknown,
}

impl Intent {
    /// Every intent, in the order the model is told them.
    pub const ALL: [Intent; 8] = [
        Self::GenerateDrafts,
        Self::SchedulePost,
        Self::ListPosts,
        Self::CancelPost,
        Self::PauseCampaign,
        Self::ResumeCampaign,
        Self::ReportMetric,
        Self::Unknown,
    ];

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GenerateDrafts => "generate_drafts",
            Self::SchedulePost => "schedule_post",
            Self::ListPosts => "list_posts",
            Self::CancelPost => "cancel_post",
            Self::PauseCampaign => "pause_campaign",
            Self::ResumeCampaign => "resume_campaign",
            Self::ReportMetric => "report_metric",
            Self::Unknown => "unknown",
        }
    }

    /// It undoes something a person set up: always confirmed first.
    pub fn destructive(self) -> bool {
        matches!(self, Self::CancelPost | Self::PauseCampaign)
    }

    /// It changes something (a read-only key may not).
    pub fn writes(self) -> bool {
        !matches!(self, Self::ListPosts | Self::ReportMetric | Self::Unknown)
    }
}

impl std::fmt::Display for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The figures a report can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Human clicks on our short links.
    Clicks,
    /// Times shown.
    Impressions,
    /// (likes + reposts + replies + quotes) / impressions.
    Engagement,
    /// Estimated commission.
    Revenue,
    /// Likes.
    Likes,
    /// Reposts.
    Reposts,
    /// Replies.
    Replies,
    /// Posts that went out.
    Posts,
    /// Clicks / impressions.
    Ctr,
}

impl Metric {
    /// Every metric, in the order the model is told them.
    pub const ALL: [Metric; 9] =
        [Self::Clicks, Self::Impressions, Self::Engagement, Self::Revenue, Self::Likes, Self::Reposts, Self::Replies, Self::Posts, Self::Ctr];

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clicks => "clicks",
            Self::Impressions => "impressions",
            Self::Engagement => "engagement",
            Self::Revenue => "revenue",
            Self::Likes => "likes",
            Self::Reposts => "reposts",
            Self::Replies => "replies",
            Self::Posts => "posts",
            Self::Ctr => "ctr",
        }
    }
}

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// A short link (by its product, campaign or code).
    Link,
    /// A campaign (by name).
    Campaign,
    /// A post (`name`: `last`, or an id).
    Post,
    /// Everything the key sees.
    All,
}

/// Which post a cancel means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// The next one due.
    Next,
    /// The last one scheduled (most recently made).
    Last,
    /// The one at `scheduled_at` (or on that day, when no time was said).
    Time,
    /// The one with `post_id`.
    Id,
}

/// A command's arguments, as said and as resolved. Absent ones are left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arguments {
    /// What to write about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The post's own words (said after "saying", or quoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// How many drafts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// The time words as said ("Friday at 6 pm").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The instant they mean, RFC 3339 with the account's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// No time of day was said: 09:00 was assumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub time_assumed: bool,
    /// A period's start (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A period's end, exclusive (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Which post (cancel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// A post id (cancel by id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_id: Option<String>,
    /// A campaign's name as said ("coffee grinder").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// The figure asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// What it is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// The subject's name as said ("running shoes"; `last` for the last post).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Who read the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reader {
    /// The deterministic command grammar.
    Grammar,
    /// The language model (under a JSON schema), for what the grammar did not read.
    Model,
}

/// A command read.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// What it asks for.
    pub intent: Intent,
    /// With what.
    pub args: Arguments,
    /// 0..1: how sure the reading is.
    pub confidence: f64,
    /// Who read it.
    pub reader: Reader,
    /// What is missing or unsure, for the reply.
    pub doubts: Vec<String>,
}

impl Parsed {
    /// Nothing understood.
    pub fn unknown(reader: Reader) -> Self {
        Self { intent: Intent::Unknown, args: Arguments::default(), confidence: 0.0, reader, doubts: Vec::new() }
    }
}
