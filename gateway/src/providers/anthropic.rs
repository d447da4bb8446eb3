//! Anthropic's Messages API as a provider: OpenAI chat completions are
//! translated to `POST /v1/messages` and the answers back, streams
//! included.
//!
//! Requests: system and developer messages become `system`; consecutive
//! turns of one role merge (the API wants them alternating); text and
//! image parts become blocks (data URLs as base64 sources, other URLs as
//! URL sources); assistant `tool_calls` become `tool_use` blocks and `tool`
//! messages `tool_result` blocks; `stop` becomes `stop_sequences`;
//! `max_tokens` is required there, so it defaults from the provider
//! config; `tools` and `tool_choice` map to their Anthropic forms.
//!
//! Answers: text blocks join into `content`, `tool_use` blocks become
//! `tool_calls`, `stop_reason` maps to `finish_reason`, and usage counts
//! cache reads and writes as prompt tokens (cache reads as
//! `cached_tokens`). Streams: `message_start`, `content_block_start`,
//! `content_block_delta` (`text_delta`, `input_json_delta`),
//! `content_block_stop`, `message_delta`, `message_stop`, `ping` and
//! `error` events become OpenAI chunks, tool calls indexed in the order
//! they start.

use axum::http::StatusCode;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Map, Value};

use crate::config::ProviderConfig;
use crate::error::ApiError;
use crate::providers::openai_compatible::{transport_error, Auth, Endpoint, SetupError};
use crate::providers::{Api, Call, Reply, ChunkValues, Provider};
use crate::providers::sse;

/// The API version this translation speaks.
pub const API_VERSION: &str = "2023-06-01";

/// One Anthropic endpoint.
pub struct Anthropic {
    endpoint: Endpoint,
    default_max_tokens: u64,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic").field("name", &self.endpoint.name).finish()
    }
}

impl Anthropic {
    /// A provider from its config (its key already read from the env), with
    /// a connection pool for each of `threads` HTTP threads.
    pub fn new(cfg: &ProviderConfig, threads: usize) -> Result<Self, SetupError> {
        let endpoint = Endpoint::new(cfg, "messages", Auth::XApiKey, &[("anthropic-version", API_VERSION)], threads)?;
        Ok(Self { endpoint, default_max_tokens: cfg.default_max_tokens })
    }

    async fn respond(&self, call: Call) -> Result<Reply, ApiError> {
        if call.api != Api::Chat {
            // Anthropic retired its text completions API: another candidate
            // of the route may have one.
            let what = if call.api.is_audio() { "audio transcription" } else { "legacy completions" };
            return Err(ApiError::unsupported("model", format!("`{}` (Anthropic) has no {what}; use chat", self.endpoint.name)));
        }
        let body = to_messages(&call.body, self.default_max_tokens, call.stream)?;
        let resp = self.endpoint.post(&body).await?;
        let name = &self.endpoint.name;
        if !call.stream {
            let v = self.endpoint.json(resp).await?;
            return from_message(&v)
                .map(Reply::Json)
                .ok_or_else(|| ApiError::bad_gateway(format!("`{name}` answered something that is not a message")));
        }
        Ok(Reply::Stream(translate_stream(name.clone(), resp)))
    }
}

impl Provider for Anthropic {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn answer(&self, call: Call) -> BoxFuture<'_, Result<Reply, ApiError>> {
        Box::pin(self.respond(call))
    }

    /// The Messages API continues a final assistant turn.
    fn continues_prefill(&self) -> bool {
        true
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

/// OpenAI content (string or parts) as Anthropic blocks.
fn blocks(content: &Value) -> Result<Vec<Value>, ApiError> {
    let parts = match content {
        Value::Null => return Ok(Vec::new()),
        Value::String(s) => return Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts,
        _ => return Err(ApiError::invalid("messages", "a message's content must be a string or an array of parts")),
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match p["type"].as_str() {
            Some("text") => out.push(json!({"type": "text", "text": p["text"].as_str().unwrap_or_default()})),
            Some("image_url") => {
                let url = p["image_url"]["url"].as_str().unwrap_or_default();
                let source = match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
                    Some((media_type, data)) => json!({"type": "base64", "media_type": media_type, "data": data}),
                    None => json!({"type": "url", "url": url}),
                };
                out.push(json!({"type": "image", "source": source}));
            }
            other => {
                return Err(ApiError::unsupported(
                    "messages",
                    format!("content parts of type `{}` cannot be sent to Anthropic", other.unwrap_or("?")),
                ))
            }
        }
    }
    Ok(out)
}

