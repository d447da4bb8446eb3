//! Bad input gets OpenAI's error shape with the right status, never a 500.

use async_openai::error::OpenAIError;
use serde_json::{json, Value};

use crate::support::{default_server, long_stream, start, MODEL};

/// Status and error object of a raw request.
async fn send(req: reqwest::RequestBuilder) -> (u16, Value, Option<String>) {
    let res = req.send().await.expect("send");
    let status = res.status().as_u16();
    let retry = res.headers().get("retry-after").map(|v| v.to_str().expect("ascii").to_owned());
    let body: Value = res.json().await.expect("OpenAI-shaped JSON error body");
    let err = body["error"].clone();
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(err["type"].is_string(), "{body}");
    assert!(err.get("param").is_some() && err.get("code").is_some(), "{body}");
    (status, err, retry)
}

fn chat_body(extra: Value) -> Value {
    let mut b = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    for (k, v) in extra.as_object().expect("object") {
        b[k] = v.clone();
    }
    b
}

#[tokio::test]
async fn invalid_fields_are_400_naming_the_field() {
    let s = default_server().await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", s.v1());
    let cases = [
        (json!({"temperature": 5}), "temperature"),
        (json!({"temperature": "hot"}), "temperature"),
        (json!({"n": 1000}), "n"),
        (json!({"max_tokens": 10_000_000}), "max_tokens"),
        (json!({"max_tokens": 0}), "max_completion_tokens"),
        (json!({"top_p": 0}), "top_p"),
        (json!({"presence_penalty": -3}), "presence_penalty"),
        (json!({"logit_bias": {"abc": 1}}), "logit_bias"),
        (json!({"logit_bias": {"99999999": 1}}), "logit_bias"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
        (json!({"logprobs": true, "top_logprobs": 50}), "top_logprobs"),
        (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (json!({"stream_options": {"include_usage": true}}), "stream_options"),
        (json!({"messages": []}), "messages"),
        (json!({"messages": [{"role": "wizard", "content": "x"}]}), "messages[0].role"),
        (json!({"messages": [{"role": "user"}]}), "messages[0].content"),
        (json!({"max_tokens": 1e30}), "max_tokens"),
        (json!({"max_tokens": -1}), "max_tokens"),
    ];
    for (extra, param) in cases {
        let (status, err, _) = send(http.post(&url).json(&chat_body(extra.clone()))).await;
        assert_eq!(status, 400, "{extra}: {err}");
        assert_eq!(err["type"], "invalid_request_error");
        assert_eq!(err["param"], param, "{extra}: {err}");
        // SDKs show the message, not `param`: it names the field first, as OpenAI's do.
        let message = err["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("Invalid '{param}': ")), "{extra}: {message}");
    }
    // A number no integer type holds (serde_json's `json!` cannot build it).
    let body = r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 123456789012345678901234567890}"#;
    let (status, err, _) = send(http.post(&url).header("content-type", "application/json").body(body)).await;
    assert_eq!((status, err["param"].as_str()), (400, Some("max_tokens")), "{err}");
}

#[tokio::test]
async fn unsupported_options_are_refused_not_ignored() {
    let s = default_server().await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", s.v1());
    for (extra, param) in [
        (json!({"functions": [{"name": "f"}]}), "functions"),
        (json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}), "messages[0].content[0].type"),
    ] {
        let (status, err, _) = send(http.post(&url).json(&chat_body(extra.clone()))).await;
        assert_eq!((status, err["code"].as_str()), (400, Some("unsupported")), "{extra}: {err}");
        assert_eq!(err["param"], param);
    }
    // Accepted: text format, text parts, unknown fields.
    let ok = chat_body(json!({
        "response_format": {"type": "text"},
        "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                     {"role": "user", "content": "Hi"}],
        "some_future_field": {"x": 1},
        "user": "u-1"
    }));
    assert_eq!(http.post(&url).json(&ok).send().await.expect("send").status(), 200);
    let suffix = json!({"model": MODEL, "prompt": "Hi", "suffix": "end"});
    let (status, err, _) = send(http.post(format!("{}/completions", s.v1())).json(&suffix)).await;
    assert_eq!((status, err["param"].as_str()), (400, Some("suffix")));
}

