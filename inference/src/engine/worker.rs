//! The engine thread: sequences, and the continuous-batching loop that
//! admits, plans, runs one forward pass and samples per step.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::constraint::{Guide, Pick};
use crate::detok::{StopMatcher, Utf8Stream};
use crate::error::Error;
use crate::models::{BatchSeq, Decoder, Logits, SequenceCache};
use crate::sampling::Sampler;
use crate::scheduler::{self, Budget, SeqView};
use crate::tokenizer::Tokenizer;
use super::{Done, EngineStats, Event, FinishReason, LogprobInfo, TokenEvent, Usage};
use super::admission::Reservation;
use super::handle::{NewSequence, Shared};

/// Shortest prompt worth prefilling once for several sequences.
const MIN_SHARED_PROMPT: usize = 8;

/// A sequence inside the engine thread.
pub(super) struct Sequence<C> {
    /// Its number in this engine (sequences sharing a prompt name their source by it).
    id: u64,
    /// The sequence prefilling this one's prompt, whose cache it will copy
    /// instead of prefilling it again (`n` choices of one request).
    follows: Option<u64>,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    cache: C,
    sampler: Sampler,
    utf8: Utf8Stream,
    stop: StopMatcher,
    logprobs: Option<usize>,
    prompt_logprobs: Option<(usize, Vec<Option<LogprobInfo>>)>,
    ignore_eos: bool,
    /// What the output must be, when constrained.
    guide: Option<Guide>,
    tx: mpsc::UnboundedSender<Event>,
    /// Released (slot, KV reservation) when the sequence is dropped.
    _reservation: Reservation,
    span: tracing::Span,
}

impl<C: SequenceCache> Sequence<C> {
    fn new(id: u64, n: NewSequence, cache: C) -> Self {
        let sampler = Sampler::new(n.sampling, &n.prompt);
        let prompt_len = n.prompt.len();
        let mut tokens = n.prompt;
        tokens.reserve(n.max_tokens);
        Self {
            id,
            follows: None,
            tokens,
            prompt_len,
            max_tokens: n.max_tokens,
            cache,
            sampler,
            utf8: Utf8Stream::default(),
            stop: StopMatcher::new(&n.stop),
            logprobs: n.logprobs,
            prompt_logprobs: n.prompt_logprobs.map(|k| (k, vec![None])),
            ignore_eos: n.ignore_eos,
            guide: n.guide,
            tx: n.tx,
            _reservation: n.reservation,
            span: n.span,
        }
    }

    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    fn prompt_left(&self) -> usize {
        self.prompt_len.saturating_sub(self.cache.len())
    }

    /// Whether `other` could prefill this sequence's prompt for it: the
    /// same prompt, and neither needs every prompt row's logits.
    fn shares_prompt_with(&self, other: &Self) -> bool {
        self.prompt_len >= MIN_SHARED_PROMPT
            && other.follows.is_none()
            && self.prompt_logprobs.is_none()
            && other.prompt_logprobs.is_none()
            && other.tokens.get(..other.prompt_len) == Some(&self.tokens[..self.prompt_len])
    }

    fn done(&mut self, finish: FinishReason, mut flush: String) {
        if finish != FinishReason::Stop {
            let tail = self.utf8.finish();
            // A constrained output cut short drops a character it never
            // finished rather than end in U+FFFD.
            if self.guide.is_none() || finish != FinishReason::Length {
                flush.push_str(&self.stop.push(&tail).emit);
            }
            flush.push_str(&self.stop.finish());
        }
        if let Some(g) = &mut self.guide {
            flush = g.emit(flush);
            flush.push_str(&g.finish(finish == FinishReason::Length));
        }
        let usage = Usage {
            prompt_tokens: self.prompt_len,
            completion_tokens: self.generated(),
        };
        let _enter = self.span.enter();
        tracing::debug!(?finish, usage.completion_tokens, "sequence finished");
        let prompt_logprobs = self.prompt_logprobs.take().map(|(_, v)| v);
        // The receiver may be gone already; nothing to do then.
        let _ = self.tx.send(Event::Done(Done {
            finish,
            flush,
            usage,
            prompt_logprobs,
        }));
    }

