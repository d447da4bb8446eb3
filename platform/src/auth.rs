//! Who is calling, checked in front of every guarded route of every
//! service: the API key a request presents (`Authorization: Bearer`, as
//! OpenAI's clients send it, or `x-api-key`, as Anthropic's do) against the
//! key ring, as a layer (`axum::middleware::from_fn_with_state(guard,
//! authenticate)`). Keys are needed once any exists, and always on a
//! listener reachable beyond loopback ([`Exposure`], set per listener).
//! Each service renders a refusal in its own API's error shape.

use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::keys::{KeyInfo, KeyRing};

/// Who is calling: the API key's settings, or None where no key is needed.
/// Handlers behind [`authenticate`] take it as an extractor.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<KeyInfo>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        // Missing only on a route outside the auth layer: a bug of ours.
        parts.extensions.get::<Self>().cloned().ok_or_else(|| {
            tracing::error!("a guarded handler on a route without authentication");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        })
    }
}

/// Where the listener a request came in by can be reached from. Each
/// listener serves its own router with its own value (a request
/// extension), so one app served on loopback and on a public address asks
/// for keys on the public one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exposure {
    /// Beyond loopback: keys are always required.
    pub public: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No key, where one is needed.
    NoKey,
    /// A key that is not a live one (as presented: show only its ends).
    WrongKey(String),
    /// Beyond loopback with no key store at all: nothing could be accepted.
    PublicWithoutKeys,
}

/// The check's state: the key ring once a database is attached (unset:
/// keys are not in use), and how the service answers a refusal.
#[derive(Clone)]
pub struct Guard {
    /// The server's keys, set when its database is attached.
    pub keys: Arc<OnceLock<Arc<KeyRing>>>,
    /// A refusal in the service's error shape (401).
    pub reject: fn(Refusal) -> Response,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("keys", &self.keys.get().is_some()).finish_non_exhaustive()
    }
}

impl Guard {
    /// Who `headers` say is calling, on a listener reachable as `exposure`.
    pub fn check(&self, headers: &HeaderMap, exposure: Exposure) -> Result<Caller, Refusal> {
        let presented = presented_key(headers);
        match (self.keys.get(), presented) {
            (Some(ring), Some(p)) => match ring.find(p) {
                Some(k) => Ok(Caller(Some(k))),
                None if ring.any() || exposure.public => Err(Refusal::WrongKey(p.to_owned())),
                // No keys exist and the server is private: keys are not in use.
                None => Ok(Caller(None)),
            },
            (Some(ring), None) if exposure.public || ring.any() => Err(Refusal::NoKey),
            (None, _) if exposure.public => Err(Refusal::PublicWithoutKeys),
            _ => Ok(Caller(None)),
        }
    }
}

/// The key a request presents: `Authorization: Bearer` (OpenAI) or
/// `x-api-key` (Anthropic).
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim))
}

/// The middleware: refuses (401, in the service's shape) unless the request
/// may proceed, and hands the handler its [`Caller`].
pub async fn authenticate(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    let exposure = req.extensions().get::<Exposure>().copied().unwrap_or_default();
    match guard.check(req.headers(), exposure) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => (guard.reject)(refusal),
    }
}
