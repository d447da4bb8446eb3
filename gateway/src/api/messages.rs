//! `POST /v1/messages`: Anthropic's Messages API inbound, so Anthropic
//! clients use Starling unchanged. The request becomes an OpenAI chat
//! request, is routed like any other (local engine or any provider), and
//! the answer comes back as an Anthropic message or event stream.
//! Translation is the mirror of [`crate::providers::anthropic`].

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Map, Value};

use crate::api::answer::answer;
use crate::error::ApiError;
use crate::providers::{Api, ChunkValues, Reply};
use crate::server::auth::Caller;
use crate::server::body::read_json;
use crate::server::shutdown::until_shutdown;
use crate::server::sse::event_stream;
use crate::server::App;

/// An error in Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug)]
pub struct MessagesError(pub ApiError);

impl From<ApiError> for MessagesError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

/// Anthropic's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The error body Anthropic sends.
pub fn error_body(e: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": error_type(e.status), "message": e.message}})
}

impl IntoResponse for MessagesError {
    fn into_response(self) -> Response {
        let mut res = self.0.clone().into_response();
        *res.body_mut() = axum::body::Body::from(error_body(&self.0).to_string());
        res
    }
}

fn text_blocks(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(b) => b.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

/// What a field of a Messages request must hold.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Bool,
    Number,
    Integer,
    Object,
    Array,
}

impl Kind {
    fn fits(self, v: &Value) -> bool {
        match self {
            Self::Text => v.is_string(),
            Self::Bool => v.is_boolean(),
            Self::Number => v.is_number(),
            Self::Integer => v.is_u64(),
            Self::Object => v.is_object(),
            Self::Array => v.is_array(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Text => "a string",
            Self::Bool => "a boolean",
            Self::Number => "a number",
            Self::Integer => "a non-negative integer",
            Self::Object => "an object",
            Self::Array => "an array",
        }
    }
}

/// 400 naming `path` unless `v` (when present and not null) is `kind`.
fn check(v: Option<&Value>, path: &str, kind: Kind) -> Result<(), ApiError> {
    match v {
        Some(v) if !v.is_null() && !kind.fits(v) => Err(ApiError::invalid(path, format!("must be {}, got {v}", kind.name()))),
        _ => Ok(()),
    }
}

/// Text content: a string, or an array of blocks whose `text` is a string.
fn check_text_or_blocks(v: Option<&Value>, path: &str) -> Result<(), ApiError> {
    match v {
        None | Some(Value::Null | Value::String(_)) => Ok(()),
        Some(Value::Array(blocks)) => {
            for (i, b) in blocks.iter().enumerate() {
                let at = format!("{path}[{i}]");
                check(Some(b), &at, Kind::Object)?;
                check(b.get("type"), &format!("{at}.type"), Kind::Text)?;
                if b["type"] == "text" {
                    check(Some(&b["text"]), &format!("{at}.text"), Kind::Text)?;
                }
            }
            Ok(())
        }
        Some(other) => Err(ApiError::invalid(path, format!("must be a string or an array of content blocks, got {other}"))),
    }
}

/// Every field's type, as strictly as Anthropic checks them (and as chat
/// requests are checked): a wrong type is a 400 naming it, never a guess.
fn check_types(body: &Map<String, Value>) -> Result<(), ApiError> {
    check(body.get("model"), "model", Kind::Text)?;
    check(body.get("max_tokens"), "max_tokens", Kind::Integer)?;
    check(body.get("stream"), "stream", Kind::Bool)?;
    for (field, kind) in [("temperature", Kind::Number), ("top_p", Kind::Number), ("top_k", Kind::Integer), ("metadata", Kind::Object), ("tool_choice", Kind::Object)] {
        check(body.get(field), field, kind)?;
    }
    check_text_or_blocks(body.get("system"), "system")?;
    check(body.get("stop_sequences"), "stop_sequences", Kind::Array)?;
    for (i, s) in body.get("stop_sequences").and_then(Value::as_array).into_iter().flatten().enumerate() {
        check(Some(s), &format!("stop_sequences[{i}]"), Kind::Text)?;
    }
    check(body.get("tools"), "tools", Kind::Array)?;
    for (i, t) in body.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        check(Some(t), &format!("tools[{i}]"), Kind::Object)?;
        check(Some(&t["name"]), &format!("tools[{i}].name"), Kind::Text)?;
        check(t.get("input_schema"), &format!("tools[{i}].input_schema"), Kind::Object)?;
    }
    check(body.get("messages"), "messages", Kind::Array)?;
    for (i, m) in body.get("messages").and_then(Value::as_array).into_iter().flatten().enumerate() {
        check(Some(m), &format!("messages[{i}]"), Kind::Object)?;
        check(Some(&m["role"]), &format!("messages[{i}].role"), Kind::Text)?;
        check_text_or_blocks(m.get("content"), &format!("messages[{i}].content"))?;
    }
    Ok(())
}

