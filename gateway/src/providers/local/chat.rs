//! A chat completion on the local models: messages to choices, choices to
//! a `chat.completion` or its chunks.

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::choices::{chat_logprob, collect_all, merged, next_for, open_choices, produced, total_usage};
use super::generator::{Chunk, Usage};
use super::LocalChat;
use crate::api::openai::{from_value, ChatCompletionRequest};
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
        let generator = self.generators()?.resolve(&call.model)?.clone();
        let want_logprobs = creq.logprobs.is_some();
        let choices = open_choices(&self.metrics, &generator, vec![creq], shape.n).await?;

        if !call.stream {
            let mut out = Vec::new();
            let mut usages = Vec::new();
            for (i, c) in collect_all(choices).await?.into_iter().enumerate() {
                usages.push(c.usage);
                out.push(json!({
                    "index": i,
                    "message": {"role": "assistant", "content": c.text, "refusal": null},
                    "logprobs": want_logprobs.then(|| json!({"content": c.logprobs.iter().map(chat_logprob).collect::<Vec<_>>(), "refusal": null})),
                    "finish_reason": c.finish.as_str(),
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
            let mut events = merged(choices).boxed();
            while let Some((i, c)) = next_for(&mut events, &tx).await {
                let msgs = match c {
                    Ok(Chunk::Delta { text, logprob }) => {
                        let lp = logprob.map(|t| json!({"content": [chat_logprob(&t)], "refusal": null}));
                        vec![delta(i, json!({"content": text}), lp, None)]
                    }
                    Ok(Chunk::Done { text, finish, usage, .. }) => {
                        usages[i] = usage;
                        let mut v = Vec::new();
                        if !text.is_empty() {
                            v.push(delta(i, json!({"content": text}), None, None));
                        }
                        v.push(delta(i, json!({}), None, Some(finish.as_str())));
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
