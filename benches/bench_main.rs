//! Engine benchmark: `cargo bench -p starling-benches`.
//!
//! Measures, through the public `Engine` API on the real SmolLM2-135M Q4_1:
//! load time, prefill tok/s (~40 and ~400 token prompts), single-stream
//! decode tok/s, aggregate completion tok/s with TTFT p50/p99 at 1, 4 and 16
//! concurrent 64-token streams, and decode while another process keeps one
//! core busy. Then it runs llama.cpp (llama-cpp-python 0.3.36, built by
//! `benches/llama_cpp_anchor.sh`) on the same GGUF and prompt ids in the same
//! run and prints the ratios. Every figure is the median of several runs.
//! Nothing is asserted: this reports, tests check behaviour.
//!
//! Arguments select sections, as test filters do: `cargo bench -p
//! starling-benches -- concurrent` runs only the concurrency figures (no
//! argument runs everything). Sections: load, prefill, decode, concurrent,
//! busy, anchor, and `long_prompts` (time to first token alone for prompts
//! of 500 to 6,500 tokens: how prefill grows with length; only when named,
//! it takes minutes).
//!
//! Env: `STARLING_BENCH_ANCHOR=0` skips llama.cpp; `STARLING_MODELS_DIR`
//! points at the model cache.
//!
//! A plain harness rather than criterion: the figures are throughput and
//! latency percentiles of a concurrent system, not per-iteration timings.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use starling_benches::{median, percentile, smollm2_path, wanted};

use inference::{ChatMessage, Engine, EngineConfig, Event, GenerateRequest, Prompt, Role, SamplingParams};

const DECODE_TOKENS: usize = 128;
const STREAM_TOKENS: usize = 64;

fn start(threads: usize) -> Engine {
    let mut cfg = EngineConfig::new(smollm2_path(), "smollm2");
    cfg.threads = threads;
    cfg.max_running = 64;
    Engine::start(cfg).unwrap_or_else(|e| {
        eprintln!("cannot start engine: {e} (run scripts/fetch-models)");
        std::process::exit(2)
    })
}

/// One stream's timings: (ttft, token arrival times).
struct Timed {
    ttft: Duration,
    arrivals: Vec<Instant>,
}

async fn run_stream(engine: &Engine, req: GenerateRequest) -> Timed {
    let t0 = Instant::now();
    let mut s = match engine.generate(req) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("generate failed: {e}");
            std::process::exit(2)
        }
    };
    let mut arrivals = Vec::new();
    while let Some(ev) = s.next().await {
        match ev {
            Event::Token(_) => arrivals.push(Instant::now()),
            Event::Done(_) => break,
            Event::Error(e) => {
                eprintln!("engine error: {e}");
                std::process::exit(2)
            }
        }
    }
    Timed {
        ttft: arrivals.first().map(|a| *a - t0).unwrap_or_default(),
        arrivals,
    }
}

fn req(prompt: &[u32], max_tokens: usize, seed: Option<u64>) -> GenerateRequest {
    let mut r = GenerateRequest::new(Prompt::Tokens(prompt.to_vec()));
    r.max_tokens = Some(max_tokens);
    r.ignore_eos = true;
    r.sampling = match seed {
        Some(s) => SamplingParams { temperature: 0.8, seed: Some(s), ..Default::default() },
        None => SamplingParams::greedy(),
    };
    r
}

async fn prefill_rate(engine: &Engine, prompt: &[u32]) -> f64 {
    run_stream(engine, req(prompt, 1, None)).await; // warm-up
    let mut v = Vec::new();
    for _ in 0..5 {
        let t = run_stream(engine, req(prompt, 1, None)).await;
        v.push(prompt.len() as f64 / t.ttft.as_secs_f64());
    }
    median(v)
}

async fn decode_rate(engine: &Engine, prompt: &[u32], runs: usize) -> f64 {
    let mut v = Vec::new();
    for _ in 0..runs {
        let t = run_stream(engine, req(prompt, DECODE_TOKENS, None)).await;
        let (first, last) = (t.arrivals[0], t.arrivals[t.arrivals.len() - 1]);
        v.push((t.arrivals.len() - 1) as f64 / (last - first).as_secs_f64());
    }
    median(v)
}

/// `c` concurrent streams; returns (aggregate tok/s median, ttft p50, ttft p99).
async fn concurrent(engine: &Engine, prompt: &[u32], c: usize, runs: usize) -> (f64, f64, f64) {
    let mut rates = Vec::new();
    let mut ttfts = Vec::new();
    for run in 0..runs {
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..c)
            .map(|i| {
                let e = engine.clone();
                let r = req(prompt, STREAM_TOKENS, Some((run * 1000 + i) as u64));
                tokio::spawn(async move { run_stream(&e, r).await })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            let timed = t.await.unwrap_or_else(|e| {
                eprintln!("stream task failed: {e}");
                std::process::exit(2)
            });
            total += timed.arrivals.len();
            ttfts.push(timed.ttft.as_secs_f64());
        }
        rates.push(total as f64 / t0.elapsed().as_secs_f64());
    }
    (median(rates), percentile(ttfts.clone(), 50.0), percentile(ttfts, 99.0))
}

/// A process that keeps one core busy until killed.
struct BusyCore(std::process::Child);

