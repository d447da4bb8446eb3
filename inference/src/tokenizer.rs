//! The tokenizer, rebuilt from a GGUF's `tokenizer.ggml.*` metadata.
//!
//! Encoding uses the `tokenizers` crate: a byte-level BPE over the GGUF vocab
//! and merges, preceded by the pre-split llama.cpp applies for the file's
//! `tokenizer.ggml.pre` (for `smollm`: every digit on its own, then the GPT-2
//! regex). Control tokens are added as special tokens, user-defined tokens as
//! ordinary added tokens (llama.cpp matches those even in plain text).
//!
//! Decoding does not go through `tokenizers`: every id maps to its raw bytes
//! once at load, so the streaming detokenizer (`detok`) can join bytes across
//! tokens and only ever emit whole UTF-8 characters.

use std::collections::HashMap;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::SplitDelimiterBehavior;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

use crate::error::{Error, Result};
use crate::gguf::{token_type, GgufFile};

/// Token ids the engine needs to know about.
#[derive(Clone, Debug)]
pub struct SpecialTokens {
    /// Beginning of sequence, if the model defines one.
    pub bos: Option<u32>,
    /// End of sequence: generation stops here.
    pub eos: u32,
    /// Further ids that end a turn (`<|im_end|>`, `<|eot_id|>`, ...).
    pub extra_eos: Vec<u32>,
    /// Whether the model wants BOS prepended (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
}

/// Encoder and byte-level decoder for one model.
#[derive(Clone)]
pub struct Tokenizer {
    /// Recognises special tokens written in the text (for rendered chat prompts).
    with_special: HfTokenizer,
    /// Treats special-token strings as plain text (for user-supplied text).
    plain: HfTokenizer,
    /// Raw bytes of every token id (control tokens: their literal text).
    bytes: Vec<Vec<u8>>,
    /// Whether each id is a control token (skipped when decoding output).
    is_control: Vec<bool>,
    /// Token text -> id, for looking up special tokens by name.
    by_text: HashMap<String, u32>,
    /// The text of every control token (`<|im_start|>`, ...), longest first
    /// so that one that contains another is found whole.
    control_texts: Vec<String>,
    special: SpecialTokens,
}

