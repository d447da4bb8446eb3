//! A fake of Anthropic's Messages API on 127.0.0.1:0: the documented JSON
//! message, the SSE event sequence (message_start, content_block_start,
//! ping, content_block_delta with text_delta / input_json_delta,
//! content_block_stop, message_delta, message_stop), error bodies
//! (`{"type": "error", "error": {"type", "message"}}`) and 529 overloaded.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Default)]
struct Inner {
    overloaded_next: Mutex<u32>,
    seen: Mutex<Vec<(HeaderMap, Value)>>,
}

/// A running fake.
#[derive(Clone)]
pub struct FakeAnthropic {
    pub base_url: String,
    inner: Arc<Inner>,
}

/// The text of every answer.
pub const TEXT: [&str; 3] = ["Tea", " is", " ready."];
/// The two tool calls of an answer to a request with tools.
pub const TOOLS: [(&str, &str, [&str; 2]); 2] = [
    ("toolu_01", "post_tweet", ["{\"text\": \"Tea", " time\"}"]),
    ("toolu_02", "schedule", ["{\"at\": ", "\"09:00\"}"]),
];

impl FakeAnthropic {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new().route("/v1/messages", axum::routing::post(messages)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, inner }
    }

    /// The next `n` requests get 529 overloaded_error.
    pub fn overload_next(&self, n: u32) {
        *self.inner.overloaded_next.lock().expect("lock") = n;
    }

    /// (headers, body) of every request.
    pub fn seen(&self) -> Vec<(HeaderMap, Value)> {
        self.inner.seen.lock().expect("lock").clone()
    }
}

fn error(status: u16, kind: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).expect("status");
    (status, axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}}))).into_response()
}

async fn messages(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    if headers.get("anthropic-version").is_none() {
        return error(400, "invalid_request_error", "anthropic-version: header is required");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid_request_error", "invalid JSON");
    };
    inner.seen.lock().expect("lock").push((headers, body.clone()));
    {
        let mut o = inner.overloaded_next.lock().expect("lock");
        if *o > 0 {
            *o -= 1;
            return error(529, "overloaded_error", "Overloaded");
        }
    }
    if body["max_tokens"].as_u64().is_none() {
        return error(400, "invalid_request_error", "max_tokens: Field required");
    }
    let model = body["model"].clone();
    let with_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let usage = json!({"input_tokens": 20, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0, "output_tokens": 7});
    if body["stream"] != true {
        let mut content = vec![json!({"type": "text", "text": TEXT.concat()})];
        if with_tools {
            for (id, name, parts) in TOOLS {
                let input: Value = serde_json::from_str(&parts.concat()).expect("tool json");
                content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
            }
        }
        return axum::Json(json!({
            "id": "msg_01fake", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": if with_tools { "tool_use" } else { "end_turn" }, "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut s = ev("message_start", json!({"type": "message_start", "message": {
        "id": "msg_01fake", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0, "output_tokens": 1}}}));
    s += &ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
    s += &ev("ping", json!({"type": "ping"}));
    for t in TEXT {
        s += &ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}));
    }
    s += &ev("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
    if with_tools {
        for (i, (id, name, parts)) in TOOLS.iter().enumerate() {
            let index = i + 1;
            s += &ev("content_block_start", json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}));
            for p in parts {
                s += &ev("content_block_delta", json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": p}}));
            }
            s += &ev("content_block_stop", json!({"type": "content_block_stop", "index": index}));
        }
    }
    s += &ev("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": if with_tools { "tool_use" } else { "end_turn" }, "stop_sequence": null},
        "usage": {"output_tokens": 7}}));
    s += &ev("message_stop", json!({"type": "message_stop"}));
    ([("content-type", "text/event-stream")], s).into_response()
}