/// An Anthropic request as an OpenAI chat request. `stream` as asked.
pub fn to_chat(body: &Map<String, Value>) -> Result<(String, Map<String, Value>, bool), ApiError> {
    check_types(body)?;
    let model = body.get("model").and_then(Value::as_str).ok_or_else(|| ApiError::invalid("model", "`model` is required"))?;
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::invalid("max_tokens", "`max_tokens` is required"))?;
    let turns = body.get("messages").and_then(Value::as_array).ok_or_else(|| ApiError::invalid("messages", "`messages` must be an array"))?;
    let mut messages = Vec::new();
    if let Some(system) = body.get("system").filter(|s| !s.is_null()) {
        messages.push(json!({"role": "system", "content": text_blocks(system)}));
    }
    for m in turns {
        let role = m["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(ApiError::invalid("messages", format!("unknown role `{role}`")));
        }
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(b) => b.clone(),
            _ => return Err(ApiError::invalid("messages", "content must be a string or an array of blocks")),
        };
        let mut parts = Vec::new();
        let mut tool_calls = Vec::new();
        for b in &blocks {
            match b["type"].as_str() {
                Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
                Some("image") => {
                    let s = &b["source"];
                    let url = match s["type"].as_str() {
                        Some("base64") => format!("data:{};base64,{}", s["media_type"].as_str().unwrap_or("image/png"), s["data"].as_str().unwrap_or_default()),
                        _ => s["url"].as_str().unwrap_or_default().to_owned(),
                    };
                    parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                }
                Some("tool_use") => tool_calls.push(json!({"id": b["id"], "type": "function",
                    "function": {"name": b["name"], "arguments": b["input"].to_string()}})),
                Some("tool_result") => messages.push(json!({"role": "tool", "tool_call_id": b["tool_use_id"], "content": text_blocks(&b["content"])})),
                other => {
                    return Err(ApiError::unsupported("messages", format!("content blocks of type `{}` are not supported", other.unwrap_or("?"))))
                }
            }
        }
        if parts.is_empty() && tool_calls.is_empty() {
            continue;
        }
        // Plain text stays a string (what every OpenAI-side provider takes).
        let content = if parts.iter().all(|p| p["type"] == "text") {
            Value::String(parts.iter().filter_map(|p| p["text"].as_str()).collect())
        } else {
            Value::Array(parts)
        };
        let mut msg = json!({"role": role, "content": content});
        if !tool_calls.is_empty() {
            msg["tool_calls"] = Value::Array(tool_calls);
        }
        messages.push(msg);
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(max_tokens));
    for k in ["temperature", "top_p", "top_k"] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(stop) = body.get("stop_sequences").filter(|v| !v.is_null()) {
        out.insert("stop".into(), stop.clone());
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]}}))
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(c) = body.get("tool_choice") {
        let choice = match c["type"].as_str() {
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": c["name"]}}),
            _ => json!("auto"),
        };
        out.insert("tool_choice".into(), choice);
        if c["disable_parallel_tool_use"] == true {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(user) = body.get("metadata").and_then(|m| m["user_id"].as_str()) {
        out.insert("user".into(), json!(user));
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if stream {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok((model.to_owned(), out, stream))
}

fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn anthropic_usage(u: &Value) -> Value {
    let cached = u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    json!({"input_tokens": prompt.saturating_sub(cached), "output_tokens": u["completion_tokens"].as_u64().unwrap_or(0),
           "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0})
}

fn message_id(v: &Value) -> String {
    let id = v["id"].as_str().unwrap_or("unknown");
    if id.starts_with("msg_") { id.to_owned() } else { format!("msg_{id}") }
}

/// A `chat.completion` as an Anthropic message.
pub fn to_message(v: &Value, model: &str) -> Value {
    let choice = &v["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = msg["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for tc in msg["tool_calls"].as_array().into_iter().flatten() {
        let input: Value = tc["function"]["arguments"].as_str().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(json!({}));
        content.push(json!({"type": "tool_use", "id": tc["id"], "name": tc["function"]["name"], "input": input}));
    }
    json!({
        "id": message_id(v), "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")), "stop_sequence": null,
        "usage": anthropic_usage(&v["usage"]),
    })
}

/// Which block is open in the translated stream.
#[derive(PartialEq)]
enum Open {
    None,
    Text(usize),
    Tool(usize, u64),
}

struct Events {
    model: String,
    started: bool,
    open: Open,
    blocks: usize,
    stop: &'static str,
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

impl Events {
    fn close(&mut self, out: &mut String) {
        match self.open {
            Open::Text(i) | Open::Tool(i, _) => out.push_str(&event("content_block_stop", json!({"type": "content_block_stop", "index": i}))),
            Open::None => {}
        }
        self.open = Open::None;
    }

    /// The events one OpenAI chunk becomes.
    fn chunk(&mut self, v: &Value) -> String {
        let mut out = String::new();
        if !self.started {
            self.started = true;
            let m = json!({"id": message_id(v), "type": "message", "role": "assistant", "model": self.model, "content": [],
                           "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}});
            out.push_str(&event("message_start", json!({"type": "message_start", "message": m})));
        }
        let choice = &v["choices"][0];
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Open::Text(_)) {
                self.close(&mut out);
                self.open = Open::Text(self.blocks);
                out.push_str(&event("content_block_start", json!({"type": "content_block_start", "index": self.blocks, "content_block": {"type": "text", "text": ""}})));
                self.blocks += 1;
            }
            if let Open::Text(i) = self.open {
                out.push_str(&event("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": t}})));
            }
        }
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let k = tc["index"].as_u64().unwrap_or(0);
            if !matches!(self.open, Open::Tool(_, open) if open == k) {
                self.close(&mut out);
                self.open = Open::Tool(self.blocks, k);
                out.push_str(&event("content_block_start", json!({"type": "content_block_start", "index": self.blocks,
                    "content_block": {"type": "tool_use", "id": tc["id"], "name": tc["function"]["name"], "input": {}}})));
                self.blocks += 1;
            }
            if let (Open::Tool(i, _), Some(args)) = (&self.open, tc["function"]["arguments"].as_str().filter(|a| !a.is_empty())) {
                out.push_str(&event("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": args}})));
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.stop = stop_reason(f);
        }
        // The usage chunk (always last from every provider) ends the message.
        if v["choices"].as_array().is_some_and(Vec::is_empty) && !v["usage"].is_null() {
            self.close(&mut out);
            out.push_str(&event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": self.stop, "stop_sequence": null},
                "usage": anthropic_usage(&v["usage"])})));
            out.push_str(&event("message_stop", json!({"type": "message_stop"})));
        }
        out
    }
}

