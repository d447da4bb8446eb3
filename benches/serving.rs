//! The serving measurement shared by the CPU bench (`http`) and the GPU
//! bench (`gpu`): chat streams of exactly [`ANSWER_TOKENS`] tokens, fired
//! `c` at a time, reported as aggregate tok/s and TTFT percentiles.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use bytes::Bytes;
use serde_json::json;

use crate::load::burst;
use crate::process::ServerProcess;
use crate::{fail, median, percentile};

/// Tokens every answer has (end tokens are banned).
pub const ANSWER_TOKENS: usize = 64;
/// Bursts per level; the level's tok/s is their median.
pub const BURSTS: usize = 3;
/// The name every server is asked for.
pub const MODEL: &str = "smollm2-135m-instruct";
const TOPIC: &str = "write a short tweet about a new budget mechanical keyboard.";
/// `<|endoftext|>` and `<|im_end|>` in SmolLM2's vocabulary.
const END_TOKENS: [u32; 2] = [0, 2];

/// `starling <args> serve --listen 127.0.0.1:0` from `bin`, run in `dir`.
/// Returns the server and the receiving end of its log lines (stderr, at
/// `RUST_LOG=info`), which a thread keeps draining.
pub fn start_starling(bin: &Path, dir: &Path, args: &[&str]) -> (ServerProcess, mpsc::Receiver<String>) {
    let mut child = Command::new(bin)
        .current_dir(dir)
        .args(args)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(format!("cannot start {}: {e}", bin.display())));
    let (tx, log) = mpsc::channel();
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // The bench may stop listening; keep draining regardless.
                let _ = tx.send(line);
            }
        });
    }
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
    std::thread::spawn(move || lines.for_each(drop));
    (ServerProcess { child, addr }, log)
}

/// Request `id`'s body; `distinct` puts the id in the prompt, else only in
/// the seed.
pub fn chat_body(id: usize, distinct: bool) -> Bytes {
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
#[derive(Clone, Copy, Debug)]
pub struct Level {
    pub tok_s: f64,
    pub ttft_p50: f64,
    pub ttft_p99: f64,
    pub tokens_per_stream: f64,
}

/// `c` concurrent streams, [`BURSTS`] times; `ids` numbers the requests so
/// no prompt repeats across the whole run.
pub async fn measure(addr: SocketAddr, c: usize, distinct: bool, ids: &mut usize) -> Level {
    let mut rates = Vec::new();
    let mut ttfts = Vec::new();
    let mut tokens = 0usize;
    for _ in 0..BURSTS {
        let bodies = (0..c)
            .map(|_| {
                *ids += 1;
                chat_body(*ids, distinct)
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

/// One line per level.
pub fn print_level(name: &str, what: &str, l: Level) {
    println!(
        "{name:<14} {what} tok_s {:>7.1}  ttft_p50_ms {:>7.1}  ttft_p99_ms {:>8.1}  tokens/stream {:.1}",
        l.tok_s,
        l.ttft_p50 * 1e3,
        l.ttft_p99 * 1e3,
        l.tokens_per_stream
    );
}
