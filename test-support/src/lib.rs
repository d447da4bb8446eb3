//! What the tests of every Starling crate share, so each exists once:
//!
//! - where the real models are ([`smollm2_path`], `STARLING_MODELS_DIR`
//!   overrides `models/cache`), fetched by `scripts/fetch-models`;
//! - the reference outputs of other implementations in `tests/fixtures`
//!   ([`fixture`], [`ids`]);
//! - [`faulty::Faulty`], a real decoder that fails on request, for the
//!   engine's fault containment;
//! - [`speech`], real synthesised speech clips (festival and sox, cached
//!   under `models/cache/speech-clips`) and [`wer`], the word error rate, for the
//!   Whisper tests and benches;
//! - [`postgres::PgServer`], a private PostgreSQL server, for every test
//!   that runs on both databases;
//! - [`fake_x::FakeX`], X's API v2 as a loopback server speaking its
//!   documented shapes, with faults on request, and
//!   [`distinct_sentence`], texts no gate takes for duplicates;
//! - [`fake_mastodon::FakeMastodon`], a Mastodon instance with its
//!   idempotency keys.
//!
//! Never a dependency of the product: only `[dev-dependencies]` and benches.

// A helper that cannot find its model or fixture fails the calling test, with what to run.
#![allow(clippy::panic)]

pub mod fake_mastodon;
pub mod fake_x;
pub mod faulty;
pub mod postgres;
pub mod speech;
pub mod wer;

use std::path::PathBuf;

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `scripts/fetch-models` unpacks models (`STARLING_MODELS_DIR`
/// overrides it).
pub fn models_dir() -> PathBuf {
    std::env::var_os("STARLING_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("models/cache"))
}

/// The SmolLM2 GGUF, whether or not it is there (benches report its absence
/// themselves).
pub fn smollm2_file() -> PathBuf {
    models_dir().join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The SmolLM2 GGUF; fails the test with what to run when it is missing.
pub fn smollm2_path() -> PathBuf {
    let p = smollm2_file();
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    p
}

/// A JSON fixture from the repository's `tests/fixtures`.
pub fn fixture(name: &str) -> serde_json::Value {
    let p = root().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Ids from a JSON array.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array of ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// A Whisper model folder fetched by `scripts/fetch-models` (`whisper-tiny-en`, `whisper-base`);
/// fails the test with what to run when it is missing.
pub fn whisper_dir(name: &str) -> PathBuf {
    let p = models_dir().join(name);
    assert!(p.join("model.bin").exists(), "{} is missing: run scripts/fetch-models first", p.display());
    p
}

/// A file from the repository's `tests/fixtures`, as bytes.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let p = root().join("tests/fixtures").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A sentence of made-up words for post `i`: different `i`s share few
/// character trigrams, so no two are near-duplicates to the posting gate.
pub fn distinct_sentence(i: usize) -> String {
    const SYLLABLES: [&str; 20] = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "vu", "ze", "bo", "da", "fe", "gi", "ho", "ju", "ly", "my", "ny", "qu"];
    let words: Vec<String> = (0..6)
        .map(|k| {
            let mut n = (i as u64 + 1) * 7919 + k * 104_729;
            (0..3)
                .map(|_| {
                    let s = SYLLABLES[(n % 20) as usize];
                    n = n / 20 + 31;
                    s
                })
                .collect()
        })
        .collect();
    format!("Post {i}: {}.", words.join(" "))
}

/// The test venv's Python (`scripts/test` makes `.venv-test` with the
/// OpenAI and Anthropic SDKs and openapi-spec-validator;
/// `STARLING_TEST_PYTHON` overrides); fails the test with what to run when
/// it is missing.
pub fn test_python() -> PathBuf {
    let p = std::env::var_os("STARLING_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv-test/bin/python"));
    assert!(p.exists(), "{} is missing: run scripts/test (it creates the test venv)", p.display());
    p
}

/// Serve `app` on a free loopback port from a task of the current
/// runtime: its address, and the task (abort it to stop).
pub async fn serve_loopback(app: axum::Router) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// Spawn `serve` (a `starling serve --listen 127.0.0.1:0` command, its
/// stdout left to us) and read the address from the first line it prints.
pub fn spawn_serve(mut serve: std::process::Command) -> (std::process::Child, String) {
    let mut child = serve.stdout(std::process::Stdio::piped()).spawn().expect("start serve");
    let mut first = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).expect("read the first line");
    let addr = first.split("http://").nth(1).and_then(|s| s.split('/').next()).unwrap_or_else(|| panic!("no address in {first:?}")).to_owned();
    (child, addr)
}
