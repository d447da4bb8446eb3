//! OpenAI's Chat Completions API as a provider: OpenAI itself, Groq,
//! another Starling, vLLM, llama-server, any OpenAI-compatible base URL.
//! They differ only in base URL, key and extra headers.
//!
//! Audio calls go up as OpenAI's multipart form with `response_format`
//! `verbose_json` (what OpenAI's `whisper-1` and Groq's Whisper models
//! answer with segments and duration), never streamed: a client's stream
//! is made from the segments at the edge.
//!
//! The client's body goes upstream as it came (fields we do not model pass
//! through), with `model` replaced and, on streams, `include_usage` forced
//! on so usage is always known. Upstream errors keep their status where it
//! is the client's business (400, 404, 413, 422, 429) and become 502/503/504
//! where it is ours (a rejected key is our configuration, not the client's).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use crate::config::ProviderConfig;
use crate::error::ApiError;
use crate::providers::{Api, Call, Reply, ChunkValues, Provider};
use crate::providers::{multipart, sse, upstream};

/// Why a provider could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A header name or value in the config is not valid HTTP.
    #[error("provider `{provider}`: invalid header `{header}`")]
    Header {
        /// Provider name.
        provider: String,
        /// Header name.
        header: String,
    },
    /// TLS or HTTP client setup failed.
    #[error("provider `{provider}`: {message}")]
    Client {
        /// Provider name.
        provider: String,
        /// What failed.
        message: String,
    },
}

/// How a provider authenticates.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Auth {
    /// `Authorization: Bearer KEY` (OpenAI and its kind).
    Bearer,
    /// `x-api-key: KEY` (Anthropic).
    XApiKey,
}

/// One provider URL with its client, key and headers: the HTTP part every
/// provider shares.
pub(crate) struct Endpoint {
    pub(crate) name: String,
    url: String,
    /// Everything but the host: content type, auth, the config's extra
    /// headers and the provider's own.
    headers: HeaderMap,
    client: upstream::Client,
    total_timeout: Duration,
}

impl Endpoint {
    /// `path` under the config's base URL, sending `fixed` headers besides
    /// the config's, with idle connections kept for each of `threads` HTTP
    /// threads.
    pub(crate) fn new(
        cfg: &ProviderConfig,
        path: &str,
        auth: Auth,
        fixed: &[(&'static str, &'static str)],
        threads: usize,
    ) -> Result<Self, SetupError> {
        let client_err = |message: String| SetupError::Client { provider: cfg.name.clone(), message };
        let url = format!("{}/{path}", cfg.base_url.trim_end_matches('/'));
        let tls = Arc::new(tls(cfg).map_err(client_err)?);
        let proxy = cfg.proxy.as_ref().filter(|p| !p.0.is_empty()).map(|p| upstream::Proxy::parse(&p.0)).transpose().map_err(client_err)?;
        let client = upstream::Client::new(&url, proxy, &tls, cfg.connect_timeout(), threads)
            .map_err(|e| client_err(format!("base_url `{}`: {e}", cfg.base_url)))?;
        let mut headers = extra_headers(cfg)?;
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in fixed {
            headers.insert(*k, HeaderValue::from_static(v));
        }
        if let Some(key) = &cfg.api_key {
            let (name, value) = match auth {
                Auth::Bearer => (header::AUTHORIZATION, format!("Bearer {}", key.expose())),
                Auth::XApiKey => (HeaderName::from_static("x-api-key"), key.expose().to_owned()),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| client_err("the API key is not a valid header value".into()))?;
            // Kept out of debug output.
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self { name: cfg.name.clone(), url, headers, client, total_timeout: cfg.total_timeout() })
    }

