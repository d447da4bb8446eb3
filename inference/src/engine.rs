//! The [`Engine`] handle and the engine thread behind it.
//!
//! One thread owns the model, every sequence's KV cache and a rayon pool of
//! `threads` workers (the engine's whole CPU budget: the loop itself runs on
//! one of those workers, and nothing else in the process uses the pool).
//! Request tasks never touch tensors: [`Engine::generate`] validates and
//! tokenizes the request, reserves capacity, and sends it over a bounded
//! channel; tokens come back on the returned [`GenerationStream`].
//!
//! Each loop iteration is one step of continuous batching: drop sequences
//! whose stream was dropped, admit waiting ones, plan the step
//! (`scheduler::plan`: a decode token for every generating sequence, then
//! prefill chunks), run one forward pass over all of them, then sample,
//! detokenize and send for each. A sequence leaves the batch the step it
//! finishes or is cancelled, and frees its cache and reservation then.
//!
//! Admission is decided on the caller's side, before anything is queued:
//! a request needs one of `max_running + max_waiting` slots and a KV
//! reservation for its worst case (prompt + max_tokens). Otherwise it fails
//! at once with [`Error::Overloaded`] and an estimated `retry_after`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::detok::{StopMatcher, Utf8Stream};
use crate::error::{Error, Result};
use crate::device::{DeviceSpec, Resolved};
use crate::gguf::GgufFile;
use crate::kernels::quant::Kernel;
use crate::kv_cache::KvCache;
use crate::models::llama_device::DeviceLlama;
use crate::models::llama_gguf::LlamaModel;
use crate::models::{BatchSeq, Decoder, Logits, SequenceCache};
use crate::sampling::{Sampler, SamplingParams, TokenLogprob};
use crate::scheduler::{self, Budget, SeqView};
use crate::tokenizer::Tokenizer;

/// Most alternatives a request may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Engine settings (the `[engine]` section of the config).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The GGUF to load.
    pub model_path: PathBuf,
    /// Name the model is served under.
    pub model_name: String,
    /// CPU threads for the forward pass (0: every core).
    pub threads: usize,
    /// Sequences decoded together in one step.
    pub max_running: usize,
    /// Admitted requests waiting for a running slot; beyond: `Overloaded`.
    pub max_waiting: usize,
    /// KV cache memory for all sequences together; requests reserve their
    /// worst case against it.
    pub kv_cache_bytes: usize,
    /// Most tokens in one forward pass (decode tokens + prefill chunks).
    pub max_batch_tokens: usize,
    /// Most prompt tokens one sequence prefills per step, so a long prompt
    /// does not stall everyone else's stream.
    pub prefill_chunk: usize,
    /// Where the forward pass runs.
    pub device: DeviceSpec,
}

impl EngineConfig {
    /// Defaults for a model file: sized for a small CPU box.
    pub fn new(model_path: impl Into<PathBuf>, model_name: impl Into<String>) -> Self {
        Self {
            model_path: model_path.into(),
            model_name: model_name.into(),
            threads: 0,
            max_running: 16,
            max_waiting: 64,
            kv_cache_bytes: 1 << 30,
            max_batch_tokens: 512,
            prefill_chunk: 256,
            device: DeviceSpec::Cpu,
        }
    }
}

/// What to complete.
#[derive(Clone, Debug)]
pub enum Prompt {
    /// Raw text; special-token strings in it are recognised (as llama-server does).
    Text(String),
    /// A conversation, rendered with the model's chat template and ending
    /// with an open assistant turn.
    Chat(Vec<ChatMessage>),
    /// A conversation whose last message, the assistant's answer so far, is
    /// to be continued: rendered up to an open assistant turn that already
    /// holds that text (vLLM's `continue_final_message`).
    ChatContinued(Vec<ChatMessage>),
    /// Token ids as they are.
    Tokens(Vec<u32>),
}

/// A generation request.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Most tokens to generate; `None`: up to the context length.
    pub max_tokens: Option<usize>,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Stop strings (matched on text, not emitted).
    pub stop: Vec<String>,
    /// Per generated token: its logprob and this many alternatives.
    pub logprobs: Option<usize>,
    /// Per prompt token: its logprob and this many alternatives.
    pub prompt_logprobs: Option<usize>,
    /// Keep going past EOS (benchmarks).
    pub ignore_eos: bool,
    /// Reduce `max_tokens` to the room the context leaves instead of
    /// refusing it: for a server's default, which the client never chose.
    pub clamp_max_tokens: bool,
}

