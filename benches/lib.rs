//! Shared pieces of Starling's benchmarks (`cargo bench -p starling-benches`):
//! summary statistics and a small HTTP/1.1 load generator that measures
//! OpenAI-style streamed (SSE) and plain JSON completions.
//!
//! The load generator is hyper's bare client connection, one keep-alive
//! connection per concurrent stream: no pool, no TLS, no redirects, so its
//! own cost stays far below what it measures.

pub mod load;
pub mod process;
pub mod serving;

/// Median; NaN for no values.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile `p` (0..=100); NaN for no values.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Whether the bench's command line selects `section`: arguments filter as
/// test names do (no argument selects everything; flags are ignored).
pub fn wanted(section: &str) -> bool {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    filters.is_empty() || filters.iter().any(|f| section.contains(f.as_str()))
}

/// Concurrency levels to measure: `STARLING_BENCH_LEVELS=1,8` overrides
/// the bench's `default`.
pub fn levels(default: &[usize]) -> Vec<usize> {
    match std::env::var("STARLING_BENCH_LEVELS") {
        Ok(v) => v.split(',').map(|c| c.trim().parse().unwrap_or_else(|_| fail(format!("STARLING_BENCH_LEVELS: `{c}`")))).collect(),
        Err(_) => default.to_vec(),
    }
}

/// The SmolLM2 GGUF `scripts/fetch-models` unpacks (`STARLING_MODELS_DIR`
/// overrides the cache directory); the benches report its absence.
pub use test_support::smollm2_file as smollm2_path;

/// Run a bench's async body on a current-thread runtime: the load generator
/// stays on one core, out of the way of the server it measures.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("tokio: {e}")));
    rt.block_on(f)
}

/// Exit the bench with a message: benches report, they do not panic.
pub fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2)
}
