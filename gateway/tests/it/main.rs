//! The OpenAI-compatible server on loopback over the real SmolLM2.

mod api;
mod errors;
mod fake_openai;
mod keys;
mod python;
mod routing;
mod support;
mod usage;