/// An OpenAI chat request as a Messages API request.
pub fn to_messages(body: &Map<String, Value>, default_max_tokens: u64, stream: bool) -> Result<Value, ApiError> {
    let messages = body.get("messages").and_then(Value::as_array).ok_or_else(|| ApiError::invalid("messages", "`messages` must be an array"))?;
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for m in messages {
        let role = m["role"].as_str().unwrap_or_default();
        let (role, content) = match role {
            "system" | "developer" => {
                system.push(text_of(&m["content"]));
                continue;
            }
            "user" => ("user", blocks(&m["content"])?),
            "assistant" => {
                let mut b = blocks(&m["content"])?;
                for tc in m["tool_calls"].as_array().into_iter().flatten() {
                    let args = tc["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
                    b.push(json!({"type": "tool_use", "id": tc["id"], "name": tc["function"]["name"], "input": input}));
                }
                ("assistant", b)
            }
            "tool" => (
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": text_of(&m["content"])})],
            ),
            other => return Err(ApiError::invalid("messages", format!("unknown role `{other}`"))),
        };
        match turns.last_mut() {
            Some((r, b)) if r == role => b.extend(content),
            _ => turns.push((role.to_owned(), content)),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), body.get("model").cloned().unwrap_or(Value::Null));
    out.insert(
        "messages".into(),
        Value::Array(turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect()),
    );
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    let max = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| body.get(*k).and_then(Value::as_u64));
    out.insert("max_tokens".into(), json!(max.unwrap_or(default_max_tokens)));
    for k in ["temperature", "top_p", "top_k"] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            // Anthropic's temperature range is 0..=1 (OpenAI's 0..=2).
            let v = match (k, v.as_f64()) {
                ("temperature", Some(t)) => json!(t.min(1.0)),
                _ => v.clone(),
            };
            out.insert(k.into(), v);
        }
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut tool = json!({"name": f["name"], "input_schema": f.get("parameters").cloned().unwrap_or(json!({"type": "object"}))});
                if let Some(d) = f["description"].as_str() {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::Object(o)) => Some(json!({"type": "tool", "name": o.get("function").map(|f| f["name"].clone())})),
        _ => None,
    };
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if stream {
        out.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// `stop_reason` as `finish_reason`.
fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Anthropic usage as OpenAI usage: cache reads and writes are prompt
/// tokens too; reads are the cached ones.
fn usage(u: &Value) -> Value {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    let prompt = n("input_tokens") + cached + n("cache_creation_input_tokens");
    let completion = n("output_tokens");
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

/// A Messages API answer as a `chat.completion` (None: not a message).
pub fn from_message(v: &Value) -> Option<Value> {
    let content = v["content"].as_array()?;
    let text: String = content.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect();
    let tool_calls: Vec<Value> = content
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| json!({"id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": b["input"].to_string()}}))
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }, "refusal": null});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    Some(json!({
        "id": v["id"], "object": "chat.completion", "created": crate::providers::local::unix_now(), "model": v["model"],
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(v["stop_reason"].as_str().unwrap_or("end_turn"))}],
        "usage": usage(&v["usage"]),
    }))
}

/// Translation state of one stream.
struct Translator {
    id: Value,
    model: Value,
    created: u64,
    usage: Value,
    /// Content block index -> tool call index, for `input_json_delta`.
    tools: Vec<(u64, usize)>,
    finish: Option<&'static str>,
}

