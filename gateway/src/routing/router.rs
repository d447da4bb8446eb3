//! Routing: a public model name maps to candidates (provider, model); the
//! route's policy orders them, breakers skip unhealthy ones, and failures
//! that say nothing about the request (connect errors, timeouts, 429, 5xx)
//! move on to the next candidate, with backoff before a candidate is tried
//! again, until an attempt succeeds, attempts run out or the deadline
//! passes. All of this happens before anything reaches the client: a
//! stream counts as answered once its first chunk has arrived. A stream
//! that breaks after that is carried on by a later candidate that can
//! continue a prefill (the answer so far as the last assistant message),
//! when there is one; otherwise it ends with the error.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::routing::breaker::{Breakers, State};
use crate::config::{GatewayConfig, Policy, RetryConfig};
use crate::error::{ApiError, Fate};
use crate::metrics::Metrics;
use crate::routing::prices::{local_price, Prices};
use crate::providers::{Api, Call, ChunkValues, Handover, Provider, Reply};

/// How long one attempt at a remote provider may take to answer.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// To the first chunk of a stream (the rest is bounded by the stream's
    /// own pace).
    pub first_chunk: Duration,
    /// To the whole of a JSON answer, which arrives only when the last
    /// token is generated: a long answer is not a slow first token.
    pub total: Duration,
}

/// A provider with its timeouts.
#[derive(Clone)]
pub struct Upstream {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Time allowed to one attempt (`None`: the request deadline only).
    pub timeouts: Option<Timeouts>,
    /// Whether failures count against a circuit breaker. The local engine
    /// has none: its 429 is admission control reporting live load, not
    /// ill health, so a failed attempt there only moves the request on.
    pub breaker: bool,
}

impl Upstream {
    /// A remote provider: breaker on, answers within `timeouts`.
    pub fn remote(provider: Arc<dyn Provider>, timeouts: Timeouts) -> Self {
        Self { provider, timeouts: Some(timeouts), breaker: true }
    }

    /// The in-process engine: no breaker, no timeout (it answers 429 at
    /// once when full).
    pub fn local(provider: Arc<dyn Provider>) -> Self {
        Self { provider, timeouts: None, breaker: false }
    }
}

#[derive(Clone)]
struct Candidate {
    upstream: Upstream,
    provider: String,
    model: String,
    priority: u32,
    weight: u32,
    /// The model is whatever name the client sent, passed to the local
    /// engine because no route claims it: metrics label it [`UNROUTED`],
    /// as label values must stay few whatever clients send.
    unrouted: bool,
}

/// The metrics' `model` label of a name no route claims.
pub const UNROUTED: &str = "(unrouted)";

struct Route {
    policy: Policy,
    candidates: Vec<Candidate>,
    ttft_slo: Option<Duration>,
}

/// Output tokens assumed for a request that names no `max_tokens`, when
/// comparing costs.
const OUTPUT_ESTIMATE: u64 = 256;
/// Weight of the newest sample in the latency EWMA.
const EWMA_ALPHA: f64 = 0.3;

/// Why a route could not be built.
#[derive(Debug, thiserror::Error)]
#[error("route `{route}`: {message}")]
pub struct RouteError {
    /// The route's public name.
    pub route: String,
    /// What is wrong.
    pub message: String,
}

/// A routed answer and how it came about.
#[derive(Debug)]
pub struct Routed {
    /// The answer.
    pub reply: Reply,
    /// Provider that answered.
    pub provider: String,
    /// Its model.
    pub model: String,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// Time spent waiting on providers (attempts and backoff), for the
    /// gateway-overhead histogram.
    pub upstream: Duration,
}

/// Every route, and the breakers of every candidate.
pub struct Router {
    routes: HashMap<String, Route>,
    prices: Prices,
    gpu_usd_per_hour: f64,
    /// Recent time to first chunk (or to the whole answer), seconds, per
    /// (provider, model).
    latency: Mutex<HashMap<(String, String), f64>>,
    metrics: Metrics,
    /// Names no route claims go to the local engine (404 there if it does
    /// not have them either).
    local: Option<Upstream>,
    breakers: Breakers,
    retry: RetryConfig,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("routes", &self.routes.keys().collect::<Vec<_>>()).finish()
    }
}

