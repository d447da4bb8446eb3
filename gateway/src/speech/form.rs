//! The multipart body of a transcription request, read and checked field by
//! field; every refusal names the field, as OpenAI's do.

use std::collections::HashSet;

use bytes::Bytes;

use crate::error::ApiError;

/// OpenAI's `response_format` for audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

/// A validated transcription (or translation) request.
#[derive(Debug)]
pub(crate) struct Form {
    pub(crate) file: Bytes,
    pub(crate) filename: Option<String>,
    pub(crate) model: String,
    pub(crate) language: Option<String>,
    pub(crate) prompt: Option<String>,
    pub(crate) format: Format,
    /// `None`: 0 with fallback to higher temperatures (OpenAI's "auto").
    pub(crate) temperature: Option<f32>,
    /// `segment` and/or `word` (`verbose_json` only).
    pub(crate) timestamp_granularities: Vec<String>,
    pub(crate) stream: bool,
}

impl Form {
    /// The fields a provider needs besides the file and the model, as the
    /// routed call's body.
    pub(crate) fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut body = serde_json::Map::new();
        let text = |v: &Option<String>| v.clone().map(Value::String);
        for (name, value) in [
            ("language", text(&self.language)),
            ("prompt", text(&self.prompt)),
            // Through its shortest text: 0.2, not 0.20000000298 as a widened f32.
            ("temperature", self.temperature.and_then(|t| t.to_string().parse::<f64>().ok()).map(Value::from)),
            (
                "timestamp_granularities",
                (!self.timestamp_granularities.is_empty()).then(|| self.timestamp_granularities.iter().cloned().map(Value::String).collect()),
            ),
        ] {
            if let Some(v) = value {
                body.insert(name.into(), v);
            }
        }
        body
    }
}

const TEXT_FIELDS: &[&str] = &[
    "model",
    "language",
    "prompt",
    "response_format",
    "temperature",
    "timestamp_granularities[]",
    "timestamp_granularities",
    "stream",
    "chunking_strategy",
    "include[]",
];

/// Most bytes a text field may have (a prompt is the longest).
const TEXT_LIMIT: usize = 64 << 10;

/// Parse `body` with the multipart `boundary`. `translate`: the translations route (no `language`).
pub(crate) async fn parse(body: Bytes, boundary: String, translate: bool) -> Result<Form, ApiError> {
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let constraints = multer::Constraints::new().size_limit(multer::SizeLimit::new().for_field("file", u64::MAX));
    let mut mp = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut file = None;
    let mut filename = None;
    let mut text: Vec<(String, String)> = Vec::new();
    let mut seen = HashSet::new();
    let bad = |e: multer::Error| ApiError::bad_body(format!("The multipart body is malformed: {e}"));
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let Some(name) = field.name().map(str::to_owned) else {
            return Err(ApiError::bad_body("A multipart part has no name."));
        };
        if name == "file" {
            if file.is_some() {
                return Err(ApiError::invalid("file", "given more than once"));
            }
            filename = field.file_name().map(str::to_owned);
            file = Some(field.bytes().await.map_err(bad)?);
            continue;
        }
        if !TEXT_FIELDS.contains(&name.as_str()) {
            return Err(ApiError::invalid(&name, "unknown field"));
        }
        let value = field.bytes().await.map_err(bad)?;
        if value.len() > TEXT_LIMIT {
            return Err(ApiError::invalid(&name, format!("longer than {TEXT_LIMIT} bytes")));
        }
        let value = String::from_utf8(value.to_vec()).map_err(|_| ApiError::invalid(&name, "not UTF-8 text"))?;
        let repeatable = name.ends_with("[]");
        if !seen.insert(name.clone()) && !repeatable {
            return Err(ApiError::invalid(&name, "given more than once"));
        }
        text.push((name, value));
    }
    let file = file.ok_or_else(|| ApiError::invalid("file", "required: the audio file to transcribe"))?;
    let one = |n: &str| text.iter().find(|(k, _)| k == n).map(|(_, v)| v.trim().to_owned());
    let model = one("model").filter(|m| !m.is_empty()).ok_or_else(|| ApiError::invalid("model", "required"))?;
    let format = match one("response_format").as_deref() {
        None | Some("json") => Format::Json,
        Some("text") => Format::Text,
        Some("srt") => Format::Srt,
        Some("vtt") => Format::Vtt,
        Some("verbose_json") => Format::VerboseJson,
        Some(other) => {
            return Err(ApiError::invalid("response_format", format!("`{other}` is not one of json, text, srt, verbose_json, vtt")))
        }
    };
    let temperature = match one("temperature") {
        None => None,
        Some(t) => match t.parse::<f32>() {
            Ok(v) if (0.0..=1.0).contains(&v) => (v > 0.0).then_some(v),
            _ => return Err(ApiError::invalid("temperature", format!("`{t}` is not a number between 0 and 1"))),
        },
    };
    let mut timestamp_granularities: Vec<String> = Vec::new();
    for (k, v) in &text {
        if k.starts_with("timestamp_granularities") {
            match v.trim() {
                g @ ("segment" | "word") => {
                    if !timestamp_granularities.iter().any(|t| t == g) {
                        timestamp_granularities.push(g.to_owned());
                    }
                }
                other => return Err(ApiError::invalid("timestamp_granularities[]", format!("`{other}` is not one of segment, word"))),
            }
        }
    }
    if !timestamp_granularities.is_empty() && format != Format::VerboseJson {
        return Err(ApiError::invalid("timestamp_granularities[]", "requires `response_format` verbose_json"));
    }
    let stream = match one("stream").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::invalid("stream", format!("`{other}` is not true or false"))),
    };
    if stream && !matches!(format, Format::Json | Format::Text) {
        return Err(ApiError::invalid("stream", "streaming answers with `response_format` json or text only"));
    }
    let language = one("language").filter(|l| !l.is_empty());
    if translate && language.is_some() {
        return Err(ApiError::invalid("language", "translations always produce English; leave `language` out"));
    }
    if let Some(l) = &language {
        if !(2..=3).contains(&l.len()) || !l.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(ApiError::invalid("language", format!("`{l}` is not an ISO-639-1 code such as `en` or `de`")));
        }
    }
    Ok(Form {
        file,
        filename,
        model,
        language,
        prompt: one("prompt").filter(|p| !p.is_empty()),
        format,
        temperature,
        timestamp_granularities,
        stream,
    })
}
