//! `POST /api/v1/media`: a file to attach to posts (the raw bytes, its
//! `Content-Type`); a post's part lists the ids it answers. Uploaded to
//! each platform when the post goes out.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use platform::auth::Caller;

use super::openapi::ErrorBody;
use super::{Access, ApiError};
use crate::store::Media;
use crate::Posting;

/// Largest file accepted.
pub(super) const MAX_BYTES: usize = 16 << 20;
/// What X and Mastodon both take.
const TYPES: [&str; 5] = ["image/jpeg", "image/png", "image/gif", "image/webp", "video/mp4"];

#[utoipa::path(post, operation_id = "media_create", path = "/api/v1/media", tag = "posts",
    request_body(content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"), (Vec<u8> = "image/gif"), (Vec<u8> = "image/webp"), (Vec<u8> = "video/mp4")), description = "The file's bytes (16 MB at most)"),
    responses((status = 201, description = "Kept; list its id in a part's media", body = Media), (status = 400, description = "Not a type both platforms take, or empty", body = ErrorBody),
        (status = 413, description = "Over 16 MB")))]
pub(super) async fn create(State(p): State<Posting>, caller: Caller, headers: HeaderMap, bytes: Bytes) -> Result<(StatusCode, Json<Media>), ApiError> {
    let access = Access::load(&p, &caller).await?;
    access.write()?;
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !TYPES.contains(&ctype.as_str()) {
        return Err(ApiError::invalid("content-type", format!("one of {}", TYPES.join(", "))));
    }
    if bytes.is_empty() {
        return Err(ApiError::invalid("body", "the file's bytes"));
    }
    let owner = access.owner.clone();
    Ok((StatusCode::CREATED, Json(p.store.create_media(&owner, &ctype, &bytes).await?)))
}
