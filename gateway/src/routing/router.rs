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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use rand::Rng;
use serde_json::{Map, Value};

use crate::routing::breaker::{Breakers, State};
use crate::config::{GatewayConfig, Policy, RetryConfig};
use crate::error::{ApiError, Fate};
use crate::metrics::Metrics;
use crate::routing::prices::{local_price, Prices};
use crate::providers::{Api, Audio, Call, Provider, Reply};
use crate::routing::estimate::{token_estimate, OUTPUT_ESTIMATE};

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
pub(super) struct Candidate {
    pub(super) upstream: Upstream,
    pub(super) provider: String,
    pub(super) model: String,
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
    pub(super) breakers: Breakers,
    pub(super) retry: RetryConfig,
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

    /// Answer `body` (a request of `api`, with its `audio` file for the
    /// audio APIs) over the route `model`. `local_only`: the caller's cloud budget is spent, so only the local
    /// engine (already paid for) may answer; 429 `insufficient_quota` when
    /// the route has no local candidate.
    pub async fn answer(
        self: &Arc<Self>,
        api: Api,
        model: &str,
        body: Map<String, Value>,
        stream: bool,
        local_only: bool,
        audio: Option<Audio>,
    ) -> Result<Routed, ApiError> {
        let deadline = Instant::now() + Duration::from_secs(self.retry.deadline_secs);
        let mut order = match self.routes.get(model) {
            Some(route) => self.order(model, route, api, &body),
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
                let call = Call { api, body: call_body, model: c.model.clone(), stream, continuation: false, audio: audio.clone() };
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
    /// TTFT SLO moved behind the rest. Audio is ranked by its price per
    /// minute (the local engines': nothing).
    fn order(&self, route_name: &str, route: &Route, api: Api, body: &Map<String, Value>) -> Vec<Candidate> {
        let mut rng = rand::thread_rng();
        // Expected cost: most answers end well before a large `max_tokens`.
        let (input, output) = token_estimate(body);
        let output = output.min(4 * OUTPUT_ESTIMATE);
        let mut ranked: Vec<(bool, f64, f64, Candidate)> = route
            .candidates
            .iter()
            .map(|c| {
                // The engine's load is the LLM's: Whisper's queue says nothing about it.
                let load = if api.is_audio() { None } else { c.upstream.provider.load() };
                let score = match route.policy {
                    Policy::Priority => f64::from(c.priority),
                    Policy::Cheapest if api.is_audio() => match c.provider.as_str() {
                        "local" => 0.0,
                        _ => self.prices.get(&c.provider, &c.model).and_then(|p| p.audio_minute).unwrap_or(f64::INFINITY),
                    },
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

    /// USD of `seconds` of audio at `provider`/`model` (0 locally, and
    /// where the price is unknown).
    pub fn audio_cost(&self, provider: &str, model: &str, seconds: f64) -> f64 {
        if provider == "local" {
            return 0.0;
        }
        self.prices.get(provider, model).and_then(|p| p.audio_minute).map_or(0.0, |per_minute| per_minute * seconds.max(0.0) / 60.0)
    }

    fn latency_of(&self, c: &Candidate) -> Option<f64> {
        let map = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(c.provider.clone(), c.model.clone())).copied()
    }

    /// Count one attempt at `c`: its time, and its outcome by error type
    /// (OpenAI's code where there is one: rate_limit_exceeded,
    /// upstream_timeout, ...; else its type).
    pub(super) fn observe_attempt(&self, c: &Candidate, took: Duration, outcome: &Result<Reply, ApiError>) {
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

/// One attempt: a JSON answer (within the upstream's total timeout), or a
/// stream whose first chunk has arrived (within its first-chunk timeout).
/// Bounded by the request deadline, except audio: a transcription is
/// answered whole (cloud Whisper never streams; the local engine's first
/// segment comes with its first window), so it gets the upstream's total
/// timeout, and none at the local engine, which admitted the clip or
/// refused it at once.
pub(super) async fn attempt(up: &Upstream, call: Call, deadline: Instant) -> Result<Reply, ApiError> {
    let name = up.provider.name().to_owned();
    let audio = call.api.is_audio();
    let allowed = up.timeouts.map(|t| if call.stream && !audio { t.first_chunk } else { t.total });
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
    let limit = match (allowed.and_then(|t| Instant::now().checked_add(t)), audio) {
        (Some(t), true) => t,
        (None, true) => return fut.await,
        (Some(t), false) => deadline.min(t),
        (None, false) => deadline,
    };
    match tokio::time::timeout_at(limit.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::gateway_timeout(format!("`{}` sent nothing in time", up.provider.name()))),
    }
}
