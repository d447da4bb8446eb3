//! The one error type of the HTTP edge, rendered in OpenAI's shape:
//! `{"error": {"message", "type", "param", "code"}}` with the status OpenAI
//! uses for the same fault (400 for every invalid field, never 422).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer: status, OpenAI error object, optional `Retry-After`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's `type` (`invalid_request_error`, `rate_limit_error`, ...).
    pub kind: &'static str,
    /// Human-readable; names the field and the bad value where there is one.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// Machine-readable code (`model_not_found`, `unsupported`, ...).
    pub code: Option<&'static str>,
    /// Seconds until a retry may succeed (429, 503).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: a field is missing, malformed or out of range. The message
    /// names the field first, as OpenAI's do (`Invalid 'temperature': ...`):
    /// SDKs show users the message, not `param`.
    pub fn invalid(param: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        let param = param.into();
        Self {
            message: format!("Invalid '{param}': {detail}"),
            param: Some(param),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", "")
        }
    }

    /// 400: the body is not the JSON we expect (no single field to blame).
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 `unsupported`: a valid OpenAI option this server does not honour
    /// (refused rather than silently ignored).
    pub fn unsupported(param: &str, message: impl std::fmt::Display) -> Self {
        Self {
            code: Some("unsupported"),
            ..Self::invalid(param, message)
        }
    }

    /// 404 for a model nobody serves.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model `{model}` does not exist or you do not have access to it."),
            )
        }
    }

    /// 404 for a path nobody serves.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("Unknown route: {method} {path}"))
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", format!("{method} is not allowed on {path}"))
    }

    /// 413: the body is larger than the configured limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body exceeds the limit of {limit} bytes."),
        )
    }

    /// 408: the body did not arrive in time.
    pub fn body_timeout(within: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!("The request body did not arrive within {} s.", within.as_secs()),
        )
    }

    /// 415: the body is not of the `expected` type (`application/json`, `multipart/form-data`).
    pub fn unsupported_media_type(expected: &str, got: Option<&str>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            format!("Expected `Content-Type: {expected}`, got {}.", got.map_or("none".into(), |g| format!("`{g}`"))),
        )
    }

    /// 429: a provider is at capacity.
    pub fn overloaded(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            code: Some("rate_limit_exceeded"),
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
        }
    }

    /// 503: models are still loading, or the server is shutting down.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(Duration::from_secs(1)),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
        }
    }

    /// 401: no key, or not a live one (shows only the key's ends).
    pub fn invalid_api_key(presented: Option<&str>) -> Self {
        // Only the ends of a long key, as OpenAI shows them.
        let ends = presented.filter(|k| k.len() > 12).and_then(|k| Some((k.get(..8)?, k.get(k.len() - 4..)?)));
        let message = match (presented, ends) {
            (_, Some((head, tail))) => {
                format!("Incorrect API key provided: {head}***{tail}. Create keys with `starling keys create`.")
            }
            (Some(_), None) => "Incorrect API key provided. Create keys with `starling keys create`.".into(),
            (None, _) => "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.".into(),
        };
        Self { code: Some("invalid_api_key"), ..Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message) }
    }

    /// 403: the key may not use this model.
    pub fn model_not_allowed(model: &str) -> Self {
        Self {
            param: Some("model".into()),
            code: Some("model_not_allowed"),
            ..Self::new(StatusCode::FORBIDDEN, "permission_error", format!("This API key may not use the model `{model}`."))
        }
    }

    /// 429 `insufficient_quota`: the key's budget is spent and no $0
    /// candidate can answer; retry after the budget's day ends.
    pub fn insufficient_quota(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            code: Some("insufficient_quota"),
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message)
        }
    }

    /// The same error with another message.
    pub fn with_message(self, message: impl Into<String>) -> Self {
        Self { message: message.into(), ..self }
    }

    /// 502: a provider failed or answered something unusable.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self { code: Some("upstream_error"), ..Self::new(StatusCode::BAD_GATEWAY, "server_error", message) }
    }

    /// 504: a provider did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self { code: Some("upstream_timeout"), ..Self::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message) }
    }

    /// 503: a provider is overloaded or down (Anthropic's 529 too), or
    /// every candidate's breaker is open.
    pub fn upstream_unavailable(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            code: Some("upstream_unavailable"),
            retry_after,
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
        }
    }

    /// A provider refused the request itself (400, 404, 413, 422): the
    /// client's to fix, so its status is kept (422 becomes 400, as OpenAI).
    pub fn upstream_client(status: StatusCode, message: impl Into<String>) -> Self {
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
        Self::new(status, "invalid_request_error", message)
    }

    /// What the router does after this error from one candidate.
    pub fn fate(&self) -> Fate {
        match (self.status.as_u16(), self.code) {
            (_, Some("unsupported" | "model_not_found")) => Fate::Next,
            (429 | 500..=599, _) => Fate::Retry,
            _ => Fate::Final,
        }
    }

    /// 500: a fault of ours, not of the request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The JSON body (also sent as an SSE event when a stream fails midway).
    pub fn body(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        serde_json::json!({
            "error": Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            }
        })
    }
}

/// What one candidate's failure means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The candidate is unhealthy or busy (connect error, timeout, 429,
    /// 5xx): count it against its breaker, try another or try again.
    Retry,
    /// The candidate cannot serve this request (a capability it lacks, a
    /// model it does not have): try another, its health is fine.
    Next,
    /// The request itself is at fault: answer the client with it.
    Final,
}

/// An upstream's `code` as one of the codes clients know, else None.
pub fn known_code(code: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "rate_limit_exceeded",
        "insufficient_quota",
        "model_not_found",
        "invalid_api_key",
        "context_length_exceeded",
        "invalid_value",
        "invalid_type",
        "missing_required_parameter",
        "unsupported_parameter",
        "unsupported_value",
        "content_filter",
    ];
    KNOWN.iter().copied().find(|k| *k == code)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}

impl From<inference::Error> for ApiError {
    fn from(e: inference::Error) -> Self {
        use inference::Error as E;
        match e {
            E::InvalidRequest { param, message } => Self::invalid(param, message),
            E::Overloaded { reason, retry_after } => {
                Self::overloaded(format!("The local engine is at capacity ({reason}); retry later."), retry_after)
            }
            E::EngineStopped => Self::not_ready("The local engine is not running."),
            // Raised by the model's own chat template (e.g. roles that do not
            // alternate): the request's fault.
            E::ChatTemplate(m) => Self::invalid("messages", m),
            E::Tokenizer(m) => Self::invalid("prompt", m),
            other => Self::internal(other.to_string()),
        }
    }
}
