//! The forward pass against llama.cpp's greedy continuations.
//!
//! Quantised arithmetic legitimately differs between implementations (SIMD
//! summation order, rounding of activation scales), so an exact match of
//! every token is not a fair demand where the top two logits nearly tie.
//! What we check: every token of the first 8 is llama.cpp's, except at a
//! near-tie (llama.cpp's token within `TIE_MARGIN` logits of our top one);
//! there we follow llama.cpp's token (teacher forcing) and keep checking, so
//! a tie can never hide a wrong model.
//!
//! What we see on SmolLM2 Q4_1 with the tiled kernels: 2 of 4 cases agree on
//! all 24 tokens. "What is the capital of France?" differs at step 7 (our
//! margin 0.26), and "Give me three hashtags..." at step 0 (0.16), then agree
//! teacher-forced to the end and to step 18. These are ties in llama.cpp too:
//! its own top-two margins there are 0.15 and 0.043 logits, and llama.cpp
//! evaluating the fixture's tokens in one batch (llama-cpp-python 0.3.36,
//! `logits_all`) already picks a different token at case 1 step 7 than its own
//! token-by-token greedy run did. Where llama.cpp is sure (margin > 0.5) we
//! agree in every case.

use inference::kv_cache::KvCache;
use inference::models::llama_gguf::{BatchSeq, LlamaModel, Logits, Scratch};
use inference::sampling::argmax;

use crate::support::{fixture, ids, smollm2_path};

/// Largest logit gap accepted as a tie between our top token and llama.cpp's.
const TIE_MARGIN: f32 = 0.3;
/// Tokens that must agree (ties aside).
const STRICT_PREFIX: usize = 8;

#[test]
fn greedy_decode_matches_llama_cpp() {
    let model = LlamaModel::load(&smollm2_path()).expect("load");
    let cfg = model.config().clone();
    let fx = fixture("smollm2-greedy.json");
    let mut scratch = Scratch::default();
    let mut logits = Vec::new();
    let mut exact_cases = 0;
    let cases = fx["cases"].as_array().expect("cases");
    for case in cases {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["greedy_ids"]);
        let mut cache = KvCache::new(cfg.n_layer, cfg.kv_dim());
        let mut next = prompt.clone();
        let mut ties = Vec::new();
        let mut first_mismatch = None;
        for (step, &reference) in want.iter().enumerate() {
            let start_pos = cache.len();
            let mut batch = [BatchSeq { tokens: &next, start_pos, cache: &mut cache, logits: Logits::Last }];
            model.forward(&mut batch, &mut scratch, &mut logits).expect("forward");
            let ours = argmax(&logits) as usize;
            if ours as u32 != reference {
                let gap = logits[ours] - logits[reference as usize];
                if step < STRICT_PREFIX {
                    assert!(
                        gap <= TIE_MARGIN,
                        "{:?} step {step}: we pick {ours} ({}), llama.cpp {reference} ({}), gap {gap}",
                        case["user"],
                        logits[ours],
                        logits[reference as usize]
                    );
                    ties.push((step, gap));
                } else {
                    first_mismatch.get_or_insert(step);
                }
            }
            // Follow the reference so later steps see llama.cpp's context.
            next = vec![reference];
        }
        eprintln!("{:?}: near-ties {ties:?}, first divergence after the prefix {first_mismatch:?}", case["user"]);
        assert!(ties.len() <= 2, "more than two near-ties in {:?}: {ties:?}", case["user"]);
        if ties.is_empty() && first_mismatch.is_none() {
            exact_cases += 1;
        }
    }
    assert!(exact_cases * 2 >= cases.len(), "only {exact_cases} of {} cases match exactly", cases.len());
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
