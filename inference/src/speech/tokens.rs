//! Whisper's tokenizer and its special tokens, read from the model folder's
//! `tokenizer.json` (both CTranslate2 and Hugging Face folders carry one) and
//! the suppression lists from `config.json` (CTranslate2: `suppress_ids`,
//! `suppress_ids_begin`) or `generation_config.json` (Hugging Face:
//! `suppress_tokens`, `begin_suppress_tokens`).

use std::path::Path;

use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// Whisper's token ids for one model.
#[derive(Debug)]
pub struct WhisperTokens {
    tokenizer: Tokenizer,
    pub eot: u32,
    pub sot: u32,
    pub translate: u32,
    pub transcribe: u32,
    pub sot_lm: u32,
    pub sot_prev: u32,
    /// `<|nospeech|>` (newer vocabularies) or `<|nocaptions|>`.
    pub no_speech: u32,
    pub no_timestamps: u32,
    /// The first timestamp token, `<|0.00|>`; each next id is 0.02 s later.
    pub timestamp_begin: u32,
    /// Language codes and their token ids, in the model's order.
    pub languages: Vec<(String, u32)>,
    pub multilingual: bool,
    /// Suppressed at every step (config's list plus the task and start tokens).
    pub suppress: Vec<u32>,
    /// Suppressed at the first sampled step only (blank and end of text).
    pub suppress_begin: Vec<u32>,
    /// `[layer, head]` pairs whose cross-attention follows the audio (word timing).
    pub alignment_heads: Vec<(usize, usize)>,
}

#[derive(Deserialize, Default)]
struct Ct2Config {
    #[serde(default)]
    suppress_ids: Vec<i64>,
    #[serde(default)]
    suppress_ids_begin: Vec<i64>,
    #[serde(default)]
    alignment_heads: Vec<(usize, usize)>,
    // Hugging Face generation_config.json
    #[serde(default)]
    suppress_tokens: Vec<i64>,
    #[serde(default)]
    begin_suppress_tokens: Vec<i64>,
}

/// Seconds per timestamp token.
pub const TIME_PRECISION: f32 = 0.02;

impl WhisperTokens {
    /// Load from a model folder of `n_vocab` logits.
    pub fn load(dir: &Path, n_vocab: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| Error::InvalidModel {
            path: path.clone(),
            reason: format!("tokenizer: {e}"),
        })?;
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| Error::InvalidModel {
                path: path.clone(),
                reason: format!("no {t} token"),
            })
        };
        let eot = id("<|endoftext|>")?;
        let sot = id("<|startoftranscript|>")?;
        let translate = id("<|translate|>")?;
        let no_timestamps = id("<|notimestamps|>")?;
        let no_speech = id("<|nospeech|>").or_else(|_| id("<|nocaptions|>"))?;
        let languages = (sot + 1..translate)
            .filter_map(|i| {
                let t = tokenizer.id_to_token(i)?;
                let code = t.strip_prefix("<|")?.strip_suffix("|>")?.to_string();
                Some((code, i))
            })
            .collect();
        let mut cfg = Ct2Config::default();
        for name in ["config.json", "generation_config.json"] {
            let p = dir.join(name);
            if let Ok(text) = std::fs::read_to_string(&p) {
                let c: Ct2Config = serde_json::from_str(&text).map_err(|e| Error::InvalidModel {
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
                if !(c.suppress_ids.is_empty() && c.suppress_tokens.is_empty()) {
                    cfg = c;
                    break;
                }
                if cfg.alignment_heads.is_empty() {
                    cfg.alignment_heads = c.alignment_heads;
                }
            }
        }
        let ids = |v: &[i64]| v.iter().filter_map(|&i| u32::try_from(i).ok()).collect::<Vec<_>>();
        let transcribe = id("<|transcribe|>")?;
        let sot_lm = id("<|startoflm|>")?;
        let sot_prev = id("<|startofprev|>")?;
        let mut suppress = ids(if cfg.suppress_ids.is_empty() { &cfg.suppress_tokens } else { &cfg.suppress_ids });
        // faster-whisper's get_suppressed_tokens: the list plus the task, start and no-speech tokens.
        suppress.extend([transcribe, translate, sot, sot_prev, sot_lm, no_speech]);
        suppress.retain(|&t| (t as usize) < n_vocab);
        suppress.sort_unstable();
        suppress.dedup();
        let mut suppress_begin = ids(if cfg.suppress_ids_begin.is_empty() {
            &cfg.begin_suppress_tokens
        } else {
            &cfg.suppress_ids_begin
        });
        if suppress_begin.is_empty() {
            suppress_begin.extend(tokenizer.token_to_id("Ġ").into_iter().chain([eot]));
        }
        Ok(Self {
            eot,
            sot,
            translate,
            transcribe,
            sot_lm,
            sot_prev,
            no_speech,
            no_timestamps,
            timestamp_begin: no_timestamps + 1,
            languages,
            // OpenAI's rule: multilingual vocabularies have 51865 or more entries.
            multilingual: n_vocab >= 51865,
            suppress,
            suppress_begin,
            alignment_heads: cfg.alignment_heads,
            tokenizer,
        })
    }

    /// The token of language `code` ("en", "de", ...).
    pub fn language(&self, code: &str) -> Option<u32> {
        self.languages.iter().find(|(c, _)| c == code).map(|&(_, id)| id)
    }

    pub fn language_code(&self, token: u32) -> Option<&str> {
        self.languages.iter().find(|&&(_, id)| id == token).map(|(c, _)| c.as_str())
    }

    /// Text tokens of `text` (no special tokens), as a prompt or prefix.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `tokens`, ignoring special and timestamp tokens.
    pub fn decode(&self, tokens: &[u32]) -> String {
        let text: Vec<u32> = tokens.iter().copied().filter(|&t| t < self.eot).collect();
        self.tokenizer.decode(&text, false).unwrap_or_default()
    }

    /// Is `t` a timestamp token?
    pub fn is_timestamp(&self, t: u32) -> bool {
        t >= self.timestamp_begin
    }
}