impl GenerateRequest {
    /// A request with default sampling.
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            max_tokens: None,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            logprobs: None,
            prompt_logprobs: None,
            ignore_eos: false,
            clamp_max_tokens: false,
        }
    }
}

/// A token's logprob and the most likely alternatives at its position.
#[derive(Clone, Debug, PartialEq)]
pub struct LogprobInfo {
    /// Logprob of the token actually in the sequence.
    pub logprob: f32,
    /// Most likely tokens, best first.
    pub top: Vec<TokenLogprob>,
}

/// One generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    /// Its id.
    pub id: u32,
    /// Text that became final with this token: whole UTF-8 characters only,
    /// minus anything that may still turn out to be a stop string (so it can
    /// be empty). The concatenation of all `text`s and `Done::flush` is the answer.
    pub text: String,
    /// Present when the request asked for logprobs.
    pub logprob: Option<LogprobInfo>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// A stop string matched.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// Token counts of a finished request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (including a final EOS).
    pub completion_tokens: usize,
}

/// The last event of a stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Done {
    /// Why it ended.
    pub finish: FinishReason,
    /// Text held back until the end (a partial stop-string match that never completed).
    pub flush: String,
    /// Token counts.
    pub usage: Usage,
    /// Per prompt token, when asked (the first has none: nothing predicts it).
    pub prompt_logprobs: Option<Vec<Option<LogprobInfo>>>,
}

/// What a [`GenerationStream`] yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A token.
    Token(TokenEvent),
    /// The end.
    Done(Done),
    /// The engine failed this sequence (the engine itself keeps running).
    Error(String),
}

/// The tokens of one request. Dropping it cancels the request: the engine
/// removes the sequence at its next step and frees its cache.
#[derive(Debug)]
pub struct GenerationStream {
    rx: mpsc::UnboundedReceiver<Event>,
    prompt_tokens: usize,
}

impl GenerationStream {
    /// The next event; `None` after `Done`/`Error`.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Blocking variant, for callers outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    /// Prompt length in tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }
}

/// Live figures of the engine, updated every step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStats {
    /// Sequences in the batch.
    pub running: usize,
    /// Admitted sequences waiting for a slot.
    pub waiting: usize,
    /// KV bytes reserved by admitted requests.
    pub kv_reserved_bytes: usize,
    /// KV bytes actually allocated by running sequences.
    pub kv_allocated_bytes: usize,
    /// Steps run since start.
    pub steps: u64,
    /// Tokens generated since start.
    pub generated_tokens: u64,
    /// Recent generation rate over all sequences (EWMA).
    pub tokens_per_second: f64,
}

/// Facts about the loaded model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// Served name.
    pub name: String,
    /// Architecture from the GGUF.
    pub arch: String,
    /// Context length in tokens.
    pub context_length: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Bytes of weights in memory.
    pub weight_bytes: usize,
    /// KV bytes per token.
    pub kv_bytes_per_token: usize,
    /// CPU kernel in use (for the CPU device).
    pub kernel: Kernel,
    /// Where the forward pass runs (`cpu`, `cuda:0`, ...): after a fallback,
    /// not what was asked for.
    pub device: DeviceSpec,
    /// Forward-pass threads.
    pub threads: usize,
    /// Time the load took.
    pub load_time: Duration,
}

/// Capacity bookkeeping shared by handles and the engine thread.
#[derive(Debug)]
struct Admission {
    slots: Arc<Semaphore>,
    kv_budget: usize,
    kv_reserved: AtomicUsize,
    /// Generation tokens admitted but not yet produced (for retry estimates).
    outstanding_tokens: AtomicUsize,
    /// Sequences decoded together (the rest of the slots wait).
    max_running: usize,
    /// Running + waiting slots.
    total_slots: usize,
}

