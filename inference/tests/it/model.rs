//! The forward pass against llama.cpp's greedy continuations, for both
//! backends: our CPU kernels and candle tensors (the CUDA path, run here on
//! the CPU).
//!
//! Quantised arithmetic legitimately differs between implementations (SIMD
//! summation order, rounding of activation scales), so an exact match of
//! every token is not a fair demand where the top two logits nearly tie.
//! What we check: every one of the 24 tokens is llama.cpp's, except at a
//! near-tie (llama.cpp's token within `TIE_MARGIN` logits of our top one),
//! at most `MAX_TIES` per case; after a tie we follow llama.cpp's token
//! (teacher forcing) and keep checking, so a tie can never hide a wrong model.
//!
//! What we see on SmolLM2 Q4_1 with the tiled kernels: 2 of 4 cases agree on
//! all 24 tokens. "What is the capital of France?" differs at step 7 (our
//! margin 0.26), and "Give me three hashtags..." at step 0 (0.16) and 18
//! (0.01). On candle tensors: ties at France 7 (0.12) and 11 (0.02),
//! //! hashtags 0 (0.09) and 5 (0.12), "Say hello" 16 (0.08). The early ones
//! are ties in llama.cpp too: its own top-two margins there are 0.15 and 0.043 logits, and llama.cpp
//! evaluating the fixture's tokens in one batch (llama-cpp-python 0.3.36,
//! `logits_all`) already picks a different token at case 1 step 7 than its own
//! token-by-token greedy run did. Where llama.cpp is sure (margin > 0.5) we
//! agree in every case.

use inference::models::llama_device::DeviceLlama;
use inference::models::llama_gguf::LlamaModel;
use inference::models::{BatchSeq, Decoder, Logits};
use inference::sampling::argmax;

use crate::support::{fixture, ids, smollm2_path};

/// Largest logit gap accepted as a tie between our top token and llama.cpp's.
const TIE_MARGIN: f32 = 0.3;
/// Most near-ties accepted in one case's 24 tokens.
const MAX_TIES: usize = 3;

#[test]
fn greedy_decode_matches_llama_cpp() {
    greedy_matches_llama_cpp(&LlamaModel::load(&smollm2_path()).expect("load"));
}

/// The CUDA code path (candle tensors), run on the CPU.
#[test]
fn greedy_decode_on_candle_tensors_matches_llama_cpp() {
    greedy_matches_llama_cpp(&DeviceLlama::load(&smollm2_path(), &candle_core::Device::Cpu).expect("load"));
}

fn greedy_matches_llama_cpp<M: Decoder>(model: &M) {
    let fx = fixture("smollm2-greedy.json");
    let mut scratch = M::Scratch::default();
    let mut logits = Vec::new();
    for case in fx["cases"].as_array().expect("cases") {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["greedy_ids"]);
        let mut cache = model.new_cache(prompt.len() + want.len()).expect("cache");
        let mut next = prompt.clone();
        let mut ties = Vec::new();
        for (step, &reference) in want.iter().enumerate() {
            let start_pos = inference::models::SequenceCache::len(&cache);
            let mut batch = [BatchSeq { tokens: &next, start_pos, cache: &mut cache, logits: Logits::Last }];
            model.forward(&mut batch, &mut scratch, &mut logits).expect("forward");
            let ours = argmax(&logits) as usize;
            if ours as u32 != reference {
                let gap = logits[ours] - logits[reference as usize];
                assert!(
                    gap <= TIE_MARGIN,
                    "{:?} step {step}: we pick {ours} ({}), llama.cpp {reference} ({}), gap {gap}",
                    case["user"],
                    logits[ours],
                    logits[reference as usize]
                );
                ties.push((step, gap));
            }
            // Follow the reference so later steps see llama.cpp's context.
            next = vec![reference];
        }
        eprintln!("{:?}: near-ties {ties:?}", case["user"]);
        assert!(ties.len() <= MAX_TIES, "more than {MAX_TIES} near-ties in {:?}: {ties:?}", case["user"]);
    }
}

#[test]
fn missing_and_corrupt_files_are_clear_errors() {
    let missing = LlamaModel::load(std::path::Path::new("/nonexistent/model.gguf"));
    assert!(matches!(missing, Err(inference::Error::Io { .. })), "{missing:?}");

    let dir = std::env::temp_dir().join(format!("starling-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"definitely not a gguf file").expect("write");
    let err = LlamaModel::load(&garbage).expect_err("garbage must not load");
    assert!(err.to_string().contains("garbage.gguf"), "{err}");

    // A real header whose tensor data is cut off.
    let bytes = std::fs::read(smollm2_path()).expect("read");
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let err = LlamaModel::load(&truncated).expect_err("truncated must not load");
    assert!(matches!(err, inference::Error::InvalidModel { .. }), "{err:?}");
    std::fs::remove_dir_all(&dir).ok();
}
