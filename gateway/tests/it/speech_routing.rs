//! Transcriptions routed like any model name: to OpenAI's and Groq's Whisper
//! (fakes speaking their multipart wire format on loopback) and the local
//! tiny.en, with fallback, breakers, usage records and cost.

use serde_json::Value;

use crate::fake_openai::{FakeOpenAi, Fault};
use crate::routing::{gateway_for, provider, route_named as route};
use crate::speech::{clip, form, post, reference, MODEL};
use crate::support::{start_speech_routed, Server};

const ROUTE: &str = "transcribe";

/// OpenAI, then Groq, then tiny.en here as `transcribe`; tiny.en, then Groq as `local-first`.
async fn routed(usage_url: Option<&str>) -> (Server, FakeOpenAi, FakeOpenAi) {
    let (openai, groq) = (FakeOpenAi::start("openai").await, FakeOpenAi::start("groq").await);
    let gw = gateway_for(
        vec![provider("openai", &openai.base_url), provider("groq", &groq.base_url)],
        vec![
            route(ROUTE, &[("openai", "whisper-1"), ("groq", "whisper-large-v3"), ("local", MODEL)]),
            route("local-first", &[("local", MODEL), ("groq", "whisper-large-v3")]),
        ],
    );
    // faster-whisper's 30 s window: the local answer is its reference.
    (start_speech_routed(gw, |c| c.min_window_secs = 30, usage_url).await, openai, groq)
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test]
async fn a_route_sends_audio_upstream_as_multipart_and_falls_back_to_the_local_model() {
    let (s, openai, groq) = routed(None).await;
    let fields = [("model", ROUTE), ("response_format", "srt"), ("prompt", "Starling, Bluesky"), ("language", "en"), ("temperature", "0.2")];
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &fields)).await;
    assert_eq!(res.status(), 200);
    assert_eq!((header(&res, "x-starling-provider"), header(&res, "x-starling-model")), ("openai", "whisper-1"));
    // The client's srt, rendered from the segments of OpenAI's verbose_json.
    let srt = res.text().await.unwrap();
    assert_eq!(srt, "1\n00:00:00,000 --> 00:00:01,610\nHello from\n\n2\n00:00:01,610 --> 00:00:03,210\nopenai.\n\n");
    let seen = openai.seen().pop().expect("openai saw the upload");
    assert_eq!(seen.authorization.as_deref(), Some("Bearer sk-test-openai"));
    let b = &seen.body;
    assert_eq!((b["model"].as_str(), b["response_format"].as_str()), (Some("whisper-1"), Some("verbose_json")));
    assert_eq!((b["file_name"].as_str(), b["file_bytes"].as_u64()), (Some("clip.wav"), Some(clip().len() as u64)));
    assert_eq!((b["prompt"].as_str(), b["language"].as_str(), b["temperature"].as_str()), (Some("Starling, Bluesky"), Some("en"), Some("0.2")));

    // OpenAI fails, Groq is rate limited: the local model answers.
    openai.fail_next([Fault::ServerError]);
    groq.fail_next([Fault::RateLimited { retry_after_secs: 1 }]);
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", ROUTE)])).await;
    assert_eq!(res.status(), 200);
    assert_eq!((header(&res, "x-starling-provider"), header(&res, "x-starling-attempts")), ("local", "3"));
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["text"], reference()["text"].as_str().unwrap().trim());

    // A second failure opens OpenAI's breaker: Groq answers without OpenAI being asked.
    openai.fail_next([Fault::ServerError]);
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", ROUTE), ("response_format", "text")])).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    assert_eq!(res.text().await.unwrap(), "Hello from groq.\n");
    let asked = openai.seen().len();
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", ROUTE)])).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    assert_eq!(openai.seen().len(), asked, "the open breaker keeps OpenAI out");
    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("starling_speech_audio_seconds_total{model=\"whisper-large-v3\"}"), "{metrics}");
}

/// What tiny.en cannot do (translate, word timestamps, another language) is
/// `unsupported` here, so the route moves on to Groq; a file nobody can read
/// is the client's 400 from every candidate.
#[tokio::test]
async fn what_the_local_model_cannot_do_goes_to_the_next_candidate() {
    let (s, _openai, groq) = routed(None).await;
    let res = post(&s, "translations", form(clip(), "clip.wav", &[("model", "local-first"), ("response_format", "verbose_json")])).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    let v: Value = res.json().await.unwrap();
    assert_eq!((v["task"].as_str(), v["text"].as_str()), (Some("translate"), Some("Hello from groq.")));
    let words = [("model", "local-first"), ("response_format", "verbose_json"), ("timestamp_granularities[]", "word")];
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &words)).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["words"][0]["word"], "Hello", "{v}");
    assert_eq!(groq.seen().last().map(|s| s.body["timestamp_granularities"].clone()), Some(serde_json::json!(["word"])));
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", "local-first"), ("language", "de")])).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    // Not audio at all: refused here as unsupported, then by Groq as OpenAI refuses it.
    let res = post(&s, "transcriptions", form(b"not audio".to_vec(), "a.txt", &[("model", "local-first")])).await;
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("Invalid file format"), "{v}");
}

