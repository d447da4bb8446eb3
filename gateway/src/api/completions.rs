//! `POST /v1/completions`: legacy completions on the local models.


use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::providers::choices::{next_for, collect_all, merged, open_choices, produced, total_usage};
use crate::error::ApiError;
use crate::providers::generator::{Chunk, TokenLogprob, Usage};
use crate::providers::local::{new_id, unix_now};
use crate::api::openai::CompletionsRequest;
use crate::accounting::usage::{self};
use crate::server::auth::Caller;
use crate::server::body::parse;
use crate::server::shutdown::or_shutdown;
use crate::server::sse::sse;
use crate::server::App;
use crate::api::chat::admit;


/// Legacy logprobs over `tokens`, offsets counted from `offset`.
pub(crate) fn legacy_logprobs(tokens: &[TokenLogprob], mut offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(tokens.len());
    for t in tokens {
        text_offset.push(offset);
        offset += t.token.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| &t.token).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.logprob.map(|_| t.top.iter().map(|(tok, _, lp)| (tok.clone(), json!(lp))).collect::<serde_json::Map<_, _>>())
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

/// Legacy completions: local models only (no routing), but keys, limits
/// and usage records apply as for chat.
pub(crate) async fn completions(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req: CompletionsRequest = parse(&app, &headers, body).await?;
    let shape = req.sampling.shape()?;
    let reqs = req.to_completions()?;
    let estimate: u64 = reqs.iter().map(|r| r.max_tokens as u64 * shape.n as u64).sum();
    let admitted = admit(&app, &caller, &req.model, estimate).await?;
    let mut record = usage::draft(&req.model, caller.0.as_ref().map(|k| k.id.clone()));
    record.provider = "local".into();
    record.model.clone_from(&req.model);
    record.attempts = 1;
    let provider = app.generators()?.resolve(&req.model)?.clone();
    // Echo needs each prompt's text: the request's own, or its tokens decoded
    // (`prompts` stays empty without echo).
    let mut prompts = Vec::with_capacity(reqs.len());
    for r in reqs.iter().filter(|_| req.echo) {
        prompts.push(match &r.input {
            crate::providers::generator::Input::Text(t) => t.clone(),
            crate::providers::generator::Input::Tokens(t) => provider.detokenize(&r.model, t).await?,
            crate::providers::generator::Input::Chat(_) | crate::providers::generator::Input::ChatContinued(_) => String::new(),
        });
    }
    let want_logprobs = reqs.first().is_some_and(|r| r.logprobs.is_some());
    let echo = req.echo;
    let choices = open_choices(&app.0.metrics, &provider, reqs, shape.n).await?;
    let (id, created, model, fp) = (new_id("cmpl"), unix_now(), req.model.clone(), app.0.fingerprint.clone());
    let n = shape.n;

    if !shape.stream {
        let mut out = Vec::new();
        let mut usages = Vec::new();
        for (i, c) in or_shutdown(&app, collect_all(choices)).await?.into_iter().enumerate() {
            usages.push(c.usage);
            let (text, logprobs) = if echo {
                let prompt = &prompts[i / n];
                let mut toks = c.prompt.unwrap_or_default();
                toks.extend(c.logprobs);
                (format!("{prompt}{}", c.text), legacy_logprobs(&toks, 0))
            } else {
                (c.text, legacy_logprobs(&c.logprobs, 0))
            };
            out.push(json!({
                "index": i,
                "text": text,
                "logprobs": want_logprobs.then_some(logprobs),
                "finish_reason": c.finish.as_str(),
            }));
        }
        let v = json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": fp, "choices": out, "usage": total_usage(&usages, n),
        });
        usage::observe(&mut record, &v);
        record.status = 200;
        record.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        app.record(record, &admitted);
        return Ok(Json(v).into_response());
    }

    let total = choices.len();
    // As chat streams do: `usage` on every chunk and a usage chunk last,
    // which `sse` leaves out unless the client asked.
    let chunks = produced(move |tx| async move {
        let chunk = |i: usize, text: String, lp: Option<Value>, finish: Option<&str>| {
            json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": fp,
                "choices": [{"index": i, "text": text, "logprobs": lp, "finish_reason": finish}],
                "usage": null,
            })
        };
        // Running text length per choice, for `text_offset`.
        let mut offsets = vec![0usize; total];
        if echo {
            for (i, off) in offsets.iter_mut().enumerate() {
                let p = prompts[i / n].clone();
                *off = p.len();
                if tx.send(Ok(chunk(i, p, None, None))).await.is_err() {
                    return;
                }
            }
        }
        let mut usages = vec![Usage::default(); total];
        let mut events = merged(choices);
        while let Some((i, c)) = next_for(&mut events, &tx).await {
            let msg = match c {
                Ok(Chunk::Delta { text, logprob }) => {
                    let lp = logprob.map(|t| {
                        let v = legacy_logprobs(std::slice::from_ref(&t), offsets[i]);
                        offsets[i] += t.token.len();
                        v
                    });
                    Ok(chunk(i, text, lp.filter(|_| want_logprobs), None))
                }
                Ok(Chunk::Done { text, finish, usage, .. }) => {
                    usages[i] = usage;
                    Ok(chunk(i, text, None, Some(finish.as_str())))
                }
                Err(e) => Err(e),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
        let v = json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": fp, "choices": [], "usage": total_usage(&usages, n),
        });
        let _ = tx.send(Ok(v)).await;
    });
    let recorder = app.clone();
    Ok(sse(&app, usage::metered(chunks, record, started, move |r| recorder.record(r, &admitted)), shape.include_usage))
}
