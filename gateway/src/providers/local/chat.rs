//! A chat completion on the local models: messages to choices, choices to
//! a `chat.completion` or its chunks.

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::choices::{chat_logprob, collect_all, merged, next_for, open_choices, produced, total_usage};
use super::generator::{Chunk, Finish, Usage};
use super::tool_calls::{self, CallReader};
use super::LocalChat;
use crate::api::openai::{from_value, ChatCompletionRequest};
use crate::api::tools::Tools;
use crate::error::ApiError;
use crate::providers::{Call, Reply};

impl LocalChat {
    pub(super) async fn chat(&self, mut call: Call) -> Result<Reply, ApiError> {
        if call.continuation {
            call.body.insert("continue_final_message".into(), Value::Bool(true));
        }
        let frame = self.frame(&call);
        let req: ChatCompletionRequest = from_value(&Value::Object(call.body))?;
        let shape = req.sampling.shape()?;
        let creq = req.to_completion(self.default_max_tokens)?;
        // Calls are read back only where the grammar made the model write them.
        let reads_calls = creq.tools.as_ref().is_some_and(Tools::may_call);
        let generator = self.generators()?.resolve(&call.model)?.clone();
        let want_logprobs = creq.logprobs.is_some();
        let choices = open_choices(&self.metrics, &generator, vec![creq], shape.n).await?;

        if !call.stream {
            let mut out = Vec::new();
            let mut usages = Vec::new();
            for (i, c) in collect_all(choices).await?.into_iter().enumerate() {
                usages.push(c.usage);
                let mut message = json!({"role": "assistant", "content": c.text, "refusal": null});
                let mut finish = c.finish.as_str();
                if reads_calls {
                    let (content, calls) = tool_calls::read_all(&c.text);
                    message["content"] = json!(content);
                    if !calls.is_empty() {
                        message["tool_calls"] = Value::Array(calls);
                        finish = finish_with_calls(c.finish);
                    }
                }
                out.push(json!({
                    "index": i,
                    "message": message,
                    "logprobs": want_logprobs.then(|| json!({"content": c.logprobs.iter().map(chat_logprob).collect::<Vec<_>>(), "refusal": null})),
                    "finish_reason": finish,
                }));
            }
            return Ok(Reply::Json(frame.with(Value::Array(out), total_usage(&usages, shape.n))));
        }

        let n = choices.len();
        Ok(Reply::Stream(produced(move |tx| async move {
            let delta = |i: usize, d: Value, lp: Option<Value>, finish: Option<&str>| {
                Ok(frame.with(json!([{"index": i, "delta": d, "logprobs": lp, "finish_reason": finish}]), Value::Null))
            };
            for i in 0..n {
                if tx.send(delta(i, json!({"role": "assistant", "content": "", "refusal": null}), None, None)).await.is_err() {
                    return;
                }
            }
            let mut usages = vec![Usage::default(); n];
            let mut readers: Vec<Option<CallReader>> = (0..n).map(|_| reads_calls.then(CallReader::default)).collect();
            let mut events = merged(choices).boxed();
            while let Some((i, c)) = next_for(&mut events, &tx).await {
                let msgs = match c {
                    Ok(Chunk::Delta { text, logprob }) => {
                        let lp = logprob.map(|t| json!({"content": [chat_logprob(&t)], "refusal": null}));
                        match &mut readers[i] {
                            None => vec![delta(i, json!({"content": text}), lp, None)],
                            // A token's logprob goes with the first piece it completed.
                            Some(r) => {
                                let mut lp = lp;
                                r.push(&text).into_iter().map(|p| delta(i, tool_calls::delta(p), lp.take(), None)).collect()
                            }
                        }
                    }
                    Ok(Chunk::Done { text, finish, usage, .. }) => {
                        usages[i] = usage;
                        let mut v = Vec::new();
                        let mut reason = finish.as_str();
                        match &mut readers[i] {
                            None if !text.is_empty() => v.push(delta(i, json!({"content": text}), None, None)),
                            None => {}
                            Some(r) => {
                                let mut pieces = r.push(&text);
                                pieces.extend(r.finish());
                                v.extend(pieces.into_iter().map(|p| delta(i, tool_calls::delta(p), None, None)));
                                if r.called() {
                                    reason = finish_with_calls(finish);
                                }
                            }
                        }
                        v.push(delta(i, json!({}), None, Some(reason)));
                        v
                    }
                    Err(e) => vec![Err(e)],
                };
                for m in msgs {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(Ok(frame.with(json!([]), total_usage(&usages, shape.n)))).await;
        })))
    }
}

/// `finish_reason` of an answer that called tools: `tool_calls`, unless
/// `max_tokens` cut it (then its last call's arguments are incomplete).
fn finish_with_calls(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "tool_calls",
        Finish::Length => "length",
    }
}
