//! Paths to the real model and the reference fixtures in `tests/fixtures`.

use std::path::PathBuf;

/// The SmolLM2 GGUF fetched by `scripts/fetch-models`. `STARLING_MODELS_DIR`
/// overrides the cache folder.
pub fn smollm2_path() -> PathBuf {
    let dir = std::env::var_os("STARLING_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/cache"));
    let p = dir.join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    p
}

/// A JSON fixture from the repository's `tests/fixtures`.
pub fn fixture(name: &str) -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Ids from a JSON array.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// An engine on the real SmolLM2 with test-sized limits, adjusted by `f`.
pub fn engine_with(f: impl FnOnce(&mut inference::EngineConfig)) -> inference::Engine {
    let mut cfg = inference::EngineConfig::new(smollm2_path(), "smollm2");
    cfg.threads = 2;
    f(&mut cfg);
    inference::Engine::start(cfg).expect("engine start")
}
