//! The API's operations as functions, for the other services of the
//! process (voice commands): the same checks of what the caller's key may
//! see and do as over HTTP, without a round trip to ourselves.

use axum::body::Bytes;
use platform::auth::Caller;

use super::posts::{Create, When};
use super::{Access, ApiError};
use crate::analytics::{GroupBy, Row};
use crate::drafts::{Draft, DraftRequest};
use crate::model::{Account, Campaign, Part, Post, State as PostState};
use crate::store::{Link, PostFilter, Tenant};
use crate::Posting;

/// A post to store.
#[derive(Debug, Clone, Default)]
pub struct NewPost {
    /// From this account.
    pub account_id: String,
    /// Its words.
    pub text: String,
    /// In this campaign.
    pub campaign_id: Option<String>,
    /// Written by a model.
    pub made_with_ai: bool,
    /// When it goes out (RFC 3339, or a local date-time in the account's
    /// zone); none: a draft.
    pub scheduled_at: Option<String>,
}

/// The accounts the caller may see.
pub async fn accounts(p: &Posting, caller: &Caller) -> Result<Vec<Account>, ApiError> {
    let access = Access::load(p, caller).await?;
    let mut all = p.store.accounts(&access.tenant).await?;
    if let Some(c) = &access.campaign {
        let only = p.store.campaign(&Tenant::All, c).await?.map(|c| c.account_id);
        all.retain(|a| Some(&a.id) == only.as_ref());
    }
    Ok(all)
}

/// The campaigns the caller may see.
pub async fn campaigns(p: &Posting, caller: &Caller) -> Result<Vec<Campaign>, ApiError> {
    let access = Access::load(p, caller).await?;
    let mut all = p.store.campaigns(&access.tenant).await?;
    all.retain(|c| access.allows_campaign(Some(&c.id)));
    Ok(all)
}

/// Set a campaign's status (`active`, `paused`, `completed`).
pub async fn set_campaign_status(p: &Posting, caller: &Caller, id: &str, status: &str) -> Result<Campaign, ApiError> {
    let access = Access::load(p, caller).await?;
    super::campaigns::set_status_of(p, &access, id, status).await
}

/// Store a post: scheduled when it has a time, else a draft.
pub async fn create_post(p: &Posting, caller: &Caller, new: NewPost) -> Result<Post, ApiError> {
    let access = Access::load(p, caller).await?;
    let req = Create {
        account_id: new.account_id,
        text: Some(new.text),
        parts: None,
        campaign_id: new.campaign_id,
        variant: None,
        affiliate: false,
        paid_partnership: false,
        made_with_ai: new.made_with_ai,
        state: None,
        when: When { scheduled_at: new.scheduled_at, next_slot: false },
    };
    super::posts::create_post(p, &access, req).await
}

/// The caller's posts in `state` (newest first, at most 500), of one
/// account where given.
pub async fn posts(p: &Posting, caller: &Caller, state: PostState, account_id: Option<&str>) -> Result<Vec<Post>, ApiError> {
    let access = Access::load(p, caller).await?;
    let filter = PostFilter { state: Some(state), account_id: account_id.map(str::to_owned), campaign_id: access.campaign.clone(), before: None, limit: 500 };
    Ok(p.store.posts(&access.tenant, &filter).await?)
}

/// Cancel a post that has not gone out.
pub async fn cancel_post(p: &Posting, caller: &Caller, id: &str) -> Result<Post, ApiError> {
    let access = Access::load(p, caller).await?;
    super::posts::act_on(p, &access, id, "cancel", &Bytes::new()).await
}

/// The caller's figures over `[from_ms, to_ms)` grouped `by` (one campaign where given).
pub async fn analytics(p: &Posting, caller: &Caller, by: GroupBy, from_ms: i64, to_ms: i64, campaign: Option<&str>) -> Result<Vec<Row>, ApiError> {
    let access = Access::load(p, caller).await?;
    let campaign = match (&access.campaign, campaign) {
        (Some(only), Some(asked)) if only != asked => return Err(ApiError::not_found("campaign", asked)),
        (Some(only), _) => Some(only.as_str()),
        (None, asked) => asked,
    };
    super::analytics::rows(p, &access.tenant, by, from_ms, to_ms, campaign).await
}

/// The caller's short links with their product's name, where they have one.
pub async fn links(p: &Posting, caller: &Caller) -> Result<Vec<(Link, Option<String>)>, ApiError> {
    let access = Access::load(p, caller).await?;
    let links = p.store.links(&access.tenant, access.campaign.as_deref()).await?;
    let products = p.store.products(&access.tenant).await?;
    Ok(links
        .into_iter()
        .map(|(l, _)| {
            let name = l.product_id.as_ref().and_then(|id| products.iter().find(|pr| &pr.id == id)).map(|pr| pr.name.clone());
            (l, name)
        })
        .collect())
}

/// `n` candidates about `topic` for `account`, best first, from the
/// process's content pipeline (routed, budgeted and recorded under the
/// caller's key).
pub async fn drafts(p: &Posting, caller: &Caller, account: &Account, topic: &str, n: usize) -> Result<Vec<Draft>, ApiError> {
    let drafter = p.drafter.get().ok_or_else(|| ApiError::unavailable("drafts need the content pipeline, which is not running in this process"))?;
    let rules = p.platforms.get(&account.platform).map_or(post_rules::Platform::X, |pl| pl.rules());
    let recent = p.store.recent_texts(&account.id, crate::model::now_ms() - 30 * 86_400_000, "").await?;
    let req = DraftRequest {
        caller: caller.clone(),
        platform: rules,
        max_length: account.max_length.and_then(|l| usize::try_from(l).ok()),
        topic: Some(topic.to_owned()),
        product: None,
        link: None,
        disclosure: None,
        banned_terms: p.config.gate.banned_terms.clone(),
        recent_posts: recent,
        n,
        seed: None,
    };
    drafter.drafts(req).await.map_err(|e| ApiError::from_status(e.status, e.message))
}

/// A thread's first part, for replies that quote a post.
pub fn first_text(post: &Post) -> &str {
    post.parts.first().map_or("", |p: &Part| p.text.as_str())
}
