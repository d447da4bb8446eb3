//! The content pipeline's model-free parts:
//!
//! - [`score`]: a post's quality score in [0, 1] from its parts (length
//!   fit, fluency, readability, entity counts, link and disclosure, banned
//!   terms, near-duplicates, repetition), each with a reason; the weights
//!   come from config, the formula is documented there and deterministic.
//! - [`similarity`]: character n-gram similarity for near-duplicates.
//! - [`prompts`]: the prompt templates of generation (`prompts/`).
//!
//! Fluency is the one part that needs a model: the caller measures the
//! text's mean token log-likelihood (the engine's prompt-logprob path) and
//! hands it in.

pub mod prompts;
pub mod score;
pub mod similarity;

pub use score::{score, Context, Part, Score, Weights};
