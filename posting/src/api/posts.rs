//! `/api/v1/posts` and the actions on one post: `approve`, `schedule`,
//! `cancel`, and for a post whose outcome is unknown or that was blocked,
//! what a person decides: `retry` (send it), `dismiss` (drop it),
//! `confirm` (it is on the platform, with this id).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use platform::auth::Caller;
use serde::Deserialize;

use super::openapi::{ErrorBody, PostPage, PostWithEvents};
use super::{body, cursor, parse_cursor, Access, ApiError};
use crate::model::{now_ms, Account, Part, Post, State as PostState};
use crate::schedule;
use crate::store::{NewPost, PostFilter, Transition, Value as Col};
use crate::Posting;

/// When a post should go out: a time, or the campaign's next free slot.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct When {
    /// RFC 3339, or a local date-time in the account's zone.
    #[serde(default)]
    pub(crate) scheduled_at: Option<String>,
    /// `true`: the next free slot of its campaign.
    #[serde(default)]
    pub(crate) next_slot: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Create {
    pub(crate) account_id: String,
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) parts: Option<Vec<Part>>,
    #[serde(default)]
    pub(crate) campaign_id: Option<String>,
    #[serde(default)]
    pub(crate) variant: Option<String>,
    #[serde(default)]
    pub(crate) affiliate: bool,
    #[serde(default)]
    pub(crate) paid_partnership: bool,
    #[serde(default)]
    pub(crate) made_with_ai: bool,
    /// `draft` (the default without a time), `approved`, or `scheduled`
    /// (the default with one).
    #[serde(default)]
    pub(crate) state: Option<String>,
    #[serde(flatten)]
    pub(crate) when: When,
}

/// The instant `when` asks for on `account` (None: no time asked).
async fn resolve(p: &Posting, account: &Account, campaign: Option<&str>, when: &When) -> Result<Option<i64>, ApiError> {
    let tz = schedule::zone(&account.time_zone).map_err(|e| ApiError::invalid("account_id", e))?;
    match (&when.scheduled_at, when.next_slot) {
        (Some(_), true) => Err(ApiError::invalid("next_slot", "give scheduled_at or next_slot, not both")),
        (Some(t), false) => schedule::parse_time(t, &tz).map(Some).map_err(|e| ApiError::invalid("scheduled_at", e)),
        (None, true) => {
            let Some(cid) = campaign else { return Err(ApiError::invalid("next_slot", "a post without a campaign has no slots")) };
            let c = p.store.campaign(&crate::store::Tenant::All, cid).await?.ok_or_else(|| ApiError::not_found("campaign", cid))?;
            let taken = p.store.taken_slots(&account.id, now_ms()).await?;
            let made = p.store.campaign_posts(&c.id).await?;
            schedule::campaign_next(&c, &tz, now_ms(), &taken, made)
                .map(Some)
                .ok_or_else(|| ApiError::invalid("next_slot", format!("campaign `{}` has no free slot in the next eight weeks", c.name)))
        }
        (None, false) => Ok(None),
    }
}

#[utoipa::path(post, operation_id = "posts_create", path = "/api/v1/posts", tag = "posts", request_body = Create,
    responses((status = 201, description = "Accepted: stored before this answer", body = Post), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody), (status = 403, description = "The key may not write here", body = ErrorBody)))]
pub(super) async fn create(State(p): State<Posting>, caller: Caller, bytes: Bytes) -> Result<(StatusCode, Json<Post>), ApiError> {
    let access = Access::load(&p, &caller).await?;
    let req: Create = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(create_post(&p, &access, req).await?)))
}

