//! The gateway's side of `platform::auth`: its key check, answering a
//! refusal in OpenAI's error shape (Anthropic clients get the same 401).

use axum::response::{IntoResponse, Response};
use platform::auth::{Guard, Refusal};

use crate::error::ApiError;
use crate::server::App;

pub use platform::auth::Caller;

/// The check in front of every guarded route of `app`.
pub(crate) fn guard(app: &App) -> Guard {
    Guard { keys: app.0.keys.clone(), reject }
}

fn reject(refusal: Refusal) -> Response {
    let err = match refusal {
        Refusal::NoKey => ApiError::invalid_api_key(None),
        Refusal::WrongKey(presented) => ApiError::invalid_api_key(Some(&presented)),
        Refusal::PublicWithoutKeys => ApiError::invalid_api_key(None).with_message(
            "This server listens beyond loopback and keeps no API keys: configure [database] and create one with `starling keys create`.",
        ),
    };
    err.into_response()
}
