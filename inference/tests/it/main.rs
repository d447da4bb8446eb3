//! Integration tests of the inference crate, all on the real SmolLM2 GGUF
//! (fetched by `scripts/fetch-models`) and llama.cpp's reference outputs in
//! `tests/fixtures` at the repository root.
//!
//! - `tokenizer`: ids and round trips against llama.cpp's tokenizer.
//! - `model`: greedy decode against llama.cpp; load errors.
//! - `constraint`: JSON schemas, regex, choices, Lark and post rules hold.
//! - `engine`: the batching engine: determinism, batch equivalence, stop
//!   strings, UTF-8 streaming, cancellation, admission control.

// Test code: a failed expectation is a panic.
#![allow(clippy::panic, clippy::unwrap_used)]

mod constraint;
mod engine;
mod model;
mod speech;
mod support;
mod tokenizer;