impl Router {
    /// Routes from `config` over `upstreams` (by provider name). Every
    /// `<provider>/<model>` a provider lists is also a route of its own,
    /// and a name no route claims goes to `local`.
    pub fn new(config: &GatewayConfig, upstreams: &HashMap<String, Upstream>, metrics: Metrics) -> Result<Self, RouteError> {
        let mut routes = HashMap::new();
        let single = |provider: &str, model: &str, upstream: &Upstream| Route {
            policy: Policy::Priority,
            candidates: vec![Candidate::new(upstream, provider, model)],
            ttft_slo: None,
        };
        for p in &config.providers {
            if let Some(up) = upstreams.get(&p.name) {
                for m in &p.models {
                    routes.insert(format!("{}/{m}", p.name), single(&p.name, m, up));
                }
            }
        }
        for r in &config.routes {
            let err = |message: String| RouteError { route: r.model.clone(), message };
            if r.candidates.is_empty() {
                return Err(err("no candidates".into()));
            }
            let mut candidates = Vec::with_capacity(r.candidates.len());
            for (i, c) in r.candidates.iter().enumerate() {
                let Some(up) = upstreams.get(&c.provider) else {
                    return Err(err(format!("unknown provider `{}`", c.provider)));
                };
                if c.weight == 0 {
                    return Err(err(format!("candidate `{}/{}` has weight 0", c.provider, c.model)));
                }
                candidates.push(Candidate {
                    priority: c.priority.unwrap_or(i as u32),
                    weight: c.weight,
                    ..Candidate::new(up, &c.provider, &c.model)
                });
            }
            let ttft_slo = r.ttft_slo_ms.map(Duration::from_millis);
            routes.insert(r.model.clone(), Route { policy: r.policy, candidates, ttft_slo });
        }
        Ok(Self {
            routes,
            prices: Prices::new(config.prices.clone()),
            gpu_usd_per_hour: config.gpu_usd_per_hour,
            latency: Mutex::new(HashMap::new()),
            metrics,
            local: upstreams.get("local").cloned(),
            breakers: Breakers::new(config.breaker.clone()),
            retry: config.retry.clone(),
        })
    }

    /// Public model names.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    /// Breaker states, for `/metrics`.
    pub fn breaker_states(&self) -> Vec<(String, String, State)> {
        self.breakers.states()
    }

    /// Answer `body` (a request of `api`) over the route `model`.
    /// `local_only`: the caller's cloud budget is spent, so only the local
    /// engine (already paid for) may answer; 429 `insufficient_quota` when
    /// the route has no local candidate.
    pub async fn answer(
        self: &Arc<Self>,
        api: Api,
        model: &str,
        body: Map<String, Value>,
        stream: bool,
        local_only: bool,
    ) -> Result<Routed, ApiError> {
        let deadline = Instant::now() + Duration::from_secs(self.retry.deadline_secs);
        let mut order = match self.routes.get(model) {
            Some(route) => self.order(model, route, &body),
            None => {
                let local = self.local.as_ref().ok_or_else(|| ApiError::model_not_found(model))?;
                vec![Candidate { unrouted: true, ..Candidate::new(local, "local", model) }]
            }
        };
        if local_only {
            order.retain(|c| c.provider == "local");
            if order.is_empty() {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let to_midnight = Duration::from_secs(86_400 - now.as_secs() % 86_400);
                return Err(ApiError::insufficient_quota(
                    format!("This key's daily cloud budget is spent and `{model}` has no local candidate."),
                    to_midnight,
                ));
            }
        }
        let mut last: Option<ApiError> = None;
        let mut attempts = 0u32;
        // Candidates that cannot serve this request at all.
        let mut skip = vec![false; order.len()];
        let mut upstream = Duration::ZERO;
        for round in 0u32.. {
            let mut tried = false;
            for (i, c) in order.iter().enumerate() {
                if skip[i] || attempts >= self.retry.max_attempts || Instant::now() >= deadline {
                    continue;
                }
                if c.upstream.breaker && !self.breakers.allow(&c.provider, &c.model, Instant::now()) {
                    last.get_or_insert_with(|| {
                        ApiError::upstream_unavailable(
                            format!("`{}` is failing (circuit open); no other candidate answered", c.provider),
                            None,
                        )
                    });
                    continue;
                }
                tried = true;
                attempts += 1;
                let mut call_body = body.clone();
                call_body.insert("model".into(), Value::String(c.model.clone()));
                let call = Call { api, body: call_body, model: c.model.clone(), stream, continuation: false };
                let started = Instant::now();
                let outcome = attempt(&c.upstream, call, deadline).await;
                let took = started.elapsed();
                upstream += took;
                self.observe_attempt(c, took, &outcome);
                match outcome {
                    Ok(reply) => {
                        self.observe_latency(c, took);
                        if c.upstream.breaker {
                            self.breakers.success(&c.provider, &c.model, Instant::now());
                        }
                        // Only a chat stream can be continued from a prefill.
                        let reply = match reply {
                            Reply::Stream(s) if api == Api::Chat => Reply::Stream(self.carried(s, c, &order[i + 1..], &body)),
                            other => other,
                        };
                        return Ok(Routed { reply, provider: c.provider.clone(), model: c.model.clone(), attempts, upstream });
                    }
                    Err(e) => {
                        tracing::debug!(provider = %c.provider, model = %c.model, status = %e.status, "attempt failed: {}", e.message);
                        match e.fate() {
                            Fate::Retry if !c.upstream.breaker => skip[i] = true,
                            Fate::Retry => {
                                let reset = (e.status.as_u16() == 429).then_some(e.retry_after).flatten();
                                self.breakers.failure(&c.provider, &c.model, Instant::now(), reset);
                            }
                            Fate::Next => {
                                if c.upstream.breaker {
                                    self.breakers.release(&c.provider, &c.model);
                                }
                                skip[i] = true;
                            }
                            Fate::Final => {
                                if c.upstream.breaker {
                                    self.breakers.release(&c.provider, &c.model);
                                }
                                return Err(e);
                            }
                        }
                        last = Some(e);
                    }
                }
            }
            if !tried || attempts >= self.retry.max_attempts {
                break;
            }
            // Every candidate failed this round: back off (full jitter)
            // before trying them again, within the deadline.
            let cap = self.retry.backoff_base_ms.saturating_mul(1 << round.min(16)).min(self.retry.backoff_max_ms);
            let wait = Duration::from_millis(rand::thread_rng().gen_range(0..=cap));
            if Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
            upstream += wait;
        }
        Err(last.unwrap_or_else(|| ApiError::upstream_unavailable(format!("no candidate of `{model}` answered"), None)))
    }
}

