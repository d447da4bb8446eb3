//! `/v1/audio/transcriptions` over a real server and tiny.en, checked against
//! faster-whisper's transcript of the same clip (`tests/fixtures/speech`).

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use test_support::{fixture, fixture_bytes};

use crate::support::{start_speech, Server};

pub const MODEL: &str = "whisper-tiny-en";

pub fn clip() -> Vec<u8> {
    fixture_bytes("speech/mel-clip.wav")
}

/// faster-whisper's text of the clip (tiny.en, greedy; beam 5 gives the same tokens).
pub fn reference() -> Value {
    fixture("speech/faster-whisper-tiny-en.json")
}

pub fn form(file: Vec<u8>, name: &str, fields: &[(&str, &str)]) -> Form {
    let mut f = Form::new().part("file", Part::bytes(file).file_name(name.to_owned()));
    for (k, v) in fields {
        f = f.text(k.to_string(), v.to_string());
    }
    f
}

pub async fn post(s: &Server, path: &str, form: Form) -> reqwest::Response {
    reqwest::Client::new().post(format!("{}/audio/{path}", s.v1())).multipart(form).send().await.expect("send")
}

#[tokio::test]
async fn every_response_format_carries_faster_whispers_transcript() {
    // faster-whisper's 30 s window, for its exact tokens.
    let s = start_speech(|c| c.min_window_secs = 30, None).await;
    let want = reference();
    let text = want["text"].as_str().unwrap().trim();
    let tokens = &want["segments"][0]["tokens"];
    for model in [MODEL, "whisper-1"] {
        let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", model)])).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-starling-model"], MODEL);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["text"], text, "{v}");
        assert_eq!(v["usage"], serde_json::json!({"type": "duration", "seconds": 4}));
    }
    let body = |fmt: &'static str| {
        let s = &s;
        async move {
            let res = post(s, "transcriptions", form(clip(), "clip.wav", &[("model", MODEL), ("response_format", fmt)])).await;
            assert_eq!(res.status(), 200, "{fmt}");
            (res.headers()["content-type"].to_str().unwrap().to_owned(), res.text().await.unwrap())
        }
    };
    let (ctype, plain) = body("text").await;
    assert!(ctype.starts_with("text/plain"));
    assert_eq!(plain, format!("{text}\n"));
    let (_, srt) = body("srt").await;
    assert_eq!(srt, format!("1\n00:00:00,000 --> 00:00:03,000\n{text}\n\n"));
    let (ctype, vtt) = body("vtt").await;
    assert!(ctype.starts_with("text/vtt"));
    assert_eq!(vtt, format!("WEBVTT\n\n00:00:00.000 --> 00:00:03.000\n{text}\n\n"));
    let (_, verbose) = body("verbose_json").await;
    let v: Value = serde_json::from_str(&verbose).unwrap();
    assert_eq!((v["task"].as_str(), v["language"].as_str()), (Some("transcribe"), Some("english")));
    assert_eq!(v["duration"], 3.21);
    let seg = &v["segments"][0];
    assert_eq!(&seg["tokens"], tokens);
    for field in ["id", "seek", "start", "end", "text", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob"] {
        assert!(!seg[field].is_null(), "segment lacks {field}: {seg}");
    }
}

#[tokio::test]
async fn a_streamed_transcription_sends_deltas_then_done() {
    let s = start_speech(|c| c.min_window_secs = 30, None).await;
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", MODEL), ("stream", "true")])).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = res.text().await.unwrap();
    let events: Vec<Value> =
        body.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).expect("event json")).collect();
    let (done, deltas) = events.split_last().expect("events");
    assert_eq!(done["type"], "transcript.text.done", "{body}");
    assert!(!deltas.is_empty() && deltas.iter().all(|d| d["type"] == "transcript.text.delta"), "{body}");
    let joined: String = deltas.iter().map(|d| d["delta"].as_str().unwrap()).collect();
    assert_eq!(joined, done["text"].as_str().unwrap());
    assert_eq!(done["text"], reference()["text"].as_str().unwrap().trim());
}

