//! The endpoints through async-openai and plain HTTP: answers, streams,
//! usage, n, stop, logprobs, cancellation, concurrency, readiness, metrics.

use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs, FinishReason, StopConfiguration,
};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{default_server, long_stream, post_json, start, start_app, MODEL};

fn chat(user: &str, max_tokens: u32, seed: i64) -> CreateChatCompletionRequest {
    let msg = ChatCompletionRequestUserMessageArgs::default().content(user).build().expect("message");
    CreateChatCompletionRequestArgs::default()
        .model(MODEL)
        .messages(vec![msg.into()])
        .max_completion_tokens(max_tokens)
        .seed(seed)
        .temperature(0.8)
        .build()
        .expect("request")
}

async fn prompt_tokens(base: &str, user: &str) -> u64 {
    let r: Value = post_json(
        &format!("{base}/tokenize"),
        &json!({"model": MODEL, "messages": [{"role": "user", "content": user}]}),
    )
    .await
    .json()
    .await
    .expect("json");
    r["count"].as_u64().expect("count")
}

#[tokio::test]
async fn chat_completion_answers_with_usage_and_streams_the_same_text() {
    let s = default_server().await;
    let client = s.client();
    let req = chat("Write a tweet about coffee.", 24, 7);
    let full = client.chat().create(req.clone()).await.expect("chat");
    assert!(full.id.starts_with("chatcmpl-"));
    assert_eq!(full.object, "chat.completion");
    assert_eq!(full.model, MODEL);
    let choice = &full.choices[0];
    let text = choice.message.content.clone().expect("content");
    assert!(!text.is_empty());
    let usage = full.usage.expect("usage");
    assert_eq!(u64::from(usage.prompt_tokens), prompt_tokens(&s.base, "Write a tweet about coffee.").await);
    assert_eq!(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    if choice.finish_reason == Some(FinishReason::Length) {
        assert_eq!(usage.completion_tokens, 24);
    }

    // Same seed, streamed, with usage: same text; role first; usage last.
    let mut req = req;
    req.stream_options = Some(ChatCompletionStreamOptions { include_usage: Some(true), include_obfuscation: None });
    let mut stream = client.chat().create_stream(req).await.expect("stream");
    let mut chunks = Vec::new();
    while let Some(c) = stream.next().await {
        chunks.push(c.expect("chunk"));
    }
    let first = &chunks[0];
    assert_eq!(first.object, "chat.completion.chunk");
    assert!(first.choices[0].delta.role.is_some(), "first delta carries the role");
    let last = chunks.last().expect("chunks");
    assert!(last.choices.is_empty(), "the usage chunk has no choices");
    assert_eq!(last.usage.as_ref().expect("usage chunk"), &usage);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.usage.is_none()));
    let streamed: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter().filter_map(|ch| ch.delta.content.clone()))
        .collect();
    assert_eq!(streamed, text);
    let finish = chunks.iter().flat_map(|c| c.choices.iter().filter_map(|ch| ch.finish_reason)).collect::<Vec<_>>();
    assert_eq!(finish, vec![choice.finish_reason.expect("finish")]);
}

