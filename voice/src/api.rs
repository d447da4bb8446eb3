//! `/v1/voice/commands` over HTTP: a command as multipart audio (`file`,
//! any format `/v1/audio/transcriptions` takes, with optional `account`,
//! `campaign`, `timezone`, `model` fields) or JSON `{"text": ...}`; its
//! confirmation; the list of commands.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use platform::auth::{Caller, Guard, Refusal};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::VoiceError;
use crate::service::{Audio, Input, Voice};

/// A JSON command.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextCommand {
    text: String,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    campaign: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// The body, or why not in our shape (413 naming `file` past the limit).
fn body_bytes(bytes: Result<Bytes, BytesRejection>, limit_mb: usize) -> Result<Bytes, VoiceError> {
    bytes.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => VoiceError::from_status(413, &format!("the upload is larger than [voice] max_upload_mb ({limit_mb} MiB)"), Some("file")),
        status => VoiceError::from_status(status.as_u16(), &e.body_text(), Some("body")),
    })
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, VoiceError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        VoiceError::invalid(if path == "." { "body" } else { &path }, e.into_inner().to_string())
    })
}

/// The multipart form read into an [`Input`].
async fn form(bytes: Bytes, boundary: String) -> Result<Input, VoiceError> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(bytes) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut input = Input::default();
    loop {
        let field = match parts.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(VoiceError::invalid("body", format!("not a readable multipart form: {e}"))),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let data = field.bytes().await.map_err(|e| VoiceError::invalid(&name, format!("cannot be read: {e}")))?;
        let text = || String::from_utf8(data.to_vec()).map_err(|_| VoiceError::invalid(&name, "not UTF-8 text"));
        match name.as_str() {
            "file" => input.audio = Some(Audio { bytes: data.to_vec(), filename }),
            "text" => input.text = Some(text()?),
            "account" => input.account = Some(text()?),
            "campaign" => input.campaign = Some(text()?),
            "timezone" => input.timezone = Some(text()?),
            "model" => input.speech_model = Some(text()?),
            other => return Err(VoiceError::invalid(other, "unknown field: file, text, account, campaign, timezone and model are read")),
        }
    }
    if input.audio.as_ref().is_some_and(|a| a.bytes.is_empty()) {
        return Err(VoiceError::invalid("file", "the file is empty"));
    }
    Ok(input)
}

/// `POST /v1/voice/commands`.
async fn command(State(v): State<Voice>, caller: Caller, headers: HeaderMap, bytes: Result<Bytes, BytesRejection>) -> Result<Json<crate::service::Answer>, VoiceError> {
    let bytes = body_bytes(bytes, v.config().max_upload_mb)?;
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()).unwrap_or("");
    let lower = ctype.trim_start().to_ascii_lowercase();
    let input = if lower.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(ctype).map_err(|e| VoiceError::invalid("content-type", format!("no multipart boundary: {e}")))?;
        form(bytes, boundary).await?
    } else if lower.starts_with("application/json") {
        let t: TextCommand = json_body(&bytes)?;
        Input { text: Some(t.text), account: t.account, campaign: t.campaign, timezone: t.timezone, ..Input::default() }
    } else {
        return Err(VoiceError::from_status(415, &format!("send multipart/form-data (audio) or application/json (text), not `{ctype}`"), Some("content-type")));
    };
    Ok(Json(v.command(&caller, input).await?))
}

/// `POST /v1/voice/commands/confirm`.
async fn confirm(State(v): State<Voice>, caller: Caller, bytes: Result<Bytes, BytesRejection>) -> Result<Json<crate::service::Answer>, VoiceError> {
    let bytes = body_bytes(bytes, v.config().max_upload_mb)?;
    let c: Confirm = json_body(&bytes)?;
    Ok(Json(v.confirm(&caller, c.token.trim()).await?))
}

/// `GET /v1/voice/commands`.
async fn list(State(v): State<Voice>, caller: Caller, RawQuery(q): RawQuery) -> Result<Json<Value>, VoiceError> {
    let q: ListQuery = serde_urlencoded_query(q.as_deref().unwrap_or(""))?;
    let limit = match q.limit.as_deref().map(str::parse::<i64>) {
        None => 50,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        Some(_) => return Err(VoiceError::invalid("limit", "a whole number from 1 to 500")),
    };
    let before = q
        .cursor
        .as_deref()
        .map(|c| c.split_once('.').and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_owned()))).ok_or_else(|| VoiceError::invalid("cursor", "not a cursor this API gave")))
        .transpose()?;
    let rows = v.list(&caller, before, limit).await?;
    let next = (rows.len() as i64 == limit).then(|| rows.last().map(|(a, ms)| format!("{ms}.{}", a.id))).flatten();
    let data: Vec<_> = rows.into_iter().map(|(a, _)| a).collect();
    Ok(Json(json!({"object": "list", "data": data, "next_cursor": next})))
}

fn serde_urlencoded_query<T: serde::de::DeserializeOwned>(q: &str) -> Result<T, VoiceError> {
    let uri: axum::http::Uri = format!("/?{q}").parse().map_err(|_| VoiceError::invalid("query", "not a query string"))?;
    axum::extract::Query::<T>::try_from_uri(&uri).map(|q| q.0).map_err(|e| VoiceError::invalid("query", e.body_text()))
}

fn reject(refusal: Refusal) -> Response {
    let message = match refusal {
        Refusal::NoKey => "an API key is needed: Authorization: Bearer <key>",
        Refusal::WrongKey(_) => "that API key is not a live one",
        Refusal::PublicWithoutKeys => "this server listens beyond loopback and keeps no API keys: create one with `starling keys create`",
    };
    (StatusCode::UNAUTHORIZED, Json(json!({"error": {"message": message, "type": "authentication_error", "param": null, "code": "invalid_api_key"}}))).into_response()
}

/// The routes, behind the key check of `keys`.
pub(crate) fn router(voice: Voice, keys: Guard) -> axum::Router {
    let guard = Guard { keys: keys.keys, reject };
    let limit = voice.config().max_upload_mb << 20;
    axum::Router::new()
        .route("/v1/voice/commands", post(command).get(list))
        .route("/v1/voice/commands/confirm", post(confirm))
        .layer(DefaultBodyLimit::max(limit))
        .route_layer(axum::middleware::from_fn_with_state(guard, platform::auth::authenticate))
        .with_state(voice)
}
