//! Decoding one 30 s window: the prompt, logit rules, greedy / sampled / beam
//! search, as a state machine the engine steps together with other windows.
//!
//! The prompt is fed in two parts: everything up to `<|startoftranscript|>`
//! first, whose logits give the no-speech probability and (for a multilingual
//! model asked for no language) the language; then the language, task and
//! `<|notimestamps|>` tokens. When the second part is empty the first part's
//! logits are also the first sampling step.
//!
//! Logit rules follow faster-whisper (CTranslate2's Whisper `generate`):
//! blank and end-of-text suppressed at the first step, the model's suppress list
//! at every step, and the timestamp rules (pairs, monotonic, the first token a
//! timestamp no later than `max_initial_timestamp`, timestamps forced when their
//! total probability beats every text token).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::speech::model::{CrossKv, SelfKv, StepRow};
use crate::speech::tokens::WhisperTokens;

/// How one window is decoded.
#[derive(Clone, Debug)]
pub struct WindowOptions {
    pub temperature: f32,
    /// Beams when `temperature == 0`; 1 is greedy.
    pub beam_size: usize,
    /// Independent samples when `temperature > 0`; the most likely is kept.
    pub best_of: usize,
    pub patience: f32,
    pub length_penalty: f32,
    pub timestamps: bool,
    /// Index of the latest timestamp token allowed first (50 = 1.0 s).
    pub max_initial_timestamp_index: Option<u32>,
    pub suppress_blank: bool,
    pub max_new_tokens: usize,
    pub seed: u64,
}

/// What a window decode produced.
#[derive(Clone, Debug)]
pub struct WindowResult {
    /// Sampled tokens (text and timestamps), without the final end of text.
    pub tokens: Vec<u32>,
    pub sum_logprob: f32,
    /// faster-whisper's `avg_logprob`: `sum / (len + 1)` (the end of text counts).
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    /// The language token used (detected or asked for), multilingual models only.
    pub language: Option<(u32, f32)>,
    pub temperature: f32,
}

#[derive(Clone)]
struct Hyp {
    tokens: Vec<u32>,
    logprob: f32,
    cache: SelfKv,
    /// Tokens not yet in `cache`.
    feed: Vec<u32>,
}

enum Phase {
    Head,
    Tail,
    Generate,
    Done,
}

/// One window's decode in progress.
pub struct WindowDecode {
    opts: WindowOptions,
    /// Feeding order: `head` (up to and including sot), then `tail`.
    head: Vec<u32>,
    tail: Vec<u32>,
    detect_language: bool,
    phase: Phase,
    hyps: Vec<Hyp>,
    finished: Vec<Hyp>,
    no_speech_prob: f32,
    language: Option<(u32, f32)>,
    rng: StdRng,
    /// Prompt length, for the context limit.
    prompt_len: usize,
    n_ctx: usize,
}

impl std::fmt::Debug for WindowDecode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowDecode").field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// The prompt of a window: previous text, then the start sequence.
#[derive(Clone, Debug, Default)]
pub struct WindowPrompt {
    /// Text tokens of the previous windows or `initial_prompt` (already cut to length).
    pub previous: Vec<u32>,
    /// `Some(token)` for a multilingual model with a language; `None` detects it
    /// (multilingual) or uses none (English-only).
    pub language: Option<u32>,
    pub translate: bool,
}