    /// After a forward pass: record prompt logprobs from its rows, and
    /// sample the next token once the prompt is all in the cache.
    fn sample_step(&mut self, rows: Rows<'_>, tok: &Tokenizer) -> Step {
        let Rows { logits, vocab, first, count, kind, len } = rows;
        // Position of the first token of this chunk.
        let start = self.cache.len() - len;
        if kind == Logits::All {
            // Row i predicts the token at start + i + 1.
            for i in 0..count {
                let next = start + i + 1;
                if next >= self.prompt_len {
                    break;
                }
                let r = &logits[(first + i) * vocab..(first + i + 1) * vocab];
                if let Some((top, out)) = self.prompt_logprobs.as_mut() {
                    let (lp, best) = self.sampler.logprobs_of(r, self.tokens[next], *top);
                    out.push(Some(LogprobInfo { logprob: lp, top: best }));
                }
            }
        }
        if self.cache.len() < self.prompt_len || count == 0 {
            return Step::Prefilling;
        }
        let last = first + count - 1;
        let r = &mut logits[last * vocab..(last + 1) * vocab];
        let sampled = match &mut self.guide {
            None => self.sampler.sample(r, self.logprobs),
            Some(g) => match g.pick(&mut self.sampler, r, self.logprobs, tok) {
                Pick::Token(s) => s,
                Pick::End => {
                    self.done(FinishReason::Length, String::new());
                    return Step::Sampled { done: true };
                }
                Pick::Fail(message) => {
                    let _ = self.tx.send(Event::Error(format!("constrained decoding failed: {message}")));
                    return Step::Sampled { done: true };
                }
            },
        };
        let info = sampled.logprobs.map(|(logprob, top)| LogprobInfo { logprob, top });
        Step::Sampled { done: self.accept(tok, sampled.id, info) }
    }

    /// Handle a freshly sampled token. Returns true when the sequence ends.
    fn accept(&mut self, tok: &Tokenizer, id: u32, logprob: Option<LogprobInfo>) -> bool {
        self.tokens.push(id);
        if !self.ignore_eos && tok.is_eos(id) {
            self.done(FinishReason::Eos, String::new());
            return true;
        }
        let piece = if tok.is_control(id) { String::new() } else { self.utf8.push(tok.token_bytes(id)) };
        let mut check = self.stop.push(&piece);
        if let Some(g) = &mut self.guide {
            check.emit = g.emit(std::mem::take(&mut check.emit));
        }
        if check.stopped {
            // The matched stop string and anything after it are dropped.
            let sent = self.tx.send(Event::Token(TokenEvent { id, text: check.emit, logprob }));
            if sent.is_ok() {
                self.done(FinishReason::Stop, String::new());
            }
            return true;
        }
        if self.tx.send(Event::Token(TokenEvent { id, text: check.emit, logprob })).is_err() {
            return true; // cancelled
        }
        if self.generated() >= self.max_tokens {
            self.done(FinishReason::Length, String::new());
            return true;
        }
        false
    }
}

/// One sequence's rows of a step's logits.
struct Rows<'a> {
    logits: &'a mut [f32],
    vocab: usize,
    /// Its first row.
    first: usize,
    /// How many rows it has.
    count: usize,
    kind: Logits,
    /// Tokens it fed this step.
    len: usize,
}

/// What a step did for one sequence.
enum Step {
    /// Its prompt is not all in the cache yet.
    Prefilling,
    /// A token was sampled; `done`: the sequence ended with it.
    Sampled { done: bool },
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic without a message".to_owned())
}

/// Drop the running sequences whose index `gone` marks (dropping one frees
/// its cache and reservation).
fn remove_marked<C>(running: &mut Vec<Sequence<C>>, gone: impl Fn(usize) -> bool) {
    let mut i = 0;
    running.retain(|_| {
        i += 1;
        !gone(i - 1)
    });
}

pub(super) struct Worker<M: Decoder> {
    pub(super) shared: Arc<Shared>,
    pub(super) model: M,
    pub(super) budget: Budget,
    pub(super) max_running: usize,
    pub(super) rx: mpsc::Receiver<NewSequence>,
    pub(super) stats_tx: watch::Sender<EngineStats>,
    pub(super) running: Vec<Sequence<M::Cache>>,
    pub(super) waiting: VecDeque<Sequence<M::Cache>>,
    pub(super) stats: EngineStats,
    /// The next sequence's id.
    pub(super) next_id: u64,
    /// Whether sequences with the same prompt share its prefill.
    pub(super) share_prompts: bool,
}