/// Store the post `req` asks for, as `access` may.
pub(crate) async fn create_post(p: &Posting, access: &Access, req: Create) -> Result<Post, ApiError> {
    access.write()?;
    let account = p.store.account(&access.tenant, &req.account_id).await?.ok_or_else(|| ApiError::invalid("account_id", format!("no account `{}`", req.account_id)))?;
    if !access.allows_campaign(req.campaign_id.as_deref()) {
        return Err(ApiError::forbidden("this key may only post in its campaign"));
    }
    let owner = access.owner.clone();
    if let Some(cid) = &req.campaign_id {
        let c = super::campaigns::visible(p, access, cid).await.map_err(|_| ApiError::invalid("campaign_id", format!("no campaign `{cid}`")))?;
        if c.account_id != account.id {
            return Err(ApiError::invalid("campaign_id", "the campaign posts from another account"));
        }
        if let Some(v) = &req.variant {
            if !c.variants.contains(v) {
                return Err(ApiError::invalid("variant", format!("campaign `{}` has no variant `{v}`", c.name)));
            }
        }
    }
    let parts = match (req.text, req.parts) {
        (Some(t), None) => vec![Part { text: t, media: Vec::new() }],
        (None, Some(parts)) if !parts.is_empty() && parts.len() <= 25 => parts,
        (None, Some(_)) => return Err(ApiError::invalid("parts", "1 to 25 parts")),
        _ => return Err(ApiError::invalid("text", "give text, or parts for a thread (not both)")),
    };
    if let Some(i) = parts.iter().position(|p| p.text.trim().is_empty()) {
        return Err(ApiError::invalid(format!("parts[{i}].text"), "empty"));
    }
    for (i, part) in parts.iter().enumerate() {
        if part.media.len() > 4 {
            return Err(ApiError::invalid(format!("parts[{i}].media"), "at most 4 files a post"));
        }
        for m in &part.media {
            if p.store.media(&access.tenant, m).await?.is_none() {
                return Err(ApiError::invalid(format!("parts[{i}].media"), format!("no media `{m}`: upload it to /api/v1/media first")));
            }
        }
    }
    let scheduled_ms = resolve(p, &account, req.campaign_id.as_deref(), &req.when).await?;
    let state = match (req.state.as_deref(), scheduled_ms) {
        (None, None) | (Some("draft"), _) => PostState::Draft,
        (Some("approved"), None) => PostState::Approved,
        (None | Some("scheduled") | Some("approved"), Some(_)) => PostState::Scheduled,
        (Some("scheduled"), None) => return Err(ApiError::invalid("scheduled_at", "a scheduled post needs scheduled_at or next_slot")),
        (Some(other), _) => return Err(ApiError::invalid("state", format!("`{other}`: one of draft, approved, scheduled"))),
    };
    let new = NewPost {
        account_id: account.id,
        campaign_id: req.campaign_id,
        variant: req.variant,
        parts,
        affiliate: req.affiliate,
        paid_partnership: req.paid_partnership,
        made_with_ai: req.made_with_ai,
        state,
        scheduled_ms,
    };
    let post = p.store.create_post(&owner, &new).await?;
    if state == PostState::Scheduled {
        p.dispatcher.wake();
    }
    Ok(post)
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    state: Option<String>,
    account_id: Option<String>,
    campaign_id: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, operation_id = "posts_list", path = "/api/v1/posts", tag = "posts", params(ListQuery),
    responses((status = 200, description = "A page, newest first; `next_cursor` fetches the next", body = PostPage), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody)))]
pub(super) async fn list(State(p): State<Posting>, caller: Caller, RawQuery(query): RawQuery) -> Result<Json<PostPage>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    let q: ListQuery = serde_urlencoded_query(query.as_deref().unwrap_or(""))?;
    let state = q.state.as_deref().map(str::parse::<PostState>).transpose().map_err(|e| ApiError::invalid("state", e))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "1 to 500"));
    }
    let campaign_id = match (&access.campaign, q.campaign_id) {
        (Some(only), Some(asked)) if *only != asked => return Ok(Json(PostPage { data: Vec::new(), next_cursor: None })),
        (Some(only), _) => Some(only.clone()),
        (None, asked) => asked,
    };
    let before = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let filter = PostFilter { state, account_id: q.account_id, campaign_id, before, limit };
    let posts = p.store.posts(&access.tenant, &filter).await?;
    let next = (posts.len() as i64 == limit).then(|| posts.last().map(|p| cursor(p.created_ms, &p.id))).flatten();
    Ok(Json(PostPage { data: posts, next_cursor: next }))
}

fn serde_urlencoded_query<T: serde::de::DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    let uri: axum::http::Uri = format!("/?{q}").parse().map_err(|_| ApiError::invalid("query", "not a query string"))?;
    axum::extract::Query::<T>::try_from_uri(&uri).map(|q| q.0).map_err(|e| ApiError::invalid("query", e.body_text()))
}

/// The post `id` if the caller may see it.
async fn visible(p: &Posting, access: &Access, id: &str) -> Result<Post, ApiError> {
    match p.store.post(&access.tenant, id).await? {
        Some(post) if access.allows_campaign(post.campaign_id.as_deref()) => Ok(post),
        _ => Err(ApiError::not_found("post", id)),
    }
}

#[utoipa::path(get, operation_id = "posts_one", path = "/api/v1/posts/{id}", tag = "posts", params(("id" = String, Path, description = "post_...")),
    responses((status = 200, description = "The post and its events", body = PostWithEvents), (status = 404, description = "Not one the key may see", body = ErrorBody)))]