impl BusyCore {
    fn start() -> Option<Self> {
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdout(Stdio::null())
            .spawn()
            .ok()
            .map(Self)
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn anchor(p40: &[u32], p400: &[u32]) -> Option<serde_json::Value> {
    if std::env::var("STARLING_BENCH_ANCHOR").is_ok_and(|v| v == "0") {
        return None;
    }
    let spec = serde_json::json!({
        "model": smollm2_path(),
        "p40": p40,
        "p400": p400,
        "decode_tokens": DECODE_TOKENS,
    });
    let path = std::env::temp_dir().join(format!("starling-bench-{}.json", std::process::id()));
    std::fs::write(&path, spec.to_string()).ok()?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("llama_cpp_anchor.sh");
    eprintln!("running llama.cpp anchor ({})", script.display());
    let out = Command::new(script).arg(&path).stderr(Stdio::inherit()).output();
    std::fs::remove_file(&path).ok();
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).ok(),
        Ok(o) => {
            eprintln!("anchor failed: {}", o.status);
            None
        }
        Err(e) => {
            eprintln!("anchor failed to start: {e}");
            None
        }
    }
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio: {e}");
            std::process::exit(2)
        }
    };
    rt.block_on(bench());
}

async fn bench() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut loads = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        drop(start(cores));
        loads.push(t.elapsed().as_secs_f64());
    }
    let engine = start(cores);
    let info = engine.info().clone();
    let chat = |u: &str| Prompt::Chat(vec![ChatMessage::new(Role::User, u)]);
    let encode = |p: Prompt| {
        engine.encode_prompt(&p).unwrap_or_else(|e| {
            eprintln!("encode: {e}");
            std::process::exit(2)
        })
    };
    let p40 = encode(chat("Write a short tweet about a new budget mechanical keyboard."));
    let long = "Our spring campaign launches a budget mechanical keyboard with hot-swappable switches, \
                a compact 75 percent layout and a price under fifty dollars. "
        .repeat(12);
    let p400 = encode(chat(&format!("{long}Write three tweets about it.")));

    println!("# Starling engine bench: SmolLM2-135M-Instruct Q4_1, {cores} threads, kernel {:?}", info.kernel);
    if wanted("load") {
        println!("load_s                      {:>8.3}", median(loads.clone()));
    }
    let (mut pf40, mut pf400, mut dec, mut agg16) = (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    if wanted("prefill") {
        pf40 = prefill_rate(&engine, &p40).await;
        pf400 = prefill_rate(&engine, &p400).await;
        println!("prefill_{}tok_tok_s          {:>8.1}", p40.len(), pf40);
        println!("prefill_{}tok_tok_s         {:>8.1}", p400.len(), pf400);
    }
    if wanted("decode") {
        dec = decode_rate(&engine, &p40, 3).await;
        println!("decode_tok_s                {:>8.1}", dec);
    }
    if wanted("concurrent") {
        for c in [1, 4, 16] {
            let (rate, p50, p99) = concurrent(&engine, &p40, c, 3).await;
            if c == 16 {
                agg16 = rate;
            }
            println!(
                "concurrent_{c:<2} aggregate_tok_s {:>8.1}  ttft_p50_ms {:>7.1}  ttft_p99_ms {:>7.1}",
                rate,
                p50 * 1e3,
                p99 * 1e3
            );
        }
    }
    // Named only: at 6,500 tokens one prefill takes a minute or more.
    if std::env::args().any(|a| a == "long_prompts") {
        let sentence = "Our spring campaign launches a budget mechanical keyboard with hot-swappable switches. ";
        for target in [500usize, 1000, 2000, 4000, 6500] {
            let mut ids = encode(chat(&sentence.repeat(target / 16)));
            ids.truncate(target);
            let t = run_stream(&engine, req(&ids, 1, None)).await;
            let secs = t.ttft.as_secs_f64();
            println!("long_prompt_{target:<5} ttft_s {secs:>8.2}  tok_s {:>8.1}", ids.len() as f64 / secs);
        }
    }
    if wanted("busy") {
        let busy = BusyCore::start();
        let loaded = decode_rate(&engine, &p40, 3).await;
        let one = start(1);
        let loaded1 = decode_rate(&one, &p40, 3).await;
        drop(busy);
        println!("decode_with_busy_core_tok_s {:>8.1}  ({cores} engine threads)", loaded);
        println!("decode_with_busy_core_tok_s {:>8.1}  (1 engine thread)", loaded1);
    }
    drop(engine);

    if !wanted("anchor") {
        return;
    }
    if let Some(a) = anchor(&p40, &p400) {
        let f = |k: &str| a[k].as_f64().unwrap_or(f64::NAN);
        println!("# llama.cpp (llama-cpp-python 0.3.36, {} threads, same GGUF, same prompt ids)", a["threads"]);
        println!("llama_cpp_load_s            {:>8.3}", f("load_s"));
        println!("llama_cpp_prefill_p40_tok_s {:>8.1}", f("prefill_p40_tok_s"));
        println!("llama_cpp_prefill_p400_tok_s{:>8.1}", f("prefill_p400_tok_s"));
        println!("llama_cpp_decode_tok_s      {:>8.1}", f("decode_tok_s"));
        println!("# ratios (Starling / llama.cpp)");
        println!("prefill_40                  {:>8.2}x", pf40 / f("prefill_p40_tok_s"));
        println!("prefill_400                 {:>8.2}x", pf400 / f("prefill_p400_tok_s"));
        println!("decode_single_stream        {:>8.2}x   (target >= 1.0x)", dec / f("decode_tok_s"));
        println!("aggregate_16_vs_single      {:>8.2}x   (target >= 3.0x)", agg16 / f("decode_tok_s"));
    }
}
