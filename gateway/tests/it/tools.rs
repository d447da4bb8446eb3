//! Tool calling on the local model over HTTP: calls in OpenAI's shape,
//! arguments valid under their function's schema (checked by an
//! independent validator), streamed as OpenAI streams them, and a round
//! trip with the results sent back.

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{default_server, post_json, MODEL};

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": false})
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": weather_schema()}},
        {"type": "function", "function": {"name": "post_tweet", "description": "Post a tweet", "parameters": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 100}}, "required": ["text"]}}}
    ])
}

fn body(extra: Value) -> Value {
    let mut b = json!({
        "model": MODEL, "max_tokens": 160, "seed": 5, "temperature": 0.7, "tools": tools(),
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
    });
    for (k, v) in extra.as_object().expect("object") {
        b[k] = v.clone();
    }
    b
}

/// Every tool call of a chat stream, reassembled as OpenAI's clients do
/// (by `index`), and the finish reason.
async fn streamed_calls(res: reqwest::Response) -> (Vec<Value>, String) {
    assert_eq!(res.status(), 200);
    let mut text = String::new();
    let mut bytes = res.bytes_stream();
    while let Some(b) = bytes.next().await {
        text.push_str(&String::from_utf8_lossy(&b.expect("chunk")));
    }
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = String::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|l| *l != "[DONE]") {
        let v: Value = serde_json::from_str(line).expect("chunk");
        let Some(c) = v["choices"].get(0) else { continue };
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_owned();
        }
        for d in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = d["index"].as_u64().expect("index") as usize;
            if i == calls.len() {
                assert!(d["id"].as_str().is_some_and(|id| id.starts_with("call_")), "{d}");
                assert_eq!(d["type"], "function");
                calls.push(json!({"id": d["id"], "type": "function", "function": {"name": d["function"]["name"], "arguments": ""}}));
            }
            let args = d["function"]["arguments"].as_str().unwrap_or_default();
            let slot = &mut calls[i]["function"]["arguments"];
            *slot = json!(format!("{}{args}", slot.as_str().unwrap_or_default()));
        }
    }
    (calls, finish)
}

fn without_ids(calls: &[Value]) -> Vec<Value> {
    calls.iter().map(|c| c["function"].clone()).collect()
}

#[tokio::test]
async fn required_calls_have_valid_arguments_streamed_or_not() {
    let s = default_server().await;
    let url = format!("{}/chat/completions", s.v1());
    let v: Value = post_json(&url, &body(json!({"tool_choice": "required"}))).await.json().await.expect("json");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().expect("tool_calls").clone();
    assert!(!calls.is_empty());
    let weather = jsonschema::validator_for(&weather_schema()).expect("schema");
    for c in &calls {
        assert!(c["id"].as_str().is_some_and(|id| id.starts_with("call_")), "{c}");
        let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().expect("arguments string")).expect("arguments JSON");
        match c["function"]["name"].as_str() {
            Some("get_weather") => assert!(weather.is_valid(&args), "{args}"),
            Some("post_tweet") => assert!(args["text"].is_string(), "{args}"),
            other => panic!("unknown tool {other:?}"),
        }
    }
    let (streamed, finish) = streamed_calls(post_json(&url, &body(json!({"tool_choice": "required", "stream": true}))).await).await;
    assert_eq!((without_ids(&streamed), finish.as_str()), (without_ids(&calls), "tool_calls"));
}

#[tokio::test]
async fn a_named_function_is_called_once_and_none_calls_nothing() {
    let s = default_server().await;
    let url = format!("{}/chat/completions", s.v1());
    let named = json!({"type": "function", "function": {"name": "post_tweet"}});
    for seed in 0..3 {
        let v: Value = post_json(&url, &body(json!({"tool_choice": named, "parallel_tool_calls": false, "seed": seed}))).await.json().await.expect("json");
        let calls = v["choices"][0]["message"]["tool_calls"].as_array().expect("calls").clone();
        assert_eq!(calls.len(), 1, "{v}");
        assert_eq!(calls[0]["function"]["name"], "post_tweet");
    }
    let v: Value = post_json(&url, &body(json!({"tool_choice": "none", "max_tokens": 20}))).await.json().await.expect("json");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none(), "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string());
}

/// The results go back as `tool` messages after the assistant's calls; the
/// model answers in text (or calls again), and a conversation that breaks
/// the rules is a 400 naming the message.
#[tokio::test]
async fn results_go_back_and_the_model_answers() {
    let s = default_server().await;
    let url = format!("{}/chat/completions", s.v1());
    let v: Value = post_json(&url, &body(json!({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}))).await.json().await.expect("json");
    let assistant = v["choices"][0]["message"].clone();
    let id = assistant["tool_calls"][0]["id"].as_str().expect("id").to_owned();
    let messages = json!([
        {"role": "user", "content": "What is the weather in Paris?"},
        assistant,
        {"role": "tool", "tool_call_id": id, "content": "{\"temperature\": 18, \"sky\": \"clear\"}"},
    ]);
    let res = post_json(&url, &body(json!({"messages": messages, "max_tokens": 40}))).await;
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.expect("json");
    let m = &answer["choices"][0]["message"];
    assert!(m["content"].is_string() || m["tool_calls"].is_array(), "{answer}");

    let bad = json!([{"role": "user", "content": "Hi"}, {"role": "tool", "content": "18"}]);
    let res = post_json(&url, &body(json!({"messages": bad}))).await;
    let err: Value = res.json().await.expect("json");
    assert_eq!(err["error"]["param"], "messages[1].tool_call_id", "{err}");
    let res = post_json(&url, &body(json!({"tools": [{"type": "function", "function": {"name": "bad name"}}]}))).await;
    let err: Value = res.json().await.expect("json");
    assert_eq!(err["error"]["param"], "tools[0].function.name", "{err}");
}
