//! `POST /v1/posts/score`: `{model?, candidates: [text, ...], context?}` ->
//! per candidate (in order) its score in [0, 1] and the parts with their
//! reasons. The formula is `content::score`'s; the weights are `[scoring]`.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use content::Context;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{fluency, local_model, MAX_CANDIDATES};
use crate::error::ApiError;
use crate::server::body::parse;
use crate::server::App;

/// Longest candidate, bytes: far over any platform's limit, still a post.
const MAX_TEXT_BYTES: usize = 16 << 10;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// A local model for fluency (default: the first loaded).
    pub model: Option<String>,
    /// The texts to score.
    pub candidates: Vec<String>,
    /// What they are for.
    #[serde(default)]
    pub context: Context,
}

impl ScoreRequest {
    fn check(&self) -> Result<(), ApiError> {
        if self.candidates.is_empty() || self.candidates.len() > MAX_CANDIDATES {
            return Err(ApiError::invalid("candidates", format!("between 1 and {MAX_CANDIDATES} texts")));
        }
        if let Some(i) = self.candidates.iter().position(|c| c.len() > MAX_TEXT_BYTES) {
            return Err(ApiError::invalid(format!("candidates[{i}]"), format!("longer than {MAX_TEXT_BYTES} bytes")));
        }
        Ok(())
    }
}

pub(crate) async fn score_posts(State(app): State<App>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let req: ScoreRequest = parse(&app, &headers, body).await?;
    req.check()?;
    let generators = app.generators()?;
    let model = local_model(generators, req.model.as_deref())?;
    let (fluency, tokens) = fluency(generators, &model, &req.candidates).await?;
    let data: Vec<Value> = req
        .candidates
        .iter()
        .zip(fluency)
        .enumerate()
        .map(|(index, (text, f))| {
            let s = content::score(text, f, &req.context, &app.0.scoring);
            json!({"index": index, "text": text, "score": s.score, "parts": s.parts})
        })
        .collect();
    Ok(Json(json!({"object": "list", "model": model, "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})))
}
