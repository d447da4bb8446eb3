//! Integration tests of the inference crate, all on the real SmolLM2 GGUF
//! (fetched by `scripts/fetch-models`) and llama.cpp's reference outputs in
//! `../shared/fixtures`.
//!
//! - `tokenizer`: ids and round trips against llama.cpp's tokenizer.
//! - `model`: greedy decode against llama.cpp; load errors.

mod model;
mod support;
mod tokenizer;
