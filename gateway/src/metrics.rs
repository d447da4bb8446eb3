//! Prometheus metrics, named `starling_<area>_<what>_<unit>`, registered in
//! the registry the process hands the gateway (no global one): the same
//! registry takes the other services' metrics, and `GET /metrics` renders
//! it whole.

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::routing::breaker::State;
use crate::providers::local::generator::Generators;

/// Every metric the server records.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route and status.
    pub requests: IntCounterVec,
    /// Request latency by route (headers sent, not stream end).
    pub request_seconds: HistogramVec,
    /// 429 answers by route.
    pub rate_limited: IntCounterVec,
    /// Time to first token by model.
    pub ttft_seconds: HistogramVec,
    /// Time between tokens of a choice by model.
    pub inter_token_seconds: HistogramVec,
    /// Prompt tokens by model.
    pub prompt_tokens: IntCounterVec,
    /// Completion tokens by model.
    pub completion_tokens: IntCounterVec,
    running: IntGaugeVec,
    waiting: IntGaugeVec,
    kv_used: IntGaugeVec,
    kv_capacity: IntGaugeVec,
    breaker: IntGaugeVec,
    /// Attempts at providers by provider, model and outcome: `ok`, or the
    /// error's type (`rate_limit_exceeded`, `upstream_timeout`,
    /// `upstream_error`, `upstream_unavailable`, `invalid_request_error`, ...).
    pub upstream_attempts: IntCounterVec,
    /// Provider attempt durations (to the first chunk for streams).
    pub upstream_seconds: HistogramVec,
    /// Time a chat request spends in Starling itself: to its response
    /// headers, minus the time waiting on providers.
    pub overhead_seconds: prometheus::Histogram,
    /// Tokens by provider, model and kind (`prompt`, `completion`).
    pub provider_tokens: IntCounterVec,
    /// USD spent by provider and model.
    pub cost_usd: CounterVec,
    /// Requests whose local candidate went last because its predicted TTFT
    /// exceeded the route's SLO, by route and provider.
    pub spills: IntCounterVec,
    /// The usage record writer's failures and backlog.
    pub usage_writer: crate::accounting::usage::WriterMetrics,
    /// Seconds of audio transcribed, by model.
    pub audio_seconds: CounterVec,
    /// Wall time over audio time of each transcription, by model.
    pub speech_rtf: HistogramVec,
    /// Clips waiting and running in a speech engine, by model and state.
    pub speech_queue: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const OVERHEAD_BUCKETS: &[f64] =
    &[0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1];
const RTF_BUCKETS: &[f64] = &[0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0];
const TOKEN_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56];

