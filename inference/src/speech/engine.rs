//! The speech engine: one thread owns a Whisper model and steps every admitted
//! clip together. Windows waiting for the encoder are encoded in one batch per
//! window length; then every decoding clip's rows (beams, samples) go through
//! one decoder call. Admission is the LLM engine's: a slot per clip, refused at
//! once with `Overloaded { retry_after }`; a clip whose caller went away is
//! dropped at the next step and its slot freed.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use tokio::sync::{mpsc as tmpsc, OwnedSemaphorePermit, Semaphore};

use crate::engine::worker::panic_message;
use crate::error::{Error, Result};
use crate::speech::transcribe::{ClipJob, Segment, TranscribeOptions};
use crate::speech::mel::{LogMel, MelFrontEnd};
use crate::speech::SpeechModel;

/// Limits of one speech engine.
#[derive(Clone, Debug)]
pub struct SpeechEngineConfig {
    /// Clips decoded together.
    pub max_running: usize,
    /// Clips admitted in all (running + waiting); more get `Overloaded`.
    pub max_clips: usize,
}

impl Default for SpeechEngineConfig {
    fn default() -> Self {
        Self {
            max_running: 8,
            max_clips: 32,
        }
    }
}

/// A finished transcription.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Transcript {
    pub text: String,
    pub language: Option<String>,
    pub language_probability: f32,
    /// Seconds of audio.
    pub duration: f32,
    pub segments: Vec<Segment>,
}

impl Transcript {
    pub(crate) fn of(job: &ClipJob, tok: &crate::speech::tokens::WhisperTokens) -> Self {
        let segments = job.segments().to_vec();
        let text: String = segments.iter().map(|s| s.text.as_str()).collect();
        Self {
            text: text.trim().to_string(),
            language: job.language(tok).map(str::to_string).or_else(|| (!tok.multilingual).then(|| "en".to_string())),
            language_probability: job.language_probability(),
            duration: job.duration(),
            segments,
        }
    }
}

/// What a transcription stream yields: segments as their windows finish, then the whole.
#[derive(Debug)]
pub enum SpeechEvent {
    Segment(Segment),
    Done(Transcript),
}

/// Facts about the loaded model, for `/v1/models` and metrics.
#[derive(Clone, Debug)]
pub struct SpeechModelInfo {
    pub multilingual: bool,
    pub n_mels: usize,
    pub layers: (usize, usize),
    pub state: usize,
}

struct Job {
    mel: LogMel,
    opts: TranscribeOptions,
    events: tmpsc::UnboundedSender<Result<SpeechEvent>>,
    _slot: OwnedSemaphorePermit,
}

/// Counters shared with handles.
#[derive(Debug, Default)]
struct Shared {
    waiting: AtomicUsize,
    running: AtomicUsize,
    /// Audio seconds per wall second over the last finished clips (x1000), for retry estimates.
    speed_milli: AtomicUsize,
}

/// A handle to the speech engine thread. Cheap to clone.
#[derive(Clone)]
pub struct SpeechEngine {
    jobs: mpsc::Sender<Job>,
    /// The model's front end: callers compute their clip's spectrogram.
    mel: Arc<MelFrontEnd>,
    slots: Arc<Semaphore>,
    shared: Arc<Shared>,
    info: SpeechModelInfo,
}

impl std::fmt::Debug for SpeechEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechEngine").field("info", &self.info).finish_non_exhaustive()
    }
}

/// The receiving end of one transcription.
#[derive(Debug)]
pub struct SpeechStream {
    rx: tmpsc::UnboundedReceiver<Result<SpeechEvent>>,
}

impl SpeechStream {
    pub async fn next(&mut self) -> Option<Result<SpeechEvent>> {
        self.rx.recv().await
    }

    /// Wait for the whole transcript.
    pub async fn finish(mut self) -> Result<Transcript> {
        while let Some(ev) = self.rx.recv().await {
            if let SpeechEvent::Done(t) = ev? {
                return Ok(t);
            }
        }
        Err(Error::EngineStopped)
    }
}