impl Candidate {
    fn new(upstream: &Upstream, provider: &str, model: &str) -> Self {
        Self { upstream: upstream.clone(), provider: provider.into(), model: model.into(), priority: 0, weight: 1, unrouted: false }
    }

    /// The `model` label of its metrics.
    fn metric_model(&self) -> &str {
        if self.unrouted {
            UNROUTED
        } else {
            &self.model
        }
    }
}

impl Router {
    /// The route's candidates in the order to try them: ranked by the
    /// policy, equals shuffled by weight (an exponential race: each draws
    /// -ln(u)/weight, lowest first, so a candidate leads with probability
    /// weight / total), and a local engine predicted to miss the route's
    /// TTFT SLO moved behind the rest.
    fn order(&self, route_name: &str, route: &Route, body: &Map<String, Value>) -> Vec<Candidate> {
        let mut rng = rand::thread_rng();
        // Expected cost: most answers end well before a large `max_tokens`.
        let (input, output) = token_estimate(body);
        let output = output.min(4 * OUTPUT_ESTIMATE);
        let mut ranked: Vec<(bool, f64, f64, Candidate)> = route
            .candidates
            .iter()
            .map(|c| {
                let load = c.upstream.provider.load();
                let score = match route.policy {
                    Policy::Priority => f64::from(c.priority),
                    Policy::Cheapest => {
                        let price = match &load {
                            Some(l) => Some(local_price(
                                self.gpu_usd_per_hour,
                                l.running + l.waiting,
                                l.max_running,
                                l.tokens_per_second,
                            )),
                            None => self.prices.get(&c.provider, &c.model),
                        };
                        price.map_or(f64::INFINITY, |p| p.cost(input, 0, output))
                    }
                    Policy::Fastest => {
                        let seen = self.latency_of(c).unwrap_or(0.0);
                        let wait = load.map_or(0.0, |l| l.predicted_wait.map_or(f64::INFINITY, |w| w.as_secs_f64()));
                        seen + wait
                    }
                };
                let spill = match (route.ttft_slo, &load) {
                    (Some(slo), Some(l)) => l.predicted_wait.is_none_or(|w| w > slo),
                    _ => false,
                };
                if spill {
                    self.metrics.spills.with_label_values(&[route_name, c.provider.as_str()]).inc();
                }
                let race = -(1.0 - rng.gen::<f64>()).ln() / f64::from(c.weight);
                (spill, score, race, c.clone())
            })
            .collect();
        ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.total_cmp(&b.2)));
        ranked.into_iter().map(|(_, _, _, c)| c).collect()
    }

    /// USD of a request's tokens at `provider`/`model` (the local engine
    /// at its load now; 0 when the price is unknown).
    pub fn cost(&self, provider: &str, model: &str, prompt: i64, cached: i64, completion: i64) -> f64 {
        let n = |x: i64| u64::try_from(x).unwrap_or(0);
        let local = self.local.as_ref().filter(|_| provider == "local").and_then(|l| l.provider.load());
        let price = match local {
            Some(l) => Some(local_price(self.gpu_usd_per_hour, l.running + l.waiting, l.max_running, l.tokens_per_second)),
            None => self.prices.get(provider, model),
        };
        price.map_or(0.0, |p| p.cost(n(prompt), n(cached), n(completion)))
    }

    fn latency_of(&self, c: &Candidate) -> Option<f64> {
        let map = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(c.provider.clone(), c.model.clone())).copied()
    }

    /// Count one attempt at `c`: its time, and its outcome by error type
    /// (OpenAI's code where there is one: rate_limit_exceeded,
    /// upstream_timeout, ...; else its type).
    fn observe_attempt(&self, c: &Candidate, took: Duration, outcome: &Result<Reply, ApiError>) {
        let labels = [c.provider.as_str(), c.metric_model()];
        self.metrics.upstream_seconds.with_label_values(&labels).observe(took.as_secs_f64());
        let outcome = match outcome {
            Ok(_) => "ok",
            Err(e) => e.code.unwrap_or(e.kind),
        };
        self.metrics.upstream_attempts.with_label_values(&[labels[0], labels[1], outcome]).inc();
    }

    fn observe_latency(&self, c: &Candidate, took: Duration) {
        let mut map = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry((c.provider.clone(), c.model.clone())).or_insert(took.as_secs_f64());
        *e = EWMA_ALPHA * took.as_secs_f64() + (1.0 - EWMA_ALPHA) * *e;
    }
}