impl Metrics {
    /// Every gateway metric, registered in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let registry = registry.clone();
        let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram = |name: &str, help: &str, label: &str, buckets: &[f64]| -> prometheus::Result<HistogramVec> {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), &[label])?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        Ok(Self {
            requests: counter("starling_http_requests_total", "HTTP requests by route and status.", &["route", "status"])?,
            request_seconds: histogram(
                "starling_http_request_duration_seconds",
                "Time to response headers by route.",
                "route",
                LATENCY_BUCKETS,
            )?,
            rate_limited: counter("starling_http_rate_limited_total", "429 answers by route.", &["route"])?,
            ttft_seconds: histogram(
                "starling_llm_time_to_first_token_seconds",
                "Request start to first generated token, by model.",
                "model",
                LATENCY_BUCKETS,
            )?,
            inter_token_seconds: histogram(
                "starling_llm_inter_token_latency_seconds",
                "Time between consecutive tokens of a choice, by model.",
                "model",
                TOKEN_BUCKETS,
            )?,
            prompt_tokens: counter("starling_llm_prompt_tokens_total", "Prompt tokens processed, by model.", &["model"])?,
            completion_tokens: counter(
                "starling_llm_completion_tokens_total",
                "Tokens generated, by model.",
                &["model"],
            )?,
            running: gauge("starling_engine_running_sequences", "Sequences generating.", &["provider"])?,
            waiting: gauge("starling_engine_waiting_sequences", "Sequences admitted, waiting for a slot.", &["provider"])?,
            kv_used: gauge("starling_engine_kv_cache_used_bytes", "KV cache reserved by admitted sequences.", &["provider"])?,
            kv_capacity: gauge("starling_engine_kv_cache_capacity_bytes", "KV cache budget.", &["provider"])?,
            breaker: gauge(
                "starling_gateway_breaker_state",
                "Circuit breaker per provider and model: 0 closed, 1 open, 2 half-open.",
                &["provider", "model"],
            )?,
            upstream_attempts: counter(
                "starling_gateway_upstream_attempts_total",
                "Attempts at providers by provider, model and outcome (ok or the error type).",
                &["provider", "model", "outcome"],
            )?,
            upstream_seconds: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "starling_gateway_upstream_duration_seconds",
                        "Provider attempts by provider and model: to the whole answer, or to the first chunk of a stream.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["provider", "model"],
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            overhead_seconds: {
                let h = prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "starling_gateway_overhead_seconds",
                        "Chat requests: arrival to response headers minus time waiting on providers.",
                    )
                    .buckets(OVERHEAD_BUCKETS.to_vec()),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            provider_tokens: counter(
                "starling_gateway_tokens_total",
                "Tokens of answered chat requests by provider, model and kind (prompt, completion).",
                &["provider", "model", "kind"],
            )?,
            cost_usd: {
                let c = CounterVec::new(
                    Opts::new("starling_gateway_cost_usd_total", "USD of answered chat requests by provider and model."),
                    &["provider", "model"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            spills: counter(
                "starling_gateway_spills_total",
                "Local candidates moved last because their predicted TTFT exceeded the route's SLO.",
                &["route", "provider"],
            )?,
            audio_seconds: {
                let c = CounterVec::new(Opts::new("starling_speech_audio_seconds_total", "Seconds of audio transcribed, by model."), &["model"])?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            speech_rtf: histogram(
                "starling_speech_real_time_factor",
                "Request arrival to transcript over audio duration (below 1: faster than real time), by model.",
                "model",
                RTF_BUCKETS,
            )?,
            speech_queue: gauge("starling_speech_clips", "Clips in a speech engine, by model and state (waiting, running).", &["model", "state"])?,
            usage_writer: {
                let write_errors = prometheus::IntCounter::new(
                    "starling_gateway_usage_write_errors_total",
                    "Failed writes of usage records (each is retried; see starling_gateway_usage_queued_records).",
                )?;
                let queued = prometheus::IntGauge::new(
                    "starling_gateway_usage_queued_records",
                    "Usage records taken from requests and not yet in the database, held in memory.",
                )?;
                let journal_only = prometheus::IntGauge::new(
                    "starling_gateway_usage_journal_only_records",
                    "Usage records not yet in the database held only in the journal (memory was full during an outage).",
                )?;
                registry.register(Box::new(write_errors.clone()))?;
                registry.register(Box::new(queued.clone()))?;
                registry.register(Box::new(journal_only.clone()))?;
                crate::accounting::usage::WriterMetrics { write_errors, queued, journal_only }
            },
            registry,
        })
    }

    /// The text exposition, with gauges read from the local models and
    /// the breakers now.
    pub fn render(&self, providers: Option<&Generators>, breakers: &[(String, String, State)]) -> String {
        for (provider, model, state) in breakers {
            self.breaker.with_label_values(&[provider.as_str(), model.as_str()]).set(state.gauge());
        }
        for p in providers.into_iter().flat_map(Generators::iter) {
            if let Some(load) = p.load() {
                let name = [p.name()];
                let set = |g: &IntGaugeVec, v: usize| g.with_label_values(&name).set(i64::try_from(v).unwrap_or(i64::MAX));
                set(&self.running, load.running);
                set(&self.waiting, load.waiting);
                set(&self.kv_used, load.kv_used_bytes);
                set(&self.kv_capacity, load.kv_capacity_bytes);
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("metrics encoding failed: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