impl Translator {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
    }

    /// The chunks one event becomes; Err for an `error` event.
    fn event(&mut self, provider: &str, ev: &sse::Event) -> Result<Vec<Value>, ApiError> {
        let v: Value = serde_json::from_str(&ev.data)
            .map_err(|e| ApiError::bad_gateway(format!("`{provider}` sent a malformed stream event: {e}")))?;
        let kind = ev.event.as_deref().or_else(|| v["type"].as_str()).unwrap_or_default();
        Ok(match kind {
            "message_start" => {
                let m = &v["message"];
                self.id = m["id"].clone();
                self.model = m["model"].clone();
                self.usage = m["usage"].clone();
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let b = &v["content_block"];
                match b["type"].as_str() {
                    Some("tool_use") => {
                        let index = self.tools.len();
                        self.tools.push((v["index"].as_u64().unwrap_or(0), index));
                        let call = json!({"index": index, "id": b["id"], "type": "function",
                                          "function": {"name": b["name"], "arguments": ""}});
                        vec![self.chunk(json!({"tool_calls": [call]}), None)]
                    }
                    Some("text") if b["text"].as_str().is_some_and(|t| !t.is_empty()) => {
                        vec![self.chunk(json!({"content": b["text"]}), None)]
                    }
                    _ => Vec::new(),
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => vec![self.chunk(json!({"content": d["text"]}), None)],
                    Some("input_json_delta") => {
                        let block = v["index"].as_u64().unwrap_or(0);
                        let index = self.tools.iter().find(|(b, _)| *b == block).map_or(0, |(_, i)| *i);
                        let call = json!({"index": index, "function": {"arguments": d["partial_json"]}});
                        vec![self.chunk(json!({"tool_calls": [call]}), None)]
                    }
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                if let Some(out) = v["usage"]["output_tokens"].as_u64() {
                    self.usage["output_tokens"] = json!(out);
                }
                let stop = v["delta"]["stop_reason"].as_str().unwrap_or("end_turn");
                self.finish = Some(finish_reason(stop));
                vec![self.chunk(json!({}), self.finish)]
            }
            "message_stop" => {
                let mut last = self.chunk(json!({}), None);
                last["choices"] = json!([]);
                last["usage"] = usage(&self.usage);
                vec![last]
            }
            "error" => {
                let e = &v["error"];
                let status = if e["type"] == "overloaded_error" { StatusCode::from_u16(529) } else { Ok(StatusCode::BAD_GATEWAY) };
                let status = status.unwrap_or(StatusCode::BAD_GATEWAY);
                return Err(crate::providers::openai_compatible::error_from_body(provider, status, &v, None));
            }
            // ping, content_block_stop, and event types added later.
            _ => Vec::new(),
        })
    }
}

/// An Anthropic event stream as OpenAI chunks; the usage chunk comes at
/// `message_stop`, which must arrive (else the stream ends with an error).
fn translate_stream(provider: String, body: crate::providers::upstream::Body) -> ChunkValues {
    let t = Translator {
        id: Value::Null,
        model: Value::Null,
        created: crate::providers::local::unix_now(),
        usage: json!({}),
        tools: Vec::new(),
        finish: None,
    };
    let st = (body, sse::Decoder::default(), std::collections::VecDeque::<Result<Value, ApiError>>::new(), t, provider, false);
    stream::unfold(st, |(mut body, mut dec, mut out, mut t, provider, mut done)| async move {
        loop {
            if let Some(item) = out.pop_front() {
                return Some((item, (body, dec, out, t, provider, done)));
            }
            if done {
                return None;
            }
            let events = match body.next().await {
                Some(Ok(bytes)) => dec.feed(&bytes),
                Some(Err(e)) => {
                    done = true;
                    out.push_back(Err(transport_error(&provider, &e)));
                    continue;
                }
                None => {
                    done = true;
                    let tail = dec.finish();
                    let ended = tail.is_some_and(|e| e.event.as_deref() == Some("message_stop"));
                    if !ended {
                        out.push_back(Err(ApiError::bad_gateway(format!("`{provider}` ended the stream before message_stop"))));
                    }
                    continue;
                }
            };
            for ev in events {
                match t.event(&provider, &ev) {
                    Ok(chunks) => {
                        let stop = ev.event.as_deref() == Some("message_stop");
                        out.extend(chunks.into_iter().map(Ok));
                        if stop {
                            body.end_now();
                            done = true;
                            break;
                        }
                    }
                    Err(e) => {
                        out.push_back(Err(e));
                        done = true;
                        break;
                    }
                }
            }
        }
    })
    .boxed()
}
