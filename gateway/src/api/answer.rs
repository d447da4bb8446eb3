//! What every request that reaches a model goes through, whichever API it
//! came in by: [`admit`] (the key's limits and budget), then [`answer`]
//! (cache, router, usage records).

use std::time::Instant;

use axum::http::header;
use axum::response::Response;
use futures_util::stream::{self, StreamExt};
use serde_json::{Map, Value};

use crate::accounting::cache::{Answer, Cached};
use crate::accounting::usage::{self, UsageRecord};
use crate::error::ApiError;
use crate::providers::{Api, Reply};
use crate::routing::estimate::token_estimate;
use crate::server::auth::Caller;
use crate::server::shutdown::or_shutdown;
use crate::server::App;
use platform::keys::{KeyInfo, Refusal};

/// Who answered a request.
pub(crate) struct Source {
    provider: String,
    model: String,
    attempts: u32,
    cache_hit: bool,
}

impl Source {
    /// The candidate that gave `routed`.
    pub(crate) fn of(routed: &crate::routing::router::Routed) -> Self {
        Self { provider: routed.provider.clone(), model: routed.model.clone(), attempts: routed.attempts, cache_hit: false }
    }

    /// The provider that answered.
    pub(crate) fn provider(&self) -> &str {
        &self.provider
    }

    /// Its model.
    pub(crate) fn model(&self) -> &str {
        &self.model
    }

    /// Attempts made.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Which candidate answered, for clients and for debugging routes.
    pub(crate) fn mark(&self, res: &mut Response) {
        let h = res.headers_mut();
        let attempts = self.attempts.to_string();
        for (name, value) in [("x-starling-provider", &self.provider), ("x-starling-model", &self.model), ("x-starling-attempts", &attempts)] {
            if let Ok(v) = header::HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        if self.cache_hit {
            h.insert("x-starling-cache", header::HeaderValue::from_static("hit"));
        }
    }
}

/// Everything a request goes through, whatever API it came in by (chat,
/// legacy completions, Anthropic's messages as chat): the key's limits and
/// budget, the cache, the router, usage records and the overhead
/// histogram. A JSON answer is recorded here; a stream is recorded when it
/// ends (it comes back metered).
pub(crate) async fn answer(
    app: &App,
    caller: &Caller,
    api: Api,
    route: &str,
    body: Map<String, Value>,
    stream: bool,
    started: Instant,
) -> Result<(Reply, Source), ApiError> {
    let mut record = usage::draft(route, caller.0.as_ref().map(|k| k.id.clone()));
    let (input, output) = token_estimate(&body);
    let admitted = admit(app, caller, route, input + output).await?;
    let local_only = admitted.local_only;
    let recorder = app.clone();
    let closing = admitted.clone();
    let finish = move |r: UsageRecord| recorder.record(r, &closing);
    let cache_key = app.0.cache.key(caller.0.as_ref().map(|k| k.id.as_str()), api, route, &body);
    if let Some(hit) = cache_key.as_ref().and_then(|k| app.0.cache.get(k)) {
        record.provider.clone_from(&hit.provider);
        record.model.clone_from(&hit.model);
        record.cache_hit = true;
        let reply = match &hit.answer {
            Answer::Json(v) => {
                usage::observe(&mut record, v);
                record.status = 200;
                record.latency_ms = started.elapsed().as_secs_f64() * 1e3;
                app.record(record, &admitted);
                Reply::Json(v.clone())
            }
            Answer::Stream(chunks) => {
                let replay = stream::iter(chunks.clone().into_iter().map(Ok)).boxed();
                Reply::Stream(usage::metered(replay, record, started, finish))
            }
        };
        let source = Source { provider: hit.provider.clone(), model: hit.model.clone(), attempts: 0, cache_hit: true };
        return Ok((reply, source));
    }
    let routed = match or_shutdown(app, app.0.router.answer(api, route, body, stream, local_only, None)).await {
        Ok(r) => r,
        Err(e) => return Err(failed(app, record, &admitted, e, started)),
    };
    record.provider.clone_from(&routed.provider);
    record.model.clone_from(&routed.model);
    record.attempts = i64::from(routed.attempts);
    let source = Source::of(&routed);
    let reply = match routed.reply {
        Reply::Json(v) => {
            if let Some(k) = cache_key {
                let (provider, model) = (routed.provider.clone(), routed.model.clone());
                app.0.cache.put(k, Cached { provider, model, answer: Answer::Json(v.clone()) });
            }
            usage::observe(&mut record, &v);
            record.status = 200;
            record.latency_ms = started.elapsed().as_secs_f64() * 1e3;
            app.record(record, &admitted);
            Reply::Json(v)
        }
        Reply::Stream(s) => {
            let s = match cache_key {
                Some(k) => app.0.cache.filling(k, routed.provider.clone(), routed.model.clone(), s),
                None => s,
            };
            // Stands if the stream is cut before its usage chunk: the
            // provider bills the prompt all the same.
            record.prompt_tokens = input as i64;
            Reply::Stream(usage::metered(s, record, started, finish))
        }
    };
    let overhead = started.elapsed().saturating_sub(routed.upstream);
    app.0.metrics.overhead_seconds.observe(overhead.as_secs_f64());
    Ok((reply, source))
}

/// Close `record` as failed with `e` (its status and message) and return `e`.
pub(crate) fn failed(app: &App, mut record: UsageRecord, admitted: &Admitted, e: ApiError, started: Instant) -> ApiError {
    record.status = i64::from(e.status.as_u16());
    record.error = Some(e.message.clone());
    record.latency_ms = started.elapsed().as_secs_f64() * 1e3;
    app.record(record, admitted);
    e
}

/// A request let in by its key's limits, until its record closes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Admitted {
    /// The key it came with (None: keys are not in use).
    pub(crate) key: Option<KeyInfo>,
    /// Tokens taken from the key's per-minute bucket up front (prompt
    /// estimate + `max_tokens`), settled with the real count at the end.
    pub(crate) tokens: u64,
    /// The key's cloud budget is spent: only local candidates remain.
    pub(crate) local_only: bool,
}

/// The caller's key limits: RPM/TPM (429), a request larger than the TPM
/// allows at all (400), model list (403), and the daily cloud budget.
pub(crate) async fn admit(app: &App, caller: &Caller, model: &str, tokens: u64) -> Result<Admitted, ApiError> {
    let (Some(key), Some(ring)) = (&caller.0, app.0.keys.get()) else { return Ok(Admitted::default()) };
    ring.admit(key, model, tokens).map_err(|r| match r {
        Refusal::RateLimited(after, what) => {
            ApiError::overloaded(format!("Rate limit reached for key `{}` on {what}.", key.id), after)
        }
        // Waiting would not help: not a 429, which SDKs retry.
        Refusal::TooLarge { tokens, tpm } => ApiError::invalid(
            "max_tokens",
            format!("the request may use {tokens} tokens (prompt + max_tokens), more than key `{}` allows per minute ({tpm})", key.id),
        ),
        Refusal::ModelNotAllowed => ApiError::model_not_allowed(model),
    })?;
    Ok(Admitted { key: Some(key.clone()), tokens, local_only: ring.over_budget(key).await })
}
