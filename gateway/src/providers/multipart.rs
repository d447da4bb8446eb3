//! A `multipart/form-data` body (RFC 7578) for the uploads providers take:
//! the audio APIs' file and fields.

use bytes::Bytes;
use rand::distributions::{Alphanumeric, DistString};

/// A form being written.
pub(crate) struct Form {
    boundary: String,
    body: Vec<u8>,
}

impl Form {
    /// An empty form with a random boundary: no part can contain it by chance,
    /// and no client can aim a value at it.
    pub(crate) fn new() -> Self {
        let boundary = format!("starling-{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 32));
        Self { boundary, body: Vec::new() }
    }

    /// A text field.
    pub(crate) fn text(&mut self, name: &str, value: &str) {
        self.head(name, None);
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
    }

    /// A file field named `filename`.
    pub(crate) fn file(&mut self, name: &str, filename: &str, bytes: &[u8]) {
        self.head(name, Some(filename));
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
    }

    /// The `Content-Type` header naming the boundary.
    pub(crate) fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body, closed.
    pub(crate) fn finish(mut self) -> Bytes {
        self.body.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        self.body.into()
    }

    fn head(&mut self, name: &str, filename: Option<&str>) {
        let mut head = format!("--{}\r\nContent-Disposition: form-data; name=\"{}\"", self.boundary, quoted(name));
        if let Some(f) = filename {
            head.push_str(&format!("; filename=\"{}\"\r\nContent-Type: application/octet-stream", quoted(f)));
        }
        head.push_str("\r\n\r\n");
        self.body.extend_from_slice(head.as_bytes());
    }
}

/// A name as a quoted-string: a client's file name must not end the header
/// or add one (RFC 7578 leaves escaping open; browsers replace these too).
fn quoted(s: &str) -> String {
    s.chars().map(|c| if matches!(c, '"' | '\r' | '\n' | '\\') { '_' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// multer (what our own endpoint reads with) reads back every part,
    /// a hostile file name included.
    #[tokio::test]
    async fn a_form_reads_back_part_by_part() {
        let mut form = Form::new();
        let audio: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        form.file("file", "evil\"\r\nX-Injected: 1.wav", &audio);
        form.text("model", "whisper-large-v3");
        form.text("timestamp_granularities[]", "segment");
        let boundary = multer::parse_boundary(form.content_type()).expect("boundary");
        let body = form.finish();
        let mut mp = multer::Multipart::new(futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) }), boundary);
        let file = mp.next_field().await.expect("read").expect("file part");
        assert_eq!((file.name(), file.file_name()), (Some("file"), Some("evil___X-Injected: 1.wav")));
        assert_eq!(file.bytes().await.expect("bytes").as_ref(), audio.as_slice());
        let mut texts = Vec::new();
        while let Some(f) = mp.next_field().await.expect("read") {
            let name = f.name().unwrap_or_default().to_owned();
            texts.push((name, f.text().await.expect("text")));
        }
        assert_eq!(texts, [("model".into(), "whisper-large-v3".into()), ("timestamp_granularities[]".into(), "segment".to_owned())]);
    }
}
