//! Response cache for deterministic chat requests (temperature 0 or a
//! seed): the same body from the same key to the same route gets the
//! stored answer, JSON or a replayed stream, without touching a provider.
//! Hits are recorded at cost 0 and marked. Each key has its own entries (a
//! hit must not tell one tenant what another asked). Entries live
//! `ttl_secs`, weighed by their bytes within `max_mb` (moka, TinyLFU
//! eviction).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::providers::Api;

/// `[gateway.cache]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache deterministic requests at all.
    pub enabled: bool,
    /// How long an answer is reused, seconds.
    pub ttl_secs: u64,
    /// Memory for answers, MiB (an answer weighs its JSON's bytes).
    pub max_mb: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { enabled: true, ttl_secs: 300, max_mb: 64 }
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

impl Cached {
    /// What it weighs in the cache: its JSON's bytes.
    fn bytes(&self) -> u64 {
        let json = match &self.answer {
            Answer::Json(v) => v.to_string().len(),
            Answer::Stream(chunks) => chunks.iter().map(|c| c.to_string().len()).sum(),
        };
        (json + self.provider.len() + self.model.len()) as u64
    }
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
    inner: Option<moka::sync::Cache<[u8; 32], Weighed>>,
}

/// An answer with its weight, measured once when stored.
#[derive(Debug, Clone)]
struct Weighed {
    cached: Arc<Cached>,
    bytes: u32,
}

impl ResponseCache {
    /// A cache as configured (disabled: every lookup misses).
    pub fn new(cfg: &CacheConfig) -> Self {
        let inner = cfg.enabled.then(|| {
            moka::sync::Cache::builder()
                .max_capacity(cfg.max_mb.saturating_mul(1 << 20))
                .weigher(|_, w: &Weighed| w.bytes)
                .time_to_live(Duration::from_secs(cfg.ttl_secs))
                .build()
        });
        Self { inner }
    }

    /// The cache key of a request from API key `owner` (None: no keys in
    /// use), when its answer is deterministic: temperature 0 or a seed. The
    /// owner, the API, the route name and the whole body count (streaming or not
    /// too: the two are stored apart), except `user`, which does not change
    /// the answer.
    pub fn key(&self, owner: Option<&str>, api: Api, route: &str, body: &Map<String, Value>) -> Option<[u8; 32]> {
        self.inner.as_ref()?;
        let greedy = body.get("temperature").and_then(Value::as_f64) == Some(0.0);
        let seeded = body.get("seed").is_some_and(|s| !s.is_null());
        if !greedy && !seeded {
            return None;
        }
        let mut h = Sha256::new();
        h.update(owner.unwrap_or("").as_bytes());
        h.update([0]);
        h.update(api.path().as_bytes());
        h.update([0]);
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
        self.inner.as_ref()?.get(key).map(|w| w.cached)
    }

    /// Store an answer.
    pub fn put(&self, key: [u8; 32], cached: Cached) {
        if let Some(c) = &self.inner {
            let bytes = u32::try_from(cached.bytes()).unwrap_or(u32::MAX);
            c.insert(key, Weighed { cached: Arc::new(cached), bytes });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(bytes: usize) -> Cached {
        let v = serde_json::json!({"choices": [{"message": {"content": "x".repeat(bytes)}}]});
        Cached { provider: "p".into(), model: "m".into(), answer: Answer::Json(v) }
    }

    /// The budget is bytes: a few large answers fill it, however few.
    #[test]
    fn answers_are_weighed_by_their_bytes() {
        let cache = ResponseCache::new(&CacheConfig { enabled: true, ttl_secs: 300, max_mb: 1 });
        let body = |i: u64| serde_json::json!({"seed": i}).as_object().cloned().unwrap_or_default();
        for i in 0..8 {
            let key = cache.key(None, Api::Chat, "r", &body(i)).expect("seeded");
            cache.put(key, answer(400 << 10));
        }
        let inner = cache.inner.as_ref().expect("enabled");
        inner.run_pending_tasks();
        assert!(inner.weighted_size() <= 1 << 20, "{} bytes kept", inner.weighted_size());
        assert!(inner.entry_count() <= 2, "{} answers of 400 KiB kept in 1 MiB", inner.entry_count());
    }

    /// The same deterministic request from two keys: two entries.
    #[test]
    fn each_key_has_its_own_entries() {
        let cache = ResponseCache::new(&CacheConfig::default());
        let body = serde_json::json!({"temperature": 0}).as_object().cloned().unwrap_or_default();
        let (a, b) = (cache.key(Some("key_a"), Api::Chat, "r", &body), cache.key(Some("key_b"), Api::Chat, "r", &body));
        assert!(a.is_some() && a != b);
        cache.put(a.expect("key"), answer(10));
        assert!(cache.get(&b.expect("key")).is_none());
    }
}
