//! The OpenAI-compatible server on loopback over the real SmolLM2.

mod anthropic;
mod api;
mod errors;
mod fake_anthropic;
mod fake_openai;
mod keys;
mod postgres;
mod posts;
mod python;
mod routing;
mod speech;
mod speech_routing;
mod structured;
mod support;
mod tools;
mod upstream;
mod usage;
