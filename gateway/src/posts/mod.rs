//! `/v1/posts/*`: the content pipeline's endpoints on the local model.
//!
//! - `score`: `POST /v1/posts/score`, candidates scored for a context
//!   (`content::score`), fluency measured by the model.
//! - `generate`: `POST /v1/posts/generate`, candidates written under the
//!   post constraint (validated on cloud models), scored, deduplicated, ranked.

pub mod generate;
pub(crate) mod score;

use futures_util::future::try_join_all;
use inference::SamplingParams;

use crate::error::ApiError;
use crate::providers::local::choices::collect_all;
use crate::providers::local::generator::{CompletionRequest, Generators, Input};

/// Most candidates per request (each is a sequence in the engine).
pub const MAX_CANDIDATES: usize = 64;

/// The local model `model` names, or the first one.
fn local_model(generators: &Generators, model: Option<&str>) -> Result<String, ApiError> {
    match model {
        Some(m) => Ok(m.to_owned()),
        None => generators.models().first().map(|m| m.id.clone()).ok_or_else(|| ApiError::not_ready("no local model is loaded")),
    }
}

/// Each text's mean token log-likelihood under `model` (the first token,
/// which nothing predicts, left out; `None` for a text of one token), and
/// the tokens read. All texts go to the engine at once: it scores them in
/// one batch of prefills.
pub(crate) async fn fluency(generators: &Generators, model: &str, texts: &[String]) -> Result<(Vec<Option<f64>>, usize), ApiError> {
    let provider = generators.resolve(model)?;
    let starts = texts.iter().map(|t| {
        provider.complete(CompletionRequest {
            model: model.to_owned(),
            input: Input::Text(t.clone()),
            max_tokens: 1,
            clamp_max_tokens: false,
            sampling: SamplingParams::greedy(),
            stop: Vec::new(),
            logprobs: None,
            prompt_logprobs: Some(0),
            ignore_eos: false,
            constraint: None,
            tools: None,
        })
    });
    let streams = try_join_all(starts).await?;
    let mut tokens = 0;
    let means = collect_all(streams)
        .await?
        .into_iter()
        .map(|c| {
            tokens += c.usage.prompt_tokens;
            let lps: Vec<f64> = c.prompt.iter().flatten().filter_map(|t| t.logprob).map(f64::from).collect();
            (!lps.is_empty()).then(|| lps.iter().sum::<f64>() / lps.len() as f64)
        })
        .collect();
    Ok((means, tokens))
}