impl<M: Decoder> Worker<M> {
    pub(super) fn run(mut self) {
        let mut scratch = M::Scratch::default();
        let mut logits = Vec::new();
        let mut plan = Vec::new();
        let mut views = Vec::new();
        let mut open = true;
        loop {
            // Take new requests; block only when there is nothing to run.
            if self.running.is_empty() && self.waiting.is_empty() {
                if !open {
                    break;
                }
                match self.rx.blocking_recv() {
                    Some(n) => self.enqueue(n),
                    None => break,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(n) => self.enqueue(n),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            // Cancelled sequences leave before the step: their streams were dropped.
            self.running.retain(|s| !s.tx.is_closed());
            self.waiting.retain(|s| !s.tx.is_closed());
            while self.running.len() < self.max_running {
                match self.waiting.pop_front() {
                    Some(s) => self.running.push(s),
                    None => break,
                }
            }
            if self.running.is_empty() {
                self.publish(0, Duration::ZERO);
                continue;
            }
            self.share_prompts();
            views.clear();
            views.extend(self.running.iter().map(|s| SeqView { prompt_left: s.prompt_left(), waiting: s.follows.is_some() }));
            scheduler::plan(&views, self.budget, &mut plan);
            let started = Instant::now();
            let produced = self.step(&plan, &mut scratch, &mut logits);
            self.publish(produced, started.elapsed());
        }
        tracing::info!("engine stopped");
    }

    fn enqueue(&mut self, n: NewSequence) {
        match self.model.new_cache(n.prompt.len() + n.max_tokens) {
            Ok(cache) => {
                self.next_id += 1;
                let mut s = Sequence::new(self.next_id, n, cache);
                // Arrival order is start order, so the source, admitted
                // earlier, runs no later than this one.
                if self.share_prompts {
                    s.follows = self.running.iter().chain(&self.waiting).find(|o| s.shares_prompt_with(o)).map(|o| o.id);
                }
                self.waiting.push_back(s);
            }
            // Out of device memory, say: this request fails, the engine goes on.
            Err(e) => {
                let _enter = n.span.enter();
                tracing::error!(error = %e, "cannot allocate the KV cache of a sequence");
                let _ = n.tx.send(Event::Error(format!("inference failed: {e}")));
            }
        }
    }

    /// Give every sequence that follows another's prefill the prompt its
    /// source has cached (all but the last token: the follower runs that
    /// one itself, for logits of its own to sample from). A follower whose
    /// source left, or whose copy failed, prefills for itself.
    fn share_prompts(&mut self) {
        for i in 0..self.running.len() {
            let Some(source) = self.running[i].follows else { continue };
            let Some(j) = self.running.iter().position(|s| s.id == source) else {
                self.running[i].follows = None;
                continue;
            };
            let len = self.running[i].prompt_len - 1;
            if self.running[j].cache.len() < len {
                continue;
            }
            let (follower, source) = if i < j {
                let (a, b) = self.running.split_at_mut(j);
                (&mut a[i], &b[0])
            } else {
                let (a, b) = self.running.split_at_mut(i);
                (&mut b[0], &a[j])
            };
            follower.follows = None;
            match follower.cache.copy_prefix(&source.cache, len) {
                Ok(()) => self.stats.shared_prompt_tokens += len as u64,
                Err(e) => {
                    let _enter = follower.span.enter();
                    tracing::warn!(error = %e, "cannot copy a shared prompt; prefilling it");
                }
            }
        }
    }

    /// One forward pass and its sampling. Returns tokens generated.
    fn step(&mut self, plan: &[usize], scratch: &mut M::Scratch, logits: &mut Vec<f32>) -> usize {
        let mut batch: Vec<BatchSeq<'_, M::Cache>> = Vec::with_capacity(self.running.len());
        let mut grammars = Vec::new();
        for (s, &n) in self.running.iter_mut().zip(plan) {
            if n == 0 {
                continue;
            }
            let start = s.cache.len();
            let finishes_prompt = start + n >= s.prompt_len;
            if finishes_prompt {
                grammars.extend(s.guide.as_mut().and_then(Guide::grammar));
            }
            let kind = match (&s.prompt_logprobs, start < s.prompt_len) {
                (Some(_), true) => Logits::All,
                _ if finishes_prompt => Logits::Last,
                _ => Logits::None,
            };
            batch.push(BatchSeq {
                tokens: &s.tokens[start..start + n],
                start_pos: start,
                cache: &mut s.cache,
                logits: kind,
            });
        }
        let kinds: Vec<(Logits, usize)> = batch.iter().map(|b| (b.logits, b.tokens.len())).collect();
        // A panic inside a backend (a CUDA error candle did not turn into a
        // Result) fails this step's requests like an error; the engine goes on.
        let mut forward = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.model.forward(&mut batch, scratch, logits)))
                .unwrap_or_else(|panic| Err(Error::Backend(panic_message(&panic))))
        };
        // Grammar masks for the tokens this pass will sample are computed
        // beside it: the jobs wait in this thread's queue for a pool thread
        // between the pass's parallel pieces (or this one, at the end), so
        // they stall nobody while they are shorter than the pass.
        let ran = if grammars.is_empty() {
            forward()
        } else {
            let masks = grammars.len();
            let mask_nanos = AtomicU64::new(0);
            let mut forward_done = Instant::now();
            let ran = rayon::in_place_scope(|scope| {
                for g in grammars {
                    let nanos = &mask_nanos;
                    scope.spawn(move |_| {
                        let started = Instant::now();
                        g.prepare();
                        nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    });
                }
                let ran = forward();
                forward_done = Instant::now();
                ran
            });
            self.stats.masks += masks as u64;
            self.stats.mask_seconds += mask_nanos.load(Ordering::Relaxed) as f64 * 1e-9;
            self.stats.mask_stall_seconds += forward_done.elapsed().as_secs_f64();
            ran
        };
        if let Err(e) = ran {
            drop(batch);
            // Fail the sequences of this step; the engine itself goes on.
            tracing::error!(error = %e, "forward pass failed");
            for (s, &n) in self.running.iter().zip(plan) {
                if n > 0 {
                    let _ = s.tx.send(Event::Error(format!("inference failed: {e}")));
                }
            }
            remove_marked(&mut self.running, |i| plan[i] > 0);
            return 0;
        }
        drop(batch);

