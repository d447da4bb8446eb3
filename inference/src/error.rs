//! The one error type of the inference crate.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong loading a model or serving a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file could not be opened or read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The file we tried to read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a GGUF we can load (bad magic, truncated, wrong tensor shapes).
    #[error("invalid model file {path}: {reason}")]
    InvalidModel {
        /// The file we tried to load.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The GGUF uses an architecture or tensor type this engine does not run.
    #[error("unsupported model {path}: {reason}")]
    Unsupported {
        /// The file we tried to load.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Building the tokenizer from the GGUF metadata failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template could not be parsed or rendered.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A request parameter is out of range; `param` names the field.
    #[error("invalid `{param}`: {message}")]
    InvalidRequest {
        /// The request field at fault.
        param: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// The request's output constraint (grammar, schema, post rules)
    /// cannot be compiled or satisfied; the caller knows which field held it.
    #[error("invalid constraint: {0}")]
    Constraint(String),
    /// The engine is at one of its configured limits; try again after `retry_after`.
    #[error("engine overloaded ({reason}); retry after {retry_after:?}")]
    Overloaded {
        /// Which limit was hit.
        reason: &'static str,
        /// Estimated time until capacity frees up.
        retry_after: Duration,
    },
    /// The engine thread has stopped (shutdown or a failure in a forward pass).
    #[error("engine is not running")]
    EngineStopped,
    /// An error from candle (loading tensors, or a device operation).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A backend panicked during a forward pass (caught; the engine goes on).
    #[error("backend failure: {0}")]
    Backend(String),
}

/// Result alias for the inference crate.
pub type Result<T> = std::result::Result<T, Error>;
