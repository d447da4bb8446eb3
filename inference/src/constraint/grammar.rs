//! Grammar constraints on llguidance: JSON schemas, regular expressions,
//! choices and Lark grammars compiled against our tokenizer, and the
//! per-sequence matcher that yields each step's token mask.
//!
//! llguidance walks a token trie of the whole vocabulary per mask (about
//! 50 µs for SmolLM2's 49,152 tokens); the trie and parser factory are
//! built once per engine, on the first constrained request (~170 ms), not
//! at start, so an engine that never sees one never pays.

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};

use super::ConstraintError;
use crate::tokenizer::Tokenizer;

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON document valid under this JSON Schema.
    JsonSchema(Value),
    /// A regular expression (Rust `regex` syntax), matched whole.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A grammar in llguidance's Lark syntax (which embeds JSON schemas
    /// with `%json {...}`).
    Lark(String),
}

/// How JSON is laid out unless a schema says otherwise (`x-guidance`):
/// one space after `:` and `,`, no other whitespace. llguidance's default
/// allows free whitespace, in which a small model can loop forever.
fn layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

impl Grammar {
    fn top_level(&self) -> Result<TopLevelGrammar, ConstraintError> {
        Ok(match self {
            Self::JsonObject => TopLevelGrammar::from_json_schema(json!({"type": "object", "x-guidance": layout()})),
            Self::JsonSchema(schema) => {
                let mut schema = schema.clone();
                match &mut schema {
                    Value::Object(o) => {
                        o.entry("x-guidance").or_insert_with(layout);
                    }
                    Value::Bool(_) => {}
                    _ => return Err(ConstraintError("a JSON schema is an object or a boolean".into())),
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Self::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Self::Choice(options) => {
                if options.is_empty() {
                    return Err(ConstraintError("the choice list is empty".into()));
                }
                // Lark string literals are JSON strings.
                let alternatives: Vec<String> = options.iter().map(|o| Value::String(o.clone()).to_string()).collect();
                TopLevelGrammar::from_lark(format!("start: {}", alternatives.join(" | ")))
            }
            Self::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
        })
    }
}

/// Our tokenizer as llguidance sees it.
struct Env {
    tokenizer: Tokenizer,
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Grammar literals are text; a forced string is never split inside
        // a character, so lossy decoding changes nothing real.
        self.tokenizer.encode(&String::from_utf8_lossy(s), false).unwrap_or_default()
    }
}

/// The parser factory of one engine, built on first use.
#[derive(Default)]
pub(crate) struct Grammars {
    factory: OnceLock<Result<Arc<ParserFactory>, String>>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").field("built", &self.factory.get().is_some()).finish()
    }
}

impl Grammars {
    fn factory(&self, tokenizer: &Tokenizer, vocab_size: usize) -> Result<&Arc<ParserFactory>, ConstraintError> {
        self.factory
            .get_or_init(|| build_factory(tokenizer, vocab_size))
            .as_ref()
            .map_err(|e| ConstraintError(format!("cannot build the grammar engine for this tokenizer: {e}")))
    }

    /// Compile `grammar` into a matcher for one sequence.
    pub(crate) fn compile(&self, grammar: &Grammar, tokenizer: &Tokenizer, vocab_size: usize) -> Result<GrammarGuide, ConstraintError> {
        let factory = self.factory(tokenizer, vocab_size)?;
        let parser = factory.create_parser(grammar.top_level()?).map_err(|e| ConstraintError(e.to_string()))?;
        let mut matcher = Matcher::new(Ok(parser));
        // A grammar that compiles but matches nothing fails here, at
        // admission, not mid-generation.
        let first = matcher.compute_mask().map_err(|e| ConstraintError(e.to_string()))?;
        if first.is_zero() {
            return Err(ConstraintError("the grammar matches no text".into()));
        }
        Ok(GrammarGuide { matcher, mask: Some(first), eos: tokenizer.special().eos, extra_eos: tokenizer.special().extra_eos.clone() })
    }
}

fn build_factory(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Arc<ParserFactory>, String> {
    let started = std::time::Instant::now();
    let words: Vec<Vec<u8>> = (0..vocab_size as u32)
        .map(|id| {
            let bytes = tokenizer.token_bytes(id);
            if tokenizer.is_control(id) {
                // The trie's convention for special tokens: never matched as text.
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(bytes);
                w
            } else {
                bytes.to_vec()
            }
        })
        .collect();
    let info = TokRxInfo::new(vocab_size as u32, tokenizer.special().eos);
    let trie = TokTrie::from(&info, &words);
    let env = Env { tokenizer: tokenizer.clone(), trie };
    let mut factory = ParserFactory::new_simple(&(Arc::new(env) as llguidance::toktrie::TokEnv)).map_err(|e| e.to_string())?;
    factory.quiet();
    tracing::info!(took_ms = started.elapsed().as_millis() as u64, vocab_size, "grammar engine ready");
    Ok(Arc::new(factory))
}

/// One sequence's grammar state.
pub(crate) struct GrammarGuide {
    matcher: Matcher,
    /// The mask for the next token, once computed.
    mask: Option<SimpleVob>,
    /// The trie's EOS.
    eos: u32,
    /// Turn-end ids besides it, allowed whenever it is.
    extra_eos: Vec<u32>,
}

impl std::fmt::Debug for GrammarGuide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarGuide").field("stopped", &self.matcher.is_stopped()).finish()
    }
}

impl GrammarGuide {
    /// Compute the next token's mask, unless it is ready. Runs beside the
    /// forward pass, so it costs the batch nothing while it is shorter.
    pub(crate) fn prepare(&mut self) {
        if self.mask.is_none() {
            // An error (or a panic: this runs in a pool job, where one
            // would end the engine) leaves no mask: `restrict` then fails
            // the sequence with the matcher's error.
            let matcher = &mut self.matcher;
            self.mask = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| matcher.compute_mask_or_eos()))
                .ok()
                .and_then(Result::ok);
        }
    }

    /// Send every token the grammar forbids to -inf.
    pub(crate) fn restrict(&mut self, logits: &mut [f32]) -> Result<(), ConstraintError> {
        self.prepare();
        let Some(mask) = &self.mask else {
            return Err(self.error());
        };
        let eos_allowed = mask.is_allowed(self.eos);
        for (i, l) in logits.iter_mut().enumerate() {
            let id = i as u32;
            if !(mask.is_allowed(id) || (eos_allowed && self.extra_eos.contains(&id))) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advance past a sampled token.
    pub(crate) fn commit(&mut self, id: u32, is_eos: bool) -> Result<(), ConstraintError> {
        self.mask = None;
        if is_eos {
            // Any turn-end id ends the grammar the way its EOS would.
            return Ok(());
        }
        self.matcher.consume_token(id).map_err(|e| ConstraintError(e.to_string()))
    }

    fn error(&self) -> ConstraintError {
        ConstraintError(self.matcher.get_error().unwrap_or_else(|| "the grammar allows no further token".into()))
    }
}
