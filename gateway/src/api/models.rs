//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::providers::local::unix_now;
use crate::server::body::PathParam;
use crate::server::App;

/// The local models, the speech models, then every route name that is not one of them.
pub(crate) async fn list_models(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let local = app.generators()?.models();
    let mut data: Vec<Value> = local.iter().map(|m| json!(m)).collect();
    data.extend(speech_cards(&app));
    let listed: Vec<String> = data.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect();
    let mut routes: Vec<&str> = app.0.router.models().filter(|r| !listed.iter().any(|m| m == r)).collect();
    routes.sort_unstable();
    let created = unix_now();
    data.extend(routes.into_iter().map(|r| json!({"id": r, "object": "model", "created": created, "owned_by": "starling"})));
    Ok(Json(json!({"object": "list", "data": data})))
}

/// The loaded Whisper models, as `/v1/models` lists them.
fn speech_cards(app: &App) -> Vec<Value> {
    let Some(speech) = app.0.speech.get() else { return Vec::new() };
    let created = unix_now();
    speech
        .names()
        .map(|name| json!({"id": name, "object": "model", "created": created, "owned_by": "starling", "task": "speech-to-text"}))
        .collect()
}

pub(crate) async fn get_model(State(app): State<App>, PathParam(id): PathParam<String>) -> Result<Json<Value>, ApiError> {
    let models = app.generators()?.models();
    if let Some(card) = models.into_iter().find(|m| m.id == id) {
        return Ok(Json(json!(card)));
    }
    speech_cards(&app).into_iter().find(|c| c["id"] == id.as_str()).map(Json).ok_or_else(|| ApiError::model_not_found(&id))
}
