//! Routing across providers: fallback, retries, breakers, stream
//! pass-through and mid-stream failures, against fake OpenAI/Groq servers
//! on loopback and the real local model.

use gateway::config::{BreakerConfig, CandidateConfig, Policy, ProviderConfig, ProviderKind, RetryConfig};
use gateway::{GatewayConfig, RouteConfig, Secret};
use serde_json::{json, Value};

use crate::fake_openai::{Fault, FakeOpenAi};
use crate::support::{long_stream, post_json, start_routed, start_with, Server, MODEL};

pub const ROUTE: &str = "tweet-writer";

pub fn provider(name: &str, base_url: &str) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        kind: ProviderKind::OpenaiCompatible,
        base_url: base_url.into(),
        api_key_env: None,
        api_key: Some(Secret::new(format!("sk-test-{name}"))),
        headers: Default::default(),
        models: vec![],
        connect_timeout_ms: 2_000,
        ttft_timeout_ms: 10_000,
        total_timeout_secs: 60,
        default_max_tokens: 1024,
        ca_file: None,
        proxy: None,
        continue_final_message: false,
    }
}

/// A route over `candidates` (provider, model), in priority order.
pub fn route(candidates: &[(&str, &str)]) -> RouteConfig {
    route_named(ROUTE, candidates)
}

/// [`route`] under the public name `name`.
pub fn route_named(name: &str, candidates: &[(&str, &str)]) -> RouteConfig {
    RouteConfig {
        model: name.into(),
        policy: Default::default(),
        candidates: candidates
            .iter()
            .map(|(p, m)| CandidateConfig { provider: p.to_string(), model: m.to_string(), priority: None, weight: 1 })
            .collect(),
        ttft_slo_ms: None,
    }
}

/// Breakers that trip after 2 failures in a row and stay open for the
/// whole test; retries without backoff.
pub fn gateway_for(providers: Vec<ProviderConfig>, routes: Vec<RouteConfig>) -> GatewayConfig {
    GatewayConfig {
        providers,
        routes,
        retry: RetryConfig { max_attempts: 4, backoff_base_ms: 0, backoff_max_ms: 0, deadline_secs: 30 },
        breaker: BreakerConfig { consecutive_failures: 2, min_requests: 100, cooldown_secs: 3600, ..Default::default() },
        cache: Default::default(),
        prices: vec![],
        gpu_usd_per_hour: 2.0,
        scoring: Default::default(),
        prompts_dir: Default::default(),
    }
}

/// OpenAI (fake) first, Groq (fake) as fallback.
async fn two_fakes() -> (Server, FakeOpenAi, FakeOpenAi) {
    let (openai, groq) = (FakeOpenAi::start("openai").await, FakeOpenAi::start("groq").await);
    let gw = gateway_for(
        vec![provider("openai", &openai.base_url), provider("groq", &groq.base_url)],
        vec![route(&[("openai", "gpt-4o-mini"), ("groq", "llama-3.1-8b-instant")])],
    );
    (start_routed(gw).await, openai, groq)
}

pub fn chat(extra: Value) -> Value {
    let mut body = json!({"model": ROUTE, "messages": [{"role": "user", "content": "Write a tweet about tea."}]});
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}

