//! Structured output on the local model over HTTP: `response_format`,
//! vLLM's `guided_*` on both endpoints, and `x_post`, streamed and not.
//! Outputs are checked by an independent JSON Schema validator and by
//! `post-rules`, never by the code that constrained them.

use futures_util::StreamExt;
use inference::PostRules;
use post_rules::Platform;
use serde_json::{json, Value};

use crate::support::{default_server, post_json, MODEL};

fn product_schema() -> Value {
    test_support::fixture("posts/product.schema.json")
}

fn chat(extra: Value) -> Value {
    let mut b = json!({"model": MODEL, "messages": [{"role": "user", "content": "Describe a new product."}], "max_tokens": 200, "seed": 3, "temperature": 0.8});
    for (k, v) in extra.as_object().expect("object") {
        b[k] = v.clone();
    }
    b
}

/// The text of each choice of an SSE chat stream.
async fn streamed_texts(res: reqwest::Response, n: usize) -> Vec<String> {
    assert_eq!(res.status(), 200);
    let mut texts = vec![String::new(); n];
    let mut body = String::new();
    let mut bytes = res.bytes_stream();
    while let Some(b) = bytes.next().await {
        body.push_str(&String::from_utf8_lossy(&b.expect("chunk")));
    }
    for line in body.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|l| *l != "[DONE]") {
        let v: Value = serde_json::from_str(line).expect("chunk JSON");
        for c in v["choices"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().expect("index") as usize;
            texts[i].push_str(c["delta"]["content"].as_str().unwrap_or_default());
        }
    }
    texts
}

#[tokio::test]
async fn json_schema_answers_validate_and_stream_the_same() {
    let s = default_server().await;
    let url = format!("{}/chat/completions", s.v1());
    let format = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "product", "strict": true, "schema": product_schema()}}, "n": 3});
    let res = post_json(&url, &chat(format.clone())).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.expect("json");
    let validator = jsonschema::validator_for(&product_schema()).expect("schema");
    let mut texts = Vec::new();
    for c in v["choices"].as_array().expect("choices") {
        assert_eq!(c["finish_reason"], "stop", "{c}");
        let text = c["message"]["content"].as_str().expect("content").to_owned();
        let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(validator.is_valid(&doc), "{text}");
        texts.push(text);
    }
    let mut streamed = format;
    streamed["stream"] = json!(true);
    assert_eq!(streamed_texts(post_json(&url, &chat(streamed)).await, 3).await, texts);
}

#[tokio::test]
async fn guided_fields_hold_on_both_endpoints() {
    let s = default_server().await;
    let chat_url = format!("{}/chat/completions", s.v1());
    let completions = format!("{}/completions", s.v1());
    let content = |v: &Value| v["choices"][0]["message"]["content"].as_str().expect("content").to_owned();

    let v: Value = post_json(&chat_url, &chat(json!({"response_format": {"type": "json_object"}}))).await.json().await.expect("json");
    assert!(serde_json::from_str::<Value>(&content(&v)).expect("JSON").is_object(), "{v}");

    let v: Value = post_json(&chat_url, &chat(json!({"guided_json": {"type": "array", "items": {"type": "integer"}, "maxItems": 4}})))
        .await
        .json()
        .await
        .expect("json");
    assert!(serde_json::from_str::<Value>(&content(&v)).expect("JSON").is_array(), "{v}");

    let v: Value = post_json(&chat_url, &chat(json!({"guided_grammar": "start: (\"ha\")+ \"!\""}))).await.json().await.expect("json");
    let text = content(&v);
    assert!(text.ends_with('!') && text.trim_end_matches('!').split("ha").all(str::is_empty), "{text:?}");

    for (field, value) in [("guided_choice", json!(["yes", "no"])), ("guided_regex", json!("[0-9]{4}-[0-9]{2}-[0-9]{2}"))] {
        let body = json!({"model": MODEL, "prompt": "The answer is", "max_tokens": 20, "n": 2, "seed": 9, field: value});
        let v: Value = post_json(&completions, &body).await.json().await.expect("json");
        for c in v["choices"].as_array().expect("choices") {
            let text = c["text"].as_str().expect("text");
            let ok = match field {
                "guided_choice" => ["yes", "no"].contains(&text),
                _ => text.len() == 10 && text.chars().enumerate().all(|(i, ch)| if i == 4 || i == 7 { ch == '-' } else { ch.is_ascii_digit() }),
            };
            assert!(ok, "{field}: {text:?}");
        }
    }
}

#[tokio::test]
async fn constraints_that_cannot_hold_are_400_naming_their_field() {
    let s = default_server().await;
    let url = format!("{}/chat/completions", s.v1());
    let cases = [
        (json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strnig"}}}}), "response_format.json_schema.schema"),
        (json!({"response_format": {"type": "json_schema"}}), "response_format.json_schema"),
        (json!({"response_format": {"type": "xml"}}), "response_format.type"),
        (json!({"response_format": {"type": "json_object"}, "guided_regex": "a"}), "guided_regex"),
        (json!({"guided_regex": "(open"}), "guided_regex"),
        (json!({"guided_json": "{not json"}), "guided_json"),
        (json!({"guided_choice": []}), "guided_choice"),
        (json!({"guided_grammar": "start: nowhere"}), "guided_grammar"),
        (json!({"x_post": {"platform": "myspace"}}), "x_post.platform"),
        (json!({"x_post": {"max_weighted_length": 4, "require": ["#sponsored"]}}), "x_post"),
        (json!({"x_post": {"require": ["a"], "forbid": ["A"]}}), "x_post"),
        (json!({"x_post": {"colour": "red"}}), "x_post.colour"),
        (json!({"guided_choice": ["a"], "ignore_eos": true}), "ignore_eos"),
    ];
    for (extra, param) in cases {
        let res = post_json(&url, &chat(extra.clone())).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("json");
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some(param)), "{extra}: {body}");
    }
}

/// `x_post` under `n` and streaming: every choice is a valid post by the
/// posting gate's rules, with the disclosure, within its caps.
#[tokio::test]
async fn x_post_choices_are_valid_posts_streamed_or_not() {
    let s = default_server().await;
    let url = format!("{}/chat/completions", s.v1());
    let spec = json!({"platform": "x", "max_weighted_length": 120, "require": ["#ad"], "forbid": ["cheap"], "max_hashtags": 2, "max_urls": 1});
    let mut rules = PostRules::new(Platform::X);
    rules.max_length = Some(120);
    rules.require = vec!["#ad".into()];
    rules.forbid = vec!["cheap".into()];
    rules.max_hashtags = Some(2);
    rules.max_urls = Some(1);
    let body = json!({
        "model": MODEL, "n": 4, "seed": 21, "temperature": 0.9, "max_tokens": 120, "x_post": spec,
        "messages": [{"role": "user", "content": "Write 300 words about our cheap running shoes with ten hashtags and links to https://shop.example.com and https://example.org."}],
    });
    let v: Value = post_json(&url, &body).await.json().await.expect("json");
    let texts: Vec<String> = v["choices"].as_array().expect("choices").iter().map(|c| c["message"]["content"].as_str().expect("text").to_owned()).collect();
    for t in &texts {
        assert!(rules.check(t).is_ok(), "{:?}: {t:?}", rules.check(t));
    }
    let mut streamed = body;
    streamed["stream"] = json!(true);
    assert_eq!(streamed_texts(post_json(&url, &streamed).await, 4).await, texts);
}
