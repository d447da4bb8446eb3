//! `POST /v1/posts/generate`: a brief (a topic or a product, audience,
//! tone, platform, link, disclosure) -> `n` candidates in one batched call,
//! each under the post constraint, scored, near-duplicates removed,
//! returned best first with their scores and reasons, usage and cost.
//!
//! Each round is a chat request through `api::answer` like any other (the
//! key's limits and budget, the router, a usage record), so `model` may be
//! the local model or a route. The local engine applies `x_post` as it
//! samples (`"constraint": "engine"`); a cloud model cannot be masked, so
//! its answers are checked with the same rules and the invalid ones asked
//! for again, at most [`MAX_RETRIES`] times (`"constraint": "validated"`).

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use content::prompts::{Brief, Product, SYSTEM, USER};
use content::Context;
use inference::PostRules;
use post_rules::Platform;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{fluency, local_model};
use crate::api::answer::answer;
use crate::error::ApiError;
use crate::server::auth::Caller;
use crate::providers::{Api, Reply};
use crate::server::body::parse;
use crate::server::App;

/// Most candidates per request.
pub const MAX_N: usize = 16;
/// Rounds of asking a cloud model again for candidates that broke the rules.
pub const MAX_RETRIES: usize = 2;
/// Candidates at least this similar (character trigrams) to a better one are removed.
pub const DUPLICATE_SIMILARITY: f64 = 0.8;

/// The request body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// What to write about (or `product`).
    pub topic: Option<String>,
    /// The product to promote (or `topic`).
    pub product: Option<Product>,
    /// Who it is for.
    pub audience: Option<String>,
    /// How it should sound.
    pub tone: Option<String>,
    /// Where it goes (default `x`).
    pub platform: Option<Platform>,
    /// The account's limit (default the platform's).
    pub max_length: Option<usize>,
    /// A link every candidate carries.
    pub link: Option<String>,
    /// Text every candidate carries to disclose paid promotion (`#ad`); none: not paid.
    pub disclosure: Option<String>,
    /// Terms no candidate may use.
    #[serde(default)]
    pub banned_terms: Vec<String>,
    /// The account's recent posts (scored against, to avoid repeats).
    #[serde(default)]
    pub recent_posts: Vec<String>,
    /// Candidates (1..=16, default 4).
    pub n: Option<usize>,
    /// The local model or a route (default the local model).
    pub model: Option<String>,
    /// Sampling temperature (default 0.9).
    pub temperature: Option<f32>,
    /// Same seed, same candidates (on the local model).
    pub seed: Option<i64>,
    /// Most tokens per candidate (default 160).
    pub max_tokens: Option<usize>,
}

impl GenerateRequest {
    fn brief(&self, platform: Platform, limit: usize) -> Result<Brief, ApiError> {
        match (&self.topic, &self.product) {
            (None, None) => return Err(ApiError::invalid("topic", "give a topic or a product")),
            (Some(t), _) if t.trim().is_empty() => return Err(ApiError::invalid("topic", "must not be empty")),
            (_, Some(p)) if p.name.trim().is_empty() => return Err(ApiError::invalid("product.name", "must not be empty")),
            _ => {}
        }
        Ok(Brief {
            platform: platform.to_string(),
            limit,
            topic: self.topic.clone(),
            product: self.product.clone(),
            audience: self.audience.clone(),
            tone: self.tone.clone(),
            link: self.link.clone().or_else(|| self.product.as_ref().and_then(|p| p.url.clone())),
            disclosure: self.disclosure.clone(),
            banned_terms: self.banned_terms.clone(),
        })
    }

    /// What every candidate must be.
    fn rules(&self, platform: Platform, link: Option<&str>) -> PostRules {
        let mut r = PostRules::new(platform);
        r.max_length = self.max_length;
        r.require = self.disclosure.iter().map(String::clone).chain(link.map(str::to_owned)).collect();
        r.forbid = self.banned_terms.clone();
        r.max_hashtags = Some(3);
        // The link, or one of the model's choosing: never a list of them.
        r.max_urls = Some(1);
        r
    }
}

/// The chat body of one round: `n` candidates under `rules`.
fn chat_body(req: &GenerateRequest, model: &str, messages: &Value, rules: &PostRules, n: usize, round: usize) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), messages.clone());
    body.insert("n".into(), json!(n));
    body.insert("temperature".into(), json!(req.temperature.unwrap_or(0.9)));
    body.insert("max_tokens".into(), json!(req.max_tokens.unwrap_or(160)));
    if let Some(seed) = req.seed {
        // Each round its own seeds, or a retry would repeat the failures.
        body.insert("seed".into(), json!(seed.wrapping_add((round * MAX_N) as i64)));
    }
    body.insert(
        "x_post".into(),
        json!({
            "platform": rules.platform, "max_weighted_length": rules.max_length, "require": rules.require,
            "forbid": rules.forbid, "max_hashtags": rules.max_hashtags, "max_urls": rules.max_urls,
        }),
    );
    body
}

