//! Turning logits into the next token: penalties, bias, temperature,
//! top-k / top-p / min-p filtering and a seeded draw.
//!
//! Every sequence owns its [`Sampler`] and RNG, so what a sequence draws
//! depends only on its own logits and seed, never on its batch neighbours.

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::kernels::ops::log_softmax;

/// How to pick tokens. Defaults are OpenAI's (temperature 1, no filtering).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Nucleus: keep the smallest set of tokens whose mass reaches `top_p`.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0: off).
    pub top_k: usize,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of tokens already seen in
    /// the prompt or output (1: off), as llama.cpp and HF do.
    pub repetition_penalty: f32,
    /// OpenAI: subtract once from every token already generated.
    pub presence_penalty: f32,
    /// OpenAI: subtract per occurrence in the generated text.
    pub frequency_penalty: f32,
    /// Added to the logits of the given tokens before anything else.
    pub logit_bias: Vec<(u32, f32)>,
    /// Same seed and request: same output. `None` draws a seed from the OS.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

fn invalid(param: &'static str, message: String) -> Error {
    Error::InvalidRequest { param, message }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Check every field's range against a vocabulary of `vocab` tokens.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        let t = self.temperature;
        if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
            return Err(invalid("temperature", format!("{t} is not between 0 and 2")));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid("top_p", format!("{} is not in (0, 1]", self.top_p)));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(invalid("min_p", format!("{} is not in [0, 1]", self.min_p)));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty <= 10.0) {
            return Err(invalid("repetition_penalty", format!("{} is not in (0, 10]", self.repetition_penalty)));
        }
        for (name, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(invalid(name, format!("{v} is not between -2 and 2")));
            }
        }
        for &(tok, bias) in &self.logit_bias {
            if tok as usize >= vocab {
                return Err(invalid("logit_bias", format!("token {tok} is outside the vocabulary (size {vocab})")));
            }
            if !(-100.0..=100.0).contains(&bias) {
                return Err(invalid("logit_bias", format!("bias {bias} for token {tok} is not between -100 and 100")));
            }
        }
        Ok(())
    }
}

/// A candidate token and its log-probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenLogprob {
    /// Token id.
    pub id: u32,
    /// Natural-log probability under the model's (unpenalised) distribution.
    pub logprob: f32,
}

/// The chosen token with its log-probability and the top alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    /// Chosen token.
    pub id: u32,
    /// Its log-probability and the `top` most likely tokens, if asked for.
    pub logprobs: Option<(f32, Vec<TokenLogprob>)>,
}

/// Per-sequence sampling state.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Occurrences of each generated token (presence/frequency penalties).
    generated: HashMap<u32, u32>,
    /// Tokens seen in the prompt or output (repetition penalty).
    seen: HashSet<u32>,
    /// Scratch: candidate indices.
    idx: Vec<u32>,
    /// Scratch: log-softmax of the raw logits.
    lp: Vec<f32>,
    /// Scratch: weights of a draw that may be refused.
    work: Vec<f32>,
}

/// Most drawn tokens a constraint may refuse for one position before the
/// sequence gives up on it (each refusal costs a draw and a check).
pub const MAX_REFUSALS: usize = 32;

/// What a constraint says of a drawn token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Keep it.
    Take,
    /// Draw again without it.
    Refuse,
    /// Stop drawing (the constraint decides the token itself).
    Stop,
}

/// A constraint on the next token, as the sampler sees it.
pub trait Restrict {
    /// Send forbidden tokens to -inf (after penalties, before the draw).
    fn mask(&mut self, _logits: &mut [f32]) {}
    /// Whether [`Restrict::judge`] may refuse anything.
    fn judges(&self) -> bool {
        false
    }
    /// Judge a drawn token.
    fn judge(&mut self, _id: u32) -> Judgement {
        Judgement::Take
    }
}

