//! One clip's transcription as a state machine: encode the 30 s window at the
//! current seek, decode it (retrying at higher temperatures when the text is
//! too repetitive or too unlikely), cut segments at timestamp tokens, seek on,
//! carry the text into the next window's prompt. The engine steps many clips
//! together; this file knows nothing about threads.
//!
//! The rules are faster-whisper 1.2.1's `generate_segments` and
//! `generate_with_fallback` (see `tests/fixtures/README.md` for the version).

use std::io::Write;
use std::sync::Arc;

use crate::speech::decode::{WindowDecode, WindowOptions, WindowPrompt, WindowResult};
use crate::speech::mel::{LogMel, WINDOW_FRAMES};
use crate::speech::model::{CrossKv, StepRow};
use crate::speech::tokens::{WhisperTokens, TIME_PRECISION};

/// Seconds per mel frame.
const FRAME_SECS: f32 = 0.01;
/// Mel frames per encoder position (conv2 has stride 2).
const INPUT_STRIDE: usize = 2;

/// Everything a caller may set for one clip (OpenAI's fields and faster-whisper's knobs).
#[derive(Clone, Debug)]
pub struct TranscribeOptions {
    /// ISO code; `None` detects it on multilingual models.
    pub language: Option<String>,
    pub translate: bool,
    pub initial_prompt: Option<String>,
    /// Tried in order until a result passes the thresholds.
    pub temperatures: Vec<f32>,
    pub beam_size: usize,
    pub best_of: usize,
    pub patience: f32,
    pub length_penalty: f32,
    pub compression_ratio_threshold: Option<f32>,
    pub log_prob_threshold: Option<f32>,
    pub no_speech_threshold: Option<f32>,
    pub condition_on_previous_text: bool,
    pub prompt_reset_on_temperature: f32,
    pub timestamps: bool,
    pub max_initial_timestamp: f32,
    pub suppress_blank: bool,
    /// Shortest encoder window, seconds, for audio shorter than 30 s: the
    /// window is the audio plus one second, at least this long. 30 is
    /// faster-whisper's fixed window (the spectrogram zero-padded to 30 s);
    /// shorter windows cost less encoder time and may cost accuracy (see
    /// the speech bench).
    pub min_window_secs: u32,
    pub seed: u64,
}

impl Default for TranscribeOptions {
    /// faster-whisper's `transcribe()` defaults.
    fn default() -> Self {
        Self {
            language: None,
            translate: false,
            initial_prompt: None,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            beam_size: 5,
            best_of: 5,
            patience: 1.0,
            length_penalty: 1.0,
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            prompt_reset_on_temperature: 0.5,
            timestamps: true,
            max_initial_timestamp: 1.0,
            suppress_blank: true,
            min_window_secs: 30,
            seed: 0,
        }
    }
}

/// One transcribed segment, with OpenAI's `verbose_json` fields.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Segment {
    pub id: usize,
    pub seek: usize,
    pub start: f32,
    pub end: f32,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f32,
    pub compression_ratio: f32,
    pub no_speech_prob: f32,
}

/// zlib compression ratio of the text, faster-whisper's repetition measure.
pub fn compression_ratio(text: &str) -> f32 {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    if z.write_all(bytes).is_err() {
        return 0.0;
    }
    let compressed = z.finish().map(|v| v.len()).unwrap_or(bytes.len());
    bytes.len() as f32 / compressed.max(1) as f32
}

enum Stage {
    Encode,
    Decode {
        cross: Arc<CrossKv>,
        attempt: usize,
        decode: Box<WindowDecode>,
        results: Vec<(WindowResult, f32)>,
    },
    Finished,
}

/// A clip in progress.
pub struct ClipJob {
    opts: TranscribeOptions,
    mel: LogMel,
    content_frames: usize,
    seek: usize,
    all_tokens: Vec<u32>,
    prompt_reset_since: usize,
    language: Option<u32>,
    language_prob: f32,
    segments: Vec<Segment>,
    stage: Stage,
    n_ctx: usize,
    max_window: usize,
    abandoned: bool,
}

impl std::fmt::Debug for ClipJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipJob").field("seek", &self.seek).field("frames", &self.content_frames).finish_non_exhaustive()
    }
}