    /// POST `body` as JSON; the answer's body if its status is a success,
    /// else the upstream error as the client should see it.
    pub(crate) async fn post(&self, body: &Value) -> Result<upstream::Body, ApiError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ApiError::internal(e.to_string()))?;
        self.post_bytes(&self.headers, bytes.into()).await
    }

    /// [`Endpoint::post`] of a multipart form.
    async fn post_form(&self, form: multipart::Form) -> Result<upstream::Body, ApiError> {
        let mut headers = self.headers.clone();
        let ctype = HeaderValue::from_str(&form.content_type()).map_err(|e| ApiError::internal(e.to_string()))?;
        headers.insert(header::CONTENT_TYPE, ctype);
        self.post_bytes(&headers, form.finish()).await
    }

    async fn post_bytes(&self, headers: &HeaderMap, bytes: bytes::Bytes) -> Result<upstream::Body, ApiError> {
        let resp = self.client.post(headers, bytes, self.total_timeout).await.map_err(|e| transport_error(&self.name, &e))?;
        if !resp.status.is_success() {
            let body = resp.body.bytes().await.unwrap_or_default();
            return Err(upstream_error(&self.name, resp.status, &resp.headers, &body));
        }
        Ok(resp.body)
    }

    /// A whole JSON answer.
    pub(crate) async fn json(&self, body: upstream::Body) -> Result<Value, ApiError> {
        let body = body.bytes().await.map_err(|e| transport_error(&self.name, &e))?;
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_gateway(format!("`{}` answered malformed JSON: {e}", self.name)))
    }
}

/// One OpenAI-compatible server: its chat, legacy completions and audio APIs.
pub struct OpenAiCompatible {
    endpoint: Endpoint,
    completions: Endpoint,
    transcriptions: Endpoint,
    translations: Endpoint,
    continue_final_message: bool,
}

impl std::fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("OpenAiCompatible").field("name", &self.endpoint.name).field("url", &self.endpoint.url).finish()
    }
}

/// The config's extra headers, checked.
pub(crate) fn extra_headers(cfg: &ProviderConfig) -> Result<HeaderMap, SetupError> {
    let mut headers = HeaderMap::new();
    for (k, v) in &cfg.headers {
        let bad = || SetupError::Header { provider: cfg.name.clone(), header: k.clone() };
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(v).map_err(|_| bad())?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// rustls with ring, the platform's roots and the config's `ca_file`: no
/// process-wide crypto provider, so tests and embedders need no setup.
fn tls(cfg: &ProviderConfig) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra = match &cfg.ca_file {
        None => Vec::new(),
        Some(path) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| format!("ca_file `{}`: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("ca_file `{}`: no certificate in it", path.display()));
            }
            certs
        }
    };
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone()).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous() // Not dangerous: the platform's own verifier.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl OpenAiCompatible {
    /// A provider from its config (its key already read from the env), with
    /// a connection pool for each of `threads` HTTP threads.
    pub fn new(cfg: &ProviderConfig, threads: usize) -> Result<Self, SetupError> {
        Ok(Self {
            endpoint: Endpoint::new(cfg, Api::Chat.path(), Auth::Bearer, &[], threads)?,
            completions: Endpoint::new(cfg, Api::Completions.path(), Auth::Bearer, &[], threads)?,
            transcriptions: Endpoint::new(cfg, Api::Transcriptions.path(), Auth::Bearer, &[], threads)?,
            translations: Endpoint::new(cfg, Api::Translations.path(), Auth::Bearer, &[], threads)?,
            continue_final_message: cfg.continue_final_message,
        })
    }

    /// An audio call: the form up, the `verbose_json` object back.
    async fn transcribe(&self, call: Call) -> Result<Reply, ApiError> {
        let endpoint = if call.api == Api::Translations { &self.translations } else { &self.transcriptions };
        let audio = call.audio.ok_or_else(|| ApiError::internal("an audio call without its file"))?;
        let mut form = multipart::Form::new();
        form.file("file", audio.filename.as_deref().unwrap_or("audio"), &audio.bytes);
        for (name, value) in &call.body {
            match value {
                Value::Array(items) => items.iter().for_each(|v| form.text(&format!("{name}[]"), &text_of(v))),
                Value::Null => {}
                v => form.text(name, &text_of(v)),
            }
        }
        form.text("response_format", "verbose_json");
        let resp = endpoint.post_form(form).await?;
        endpoint.json(resp).await.map(Reply::Json)
    }

    async fn respond(&self, call: Call) -> Result<Reply, ApiError> {
        if call.api.is_audio() {
            return self.transcribe(call).await;
        }
        let mut body = call.body;
        // Starling's own extension, which no upstream knows: a cloud model
        // cannot be masked, so `/v1/posts/generate` checks its answers instead.
        body.remove("x_post");
        if call.continuation {
            // vLLM's and SGLang's way to ask for a prefill to be continued.
            body.insert("continue_final_message".into(), Value::Bool(true));
            body.insert("add_generation_prompt".into(), Value::Bool(false));
        }
        if call.stream {
            match body.get_mut("stream_options") {
                Some(Value::Object(o)) => {
                    o.insert("include_usage".into(), Value::Bool(true));
                }
                _ => {
                    body.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
        }
        let endpoint = match call.api {
            Api::Completions => &self.completions,
            _ => &self.endpoint,
        };
        let resp = endpoint.post(&Value::Object(body)).await?;
        if !call.stream {
            return endpoint.json(resp).await.map(Reply::Json);
        }
        Ok(Reply::Stream(chunks(endpoint.name.clone(), resp)))
    }
}

impl Provider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn continues_prefill(&self) -> bool {
        self.continue_final_message
    }

    fn answer(&self, call: Call) -> BoxFuture<'_, Result<Reply, ApiError>> {
        Box::pin(self.respond(call))
    }
}