#[tokio::test]
async fn n_choices_stop_and_logprobs() {
    let s = default_server().await;
    let client = s.client();
    let mut req = chat("Name a colour.", 12, 3);
    req.n = Some(2);
    req.logprobs = Some(true);
    req.top_logprobs = Some(3);
    let r = client.chat().create(req).await.expect("chat");
    assert_eq!(r.choices.iter().map(|c| c.index).collect::<Vec<_>>(), vec![0, 1]);
    let usage = r.usage.expect("usage");
    let mut generated = 0;
    for c in &r.choices {
        let lps = c.logprobs.as_ref().and_then(|l| l.content.as_ref()).expect("logprobs");
        generated += lps.len() as u32;
        for t in lps {
            assert!(t.logprob <= 0.0);
            assert_eq!(t.top_logprobs.len(), 3);
            assert!(t.top_logprobs.windows(2).all(|w| w[0].logprob >= w[1].logprob));
            let bytes = t.bytes.as_deref().expect("bytes");
            if !t.token.contains('\u{FFFD}') {
                assert_eq!(bytes, t.token.as_bytes());
            }
        }
    }
    assert_eq!(usage.completion_tokens, generated, "one logprob per generated token");

    // Stop: cut the greedy answer at a word in its middle.
    let mut greedy = chat("What is the capital of France?", 20, 0);
    greedy.temperature = Some(0.0);
    let text = client.chat().create(greedy.clone()).await.expect("chat").choices[0]
        .message
        .content
        .clone()
        .expect("text");
    let word = text.split_whitespace().nth(2).expect("three words").to_owned();
    let at = text.find(&word).expect("word");
    greedy.stop = Some(StopConfiguration::StringArray(vec![word.clone(), "zzzz".into()]));
    let cut = client.chat().create(greedy).await.expect("chat");
    assert_eq!(cut.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(cut.choices[0].message.content.as_deref(), Some(&text[..at]), "stop {word:?}");
}

#[tokio::test]
async fn legacy_completions_echo_logprobs_and_token_prompts() {
    let s = default_server().await;
    let url = format!("{}/completions", s.v1());
    let prompt = "The capital of France is";
    let r: Value = post_json(
        &url,
        &json!({"model": MODEL, "prompt": prompt, "max_tokens": 4, "temperature": 0, "echo": true, "logprobs": 2}),
    )
    .await
    .json()
    .await
    .expect("json");
    let c = &r["choices"][0];
    assert_eq!(r["object"], "text_completion");
    assert!(c["text"].as_str().expect("text").starts_with(prompt));
    let lp = &c["logprobs"];
    let n_prompt = r["usage"]["prompt_tokens"].as_u64().expect("usage") as usize;
    let tokens = lp["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), n_prompt + 4);
    assert!(lp["token_logprobs"][0].is_null(), "nothing predicts the first prompt token");
    assert!(lp["token_logprobs"][1].as_f64().expect("lp") < 0.0);
    let joined: String = tokens.iter().map(|t| t.as_str().expect("token")).collect();
    assert_eq!(joined, c["text"].as_str().expect("text"));
    assert_eq!(lp["text_offset"][1].as_u64(), Some(tokens[0].as_str().expect("t").len() as u64));

    // The same prompt as token ids gives the same greedy continuation.
    let ids: Value = post_json(&format!("{}/tokenize", s.base), &json!({"model": MODEL, "prompt": prompt}))
        .await
        .json()
        .await
        .expect("json");
    let by_ids: Value = post_json(&url, &json!({"model": MODEL, "prompt": ids["tokens"], "max_tokens": 4, "temperature": 0}))
        .await
        .json()
        .await
        .expect("json");
    let by_text: Value = post_json(&url, &json!({"model": MODEL, "prompt": [prompt], "max_tokens": 4, "temperature": 0}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(by_ids["choices"][0]["text"], by_text["choices"][0]["text"]);
    let back: Value = post_json(&format!("{}/detokenize", s.base), &json!({"model": MODEL, "tokens": ids["tokens"]}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(back["prompt"], prompt);
}

#[tokio::test]
async fn sixteen_parallel_streams_complete_with_correct_usage() {
    let s = default_server().await;
    let client = s.client();
    let want_prompt = prompt_tokens(&s.base, "Write a tweet about tea.").await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut req = chat("Write a tweet about tea.", 32, i);
                req.stream_options = Some(ChatCompletionStreamOptions { include_usage: Some(true), include_obfuscation: None });
                let mut stream = client.chat().create_stream(req).await.expect("stream");
                let (mut deltas, mut finish, mut usage) = (String::new(), None, None);
                while let Some(c) = stream.next().await {
                    let c = c.expect("chunk");
                    for ch in &c.choices {
                        deltas.extend(ch.delta.content.clone());
                        finish = finish.or(ch.finish_reason);
                    }
                    usage = usage.or(c.usage);
                }
                (deltas, finish.expect("finish"), usage.expect("usage"))
            })
        })
        .collect();
    for t in tasks {
        let (text, finish, usage) = t.await.expect("task");
        assert_eq!(u64::from(usage.prompt_tokens), want_prompt);
        match finish {
            FinishReason::Length => assert_eq!(usage.completion_tokens, 32),
            _ => assert!(usage.completion_tokens <= 32 && !text.is_empty()),
        }
    }
    let m = reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.expect("text");
    let counted = m
        .lines()
        .find(|l| l.starts_with("starling_llm_prompt_tokens_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("prompt token counter");
    assert_eq!(counted, 16 * want_prompt, "16 prompts counted");
    for name in [
        "starling_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 16",
        "starling_llm_time_to_first_token_seconds_count{model=\"smollm2\"} 16",
        "starling_llm_inter_token_latency_seconds_bucket",
        "starling_engine_running_sequences{provider=\"local\"}",
        "starling_engine_kv_cache_capacity_bytes{provider=\"local\"}",
    ] {
        assert!(m.contains(name), "metrics lack {name}:\n{m}");
    }
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_its_generation() {
    let s = default_server().await;
    let mut stats = s.engine.watch_stats();
    let res = long_stream(&s).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.bytes_stream();
    // Read until a content token has arrived: the sequence is running.
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data: ").count() < 3 {
        seen.push_str(&String::from_utf8_lossy(&body.next().await.expect("chunk").expect("bytes")));
    }
    stats.wait_for(|st| st.running == 1).await.expect("engine alive");
    let generated = s.engine.stats().generated_tokens;
    drop(body);
    let left = stats.wait_for(|st| st.running == 0).await.expect("engine alive").clone();
    assert!(left.generated_tokens < generated + 50, "cancelled long before its 2000 tokens");
    assert_eq!(s.engine.stats().kv_reserved_bytes, 0);
}

/// A client that leaves while its request still waits for a slot (before
/// its first token) frees the slot then, not when it would have started.
#[tokio::test]
async fn a_client_that_leaves_before_its_first_token_frees_its_slot() {
    let s = start(|c| {
        c.max_running = 1;
        c.max_waiting = 1;
    }, |_| {})
    .await;
    let mut stats = s.engine.watch_stats();
    let running = long_stream(&s).await;
    stats.wait_for(|st| st.running == 1).await.expect("engine alive");
    let waiting = long_stream(&s).await;
    assert_eq!(waiting.status(), 200, "queued behind the running one");
    stats.wait_for(|st| st.waiting == 1).await.expect("engine alive");
    assert_eq!(s.engine.admitted(), 2);
    drop(waiting);
    // Well before the running stream's 2000 tokens end.
    let freed = tokio::time::timeout(std::time::Duration::from_secs(3), stats.wait_for(|st| st.waiting == 0)).await;
    assert!(freed.is_ok(), "the queued request kept its slot after its client left");
    assert_eq!(s.engine.admitted(), 1);
    drop(running);
}

/// An engine that stopped (a panic in its loop) makes `/ready` 503, so an
/// orchestrator restarts the server instead of routing to it.
#[tokio::test]
async fn ready_is_503_once_the_engine_stopped() {
    use test_support::faulty::{Fault, Faulty};
    let (model, faults) = Faulty::smollm2();
    let mut cfg = inference::EngineConfig::new(crate::support::smollm2_path(), MODEL);
    cfg.threads = 2;
    let engine = inference::Engine::start_with(cfg, model).expect("engine");
    let s = start_app(crate::support::app_over(&engine), engine.clone()).await;
    assert_eq!(reqwest::get(format!("{}/ready", s.base)).await.expect("ready").status(), 200);
    let mut stats = engine.watch_stats();
    faults.arm(Fault::PanicInNewCache);
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    let res = post_json(&format!("{}/chat/completions", s.v1()), &body).await;
    assert!(res.status().is_server_error(), "{}", res.status());
    while stats.changed().await.is_ok() {}
    let res = reqwest::get(format!("{}/ready", s.base)).await.expect("ready");
    assert_eq!(res.status(), 503);
    assert_eq!(reqwest::get(format!("{}/health", s.base)).await.expect("health").status(), 200);
}

/// Tokenizing a 4 MB prompt takes a second or more: off the HTTP event
/// loop, so the server's other requests are answered meanwhile (the test
/// runtime is one thread, shared by the server and its clients).
#[tokio::test]
async fn a_large_tokenize_does_not_hold_up_other_requests() {
    let s = default_server().await;
    let big = json!({"model": MODEL, "prompt": "The quick brown fox jumps over the lazy dog. ".repeat(90_000)});
    let url = format!("{}/tokenize", s.base);
    let started = std::time::Instant::now();
    let tokenize = tokio::spawn(async move { post_json(&url, &big).await.json::<Value>().await.expect("json") });
    let mut slowest = std::time::Duration::ZERO;
    let mut answered = 0;
    while !tokenize.is_finished() {
        let t = std::time::Instant::now();
        assert_eq!(reqwest::get(format!("{}/health", s.base)).await.expect("health").status(), 200);
        slowest = slowest.max(t.elapsed());
        answered += 1;
    }
    let took = started.elapsed();
    let v = tokenize.await.expect("tokenize");
    assert!(v["count"].as_u64().is_some_and(|n| n > 900_000), "{}", v["count"]);
    assert!(answered >= 3 && slowest < took / 3, "{answered} health answers, slowest {slowest:?}, tokenize {took:?}");
}

#[tokio::test]
async fn ready_is_503_until_models_load_and_health_always_answers() {
    let engine = inference::Engine::start({
        let mut c = inference::EngineConfig::new(crate::support::smollm2_path(), MODEL);
        c.threads = 2;
        c
    })
    .expect("engine");
    let app = gateway::App::new(gateway::ServerConfig::default(), gateway::GatewayConfig::default()).expect("app");
    let s = start_app(app.clone(), engine.clone()).await;
    let get = |p: &str| reqwest::get(format!("{}{p}", s.base));
    assert_eq!(get("/health").await.expect("health").status(), 200);
    let r = get("/ready").await.expect("ready");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["type"], "server_error");
    let r = post_json(
        &format!("{}/chat/completions", s.v1()),
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 503);

    let provider: std::sync::Arc<dyn gateway::Generator> = std::sync::Arc::new(gateway::LocalModel::new(engine));
    app.set_ready(gateway::Generators::new(vec![provider]));
    assert_eq!(get("/ready").await.expect("ready").status(), 200);
    let models: Value = get("/v1/models").await.expect("models").json().await.expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], MODEL);
    let one: Value = get(&format!("/v1/models/{MODEL}")).await.expect("model").json().await.expect("json");
    assert_eq!(one["object"], "model");
    assert_eq!(get("/v1/models/nope").await.expect("model").status(), 404);
}

#[tokio::test]
async fn shutdown_lets_a_running_stream_finish() {
    let mut s = start(|_| {}, |c| c.shutdown_grace_secs = 60).await;
    let res = post_json(
        &format!("{}/chat/completions", s.v1()),
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "Count to twenty."}],
                "max_tokens": 40, "stream": true, "temperature": 0}),
    )
    .await;
    let mut body = res.bytes_stream();
    let first = body.next().await.expect("chunk").expect("bytes");
    assert!(first.starts_with(b"data: "));
    s.shutdown();
    let mut rest = Vec::new();
    while let Some(b) = body.next().await {
        rest.extend_from_slice(&b.expect("bytes"));
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("\"finish_reason\":\"length\""), "the stream ran to its end");
    assert!(rest.ends_with("data: [DONE]\n\n"));
    s.done.take().expect("server").await.expect("join").expect("serve");
    assert!(reqwest::get(format!("{}/health", s.base)).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn shutdown_grace_over_cancels_streams() {
    let mut s = start(|_| {}, |c| c.shutdown_grace_secs = 0).await;
    let mut stats = s.engine.watch_stats();
    let res = long_stream(&s).await;
    let mut body = res.bytes_stream();
    body.next().await.expect("chunk").expect("bytes");
    stats.wait_for(|st| st.running == 1).await.expect("engine alive");
    s.shutdown();
    s.done.take().expect("server").await.expect("join").expect("serve");
    stats.wait_for(|st| st.running == 0).await.expect("engine alive");
    assert_eq!(s.engine.stats().kv_reserved_bytes, 0);
}

/// vLLM's `continue_final_message`: the prompt ends inside the assistant's
/// turn, holding its text, and the answer carries it on. The rendering is
/// SmolLM2's ChatML (its template adds the default system prompt).
#[tokio::test]
async fn continue_final_message_carries_the_assistant_turn_on() {
    let s = default_server().await;
    let convo = json!([{"role": "user", "content": "Write a tweet about tea."}, {"role": "assistant", "content": "Tea is"}]);
    let head = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                <|im_start|>user\nWrite a tweet about tea.<|im_end|>\n<|im_start|>assistant\nTea is";
    let rendered = |continued: bool| {
        let base = s.base.clone();
        let convo = convo.clone();
        async move {
            let ids: Value = post_json(&format!("{base}/tokenize"), &json!({"model": MODEL, "messages": convo, "continue_final_message": continued}))
                .await
                .json()
                .await
                .expect("json");
            let text: Value = post_json(&format!("{base}/detokenize"), &json!({"model": MODEL, "tokens": ids["tokens"]}))
                .await
                .json()
                .await
                .expect("json");
            text["prompt"].as_str().unwrap_or_default().to_owned()
        }
    };
    assert_eq!(rendered(true).await, head);
    assert_eq!(rendered(false).await, format!("{head}<|im_end|>\n<|im_start|>assistant\n"));

    // The greedy continuation is the raw prompt's.
    let chat: Value = post_json(
        &format!("{}/chat/completions", s.v1()),
        &json!({"model": MODEL, "messages": convo, "continue_final_message": true, "max_tokens": 6, "temperature": 0}),
    )
    .await
    .json()
    .await
    .expect("json");
    let raw: Value = post_json(&format!("{}/completions", s.v1()), &json!({"model": MODEL, "prompt": head, "max_tokens": 6, "temperature": 0}))
        .await
        .json()
        .await
        .expect("json");
    let text = chat["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert!(!text.is_empty());
    assert_eq!(text, raw["choices"][0]["text"].as_str().unwrap_or_default());

    for (body, param) in [
        (json!({"messages": [{"role": "user", "content": "Hi"}], "continue_final_message": true}), "messages"),
        (json!({"messages": convo, "continue_final_message": true, "add_generation_prompt": true}), "add_generation_prompt"),
    ] {
        let mut body = body;
        body["model"] = json!(MODEL);
        let res = post_json(&format!("{}/chat/completions", s.v1()), &body).await;
        assert_eq!(res.status(), 400);
        let err: Value = res.json().await.expect("json");
        assert_eq!(err["error"]["param"], param, "{err}");
    }
}
