//! Speech bench: `cargo bench -p starling-benches --bench speech`.
//!
//! Whisper tiny.en and base (the CTranslate2 models `scripts/fetch-models`
//! fetches) on real speech: the 17 festival sentences of
//! `test_support::speech` (3.2-5.1 s each) and the 62 s passage, greedy and
//! beam 5, one clip at a time and 8 at once. Per configuration: per-clip wall
//! time p50/p95 (file bytes to transcript, as a client waits for it), the
//! real-time factor (sum of wall / sum of audio at concurrency 1; round wall /
//! audio at 8) and the mean word error rate against the spoken text. Starling
//! runs with the 30 s encoder window (faster-whisper's) and a shorter one
//! (`[speech] min_window_secs`) for the short clips, its linear layers in
//! 8-bit (our kernels, the default on the CPU) and in f32 (candle).
//!
//! Then faster-whisper 1.2.1 (`benches/faster_whisper_anchor.sh`, a throwaway
//! venv) on the same model folders and clips, int8 and float32,
//! `cpu_threads` = the machine's cores, in the same run; its transcripts are
//! scored by the same WER, and the ratios are printed. Nothing is asserted.
//!
//! Sections (arguments filter as test names do): `short`, `long`, `anchor`.
//! Env: `STARLING_BENCH_ANCHOR=0` skips faster-whisper; `STARLING_BENCH_WINDOW`
//! sets the shorter window (default 15 s, `[speech]`'s); `STARLING_BENCH_MODELS`
//! (`tiny.en,base`) and `STARLING_BENCH_PRECISION` (`int8,float`) pick
//! what Starling runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use inference::speech::{audio, Precision, SpeechEngine, SpeechEngineConfig, SpeechModel, TranscribeOptions};
use inference::DeviceSpec;
use serde_json::{json, Value};
use starling_benches::{median, percentile, wanted};
use test_support::speech::{clip, long_passage, Variant, SENTENCES};
use test_support::wer::wer;

struct Clip {
    id: String,
    path: PathBuf,
    reference: String,
    secs: f64,
}

/// One configuration's figures.
#[derive(Clone, Copy)]
struct Figures {
    p50: f64,
    p95: f64,
    rtf: f64,
    wer: f64,
}

fn fail(msg: String) -> ! {
    eprintln!("speech bench: {msg}");
    std::process::exit(1)
}

fn short_clips() -> Vec<Clip> {
    SENTENCES
        .iter()
        .map(|s| {
            let path = clip(s, Variant::Base16k);
            let secs = test_support::speech::wav_info(&path).frames as f64 / 16_000.0;
            Clip { id: s.id.into(), path, reference: s.reference.into(), secs }
        })
        .collect()
}

fn long_clip() -> Vec<Clip> {
    let p = long_passage();
    let secs = test_support::speech::wav_info(&p.path).frames as f64 / 16_000.0;
    vec![Clip { id: "passage".into(), path: p.path, reference: p.reference, secs }]
}

fn load(name: &str, concurrency: usize, precision: Precision) -> SpeechEngine {
    let dir = test_support::models_dir().join(name);
    let model = SpeechModel::load(&dir, DeviceSpec::Cpu, precision).unwrap_or_else(|e| fail(format!("{name}: {e} (run scripts/fetch-models)")));
    SpeechEngine::start(model, SpeechEngineConfig { max_running: concurrency, max_clips: 256 }).unwrap_or_else(|e| fail(e.to_string()))
}

/// Every clip through `engine`, at most `concurrency` in flight; per clip (wall, transcript).
async fn run(engine: &SpeechEngine, clips: &[Clip], concurrency: usize, opts: &TranscribeOptions) -> (Vec<(f64, String)>, f64) {
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in clips {
        let permit = Arc::clone(&gate).acquire_owned().await.unwrap_or_else(|e| fail(e.to_string()));
        let (engine, opts, path) = (engine.clone(), opts.clone(), c.path.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
            let ext = path.extension().and_then(|e| e.to_str()).map(str::to_owned);
            // Decoding and the log-mel off the runtime, as the server does.
            let stream = tokio::task::spawn_blocking(move || {
                let samples = audio::decode(bytes, ext.as_deref(), 3600.0).unwrap_or_else(|e| fail(e.to_string())).samples;
                engine.transcribe(&samples, opts).unwrap_or_else(|e| fail(e.to_string()))
            })
            .await
            .unwrap_or_else(|e| fail(e.to_string()));
            let t = stream.finish().await;
            drop(permit);
            (t0.elapsed().as_secs_f64(), t.unwrap_or_else(|e| fail(e.to_string())).text)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| fail(e.to_string())));
    }
    (out, started.elapsed().as_secs_f64())
}

