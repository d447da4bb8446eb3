//! Filling a record from what passes: a JSON answer's usage, or a
//! stream's chunks up to its end (or its client leaving).

use super::UsageRecord;

/// Take `usage` (OpenAI's shape) and the response id from a
/// `chat.completion` or a chunk into the record.
pub fn observe(record: &mut UsageRecord, v: &serde_json::Value) {
    if let Some(id) = v["id"].as_str() {
        if record.request_id.is_empty() {
            record.request_id = id.to_owned();
        }
    }
    let u = &v["usage"];
    if u.is_object() {
        let n = |x: &serde_json::Value| x.as_i64().unwrap_or(0);
        record.prompt_tokens = n(&u["prompt_tokens"]);
        record.completion_tokens = n(&u["completion_tokens"]);
        record.cached_tokens = n(&u["prompt_tokens_details"]["cached_tokens"]);
    }
}

/// A stream that fills a record as its chunks pass and hands it to
/// `finish` when it ends, fails or is dropped (a client that went away).
/// A handover ([`crate::providers::Handover`]: another provider carries the
/// stream on) closes the record of the provider that broke off and opens
/// one for the next; the handover itself is not passed on.
pub fn metered(
    chunks: crate::providers::ChunkValues,
    mut record: UsageRecord,
    started: std::time::Instant,
    finish: impl Fn(UsageRecord) + Send + 'static,
) -> crate::providers::ChunkValues {
    use futures_util::StreamExt;

    struct Guard<F: Fn(UsageRecord)> {
        record: UsageRecord,
        started: std::time::Instant,
        ended: bool,
        usage_seen: bool,
        output_chunks: i64,
        /// Output of earlier providers that the usage reported to the
        /// client includes (see the router's resume).
        carried: i64,
        finish: F,
    }
    impl<F: Fn(UsageRecord)> Guard<F> {
        /// Close the record as it stands, hand it over, and go on with
        /// `next`.
        fn close(&mut self, default_error: &str, next: UsageRecord) {
            if !self.ended && self.record.error.is_none() {
                self.record.error = Some(default_error.into());
            }
            if !self.usage_seen {
                // Cut short (the usage chunk comes last): the provider still
                // bills what it generated. Upstreams send about one token per
                // chunk, and the local engine exactly one.
                self.record.completion_tokens = self.output_chunks;
            }
            self.record.latency_ms = self.started.elapsed().as_secs_f64() * 1e3;
            (self.finish)(std::mem::replace(&mut self.record, next));
        }
    }
    impl<F: Fn(UsageRecord)> Drop for Guard<F> {
        fn drop(&mut self) {
            self.close("the client went away before the end", empty());
        }
    }
    record.status = 200;
    let guard = Guard { record, started, ended: false, usage_seen: false, output_chunks: 0, carried: 0, finish };
    futures_util::stream::unfold((chunks, guard), |(mut chunks, mut g)| async move {
        loop {
            let item = chunks.next().await;
            match &item {
                Some(Ok(v)) => {
                    if let Some(h) = crate::providers::Handover::of(v) {
                        let why = format!("broke off mid-answer; `{}` finished it", h.provider);
                        // The same request (id, arrival, key, route, prompt
                        // estimate), now the next provider's.
                        let next = UsageRecord {
                            provider: h.provider,
                            model: h.model,
                            completion_tokens: 0,
                            cached_tokens: 0,
                            error: None,
                            ttft_ms: None,
                            attempts: g.record.attempts + 1,
                            ..g.record.clone()
                        };
                        g.close(&why, next);
                        (g.usage_seen, g.output_chunks, g.carried) = (false, 0, h.carried);
                        continue;
                    }
                    if g.record.ttft_ms.is_none() {
                        g.record.ttft_ms = Some(g.started.elapsed().as_secs_f64() * 1e3);
                    }
                    observe(&mut g.record, v);
                    if v["usage"].is_object() {
                        g.usage_seen = true;
                        g.record.completion_tokens -= g.carried;
                    }
                    g.output_chunks += output_parts(v);
                }
                Some(Err(e)) => {
                    g.record.error = Some(e.message.clone());
                    g.ended = true;
                }
                None => g.ended = true,
            }
            return item.map(|i| (i, (chunks, g)));
        }
    })
    .boxed()
}

/// How many choices of a chunk carry output: text (chat or legacy
/// completions), reasoning, or tool-call arguments.
fn output_parts(chunk: &serde_json::Value) -> i64 {
    let nonempty = |v: &serde_json::Value| v.as_str().is_some_and(|s| !s.is_empty());
    let Some(choices) = chunk["choices"].as_array() else { return 0 };
    let carries = |c: &serde_json::Value| {
        let d = &c["delta"];
        nonempty(&c["text"])
            || nonempty(&d["content"])
            || nonempty(&d["reasoning_content"])
            || nonempty(&d["reasoning"])
            || d["tool_calls"].as_array().is_some_and(|calls| calls.iter().any(|t| nonempty(&t["function"]["arguments"])))
    };
    choices.iter().filter(|c| carries(c)).count() as i64
}

fn empty() -> UsageRecord {
    UsageRecord {
        request_id: String::new(),
        ts_ms: 0,
        key_id: None,
        route: String::new(),
        provider: String::new(),
        model: String::new(),
        prompt_tokens: 0,
        completion_tokens: 0,
        cached_tokens: 0,
        cost_usd: 0.0,
        ttft_ms: None,
        latency_ms: 0.0,
        status: 0,
        error: None,
        cache_hit: false,
        attempts: 0,
        audio_seconds: 0.0,
    }
}

/// A fresh record for a request to `route` that arrived now.
pub fn draft(route: &str, key_id: Option<String>) -> UsageRecord {
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    UsageRecord { ts_ms, key_id, route: route.to_owned(), ..empty() }
}

