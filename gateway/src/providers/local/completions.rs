//! A legacy completion on the local models: prompts (text or token ids) to
//! choices, choices to a `text_completion` or its chunks, with `echo` and
//! legacy logprobs.

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::choices::{collect_all, merged, next_for, open_choices, produced, total_usage};
use super::generator::{Chunk, Input, TokenLogprob, Usage};
use super::LocalChat;
use crate::api::openai::{from_value, CompletionsRequest};
use crate::error::ApiError;
use crate::providers::{Call, Reply};

impl LocalChat {
    pub(super) async fn completions(&self, call: Call) -> Result<Reply, ApiError> {
        let frame = self.frame(&call);
        let req: CompletionsRequest = from_value(&Value::Object(call.body))?;
        let shape = req.sampling.shape()?;
        let reqs = req.to_completions()?;
        let generator = self.generators()?.resolve(&call.model)?.clone();
        // Echo needs each prompt's text: the request's own, or its tokens
        // decoded (`prompts` stays empty without echo).
        let mut prompts = Vec::with_capacity(reqs.len());
        for r in reqs.iter().filter(|_| req.echo) {
            prompts.push(match &r.input {
                Input::Text(t) => t.clone(),
                Input::Tokens(t) => generator.detokenize(&r.model, t).await?,
                Input::Chat(_) | Input::ChatContinued(_) => String::new(),
            });
        }
        let want_logprobs = reqs.first().is_some_and(|r| r.logprobs.is_some());
        let (echo, n) = (req.echo, shape.n);
        let choices = open_choices(&self.metrics, &generator, reqs, n).await?;

        if !call.stream {
            let mut out = Vec::new();
            let mut usages = Vec::new();
            for (i, c) in collect_all(choices).await?.into_iter().enumerate() {
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
            return Ok(Reply::Json(frame.with(Value::Array(out), total_usage(&usages, n))));
        }

        let total = choices.len();
        Ok(Reply::Stream(produced(move |tx| async move {
            let chunk = |i: usize, text: String, lp: Option<Value>, finish: Option<&str>| {
                frame.with(json!([{"index": i, "text": text, "logprobs": lp, "finish_reason": finish}]), Value::Null)
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
            let mut events = merged(choices).boxed();
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
            let _ = tx.send(Ok(frame.with(json!([]), total_usage(&usages, n)))).await;
        })))
    }
}

/// Legacy logprobs over `tokens`, offsets counted from `offset`.
fn legacy_logprobs(tokens: &[TokenLogprob], mut offset: usize) -> Value {
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