fn figures(clips: &[Clip], walls: &[f64], texts: &[String], round: f64, concurrency: usize) -> Figures {
    let audio: f64 = clips.iter().map(|c| c.secs).sum();
    let rtf = if concurrency == 1 { walls.iter().sum::<f64>() / audio } else { round / audio };
    let wer_mean = clips.iter().zip(texts).map(|(c, t)| f64::from(wer(&c.reference, t))).sum::<f64>() / clips.len() as f64;
    Figures { p50: median(walls.to_vec()), p95: percentile(walls.to_vec(), 95.0), rtf, wer: wer_mean }
}

fn row(model: &str, beam: usize, conc: usize, engine: &str, f: Figures) {
    println!("{model:<8} {beam:>4} {conc:>4}  {engine:<26} {:>7.3} {:>7.3} {:>7.3} {:>6.3}", f.p50, f.p95, f.rtf, f.wer);
}

fn header(title: &str) {
    println!("\n# {title}");
    println!("{:<8} {:>4} {:>4}  {:<26} {:>7} {:>7} {:>7} {:>6}", "model", "beam", "conc", "engine", "p50_s", "p95_s", "RTF", "WER");
}

type Key = (String, usize, usize);

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let short_window: u32 = std::env::var("STARLING_BENCH_WINDOW").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let listed = |var: &str, all: &str| std::env::var(var).unwrap_or_else(|_| all.into()).split(',').map(str::to_owned).collect::<Vec<_>>();
    let (only_models, precisions) = (listed("STARLING_BENCH_MODELS", "tiny.en,base"), listed("STARLING_BENCH_PRECISION", "int8,float"));
    let precisions: Vec<Precision> = precisions
        .iter()
        .map(|p| serde_json::from_value(json!(p)).unwrap_or_else(|_| fail(format!("precision `{p}`: int8 or float"))))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap_or_else(|e| fail(e.to_string()));
    let models: Vec<(&str, &str)> =
        [("tiny.en", "whisper-tiny-en"), ("base", "whisper-base")].into_iter().filter(|(l, _)| only_models.iter().any(|m| m == l)).collect();
    let mut sets: Vec<(&str, Vec<Clip>, Vec<usize>)> = Vec::new();
    if wanted("short") {
        sets.push(("short", short_clips(), vec![1, 8]));
    }
    if wanted("long") {
        sets.push(("long", long_clip(), vec![1]));
    }
    let mut ours: BTreeMap<(String, Key), Figures> = BTreeMap::new();
    for (set, clips, levels) in &sets {
        let audio: f64 = clips.iter().map(|c| c.secs).sum();
        header(&format!("{set}: {} clips, {audio:.1} s of audio, {threads} threads (Starling)", clips.len()));
        for &(label, name) in &models {
            for (&conc, &precision) in levels.iter().flat_map(|c| precisions.iter().map(move |p| (c, p))) {
                let engine = load(name, conc, precision);
                let precision = if precision == Precision::Int8 { "int8" } else { "f32" };
                // Warm up: first-touch of the weights and the allocator.
                let _ = rt.block_on(run(&engine, &clips[..1], 1, &TranscribeOptions { beam_size: 1, ..Default::default() }));
                for beam in [1, 5] {
                    let windows: Vec<u32> = if *set == "short" { vec![30, short_window] } else { vec![30] };
                    for w in windows {
                        let opts = TranscribeOptions { beam_size: beam, min_window_secs: w, ..Default::default() };
                        let (out, round) = rt.block_on(run(&engine, clips, conc, &opts));
                        let walls: Vec<f64> = out.iter().map(|o| o.0).collect();
                        let texts: Vec<String> = out.into_iter().map(|o| o.1).collect();
                        let f = figures(clips, &walls, &texts, round, conc);
                        let engine_label = format!("starling {precision} window {w}s");
                        row(label, beam, conc, &engine_label, f);
                        ours.insert((set.to_string(), (format!("{label} {precision} w{w}"), beam, conc)), f);
                    }
                }
            }
        }
    }
    if !wanted("anchor") || std::env::var("STARLING_BENCH_ANCHOR").as_deref() == Ok("0") {
        return;
    }
    for (set, clips, levels) in &sets {
        let anchor = faster_whisper(threads, clips, levels, &models);
        let audio: f64 = clips.iter().map(|c| c.secs).sum();
        header(&format!(
            "{set}: faster-whisper {} (CTranslate2 {}), same clips, cpu_threads {threads}",
            anchor["faster_whisper"].as_str().unwrap_or("?"),
            anchor["ctranslate2"].as_str().unwrap_or("?")
        ));
        let mut theirs: BTreeMap<Key, (String, Figures)> = BTreeMap::new();
        for r in anchor["runs"].as_array().into_iter().flatten() {
            if let Some(e) = r["error"].as_str() {
                println!("anchor run failed: {e}");
                continue;
            }
            let dir = r["model_dir"].as_str().unwrap_or_default();
            let label = models.iter().find(|(_, n)| dir.ends_with(n)).map_or("?", |(l, _)| l);
            let (beam, conc) = (r["beam_size"].as_u64().unwrap_or(0) as usize, r["concurrency"].as_u64().unwrap_or(0) as usize);
            let ct = r["compute_type"].as_str().unwrap_or("?").to_owned();
            let per: Vec<&Value> = r["clips"].as_array().into_iter().flatten().collect();
            let walls: Vec<f64> = per.iter().map(|c| median(c["wall_s"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect())).collect();
            let texts: Vec<String> = per.iter().map(|c| c["text"].as_str().unwrap_or_default().to_owned()).collect();
            let round = median(r["round_wall_s"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect());
            let f = figures(clips, &walls, &texts, round, conc);
            row(label, beam, conc, &format!("faster-whisper {ct}"), f);
            if ct == "int8" {
                theirs.insert((label.to_owned(), beam, conc), (ct, f));
            }
        }
        println!("\n# {set}: ratios, Starling / faster-whisper int8 (p50 wall; below 1: Starling faster), and WERs ({audio:.1} s)");
        for ((s, (name, beam, conc)), f) in &ours {
            if s != set {
                continue;
            }
            let model = name.split(' ').next().unwrap_or_default().to_owned();
            if let Some((_, a)) = theirs.get(&(model, *beam, *conc)) {
                println!(
                    "{name:<18} beam {beam} conc {conc}: p50 {:.2}x  RTF {:.2}x  WER {:.3} vs {:.3}",
                    f.p50 / a.p50,
                    f.rtf / a.rtf,
                    f.wer,
                    a.wer
                );
            }
        }
    }
}

/// Run the anchor over the same clips; its JSON.
fn faster_whisper(threads: usize, clips: &[Clip], levels: &[usize], models: &[(&str, &str)]) -> Value {
    let clip_list: Vec<Value> = clips.iter().map(|c| json!({"id": c.id, "path": c.path})).collect();
    let mut runs = Vec::new();
    for (_, name) in models {
        for ct in ["int8", "float32"] {
            for &conc in levels {
                for beam in [1, 5] {
                    let dir = test_support::models_dir().join(name);
                    runs.push(json!({"model_dir": dir, "compute_type": ct, "beam_size": beam, "concurrency": conc, "clips": clip_list, "repeats": 1}));
                }
            }
        }
    }
    let spec = json!({"threads": threads, "runs": runs});
    let spec_path = std::env::temp_dir().join(format!("starling-speech-anchor-{}.json", std::process::id()));
    std::fs::write(&spec_path, spec.to_string()).unwrap_or_else(|e| fail(e.to_string()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("faster_whisper_anchor.sh");
    eprintln!("running faster-whisper anchor ({})", script.display());
    let out = Command::new(&script).arg(&spec_path).output().unwrap_or_else(|e| fail(format!("{}: {e}", script.display())));
    let _ = std::fs::remove_file(&spec_path);
    if !out.status.success() {
        fail(format!("anchor failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| fail(format!("anchor output: {e}")))
}
