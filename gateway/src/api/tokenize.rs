//! `POST /tokenize` and `POST /detokenize` (vLLM's), on the local models.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::api::openai::{DetokenizeRequest, TokenizeRequest};
use crate::server::body::parse;
use crate::server::App;

pub(crate) async fn tokenize(State(app): State<App>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = parse(&app, &headers, body).await?;
    let input = req.input()?;
    let provider = app.generators()?.resolve(&req.model)?;
    let tokens = provider.tokenize(&req.model, &input, req.add_special_tokens).await?;
    let max_model_len = provider.models().iter().find(|m| m.id == req.model).map(|m| m.max_model_len);
    Ok(Json(json!({"tokens": tokens, "count": tokens.len(), "max_model_len": max_model_len})))
}

pub(crate) async fn detokenize(State(app): State<App>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse(&app, &headers, body).await?;
    let provider = app.generators()?.resolve(&req.model)?;
    Ok(Json(json!({"prompt": provider.detokenize(&req.model, &req.tokens).await?})))
}