/// A stream's state for carrying it on elsewhere: the answer so far and
/// the candidates that could continue it.
struct Carry {
    router: Arc<Router>,
    /// Who is answering now.
    current: Candidate,
    /// Later candidates that continue a prefill, in the route's order.
    rest: VecDeque<Candidate>,
    body: Map<String, Value>,
    /// The text streamed so far.
    text: String,
    /// Chunks that carried output so far (about one token each).
    outputs: i64,
    /// Of those, the ones earlier attempts sent: the usage the last attempt
    /// reports counts only its own.
    carried_outputs: i64,
    /// Tool calls or several choices: not something a prefill continues.
    blocked: bool,
    /// A choice has finished: the answer is whole, nothing to continue.
    finished: bool,
    /// `id`, `created` and `model` of the first chunk: the client's stream
    /// keeps them across attempts.
    stamp: Option<[Value; 3]>,
    resumed: bool,
    /// The prefill went without its trailing whitespace (Anthropic refuses
    /// it), so the continuation's leading whitespace is not repeated.
    trim_next: bool,
}

impl Router {
    /// `chunks` from `current`, carried on by one of `later` if it breaks
    /// after its first chunk while answering in text. As it is when no later
    /// candidate continues prefills, or the request asks for several
    /// choices.
    fn carried(
        self: &Arc<Self>,
        chunks: ChunkValues,
        current: &Candidate,
        later: &[Candidate],
        body: &Map<String, Value>,
    ) -> ChunkValues {
        let rest: VecDeque<Candidate> = later.iter().filter(|c| c.upstream.provider.continues_prefill()).cloned().collect();
        let several = body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1);
        if rest.is_empty() || several {
            return chunks;
        }
        let carry = Carry {
            router: self.clone(),
            current: current.clone(),
            rest,
            body: body.clone(),
            text: String::new(),
            outputs: 0,
            carried_outputs: 0,
            blocked: false,
            finished: false,
            stamp: None,
            resumed: false,
            trim_next: false,
        };
        stream::unfold(Some((chunks, carry)), |state| async move {
            let (mut chunks, mut carry) = state?;
            loop {
                match chunks.next().await {
                    Some(Ok(mut v)) => {
                        if carry.take(&mut v) {
                            return Some((Ok(v), Some((chunks, carry))));
                        }
                    }
                    Some(Err(e)) => match carry.resume(&e).await {
                        Some(next) => {
                            chunks = next;
                            let handover = Handover {
                                provider: carry.current.provider.clone(),
                                model: carry.current.model.clone(),
                                carried: carry.carried_outputs,
                            };
                            return Some((Ok(handover.to_chunk()), Some((chunks, carry))));
                        }
                        None => return Some((Err(e), None)),
                    },
                    None => return None,
                }
            }
        })
        .boxed()
    }
}

