//! Serving bench: `cargo bench -p starling-benches --bench http`.
//!
//! Starts `starling serve` (the release binary, built first) on its embedded
//! defaults and drives `/v1/chat/completions` with 1, 4, 16 and 64
//! concurrent streams of 64-token answers over real HTTP on loopback. Then
//! it does the same, in the same run, against the two anchors on the same
//! GGUF (both built once by `benches/llama_server_anchor.sh`):
//! - llama.cpp's `llama-server` (continuous batching), `-t 2 -np 16`;
//! - llama-cpp-python's OpenAI server (one request at a time).
//!
//! Every request is a chat prompt of its own ("Campaign N: write a short
//! tweet about ..."), sampled (temperature 0.8, top_p 0.95, its own seed)
//! with end-of-turn tokens banned through `logit_bias`, so every server
//! writes exactly 64 tokens. Prompts differ after the shared system prompt,
//! as real traffic does: 16 identical prompts would mostly measure
//! llama-server's per-slot prompt cache (Starling has no prefix cache yet),
//! so that case is printed on its own line (`same_prompt`) at 16 concurrent.
//! Per level: aggregate completion tok/s (median of 3 bursts) and TTFT
//! p50/p99 over all streams of the level. Nothing is asserted: this
//! reports, tests check behaviour.
//!
//! Arguments select servers: `starling`, `llama-server`, `python` (none:
//! all). `STARLING_BENCH_ANCHOR=0` skips both anchors.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use starling_benches::load::burst;
use starling_benches::process::{free_port, root, starling_binary, ServerProcess as Server};
use starling_benches::{fail, median, percentile, smollm2_path, wanted};

const LEVELS: [usize; 4] = [1, 4, 16, 64];
const ANSWER_TOKENS: usize = 64;
const BURSTS: usize = 3;
/// The name every server is asked for (the Python server gets it as alias).
const MODEL: &str = "smollm2-135m-instruct";
const TOPIC: &str = "write a short tweet about a new budget mechanical keyboard.";
/// `<|endoftext|>` and `<|im_end|>` in SmolLM2's vocabulary.
const END_TOKENS: [u32; 2] = [0, 2];

/// `starling serve` from a release build of the current tree.
fn starling() -> Server {
    let mut child = Command::new(starling_binary())
        .current_dir(root())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(format!("cannot start starling: {e}")));
    // The first line names the bound address: "... on http://ADDR/v1 ...".
    let stdout = child.stdout.take().unwrap_or_else(|| fail("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| fail(format!("unexpected first line from starling: {first:?}")));
    // Keep draining so the pipe never fills.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, addr }
}

fn anchor_path(what: &str) -> PathBuf {
    let out = Command::new(root().join("benches/llama_server_anchor.sh"))
        .arg(what)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| fail(format!("cannot run llama_server_anchor.sh: {e}")));
    if !out.status.success() {
        fail(format!("llama_server_anchor.sh {what} failed"));
    }
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn llama_server(bin: &Path) -> Server {
    let port = free_port();
    let model = smollm2_path();
    let child = Command::new(bin)
        .args(["-m".as_ref(), model.as_os_str()])
        .args(["-t", "2", "-np", "16", "--host", "127.0.0.1", "--port", &port.to_string(), "--alias", MODEL])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(format!("cannot start llama-server: {e}")));
    Server { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
}

fn python_server(python: &Path) -> Server {
    let port = free_port();
    let model = smollm2_path();
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&model)
        .args(["--model_alias", MODEL, "--n_threads", "2", "--n_ctx", "2048"])
        // Its default aborts the running stream whenever a new request
        // arrives; queueing them is what a user would configure.
        .args(["--interrupt_requests", "False"])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(format!("cannot start llama-cpp-python's server: {e}")));
    Server { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
}

/// Request `id`'s body; `distinct` puts the id in the prompt, else only in
/// the seed.
fn body(id: usize, distinct: bool) -> Bytes {
    let prompt = if distinct { format!("Campaign {id}: {TOPIC}") } else { format!("Campaign: {TOPIC}") };
    let bias: serde_json::Map<_, _> = END_TOKENS.iter().map(|t| (t.to_string(), json!(-100))).collect();
    Bytes::from(
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": ANSWER_TOKENS,
            "temperature": 0.8,
            "top_p": 0.95,
            "seed": id,
            "logit_bias": bias,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
        .to_string(),
    )
}

