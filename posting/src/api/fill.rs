//! `POST /api/v1/campaigns/{id}/fill`: the campaign's next free slots
//! filled with generated drafts. Per slot: the next product and variant in
//! turn, a short link to the product (or the campaign's link) with the
//! campaign's UTM values, candidates from the [`Drafter`] under the
//! campaign's rules (the link and `#ad` required, banned terms forbidden),
//! the best kept. A campaign with `approval: auto` schedules them; one
//! that requires approval leaves drafts holding their slots.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use platform::auth::Caller;
use serde::Deserialize;

use super::openapi::{ErrorBody, FilledPost, FilledPosts};
use super::{body, Access, ApiError};
use crate::drafts::{disclosure_first, DraftRequest};
use crate::model::{now_ms, Part, State as PostState};
use crate::schedule;
use crate::store::{Link, NewPost, Tenant};
use crate::model::Campaign;
use crate::Posting;

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Fill {
    /// Slots to fill (1..=28, default 7).
    #[serde(default)]
    slots: Option<usize>,
    /// Candidates written per slot (1..=16, default 4).
    #[serde(default)]
    candidates: Option<usize>,
    /// Same seed, same drafts (on the local model).
    #[serde(default)]
    seed: Option<i64>,
}

#[utoipa::path(post, operation_id = "fill_fill", path = "/api/v1/campaigns/{id}/fill", tag = "campaigns", params(("id" = String, Path)), request_body = Fill,
    responses((status = 201, description = "The posts made, each with its score and short_url", body = FilledPosts), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody), (status = 403, description = "The key may not write here", body = ErrorBody),
        (status = 409, description = "The campaign is not active or has no slots", body = ErrorBody), (status = 503, description = "No content pipeline yet (models loading)", body = ErrorBody)))]
pub(super) async fn fill(State(p): State<Posting>, caller: Caller, Path(id): Path<String>, bytes: Bytes) -> Result<(StatusCode, Json<FilledPosts>), ApiError> {
    let access = Access::load(&p, &caller).await?;
    access.write()?;
    let req: Fill = if bytes.is_empty() { Fill::default() } else { body(&bytes)? };
    let slots = req.slots.unwrap_or(7);
    if !(1..=28).contains(&slots) {
        return Err(ApiError::invalid("slots", "1 to 28"));
    }
    let n = req.candidates.unwrap_or(4);
    if !(1..=16).contains(&n) {
        return Err(ApiError::invalid("candidates", "1 to 16"));
    }
    let c = super::campaigns::visible(&p, &access, &id).await?;
    let created = fill_campaign(&p, &caller, &c, slots, n, req.seed, None).await?;
    p.dispatcher.wake();
    Ok((StatusCode::CREATED, Json(FilledPosts { data: created })))
}

/// Fill up to `slots` of `c`'s next free times (before `until_ms`, where
/// given) with the best of `n` drafts each, on behalf of `caller`.
pub(crate) async fn fill_campaign(
    p: &Posting,
    caller: &Caller,
    c: &Campaign,
    slots: usize,
    n: usize,
    seed: Option<i64>,
    until_ms: Option<i64>,
) -> Result<Vec<FilledPost>, ApiError> {
    if c.status != "active" {
        return Err(ApiError::conflict(format!("campaign `{}` is {}", c.name, c.status)));
    }
    if !c.has_times() {
        return Err(ApiError::conflict(format!("campaign `{}` has no slots and no cron", c.name)));
    }
    let drafter = p.drafter.get().ok_or_else(|| ApiError::unavailable("drafts need the content pipeline, which is not running in this process"))?;
    let account = p.store.account(&Tenant::All, &c.account_id).await?.ok_or_else(|| ApiError::not_found("account", &c.account_id))?;
    let tz = schedule::zone(&account.time_zone).map_err(ApiError::conflict)?;
    let rules = p.platforms.get(&account.platform).map_or(post_rules::Platform::X, |pl| pl.rules());
    let products = p.store.products_by_id(&Tenant::Owner(c.owner.clone()), &c.products).await?;
    let mut taken = p.store.taken_slots(&account.id, now_ms()).await?;
    let mut recent = p.store.recent_texts(&account.id, now_ms() - 30 * 86_400_000, "").await?;
    let mut created = Vec::new();
    let mut after = now_ms();
    for i in 0..slots {
        let made = p.store.campaign_posts(&c.id).await?;
        let Some(at) = schedule::campaign_next(c, &tz, after, &taken, made) else { break };
        if until_ms.is_some_and(|u| at >= u) {
            break;
        }
        after = at;
        taken.push(at);
        let product = (!products.is_empty()).then(|| &products[i % products.len()]);
        let variant = (!c.variants.is_empty()).then(|| c.variants[i % c.variants.len()].clone());
        let target = product.map(|pr| pr.url.clone()).or_else(|| c.link_url.clone());
        let link = match target {
            Some(target) => {
                let l = Link {
                    code: String::new(),
                    target,
                    campaign_id: Some(c.id.clone()),
                    post_id: None,
                    product_id: product.map(|pr| pr.id.clone()),
                    variant: variant.clone(),
                    utm_source: None,
                    utm_medium: None,
                    utm_campaign: None,
                    utm_content: None,
                    created_ms: 0,
                };
                Some(super::links::register(p, &c.owner, l).await?)
            }
            None => None,
        };
        let affiliate = product.is_some() || link.is_some();
        let hashtag = affiliate && c.disclosure == "hashtag";
        let draft_req = DraftRequest {
            caller: caller.clone(),
            platform: rules,
            max_length: account.max_length.and_then(|l| usize::try_from(l).ok()),
            topic: (!c.niche.is_empty()).then(|| c.niche.clone()),
            product: product.map(|pr| content::prompts::Product {
                name: pr.name.clone(),
                url: link.as_ref().map(|l| super::links::short_url(p, &l.code)),
                price: pr.price.map(|v| format!("{v:.2}")),
                currency: pr.currency.clone(),
                features: pr.features.clone(),
            }),
            link: link.as_ref().map(|l| super::links::short_url(p, &l.code)),
            disclosure: hashtag.then(|| "#ad".to_owned()),
            banned_terms: c.banned_terms.clone(),
            recent_posts: recent.clone(),
            n,
            seed: seed.map(|s| s.wrapping_add(i as i64)),
        };
        let drafts = drafter.drafts(draft_req).await.map_err(|e| ApiError::from_status(e.status, e.message))?;
        let Some(best) = drafts.into_iter().next() else {
            return Err(ApiError::upstream("the content pipeline wrote no candidate that keeps the campaign's rules"));
        };
        let text = if hashtag { disclosure_first(&best.text, "#ad") } else { best.text.clone() };
        recent.push(text.clone());
        let state = if c.approval == "auto" { PostState::Scheduled } else { PostState::Draft };
        let new = NewPost {
            account_id: account.id.clone(),
            campaign_id: Some(c.id.clone()),
            variant,
            parts: vec![Part { text, media: Vec::new() }],
            affiliate,
            paid_partnership: affiliate && c.disclosure == "paid_partnership",
            made_with_ai: true,
            state,
            scheduled_ms: Some(at),
        };
        let post = p.store.create_post(&c.owner, &new).await?;
        if let Some(l) = &link {
            p.store.set_link_post(&l.code, &post.id).await?;
        }
        created.push(FilledPost { post, score: best.score, short_url: link.as_ref().map(|l| super::links::short_url(p, &l.code)) });
    }
    Ok(created)
}
