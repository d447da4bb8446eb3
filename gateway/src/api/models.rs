//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::providers::local::unix_now;
use crate::server::body::PathParam;
use crate::server::App;

/// The local models, then every route name that is not one of them.
pub(crate) async fn list_models(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let local = app.generators()?.models();
    let mut routes: Vec<&str> = app.0.router.models().filter(|r| !local.iter().any(|m| m.id == *r)).collect();
    routes.sort_unstable();
    let mut data: Vec<Value> = local.iter().map(|m| json!(m)).collect();
    let created = unix_now();
    data.extend(routes.into_iter().map(|r| json!({"id": r, "object": "model", "created": created, "owned_by": "starling"})));
    Ok(Json(json!({"object": "list", "data": data})))
}

pub(crate) async fn get_model(State(app): State<App>, PathParam(id): PathParam<String>) -> Result<Json<Value>, ApiError> {
    let models = app.generators()?.models();
    let card = models.into_iter().find(|m| m.id == id).ok_or_else(|| ApiError::model_not_found(&id))?;
    Ok(Json(json!(card)))
}