/// Capacity held by one request; released when the sequence is dropped.
#[derive(Debug)]
struct Reservation {
    admission: Arc<Admission>,
    kv_bytes: usize,
    tokens: usize,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.admission.kv_reserved.fetch_sub(self.kv_bytes, Ordering::AcqRel);
        self.admission.outstanding_tokens.fetch_sub(self.tokens, Ordering::AcqRel);
    }
}

impl Admission {
    fn reserve(self: &Arc<Self>, kv_bytes: usize, tokens: usize, rate: f64) -> Result<Reservation> {
        let retry_after = || {
            // Time for the work already admitted to drain at the current rate.
            let pending = self.outstanding_tokens.load(Ordering::Acquire) as f64;
            let secs = if rate > 0.0 { pending / rate } else { 1.0 };
            Duration::from_secs_f64(secs.clamp(1.0, 120.0).ceil())
        };
        let slot = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| Error::Overloaded {
            reason: "too many requests",
            retry_after: retry_after(),
        })?;
        let mut cur = self.kv_reserved.load(Ordering::Acquire);
        loop {
            if cur + kv_bytes > self.kv_budget {
                return Err(Error::Overloaded {
                    reason: "kv cache full",
                    retry_after: retry_after(),
                });
            }
            match self
                .kv_reserved
                .compare_exchange_weak(cur, cur + kv_bytes, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.outstanding_tokens.fetch_add(tokens, Ordering::AcqRel);
        Ok(Reservation {
            admission: Arc::clone(self),
            kv_bytes,
            tokens,
            _slot: slot,
        })
    }
}

struct Shared {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    info: ModelInfo,
    admission: Arc<Admission>,
}

/// A request accepted by a handle, on its way to the engine thread.
struct NewSequence {
    prompt: Vec<u32>,
    max_tokens: usize,
    sampling: SamplingParams,
    stop: Vec<String>,
    logprobs: Option<usize>,
    prompt_logprobs: Option<usize>,
    ignore_eos: bool,
    tx: mpsc::UnboundedSender<Event>,
    reservation: Reservation,
    span: tracing::Span,
}

/// Cheap, cloneable handle to a running engine.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    tx: mpsc::Sender<NewSequence>,
    stats: watch::Receiver<EngineStats>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("model", &self.shared.info.name).finish()
    }
}

impl Engine {
    /// Load the model and start the engine thread. Blocking (the load reads
    /// the whole file): call it from `spawn_blocking` inside async code.
    pub fn start(cfg: EngineConfig) -> Result<Self> {
        let started = Instant::now();
        let mut g = GgufFile::open(&cfg.model_path)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        let template = match g.str_opt("tokenizer.chat_template") {
            Some(src) => {
                let name = |id: Option<u32>| id.map(|i| tokenizer.token_text(i)).unwrap_or_default();
                Some(ChatTemplate::new(
                    src,
                    &name(tokenizer.special().bos),
                    &name(Some(tokenizer.special().eos)),
                )?)
            }
            None => None,
        };
        let loaded = Loaded { cfg, tokenizer, template, started };
        match loaded.cfg.device.resolve() {
            Resolved::Kernels => loaded.launch(LlamaModel::from_gguf(&mut g)?, DeviceSpec::Cpu),
            Resolved::Candle(dev) => {
                let spec = loaded.cfg.device;
                loaded.launch(DeviceLlama::from_gguf(&mut g, &dev)?, spec)
            }
        }
    }
}

/// What `Engine::start` has read before the weights: the rest of the start
/// is the same for every [`Decoder`].
struct Loaded {
    cfg: EngineConfig,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    started: Instant,
}

