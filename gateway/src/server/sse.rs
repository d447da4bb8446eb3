//! Server-sent events out: OpenAI's `data: {json}` framing with `[DONE]`.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde_json::Value;

use crate::error::ApiError;
use crate::providers::ChunkValues;
use crate::server::shutdown::until_shutdown;
use crate::server::App;

/// A chunk that only carries usage (`choices: []`).
pub(crate) fn usage_only(v: &Value) -> bool {
    v["choices"].as_array().is_some_and(Vec::is_empty) && !v["usage"].is_null()
}

/// `data: {json}\n\n`, written straight into one buffer (`format!`
/// through `Display` costs a formatter pass per value).
pub(crate) fn event(v: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, v);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// A `text/event-stream` response with this body.
pub(crate) fn event_stream(events: impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response())
}

/// An OpenAI SSE response: `data: {json}\n\n` per chunk, then `data: [DONE]`.
/// Without `include_usage` the usage chunk and the `usage` fields are left
/// out. An error ends the stream with an OpenAI error event; so does the
/// end of the shutdown grace. When the client goes away the body, and with
/// it `chunks`, is dropped, which cancels the generation.
pub(crate) fn sse(app: &App, chunks: ChunkValues, include_usage: bool) -> Response {
    let events = stream::unfold(Some(until_shutdown(app, chunks)), move |state| async move {
        let mut chunks = state?;
        loop {
            let bytes = match chunks.next().await {
                None => Bytes::from_static(b"data: [DONE]\n\n"),
                Some(Err(e)) => Bytes::from(format!("data: {}\n\ndata: [DONE]\n\n", e.body())),
                Some(Ok(mut v)) => {
                    if !include_usage {
                        if usage_only(&v) {
                            continue;
                        }
                        if let Some(o) = v.as_object_mut() {
                            o.remove("usage");
                        }
                    }
                    return Some((Ok(event(&v)), Some(chunks)));
                }
            };
            return Some((Ok(bytes), None));
        }
    });
    event_stream(events)
}