impl Carry {
    /// Note what chunk `v` carries, and make a continuation's chunk look
    /// like the first attempt's. False: leave it out (a continuation's
    /// opening role chunk).
    fn take(&mut self, v: &mut Value) -> bool {
        if self.resumed {
            let first = &v["choices"][0];
            let d = &first["delta"];
            if d.get("role").is_some() && d["content"].as_str().unwrap_or_default().is_empty() && d.get("tool_calls").is_none() && first["finish_reason"].is_null() {
                return false;
            }
            if let (Some(stamp), Some(o)) = (&self.stamp, v.as_object_mut()) {
                for (k, val) in ["id", "created", "model"].into_iter().zip(stamp) {
                    o.insert(k.into(), val.clone());
                }
            }
            if self.trim_next {
                if let Some(c) = v["choices"][0]["delta"]["content"].as_str().filter(|c| !c.is_empty()) {
                    let trimmed = c.trim_start().to_owned();
                    v["choices"][0]["delta"]["content"] = Value::String(trimmed);
                    self.trim_next = false;
                }
            }
            if let Some(u) = v.get_mut("usage").filter(|u| u.is_object()) {
                let add = |u: &mut Value, k: &str, n: i64| u[k] = json!(u[k].as_i64().unwrap_or(0) + n);
                add(u, "completion_tokens", self.carried_outputs);
                add(u, "total_tokens", self.carried_outputs);
            }
        } else if self.stamp.is_none() {
            self.stamp = Some([v["id"].clone(), v["created"].clone(), v["model"].clone()]);
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            let d = &c["delta"];
            if c["index"].as_u64().unwrap_or(0) != 0 || d.get("tool_calls").is_some_and(|t| !t.is_null()) {
                self.blocked = true;
            }
            self.finished |= !c["finish_reason"].is_null();
            if let Some(text) = d["content"].as_str().filter(|t| !t.is_empty()) {
                self.text.push_str(text);
                self.outputs += 1;
            }
        }
        true
    }

    /// The current candidate broke off with `e`: the stream of the next
    /// candidate that takes up the answer so far, if one does.
    async fn resume(&mut self, e: &ApiError) -> Option<ChunkValues> {
        let router = self.router.clone();
        if self.blocked || self.finished || self.text.trim().is_empty() || matches!(e.fate(), Fate::Final) {
            return None;
        }
        let prefill = self.text.trim_end().to_owned();
        // The route's deadline bounds finding a candidate, counted from the
        // break: the answer before it may well have taken longer.
        let deadline = Instant::now() + Duration::from_secs(router.retry.deadline_secs);
        while let Some(next) = self.rest.pop_front() {
            if Instant::now() >= deadline {
                return None;
            }
            if next.upstream.breaker && !router.breakers.allow(&next.provider, &next.model, Instant::now()) {
                continue;
            }
            let mut body = self.body.clone();
            body.insert("model".into(), Value::String(next.model.clone()));
            if let Some(Value::Array(messages)) = body.get_mut("messages") {
                messages.push(json!({"role": "assistant", "content": prefill}));
            }
            for k in ["max_completion_tokens", "max_tokens"] {
                if let Some(n) = body.get(k).and_then(Value::as_u64) {
                    body.insert(k.into(), json!(n.saturating_sub(self.outputs.max(0) as u64).max(1)));
                }
            }
            let call = Call { api: Api::Chat, body, model: next.model.clone(), stream: true, continuation: true };
            let started = Instant::now();
            let outcome = attempt(&next.upstream, call, deadline).await;
            router.observe_attempt(&next, started.elapsed(), &outcome);
            match outcome {
                Ok(Reply::Stream(s)) => {
                    if next.upstream.breaker {
                        router.breakers.success(&next.provider, &next.model, Instant::now());
                    }
                    tracing::info!(from = %self.current.provider, to = %next.provider, "a broken stream resumed with its answer so far");
                    self.trim_next = prefill.len() < self.text.len();
                    self.carried_outputs = self.outputs;
                    self.current = next;
                    self.resumed = true;
                    return Some(s);
                }
                // Not for a stream; nothing to splice.
                Ok(Reply::Json(_)) => {}
                Err(err) if next.upstream.breaker => match err.fate() {
                    Fate::Retry => {
                        let reset = (err.status.as_u16() == 429).then_some(err.retry_after).flatten();
                        router.breakers.failure(&next.provider, &next.model, Instant::now(), reset);
                    }
                    // Says nothing of its health: a half-open probe is given back.
                    Fate::Next | Fate::Final => router.breakers.release(&next.provider, &next.model),
                },
                Err(_) => {}
            }
        }
        None
    }
}

