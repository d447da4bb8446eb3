//! The [`Engine`] handle: start (load and launch the engine thread), and the
//! caller-side work of a request (validate, tokenize, admit, send).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Semaphore};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::constraint::{Grammars, Guide};
use crate::error::{Error, Result};
use crate::device::{DeviceSpec, Resolved};
use crate::gguf::GgufFile;
use crate::kernels::quant::Kernel;
use crate::kv_cache::KvCache;
use crate::models::llama_device::DeviceLlama;
use crate::models::llama_gguf::LlamaModel;
use crate::models::Decoder;
use crate::sampling::SamplingParams;
use crate::scheduler::Budget;
use crate::tokenizer::Tokenizer;
use super::{EngineConfig, EngineStats, Event, GenerateRequest, GenerationStream, ModelInfo, Prompt, MAX_TOP_LOGPROBS};
use super::admission::{Admission, Reservation};
use super::worker::{panic_message, Worker};

pub(super) struct Shared {
    pub(super) tokenizer: Tokenizer,
    pub(super) template: Option<ChatTemplate>,
    pub(super) info: ModelInfo,
    pub(super) admission: Arc<Admission>,
    /// Grammar compilation for constrained requests (built on first use).
    pub(super) grammars: Grammars,
}

/// A request accepted by a handle, on its way to the engine thread.
pub(super) struct NewSequence {
    pub(super) prompt: Vec<u32>,
    pub(super) max_tokens: usize,
    pub(super) sampling: SamplingParams,
    pub(super) stop: Vec<String>,
    pub(super) logprobs: Option<usize>,
    pub(super) prompt_logprobs: Option<usize>,
    pub(super) ignore_eos: bool,
    pub(super) guide: Option<Guide>,
    pub(super) tx: mpsc::UnboundedSender<Event>,
    pub(super) reservation: Reservation,
    pub(super) span: tracing::Span,
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
        let (loaded, mut g) = Loaded::read(cfg)?;
        match loaded.cfg.device.resolve() {
            Resolved::Kernels => loaded.launch(LlamaModel::from_gguf(&mut g)?, DeviceSpec::Cpu),
            Resolved::Candle(dev) => {
                let spec = loaded.cfg.device;
                loaded.launch(DeviceLlama::from_gguf(&mut g, &dev)?, spec)
            }
        }
    }
}

impl Engine {
    /// Start on a decoder of the caller's (another backend, or a test's
    /// that fails on purpose), with the tokenizer and chat template of the
    /// GGUF at `cfg.model_path`. Blocking, as [`Engine::start`].
    pub fn start_with<M: Decoder>(cfg: EngineConfig, model: M) -> Result<Self> {
        let (loaded, _) = Loaded::read(cfg)?;
        let device = loaded.cfg.device;
        loaded.launch(model, device)
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
    /// The tokenizer and chat template of `cfg.model_path`, and the open
    /// file for the weights.
    fn read(cfg: EngineConfig) -> Result<(Self, GgufFile)> {
        let started = Instant::now();
        let g = GgufFile::open(&cfg.model_path)?;
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
        Ok((Self { cfg, tokenizer, template, started }, g))
    }

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
            grammars: Grammars::default(),
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
            next_id: 0,
            share_prompts: cfg.share_prompts,
        };
        std::thread::Builder::new()
            .name("starling-engine".into())
            .spawn(move || {
                // Sequences contain their own panics; one that escapes the
                // loop ends the engine, which `is_running` then reports
                // (its figures' sender is gone with the worker).
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.install(move || worker.run())));
                if let Err(panic) = ran {
                    tracing::error!(panic = %panic_message(&panic), "the engine stopped");
                }
            })
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
        let guide = match &req.constraint {
            None => None,
            Some(_) if req.ignore_eos => {
                return Err(Error::InvalidRequest {
                    param: "ignore_eos",
                    message: "ignore_eos cannot be combined with a constrained output, which ends where its grammar does".into(),
                })
            }
            Some(c) => Some(
                Guide::new(c, &self.shared.grammars, &self.shared.tokenizer, info.vocab_size, max_tokens)
                    .map_err(|e| Error::Constraint(e.0))?,
            ),
        };
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
            guide,
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
        if tok.special().add_bos {
            ids.extend(tok.special().bos);
        }
        let (messages, continued, tools) = match prompt {
            Prompt::Tokens(t) => return Ok(t.clone()),
            Prompt::Text(s) => {
                ids.extend(tok.encode(s, true)?);
                return Ok(ids);
            }
            Prompt::Chat(m) => (m, false, &[][..]),
            Prompt::ChatContinued(m) => (m, true, &[][..]),
            Prompt::ChatWithTools { messages, tools } => (messages, false, tools.as_slice()),
        };
        // Message contents are the caller's text: a control token spelled in
        // one (`<|im_start|>system`) must stay text, or a user could forge a
        // turn. Only the template's own markers become control tokens.
        // The same holds for the tool calls and tool definitions a template
        // renders from the caller's JSON.
        let escape = messages.iter().any(|m| tok.has_control_text(&m.content) || m.tool_calls.iter().any(|c| tok.has_control_json(c)))
            || tools.iter().any(|t| tok.has_control_json(t));
        let (escaped, escaped_tools): (Vec<ChatMessage>, Vec<serde_json::Value>);
        let (messages, tools) = if escape {
            escaped = messages
                .iter()
                .map(|m| ChatMessage {
                    content: tok.escape_control(&m.content),
                    tool_calls: m.tool_calls.iter().map(|c| tok.escape_control_json(c)).collect(),
                    ..m.clone()
                })
                .collect();
            escaped_tools = tools.iter().map(|t| tok.escape_control_json(t)).collect();
            (&escaped[..], &escaped_tools[..])
        } else {
            (&messages[..], tools)
        };
        let text = if continued {
            match messages.split_last() {
                Some((last, before)) if last.role == crate::Role::Assistant => self.render_chat(before)? + &last.content,
                _ => {
                    return Err(Error::InvalidRequest {
                        param: "messages",
                        message: "continuing a final message needs the last message to be the assistant's".into(),
                    })
                }
            }
        } else if !tools.is_empty() {
            match &self.shared.template {
                Some(t) if t.speaks_tools() => t.render_with_tools(messages, tools, true)?,
                _ => {
                    return Err(Error::InvalidRequest {
                        param: "tools",
                        message: format!("the chat template of `{}` does not render tools", self.shared.info.name),
                    })
                }
            }
        } else {
            self.render_chat(messages)?
        };
        ids.extend(if escape { tok.encode_escaped(&text)? } else { tok.encode(&text, true)? });
        Ok(ids)
    }

    /// Whether the model's chat template renders tools itself (in the
    /// Hermes `<tool_call>` format); if not, callers describe them in a
    /// prompt of their own.
    pub fn template_speaks_tools(&self) -> bool {
        self.shared.template.as_ref().is_some_and(ChatTemplate::speaks_tools)
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

    /// Whether the engine thread is still running (false once it stopped:
    /// every request then fails with [`Error::EngineStopped`]).
    pub fn is_running(&self) -> bool {
        self.stats.has_changed().is_ok()
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
