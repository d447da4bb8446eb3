//! The engine the tests run on; the model and fixtures come from the
//! shared `test-support` crate.

pub use test_support::{fixture, ids, smollm2_path};

/// An engine on the real SmolLM2 with test-sized limits, adjusted by `f`.
pub fn engine_with(f: impl FnOnce(&mut inference::EngineConfig)) -> inference::Engine {
    let mut cfg = inference::EngineConfig::new(smollm2_path(), "smollm2");
    cfg.threads = 2;
    f(&mut cfg);
    inference::Engine::start(cfg).expect("engine start")
}