/// Around the index of a control token's text in an escaped message
/// ([`Tokenizer::escape_control`]): private-use characters of plane 15,
/// which the chat template passes through as any other text.
const ESCAPE_OPEN: char = '\u{F0000}';
const ESCAPE_CLOSE: char = '\u{F0001}';

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.bytes.len())
            .field("special", &self.special)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Build the tokenizer from GGUF metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = g.str_opt("tokenizer.ggml.model").unwrap_or("");
        if model != "gpt2" {
            return Err(Error::Unsupported {
                path: g.path.clone(),
                reason: format!("tokenizer model `{model}` (supported: gpt2 byte-level BPE)"),
            });
        }
        let pre = g.str_opt("tokenizer.ggml.pre").unwrap_or("default");
        let tokens = g.strings("tokenizer.ggml.tokens")?;
        let merges = g.strings("tokenizer.ggml.merges")?;
        let types = g
            .ints_opt("tokenizer.ggml.token_type")?
            .unwrap_or_else(|| vec![token_type::NORMAL; tokens.len()]);
        if types.len() != tokens.len() {
            return Err(Error::Tokenizer(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }

        let mut vocab = HashMap::with_capacity(tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            vocab.insert((*t).to_owned(), id as u32);
        }
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| Error::Tokenizer(format!("malformed merge `{m}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vocab>(), merges)
            .build()
            .map_err(tok_err)?;

        let mut hf = HfTokenizer::new(bpe);
        hf.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
        hf.with_decoder(Some(ByteLevel::default()));
        let mut control = Vec::new();
        let mut user = Vec::new();
        for (id, t) in tokens.iter().enumerate() {
            match types[id] {
                token_type::CONTROL => control.push(AddedToken::from(*t, true)),
                token_type::USER_DEFINED => user.push(AddedToken::from(*t, false)),
                _ => {}
            }
        }
        hf.add_special_tokens(control).map_err(tok_err)?;
        hf.add_tokens(user).map_err(tok_err)?;
        let mut plain = hf.clone();
        plain.set_encode_special_tokens(true);
        let mut control_texts: Vec<String> =
            tokens.iter().zip(&types).filter(|(t, ty)| **ty == token_type::CONTROL && !t.is_empty()).map(|(t, _)| (*t).to_owned()).collect();
        control_texts.sort_by_key(|t| std::cmp::Reverse(t.len()));

        let decode_map = byte_level_decode_map();
        let mut bytes = Vec::with_capacity(tokens.len());
        let mut is_control = Vec::with_capacity(tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            let ctl = types[id] == token_type::CONTROL;
            is_control.push(ctl);
            if ctl || types[id] == token_type::USER_DEFINED {
                bytes.push(t.as_bytes().to_vec());
            } else {
                // Byte-level tokens spell each byte as one printable char; a
                // char outside the map (malformed vocab) is kept as UTF-8.
                let mut b = Vec::with_capacity(t.len());
                for c in t.chars() {
                    match decode_map.get(&c) {
                        Some(&byte) => b.push(byte),
                        None => b.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                bytes.push(b);
            }
        }

        let id_of = |key: &str| -> Result<Option<u32>> {
            Ok(g.get(key).is_some().then(|| g.u64(key)).transpose()?.map(|v| v as u32))
        };
        let eos = id_of("tokenizer.ggml.eos_token_id")?
            .ok_or_else(|| Error::Tokenizer("missing tokenizer.ggml.eos_token_id".into()))?;
        let bos = id_of("tokenizer.ggml.bos_token_id")?;
        let eot = id_of("tokenizer.ggml.eot_token_id")?;
        let add_bos = matches!(
            g.get("tokenizer.ggml.add_bos_token"),
            Some(candle_core::quantized::gguf_file::Value::Bool(true))
        );
        let mut extra_eos: Vec<u32> = eot.into_iter().collect();
        // Chat models end a turn with a marker that is not always the file's
        // EOS (SmolLM2: EOS is <|im_end|>, but Qwen2 files name <|endoftext|>).
        for marker in ["<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>"] {
            if let Some(&id) = vocab.get(marker) {
                if id != eos && types[id as usize] == token_type::CONTROL && !extra_eos.contains(&id) {
                    extra_eos.push(id);
                }
            }
        }
        for id in bos.iter().chain(std::iter::once(&eos)).chain(&extra_eos) {
            if *id as usize >= tokens.len() {
                return Err(Error::Tokenizer(format!("special token id {id} out of range")));
            }
        }

        Ok(Self {
            with_special: hf,
            plain,
            bytes,
            is_control,
            by_text: vocab,
            control_texts,
            special: SpecialTokens {
                bos,
                eos,
                extra_eos,
                add_bos,
            },
        })
    }

    /// Encode text. With `parse_special`, special-token strings in the text
    /// become their ids (use for prompts rendered by the chat template);
    /// without it they are tokenized as ordinary text (use for user input).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let tok = if parse_special { &self.with_special } else { &self.plain };
        let enc = tok.encode_fast(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Whether `text` spells a control token (`<|im_start|>`, ...).
    pub fn has_control_text(&self, text: &str) -> bool {
        self.control_texts.iter().any(|t| text.contains(t.as_str()))
    }

    /// `text` with each control token's spelling replaced by an escape that
    /// [`Tokenizer::encode_escaped`] turns back into that text as plain
    /// tokens. A chat message's content is escaped before the template
    /// renders it, so `<|im_start|>system` typed by a user stays text while
    /// the template's own markers become control tokens.
    pub fn escape_control(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        'scan: while !rest.is_empty() {
            for (i, t) in self.control_texts.iter().enumerate() {
                if let Some(tail) = rest.strip_prefix(t.as_str()) {
                    out.push(ESCAPE_OPEN);
                    out.push_str(&i.to_string());
                    out.push(ESCAPE_CLOSE);
                    rest = tail;
                    continue 'scan;
                }
            }
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    /// Whether any string in `v` spells a control token.
    pub fn has_control_json(&self, v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => self.has_control_text(s),
            serde_json::Value::Array(a) => a.iter().any(|v| self.has_control_json(v)),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| self.has_control_text(k) || self.has_control_json(v)),
            _ => false,
        }
    }

    /// `v` with every string (keys too) escaped as [`Tokenizer::escape_control`]
    /// does: tool calls and tool definitions a chat template renders are
    /// the caller's text as much as message contents are.
    pub fn escape_control_json(&self, v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(self.escape_control(s)),
            serde_json::Value::Array(a) => a.iter().map(|v| self.escape_control_json(v)).collect(),
            serde_json::Value::Object(o) => o.iter().map(|(k, v)| (self.escape_control(k), self.escape_control_json(v))).collect(),
            other => other.clone(),
        }
    }

    /// Encode a rendered prompt whose message contents were escaped with
    /// [`Tokenizer::escape_control`]: the template's text with special
    /// tokens recognised, each escape as its control token's text in plain
    /// tokens. A stray escape character is kept as it is.
    pub fn encode_escaped(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut scaffold = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(ESCAPE_OPEN) {
            let after = &rest[at + ESCAPE_OPEN.len_utf8()..];
            let escaped = after
                .split_once(ESCAPE_CLOSE)
                .and_then(|(i, tail)| Some((self.control_texts.get(i.parse::<usize>().ok()?)?, tail)));
            match escaped {
                Some((control, tail)) => {
                    scaffold.push_str(&rest[..at]);
                    ids.extend(self.encode(&scaffold, true)?);
                    scaffold.clear();
                    ids.extend(self.encode(control, false)?);
                    rest = tail;
                }
                None => {
                    scaffold.push_str(&rest[..at + ESCAPE_OPEN.len_utf8()]);
                    rest = after;
                }
            }
        }
        scaffold.push_str(rest);
        ids.extend(self.encode(&scaffold, true)?);
        Ok(ids)
    }

    /// The raw bytes of a token (control tokens: their literal text).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the id is a control token (BOS, EOS, chat markers).
    pub fn is_control(&self, id: u32) -> bool {
        self.is_control.get(id as usize).copied().unwrap_or(false)
    }

    /// Decode ids to text. Invalid UTF-8 (a sequence cut mid-character)
    /// becomes U+FFFD; control tokens are skipped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut out = Vec::new();
        for &id in ids {
            if skip_special && self.is_control(id) {
                continue;
            }
            out.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Text of a token for display (logprobs): lossy for partial bytes.
    pub fn token_text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.token_bytes(id)).into_owned()
    }

    /// Id of a token by its exact vocabulary text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// BOS/EOS and turn-end ids.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// Whether generation should stop at this id.
    pub fn is_eos(&self, id: u32) -> bool {
        id == self.special.eos || self.special.extra_eos.contains(&id)
    }
}

/// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    // (add_prefix_space, trim_offsets, use_regex): llama.cpp adds no prefix space.
    let byte_level = ByteLevel::new(false, false, true);
    Ok(match pre {
        // llama.cpp: regex "\p{N}" (each digit alone), then the GPT-2 regex.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(byte_level),
            ]))
        }
        // The plain GPT-2 regex.
        "default" | "gpt2" | "gpt-2" => PreTokenizerWrapper::ByteLevel(byte_level),
        // Llama 3: digits in runs of up to three, case-insensitive contractions.
        "llama-bpe" | "llama3" => regex_then_bytes(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        )?,
        // Qwen2: single digits.
        "qwen2" => regex_then_bytes(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        )?,
        other => {
            return Err(Error::Tokenizer(format!(
                "pre-tokenizer `{other}` is not supported yet (supported: smollm, gpt2, llama-bpe, qwen2)"
            )))
        }
    })
}

/// A regex split (matches kept as pieces) followed by the byte-level mapping.
fn regex_then_bytes(pattern: &str) -> Result<PreTokenizerWrapper> {
    let split = Split::new(SplitPattern::Regex(pattern.to_owned()), SplitDelimiterBehavior::Isolated, false)
        .map_err(tok_err)?;
    Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
    ])))
}

/// GPT-2's byte <-> printable-char table, inverted: char -> byte.
fn byte_level_decode_map() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let c = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\u{FFFD}');
            n += 1;
            c
        };
        map.insert(c, b);
    }
    map
}