struct Candidate {
    text: String,
    finish: String,
}

pub(crate) async fn generate_posts(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let req: GenerateRequest = parse(&app, &headers, body).await?;
    generate(&app, &caller, &req).await.map(Json)
}

/// Candidates for `req`, ranked: the endpoint's answer (and the CLI's,
/// with no key).
pub async fn generate(app: &App, caller: &Caller, req: &GenerateRequest) -> Result<Value, ApiError> {
    let n = req.n.unwrap_or(4);
    if n == 0 || n > MAX_N {
        return Err(ApiError::invalid("n", format!("{n} is not between 1 and {MAX_N}")));
    }
    let platform = req.platform.unwrap_or(Platform::X);
    let limit = req.max_length.unwrap_or_else(|| platform.default_limit());
    let brief = req.brief(platform, limit)?;
    let rules = req.rules(platform, brief.link.as_deref());
    let prompts = &app.0.prompts;
    let render = |name| prompts.render(name, &brief).map_err(|e| ApiError::internal(format!("prompt template {e}")));
    let messages = json!([{"role": "system", "content": render(SYSTEM)?}, {"role": "user", "content": render(USER)?}]);
    let generators = app.generators()?;
    let model = local_model(generators, req.model.as_deref())?;

    let (mut kept, mut removed) = (Vec::<Candidate>::new(), Vec::<Value>::new());
    let (mut prompt_tokens, mut completion_tokens, mut cost, mut attempts) = (0u64, 0u64, 0.0, 0u32);
    let mut provider = String::new();
    for round in 0..=MAX_RETRIES {
        let want = n - kept.len();
        if want == 0 {
            break;
        }
        let body = chat_body(req, &model, &messages, &rules, want, round);
        let (reply, source) = answer(app, caller, Api::Chat, &model, body, false, Instant::now()).await?;
        let Reply::Json(answer) = reply else {
            return Err(ApiError::internal("a whole answer was asked for"));
        };
        attempts += source.attempts();
        let usage = &answer["usage"];
        let (p, c) = (usage["prompt_tokens"].as_u64().unwrap_or(0), usage["completion_tokens"].as_u64().unwrap_or(0));
        prompt_tokens += p;
        completion_tokens += c;
        cost += app.0.router.cost(source.provider(), source.model(), p as i64, 0, c as i64);
        provider = source.provider().to_owned();
        for choice in answer["choices"].as_array().into_iter().flatten() {
            let text = choice["message"]["content"].as_str().unwrap_or_default().trim().to_owned();
            let finish = choice["finish_reason"].as_str().unwrap_or_default().to_owned();
            match rules.check(&text) {
                Ok(()) => kept.push(Candidate { text, finish }),
                Err(why) => removed.push(json!({"text": text, "reason": format!("breaks the post rules: {why}")})),
            }
        }
        if provider == "local" {
            break; // The engine's constraint holds; nothing to ask again.
        }
    }

    let ctx = Context {
        platform: Some(platform),
        max_length: req.max_length,
        product: req.product.as_ref().map(|p| p.name.clone()),
        link: brief.link.clone(),
        audience: req.audience.clone(),
        affiliate: req.disclosure.is_some(),
        banned_terms: req.banned_terms.clone(),
        recent_posts: req.recent_posts.clone(),
    };
    let texts: Vec<String> = kept.iter().map(|c| c.text.clone()).collect();
    let local = generators.models().first().map(|m| m.id.clone()).unwrap_or_default();
    let (fluency, scoring_tokens) = fluency(generators, &local, &texts).await?;
    let mut scored: Vec<(Candidate, content::Score)> = kept
        .into_iter()
        .zip(fluency)
        .map(|(c, f)| {
            let s = content::score(&c.text, f, &ctx, &app.0.scoring);
            (c, s)
        })
        .collect();
    scored.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    let mut ranked: Vec<(Candidate, content::Score)> = Vec::new();
    for (c, s) in scored {
        match content::similarity::closest(&c.text, ranked.iter().map(|(k, _)| k.text.as_str())) {
            Some((i, sim)) if sim >= DUPLICATE_SIMILARITY => {
                removed.push(json!({"text": c.text, "score": s.score, "reason": format!("near-duplicate of rank {} ({sim:.2} similar)", i + 1)}));
            }
            _ => ranked.push((c, s)),
        }
    }
    let candidates: Vec<Value> = ranked
        .iter()
        .enumerate()
        .map(|(i, (c, s))| json!({"rank": i + 1, "text": c.text, "score": s.score, "parts": s.parts, "finish_reason": c.finish}))
        .collect();
    Ok(json!({
        "object": "post.generation",
        "model": model,
        "provider": provider,
        "constraint": if provider == "local" { "engine" } else { "validated" },
        "attempts": attempts,
        "candidates": candidates,
        "removed": removed,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens, "scoring_tokens": scoring_tokens},
        "cost_usd": cost,
    }))
}