        let vocab = self.model.config().vocab_size;
        let tok = &self.shared.tokenizer;
        let mut row = 0;
        let mut produced = 0;
        let mut finished = vec![false; self.running.len()];
        let mut k = 0;
        for (si, (s, &n)) in self.running.iter_mut().zip(plan).enumerate() {
            if n == 0 {
                continue;
            }
            let (kind, len) = kinds[k];
            k += 1;
            let rows = match kind {
                Logits::None => 0,
                Logits::Last => 1,
                Logits::All => len,
            };
            let first_row = row;
            row += rows;
            // A panic here (sampling, detokenizing, stop matching, a backend
            // that wrote too few logits) fails this sequence alone: the
            // engine and the others go on.
            let rows_of = Rows { logits: &mut logits[..], vocab, first: first_row, count: rows, kind, len };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.sample_step(rows_of, tok))) {
                Ok(Step::Prefilling) => {}
                Ok(Step::Sampled { done }) => {
                    produced += 1;
                    finished[si] = done;
                }
                Err(panic) => {
                    let message = panic_message(&panic);
                    let _enter = s.span.enter();
                    tracing::error!(panic = %message, "a sequence failed");
                    let _ = s.tx.send(Event::Error(format!("inference failed: {message}")));
                    finished[si] = true;
                }
            }
        }
        // Before the finished leave: a source that ended with this step
        // (one token was all it wanted) still holds the prompt its
        // followers wait for.
        if finished.iter().any(|&f| f) {
            self.share_prompts();
        }
        remove_marked(&mut self.running, |i| finished[i]);
        produced
    }

    fn publish(&mut self, produced: usize, took: Duration) {
        let st = &mut self.stats;
        if produced > 0 {
            st.steps += 1;
            st.generated_tokens += produced as u64;
            let rate = produced as f64 / took.as_secs_f64().max(1e-6);
            st.tokens_per_second = if st.tokens_per_second == 0.0 { rate } else { 0.9 * st.tokens_per_second + 0.1 * rate };
        }
        st.running = self.running.len();
        st.waiting = self.waiting.len();
        st.kv_reserved_bytes = self.shared.admission.kv_reserved.load(Ordering::Acquire);
        st.kv_allocated_bytes = self.running.iter().map(|s| s.cache.allocated_bytes()).sum();
        self.stats_tx.send_replace(st.clone());
    }
}