/// A form field's text: strings as they are, anything else as JSON.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The chunk objects of an upstream SSE body, ending at `[DONE]`. A body
/// that ends without `[DONE]`, a malformed event or an `error` event ends
/// the stream with an error: never a silent truncation.
fn chunks(provider: String, body: upstream::Body) -> ChunkValues {
    struct St {
        body: upstream::Body,
        decoder: sse::Decoder,
        pending: std::collections::VecDeque<sse::Event>,
        provider: String,
        done: bool,
    }
    let st = St {
        body,
        decoder: sse::Decoder::default(),
        pending: Default::default(),
        provider,
        done: false,
    };
    stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(ev) = st.pending.pop_front() {
                if ev.data == "[DONE]" {
                    st.body.end_now();
                    return None;
                }
                let item = match serde_json::from_str::<Value>(&ev.data) {
                    Ok(v) if v.get("error").is_some() => {
                        st.done = true;
                        Err(error_from_body(&st.provider, StatusCode::BAD_GATEWAY, &v, None))
                    }
                    Ok(v) => Ok(v),
                    Err(e) => {
                        st.done = true;
                        Err(ApiError::bad_gateway(format!("`{}` sent a malformed stream event: {e}", st.provider)))
                    }
                };
                return Some((item, st));
            }
            match st.body.next().await {
                Some(Ok(bytes)) => st.pending.extend(st.decoder.feed(&bytes)),
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(transport_error(&st.provider, &e)), st));
                }
                None => match st.decoder.finish() {
                    Some(ev) => st.pending.push_back(ev),
                    None => {
                        st.done = true;
                        let msg = format!("`{}` ended the stream before [DONE]", st.provider);
                        return Some((Err(ApiError::bad_gateway(msg)), st));
                    }
                },
            }
        }
    })
    .boxed()
}

/// A failure to reach the provider or to read its answer.
pub(crate) fn transport_error(provider: &str, e: &upstream::Error) -> ApiError {
    if e.is_timeout() {
        ApiError::gateway_timeout(format!("`{provider}` timed out: {e}"))
    } else {
        ApiError::bad_gateway(format!("cannot reach `{provider}`: {e}"))
    }
}

/// An upstream error answer as the client should see it.
pub(crate) fn upstream_error(provider: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        json!({"error": {"message": String::from_utf8_lossy(&body[..body.len().min(500)])}})
    });
    error_from_body(provider, status, &v, retry_after(headers))
}

pub(crate) fn error_from_body(provider: &str, status: StatusCode, v: &Value, retry_after: Option<Duration>) -> ApiError {
    if matches!(status.as_u16(), 401 | 403) {
        // Our key or our account: the client can do nothing about it, and
        // the body names our key (masked, but ours): it stays here.
        tracing::warn!(provider, status = status.as_u16(), "the provider refused Starling's credentials");
        return ApiError::bad_gateway(format!(
            "`{provider}` refused this server's credentials ({}); its operator should check the provider's api_key.",
            status.as_u16()
        ));
    }
    let e = &v["error"];
    let message = e["message"].as_str().or_else(|| e.as_str()).unwrap_or("no message");
    let message = format!("`{provider}` answered {}: {message}", status.as_u16());
    let code = e["code"].as_str().and_then(crate::error::known_code);
    let param = e["param"].as_str().map(str::to_owned);
    let mut err = match status.as_u16() {
        // The client's business: keep the status.
        400 | 404 | 413 | 422 => ApiError::upstream_client(status, message),
        429 => ApiError::overloaded(message, retry_after.unwrap_or(Duration::from_secs(1))),
        503 | 529 => ApiError::upstream_unavailable(message, retry_after),
        504 => ApiError::gateway_timeout(message),
        _ => ApiError::bad_gateway(message),
    };
    err.code = code.or(err.code);
    err.param = param.or(err.param);
    err
}

