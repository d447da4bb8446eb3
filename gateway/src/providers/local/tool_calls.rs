//! The model's tool calls read back from its text, as it streams: the
//! Hermes format the tools grammar (`api::tools`) makes it write,
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```
//!
//! becomes OpenAI's `tool_calls`: a call's id, type and name as soon as the
//! name is complete, then its arguments piece by piece as they are written.
//! Calls only ever open an answer (the grammar allows text or calls, not
//! both), so an answer that does not start with `<tool_call>` is text.

use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};

const OPEN: &str = "<tool_call>\n{\"name\": ";
const ARGS: &str = ", \"arguments\": ";
/// Ends a call: the call object's brace, then the tag. A JSON text holds no
/// raw newline, so this cannot occur inside the arguments.
const CLOSE: &str = "}\n</tool_call>";
/// Between two calls.
const NEXT: &str = "\n";

/// A piece of an answer with tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Plain text.
    Text(String),
    /// A call begins.
    Call { index: usize, id: String, name: String },
    /// More of a call's arguments.
    Args { index: usize, text: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing decided yet: the answer may still open with a call.
    Start,
    /// The answer is text.
    Text,
    /// Inside `<tool_call>\n{"name": ...` up to the arguments.
    Name,
    /// Inside a call's arguments.
    Args,
    /// After a call: another, or the end.
    Between,
}

/// Reads calls out of an answer's text as it arrives.
#[derive(Debug)]
pub(crate) struct CallReader {
    state: State,
    buf: String,
    calls: usize,
}

impl Default for CallReader {
    fn default() -> Self {
        Self { state: State::Start, buf: String::new(), calls: 0 }
    }
}

/// The longest end of `s` that begins `pattern` (what to hold back).
fn partial_suffix(s: &str, pattern: &str) -> usize {
    (1..pattern.len().min(s.len() + 1))
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && pattern.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

fn call_id() -> String {
    format!("call_{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 24))
}

impl CallReader {
    /// Whether any call was read.
    pub(crate) fn called(&self) -> bool {
        self.calls > 0
    }

    /// Read `text`; what became certain comes out.
    pub(crate) fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            let before = (self.state, self.buf.len());
            match self.state {
                State::Start | State::Between => {
                    let opener = if self.state == State::Start { OPEN.to_owned() } else { format!("{NEXT}{OPEN}") };
                    if let Some(rest) = self.buf.strip_prefix(opener.as_str()) {
                        self.buf = rest.to_owned();
                        self.state = State::Name;
                    } else if !opener.starts_with(self.buf.as_str()) {
                        self.state = State::Text;
                    }
                }
                State::Text => {
                    if !self.buf.is_empty() {
                        out.push(Piece::Text(std::mem::take(&mut self.buf)));
                    }
                }
                State::Name => {
                    if let Some(at) = self.buf.find(ARGS) {
                        let name: String = serde_json::from_str(&self.buf[..at]).unwrap_or_else(|_| self.buf[..at].to_owned());
                        self.buf.drain(..at + ARGS.len());
                        out.push(Piece::Call { index: self.calls, id: call_id(), name });
                        self.calls += 1;
                        self.state = State::Args;
                    }
                }
                State::Args => {
                    let index = self.calls - 1;
                    if let Some(at) = self.buf.find(CLOSE) {
                        let text: String = self.buf.drain(..at + CLOSE.len()).take(at).collect();
                        if !text.is_empty() {
                            out.push(Piece::Args { index, text });
                        }
                        self.state = State::Between;
                    } else {
                        let keep = partial_suffix(&self.buf, CLOSE);
                        let text: String = self.buf.drain(..self.buf.len() - keep).collect();
                        if !text.is_empty() {
                            out.push(Piece::Args { index, text });
                        }
                    }
                }
            }
            if (self.state, self.buf.len()) == before {
                return out;
            }
        }
    }

    /// The end of the answer: whatever is held, as what it was becoming.
    pub(crate) fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.buf);
        match self.state {
            _ if rest.is_empty() => Vec::new(),
            State::Args => vec![Piece::Args { index: self.calls - 1, text: rest }],
            // A call cut short before its arguments, or text that looked like one.
            _ => vec![Piece::Text(rest)],
        }
    }
}

/// A whole answer: its text (`None` when it is only calls) and its calls in
/// OpenAI's shape.
pub(crate) fn read_all(text: &str) -> (Option<String>, Vec<Value>) {
    let mut reader = CallReader::default();
    let mut pieces = reader.push(text);
    pieces.extend(reader.finish());
    let mut content = String::new();
    let mut calls: Vec<Value> = Vec::new();
    for p in pieces {
        match p {
            Piece::Text(t) => content.push_str(&t),
            Piece::Call { id, name, .. } => calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": ""}})),
            Piece::Args { index, text } => {
                if let Some(Value::String(a)) = calls.get_mut(index).map(|c| &mut c["function"]["arguments"]) {
                    a.push_str(&text);
                }
            }
        }
    }
    ((!content.is_empty() || calls.is_empty()).then_some(content), calls)
}

/// A streamed piece as a chat chunk's `delta`.
pub(crate) fn delta(piece: Piece) -> Value {
    match piece {
        Piece::Text(t) => json!({"content": t}),
        Piece::Call { index, id, name } => {
            json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]})
        }
        Piece::Args { index, text } => json!({"tool_calls": [{"index": index, "function": {"arguments": text}}]}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"x\": {\"y\": 1}}}\n</tool_call>\n<tool_call>\n{\"name\": \"post\", \"arguments\": {}}\n</tool_call>";

    #[test]
    fn calls_read_whole_or_a_byte_at_a_time_agree() {
        let (content, calls) = read_all(TWO);
        assert_eq!(content, None);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\": \"Paris\", \"x\": {\"y\": 1}}");
        assert_eq!(calls[1]["function"]["arguments"], "{}");
        let mut r = CallReader::default();
        let mut args = vec![String::new(); 2];
        let (mut names, mut texts) = (Vec::new(), Vec::new());
        for c in TWO.chars() {
            for p in r.push(&c.to_string()) {
                match p {
                    Piece::Call { name, .. } => names.push(name),
                    Piece::Args { index, text } => args[index].push_str(&text),
                    Piece::Text(t) => texts.push(t),
                }
            }
        }
        assert!(r.finish().is_empty() && texts.is_empty(), "{texts:?}");
        assert_eq!(names, ["get_weather", "post"]);
        assert_eq!(args, ["{\"city\": \"Paris\", \"x\": {\"y\": 1}}", "{}"]);
    }

    #[test]
    fn text_is_text_and_a_cut_call_keeps_what_it_had() {
        assert_eq!(read_all("Hello <tool_call>"), (Some("Hello <tool_call>".into()), vec![]));
        assert_eq!(read_all("<tool"), (Some("<tool".into()), vec![]));
        let (content, calls) = read_all("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": ");
        assert_eq!((content, calls[0]["function"]["arguments"].as_str()), (None, Some("{\"a\": ")));
    }
}
