//! Reading Server-Sent Events from an upstream response body, as the
//! WHATWG spec frames them: lines ending in `\n` or `\r\n`, `event:` and
//! `data:` fields (several `data:` lines join with `\n`), a blank line ends
//! an event, `:` lines are comments.

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event:` (None: the default `message`).
    pub event: Option<String>,
    /// The `data:` lines, joined.
    pub data: String,
}

/// Incremental decoder: feed body chunks, get whole events.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl Decoder {
    /// Events completed by `bytes` (a line may span chunks).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl;
            let line = &self.buf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut out);
        }
        self.buf.drain(..start);
        out
    }

    /// The event left when the body ended without its blank line.
    pub fn finish(&mut self) -> Option<Event> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            self.line(rest.trim_end_matches('\r'), &mut out);
        }
        self.line("", &mut out);
        out.pop()
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(Event { event: self.event.take(), data });
            }
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_chunks_and_line_endings() {
        let mut d = Decoder::default();
        assert!(d.feed(b"event: message_start\r\ndata: {\"a\"").is_empty());
        let got = d.feed(b":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata: [DONE]\n");
        assert_eq!(
            got,
            vec![
                Event { event: Some("message_start".into()), data: "{\"a\":1}".into() },
                Event { event: None, data: "x\ny".into() },
            ]
        );
        assert_eq!(d.finish(), Some(Event { event: None, data: "[DONE]".into() }));
        assert_eq!(d.finish(), None);
    }
}