/// Every hostile or malformed request gets a 4xx in OpenAI's error shape naming the problem.
#[tokio::test]
async fn hostile_multipart_bodies_get_4xx_naming_the_field() {
    let s = start_speech(|c| c.max_upload_mb = 1, None).await;
    let url = format!("{}/audio/transcriptions", s.v1());
    let http = reqwest::Client::new();
    let check = |res: reqwest::Response, status: u16, needle: &'static str| async move {
        assert_eq!(res.status(), status, "{needle}");
        let v: Value = res.json().await.expect("error json");
        let msg = v["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains(needle), "{msg} lacks {needle}");
    };
    let silent = {
        // 1 s of digital silence, 16 kHz mono 16-bit.
        let mut w = fixture_bytes("speech/mel-clip.wav")[..44].to_vec();
        w[40..44].copy_from_slice(&32_000u32.to_le_bytes());
        w[4..8].copy_from_slice(&(36u32 + 32_000).to_le_bytes());
        w.extend(std::iter::repeat_n(0u8, 32_000));
        w
    };
    let mut truncated = clip();
    truncated.truncate(30);
    let cases: Vec<(Form, u16, &str)> = vec![
        (Form::new().text("model", MODEL), 400, "'file'"),
        (form(clip(), "a.wav", &[]), 400, "'model'"),
        (form(clip(), "a.wav", &[("model", "nope")]), 404, "nope"),
        (form(Vec::new(), "a.wav", &[("model", MODEL)]), 400, "empty"),
        (form(b"definitely not audio".to_vec(), "a.txt", &[("model", MODEL)]), 400, "'file'"),
        (form(truncated, "a.wav", &[("model", MODEL)]), 400, "'file'"),
        (form(silent, "a.wav", &[("model", MODEL)]), 400, "silent"),
        (form(clip(), "a.wav", &[("model", MODEL), ("response_format", "xml")]), 400, "'response_format'"),
        (form(clip(), "a.wav", &[("model", MODEL), ("temperature", "7")]), 400, "'temperature'"),
        (form(clip(), "a.wav", &[("model", MODEL), ("language", "klingon")]), 400, "'language'"),
        (form(clip(), "a.wav", &[("model", MODEL), ("language", "de")]), 400, "English-only"),
        (form(clip(), "a.wav", &[("model", MODEL), ("bogus", "1")]), 400, "'bogus'"),
        (form(clip(), "a.wav", &[("model", MODEL), ("model", MODEL)]), 400, "more than once"),
        (form(clip(), "a.wav", &[("model", MODEL), ("timestamp_granularities[]", "segment")]), 400, "verbose_json"),
        (
            form(clip(), "a.wav", &[("model", MODEL), ("response_format", "verbose_json"), ("timestamp_granularities[]", "word")]),
            400,
            "word timestamps",
        ),
        (form(clip(), "a.wav", &[("model", MODEL), ("stream", "true"), ("response_format", "srt")]), 400, "'stream'"),
        (form(vec![7u8; 2 << 20], "big.wav", &[("model", MODEL)]), 413, "exceeds"),
    ];
    for (f, status, needle) in cases {
        check(http.post(&url).multipart(f).send().await.expect("send"), status, needle).await;
    }
    // Not multipart at all, and a multipart body that breaks off.
    check(http.post(&url).json(&serde_json::json!({"model": MODEL})).send().await.unwrap(), 415, "multipart/form-data").await;
    let broken = http
        .post(&url)
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper")
        .send()
        .await
        .unwrap();
    check(broken, 400, "malformed").await;
    // An English-only model does not translate.
    let res = post(&s, "translations", form(clip(), "a.wav", &[("model", MODEL)])).await;
    check(res, 400, "English-only").await;
}

#[tokio::test]
async fn whisper_is_listed_and_usage_records_carry_audio_seconds() {
    let db = crate::usage::TempDb::new();
    let url = db.url();
    let mut s = start_speech(|_| {}, Some(&url)).await;
    let models: Value = reqwest::get(format!("{}/models", s.v1())).await.unwrap().json().await.unwrap();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == MODEL), "{models}");
    let res = post(&s, "transcriptions", form(clip(), "clip.wav", &[("model", MODEL)])).await;
    assert_eq!(res.status(), 200);
    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("starling_speech_audio_seconds_total{{model=\"{MODEL}\"}} 3.21")), "{metrics}");
    assert!(metrics.contains(&format!("starling_speech_real_time_factor_count{{model=\"{MODEL}\"}} 1")), "{metrics}");
    // The engine is shared with the other tests of this binary: its queue is whatever they are doing now.
    assert!(metrics.contains(&format!("starling_speech_clips{{model=\"{MODEL}\",state=\"running\"}} ")), "{metrics}");
    // Records are written off the request path and flushed by a graceful
    // shutdown; a new server on the same database reads them.
    s.shutdown();
    s.done.take().expect("serve task").await.expect("join").expect("serve");
    let s2 = start_speech(|_| {}, Some(&url)).await;
    let v: Value = reqwest::get(format!("{}/usage?group_by=model", s2.v1())).await.unwrap().json().await.unwrap();
    let row = crate::usage::group(&v, MODEL);
    assert_eq!(row["requests"], 1, "{row}");
    let seconds = row["audio_seconds"].as_f64().unwrap_or(0.0);
    assert!((seconds - 3.21).abs() < 0.01, "audio_seconds {seconds}");
    drop(s2);
}
