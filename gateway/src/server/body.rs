//! Reading request bodies and query strings into our types, with errors
//! in the API's shape.



use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Uri};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;
use crate::api::openai::from_value;
use crate::server::App;


/// Read a JSON body: 415 unless JSON, 413 over the limit, 400 for bad
/// syntax, invalid UTF-8 or nesting past serde_json's depth limit.
pub(crate) async fn read_json(app: &App, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let ctype = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    let is_json = ctype.is_some_and(|c| {
        let mime = c.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json")
    });
    if !is_json {
        return Err(ApiError::unsupported_media_type(ctype));
    }
    let limit = app.0.config.body_limit_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::too_large(limit))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_body(format!("The request body is not valid JSON: {e}")))
}

/// Read and parse a JSON body into `T` (see [`read_json`] and
/// [`openai::from_value`]).
pub(crate) async fn parse<T: DeserializeOwned>(app: &App, headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    from_value(&read_json(app, headers, body).await?)
}

/// The query string as `T` (400 naming the field).
pub(crate) fn serde_urlencoded_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_body(format!("Invalid query string: {}", e.body_text())))
}