/// OpenAI chunks as Anthropic's event stream; a failure becomes an
/// `error` event.
pub fn to_events(chunks: ChunkValues, model: String) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::convert::Infallible>> {
    let ev = Events { model, started: false, open: Open::None, blocks: 0, stop: "end_turn" };
    stream::unfold((chunks, ev, false), |(mut chunks, mut ev, done)| async move {
        if done {
            return None;
        }
        match chunks.next().await {
            Some(Ok(v)) => Some((Ok(axum::body::Bytes::from(ev.chunk(&v))), (chunks, ev, false))),
            Some(Err(e)) => Some((Ok(axum::body::Bytes::from(event("error", error_body(&e)))), (chunks, ev, true))),
            None => None,
        }
    })
}

/// `POST /v1/messages`: Anthropic clients, routed like chat completions.
pub(crate) async fn anthropic_messages(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, MessagesError> {
    let started = Instant::now();
    let Value::Object(body) = read_json(&app, &headers, body).await? else {
        return Err(ApiError::bad_body("The request body must be a JSON object.").into());
    };
    let (route, chat, stream) = to_chat(&body)?;
    let (reply, source) = answer(&app, &caller, Api::Chat, &route, chat, stream, started).await?;
    let mut res = match reply {
        Reply::Json(v) => Json(to_message(&v, &route)).into_response(),
        // Shutdown ends it with an Anthropic error event, as OpenAI streams get theirs.
        Reply::Stream(s) => event_stream(to_events(until_shutdown(&app, s), route)),
    };
    source.mark(&mut res);
    Ok(res)
}