/// Rough prompt and completion sizes of a chat request: four characters of
/// message text per token, and `max_tokens` or [`OUTPUT_ESTIMATE`]
/// generated (the most the request may use, as rate limits count it).
pub fn token_estimate(body: &Map<String, Value>) -> (u64, u64) {
    let messages: usize = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| ms.iter().map(|m| m.get("content").map_or(0, content_chars)).sum())
        .unwrap_or(0);
    let chars = messages + body.get("prompt").map_or(0, prompt_chars);
    let asked = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| body.get(*k).and_then(Value::as_u64));
    ((chars / 4) as u64 + 1, asked.unwrap_or(OUTPUT_ESTIMATE))
}

/// A legacy prompt in characters: text, texts, or token ids (four
/// characters' worth each).
fn prompt_chars(prompt: &Value) -> usize {
    match prompt {
        Value::String(s) => s.len(),
        Value::Number(_) => 4,
        Value::Array(items) => items.iter().map(prompt_chars).sum(),
        _ => 0,
    }
}

/// Tokens an image costs, about (OpenAI bills a 1024x1024 image at high
/// detail 765).
const IMAGE_TOKENS: usize = 765;

/// A message's content in characters of text, an image counting as
/// [`IMAGE_TOKENS`] tokens' worth (a base64 image's length says nothing of
/// its tokens).
fn content_chars(content: &Value) -> usize {
    match content {
        Value::String(s) => s.len(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") => p["text"].as_str().map_or(0, str::len),
                Some("image_url" | "image") => IMAGE_TOKENS * 4,
                _ => p.to_string().len(),
            })
            .sum(),
        other => other.to_string().len(),
    }
}

/// One attempt: a JSON answer (within the upstream's total timeout), or a
/// stream whose first chunk has arrived (within its first-chunk timeout).
/// Bounded by the request deadline.
async fn attempt(up: &Upstream, call: Call, deadline: Instant) -> Result<Reply, ApiError> {
    let name = up.provider.name().to_owned();
    let allowed = up.timeouts.map(|t| if call.stream { t.first_chunk } else { t.total });
    let fut = async {
        match up.provider.answer(call).await? {
            Reply::Json(v) => Ok(Reply::Json(v)),
            Reply::Stream(mut s) => match s.next().await {
                Some(Ok(first)) => Ok(Reply::Stream(stream::once(async { Ok(first) }).chain(s).boxed())),
                Some(Err(e)) => Err(e),
                None => Err(ApiError::bad_gateway(format!("`{name}` ended the stream before any chunk"))),
            },
        }
    };
    let limit = allowed.and_then(|t| Instant::now().checked_add(t)).map_or(deadline, |t| deadline.min(t));
    match tokio::time::timeout_at(limit.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::gateway_timeout(format!("`{}` sent nothing in time", up.provider.name()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text counts by its length; an image by a fixed cost, not by the
    /// length of its base64 (a 500 KB image is not 125k tokens).
    #[test]
    fn estimates_count_text_and_images() {
        let body = |content: Value| {
            let v = json!({"messages": [{"role": "user", "content": content}], "max_tokens": 10});
            v.as_object().cloned().unwrap_or_default()
        };
        assert_eq!(token_estimate(&body(json!("a".repeat(400)))), (101, 10));
        let image = json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(500_000))}});
        let parts = json!([{"type": "text", "text": "a".repeat(400)}, image]);
        assert_eq!(token_estimate(&body(parts)), (101 + IMAGE_TOKENS as u64, 10));
    }
}
