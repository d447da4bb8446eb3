//! How big a request is, before it runs: prompt tokens from its text,
//! completion tokens from `max_tokens`. Rate limits take the whole, cost
//! comparisons a likely part.

use serde_json::{Map, Value};

/// Output tokens assumed for a request that names no `max_tokens`.
pub(crate) const OUTPUT_ESTIMATE: u64 = 256;

/// Rough prompt and completion sizes of a chat request: four characters of
/// message text per token, and `max_tokens` or [`OUTPUT_ESTIMATE`]
/// generated (the most the request may use, as rate limits count it).
pub fn token_estimate(body: &Map<String, Value>) -> (u64, u64) {
    let messages: usize = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| ms.iter().map(|m| m.get("content").map_or(0, content_chars)).sum())
        .unwrap_or(0);
    let chars = messages + body.get("prompt").map_or(0, prompt_chars);
    let asked = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| body.get(*k).and_then(Value::as_u64));
    ((chars / 4) as u64 + 1, asked.unwrap_or(OUTPUT_ESTIMATE))
}

/// A legacy prompt in characters: text, texts, or token ids (four
/// characters' worth each).
fn prompt_chars(prompt: &Value) -> usize {
    match prompt {
        Value::String(s) => s.len(),
        Value::Number(_) => 4,
        Value::Array(items) => items.iter().map(prompt_chars).sum(),
        _ => 0,
    }
}

/// Tokens an image costs, about (OpenAI bills a 1024x1024 image at high
/// detail 765).
const IMAGE_TOKENS: usize = 765;

/// A message's content in characters of text, an image counting as
/// [`IMAGE_TOKENS`] tokens' worth (a base64 image's length says nothing of
/// its tokens).
fn content_chars(content: &Value) -> usize {
    match content {
        Value::String(s) => s.len(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") => p["text"].as_str().map_or(0, str::len),
                Some("image_url" | "image") => IMAGE_TOKENS * 4,
                _ => p.to_string().len(),
            })
            .sum(),
        other => other.to_string().len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Text counts by its length; an image by a fixed cost, not by the
    /// length of its base64 (a 500 KB image is not 125k tokens).
    #[test]
    fn estimates_count_text_and_images() {
        let body = |content: Value| {
            let v = json!({"messages": [{"role": "user", "content": content}], "max_tokens": 10});
            v.as_object().cloned().unwrap_or_default()
        };
        assert_eq!(token_estimate(&body(json!("a".repeat(400)))), (101, 10));
        let image = json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(500_000))}});
        let parts = json!([{"type": "text", "text": "a".repeat(400)}, image]);
        assert_eq!(token_estimate(&body(parts)), (101 + IMAGE_TOKENS as u64, 10));
    }
}

