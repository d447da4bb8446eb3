//! What the service keeps: accounts, campaigns and posts, and the states a
//! post goes through. Storage is in [`crate::store`]; these are the rows as
//! the rest of the crate (and the API's JSON) sees them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A post's place in its life. The dispatcher's part:
/// `scheduled -> claimed -> attempting -> posted | failed | unknown`,
/// with `attempting` committed before the platform is called, so a crash
/// mid-call is found as `attempting` (then `unknown`), never as a post
/// that may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Written, waiting for approval.
    Draft,
    /// Approved, not yet given a time.
    Approved,
    /// Waiting for its time (`due_ms`).
    Scheduled,
    /// Taken by a dispatcher under a lease, not yet sent.
    Claimed,
    /// Being sent: the call to the platform may have reached it.
    Attempting,
    /// Every part is on the platform.
    Posted,
    /// Refused for good (by the platform, or out of attempts).
    Failed,
    /// Sent with no answer (a timeout, a 5xx, a crash): not sent again
    /// until the account's posts show whether it arrived, or a person says.
    Unknown,
    /// The pre-flight gate refused it; `last_error` says why.
    Blocked,
    /// Withdrawn by a person.
    Cancelled,
}

impl State {
    /// Every state, as stored.
    pub const ALL: [Self; 10] = [
        Self::Draft,
        Self::Approved,
        Self::Scheduled,
        Self::Claimed,
        Self::Attempting,
        Self::Posted,
        Self::Failed,
        Self::Unknown,
        Self::Blocked,
        Self::Cancelled,
    ];

    /// The stored (and JSON) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Approved => "approved",
            Self::Scheduled => "scheduled",
            Self::Claimed => "claimed",
            Self::Attempting => "attempting",
            Self::Posted => "posted",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::Blocked => "blocked",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the dispatcher is done with it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Posted | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown state `{s}`"))
    }
}

/// One part of a post: the post itself, or one post of a thread (each
/// after the first replies to the one before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// The text.
    pub text: String,
    /// Media already uploaded to the platform (its media ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
}

/// An account's standing with its platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Posts go out.
    Active,
    /// The platform refused our credentials (401): a person must authorise
    /// the account again; its posts wait.
    NeedsReauth,
    /// The platform suspended the account: nothing is sent.
    Suspended,
}

impl AccountStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NeedsReauth => "needs_reauth",
            Self::Suspended => "suspended",
        }
    }

    /// The stored name read back (an unknown one reads as suspended: send nothing).
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => Self::Active,
            "needs_reauth" => Self::NeedsReauth,
            _ => Self::Suspended,
        }
    }
}

/// An account on a platform (never its credentials: those stay sealed in
/// the store and are opened only to post).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Account {
    /// `acc_...`.
    pub id: String,
    /// The key that owns it ('' without keys).
    #[serde(skip)]
    pub owner: String,
    /// `dry-run`, `x`, `bluesky`.
    pub platform: String,
    /// The account's name on the platform.
    pub handle: String,
    /// IANA zone: slots and daily caps are in its local time.
    pub time_zone: String,
    /// Most posts per local day.
    pub daily_cap: i64,
    /// The account's own length limit where it has a larger one (X Premium).
    pub max_length: Option<i64>,
    /// Whether credentials are stored.
    pub has_credentials: bool,
    /// Standing with the platform.
    pub status: AccountStatus,
    /// Why it is not active.
    pub status_reason: Option<String>,
    /// Rate limited until (Unix ms).
    pub paused_until_ms: Option<i64>,
    /// The platform's id for it.
    pub remote_id: Option<String>,
    /// Unix ms.
    pub created_ms: i64,
}

/// A campaign: what an account posts about, when and under which rules.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Campaign {
    /// `cmp_...`.
    pub id: String,
    /// The key that owns it.
    #[serde(skip)]
    pub owner: String,
    /// The account it posts from.
    pub account_id: String,
    /// Its name.
    pub name: String,
    /// What it is about, in the user's words.
    pub niche: String,
    /// `active`, `paused`, `completed`.
    pub status: String,
    /// Posting times per weekday (`mon`..`sun`, `HH:MM`), in the account's zone.
    pub slots: std::collections::BTreeMap<String, Vec<String>>,
    /// The link its posts carry.
    pub link_url: Option<String>,
    /// `hashtag` (`#ad` first), `paid_partnership` (X's flag) or `none`.
    pub disclosure: String,
    /// Words its posts must not contain.
    pub banned_terms: Vec<String>,
    /// A/B variant names.
    pub variants: Vec<String>,
    /// Product ids.
    pub products: Vec<String>,
    /// `required` (drafts wait for a person) or `auto`.
    pub approval: String,
    /// Most spent on posts with links (USD), where the platform charges more for them.
    pub link_budget_usd: Option<f64>,
    /// Posting times as a cron expression too (`0 9 * * mon-fri`), in the account's zone.
    pub cron: Option<String>,
    /// No slot at or after this (Unix ms).
    pub ends_ms: Option<i64>,
    /// No slot once the campaign has this many posts.
    pub max_posts: Option<i64>,
    /// The dispatcher fills its free slots of the coming days by itself.
    pub autofill: bool,
    /// Unix ms.
    pub created_ms: i64,
}

impl Campaign {
    /// Its cron expression, parsed (checked when stored).
    pub fn cron(&self) -> Option<crate::cron::Cron> {
        self.cron.as_deref().and_then(|c| c.parse().ok())
    }

    /// Whether it has any posting time.
    pub fn has_times(&self) -> bool {
        self.cron.is_some() || self.slots.values().any(|t| !t.is_empty())
    }
}

/// A post and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Post {
    /// `post_...`.
    pub id: String,
    /// The key that owns it.
    #[serde(skip)]
    pub owner: String,
    /// The account it goes out from.
    pub account_id: String,
    /// Its campaign.
    pub campaign_id: Option<String>,
    /// Its A/B variant.
    pub variant: Option<String>,
    /// The post, or a thread's posts in order.
    pub parts: Vec<Part>,
    /// It promotes something for a commission: needs a disclosure.
    pub affiliate: bool,
    /// X's paid-partnership label.
    pub paid_partnership: bool,
    /// X's made-with-AI label.
    pub made_with_ai: bool,
    /// Where it stands.
    pub state: State,
    /// When it is to go out (Unix ms, UTC).
    pub scheduled_ms: Option<i64>,
    /// When the dispatcher may next take it.
    pub due_ms: Option<i64>,
    /// Calls made to the platform.
    pub attempts: i64,
    /// When the part being sent was first tried (its idempotency key's
    /// age, where the platform has keys).
    #[serde(skip)]
    pub first_try_ms: Option<i64>,
    /// The platform's ids of the parts posted so far.
    pub external_ids: Vec<String>,
    /// Why it is where it is, when that is not plain progress.
    pub last_error: Option<String>,
    /// When the last part went out.
    pub posted_ms: Option<i64>,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms.
    pub updated_ms: i64,
}

impl Post {
    /// Whether any part carries a URL.
    pub fn has_link(parts: &[Part]) -> bool {
        parts.iter().any(|p| !post_rules::extract::entities(&p.text).urls.is_empty())
    }
}

/// A state change of a post, with why.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PostEvent {
    /// Unix ms.
    pub at_ms: i64,
    /// From (None: created).
    pub from: Option<String>,
    /// To.
    pub to: String,
    /// Why.
    pub detail: Option<String>,
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A fresh id: `prefix_` and 16 random alphanumerics.
pub fn new_id(prefix: &str) -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!("{prefix}_{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 16))
}
