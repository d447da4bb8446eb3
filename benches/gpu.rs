//! GPU bench: `benches/gpu.sh run` on a GPU host (no cargo, no network
//! needed there), or `cargo bench -p starling-benches --bench gpu` where
//! cargo is.
//!
//! Starts `starling serve` on `--device` (`STARLING_BENCH_DEVICE`, default
//! `cuda`) from the binary `STARLING_BIN` (default: a release build of this
//! tree), with an engine sized for a GPU (64 running sequences), and prints:
//! - which device the engine really runs on (a CUDA build falls back to the
//!   CPU when no GPU opens: then the figures are not GPU figures, and it says so);
//! - GPU memory (nvidia-smi) before the server, after the load, after the run;
//! - single-stream tokens/s, then aggregate tok/s and TTFT p50/p99 at
//!   1/8/32/64 concurrent 64-token chat streams (median of 3 bursts);
//! - the greedy fixture check on that device: llama.cpp's greedy answers
//!   (`tests/fixtures/smollm2-greedy.json`, built into this binary),
//!   teacher forced, must be our top choice at every step but near-ties
//!   (gap < 0.3 logits: arithmetic; a wider gap is a bug);
//! - Whisper real-time factor: Starling has no Whisper model yet.
//!
//! Run from the repository root (models are read from `models/cache` or
//! `STARLING_MODELS_DIR`). Nothing is asserted: this reports.

use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use starling_benches::load::Conn;
use starling_benches::process::starling_binary;
use starling_benches::serving::{measure, print_level, start_starling, MODEL};
use starling_benches::{block_on, fail, smollm2_path};

/// Concurrency levels; `STARLING_BENCH_LEVELS=1,8` overrides.
const LEVELS: [usize; 4] = [1, 8, 32, 64];
const GREEDY: &str = include_str!("../tests/fixtures/smollm2-greedy.json");

/// `name, used MiB, total MiB` of every GPU, or why there is none.
fn gpu_memory() -> String {
    match Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.used,memory.total", "--format=csv,noheader"])
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().replace('\n', "; "),
        Ok(o) => format!("nvidia-smi failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("no nvidia-smi ({e})"),
    }
}

/// The device the engine reports in its start line, waiting for it.
fn engine_device(log: &mpsc::Receiver<String>) -> String {
    let mut fallback = false;
    while let Ok(line) = log.recv_timeout(Duration::from_secs(300)) {
        fallback |= line.contains("CUDA device unavailable");
        if line.contains("engine started") {
            let device = line.split("device=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("?");
            return if fallback { format!("{device} (FELL BACK: no GPU opened; these are not GPU figures)") } else { device.into() };
        }
    }
    fail("the engine did not start")
}

/// llama.cpp's greedy tokens scored by our model on this device, teacher
/// forced as the model test does: each case's prompt + llama.cpp's answer
/// goes through `/v1/completions` with `echo` and `logprobs`, and at every
/// answer position llama.cpp's token must be our top choice, or within a
/// near-tie of it.
async fn greedy_check(conn: &mut Conn) {
    let fx: Value = serde_json::from_str(GREEDY).unwrap_or_else(|e| fail(format!("fixture: {e}")));
    for (i, case) in fx["cases"].as_array().into_iter().flatten().enumerate() {
        let ids = |k: &str| case[k].as_array().cloned().unwrap_or_default();
        let (prompt, answer) = (ids("prompt_ids"), ids("greedy_ids"));
        let scored = [prompt.as_slice(), answer.as_slice()].concat();
        let body = json!({
            "model": MODEL, "prompt": scored, "max_tokens": 1,
            "temperature": 0, "logprobs": 1, "echo": true,
        });
        let (status, v) = conn
            .post_json("/v1/completions", Bytes::from(body.to_string()))
            .await
            .unwrap_or_else(|e| fail(format!("greedy case {i}: {e}")));
        if status != 200 {
            fail(format!("greedy case {i}: status {status}: {v}"));
        }
        let lp = &v["choices"][0]["logprobs"];
        let mut gaps = Vec::new();
        for step in 0..answer.len() {
            let at = prompt.len() + step;
            let theirs = lp["token_logprobs"][at].as_f64().unwrap_or(f64::NAN);
            let best = lp["top_logprobs"][at]
                .as_object()
                .and_then(|m| m.values().filter_map(Value::as_f64).reduce(f64::max))
                .unwrap_or(f64::NAN);
            let gap = best - theirs;
            // NaN (a missing logprob) counts as a disagreement too.
            if gap.is_nan() || gap > 1e-4 {
                gaps.push((step, gap));
            }
        }
        let worst = gaps.iter().map(|g| g.1).fold(0.0, f64::max);
        let verdict = if worst > 0.3 { "DISAGREES (gap > 0.3 logits)" } else { "ok" };
        let listed: Vec<String> = gaps.iter().map(|(s, g)| format!("step {s} by {g:.3}")).collect();
        println!(
            "greedy case {i}: llama.cpp's token is our top choice at {} of {} steps; near-ties: [{}] {verdict}",
            answer.len() - gaps.len(),
            answer.len(),
            listed.join(", ")
        );
    }
}

fn main() {
    block_on(bench());
}

async fn bench() {
    if !smollm2_path().exists() {
        fail("the model is missing: run scripts/fetch-models (or set STARLING_MODELS_DIR)");
    }
    let bin = std::env::var_os("STARLING_BIN").map(PathBuf::from).unwrap_or_else(starling_binary);
    let device = std::env::var("STARLING_BENCH_DEVICE").unwrap_or_else(|_| "cuda".into());
    let dir = std::env::current_dir().unwrap_or_else(|e| fail(format!("cwd: {e}")));
    // Engine limits for a GPU: every level's streams run at once.
    let config = std::env::temp_dir().join(format!("starling-gpu-bench-{}.toml", std::process::id()));
    let text = "[engine]\nmax_running = 64\nmax_waiting = 256\nkv_cache_mb = 16384\nmax_batch_tokens = 4096\nprefill_chunk = 512\n[database]\nurl = \"\"\n";
    std::fs::write(&config, text).unwrap_or_else(|e| fail(format!("{}: {e}", config.display())));
    let config_arg = config.display().to_string();

    println!("# GPU bench: SmolLM2-135M-Instruct Q4_1, {} --device {device}", bin.display());
    println!("gpu memory before: {}", gpu_memory());
    let (mut server, log) = start_starling(&bin, &dir, &["--config", &config_arg, "--device", &device]);
    println!("engine device: {}", engine_device(&log));
    server.until_ready("/ready", Duration::from_secs(300)).await;
    println!("gpu memory loaded: {}", gpu_memory());

    let levels = starling_benches::levels(&LEVELS);
    let mut ids = 0;
    measure(server.addr, 1, true, &mut ids).await; // warm-up
    for c in levels {
        let l = measure(server.addr, c, true, &mut ids).await;
        if c == 1 {
            println!("single stream  tok_s {:.1}", l.tok_s);
        }
        print_level("starling", &format!("concurrent {c:<3}"), l);
    }
    println!("gpu memory after run: {}", gpu_memory());
    greedy_check(&mut Conn::new(server.addr)).await;
    println!("whisper rtf: n/a (Starling has no Whisper model yet)");
    drop(server);
    let _ = std::fs::remove_file(&config);
}
