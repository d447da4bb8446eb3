//! Response cache for deterministic chat requests (temperature 0 or a
//! seed): the same body to the same route gets the stored answer, JSON or
//! a replayed stream, without touching a provider. Hits are recorded at
//! cost 0 and marked. Entries live `ttl_secs` and at most `max_entries`
//! are kept (moka, TinyLFU eviction).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `[gateway.cache]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache deterministic requests at all.
    pub enabled: bool,
    /// How long an answer is reused, seconds.
    pub ttl_secs: u64,
    /// Most answers kept.
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { enabled: true, ttl_secs: 300, max_entries: 10_000 }
    }
}

/// A stored answer.
#[derive(Debug, Clone)]
pub struct Cached {
    /// Provider that produced it.
    pub provider: String,
    /// Its model.
    pub model: String,
    /// The answer.
    pub answer: Answer,
}

/// JSON or the chunks of a stream that ended cleanly.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A `chat.completion`.
    Json(Value),
    /// Every chunk, the usage chunk last.
    Stream(Vec<Value>),
}

/// The cache.
#[derive(Debug, Clone)]
pub struct ResponseCache {
    inner: Option<moka::sync::Cache<[u8; 32], Arc<Cached>>>,
}

impl ResponseCache {
    /// A cache as configured (disabled: every lookup misses).
    pub fn new(cfg: &CacheConfig) -> Self {
        let inner = cfg.enabled.then(|| {
            moka::sync::Cache::builder()
                .max_capacity(cfg.max_entries)
                .time_to_live(Duration::from_secs(cfg.ttl_secs))
                .build()
        });
        Self { inner }
    }

    /// The cache key of a request, when its answer is deterministic:
    /// temperature 0 or a seed. The route name and the whole body count
    /// (streaming or not too: the two are stored apart), except `user`,
    /// which does not change the answer.
    pub fn key(&self, route: &str, body: &Map<String, Value>) -> Option<[u8; 32]> {
        self.inner.as_ref()?;
        let greedy = body.get("temperature").and_then(Value::as_f64) == Some(0.0);
        let seeded = body.get("seed").is_some_and(|s| !s.is_null());
        if !greedy && !seeded {
            return None;
        }
        let mut h = Sha256::new();
        h.update(route.as_bytes());
        h.update([0]);
        for (k, v) in body.iter().filter(|(k, _)| k.as_str() != "user") {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.to_string().as_bytes());
            h.update([0]);
        }
        Some(h.finalize().into())
    }

    /// The stored answer for `key`.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Cached>> {
        self.inner.as_ref()?.get(key)
    }

    /// Store an answer.
    pub fn put(&self, key: [u8; 32], cached: Cached) {
        if let Some(c) = &self.inner {
            c.insert(key, Arc::new(cached));
        }
    }
}

impl ResponseCache {
    /// Pass a stream through, storing its chunks under `key` if it ends
    /// cleanly (a failed or abandoned stream is not stored).
    pub fn filling(&self, key: [u8; 32], provider: String, model: String, chunks: crate::providers::ChunkValues) -> crate::providers::ChunkValues {
        use futures_util::StreamExt;
        let cache = self.clone();
        let state = (chunks, Some(Vec::new()), cache, key, provider, model);
        futures_util::stream::unfold(state, |(mut chunks, mut seen, cache, key, provider, model)| async move {
            let item = chunks.next().await;
            match &item {
                // A stream finished by another provider is not what any one
                // candidate answers: not kept.
                Some(Ok(v)) if crate::providers::Handover::of(v).is_some() => seen = None,
                Some(Ok(v)) => {
                    if let Some(s) = seen.as_mut() {
                        s.push(v.clone());
                    }
                }
                Some(Err(_)) => seen = None,
                None => {
                    if let Some(s) = seen.take() {
                        cache.put(key, Cached { provider: provider.clone(), model: model.clone(), answer: Answer::Stream(s) });
                    }
                }
            }
            item.map(|i| (i, (chunks, seen, cache, key, provider, model)))
        })
        .boxed()
    }
}