impl SpeechEngine {
    /// Start the engine thread that owns `model`.
    pub fn start(model: SpeechModel, cfg: SpeechEngineConfig) -> Result<Self> {
        let d = &model.model.dims;
        let info = SpeechModelInfo {
            multilingual: model.tokens.multilingual,
            n_mels: d.n_mels,
            layers: (d.n_audio_layer, d.n_text_layer),
            state: d.n_audio_state,
        };
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            speed_milli: AtomicUsize::new(10_000),
            ..Default::default()
        });
        let worker_shared = Arc::clone(&shared);
        let mel = Arc::new(model.mel.clone());
        std::thread::Builder::new()
            .name("speech-engine".into())
            .spawn(move || Worker::new(model, cfg.max_running.max(1), worker_shared).run(rx))
            .map_err(|e| Error::Backend(format!("cannot start the speech engine thread: {e}")))?;
        Ok(Self {
            jobs: tx,
            mel,
            slots: Arc::new(Semaphore::new(cfg.max_clips.max(1))),
            shared,
            info,
        })
    }

    pub fn info(&self) -> &SpeechModelInfo {
        &self.info
    }

    /// Clips waiting for a running slot, and running.
    pub fn queue(&self) -> (usize, usize) {
        (self.shared.waiting.load(Ordering::Relaxed), self.shared.running.load(Ordering::Relaxed))
    }

    /// Admit a clip of 16 kHz mono samples; refused at once when the engine
    /// is full. The log-mel spectrogram is computed here, on the caller's
    /// thread (an hour of audio is seconds of CPU: call it from a blocking
    /// context), so the engine thread only steps the model.
    pub fn transcribe(&self, samples: &[f32], opts: TranscribeOptions) -> Result<SpeechStream> {
        let slot = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            // Time for the audio already admitted to drain at the recent speed.
            let (waiting, running) = self.queue();
            let speed = self.shared.speed_milli.load(Ordering::Relaxed).max(1) as f64 / 1000.0;
            let secs = ((waiting + running) as f64 * 10.0 / speed).clamp(1.0, 120.0).ceil();
            Error::Overloaded {
                reason: "too many transcriptions",
                retry_after: Duration::from_secs_f64(secs),
            }
        })?;
        let mel = self.mel.compute(samples);
        let (events, rx) = tmpsc::unbounded_channel();
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        self.jobs
            .send(Job {
                mel,
                opts,
                events,
                _slot: slot,
            })
            .map_err(|_| {
                self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
                Error::EngineStopped
            })?;
        Ok(SpeechStream { rx })
    }
}

struct Active {
    job: ClipJob,
    events: tmpsc::UnboundedSender<Result<SpeechEvent>>,
    emitted: usize,
    started: Instant,
    _slot: OwnedSemaphorePermit,
}

struct Worker {
    model: SpeechModel,
    max_running: usize,
    shared: Arc<Shared>,
    waiting: VecDeque<Job>,
    active: Vec<Active>,
}

fn caught<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(Error::Backend(format!("{what} panicked: {}", panic_message(&*p)))))
}