/// A client's stream from a provider that does not stream: the deltas are its segments.
#[tokio::test]
async fn a_stream_from_a_cloud_whisper_is_made_of_its_segments() {
    let (s, _openai, _groq) = routed(None).await;
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", ROUTE), ("stream", "true")])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-starling-provider"), "openai");
    let body = res.text().await.unwrap();
    let events: Vec<Value> = body.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(kinds, ["transcript.text.delta", "transcript.text.delta", "transcript.text.done"], "{body}");
    assert_eq!((events[0]["delta"].as_str(), events[1]["delta"].as_str()), (Some("Hello from"), Some(" openai.")));
    assert_eq!(events[2]["text"], "Hello from openai.");
    assert_eq!(events[2]["usage"], serde_json::json!({"type": "duration", "seconds": 4}));
}

/// Cloud transcriptions cost their list price per minute of audio; local ones nothing.
#[tokio::test]
async fn usage_records_price_cloud_audio_by_the_minute() {
    let db = crate::usage::TempDb::new();
    let url = db.url();
    let (mut s, _openai, _groq) = routed(Some(&url)).await;
    for model in [ROUTE, "local-first"] {
        let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", model)])).await;
        assert_eq!(res.status(), 200);
    }
    s.shutdown();
    s.done.take().expect("serve task").await.expect("join").expect("serve");
    let (s2, _, _) = routed(Some(&url)).await;
    let v: Value = reqwest::get(format!("{}/usage?group_by=model", s2.v1())).await.unwrap().json().await.unwrap();
    let (cloud, local) = (crate::usage::group(&v, "whisper-1"), crate::usage::group(&v, MODEL));
    // The fake reads the clip's duration from its header: 3.21 s at $0.006 a minute.
    let cost = cloud["cost_usd"].as_f64().unwrap_or(-1.0);
    assert!((cost - 0.006 * 3.21 / 60.0).abs() < 1e-9, "{cloud}");
    assert!((cloud["audio_seconds"].as_f64().unwrap_or(0.0) - 3.21).abs() < 1e-6, "{cloud}");
    assert_eq!((local["requests"].as_i64(), local["cost_usd"].as_f64()), (Some(1), Some(0.0)), "{local}");
    drop(s2);
}

/// While the local Whisper models load, requests are read and routed: a
/// cloud candidate answers, and a name only the local engine serves gets 503.
#[tokio::test]
async fn cloud_candidates_answer_while_the_local_models_load() {
    let groq = FakeOpenAi::start("groq").await;
    let gw = gateway_for(vec![provider("groq", &groq.base_url)], vec![route(ROUTE, &[("local", MODEL), ("groq", "whisper-large-v3")])]);
    let app = gateway::App::new(gateway::ServerConfig::default(), gw).expect("app");
    app.set_speech_config(gateway::SpeechConfig::default());
    let s = crate::support::start_app(app, crate::support::engine()).await;
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", ROUTE)])).await;
    assert_eq!((res.status().as_u16(), header(&res, "x-starling-provider")), (200, "groq"));
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", MODEL)])).await;
    assert_eq!(res.status(), 503);
}

/// A client's stream from a cloud Whisper waits for the whole answer: the
/// provider's total timeout applies, not its first-token one, and the file
/// is sent once.
#[tokio::test]
async fn a_streamed_cloud_transcription_may_take_longer_than_a_first_token() {
    let openai = FakeOpenAi::start("openai").await;
    let mut p = provider("openai", &openai.base_url);
    p.ttft_timeout_ms = 100;
    let s = start_speech_routed(gateway_for(vec![p], vec![route(ROUTE, &[("openai", "whisper-1")])]), |_| {}, None).await;
    openai.fail_next([Fault::Slow(std::time::Duration::from_millis(500))]);
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", ROUTE), ("stream", "true")])).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(body.contains("transcript.text.done") && body.contains("Hello from openai."), "{body}");
    assert_eq!(openai.seen().len(), 1, "the upload went up once");
}

/// The local engine answers a clip however long it takes: the retry
/// deadline bounds retries, not the work of an admitted clip.
#[tokio::test]
async fn a_local_transcription_outlives_the_retry_deadline() {
    let mut gw = gateway_for(vec![], vec![]);
    gw.retry.deadline_secs = 1;
    let s = start_speech_routed(gw, |_| {}, None).await;
    let passage = test_support::speech::long_passage();
    let wav = std::fs::read(&passage.path).expect("passage");
    let res = post(&s, "transcriptions", form(wav, "passage.wav", &[("model", MODEL), ("response_format", "verbose_json")])).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert!(v["duration"].as_f64().unwrap_or(0.0) > 60.0, "{v}");
}
