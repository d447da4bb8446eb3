//! Resuming a stream that broke after bytes were sent: a later candidate
//! that continues prefills (the local engine, Anthropic, a vLLM marked
//! `continue_final_message`) gets the answer so far as the last assistant
//! message, and the client reads one unbroken stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Map, Value};

use crate::error::{ApiError, Fate};
use crate::providers::{Api, Call, ChunkValues, Handover, Reply};
use crate::routing::router::{attempt, Candidate, Router};

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
    pub(super) fn carried(
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
            let call = Call { api: Api::Chat, body, model: next.model.clone(), stream: true, continuation: true, audio: None };
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