impl Loaded {
    fn launch<M: Decoder>(self, model: M, device: DeviceSpec) -> Result<Engine> {
        let Self { cfg, tokenizer, template, started } = self;
        let mc = model.config();
        let threads = if cfg.threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            cfg.threads
        };
        // Both backends keep f32 keys and values.
        let kv_bytes_per_token = KvCache::bytes_per_token(mc.n_layer, mc.kv_dim());
        let info = ModelInfo {
            name: cfg.model_name.clone(),
            arch: mc.arch.clone(),
            context_length: mc.context_length,
            vocab_size: mc.vocab_size,
            weight_bytes: model.weight_bytes(),
            kv_bytes_per_token,
            kernel: Kernel::detect(),
            device,
            threads,
            load_time: started.elapsed(),
        };
        let admission = Arc::new(Admission {
            slots: Arc::new(Semaphore::new(cfg.max_running + cfg.max_waiting)),
            kv_budget: cfg.kv_cache_bytes,
            kv_reserved: AtomicUsize::new(0),
            outstanding_tokens: AtomicUsize::new(0),
            max_running: cfg.max_running.max(1),
            total_slots: cfg.max_running + cfg.max_waiting,
        });
        let shared = Arc::new(Shared {
            tokenizer,
            template,
            info,
            admission,
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("starling-engine-{i}"))
            .build()
            .map_err(|e| Error::InvalidRequest {
                param: "threads",
                message: format!("cannot start {threads} engine threads: {e}"),
            })?;
        // The semaphore bounds what can be in flight, so try_send never
        // finds the channel full.
        let (tx, rx) = mpsc::channel(cfg.max_running + cfg.max_waiting + 1);
        let (stats_tx, stats_rx) = watch::channel(EngineStats::default());
        let worker = Worker {
            shared: Arc::clone(&shared),
            model,
            budget: Budget {
                max_batch_tokens: cfg.max_batch_tokens.max(1),
                prefill_chunk: cfg.prefill_chunk.max(1),
            },
            max_running: cfg.max_running.max(1),
            rx,
            stats_tx,
            running: Vec::new(),
            waiting: VecDeque::new(),
            stats: EngineStats::default(),
        };
        std::thread::Builder::new()
            .name("starling-engine".into())
            .spawn(move || pool.install(move || worker.run()))
            .map_err(|e| Error::InvalidRequest {
                param: "threads",
                message: format!("cannot spawn the engine thread: {e}"),
            })?;
        tracing::info!(
            model = %shared.info.name,
            weights_mb = shared.info.weight_bytes / (1 << 20),
            kernel = ?shared.info.kernel,
            device = %shared.info.device,
            threads,
            load_ms = shared.info.load_time.as_millis() as u64,
            "engine started"
        );
        Ok(Engine {
            shared,
            tx,
            stats: stats_rx,
        })
    }
}

