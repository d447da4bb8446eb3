//! `POST /v1/chat/completions` and `POST /v1/completions`: OpenAI's two
//! generation APIs, both routed (local engine or any provider) through
//! [`answer`].

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::api::answer::answer;
use crate::api::openai::from_value;
use crate::error::ApiError;
use crate::providers::{Api, Reply};
use crate::server::auth::Caller;
use crate::server::body::read_json;
use crate::server::sse::sse;
use crate::server::App;

/// The fields of a request the server itself needs; the rest is the
/// providers' business.
#[derive(Deserialize)]
pub(crate) struct Head {
    model: String,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<crate::api::openai::StreamOptions>,
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    generate(Api::Chat, app, caller, headers, body).await
}

/// `POST /v1/completions` (legacy).
pub(crate) async fn completions(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    generate(Api::Completions, app, caller, headers, body).await
}

/// A chat completion for another service of the process (`body` as
/// OpenAI's, not streamed): admitted, cached, routed and recorded under
/// `caller`'s key like one that came over HTTP. The whole answer.
pub async fn complete(app: &App, caller: &Caller, body: serde_json::Map<String, Value>) -> Result<Value, ApiError> {
    let model = body.get("model").and_then(Value::as_str).ok_or_else(|| ApiError::invalid("model", "a model is needed"))?.to_owned();
    let (reply, _) = answer(app, caller, Api::Chat, &model, body, false, Instant::now()).await?;
    match reply {
        Reply::Json(v) => Ok(v),
        Reply::Stream(_) => Err(ApiError::bad_gateway("a stream came back for a request that asked for none")),
    }
}

async fn generate(api: Api, app: App, caller: Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let started = Instant::now();
    let value = read_json(&app, &headers, body).await?;
    let head: Head = from_value(&value)?;
    let Value::Object(body) = value else {
        return Err(ApiError::bad_body("The request body must be a JSON object."));
    };
    let stream = head.stream.unwrap_or(false);
    let include_usage = head.stream_options.is_some_and(|o| o.include_usage);
    let (reply, source) = answer(&app, &caller, api, &head.model, body, stream, started).await?;
    let mut res = match reply {
        Reply::Json(v) => Json(v).into_response(),
        Reply::Stream(s) => sse(&app, s, include_usage),
    };
    source.mark(&mut res);
    Ok(res)
}