/// The longest wait a provider can ask for: past it, its header is taken
/// as a day (a hostile or broken date must not park a route for years, nor
/// overflow the clock arithmetic that uses it).
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// When the provider says to come back: `Retry-After` (seconds or an HTTP
/// date), else OpenAI/Groq's `x-ratelimit-reset-requests` / `-tokens`
/// (durations like `1s`, `6m0s`, `59.6ms`), the later of the two. Never
/// more than a day.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            return (secs.is_finite() && secs >= 0.0)
                .then(|| Duration::from_secs_f64(secs.min(LONGEST_RETRY_AFTER.as_secs_f64())));
        }
        if let Ok(when) = httpdate(v) {
            return Some(when.duration_since(SystemTime::now()).unwrap_or_default().min(LONGEST_RETRY_AFTER));
        }
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| text(h).and_then(go_duration))
        .max()
}

/// `6m0s`, `1.5s`, `20ms`, `1h2m3s`.
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total <= LONGEST_RETRY_AFTER.as_secs_f64()).then(|| Duration::from_secs_f64(total))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form
/// servers send today. Fields out of their calendar ranges are not a date:
/// the header comes from a remote server and feeds clock arithmetic.
fn httpdate(s: &str) -> Result<SystemTime, ()> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, hms, "GMT"] = parts[..] else { return Err(()) };
    let day: u64 = day.parse().map_err(|_| ())?;
    let year: i64 = year.parse().map_err(|_| ())?;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let mon = MONTHS.iter().position(|m| *m == mon).ok_or(())? as i64 + 1;
    let t: Vec<u64> = hms.split(':').map(|p| p.parse().map_err(|_| ())).collect::<Result<_, _>>()?;
    let [h, m, sec] = t[..] else { return Err(()) };
    if !(1970..=9999).contains(&year) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return Err(());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if mon <= 2 { (year - 1, mon + 9) } else { (year, mon - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).map_err(|_| ())? * 86_400 + h * 3600 + m * 60 + sec;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)).ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset-requests", HeaderValue::from_static("6m0s"));
        h.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("59.6ms"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(360)));
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        assert_eq!(go_duration("1h2m3.5s"), Some(Duration::from_secs_f64(3723.5)));
        assert_eq!(go_duration("soon"), None);
        assert_eq!(
            httpdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
    }

    /// A provider's 401 names our key (masked) and says `invalid_api_key`:
    /// neither reaches the client, who would think its own key is wrong.
    #[test]
    fn upstream_credential_errors_stay_here() {
        let body = serde_json::json!({"error": {
            "message": "Incorrect API key provided: sk-proj-****abcd. You can find your API key in your account settings.",
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
            let err = error_from_body("openai", status, &body, None);
            assert_eq!(err.status, StatusCode::BAD_GATEWAY);
            assert!(!err.message.contains("sk-") && !err.body().to_string().contains("sk-"), "{}", err.message);
            assert_ne!(err.code, Some("invalid_api_key"));
        }
    }

    /// A hostile upstream's `Retry-After` dates: far future, huge fields,
    /// negative years. None may panic; none may ask for more than a day.
    #[test]
    fn hostile_retry_after_dates() {
        for date in [
            "Sun, 06 Nov 9223372036854775807 08:49:37 GMT",
            "Sun, 06 Nov 584554051223 08:49:37 GMT",
            "Sun, 06 Nov -9223372036854775808 08:49:37 GMT",
            "Sun, 18446744073709551615 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 18446744073709551615:49:37 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from_static(date));
            let after = retry_after(&h);
            assert!(after.is_none_or(|a| a <= LONGEST_RETRY_AFTER), "{date}: {after:?}");
        }
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("1e300"));
        assert_eq!(retry_after(&h), Some(LONGEST_RETRY_AFTER));
    }
}