/// One level's figures.
#[derive(Clone, Copy)]
struct Level {
    tok_s: f64,
    ttft_p50: f64,
    ttft_p99: f64,
    tokens_per_stream: f64,
}

/// `c` concurrent streams, [`BURSTS`] times; `ids` numbers the requests so
/// no prompt repeats across the whole run.
async fn measure(addr: SocketAddr, c: usize, distinct: bool, ids: &mut usize) -> Level {
    let mut rates = Vec::new();
    let mut ttfts = Vec::new();
    let mut tokens = 0usize;
    for _ in 0..BURSTS {
        let bodies = (0..c)
            .map(|_| {
                *ids += 1;
                body(*ids, distinct)
            })
            .collect();
        let (outcomes, wall) = burst(addr, "/v1/chat/completions", bodies)
            .await
            .unwrap_or_else(|e| fail(format!("load against {addr}: {e}")));
        let mut round = 0;
        for o in &outcomes {
            if o.status != 200 {
                fail(format!("{addr} answered {}", o.status));
            }
            round += o.tokens(ANSWER_TOKENS);
            ttfts.push(o.ttft.unwrap_or(o.total).as_secs_f64());
        }
        tokens += round;
        rates.push(round as f64 / wall.as_secs_f64());
    }
    Level {
        tok_s: median(rates),
        ttft_p50: percentile(ttfts.clone(), 50.0),
        ttft_p99: percentile(ttfts, 99.0),
        tokens_per_stream: tokens as f64 / (c * BURSTS) as f64,
    }
}

/// All levels against one server, printed as they come.
async fn run(name: &str, mut server: Server, ready_path: &str) -> Vec<Level> {
    server.until_ready(ready_path, Duration::from_secs(120)).await;
    let mut ids = 0;
    // Warm-up: first-request allocations are not the figure.
    measure(server.addr, 1, true, &mut ids).await;
    let mut levels = Vec::new();
    for c in LEVELS {
        let l = measure(server.addr, c, true, &mut ids).await;
        print_level(name, &format!("concurrent {c:<3}"), l);
        levels.push(l);
    }
    let same = measure(server.addr, 16, false, &mut ids).await;
    print_level(name, "same_prompt 16 ", same);
    levels
}

fn print_level(name: &str, what: &str, l: Level) {
    println!(
        "{name:<14} {what} tok_s {:>7.1}  ttft_p50_ms {:>7.1}  ttft_p99_ms {:>8.1}  tokens/stream {:.1}",
        l.tok_s,
        l.ttft_p50 * 1e3,
        l.ttft_p99 * 1e3,
        l.tokens_per_stream
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("tokio: {e}")));
    rt.block_on(bench());
}

async fn bench() {
    if !smollm2_path().exists() {
        fail("the model is missing: run scripts/fetch-models");
    }
    let anchors = !std::env::var("STARLING_BENCH_ANCHOR").is_ok_and(|v| v == "0");
    println!("# HTTP serving bench: SmolLM2-135M-Instruct Q4_1, chat, {ANSWER_TOKENS}-token streams, median of {BURSTS} bursts");
    let ours = if wanted("starling") { Some(run("starling", starling(), "/ready").await) } else { None };
    let llama = if anchors && wanted("llama-server") {
        Some(run("llama-server", llama_server(&anchor_path("llama-server")), "/health").await)
    } else {
        None
    };
    let python = if anchors && wanted("python") {
        Some(run("llama-cpp-py", python_server(&anchor_path("python")), "/v1/models").await)
    } else {
        None
    };
    let Some(ours) = ours else { return };
    let at16 = LEVELS.iter().position(|&c| c == 16).unwrap_or(2);
    println!("# ratios at 16 concurrent (Starling / anchor)");
    if let Some(p) = python {
        println!("vs llama-cpp-python server tok/s {:>6.2}x  (target >= 3.0x)", ours[at16].tok_s / p[at16].tok_s);
    }
    if let Some(l) = llama {
        println!("vs llama-server tok/s            {:>6.2}x  (target >= 1.5x)", ours[at16].tok_s / l[at16].tok_s);
        println!(
            "vs llama-server TTFT p99         {:>6.2}x  ({:.0} ms vs {:.0} ms; target <= 1.0x)",
            ours[at16].ttft_p99 / l[at16].ttft_p99,
            ours[at16].ttft_p99 * 1e3,
            l[at16].ttft_p99 * 1e3
        );
    }
}
