//! Short links: `POST /api/v1/links` registers a target with its UTM
//! parameters; `GET /r/{code}` (no key: it is what people click) answers
//! 302 to the registered target with those parameters and records the
//! click. The target comes only from the database, never from the
//! request, so the redirect cannot be pointed anywhere else.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use platform::auth::Caller;
use serde::Deserialize;

use super::openapi::{ErrorBody, LinkList, LinkShown};
use super::{body, Access, ApiError};
use crate::store::{Link, Tenant};
use crate::Posting;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Create {
    target: String,
    #[serde(default)]
    campaign_id: Option<String>,
    #[serde(default)]
    post_id: Option<String>,
    #[serde(default)]
    product_id: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    utm_source: Option<String>,
    #[serde(default)]
    utm_medium: Option<String>,
    #[serde(default)]
    utm_campaign: Option<String>,
    #[serde(default)]
    utm_content: Option<String>,
}

/// `target` as an http(s) URL with a host.
pub(crate) fn check_target(target: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(target).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("an http(s) URL with a host".into());
    }
    Ok(url)
}

/// A campaign's name as a UTM value (`Spring Sale` -> `spring-sale`).
pub(crate) fn slug(name: &str) -> String {
    let s: String = name.to_lowercase().chars().map(|c| if c.is_alphanumeric() { c } else { '-' }).collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

/// The link's short URL on this server.
pub(crate) fn short_url(p: &Posting, code: &str) -> String {
    format!("{}/r/{code}", p.config.public_url.trim_end_matches('/'))
}

fn shown(p: &Posting, l: Link, clicks: Option<i64>) -> LinkShown {
    LinkShown { short_url: short_url(p, &l.code), link: l, clicks }
}

/// Register a link for `owner` with UTM defaults from its campaign.
pub(crate) async fn register(p: &Posting, owner: &str, mut link: Link) -> Result<Link, ApiError> {
    if let Some(cid) = &link.campaign_id {
        let c = p.store.campaign(&Tenant::All, cid).await?.ok_or_else(|| ApiError::invalid("campaign_id", format!("no campaign `{cid}`")))?;
        let account = p.store.account(&Tenant::All, &c.account_id).await?;
        link.utm_campaign = link.utm_campaign.or_else(|| Some(slug(&c.name)));
        link.utm_source = link.utm_source.or_else(|| account.map(|a| a.platform));
    }
    link.utm_source = link.utm_source.or_else(|| Some("starling".into()));
    link.utm_medium = link.utm_medium.or_else(|| Some("social".into()));
    link.utm_content = link.utm_content.or_else(|| link.variant.clone());
    Ok(p.store.create_link(owner, &link).await?)
}

#[utoipa::path(post, operation_id = "links_create", path = "/api/v1/links", tag = "links", request_body = Create,
    responses((status = 201, description = "The link, with its short_url", body = LinkShown), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody), (status = 403, description = "The key may not write here", body = ErrorBody)))]
pub(super) async fn create(State(p): State<Posting>, caller: Caller, bytes: Bytes) -> Result<(StatusCode, Json<LinkShown>), ApiError> {
    let access = Access::load(&p, &caller).await?;
    access.write()?;
    let req: Create = body(&bytes)?;
    check_target(&req.target).map_err(|e| ApiError::invalid("target", e))?;
    if !access.allows_campaign(req.campaign_id.as_deref()) {
        return Err(ApiError::forbidden("this key may only make links for its campaign"));
    }
    if let Some(cid) = &req.campaign_id {
        super::campaigns::visible(&p, &access, cid).await.map_err(|_| ApiError::invalid("campaign_id", format!("no campaign `{cid}`")))?;
    }
    let link = Link {
        code: String::new(),
        target: req.target,
        campaign_id: req.campaign_id,
        post_id: req.post_id,
        product_id: req.product_id,
        variant: req.variant,
        utm_source: req.utm_source,
        utm_medium: req.utm_medium,
        utm_campaign: req.utm_campaign,
        utm_content: req.utm_content,
        created_ms: 0,
    };
    let link = register(&p, &access.owner, link).await?;
    Ok((StatusCode::CREATED, Json(shown(&p, link, None))))
}

#[utoipa::path(get, operation_id = "links_list", path = "/api/v1/links", tag = "links", params(("campaign_id" = Option<String>, Query)),
    responses((status = 200, description = "Links with their human clicks", body = LinkList), (status = 400, description = "A bad field, named", body = ErrorBody), (status = 401, description = "No key, or not a live one", body = ErrorBody)))]
pub(super) async fn list(State(p): State<Posting>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<LinkList>, ApiError> {
    let access = Access::load(&p, &caller).await?;
    let asked = q.as_deref().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("campaign_id=")).map(str::to_owned));
    let campaign = access.campaign.clone().or(asked);
    let links = p.store.links(&access.tenant, campaign.as_deref()).await?;
    Ok(Json(LinkList { data: links.into_iter().map(|(l, c)| shown(&p, l, Some(c))).collect() }))
}

/// What kind of client a User-Agent is, and whether it is a bot (link
/// previews, crawlers, scripts: kept, never counted).
pub(crate) fn agent_class(ua: &str) -> (&'static str, bool) {
    const BOTS: [&str; 16] = [
        "bot", "crawl", "spider", "slurp", "preview", "facebookexternalhit", "embedly", "whatsapp", "telegram", "discord", "curl",
        "wget", "python-requests", "headless", "scrapy", "okhttp",
    ];
    let ua = ua.to_ascii_lowercase();
    if ua.is_empty() || BOTS.iter().any(|b| ua.contains(b)) {
        return ("bot", true);
    }
    if ["mobile", "android", "iphone", "ipad"].iter().any(|m| ua.contains(m)) {
        ("mobile", false)
    } else {
        ("desktop", false)
    }
}

#[utoipa::path(get, operation_id = "links_redirect", path = "/r/{code}", tag = "links", params(("code" = String, Path)), security(()),
    responses((status = 302, description = "To the registered target with its UTM parameters"), (status = 404, description = "No such link", body = ErrorBody)))]
pub(super) async fn redirect(State(p): State<Posting>, Path(code): Path<String>, headers: HeaderMap) -> Response {
    let not_found = || ApiError::not_found("link", &code).into_response();
    if code.is_empty() || code.len() > 32 || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
        return not_found();
    }
    let link = match p.store.link(&code).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Ok(mut url) = check_target(&link.target) else { return not_found() };
    // The link's own UTM values replace any the target carried.
    let utm = [
        ("utm_source", &link.utm_source),
        ("utm_medium", &link.utm_medium),
        ("utm_campaign", &link.utm_campaign),
        ("utm_content", &link.utm_content),
    ];
    let kept: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| !utm.iter().any(|(u, v)| v.is_some() && k == u)).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    {
        let mut q = url.query_pairs_mut();
        q.clear();
        q.extend_pairs(kept);
        for (k, v) in utm {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (agent, bot) = agent_class(ua);
    let referrer = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| reqwest::Url::parse(r).ok())
        .and_then(|u| u.host_str().map(str::to_owned));
    if let Err(e) = p.store.record_click(&link.code, referrer.as_deref(), agent, bot).await {
        // The visitor still gets where they were going.
        tracing::warn!(code = %link.code, error = %e, "click not recorded");
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string()), (header::CACHE_CONTROL, "no-store".to_owned())]).into_response()
}
