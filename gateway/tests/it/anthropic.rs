//! Chat completions routed to Anthropic (a fake Messages API on loopback):
//! request translation, answers, streamed text and parallel tool calls,
//! and 529 overloaded falling back.

use gateway::config::ProviderKind;
use serde_json::{json, Value};

use crate::fake_anthropic::{FakeAnthropic, TEXT, TOOLS};
use crate::fake_openai::{FakeOpenAi, Fault};
use crate::routing::{chat, content, events, gateway_for, header, provider, read_until_first_word, route};
use crate::support::{post_json, start_recorded, start_routed, Server};

async fn claude_first() -> (Server, FakeAnthropic, FakeOpenAi) {
    let (claude, groq) = (FakeAnthropic::start().await, FakeOpenAi::start("groq").await);
    let mut p = provider("claude", &claude.base_url);
    p.kind = ProviderKind::Anthropic;
    let gw = gateway_for(
        vec![p, provider("groq", &groq.base_url)],
        vec![route(&[("claude", "claude-haiku-4-5"), ("groq", "llama-3.1-8b-instant")])],
    );
    (start_routed(gw).await, claude, groq)
}

#[tokio::test]
async fn a_chat_request_becomes_a_messages_request_and_back() {
    let (s, claude, groq) = claude_first().await;
    let body = json!({
        "model": "tweet-writer",
        "messages": [
            {"role": "system", "content": "You write tweets."},
            {"role": "user", "content": "About tea."},
            {"role": "user", "content": [{"type": "text", "text": "Short."},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "Go."}
        ],
        "stop": "###", "temperature": 1.5, "user": "u-42"
    });
    let res = post_json(&format!("{}/chat/completions", s.v1()), &body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "claude");
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], TEXT.concat());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], json!({"prompt_tokens": 25, "completion_tokens": 7, "total_tokens": 32,
                                  "prompt_tokens_details": {"cached_tokens": 5}}));
    let (headers, sent) = claude.seen().pop().expect("a request");
    assert_eq!(headers.get("x-api-key").and_then(|h| h.to_str().ok()), Some("sk-test-claude"));
    assert_eq!(headers.get("anthropic-version").and_then(|h| h.to_str().ok()), Some("2023-06-01"));
    assert!(headers.get("authorization").is_none());
    assert_eq!(sent["model"], "claude-haiku-4-5");
    assert_eq!(sent["system"], "You write tweets.");
    assert_eq!(sent["max_tokens"], 1024, "required by Anthropic: the provider's default");
    assert_eq!(sent["stop_sequences"], json!(["###"]));
    assert_eq!(sent["temperature"], 1.0);
    assert_eq!(sent["metadata"]["user_id"], "u-42");
    // Consecutive user turns merge; roles alternate.
    let roles: Vec<&str> = sent["messages"].as_array().expect("messages").iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(sent["messages"][0]["content"][2], json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}));
    assert!(groq.seen().is_empty());
}

