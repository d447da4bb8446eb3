//! Who is calling: the API key a request presents, checked by a layer in
//! front of every guarded route.



use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use platform::keys::KeyInfo;
use crate::server::{App, Exposure};


/// Who is calling: the API key's settings, or None where no key is needed.
/// Handlers behind [`authenticate`] take it as an extractor.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<KeyInfo>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Missing only on a route outside the auth layer: our bug.
        parts.extensions.get::<Self>().cloned().ok_or_else(|| ApiError::internal("route without authentication"))
    }
}

/// The key a request presents: `Authorization: Bearer` (OpenAI) or
/// `x-api-key` (Anthropic).
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim))
}

/// 401 unless the request may proceed; the caller's key (if any) goes into
/// the request for the handler. Keys are needed once any exists, and always
/// on a listener reachable beyond loopback.
pub(crate) async fn authenticate(State(app): State<App>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let presented = presented_key(req.headers()).map(str::to_owned);
    let public = req.extensions().get::<Exposure>().is_some_and(|e| e.public);
    let caller = match (app.0.keys.get(), presented) {
        (Some(ring), Some(p)) => match ring.find(&p) {
            Some(k) => Caller(Some(k)),
            None if ring.any() || public => return Err(ApiError::invalid_api_key(Some(&p))),
            // No keys exist and the server is private: keys are not in use.
            None => Caller(None),
        },
        (Some(ring), None) if public || ring.any() => return Err(ApiError::invalid_api_key(None)),
        (None, _) if public => {
            return Err(ApiError::invalid_api_key(None).with_message(
                "This server listens beyond loopback and keeps no API keys: configure [database] and create one with `starling keys create`.",
            ))
        }
        _ => Caller(None),
    };
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}
