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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use starling_benches::process::{free_port, root, starling_binary, ServerProcess as Server};
use starling_benches::serving::{measure, print_level, start_starling, Level, ANSWER_TOKENS, BURSTS, MODEL};
use starling_benches::{block_on, fail, smollm2_path, wanted};

const LEVELS: [usize; 4] = [1, 4, 16, 64];
/// `starling serve` from a release build of the current tree.
fn starling() -> Server {
    start_starling(&starling_binary(), &root(), &[]).0
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

fn main() {
    block_on(bench());
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
