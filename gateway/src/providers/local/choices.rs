//! Running a request's choices: start them all or none, observe their
//! timing, read them to the end or merge them into one stream, and turn a
//! producer task into a stream of JSON chunks.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::providers::local::generator::{Chunk, ChunkStream, CompletionRequest, Finish, Generator, TokenLogprob, Usage};
use crate::metrics::Metrics;
use crate::providers::ChunkValues;

/// Start `n` choices per request (seeds offset per choice so they differ
/// yet repeat). All or nothing: if one is refused, the started ones are
/// dropped (cancelled) and the refusal is the answer.
pub(crate) async fn open_choices(
    metrics: &Metrics,
    provider: &Arc<dyn Generator>,
    reqs: Vec<CompletionRequest>,
    n: usize,
) -> Result<Vec<ChunkStream>, ApiError> {
    let mut out = Vec::with_capacity(reqs.len() * n);
    let started = Instant::now();
    for req in reqs {
        for i in 0..n {
            let mut r = req.clone();
            r.sampling.seed = r.sampling.seed.map(|s| s.wrapping_add(i as u64));
            let model = r.model.clone();
            let stream = provider.complete(r).await?;
            out.push(timed(metrics.clone(), model, started, stream));
        }
    }
    Ok(out)
}

/// Observe TTFT, inter-token latency and token counts as chunks pass.
fn timed(metrics: Metrics, model: String, started: Instant, stream: ChunkStream) -> ChunkStream {
    let mut last: Option<Instant> = None;
    stream
        .map(move |c| {
            if let Ok(chunk) = &c {
                let now = Instant::now();
                if let Chunk::Delta { .. } = chunk {
                    match last {
                        None => metrics.ttft_seconds.with_label_values(&[&model]).observe((now - started).as_secs_f64()),
                        Some(t) => metrics.inter_token_seconds.with_label_values(&[&model]).observe((now - t).as_secs_f64()),
                    }
                    last = Some(now);
                }
                if let Chunk::Done { usage, .. } = chunk {
                    metrics.prompt_tokens.with_label_values(&[&model]).inc_by(usage.prompt_tokens as u64);
                    metrics.completion_tokens.with_label_values(&[&model]).inc_by(usage.completion_tokens as u64);
                }
            }
            c
        })
        .boxed()
}

/// One choice, read to its end.
pub(crate) struct Collected {
    pub(crate) text: String,
    pub(crate) logprobs: Vec<TokenLogprob>,
    pub(crate) finish: Finish,
    pub(crate) usage: Usage,
    pub(crate) prompt: Option<Vec<TokenLogprob>>,
}

async fn collect(mut s: ChunkStream) -> Result<Collected, ApiError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(chunk) = s.next().await {
        match chunk? {
            Chunk::Delta { text: t, logprob } => {
                text.push_str(&t);
                logprobs.extend(logprob);
            }
            Chunk::Done { text: t, finish, usage, prompt } => {
                text.push_str(&t);
                return Ok(Collected { text, logprobs, finish, usage, prompt });
            }
        }
    }
    Err(ApiError::internal("the provider ended a choice without finishing it"))
}

/// Every choice read to its end.
pub(crate) async fn collect_all(choices: Vec<ChunkStream>) -> Result<Vec<Collected>, ApiError> {
    futures_util::future::join_all(choices.into_iter().map(collect)).await.into_iter().collect()
}

/// Usage of a whole request: each distinct prompt once (`n` choices share
/// it, as OpenAI counts), every choice's completion.
pub(crate) fn total_usage(usages: &[Usage], n: usize) -> Value {
    let prompt: usize = usages.iter().step_by(n.max(1)).map(|u| u.prompt_tokens).sum();
    let completion: usize = usages.iter().map(|u| u.completion_tokens).sum();
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

pub(crate) fn chat_logprob(t: &TokenLogprob) -> Value {
    json!({
        "token": t.token,
        "logprob": t.logprob.unwrap_or(0.0),
        "bytes": t.bytes,
        "top_logprobs": t.top.iter().map(|(tok, b, lp)| json!({"token": tok, "logprob": lp, "bytes": b})).collect::<Vec<_>>(),
    })
}

/// Choices merged into one stream of (choice index, chunk), minus deltas
/// that carry nothing to send (text held back, no logprob asked).
pub(crate) fn merged(choices: Vec<ChunkStream>) -> impl futures_util::Stream<Item = (usize, Result<Chunk, ApiError>)> {
    stream::select_all(choices.into_iter().enumerate().map(|(i, s)| s.map(move |c| (i, c)).boxed())).filter(|(_, c)| {
        let empty = matches!(c, Ok(Chunk::Delta { text, logprob: None }) if text.is_empty());
        std::future::ready(!empty)
    })
}

/// The next of `events`, or None once `client`'s receiver is gone. A
/// producer that only noticed the client at its next send would keep a
/// queued or prefilling request (and its engine slot) until its first
/// token; this notices while it waits.
pub(crate) async fn next_for<S, V>(events: &mut S, client: &mpsc::Sender<V>) -> Option<S::Item>
where
    S: futures_util::Stream + Unpin,
{
    tokio::select! {
        item = events.next() => item,
        () = client.closed() => None,
    }
}

/// The values a producer task sends, as a stream. When the stream is
/// dropped (client gone, shutdown), the task's next send fails and it
/// returns, dropping its choices, which cancels them in the engine.
pub(crate) fn produced<F, Fut>(produce: F) -> ChunkValues
where
    F: FnOnce(mpsc::Sender<Result<Value, ApiError>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(produce(tx));
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) }).boxed()
}