impl WindowDecode {
    pub fn new(tok: &WhisperTokens, prompt: &WindowPrompt, opts: WindowOptions, n_ctx: usize) -> Self {
        let mut head = Vec::new();
        if !prompt.previous.is_empty() {
            head.push(tok.sot_prev);
            head.extend(&prompt.previous);
        }
        head.push(tok.sot);
        let mut tail = Vec::new();
        let mut detect_language = false;
        if tok.multilingual {
            match prompt.language {
                Some(l) => tail.push(l),
                None => {
                    detect_language = true;
                    tail.push(tok.sot); // placeholder, replaced by the detected language
                }
            }
            tail.push(if prompt.translate { tok.translate } else { tok.transcribe });
        }
        if !opts.timestamps {
            tail.push(tok.no_timestamps);
        }
        let prompt_len = head.len() + tail.len();
        Self {
            rng: StdRng::seed_from_u64(opts.seed),
            opts,
            head,
            tail,
            detect_language,
            phase: Phase::Head,
            hyps: vec![Hyp {
                tokens: Vec::new(),
                logprob: 0.0,
                cache: SelfKv::default(),
                feed: Vec::new(),
            }],
            finished: Vec::new(),
            no_speech_prob: 0.0,
            language: prompt.language.map(|l| (l, 1.0)),
            prompt_len,
            n_ctx,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The rows this window feeds in the next step (none when done).
    pub fn rows<'a>(&'a mut self, cross: &'a CrossKv) -> Vec<StepRow<'a>> {
        match self.phase {
            Phase::Done => Vec::new(),
            Phase::Head => {
                let h = &mut self.hyps[0];
                vec![StepRow { tokens: &self.head, cache: &mut h.cache, cross }]
            }
            Phase::Tail => {
                let h = &mut self.hyps[0];
                vec![StepRow { tokens: &self.tail, cache: &mut h.cache, cross }]
            }
            Phase::Generate => self
                .hyps
                .iter_mut()
                .map(|h| StepRow { tokens: &h.feed, cache: &mut h.cache, cross })
                .collect(),
        }
    }

    /// Take the logits of the rows from [`Self::rows`], one `Vec` per row.
    pub fn advance(&mut self, tok: &WhisperTokens, logits: Vec<Vec<f32>>) {
        match self.phase {
            Phase::Done => {}
            Phase::Head => {
                let Some(l) = logits.into_iter().next() else { return };
                let probs = softmax(&l, 1.0);
                self.no_speech_prob = probs.get(tok.no_speech as usize).copied().unwrap_or(0.0);
                if self.detect_language {
                    let best = tok
                        .languages
                        .iter()
                        .map(|&(_, id)| (id, l.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY)))
                        .max_by(|a, b| a.1.total_cmp(&b.1));
                    if let Some((id, _)) = best {
                        // Probability among language tokens only, as Whisper's detect_language.
                        let lang: Vec<f32> =
                            tok.languages.iter().map(|&(_, i)| l.get(i as usize).copied().unwrap_or(f32::NEG_INFINITY)).collect();
                        let p = softmax(&lang, 1.0).into_iter().fold(0.0, f32::max);
                        self.tail[0] = id;
                        self.language = Some((id, p));
                    }
                }
                if self.tail.is_empty() {
                    self.sample_step(tok, vec![l]);
                } else {
                    self.phase = Phase::Tail;
                }
            }
            Phase::Tail => self.sample_step(tok, logits),
            Phase::Generate => self.sample_step(tok, logits),
        }
    }

    /// Apply the logit rules to one hypothesis's logits.
    fn filter(&self, tok: &WhisperTokens, tokens: &[u32], logits: &mut [f32]) {
        let vocab = logits.len();
        let ts = (tok.timestamp_begin as usize).min(vocab);
        let neg = f32::NEG_INFINITY;
        if tokens.is_empty() && self.opts.suppress_blank {
            for &t in &tok.suppress_begin {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = neg;
                }
            }
        }
        for &t in &tok.suppress {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = neg;
            }
        }
        if !self.opts.timestamps {
            logits[ts..].fill(neg);
            return;
        }
        if let Some(l) = logits.get_mut(tok.no_timestamps as usize) {
            *l = neg;
        }
        let is_ts = |t: &u32| *t >= tok.timestamp_begin;
        let last_ts = tokens.last().is_some_and(is_ts);
        let penultimate_ts = tokens.len() < 2 || is_ts(&tokens[tokens.len() - 2]);
        if last_ts {
            if penultimate_ts {
                logits[ts..].fill(neg);
            } else {
                logits[..(tok.eot as usize).min(vocab)].fill(neg);
            }
        }
        if let Some(&last) = tokens.iter().rev().find(|t| is_ts(t)) {
            // Timestamps never go back, and a segment is never empty.
            let floor = if last_ts && !penultimate_ts { last } else { last + 1 };
            logits[ts..(floor as usize).min(vocab)].fill(neg);
        }
        if tokens.is_empty() {
            logits[..ts].fill(neg);
            if let Some(i) = self.opts.max_initial_timestamp_index {
                let last_allowed = ts + i as usize;
                if last_allowed + 1 < vocab {
                    logits[last_allowed + 1..].fill(neg);
                }
            }
        }
        // If the timestamps together are more likely than any one text token, take a timestamp.
        let lp = log_softmax(logits);
        let ts_lp = log_sum_exp(&lp[ts..]);
        let text_max = lp[..ts].iter().copied().fold(neg, f32::max);
        if ts_lp > text_max {
            logits[..ts].fill(neg);
        }
    }

    fn sample_step(&mut self, tok: &WhisperTokens, logits: Vec<Vec<f32>>) {
        self.phase = Phase::Generate;
        let first = self.hyps[0].tokens.is_empty();
        let mut hyps = std::mem::take(&mut self.hyps);
        // Sampling with best_of: fork the prefilled hypothesis on the first step.
        if first && self.opts.temperature > 0.0 && self.opts.best_of > 1 && hyps.len() == 1 {
            let h = hyps.remove(0);
            hyps = vec![h; self.opts.best_of];
        }
        let rows: Vec<(Hyp, Vec<f32>)> = if first && hyps.len() > 1 && logits.len() == 1 {
            let l = logits.into_iter().next().unwrap_or_default();
            hyps.into_iter().map(|h| (h, l.clone())).collect()
        } else {
            hyps.into_iter().zip(logits).collect()
        };
        let beam = self.opts.temperature == 0.0 && self.opts.beam_size > 1;
        let max_steps = self.opts.max_new_tokens.min(self.n_ctx.saturating_sub(self.prompt_len));
        let at_limit = |len: usize| len >= max_steps;
        let mut candidates: Vec<(usize, u32, f32)> = Vec::new();
        let mut parents = Vec::with_capacity(rows.len());
        for (i, (h, mut l)) in rows.into_iter().enumerate() {
            self.filter(tok, &h.tokens, &mut l);
            let lp = log_softmax(&l);
            if beam {
                for (t, p) in top_k(&lp, self.opts.beam_size + 1) {
                    candidates.push((i, t, h.logprob + p));
                }
            } else {
                let t = if self.opts.temperature > 0.0 {
                    sample(&mut self.rng, &softmax(&l, self.opts.temperature))
                } else {
                    argmax(&lp)
                };
                candidates.push((i, t, h.logprob + lp[t as usize]));
            }
            parents.push(h);
        }
        if beam {
            candidates.sort_by(|a, b| b.2.total_cmp(&a.2));
            let max_finished = ((self.opts.beam_size as f32 * self.opts.patience).round() as usize).max(1);
            let mut next: Vec<Hyp> = Vec::new();
            // CTranslate2: the top 2 x beam candidates over all beams; an end of text
            // among the first `beam` ranks finishes, the first `beam` others go on.
            candidates.truncate(2 * self.opts.beam_size);
            for (rank, &(i, t, lp)) in candidates.iter().enumerate() {
                let p = &parents[i];
                if t == tok.eot {
                    if rank < self.opts.beam_size {
                        self.finished.push(Hyp { tokens: p.tokens.clone(), logprob: lp, cache: SelfKv::default(), feed: Vec::new() });
                    }
                } else if next.len() < self.opts.beam_size {
                    let mut tokens = p.tokens.clone();
                    tokens.push(t);
                    next.push(Hyp { tokens, logprob: lp, cache: p.cache.clone(), feed: vec![t] });
                }
            }
            if next.iter().any(|h| at_limit(h.tokens.len())) {
                // The last step: live hypotheses count as finished (CTranslate2's is_last_step).
                self.finished.extend(next);
                self.phase = Phase::Done;
            } else if self.finished.len() >= max_finished {
                self.phase = Phase::Done;
            } else {
                self.hyps = next;
            }
        } else {
            for ((_, t, lp), mut h) in candidates.into_iter().zip(parents) {
                h.logprob = lp;
                if t == tok.eot {
                    self.finished.push(h);
                } else {
                    h.tokens.push(t);
                    h.feed = vec![t];
                    if at_limit(h.tokens.len()) {
                        self.finished.push(h);
                    } else {
                        self.hyps.push(h);
                    }
                }
            }
            if self.hyps.is_empty() {
                self.phase = Phase::Done;
            }
        }
    }

    /// The best hypothesis (by length-normalised log-probability), once done.
    pub fn result(&self) -> WindowResult {
        let penalty = self.opts.length_penalty;
        let score = |h: &Hyp| h.logprob / (h.tokens.len().max(1) as f32).powf(penalty);
        let best = self.finished.iter().max_by(|a, b| score(a).total_cmp(&score(b)));
        let (tokens, sum) = best.map_or((Vec::new(), 0.0), |h| (h.tokens.clone(), h.logprob));
        WindowResult {
            avg_logprob: sum / (tokens.len() + 1) as f32,
            sum_logprob: sum,
            tokens,
            no_speech_prob: self.no_speech_prob,
            language: self.language,
            temperature: self.opts.temperature,
        }
    }
}

fn log_sum_exp(x: &[f32]) -> f32 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return m;
    }
    m + x.iter().map(|v| (v - m).exp()).sum::<f32>().ln()
}

fn log_softmax(x: &[f32]) -> Vec<f32> {
    let z = log_sum_exp(x);
    x.iter().map(|v| v - z).collect()
}

fn softmax(x: &[f32], temperature: f32) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| ((v - m) / temperature).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
}

fn top_k(x: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<(u32, f32)> = x.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (i as u32, v)).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return idx;
    }
    idx.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
    idx.truncate(k);
    idx
}

fn sample(rng: &mut StdRng, probs: &[f32]) -> u32 {
    let r: f32 = rng.gen();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if r < acc {
            return i as u32;
        }
    }
    argmax(probs)
}