impl ClipJob {
    /// `n_ctx`: the decoder's context (448); `max_window`: encoder frames (3000).
    pub fn new(tok: &WhisperTokens, mel: LogMel, opts: TranscribeOptions, n_ctx: usize, max_window: usize) -> crate::Result<Self> {
        let mut all_tokens = Vec::new();
        if let Some(p) = opts.initial_prompt.as_deref().filter(|p| !p.trim().is_empty()) {
            all_tokens = tok.encode(&format!(" {}", p.trim()))?;
        }
        let language = match (&opts.language, tok.multilingual) {
            (Some(code), true) => Some(tok.language(code).ok_or_else(|| crate::Error::InvalidRequest {
                param: "language",
                message: format!("`{code}` is not a language this model knows"),
            })?),
            (Some(code), false) if code != "en" => {
                return Err(crate::Error::InvalidRequest {
                    param: "language",
                    message: format!("this model is English-only; `{code}` is not available"),
                })
            }
            _ => None,
        };
        Ok(Self {
            content_frames: mel.frames.saturating_sub(1),
            mel,
            opts,
            seek: 0,
            all_tokens,
            prompt_reset_since: 0,
            language,
            language_prob: 1.0,
            segments: Vec::new(),
            stage: Stage::Encode,
            n_ctx,
            max_window: max_window.min(WINDOW_FRAMES),
            abandoned: false,
        })
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Finished)
    }

    /// Stop this clip after a failure (its caller has been told).
    pub fn abandon(&mut self) {
        self.abandoned = true;
        self.stage = Stage::Finished;
    }

    pub fn is_abandoned(&self) -> bool {
        self.abandoned
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Detected (or requested) language code.
    pub fn language<'t>(&self, tok: &'t WhisperTokens) -> Option<&'t str> {
        self.language.and_then(|l| tok.language_code(l))
    }

    pub fn language_probability(&self) -> f32 {
        self.language_prob
    }

    /// Seconds of audio in the clip.
    pub fn duration(&self) -> f32 {
        self.content_frames as f32 * FRAME_SECS
    }

    fn segment_size(&self) -> usize {
        self.max_window.min(self.content_frames - self.seek)
    }

    /// The frame count of the window this clip waits to encode, if it waits
    /// for the encoder (a clip whose audio is all consumed finishes here).
    pub fn window_frames(&mut self) -> Option<usize> {
        if !matches!(self.stage, Stage::Encode) {
            return None;
        }
        if self.seek >= self.content_frames {
            self.stage = Stage::Finished;
            return None;
        }
        // Whole seconds (an even frame count, for conv2's stride), one more than the audio.
        let secs = (self.segment_size() + 100).div_ceil(100).max(self.opts.min_window_secs as usize);
        Some((secs * 100).min(self.max_window))
    }

    /// The mel window to encode next, `[n_mels][frames]`, and its frame count, if this clip waits for the encoder.
    pub fn wants_encode(&mut self) -> Option<(Vec<f32>, usize)> {
        let frames = self.window_frames()?;
        Some((self.mel.window(self.seek, frames), frames))
    }

    fn window_decode(&self, tok: &WhisperTokens, attempt: usize) -> WindowDecode {
        let half = self.n_ctx / 2 - 1;
        let prev = &self.all_tokens[self.prompt_reset_since..];
        let prompt = WindowPrompt {
            previous: prev[prev.len().saturating_sub(half)..].to_vec(),
            language: self.language,
            translate: self.opts.translate,
        };
        let temperature = self.opts.temperatures.get(attempt).copied().unwrap_or(0.0);
        let opts = WindowOptions {
            temperature,
            beam_size: self.opts.beam_size.max(1),
            best_of: self.opts.best_of.max(1),
            patience: self.opts.patience,
            length_penalty: self.opts.length_penalty,
            timestamps: self.opts.timestamps,
            max_initial_timestamp_index: Some((self.opts.max_initial_timestamp / TIME_PRECISION).round() as u32),
            suppress_blank: self.opts.suppress_blank,
            // CTranslate2 decodes at most half the context (224 tokens).
            max_new_tokens: self.n_ctx / 2,
            seed: self.opts.seed.wrapping_add((self.seek as u64) << 8).wrapping_add(attempt as u64),
        };
        WindowDecode::new(tok, &prompt, opts, self.n_ctx)
    }

    /// The encoder's output for the window from [`Self::wants_encode`].
    pub fn encoded(&mut self, tok: &WhisperTokens, cross: Arc<CrossKv>) {
        let decode = Box::new(self.window_decode(tok, 0));
        self.stage = Stage::Decode {
            cross,
            attempt: 0,
            decode,
            results: Vec::new(),
        };
    }

    /// Rows for the next decode step (empty unless decoding).
    pub fn rows(&mut self) -> Vec<StepRow<'_>> {
        match &mut self.stage {
            Stage::Decode { cross, decode, .. } => decode.rows(cross),
            _ => Vec::new(),
        }
    }

    /// Take the step's logits; returns how many segments were added.
    pub fn advance(&mut self, tok: &WhisperTokens, logits: Vec<Vec<f32>>) -> usize {
        let Stage::Decode { decode, .. } = &mut self.stage else { return 0 };
        decode.advance(tok, logits);
        if !decode.is_done() {
            return 0;
        }
        self.window_done(tok)
    }

    fn window_done(&mut self, tok: &WhisperTokens) -> usize {
        let Stage::Decode { cross, attempt, decode, results } = std::mem::replace(&mut self.stage, Stage::Encode) else {
            return 0;
        };
        let result = decode.result();
        if self.language.is_none() && tok.multilingual {
            if let Some((l, p)) = result.language {
                self.language = Some(l);
                self.language_prob = p;
            }
        }
        let text = tok.decode(&result.tokens);
        let ratio = compression_ratio(&text);
        let o = &self.opts;
        let mut needs_fallback = o.compression_ratio_threshold.is_some_and(|t| ratio > t)
            || o.log_prob_threshold.is_some_and(|t| result.avg_logprob < t);
        let silence = o.no_speech_threshold.is_some_and(|t| result.no_speech_prob > t)
            && o.log_prob_threshold.is_some_and(|t| result.avg_logprob < t);
        if silence {
            needs_fallback = false;
        }
        let mut results = results;
        results.push((result, ratio));
        let last = attempt + 1 >= o.temperatures.len();
        if needs_fallback && !last {
            let decode = Box::new(self.window_decode(tok, attempt + 1));
            self.stage = Stage::Decode {
                cross,
                attempt: attempt + 1,
                decode,
                results,
            };
            return 0;
        }
        let (mut chosen, ratio) = if needs_fallback {
            // Every temperature failed: the most likely result that is not too repetitive.
            let threshold = o.compression_ratio_threshold.unwrap_or(f32::INFINITY);
            let pool: Vec<_> = if results.iter().any(|(_, r)| *r <= threshold) {
                results.iter().filter(|(_, r)| *r <= threshold).collect()
            } else {
                results.iter().collect()
            };
            pool.into_iter()
                .max_by(|a, b| a.0.avg_logprob.total_cmp(&b.0.avg_logprob))
                .cloned()
                .unwrap_or_else(|| results[0].clone())
        } else {
            results.pop().unwrap_or_else(empty_result)
        };
        chosen.temperature = o.temperatures.get(attempt).copied().unwrap_or(0.0);
        let segment_size = self.segment_size();
        // No speech: skip the window.
        if o.no_speech_threshold.is_some_and(|t| chosen.no_speech_prob > t)
            && !o.log_prob_threshold.is_some_and(|t| chosen.avg_logprob > t)
        {
            self.seek += segment_size;
            self.next_window();
            return 0;
        }
        let added = self.split(tok, &chosen, ratio, segment_size);
        if !self.opts.condition_on_previous_text || chosen.temperature > self.opts.prompt_reset_on_temperature {
            self.prompt_reset_since = self.all_tokens.len();
        }
        self.next_window();
        added
    }

    fn next_window(&mut self) {
        self.stage = if self.seek >= self.content_frames { Stage::Finished } else { Stage::Encode };
    }

    /// faster-whisper's `_split_segments_by_timestamps`, then seek on.
    fn split(&mut self, tok: &WhisperTokens, r: &WindowResult, ratio: f32, segment_size: usize) -> usize {
        let tokens = &r.tokens;
        let time_offset = self.seek as f32 * FRAME_SECS;
        let is_ts = |t: u32| tok.is_timestamp(t);
        let ts_pos = |t: u32| (t - tok.timestamp_begin) as f32;
        let single_ending = tokens.len() >= 2 && !is_ts(tokens[tokens.len() - 2]) && is_ts(tokens[tokens.len() - 1]);
        let consecutive: Vec<usize> = (1..tokens.len()).filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1])).collect();
        let mut pieces: Vec<(f32, f32, &[u32])> = Vec::new();
        let start_seek = self.seek;
        if !consecutive.is_empty() {
            let mut slices = consecutive;
            if single_ending {
                slices.push(tokens.len());
            }
            let mut last = 0;
            for cur in slices {
                let s = &tokens[last..cur];
                if let (Some(&a), Some(&b)) = (s.first(), s.last()) {
                    if is_ts(a) && is_ts(b) {
                        pieces.push((time_offset + ts_pos(a) * TIME_PRECISION, time_offset + ts_pos(b) * TIME_PRECISION, s));
                    }
                }
                last = cur;
            }
            if single_ending {
                self.seek += segment_size;
            } else {
                let pos = tokens[last - 1] - tok.timestamp_begin;
                self.seek += pos as usize * INPUT_STRIDE;
            }
        } else {
            let mut duration = segment_size as f32 * FRAME_SECS;
            if let Some(&t) = tokens.iter().rev().find(|&&t| is_ts(t)) {
                if t != tok.timestamp_begin {
                    duration = ts_pos(t) * TIME_PRECISION;
                }
            }
            pieces.push((time_offset, time_offset + duration, tokens));
            self.seek += segment_size;
        }
        // A window that made no progress would loop forever: move on by its length.
        if self.seek <= start_seek {
            self.seek = start_seek + segment_size;
        }
        let mut added = 0;
        for (start, end, toks) in pieces {
            let text = tok.decode(toks);
            if start == end || text.trim().is_empty() {
                continue;
            }
            self.all_tokens.extend_from_slice(toks);
            self.segments.push(Segment {
                id: self.segments.len(),
                seek: start_seek,
                start,
                end: end.min(self.duration().max(start)),
                text,
                tokens: toks.to_vec(),
                temperature: r.temperature,
                avg_logprob: r.avg_logprob,
                compression_ratio: ratio,
                no_speech_prob: r.no_speech_prob,
            });
            added += 1;
        }
        added
    }
}

fn empty_result() -> (WindowResult, f32) {
    (
        WindowResult {
            tokens: Vec::new(),
            sum_logprob: 0.0,
            avg_logprob: 0.0,
            no_speech_prob: 0.0,
            language: None,
            temperature: 0.0,
        },
        0.0,
    )
}
