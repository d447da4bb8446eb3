//! X's media upload v2: `POST /2/media/upload/initialize` (type, size,
//! category), the bytes in 4 MB segments to `POST
//! /2/media/upload/{id}/append` (multipart: `media`, `segment_index`),
//! `POST /2/media/upload/{id}/finalize`, then, while `processing_info`
//! says pending or in progress, `GET /2/media/upload?command=STATUS`
//! after the `check_after_secs` it asks for. Upload failures happen before
//! any post is sent: they are retried like a post that did not get out.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::x::{Auth, X};
use super::PublishError;
use crate::model::now_ms;

/// Bytes per APPEND (X takes up to 5 MB).
const SEGMENT: usize = 4 << 20;
/// Most time spent waiting for X to process one file.
const PROCESSING_LIMIT: Duration = Duration::from_secs(120);

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct Initialized {
    id: String,
    expires_after_secs: Option<i64>,
}

#[derive(Deserialize, Default)]
struct Processing {
    state: String,
    #[serde(default)]
    check_after_secs: Option<u64>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Finalized {
    #[serde(default)]
    processing_info: Option<Processing>,
}

/// X's media category for a content type.
fn category(content_type: &str) -> &'static str {
    match content_type {
        "image/gif" => "tweet_gif",
        t if t.starts_with("video/") => "tweet_video",
        _ => "tweet_image",
    }
}

/// An upload step that failed: nothing is posted yet, so it is not sent.
fn not_sent(step: &str, e: PublishError) -> PublishError {
    match e {
        PublishError::Unknown(why) | PublishError::NotSent(why) | PublishError::Unavailable(why) => PublishError::NotSent(format!("media {step}: {why}")),
        other => other,
    }
}

impl X {
    /// Upload `bytes` for the account of `token`: X's media id and when it expires.
    pub(super) async fn upload_media(&self, auth: &Auth<'_>, content_type: &str, bytes: &[u8]) -> Result<(String, Option<i64>), PublishError> {
        let body = json!({"media_type": content_type, "total_bytes": bytes.len(), "media_category": category(content_type)});
        let url = format!("{}/2/media/upload/initialize", self.base());
        let res = self.send(auth.sign(self.http().post(&url), "POST", &url, &[]).json(&body)).await;
        let init: Data<Initialized> = self.read(res).await.map_err(|e| not_sent("initialize", e))?;
        let id = init.data.id;
        let expires = init.data.expires_after_secs.map(|s| now_ms() + s * 1000);
        for (i, chunk) in bytes.chunks(SEGMENT).enumerate() {
            let part = reqwest::multipart::Part::bytes(chunk.to_vec()).file_name("chunk").mime_str("application/octet-stream").map_err(|e| PublishError::Rejected(e.to_string()))?;
            let form = reqwest::multipart::Form::new().text("segment_index", i.to_string()).part("media", part);
            let url = format!("{}/2/media/upload/{id}/append", self.base());
            let res = self.send(auth.sign(self.http().post(&url), "POST", &url, &[]).multipart(form)).await;
            let res = res.map_err(|e| not_sent("append", e))?;
            if !res.status().is_success() {
                return Err(not_sent("append", super::x::failure(res).await));
            }
        }
        let url = format!("{}/2/media/upload/{id}/finalize", self.base());
        let res = self.send(auth.sign(self.http().post(&url), "POST", &url, &[])).await;
        let finalized: Data<Finalized> = self.read(res).await.map_err(|e| not_sent("finalize", e))?;
        let mut processing = finalized.data.processing_info;
        let started = std::time::Instant::now();
        while let Some(p) = processing.take() {
            match p.state.as_str() {
                "succeeded" => break,
                "failed" => return Err(PublishError::Rejected(format!("X could not process the media: {}", p.error.unwrap_or_default()))),
                _ if started.elapsed() > PROCESSING_LIMIT => return Err(PublishError::NotSent("X is still processing the media".into())),
                _ => {
                    // X says when to ask again.
                    tokio::time::sleep(Duration::from_secs(p.check_after_secs.unwrap_or(1).clamp(1, 30))).await;
                    let url = format!("{}/2/media/upload", self.base());
                    let query = [("command", "STATUS"), ("media_id", id.as_str())];
                    let req = auth.sign(self.http().get(&url).query(&query), "GET", &url, &query);
                    let status: Data<Finalized> = self.read(self.send(req).await).await.map_err(|e| not_sent("status", e))?;
                    processing = Some(status.data.processing_info.unwrap_or(Processing { state: "succeeded".into(), ..Processing::default() }));
                }
            }
        }
        Ok((id, expires))
    }
}