#[tokio::test]
async fn tools_round_trip_and_stream_as_parallel_tool_calls() {
    let (s, claude, _groq) = claude_first().await;
    let tools = json!([
        {"type": "function", "function": {"name": "post_tweet", "description": "Post it", "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "schedule", "parameters": {"type": "object"}}}
    ]);
    let body = json!({
        "model": "tweet-writer", "tools": tools, "tool_choice": "required", "parallel_tool_calls": true, "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role": "user", "content": "Post about tea."},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_00", "type": "function", "function": {"name": "post_tweet", "arguments": "{\"text\": \"hi\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_00", "content": "posted"}
        ]
    });
    let res = post_json(&format!("{}/chat/completions", s.v1()), &body).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("body");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk json"))
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, TEXT.concat());
    // Each tool call: its id and name once, then its arguments in pieces, by index.
    for (i, (id, name, parts)) in TOOLS.iter().enumerate() {
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
            .flatten()
            .filter(|t| t["index"] == i)
            .collect();
        assert_eq!(calls[0]["id"], *id);
        assert_eq!(calls[0]["function"]["name"], *name);
        let args: String = calls.iter().filter_map(|t| t["function"]["arguments"].as_str()).collect();
        assert_eq!(args, parts.concat());
    }
    let finish: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["tool_calls"]);
    let last = chunks.last().expect("usage chunk");
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 7);

    let (_, sent) = claude.seen().pop().expect("request");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));
    assert_eq!(sent["tools"][0], json!({"name": "post_tweet", "description": "Post it", "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}}}));
    assert_eq!(sent["messages"][1]["content"][0], json!({"type": "tool_use", "id": "toolu_00", "name": "post_tweet", "input": {"text": "hi"}}));
    assert_eq!(sent["messages"][2], json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_00", "content": "posted"}]}));
}

#[tokio::test]
async fn overloaded_claude_falls_back() {
    let (s, claude, groq) = claude_first().await;
    claude.overload_next(1);
    let res = post_json(&format!("{}/chat/completions", s.v1()), &json!({"model": "tweet-writer", "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    assert_eq!(header(&res, "x-starling-attempts"), "2");
    assert_eq!(groq.seen().len(), 1);
}

/// `(event, data)` pairs of an Anthropic event stream.
fn anthropic_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = e.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_owned(), serde_json::from_str(data).expect("event json")))
        })
        .collect()
}

#[tokio::test]
async fn anthropic_clients_get_messages_with_tool_use_through_any_route() {
    let (s, _claude, _groq) = claude_first().await;
    let url = format!("{}/messages", s.v1());
    let body = json!({
        "model": "tweet-writer", "max_tokens": 64, "stream": true,
        "tools": [{"name": "post_tweet", "input_schema": {"type": "object"}}, {"name": "schedule", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Post about tea."}]
    });
    let res = post_json(&url, &body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "claude");
    let ev = anthropic_events(&res.text().await.expect("body"));
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let text: String = ev.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, TEXT.concat());
    for (i, (id, name, parts)) in TOOLS.iter().enumerate() {
        let block = ev
            .iter()
            .find(|(n, d)| n == "content_block_start" && d["content_block"]["id"] == *id)
            .map(|(_, d)| d.clone())
            .expect("tool block start");
        assert_eq!(block["content_block"]["name"], *name, "tool {i}");
        let index = block["index"].clone();
        let json: String = ev
            .iter()
            .filter(|(n, d)| n == "content_block_delta" && d["index"] == index)
            .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(json, parts.concat());
    }
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 7);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 5);

    // Errors come in Anthropic's shape.
    let res = post_json(&url, &json!({"model": "tweet-writer", "messages": []})).await;
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

/// A stream that breaks after its first words is taken up by a later
/// candidate that continues prefills (Claude): the client reads one
/// unbroken answer whose usage counts both parts, and each provider gets
/// a usage record of its own, priced at its own rates.
#[tokio::test]
async fn a_stream_broken_midway_is_finished_by_a_candidate_that_continues_it() {
    let (openai, claude) = (FakeOpenAi::start("openai").await, FakeAnthropic::start().await);
    let mut c = provider("claude", &claude.base_url);
    c.kind = ProviderKind::Anthropic;
    let gw = gateway_for(
        vec![provider("openai", &openai.base_url), c],
        vec![route(&[("openai", "gpt-4o-mini"), ("claude", "claude-haiku-4-5")])],
    );
    let db = crate::usage::TempDb::new();
    let mut s = start_recorded(|_| {}, |_| {}, gw.clone(), Some(&db.url())).await;
    openai.fail_next([Fault::ResetAfterFirstChunk]);
    let body = chat(json!({"stream": true, "stream_options": {"include_usage": true}, "max_tokens": 50}));
    let mut res = post_json(&format!("{}/chat/completions", s.v1()), &body).await;
    assert_eq!(header(&res, "x-starling-provider"), "openai");
    let first_word = openai.answer_words()[0].clone();
    let mut text = read_until_first_word(&mut res, &openai).await;
    assert!(claude.seen().is_empty(), "nothing is resumed before the break");
    openai.cut();
    while let Some(chunk) = res.chunk().await.expect("read") {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ev = events(&text);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    assert_eq!(content(&ev), format!("{first_word}{}", TEXT.concat()));
    let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).expect("chunk")).collect();
    // One stream as the client sees it: one id and model, one role chunk.
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"] && c["model"] == chunks[0]["model"]), "{text}");
    assert_eq!(chunks.iter().filter(|c| c["choices"][0]["delta"]["role"].is_string()).count(), 1, "{text}");
    assert_eq!(chunks.iter().filter(|c| c["choices"][0]["finish_reason"].is_string()).count(), 1, "{text}");
    // Claude was asked to continue the answer so far, within what is left of max_tokens.
    let (_, sent) = claude.seen().pop().expect("claude asked");
    let last = sent["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
    assert_eq!(last, json!({"role": "assistant", "content": [{"type": "text", "text": first_word}]}));
    assert_eq!(sent["max_tokens"], 49);
    // Claude's 7 output tokens and the word before the break.
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(usage["completion_tokens"], 8, "{usage}");
    assert_eq!(usage["total_tokens"].as_i64(), usage["prompt_tokens"].as_i64().map(|p| p + 8), "{usage}");

    s.shutdown();
    s.done.take().expect("serve task").await.expect("join").expect("serve");
    let s = start_recorded(|_| {}, |_| {}, gw, Some(&db.url())).await;
    let by: Value = reqwest::get(format!("{}/usage?group_by=provider", s.v1())).await.expect("usage").json().await.expect("json");
    let group = |name: &str| by["data"].as_array().and_then(|a| a.iter().find(|g| g["group"] == name)).cloned().unwrap_or_default();
    let (o, c) = (group("openai"), group("claude"));
    // OpenAI: the word it sent, an estimated prompt, and why it ended.
    assert_eq!((o["requests"].as_i64(), o["errors"].as_i64(), o["completion_tokens"].as_i64()), (Some(1), Some(1), Some(1)), "{by}");
    assert!(o["prompt_tokens"].as_i64().is_some_and(|p| p > 0), "{by}");
    // Claude: what it reported for its part.
    assert_eq!((c["requests"].as_i64(), c["errors"].as_i64(), c["completion_tokens"].as_i64()), (Some(1), Some(0), Some(7)), "{by}");
    assert_eq!((c["prompt_tokens"].as_i64(), c["cached_tokens"].as_i64()), (Some(25), Some(5)), "{by}");
    assert!(c["cost_usd"].as_f64().is_some_and(|x| x > 0.0) && o["cost_usd"].as_f64().is_some_and(|x| x > 0.0), "{by}");
}

/// `/v1/messages` checks types as strictly as chat does, answering in
/// Anthropic's error shape with the field named.
#[tokio::test]
async fn messages_with_wrong_types_are_400_naming_the_field() {
    let s = crate::support::default_server().await;
    let url = format!("{}/messages", s.v1());
    let base = || json!({"model": crate::support::MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]});
    let cases = [
        ("stream", json!("x"), "stream"),
        ("system", json!(5), "system"),
        ("messages", json!([{"role": "user", "content": [{"type": "text", "text": 5}]}]), "messages[0].content[0].text"),
        ("messages", json!([{"role": "user", "content": 7}]), "messages[0].content"),
        ("tools", json!("x"), "tools"),
        ("tools", json!([{"name": 3, "input_schema": {}}]), "tools[0].name"),
        ("temperature", json!("warm"), "temperature"),
        ("stop_sequences", json!(["ok", 1]), "stop_sequences[1]"),
        ("max_tokens", json!("many"), "max_tokens"),
    ];
    for (field, value, path) in cases {
        let mut body = base();
        body[field] = value.clone();
        let res = post_json(&url, &body).await;
        assert_eq!(res.status(), 400, "{field}: {value}");
        let v: Value = res.json().await.expect("json");
        assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("invalid_request_error")), "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("Invalid '{path}': ")), "{field}: {message}");
    }
    // Right types still pass.
    let mut ok = base();
    ok["stream"] = json!(false);
    ok["system"] = json!([{"type": "text", "text": "Be brief."}]);
    assert_eq!(post_json(&url, &ok).await.status(), 200);
}
