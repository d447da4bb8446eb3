//! Streaming detokenization: token bytes in, whole UTF-8 text out, with stop
//! strings matched on the text across token boundaries.

/// Joins token bytes and emits only complete UTF-8 characters, holding back
/// a partial multi-byte sequence (an emoji split over two tokens) until it
/// completes. Bytes that can never form a character become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Add a token's bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // from_utf8 just validated this prefix, so this cannot fail.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
    }

    /// End of stream: whatever is held is not a character.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Matches stop strings on the generated text. Text that could still be the
/// start of a stop string is held back; a matched stop string is never emitted.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct StopCheck {
    /// Text safe to send now.
    pub emit: String,
    /// Whether a stop string was found (generation must end).
    pub stopped: bool,
}

impl StopMatcher {
    /// A matcher for these stop strings (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Add newly decoded text.
    pub fn push(&mut self, text: &str) -> StopCheck {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopCheck { emit: std::mem::take(&mut self.held), stopped: false };
        }
        // Earliest match of any stop string wins.
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let emit = self.held[..at].to_owned();
            self.held.clear();
            return StopCheck { emit, stopped: true };
        }
        // Hold the longest suffix that is a prefix of some stop string.
        let hold = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - hold;
        let emit = self.held[..cut].to_owned();
        self.held.drain(..cut);
        StopCheck { emit, stopped: false }
    }

    /// End of generation without a stop: release what was held.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`,
/// on char boundaries.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_split_across_tokens_comes_out_whole() {
        let fire = "🔥".as_bytes();
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&fire[..1]), "");
        assert_eq!(s.push(&fire[1..3]), "");
        assert_eq!(s.push(&[fire[3], b'!']), "🔥!");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_and_stream_continues() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(s.push(&[0xE2, 0x82]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_string_across_pushes_is_not_emitted() {
        let mut m = StopMatcher::new(&["END".to_owned()]);
        assert_eq!(m.push("hello E"), StopCheck { emit: "hello ".into(), stopped: false });
        assert_eq!(m.push("N"), StopCheck { emit: "".into(), stopped: false });
        assert_eq!(m.push("D tail"), StopCheck { emit: "".into(), stopped: true });
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(&["END".to_owned()]);
        assert_eq!(m.push("E").emit, "");
        assert_eq!(m.push("X").emit, "EX");
        assert_eq!(m.push("EN").emit, "");
        assert_eq!(m.finish(), "EN");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(&["cd".to_owned(), "b".to_owned()]);
        assert_eq!(m.push("abcd"), StopCheck { emit: "a".into(), stopped: true });
    }
}