#[tokio::test]
async fn hostile_bodies_get_4xx_never_500() {
    let s = start(|_| {}, |c| c.body_limit_bytes = 64 << 10).await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", s.v1());
    let json_post = |body: Vec<u8>| http.post(&url).header("content-type", "application/json").body(body);

    // Past serde_json's nesting limit (128), well under the body limit.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge = chat_body(json!({"messages": [{"role": "user", "content": "x".repeat(100 << 10)}]}));
    // Under the body limit, over the context: tokenized on the blocking
    // pool (a long prompt), refused there.
    let long = chat_body(json!({"messages": [{"role": "user", "content": "tea ".repeat(12 << 10)}]}));
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (json_post(b"{not json".to_vec()), 400),
        (json_post(deep.into_bytes()), 400),
        (json_post(b"{\"model\": \"\xff\xfe\"}".to_vec()), 400),
        (json_post(br#"{"model": "smollm2"}"#.to_vec()), 400),
        (json_post(serde_json::to_vec(&huge).expect("json")), 413),
        (json_post(serde_json::to_vec(&long).expect("json")), 400),
        (http.post(&url).header("content-type", "text/plain").body("{}"), 415),
        (http.post(&url).body("{}"), 415),
        (http.get(&url), 405),
        (http.get(format!("{}/nope", s.v1())), 404),
    ];
    for (req, want) in cases {
        let (status, err, _) = send(req).await;
        assert_eq!(status, want, "{err}");
    }
}

#[tokio::test]
async fn unknown_model_is_404_and_full_engine_is_429_with_retry_after() {
    let s = start(
        |e| {
            e.max_running = 1;
            e.max_waiting = 0;
        },
        |_| {},
    )
    .await;
    let client = s.client();
    let msg = async_openai::types::chat::ChatCompletionRequestUserMessageArgs::default()
        .content("Hi")
        .build()
        .expect("message");
    let req = async_openai::types::chat::CreateChatCompletionRequestArgs::default()
        .model("no-such-model")
        .messages(vec![msg.into()])
        .build()
        .expect("request");
    match client.chat().create(req).await {
        Err(OpenAIError::ApiError(e)) => {
            assert_eq!(e.status_code.as_u16(), 404);
            assert_eq!(e.api_error.code.as_deref(), Some("model_not_found"));
        }
        other => panic!("expected a 404 API error, got {other:?}"),
    }

    // One slot: a running stream holds it, the next request is refused.
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", s.v1());
    let held = long_stream(&s).await;
    assert_eq!(held.status(), 200);
    let (status, err, retry) = send(http.post(&url).json(&chat_body(json!({})))).await;
    assert_eq!(status, 429);
    assert_eq!(err["type"], "rate_limit_error");
    let secs: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!(secs >= 1);
    drop(held);
    let m = reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.expect("text");
    assert!(m.contains("starling_http_rate_limited_total{route=\"/v1/chat/completions\"} 1"), "{m}");
}

/// Model names no route claims go to the local engine, but never into a
/// metric label: clients could grow `/metrics` without bound.
#[tokio::test]
async fn unrouted_model_names_do_not_become_metric_labels() {
    let s = default_server().await;
    let http = reqwest::Client::new();
    for name in ["made-up-model-1", "made-up-model-2"] {
        let body = json!({"model": name, "messages": [{"role": "user", "content": "Hi"}]});
        let (status, err, _) = send(http.post(format!("{}/chat/completions", s.v1())).json(&body)).await;
        assert_eq!((status, err["code"].as_str()), (404, Some("model_not_found")), "{err}");
    }
    let m = reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.expect("text");
    assert!(!m.contains("made-up-model"), "{m}");
    assert!(m.contains(r#"starling_gateway_upstream_attempts_total{model="(unrouted)",outcome="model_not_found",provider="local"} 2"#), "{m}");
}

/// A path that does not decode (invalid UTF-8 after percent-decoding) is a
/// 400 in the API's error shape, not axum's plain text.
#[tokio::test]
async fn an_undecodable_path_is_an_api_error() {
    let s = default_server().await;
    let (status, err, _) = send(reqwest::Client::new().get(format!("{}/models/%FF%FE", s.v1()))).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["type"], "invalid_request_error");
}

/// The status line of what the server answers to raw `request` bytes, the
/// write side then closed (so a body shorter than announced ends there).
async fn raw_status(s: &crate::support::Server, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    tcp.shutdown().await.expect("shutdown write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
}

/// Only size is 413: a body shorter than its Content-Length or a broken
/// chunked encoding is malformed, 400.
#[tokio::test]
async fn malformed_bodies_are_400_and_only_large_ones_413() {
    let s = default_server().await;
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let short = format!("{head}Content-Length: 100\r\n\r\n{{\"model\": \"x\"}}");
    assert_eq!(raw_status(&s, &short).await, "HTTP/1.1 400 Bad Request");
    let chunked = format!("{head}Transfer-Encoding: chunked\r\n\r\n5\r\n{{\"mo\r\nzz\r\n");
    assert_eq!(raw_status(&s, &chunked).await, "HTTP/1.1 400 Bad Request");
    let large = format!("{head}Content-Length: {}\r\n\r\n", 5 << 20);
    assert_eq!(raw_status(&s, &large).await, "HTTP/1.1 413 Payload Too Large");
}

/// A client that never finishes its request's head (slowloris) is cut off
/// after `header_read_timeout_secs`; one that never finishes its body gets
/// 408 after `body_read_timeout_secs`.
#[tokio::test]
async fn half_sent_requests_do_not_hold_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(|_| {}, |c| {
        c.header_read_timeout_secs = 1;
        c.body_read_timeout_secs = 1;
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let within = std::time::Duration::from_secs(20);
    // Half a head, the connection left open: the server closes it.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: appl").await.expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(within, tcp.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the half-sent head still holds its connection");
    // A whole head, a tenth of the body, the connection left open: 408.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":";
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(within, tcp.read(&mut answer)).await.expect("an answer in time").expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}
