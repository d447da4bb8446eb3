//! Voice command bench: `cargo bench -p starling-benches --bench voice`.
//!
//! The release `starling serve` on its embedded defaults (whisper-tiny-en,
//! SmolLM2-135M, a fresh SQLite database, the dry-run platform), and two
//! spoken commands of about 3 s synthesised with festival's HTS voice:
//! a report ("How many clicks did the running shoes link get yesterday?":
//! speech, the grammar, analytics) and a scheduling command ("Schedule a
//! tweet about our new wireless earbuds for Friday at six p.m.": speech, the
//! grammar, two candidates written and ranked by the local model, the post
//! stored). Each is sent as a client would (multipart, the WAV file) one at
//! a time and four at once; per level: end-to-end wall time p50/p95 as the
//! client waits for it, and the server's own split into speech, intent and
//! action (the answer's `timings`). The target is p50 under 1.5 s on
//! 2 cores at concurrency 1; no other implementation turns audio into a
//! posting action in one call, so there is no anchor. Nothing is asserted.
//!
//! Env: `STARLING_BENCH_ROUNDS` (default 10) requests per level.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use starling_benches::process::{root, starling_binary, ServerProcess};
use starling_benches::{fail, median, percentile};

use test_support::speech::{clip, Sentence, Variant};

static COMMANDS: [Sentence; 2] = [
    Sentence { id: "bench-report", spoken: "How many clicks did the running shoes link get yesterday?", reference: "" },
    Sentence { id: "bench-schedule", spoken: "Schedule a tweet about our new wireless earbuds for Friday at six p.m.", reference: "" },
];

fn start(db: &str) -> ServerProcess {
    let mut child = Command::new(starling_binary())
        .current_dir(root())
        .env("STARLING_DATABASE_URL", db)
        .env("STARLING_USAGE_JOURNAL", "")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(format!("cannot start starling: {e}")));
    let stdout = child.stdout.take().unwrap_or_else(|| fail("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first.split("http://").nth(1).and_then(|s| s.split('/').next()).and_then(|a| a.parse().ok()).unwrap_or_else(|| fail(format!("unexpected first line: {first:?}")));
    std::thread::spawn(move || lines.for_each(drop));
    ServerProcess { child, addr }
}

/// One command's figures, ms.
#[derive(Default)]
struct Samples {
    wall: Vec<f64>,
    speech: Vec<f64>,
    intent: Vec<f64>,
    action: Vec<f64>,
}

async fn send(http: &reqwest::Client, url: &str, wav: &[u8]) -> (f64, Value) {
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(wav.to_vec()).file_name("command.wav"));
    let t = Instant::now();
    let res = http.post(url).multipart(form).send().await.unwrap_or_else(|e| fail(format!("request: {e}")));
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !status.is_success() {
        fail(format!("{status}: {v}"));
    }
    (ms, v)
}

fn row(label: &str, s: &Samples) {
    let f = |v: &Vec<f64>| format!("{:>6.0} {:>6.0}", median(v.clone()), percentile(v.clone(), 95.0));
    println!("{label:<28} {}   {}   {}   {}", f(&s.wall), f(&s.speech), f(&s.intent), f(&s.action));
}

fn main() {
    starling_benches::block_on(run());
}

async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rounds: usize = std::env::var("STARLING_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(10);
    let clips: Vec<(String, Vec<u8>, f64)> = COMMANDS
        .iter()
        .map(|s| {
            let path = clip(s, Variant::Base16k);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
            let secs = (bytes.len().saturating_sub(44)) as f64 / 32_000.0;
            (s.id.to_owned(), bytes, secs)
        })
        .collect();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let db_path = std::env::temp_dir().join(format!("starling-voice-bench-{nanos}.db"));
    let mut server = start(&format!("sqlite://{}", db_path.display()));
    server.until_ready("/ready", Duration::from_secs(180)).await;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { http.post(url).json(&body).send().await.unwrap_or_else(|e| fail(format!("{e}"))).json::<Value>().await.unwrap_or(Value::Null) }
    };
    let account = post("/api/v1/accounts", json!({"platform": "dry-run", "handle": "@bench", "time_zone": "America/New_York"})).await;
    let feed = json!([{"sku": "RS-1", "name": "Running shoes", "url": "https://acme.shop/shoes", "price": 90, "currency": "USD", "commission_rate": 0.1}]);
    post("/api/v1/products/import", feed).await;
    let products: Value = http.get(format!("{base}/api/v1/products")).send().await.unwrap_or_else(|e| fail(format!("{e}"))).json().await.unwrap_or(Value::Null);
    post("/api/v1/links", json!({"target": "https://acme.shop/shoes", "product_id": products["data"][0]["id"]})).await;
    if account["id"].is_null() {
        fail(format!("no account: {account}"));
    }
    let url = format!("{base}/v1/voice/commands");
    // Warm up: the speech model loads in the background, the first calls build caches.
    let deadline = Instant::now() + Duration::from_secs(120);
    for (_, wav, _) in &clips {
        loop {
            let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(wav.clone()).file_name("command.wav"));
            let res = http.post(&url).multipart(form).send().await.unwrap_or_else(|e| fail(format!("{e}")));
            if res.status().as_u16() != 503 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    println!("voice commands on {} cores, {rounds} per level; ms, p50 p95", std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("{:<28} {:>13}   {:>13}   {:>13}   {:>13}", "command (audio s) @ conc", "end to end", "speech", "intent", "action");
    for (id, wav, secs) in &clips {
        for conc in [1usize, 4] {
            let mut s = Samples::default();
            let mut first: Option<Value> = None;
            for _ in 0..rounds.div_ceil(conc) {
                let calls = (0..conc).map(|_| send(&http, &url, wav));
                for (ms, v) in futures_util::future::join_all(calls).await {
                    let t = &v["timings"];
                    s.wall.push(ms);
                    s.speech.push(t["speech_ms"].as_f64().unwrap_or(0.0));
                    s.intent.push(t["intent_ms"].as_f64().unwrap_or(0.0));
                    s.action.push(t["action_ms"].as_f64().unwrap_or(0.0));
                    first.get_or_insert(v);
                }
            }
            row(&format!("{id} ({secs:.1} s) @ {conc}"), &s);
            if conc == 1 {
                if let Some(v) = first {
                    println!("    heard {:?} -> {} {}, {}", v["transcript"], v["intent"], v["arguments"], v["status"]);
                }
            }
        }
    }
    drop(server);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
}
