//! `GET /api/v1/analytics` and `GET /api/v1/campaigns/{id}/ab` (see
//! [`crate::analytics`] for what each figure is).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use platform::auth::Caller;
use serde::Deserialize;
use serde_json::json;

use super::openapi::{AbTest, ErrorBody, Report};
use super::{Access, ApiError};
use crate::analytics::{report, two_proportion_z, GroupBy, Row};
use crate::model::now_ms;
use crate::store::Tenant;
use crate::Posting;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct Range {
    #[serde(default)]
    group_by: Option<String>,
    /// RFC 3339, or a date (UTC midnight).
    #[serde(default)]
    from: Option<String>,
    /// RFC 3339, or a date (the whole day, UTC).
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    campaign_id: Option<String>,
}

/// `text` as Unix ms; a bare date is its UTC midnight (`end`: the next one).
fn instant(field: &str, text: &str, end: bool) -> Result<i64, ApiError> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let date: jiff::civil::Date = text.parse().map_err(|_| ApiError::invalid(field, "RFC 3339 or YYYY-MM-DD"))?;
    let date = if end { date.tomorrow().map_err(|e| ApiError::invalid(field, e.to_string()))? } else { date };
    let ts = date.to_zoned(jiff::tz::TimeZone::UTC).map_err(|e| ApiError::invalid(field, e.to_string()))?.timestamp();
    Ok(ts.as_millisecond())
}

/// The figures of `tenant` (one campaign only, where given) grouped `by`.
pub(crate) async fn rows(p: &Posting, tenant: &Tenant, by: GroupBy, from: i64, to: i64, campaign: Option<&str>) -> Result<Vec<Row>, ApiError> {
    let mut posts = p.store.posted_between(tenant, from, to).await?;
    let mut clicks = p.store.clicks(tenant, from, to).await?;
    if let Some(c) = campaign {
        posts.retain(|post| post.campaign_id.as_deref() == Some(c));
        clicks.retain(|click| click.campaign_id.as_deref() == Some(c));
    }
    let ids: Vec<String> = posts.iter().map(|post| post.id.clone()).collect();
    let metrics = p.store.latest_metrics(&ids).await?;
    let mut links_of_post: HashMap<String, Vec<(String, Option<String>)>> = HashMap::new();
    for (l, _) in p.store.links(tenant, campaign).await? {
        if let Some(post) = &l.post_id {
            links_of_post.entry(post.clone()).or_default().push((l.code.clone(), l.product_id.clone()));
        }
    }
    let products = p.store.products(&Tenant::All).await?.into_iter().map(|pr| (pr.id.clone(), pr)).collect();
    Ok(report(by, &posts, &metrics, &clicks, &links_of_post, &products, p.config.conversion_rate))
}

#[utoipa::path(get, operation_id = "analytics_analytics", path = "/api/v1/analytics", tag = "analytics", params(Range),
    responses((status = 200, description = "Rows per group", body = Report), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody)))]
pub(super) async fn analytics(State(p): State<Posting>, caller: Caller, Query(q): Query<Range>) -> Result<Json<Report>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    let by: GroupBy = q.group_by.as_deref().unwrap_or("campaign").parse().map_err(|e: String| ApiError::invalid("group_by", e))?;
    let to = q.to.as_deref().map(|t| instant("to", t, true)).transpose()?.unwrap_or_else(|| now_ms() + 1);
    let from = q.from.as_deref().map(|t| instant("from", t, false)).transpose()?.unwrap_or(to - 30 * 86_400_000);
    if from >= to {
        return Err(ApiError::invalid("from", "before `to`"));
    }
    let campaign = match (&access.campaign, q.campaign_id) {
        (Some(only), Some(asked)) if *only != asked => return Err(ApiError::not_found("campaign", &asked)),
        (Some(only), _) => Some(only.clone()),
        (None, asked) => asked,
    };
    let rows = rows(&p, &access.tenant, by, from, to, campaign.as_deref()).await?;
    Ok(Json(Report { group_by: q.group_by.unwrap_or_else(|| "campaign".into()), from_ms: from, to_ms: to, rows }))
}

#[utoipa::path(get, operation_id = "analytics_ab", path = "/api/v1/campaigns/{id}/ab", tag = "analytics", params(("id" = String, Path)),
    responses((status = 200, description = "Variants and the two-proportion z-test", body = AbTest), (status = 404, description = "Not one the key may see", body = ErrorBody)))]
pub(super) async fn ab(State(p): State<Posting>, caller: Caller, Path(id): Path<String>) -> Result<Json<AbTest>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    let c = super::campaigns::visible(&p, &access, &id).await?;
    let mut variants = rows(&p, &access.tenant, GroupBy::Variant, 0, now_ms() + 1, Some(&c.id)).await?;
    variants.sort_by(|a, b| b.ctr.total_cmp(&a.ctr).then(b.impressions.cmp(&a.impressions)));
    let test = match (variants.first(), variants.get(1)) {
        (Some(a), Some(b)) => two_proportion_z(a.link_clicks, a.impressions, b.link_clicks, b.impressions).map(|(z, p)| {
            json!({"leader": a.key, "runner_up": b.key, "z": z, "p_value": p, "significant": p < 0.05})
        }),
        _ => None,
    };
    Ok(Json(AbTest {
        test: "two-proportion z-test on click-through rate (link clicks / impressions), two-sided, alpha 0.05".into(),
        variants,
        result: test,
    }))
}
