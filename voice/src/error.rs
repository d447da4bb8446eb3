//! Errors of `/v1/voice/*` in OpenAI's shape (`{"error": {"message",
//! "type", "param", "code"}}`), as the rest of `/v1` answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// A refusal with its status.
#[derive(Debug, Clone)]
pub struct VoiceError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<String>,
}

impl VoiceError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>, param: Option<String>) -> Self {
        Self { status, kind, code, message: message.into(), param }
    }

    /// 400 naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_value", message, Some(field.to_owned()))
    }

    /// 403: the key may not.
    pub fn forbidden(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", "forbidden", message, None)
    }

    /// 404.
    pub fn not_found(field: &str, message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", "not_found", message, Some(field.to_owned()))
    }

    /// 409.
    pub fn conflict(message: &str) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_request_error", "conflict", message, None)
    }

    /// 410: the token is past its time.
    pub fn gone(message: &str) -> Self {
        Self::new(StatusCode::GONE, "invalid_request_error", "token_expired", message, Some("token".into()))
    }

    /// 503.
    pub fn unavailable(message: &str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "unavailable", message, None)
    }

    /// 500 (a bug: logged).
    pub fn internal(message: String) -> Self {
        tracing::error!(%message, "voice");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error", "the server failed; the command was not carried out", None)
    }

    /// The database did not answer.
    pub fn storage(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "voice store");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "storage_unavailable", "the database did not answer; try again", None)
    }

    /// Another part's error with `status`.
    pub fn from_status(status: u16, message: &str, field: Option<&str>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let (kind, code) = match status.as_u16() {
            400 => ("invalid_request_error", "invalid_value"),
            401 => ("authentication_error", "invalid_api_key"),
            403 => ("permission_error", "forbidden"),
            404 => ("invalid_request_error", "not_found"),
            409 => ("invalid_request_error", "conflict"),
            413 => ("invalid_request_error", "payload_too_large"),
            415 => ("invalid_request_error", "unsupported_media_type"),
            429 => ("rate_limit_error", "rate_limit_exceeded"),
            503 => ("server_error", "unavailable"),
            _ => ("api_error", "upstream_error"),
        };
        Self::new(status, kind, code, message, field.map(str::to_owned))
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error object.
    pub fn body(&self) -> Value {
        json!({"message": self.message, "type": self.kind, "param": self.param, "code": self.code})
    }
}

impl std::fmt::Display for VoiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl IntoResponse for VoiceError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.body()}))).into_response()
    }
}