impl Engine {
    /// Validate, tokenize and admit a request; its tokens arrive on the stream.
    /// Fails at once with `Overloaded` when the engine is at a limit.
    pub fn generate(&self, req: GenerateRequest) -> Result<GenerationStream> {
        let info = &self.shared.info;
        let prompt = self.encode_prompt(&req.prompt)?;
        if prompt.is_empty() {
            return Err(Error::InvalidRequest {
                param: "prompt",
                message: "the prompt is empty".into(),
            });
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= info.vocab_size) {
            return Err(Error::InvalidRequest {
                param: "prompt",
                message: format!("token id {bad} is outside the vocabulary (size {})", info.vocab_size),
            });
        }
        let ctx = info.context_length;
        if prompt.len() >= ctx {
            return Err(Error::InvalidRequest {
                param: "prompt",
                message: format!("the prompt has {} tokens; the context length is {ctx}", prompt.len()),
            });
        }
        let room = ctx - prompt.len();
        let mut max_tokens = req.max_tokens.unwrap_or(room);
        if req.clamp_max_tokens {
            max_tokens = max_tokens.min(room);
        }
        if max_tokens == 0 || max_tokens > room {
            return Err(Error::InvalidRequest {
                param: "max_tokens",
                message: format!(
                    "{max_tokens} is not between 1 and {room} (context length {ctx} minus {} prompt tokens)",
                    prompt.len()
                ),
            });
        }
        req.sampling.validate(info.vocab_size)?;
        for (param, n) in [("logprobs", req.logprobs), ("prompt_logprobs", req.prompt_logprobs)] {
            if n.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
                return Err(Error::InvalidRequest {
                    param,
                    message: format!("at most {MAX_TOP_LOGPROBS} alternatives per token"),
                });
            }
        }
        let kv_bytes = (prompt.len() + max_tokens) * info.kv_bytes_per_token;
        if kv_bytes > self.shared.admission.kv_budget {
            return Err(Error::InvalidRequest {
                param: "max_tokens",
                message: format!(
                    "prompt + max_tokens = {} tokens needs {} MiB of KV cache; the engine has {} MiB",
                    prompt.len() + max_tokens,
                    kv_bytes >> 20,
                    self.shared.admission.kv_budget >> 20
                ),
            });
        }
        let rate = self.stats.borrow().tokens_per_second;
        let reservation = self.shared.admission.reserve(kv_bytes, max_tokens, rate)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let prompt_tokens = prompt.len();
        let seq = NewSequence {
            prompt,
            max_tokens,
            sampling: req.sampling,
            stop: req.stop,
            logprobs: req.logprobs,
            prompt_logprobs: req.prompt_logprobs,
            ignore_eos: req.ignore_eos,
            tx,
            reservation,
            span: tracing::Span::current(),
        };
        self.tx.try_send(seq).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Overloaded {
                reason: "too many requests",
                retry_after: Duration::from_secs(1),
            },
            mpsc::error::TrySendError::Closed(_) => Error::EngineStopped,
        })?;
        Ok(GenerationStream { rx, prompt_tokens })
    }

    /// Token ids of a prompt, as `generate` would feed them to the model.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let tok = &self.shared.tokenizer;
        let mut ids = Vec::new();
        let text = match prompt {
            Prompt::Tokens(t) => return Ok(t.clone()),
            Prompt::Text(s) => s.clone(),
            Prompt::Chat(messages) => self.render_chat(messages)?,
            Prompt::ChatContinued(messages) => match messages.split_last() {
                Some((last, before)) if last.role == crate::Role::Assistant => self.render_chat(before)? + &last.content,
                _ => {
                    return Err(Error::InvalidRequest {
                        param: "messages",
                        message: "continuing a final message needs the last message to be the assistant's".into(),
                    })
                }
            },
        };
        if tok.special().add_bos {
            ids.extend(tok.special().bos);
        }
        ids.extend(tok.encode(&text, true)?);
        Ok(ids)
    }

    /// A conversation rendered with the model's chat template.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        match &self.shared.template {
            Some(t) => t.render(messages, true),
            None => Err(Error::InvalidRequest {
                param: "messages",
                message: format!("model `{}` has no chat template", self.shared.info.name),
            }),
        }
    }

    /// Requests admitted now (running or waiting), read live.
    pub fn admitted(&self) -> usize {
        let a = &self.shared.admission;
        a.total_slots.saturating_sub(a.slots.available_permits())
    }

    /// How long a request admitted now would likely wait for a slot before
    /// its prefill starts. Zero while a slot is free. Otherwise the work
    /// ahead of it (one admitted sequence's share of the reserved tokens,
    /// for each sequence that must finish first) at the recent generation
    /// rate: an upper bound, since reservations count `max_tokens`. `None`
    /// when every slot is busy and no rate has been measured yet.
    pub fn predicted_wait(&self) -> Option<Duration> {
        let a = &self.shared.admission;
        let admitted = self.admitted();
        if admitted < a.max_running {
            return Some(Duration::ZERO);
        }
        let rate = self.stats.borrow().tokens_per_second;
        if rate <= 0.0 {
            return None;
        }
        let per_seq = a.outstanding_tokens.load(Ordering::Acquire) as f64 / admitted as f64;
        let ahead = (admitted + 1 - a.max_running) as f64;
        Some(Duration::from_secs_f64((ahead * per_seq / rate).min(3600.0)))
    }

    /// Sequences decoded together.
    pub fn max_running(&self) -> usize {
        self.shared.admission.max_running
    }

    /// The KV cache budget admission reserves against, in bytes.
    pub fn kv_budget_bytes(&self) -> usize {
        self.shared.admission.kv_budget
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.shared.tokenizer
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.shared.info
    }

    /// The latest figures: those of the last step, except the KV
    /// reservation, which is read live (`generate` takes it before returning).
    pub fn stats(&self) -> EngineStats {
        let mut st = self.stats.borrow().clone();
        st.kv_reserved_bytes = self.shared.admission.kv_reserved.load(Ordering::Acquire);
        st
    }

    /// A receiver that sees every update of the figures (one per step).
    pub fn watch_stats(&self) -> watch::Receiver<EngineStats> {
        self.stats.clone()
    }
}