pub(super) async fn one(State(p): State<Posting>, caller: Caller, Path(id): Path<String>) -> Result<Json<PostWithEvents>, ApiError> {
    let post = visible(&p, &Access::load(&p, &caller).await?, &id).await?;
    let events = p.store.events(&post.id).await?;
    Ok(Json(PostWithEvents { post, events }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Confirm {
    external_id: String,
}

#[utoipa::path(post, operation_id = "posts_act", path = "/api/v1/posts/{id}/{action}", tag = "posts",
    params(("id" = String, Path), ("action" = String, Path, description = "approve, schedule (body: scheduled_at or next_slot), cancel, retry, dismiss, confirm (body: external_id)")),
    request_body(content = When, description = "For schedule; confirm takes {\"external_id\"}"),
    responses((status = 200, description = "The post", body = Post), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody), (status = 403, description = "The key may not write here", body = ErrorBody), (status = 404, description = "No such post or action", body = ErrorBody), (status = 409, description = "Not in a state that allows it", body = ErrorBody)))]
pub(super) async fn act(
    State(p): State<Posting>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Post>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    Ok(Json(act_on(&p, &access, &id, &action, &bytes).await?))
}

/// Do `action` to post `id` (its body in `bytes`), as `access` may.
pub(crate) async fn act_on(p: &Posting, access: &Access, id: &str, action: &str, bytes: &Bytes) -> Result<Post, ApiError> {
    access.write()?;
    let post = visible(p, access, id).await?;
    let now = now_ms();
    let clear_lease = || vec![("lease_owner", Col::Text(None)), ("lease_until_ms", Col::Int(None))];
    let (from, to, mut set, detail): (&[PostState], PostState, Vec<(&'static str, Col)>, String) = match action {
        // A draft that holds a slot goes to it when approved.
        "approve" => match post.scheduled_ms.filter(|&at| at > now) {
            Some(at) => (&[PostState::Draft], PostState::Scheduled, vec![("due_ms", Col::Int(Some(at)))], "approved for its slot".into()),
            None => (&[PostState::Draft], PostState::Approved, Vec::new(), "approved".into()),
        },
        "schedule" => {
            let when: When = if bytes.is_empty() { When::default() } else { body(bytes)? };
            let account = p.store.account(&crate::store::Tenant::All, &post.account_id).await?.ok_or_else(|| ApiError::not_found("account", &post.account_id))?;
            let at = resolve(p, &account, post.campaign_id.as_deref(), &when).await?.ok_or_else(|| ApiError::invalid("scheduled_at", "give scheduled_at or next_slot"))?;
            (
                &[PostState::Approved, PostState::Scheduled],
                PostState::Scheduled,
                vec![("scheduled_ms", Col::Int(Some(at))), ("due_ms", Col::Int(Some(at)))],
                format!("scheduled for {}", schedule::zone(&account.time_zone).map(|tz| schedule::show(at, &tz)).unwrap_or_else(|_| at.to_string())),
            )
        }
        "cancel" => (&[PostState::Draft, PostState::Approved, PostState::Scheduled, PostState::Blocked], PostState::Cancelled, vec![("due_ms", Col::Int(None))], "cancelled by a person".into()),
        "retry" => {
            let mut set = clear_lease();
            set.extend([("due_ms", Col::Int(Some(now))), ("reconcile_checks", Col::Int(Some(0))), ("attempts", Col::Int(Some(0)))]);
            (&[PostState::Unknown, PostState::Blocked, PostState::Failed], PostState::Scheduled, set, "sent again at a person's word".into())
        }
        "dismiss" => (&[PostState::Unknown, PostState::Blocked], PostState::Cancelled, vec![("due_ms", Col::Int(None))], "dismissed by a person".into()),
        "confirm" => {
            let c: Confirm = body(bytes)?;
            let mut ids = post.external_ids.clone();
            ids.push(c.external_id.clone());
            if ids.len() != post.parts.len() {
                return Err(ApiError::conflict("confirm is for a post whose last part's outcome is unknown"));
            }
            let set = vec![
                ("external_ids", Col::Text(Some(serde_json::to_string(&ids).unwrap_or_default()))),
                ("posted_ms", Col::Int(Some(now))),
                ("due_ms", Col::Int(None)),
            ];
            (&[PostState::Unknown], PostState::Posted, set, format!("confirmed by a person as {}", c.external_id))
        }
        other => return Err(ApiError::not_found("action", other)),
    };
    set.push(("last_error", Col::Text(None)));
    let t = Transition { from, to, lease: None, expired_by: None, set, detail: Some(detail) };
    if !p.store.transition(&post.id, t).await? {
        let allowed: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::conflict(format!("the post is {}; {action} needs it {}", post.state, allowed.join(" or "))));
    }
    if to == PostState::Scheduled {
        p.dispatcher.wake();
    }
    visible(p, access, id).await
}
