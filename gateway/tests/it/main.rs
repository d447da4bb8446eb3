//! The OpenAI-compatible server on loopback over the real SmolLM2.

mod api;
mod errors;
mod python;
mod support;
