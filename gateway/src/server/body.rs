//! Reading request bodies and query strings into our types, with errors
//! in the API's shape.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
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
        return Err(ApiError::unsupported_media_type("application/json", ctype));
    }
    let bytes = read_bytes(app, headers, body, app.0.config.body_limit_bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_body(format!("The request body is not valid JSON: {e}")))
}

/// Read a whole body of at most `limit` bytes within the body timeout:
/// 413 over the limit (refused before reading when `Content-Length` says
/// so), 408 when it does not arrive in time, 400 when it breaks off.
pub(crate) async fn read_bytes(app: &App, headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let within = Duration::from_secs(app.0.config.body_read_timeout_secs);
    let read = tokio::time::timeout(within, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::body_timeout(within))?;
    read.map_err(|e| {
        // Only a body over the limit is 413; one that ends early (a short
        // body for its Content-Length) or breaks its chunked encoding is
        // malformed: 400.
        let e = e.into_inner();
        if e.is::<http_body_util::LengthLimitError>() {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_body(format!("The request body could not be read: {e}"))
        }
    })
}

/// Read and parse a JSON body into `T` (see [`read_json`] and
/// [`openai::from_value`]).
pub(crate) async fn parse<T: DeserializeOwned>(app: &App, headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    from_value(&read_json(app, headers, body).await?)
}

/// A path parameter as `T`: axum's `Path`, rejected in the API's error
/// shape (a percent-decoded id that is not UTF-8 is a 400 like any other
/// bad input, not axum's plain text).
#[derive(Debug)]
pub(crate) struct PathParam<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::invalid("path", e.body_text()))
    }
}

/// The query string as `T` (400 naming the field).
pub(crate) fn serde_urlencoded_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_body(format!("Invalid query string: {}", e.body_text())))
}
