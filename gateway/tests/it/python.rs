//! The official OpenAI and Anthropic Python SDKs as clients from outside
//! Rust.
//!
//! `scripts/test` makes the venv (`.venv-test`, `openai` and `anthropic`
//! pinned there);
//! `STARLING_TEST_PYTHON` points elsewhere. Without it this test fails, and
//! says how to get it: a missing client is not a pass.

use std::path::PathBuf;

use crate::support::{start, MODEL};

fn python() -> PathBuf {
    test_support::test_python()
}

/// Run `tests/python/SCRIPT BASE MODEL`; it prints "all checks passed".
async fn run_script(script: &str, base: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let out = tokio::process::Command::new(python()).arg(&script).arg(base).arg(MODEL).output().await.expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed:\n{stdout}\n{stderr}", script.display());
    assert!(stdout.contains("all checks passed"));
}

#[tokio::test]
async fn the_openai_python_sdk_gets_answers_and_typed_errors() {
    let s = start(
        |e| {
            e.max_running = 2;
            e.max_waiting = 0;
        },
        |_| {},
    )
    .await;
    run_script("openai_sdk_check.py", &s.v1()).await;
}

#[tokio::test]
async fn the_openai_python_sdk_parses_structured_outputs_and_calls_tools_on_the_local_model() {
    let s = start(|_| {}, |_| {}).await;
    run_script("openai_structured_check.py", &s.v1()).await;
}

#[tokio::test]
async fn the_anthropic_python_sdk_gets_messages_streams_and_typed_errors() {
    let s = start(|_| {}, |_| {}).await;
    run_script("anthropic_sdk_check.py", &s.base).await;
}

#[tokio::test]
async fn the_openai_python_sdk_transcribes_in_every_format_and_streams() {
    // faster-whisper's 30 s window, for its exact transcript.
    let s = crate::support::start_speech(|c| c.min_window_secs = 30, None).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_audio_check.py");
    let clip = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/speech/mel-clip.wav");
    let expected = test_support::fixture("speech/faster-whisper-tiny-en.json")["text"].as_str().expect("text").trim().to_owned();
    let out = tokio::process::Command::new(python())
        .arg(&script)
        .arg(s.v1())
        .arg("whisper-tiny-en")
        .arg(&clip)
        .arg(&expected)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed:\n{stdout}\n{stderr}", script.display());
    assert!(stdout.contains("all checks passed"));
}