/// Read a stream from `fake` (scripted with [`Fault::ResetAfterFirstChunk`])
/// until its first word is here: the text so far.
pub async fn read_until_first_word(res: &mut reqwest::Response, fake: &FakeOpenAi) -> String {
    let mut text = String::new();
    while !content(&events(&text)).contains(&fake.answer_words()[0]) {
        let chunk = res.chunk().await.expect("read").expect("stream ended before its first word");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

/// [`read_until_first_word`], then break the upstream and read the rest.
pub async fn read_past_a_break(res: &mut reqwest::Response, fake: &FakeOpenAi) -> String {
    let mut text = read_until_first_word(res, fake).await;
    fake.cut();
    while let Some(chunk) = res.chunk().await.expect("read") {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

pub fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// The `data:` payloads of an SSE body.
pub fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

pub fn content(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn first_candidate_answers_with_the_clients_fields_passed_through() {
    let (s, openai, groq) = two_fakes().await;
    let res = post_json(&format!("{}/chat/completions", s.v1()), &chat(json!({"temperature": 0.3, "vendor_knob": {"x": 1}}))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "openai");
    assert_eq!(header(&res, "x-starling-model"), "gpt-4o-mini");
    assert_eq!(header(&res, "x-starling-attempts"), "1");
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], openai.answer_words().concat());
    assert_eq!(v["usage"]["completion_tokens"], openai.answer_words().len());
    let seen = openai.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test-openai"));
    assert_eq!(seen[0].body["model"], "gpt-4o-mini");
    assert_eq!(seen[0].body["temperature"], 0.3);
    assert_eq!(seen[0].body["vendor_knob"], json!({"x": 1}));
    assert!(groq.seen().is_empty());
    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("starling_gateway_overhead_seconds_count 1"), "{metrics}");
    assert!(
        metrics.contains(r#"starling_gateway_upstream_duration_seconds_count{model="gpt-4o-mini",provider="openai"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"starling_gateway_upstream_attempts_total{model="gpt-4o-mini",outcome="ok",provider="openai"} 1"#));
}

#[tokio::test]
async fn server_errors_rate_limits_and_malformed_answers_fall_back() {
    let (s, openai, groq) = two_fakes().await;
    let url = format!("{}/chat/completions", s.v1());
    for fault in [Fault::ServerError, Fault::Malformed] {
        openai.fail_next([fault.clone()]);
        let res = post_json(&url, &chat(json!({}))).await;
        assert_eq!(res.status(), 200, "{fault:?}");
        assert_eq!(header(&res, "x-starling-provider"), "groq", "{fault:?}");
        assert_eq!(header(&res, "x-starling-attempts"), "2", "{fault:?}");
        let v: Value = res.json().await.expect("json");
        assert_eq!(v["choices"][0]["message"]["content"], groq.answer_words().concat());
    }
    // Two failures in a row opened openai's breaker: it is skipped now.
    let before = openai.seen().len();
    let res = post_json(&url, &chat(json!({}))).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    assert_eq!(header(&res, "x-starling-attempts"), "1");
    assert_eq!(openai.seen().len(), before);
    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.contains(r#"starling_gateway_breaker_state{model="gpt-4o-mini",provider="openai"} 1"#),
        "{metrics}"
    );
    // Errors by type: the 500 and the malformed answer are both upstream errors.
    assert!(
        metrics.contains(r#"starling_gateway_upstream_attempts_total{model="gpt-4o-mini",outcome="upstream_error",provider="openai"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"starling_gateway_upstream_attempts_total{model="llama-3.1-8b-instant",outcome="ok",provider="groq"} 3"#));
}

#[tokio::test]
async fn a_rate_limit_opens_the_breaker_until_the_reset() {
    let (s, openai, groq) = two_fakes().await;
    let url = format!("{}/chat/completions", s.v1());
    openai.fail_next([Fault::RateLimited { retry_after_secs: 3600 }]);
    let res = post_json(&url, &chat(json!({}))).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    // One 429 was enough (no streak needed): openai waits out its reset.
    post_json(&url, &chat(json!({}))).await;
    assert_eq!(openai.seen().len(), 1);
    assert_eq!(groq.seen().len(), 2);
    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.contains(r#"starling_gateway_upstream_attempts_total{model="gpt-4o-mini",outcome="rate_limit_exceeded",provider="openai"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn when_every_candidate_fails_the_client_gets_the_last_error() {
    let (s, openai, groq) = two_fakes().await;
    openai.fail_next([Fault::RateLimited { retry_after_secs: 7 }]);
    groq.fail_next([Fault::RateLimited { retry_after_secs: 9 }]);
    let res = post_json(&format!("{}/chat/completions", s.v1()), &chat(json!({}))).await;
    assert_eq!(res.status(), 429);
    assert_eq!(header(&res, "retry-after"), "9");
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("`groq` answered 429"), "{v}");
}

#[tokio::test]
async fn client_errors_are_returned_not_retried() {
    let (s, openai, groq) = two_fakes().await;
    openai.fail_next([Fault::BadRequest { param: "temperature" }]);
    let res = post_json(&format!("{}/chat/completions", s.v1()), &chat(json!({"temperature": 5}))).await;
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["error"]["param"], "temperature");
    assert_eq!(v["error"]["code"], "invalid_value");
    assert!(groq.seen().is_empty());
}

#[tokio::test]
async fn streams_pass_through_with_usage_only_when_asked() {
    let (s, openai, _groq) = two_fakes().await;
    let url = format!("{}/chat/completions", s.v1());
    for include_usage in [false, true] {
        let mut extra = json!({"stream": true});
        if include_usage {
            extra["stream_options"] = json!({"include_usage": true});
        }
        let res = post_json(&url, &chat(extra)).await;
        assert_eq!(res.status(), 200);
        assert!(header(&res, "content-type").starts_with("text/event-stream"));
        let ev = events(&res.text().await.expect("body"));
        assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(content(&ev), openai.answer_words().concat());
        let last_chunk: Value = serde_json::from_str(&ev[ev.len() - 2]).expect("json");
        if include_usage {
            assert_eq!(last_chunk["choices"], json!([]));
            assert_eq!(last_chunk["usage"]["completion_tokens"], openai.answer_words().len());
        } else {
            assert_eq!(last_chunk["choices"][0]["finish_reason"], "stop");
            assert!(ev.iter().all(|e| !e.contains("\"usage\"")), "{ev:?}");
        }
        // Upstream was always asked for usage (records need it).
        let seen = openai.seen();
        assert_eq!(seen.last().expect("seen").body["stream_options"]["include_usage"], true);
    }
}

#[tokio::test]
async fn a_stream_that_breaks_before_its_first_chunk_falls_back() {
    let (s, openai, groq) = two_fakes().await;
    openai.fail_next([Fault::ResetBeforeFirstChunk]);
    let res = post_json(&format!("{}/chat/completions", s.v1()), &chat(json!({"stream": true}))).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    let ev = events(&res.text().await.expect("body"));
    assert_eq!(content(&ev), groq.answer_words().concat());
}

#[tokio::test]
async fn a_stream_that_breaks_after_bytes_were_sent_ends_with_an_error_event() {
    let (s, openai, groq) = two_fakes().await;
    openai.fail_next([Fault::ResetAfterFirstChunk]);
    let mut res = post_json(&format!("{}/chat/completions", s.v1()), &chat(json!({"stream": true}))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "openai");
    let text = read_past_a_break(&mut res, &openai).await;
    let ev = events(&text);
    // Role chunk, the first word, then an error event and [DONE]: never a
    // silent truncation, and no second provider mixed into the answer.
    assert_eq!(content(&ev), openai.answer_words()[0]);
    let err: Value = serde_json::from_str(&ev[ev.len() - 2]).expect("error event");
    assert_eq!(err["error"]["type"], "server_error", "{err}");
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    assert!(groq.seen().is_empty());
}

/// An OpenAI-compatible candidate marked `continue_final_message` (vLLM,
/// SGLang) takes up a broken stream the way those servers are asked to.
#[tokio::test]
async fn a_broken_stream_is_continued_by_a_server_that_continues_final_messages() {
    let (openai, vllm) = (FakeOpenAi::start("openai").await, FakeOpenAi::start("vllm").await);
    let mut continuing = provider("vllm", &vllm.base_url);
    continuing.continue_final_message = true;
    let gw = gateway_for(
        vec![provider("openai", &openai.base_url), continuing],
        vec![route(&[("openai", "gpt-4o-mini"), ("vllm", "qwen")])],
    );
    let s = start_routed(gw).await;
    openai.fail_next([Fault::ResetAfterFirstChunk]);
    let mut res = post_json(&format!("{}/chat/completions", s.v1()), &chat(json!({"stream": true}))).await;
    let first = openai.answer_words()[0].clone();
    let text = read_past_a_break(&mut res, &openai).await;
    let ev = events(&text);
    assert!(!text.contains("\"error\""), "{text}");
    assert_eq!(content(&ev), format!("{first}{}", vllm.answer_words().concat()));
    let sent = vllm.seen().pop().expect("vllm asked").body;
    assert_eq!((sent["continue_final_message"].as_bool(), sent["add_generation_prompt"].as_bool()), (Some(true), Some(false)));
    let last = sent["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
    assert_eq!(last, json!({"role": "assistant", "content": first}));
}

/// The local engine takes up a broken stream too: what it adds is its own
/// greedy continuation of the answer so far.
#[tokio::test]
async fn a_broken_stream_is_finished_by_the_local_engine() {
    let openai = FakeOpenAi::start("openai").await;
    let gw = gateway_for(vec![provider("openai", &openai.base_url)], vec![route(&[("openai", "gpt-4o-mini"), ("local", MODEL)])]);
    let s = start_routed(gw).await;
    openai.fail_next([Fault::ResetAfterFirstChunk]);
    let greedy = json!({"stream": true, "temperature": 0, "max_tokens": 7});
    let mut res = post_json(&format!("{}/chat/completions", s.v1()), &chat(greedy)).await;
    let text = read_past_a_break(&mut res, &openai).await;
    assert!(!text.contains("\"error\""), "{text}");
    let first = openai.answer_words()[0].clone();
    let answer = content(&events(&text));
    let rest = answer.strip_prefix(&first).unwrap_or_default();
    assert!(!rest.is_empty(), "{text}");
    // The same continuation, asked of the local model directly.
    let mut direct = chat(json!({"model": MODEL, "temperature": 0, "max_tokens": 6, "continue_final_message": true}));
    if let Some(m) = direct["messages"].as_array_mut() {
        m.push(json!({"role": "assistant", "content": first}));
    }
    let v: Value = post_json(&format!("{}/chat/completions", s.v1()), &direct).await.json().await.expect("json");
    assert_eq!(rest, v["choices"][0]["message"]["content"].as_str().unwrap_or_default());
}

#[tokio::test]
async fn a_slow_first_token_times_out_and_falls_back() {
    let (openai, groq) = (FakeOpenAi::start("openai").await, FakeOpenAi::start("groq").await);
    let mut slow = provider("openai", &openai.base_url);
    slow.ttft_timeout_ms = 200;
    let gw = gateway_for(
        vec![slow, provider("groq", &groq.base_url)],
        vec![route(&[("openai", "gpt-4o-mini"), ("groq", "llama-3.1-8b-instant")])],
    );
    let s = start_routed(gw).await;
    openai.fail_next([Fault::Slow(std::time::Duration::from_secs(30))]);
    let started = std::time::Instant::now();
    let res = post_json(&format!("{}/chat/completions", s.v1()), &chat(json!({"stream": true}))).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A JSON answer arrives whole, after its last token: a long one is not a
/// slow first token. It is bounded by the total timeout, so it is neither
/// cut at the first-token timeout nor sent (and billed) again.
#[tokio::test]
async fn a_json_answer_slower_than_the_first_token_timeout_is_waited_for() {
    let openai = FakeOpenAi::start("openai").await;
    let mut p = provider("openai", &openai.base_url);
    p.ttft_timeout_ms = 200;
    let s = start_routed(gateway_for(vec![p], vec![route(&[("openai", "gpt-4o-mini")])])).await;
    openai.fail_next([Fault::Slow(std::time::Duration::from_millis(800))]);
    let res = post_json(&format!("{}/chat/completions", s.v1()), &chat(json!({}))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-attempts"), "1");
    assert_eq!(openai.seen().len(), 1, "the answer was asked for once");
}

#[tokio::test]
async fn an_unreachable_provider_falls_back() {
    // A port nothing listens on: bind, read the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}/v1", dead.local_addr().expect("addr"));
    drop(dead);
    let groq = FakeOpenAi::start("groq").await;
    let gw = gateway_for(
        vec![provider("openai", &dead_url), provider("groq", &groq.base_url)],
        vec![route(&[("openai", "gpt-4o-mini"), ("groq", "llama-3.1-8b-instant")])],
    );
    let s = start_routed(gw).await;
    let res = post_json(&format!("{}/chat/completions", s.v1()), &chat(json!({}))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "groq");
}

#[tokio::test]
async fn local_first_and_cloud_for_what_local_cannot_do() {
    let groq = FakeOpenAi::start("groq").await;
    let gw = gateway_for(
        vec![provider("groq", &groq.base_url)],
        vec![route(&[("local", MODEL), ("groq", "llama-3.1-8b-instant")])],
    );
    let s = start_routed(gw).await;
    let url = format!("{}/chat/completions", s.v1());
    let res = post_json(&url, &chat(json!({"max_tokens": 8, "temperature": 0}))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "local");
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert!(groq.seen().is_empty());
    // Tools are the local engine's too now.
    let tools = json!([{"type": "function", "function": {"name": "post_tweet", "parameters": {"type": "object"}}}]);
    let res = post_json(&url, &chat(json!({"tools": tools, "tool_choice": "required", "max_tokens": 64}))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "local");
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "post_tweet", "{v}");
    assert!(groq.seen().is_empty());
    // Images are not something the local engine does: the cloud answers,
    // and the content reaches it untouched.
    let image = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]);
    let res = post_json(&url, &chat(json!({"messages": image}))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    assert_eq!(groq.seen()[0].body["messages"], image);
    // The local model is still reachable by its own name.
    let res = post_json(&url, &json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})).await;
    assert_eq!(header(&res, "x-starling-provider"), "local");
    let models: Value = reqwest::get(format!("{}/models", s.v1())).await.expect("models").json().await.expect("json");
    let ids: Vec<&str> = models["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, vec![MODEL, ROUTE]);
}

#[tokio::test]
async fn cheapest_prefers_the_idle_local_engine_then_the_cheaper_cloud() {
    let (openai, groq) = (FakeOpenAi::start("openai").await, FakeOpenAi::start("groq").await);
    let mut cheap = route(&[("openai", "gpt-4o-mini"), ("groq", "llama-3.1-8b-instant")]);
    cheap.policy = Policy::Cheapest;
    let mut with_local = route(&[("openai", "gpt-4o-mini"), ("local", MODEL)]);
    with_local.model = "with-local".into();
    with_local.policy = Policy::Cheapest;
    let gw = gateway_for(vec![provider("openai", &openai.base_url), provider("groq", &groq.base_url)], vec![cheap, with_local]);
    let s = start_routed(gw).await;
    let url = format!("{}/chat/completions", s.v1());
    // Listed second, but Groq's list price is below gpt-4o-mini's.
    let res = post_json(&url, &chat(json!({}))).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    // An idle GPU costs nothing more to use.
    let res = post_json(&url, &json!({"model": "with-local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})).await;
    assert_eq!(header(&res, "x-starling-provider"), "local");
    assert!(openai.seen().is_empty());
}

#[tokio::test]
async fn fastest_learns_which_candidate_answers_first() {
    let (openai, groq) = (FakeOpenAi::start("openai").await, FakeOpenAi::start("groq").await);
    let mut fast = route(&[("openai", "gpt-4o-mini"), ("groq", "llama-3.1-8b-instant")]);
    fast.policy = Policy::Fastest;
    let s = start_routed(gateway_for(vec![provider("openai", &openai.base_url), provider("groq", &groq.base_url)], vec![fast])).await;
    let url = format!("{}/chat/completions", s.v1());
    openai.fail_next([Fault::Slow(std::time::Duration::from_millis(300))]);
    // Untried candidates go first, so two requests measure both.
    for _ in 0..2 {
        assert_eq!(post_json(&url, &chat(json!({"stream": true}))).await.status(), 200);
    }
    assert_eq!((openai.seen().len(), groq.seen().len()), (1, 1));
    for _ in 0..4 {
        let res = post_json(&url, &chat(json!({"stream": true}))).await;
        assert_eq!(header(&res, "x-starling-provider"), "groq");
    }
}

#[tokio::test]
async fn a_busy_local_engine_spills_to_the_cloud_past_the_ttft_slo() {
    let groq = FakeOpenAi::start("groq").await;
    let mut r = route(&[("local", MODEL), ("groq", "llama-3.1-8b-instant")]);
    r.ttft_slo_ms = Some(500);
    // One sequence at a time, so one long stream fills the engine.
    let s = start_with(|e| e.max_running = 1, |_| {}, gateway_for(vec![provider("groq", &groq.base_url)], vec![r])).await;
    let url = format!("{}/chat/completions", s.v1());
    let res = post_json(&url, &chat(json!({"max_tokens": 4}))).await;
    assert_eq!(header(&res, "x-starling-provider"), "local");

    let mut long = long_stream(&s).await;
    // Wait for tokens, so the engine has measured its rate.
    let mut text = String::new();
    while content(&events(&text)).len() < 40 {
        let chunk = long.chunk().await.expect("read").expect("long stream ended early");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let res = post_json(&url, &chat(json!({"max_tokens": 4}))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains(r#"starling_gateway_spills_total{provider="local",route="tweet-writer"} 1"#), "{metrics}");
    drop(long);
}

#[tokio::test]
async fn deterministic_requests_are_answered_from_the_cache() {
    let (s, openai, _groq) = two_fakes().await;
    let url = format!("{}/chat/completions", s.v1());
    for stream in [false, true] {
        let body = chat(json!({"temperature": 0, "stream": stream}));
        let first = post_json(&url, &body).await;
        assert!(first.headers().get("x-starling-cache").is_none());
        let first_text = first.text().await.expect("body");
        let before = openai.seen().len();
        let again = post_json(&url, &body).await;
        assert_eq!(header(&again, "x-starling-cache"), "hit");
        assert_eq!(header(&again, "x-starling-provider"), "openai");
        let again_text = again.text().await.expect("body");
        assert_eq!(openai.seen().len(), before, "a hit never reaches the provider");
        if stream {
            assert_eq!(content(&events(&again_text)), content(&events(&first_text)));
            assert_eq!(events(&again_text).last().map(String::as_str), Some("[DONE]"));
        } else {
            assert_eq!(again_text, first_text);
        }
    }
    // Sampled requests without a seed are never cached.
    let body = chat(json!({"temperature": 0.7}));
    post_json(&url, &body).await;
    let before = openai.seen().len();
    let res = post_json(&url, &body).await;
    assert!(res.headers().get("x-starling-cache").is_none());
    assert_eq!(openai.seen().len(), before + 1);
}

#[test]
fn a_provider_base_url_that_is_not_a_url_fails_at_startup() {
    let gw = gateway_for(vec![provider("openai", "not a url")], vec![route(&[("openai", "gpt-4o-mini")])]);
    let err = gateway::App::new(gateway::ServerConfig::default(), gw).err().map(|e| e.to_string());
    assert!(err.as_deref().is_some_and(|e| e.contains("`openai`") && e.contains("base_url `not a url`")), "{err:?}");
}

/// Legacy completions take the same seam as chat: routed to a cloud
/// candidate (its `/completions`), falling back when one fails, streamed
/// as OpenAI streams them, and every request recorded, failures too.
#[tokio::test]
async fn legacy_completions_are_routed_fall_back_and_are_recorded() {
    let db = crate::usage::TempDb::new();
    let (openai, groq) = (FakeOpenAi::start("openai").await, FakeOpenAi::start("groq").await);
    let gw = || {
        gateway_for(
            vec![provider("openai", &openai.base_url), provider("groq", &groq.base_url)],
            vec![route(&[("openai", "gpt-3.5-turbo-instruct"), ("groq", "llama-3.1-8b-instant")])],
        )
    };
    let mut s = crate::support::start_recorded(|_| {}, |_| {}, gw(), Some(&db.url())).await;
    let url = format!("{}/completions", s.v1());
    openai.fail_next([Fault::ServerError]);
    let res = post_json(&url, &json!({"model": ROUTE, "prompt": "Say hi", "max_tokens": 5})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    let v: Value = res.json().await.expect("json");
    assert_eq!((v["object"].as_str(), v["choices"][0]["text"].as_str()), (Some("text_completion"), Some(groq.answer_words().concat().as_str())));
    assert_eq!(groq.seen()[0].body["prompt"], "Say hi");
    let res = post_json(&url, &json!({"model": ROUTE, "prompt": ["Say hi"], "stream": true})).await;
    assert_eq!(header(&res, "x-starling-provider"), "openai");
    let text = res.text().await.expect("stream");
    let streamed: String = events(&text)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, openai.answer_words().concat());
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let res = post_json(&url, &json!({"model": "no-such-model", "prompt": "Hi"})).await;
    assert_eq!(res.status(), 404);
    // Graceful shutdown writes the records; a new server reads them.
    s.shutdown();
    s.done.take().expect("serve task").await.expect("join").expect("serve");
    let s = crate::support::start_recorded(|_| {}, |_| {}, gw(), Some(&db.url())).await;
    let v: Value = reqwest::get(format!("{}/usage?group_by=route", s.v1())).await.expect("usage").json().await.expect("json");
    let group = |name: &str| v["data"].as_array().and_then(|d| d.iter().find(|g| g["group"] == name).cloned()).unwrap_or(Value::Null);
    assert_eq!(group(ROUTE)["requests"], 2, "{v}");
    assert_eq!((group("no-such-model")["requests"].as_i64(), group("no-such-model")["errors"].as_i64()), (Some(1), Some(1)), "{v}");
}