impl Worker {
    fn new(model: SpeechModel, max_running: usize, shared: Arc<Shared>) -> Self {
        Self {
            model,
            max_running,
            shared,
            waiting: VecDeque::new(),
            active: Vec::new(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                match rx.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = rx.try_recv() {
                self.waiting.push_back(job);
            }
            self.admit();
            self.active.retain(|a| !a.events.is_closed());
            self.encode();
            self.decode();
            self.finish();
        }
    }

    /// Move waiting clips into the running set.
    fn admit(&mut self) {
        while self.active.len() < self.max_running {
            let Some(job) = self.waiting.pop_front() else { break };
            self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
            if job.events.is_closed() {
                continue;
            }
            let m = &self.model;
            match ClipJob::new(&m.tokens, job.mel, job.opts, m.model.dims.n_text_ctx, 2 * m.model.dims.n_audio_ctx) {
                Ok(clip) => self.active.push(Active {
                    job: clip,
                    events: job.events,
                    emitted: 0,
                    started: Instant::now(),
                    _slot: job._slot,
                }),
                Err(e) => {
                    let _ = job.events.send(Err(e));
                }
            }
        }
    }

    /// Encode the windows that wait, oldest clip first, one batch per window
    /// length, up to one 30 s window's frames per step (at least one
    /// window): a clip decodes as soon as its own window is encoded instead
    /// of waiting for every clip that arrived with it, as the LLM's prefill
    /// budget keeps decodes moving.
    fn encode(&mut self) {
        let budget = 2 * self.model.model.dims.n_audio_ctx;
        let mut taken = 0;
        let mut groups: BTreeMap<usize, Vec<(usize, Vec<f32>)>> = BTreeMap::new();
        for (i, a) in self.active.iter_mut().enumerate() {
            let Some(frames) = a.job.window_frames() else { continue };
            if taken > 0 && taken + frames > budget {
                break;
            }
            taken += frames;
            if let Some((window, frames)) = a.job.wants_encode() {
                groups.entry(frames).or_default().push((i, window));
            }
        }
        let n_mels = self.model.mel.n_mels();
        for (frames, clips) in groups {
            let idx: Vec<usize> = clips.iter().map(|(i, _)| *i).collect();
            let data: Vec<f32> = clips.into_iter().flat_map(|(_, w)| w).collect();
            let result = caught("encoder", || {
                let mel = Tensor::from_vec(data, (idx.len(), n_mels, frames), &Device::Cpu)?;
                self.model.model.encode(&mel)
            });
            match result {
                Ok(cross) => {
                    for (i, c) in idx.into_iter().zip(cross) {
                        self.active[i].job.encoded(&self.model.tokens, c);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "speech encoder failed");
                    for i in idx {
                        let _ = self.active[i].events.send(Err(Error::Backend(e.to_string())));
                        self.active[i].job.abandon();
                    }
                }
            }
        }
    }

    /// One decoder step over every decoding clip.
    fn decode(&mut self) {
        let mut counts = Vec::with_capacity(self.active.len());
        let mut rows = Vec::new();
        for a in self.active.iter_mut() {
            let r = a.job.rows();
            counts.push(r.len());
            rows.extend(r);
        }
        if rows.is_empty() {
            return;
        }
        let model = &self.model.model;
        let result = caught("decoder", || Ok(model.decode(&mut rows)?.to_vec2::<f32>()?));
        drop(rows);
        match result {
            Ok(logits) => {
                let mut logits = logits.into_iter();
                let tok = &self.model.tokens;
                for (a, n) in self.active.iter_mut().zip(counts) {
                    let mine: Vec<Vec<f32>> = logits.by_ref().take(n).collect();
                    if n == 0 {
                        continue;
                    }
                    match caught("decoding rules", || Ok(a.job.advance(tok, mine))) {
                        Ok(0) => {}
                        Ok(_) => {
                            for s in &a.job.segments()[a.emitted..] {
                                let _ = a.events.send(Ok(SpeechEvent::Segment(s.clone())));
                            }
                            a.emitted = a.job.segments().len();
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "speech decoding failed");
                            let _ = a.events.send(Err(e));
                            a.job.abandon();
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "speech decoder failed");
                for (a, n) in self.active.iter_mut().zip(counts) {
                    if n > 0 {
                        let _ = a.events.send(Err(Error::Backend(e.to_string())));
                        a.job.abandon();
                    }
                }
            }
        }
    }

    /// Answer and drop the clips that are done; the running count is
    /// updated before the answers go out, so a caller that has its
    /// transcript never sees its own clip counted.
    fn finish(&mut self) {
        let (done, running): (Vec<Active>, Vec<Active>) = std::mem::take(&mut self.active).into_iter().partition(|a| a.job.is_finished());
        self.active = running;
        self.shared.running.store(self.active.len(), Ordering::Relaxed);
        for a in done.into_iter().filter(|a| !a.job.is_abandoned()) {
            let t = Transcript::of(&a.job, &self.model.tokens);
            let wall = a.started.elapsed().as_secs_f64().max(1e-3);
            self.shared.speed_milli.store((t.duration as f64 / wall * 1000.0) as usize, Ordering::Relaxed);
            let _ = a.events.send(Ok(SpeechEvent::Done(t)));
        }
    }
}