impl Sampler {
    /// A sampler for one sequence whose prompt is `prompt`.
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let seen = if params.repetition_penalty != 1.0 {
            prompt.iter().copied().collect()
        } else {
            HashSet::new()
        };
        Self {
            params,
            rng,
            generated: HashMap::new(),
            seen,
            idx: Vec::new(),
            lp: Vec::new(),
            work: Vec::new(),
        }
    }

    /// Log-softmax of the raw `logits` into `self.lp`; the `top` best.
    fn raw_logprobs(&mut self, logits: &[f32], top: usize) -> Vec<TokenLogprob> {
        self.lp.resize(logits.len(), 0.0);
        log_softmax(logits, &mut self.lp);
        top_indices(&self.lp, top, &mut self.idx);
        self.idx.iter().map(|&i| TokenLogprob { id: i, logprob: self.lp[i as usize] }).collect()
    }

    /// Log-probability of `id` and the `top` most likely tokens under the raw
    /// distribution `logits` (prompt logprobs).
    pub fn logprobs_of(&mut self, logits: &[f32], id: u32, top: usize) -> (f32, Vec<TokenLogprob>) {
        let best = self.raw_logprobs(logits, top);
        (self.lp.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY), best)
    }

    /// Pick the next token from `logits` (modified in place) and record it.
    /// With `logprobs = Some(n)`, also report its logprob and the top `n`,
    /// both under the model's distribution before penalties and temperature.
    pub fn sample(&mut self, logits: &mut [f32], logprobs: Option<usize>) -> Sampled {
        let top = logprobs.map(|n| self.raw_logprobs(logits, n));
        self.apply_penalties(logits);
        let id = self.pick(logits);
        self.record(id, top)
    }

    /// As [`Sampler::sample`], within a constraint: `restrict` masks the
    /// logits after penalties, then judges each drawn token; a refused one
    /// leaves the distribution and the draw is repeated (which draws from
    /// the distribution without it). `None` when no token is acceptable
    /// or [`MAX_REFUSALS`] were refused, or `restrict` stops the draw.
    /// Logprobs stay the model's own, before the constraint.
    pub fn sample_within(&mut self, logits: &mut [f32], logprobs: Option<usize>, restrict: &mut dyn Restrict) -> Option<Sampled> {
        let top = logprobs.map(|n| self.raw_logprobs(logits, n));
        self.apply_penalties(logits);
        restrict.mask(logits);
        let judged = restrict.judges();
        let mut refused = 0;
        let id = loop {
            if !logits.iter().any(|&l| l > f32::NEG_INFINITY) {
                return None;
            }
            let id = if judged {
                // `draw` turns logits into weights in place; keep them for a redraw.
                let mut work = std::mem::take(&mut self.work);
                work.clear();
                work.extend_from_slice(logits);
                let id = self.pick(&mut work);
                self.work = work;
                id
            } else {
                self.pick(logits)
            };
            match restrict.judge(id) {
                Judgement::Take => break id,
                Judgement::Stop => return None,
                Judgement::Refuse => {
                    refused += 1;
                    if refused >= MAX_REFUSALS {
                        return None;
                    }
                    logits[id as usize] = f32::NEG_INFINITY;
                }
            }
        };
        Some(self.record(id, top))
    }

    /// Greedy or drawn, as the parameters say.
    fn pick(&mut self, logits: &mut [f32]) -> u32 {
        if self.params.temperature == 0.0 || self.params.top_k == 1 {
            argmax(logits)
        } else {
            self.draw(logits)
        }
    }

    /// Note `id` as generated (penalties) and report its logprobs.
    fn record(&mut self, id: u32, top: Option<Vec<TokenLogprob>>) -> Sampled {
        *self.generated.entry(id).or_insert(0) += 1;
        if self.params.repetition_penalty != 1.0 {
            self.seen.insert(id);
        }
        let logprobs = top.map(|top| (self.lp.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY), top));
        Sampled { id, logprobs }
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let p = &self.params;
        for &(tok, bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(tok as usize) {
                *l += bias;
            }
        }
        if p.repetition_penalty != 1.0 {
            for &tok in &self.seen {
                if let Some(l) = logits.get_mut(tok as usize) {
                    *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&tok, &n) in &self.generated {
                if let Some(l) = logits.get_mut(tok as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
            }
        }
    }

    /// Temperature, then top-k, top-p and min-p, then a draw.
    fn draw(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // Unnormalised probabilities.
        for l in logits.iter_mut() {
            *l = ((*l - max) * inv_t).exp();
        }
        // The most likely token now has weight exp(0) = 1, so min_p is a
        // plain threshold on these weights.
        let floor = p.min_p;
        let vocab = logits.len();
        if p.top_k == 0 && p.top_p >= 1.0 {
            // No ordering needed: one pass to weigh, one to draw.
            // Weight 0 (a masked token) is never drawn, even when u is 0.
            let kept = |w: f32| w >= floor && w > 0.0;
            let mass: f32 = logits.iter().filter(|&&w| kept(w)).sum();
            let mut u = self.rng.gen::<f32>() * mass;
            let mut last = 0;
            for (i, &w) in logits.iter().enumerate() {
                if kept(w) {
                    last = i;
                    u -= w;
                    if u <= 0.0 {
                        return i as u32;
                    }
                }
            }
            return last as u32;
        }
        let total: f32 = logits.iter().sum();
        let k = if p.top_k == 0 { vocab } else { p.top_k.min(vocab) };
        // Sort only as much of the head of the distribution as the filters
        // need: grow the sorted prefix until it holds top_p of the mass.
        let mut n = k.min(64);
        loop {
            top_indices(logits, n, &mut self.idx);
            let mass: f32 = self.idx.iter().map(|&i| logits[i as usize]).sum();
            if n >= k || mass >= p.top_p * total {
                break;
            }
            n = (n * 4).min(k);
        }
        // top_p: the smallest prefix reaching the mass.
        let mut keep = 0;
        let mut acc = 0.0;
        for &i in &self.idx {
            keep += 1;
            acc += logits[i as usize];
            if acc >= p.top_p * total {
                break;
            }
        }
        self.idx.truncate(keep.max(1));
        // min_p relative to the most likely token.
        let idx = &mut self.idx;
        let kept = idx.iter().take_while(|&&i| logits[i as usize] >= floor).count().max(1);
        idx.truncate(kept);
        let mass: f32 = idx.iter().map(|&i| logits[i as usize]).sum();
        let mut u = self.rng.gen::<f32>() * mass;
        for &i in idx.iter() {
            u -= logits[i as usize];
            if u <= 0.0 {
                return i;
            }
        }
        idx[idx.len() - 1]
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The `n` largest entries of `v`, sorted descending (ties: lower id first).
fn top_indices(v: &[f32], n: usize, out: &mut Vec<u32>) {
    out.clear();
    out.extend(0..v.len() as u32);
    let n = n.min(v.len());
    let cmp = |a: &u32, b: &u32| v[*b as usize].total_cmp(&v[*a as usize]).then(a.cmp(b));
    if n < out.len() && n > 0 {
        out.select_nth_unstable_by(n - 1, cmp);
    }
    out.truncate(n);
    out.sort_unstable_by(cmp);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..100).map(|i| ((i * 37) % 100) as f32 / 10.0).collect()
    }

    #[test]
    fn greedy_picks_argmax_and_bias_can_move_it() {
        let mut s = Sampler::new(SamplingParams::greedy(), &[]);
        let mut l = logits();
        let best = argmax(&l);
        assert_eq!(s.sample(&mut l, None).id, best);
        let mut p = SamplingParams::greedy();
        p.logit_bias = vec![(3, 100.0)];
        let mut s = Sampler::new(p, &[]);
        assert_eq!(s.sample(&mut logits(), None).id, 3);
    }

    #[test]
    fn same_seed_same_draws_different_seed_differs() {
        let draw = |seed| {
            let p = SamplingParams { seed: Some(seed), temperature: 1.5, ..Default::default() };
            let mut s = Sampler::new(p, &[]);
            (0..20).map(|_| s.sample(&mut logits(), None).id).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let best = argmax(&logits());
        for p in [
            SamplingParams { top_k: 1, seed: Some(1), ..Default::default() },
            SamplingParams { top_p: 1e-6, seed: Some(1), ..Default::default() },
            SamplingParams { min_p: 1.0, seed: Some(1), ..Default::default() },
        ] {
            let mut s = Sampler::new(p, &[]);
            for _ in 0..10 {
                assert_eq!(s.sample(&mut logits(), None).id, best);
            }
        }
    }

    #[test]
    fn top_k_restricts_to_the_k_best() {
        let mut order: Vec<u32> = (0..100).collect();
        let l = logits();
        order.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]));
        let p = SamplingParams { top_k: 3, temperature: 2.0, seed: Some(3), ..Default::default() };
        let mut s = Sampler::new(p, &[]);
        for _ in 0..50 {
            let id = s.sample(&mut logits(), None).id;
            assert!(order[..3].contains(&id), "{id}");
        }
    }

    #[test]
    fn unfiltered_sampling_reaches_many_tokens_and_min_p_cuts_the_tail() {
        let flat: Vec<f32> = (0..50).map(|i| if i < 5 { 2.0 } else { 0.0 }).collect();
        let mut s = Sampler::new(SamplingParams { seed: Some(9), ..Default::default() }, &[]);
        let mut seen = HashSet::new();
        for _ in 0..400 {
            seen.insert(s.sample(&mut flat.clone(), None).id);
        }
        assert!(seen.len() > 20, "{}", seen.len());
        // exp(-2) = 0.135 < 0.2: only the five heavy tokens survive.
        let mut s = Sampler::new(SamplingParams { seed: Some(9), min_p: 0.2, ..Default::default() }, &[]);
        for _ in 0..200 {
            assert!(s.sample(&mut flat.clone(), None).id < 5);
        }
    }

    #[test]
    fn frequency_penalty_discourages_repeats() {
        let p = SamplingParams { frequency_penalty: 2.0, presence_penalty: 2.0, ..SamplingParams::greedy() };
        let mut s = Sampler::new(p, &[]);
        let flat = vec![1.0f32; 10];
        let ids: Vec<u32> = (0..10).map(|_| s.sample(&mut flat.clone(), None).id).collect();
        let mut uniq = ids.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 10, "{ids:?}");
    }

    #[test]
    fn logprobs_are_normalised_and_sorted() {
        let mut s = Sampler::new(SamplingParams::greedy(), &[]);
        let got = s.sample(&mut logits(), Some(5));
        let (lp, top) = got.logprobs.expect("asked");
        assert_eq!(top.len(), 5);
        assert_eq!(top[0].id, got.id);
        assert!((top[0].logprob - lp).abs() < 1e-6);
        assert!(top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        let total: f32 = {
            let l = logits();
            let mut out = vec![0.0; l.len()];
            log_softmax(&l, &mut out);
            out.iter().map(|x| x.exp()).sum()
        };
        assert!((total - 1.0).abs() < 1e-4);
    }

    #[test]
    fn validation_names_the_field() {
        let p = SamplingParams { temperature: 5.0, ..Default::default() };
        assert!(matches!(p.validate(10), Err(Error::InvalidRequest { param: "temperature", .. })));
        let p = SamplingParams { logit_bias: vec![(10, 1.0)], ..Default::default() };
        assert!(matches!(p.validate(10), Err(Error::InvalidRequest { param: "logit_bias", .. })));
    }
}