/// A sequence inside the engine thread.
struct Sequence<C> {
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
    tx: mpsc::UnboundedSender<Event>,
    /// Released (slot, KV reservation) when the sequence is dropped.
    _reservation: Reservation,
    span: tracing::Span,
}

impl<C: SequenceCache> Sequence<C> {
    fn new(n: NewSequence, cache: C) -> Self {
        let sampler = Sampler::new(n.sampling, &n.prompt);
        let prompt_len = n.prompt.len();
        let mut tokens = n.prompt;
        tokens.reserve(n.max_tokens);
        Self {
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

    fn done(&mut self, finish: FinishReason, mut flush: String) {
        if finish != FinishReason::Stop {
            let tail = self.utf8.finish();
            flush.push_str(&self.stop.push(&tail).emit);
            flush.push_str(&self.stop.finish());
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

    /// Handle a freshly sampled token. Returns true when the sequence ends.
    fn accept(&mut self, tok: &Tokenizer, id: u32, logprob: Option<LogprobInfo>) -> bool {
        self.tokens.push(id);
        if !self.ignore_eos && tok.is_eos(id) {
            self.done(FinishReason::Eos, String::new());
            return true;
        }
        let piece = if tok.is_control(id) { String::new() } else { self.utf8.push(tok.token_bytes(id)) };
        let check = self.stop.push(&piece);
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

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
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

struct Worker<M: Decoder> {
    shared: Arc<Shared>,
    model: M,
    budget: Budget,
    max_running: usize,
    rx: mpsc::Receiver<NewSequence>,
    stats_tx: watch::Sender<EngineStats>,
    running: Vec<Sequence<M::Cache>>,
    waiting: VecDeque<Sequence<M::Cache>>,
    stats: EngineStats,
}

impl<M: Decoder> Worker<M> {
    fn run(mut self) {
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
            views.clear();
            views.extend(self.running.iter().map(|s| SeqView { prompt_left: s.prompt_left() }));
            scheduler::plan(&views, self.budget, &mut plan);
            let started = Instant::now();
            let produced = self.step(&plan, &mut scratch, &mut logits);
            self.publish(produced, started.elapsed());
        }
        tracing::info!("engine stopped");
    }

    fn enqueue(&mut self, n: NewSequence) {
        let cache = self.model.new_cache();
        self.waiting.push_back(Sequence::new(n, cache));
    }

    /// One forward pass and its sampling. Returns tokens generated.
    fn step(&mut self, plan: &[usize], scratch: &mut M::Scratch, logits: &mut Vec<f32>) -> usize {
        let mut batch: Vec<BatchSeq<'_, M::Cache>> = Vec::with_capacity(self.running.len());
        for (s, &n) in self.running.iter_mut().zip(plan) {
            if n == 0 {
                continue;
            }
            let start = s.cache.len();
            let finishes_prompt = start + n >= s.prompt_len;
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
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.model.forward(&mut batch, scratch, logits)))
            .unwrap_or_else(|panic| Err(Error::Backend(panic_message(&panic))));
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
            // Position of the first token of this chunk.
            let start = s.cache.len() - len;
            if kind == Logits::All {
                // Row i predicts the token at start + i + 1.
                for i in 0..rows {
                    let next = start + i + 1;
                    if next >= s.prompt_len {
                        break;
                    }
                    let r = &logits[(first_row + i) * vocab..(first_row + i + 1) * vocab];
                    if let Some((top, out)) = s.prompt_logprobs.as_mut() {
                        let (lp, best) = s.sampler.logprobs_of(r, s.tokens[next], *top);
                        out.push(Some(LogprobInfo { logprob: lp, top: best }));
                    }
                }
            }
            if s.cache.len() < s.prompt_len || rows == 0 {
                continue; // still prefilling
            }
            let last = first_row + rows - 1;
            let r = &mut logits[last * vocab..(last + 1) * vocab];
            let sampled = s.sampler.sample(r, s.logprobs);
            let info = sampled.logprobs.map(|(logprob, top)| LogprobInfo { logprob, top });
            produced += 1;
            finished[si] = s.accept(tok, sampled.id, info);
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
