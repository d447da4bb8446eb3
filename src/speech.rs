//! The speech side of the command line: loading the `[speech]` models for
//! `serve`, and `starling transcribe`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use inference::speech::{audio, SpeechEngine, SpeechEngineConfig, SpeechModel, TranscribeOptions};

use crate::config::Config;

/// Load every model of `[speech] models` and start its engine (blocking: call off the runtime).
pub fn load(config: &Config) -> Result<gateway::SpeechModels> {
    let mut models = gateway::SpeechModels::new(config.speech.clone());
    for name in &config.speech.models {
        let dir = config.speech_dir(name)?;
        let started = Instant::now();
        let model = SpeechModel::load(&dir, config.engine.device, config.speech.precision).with_context(|| format!("cannot load speech model `{name}`"))?;
        let engine_cfg = SpeechEngineConfig {
            max_running: config.speech.max_running,
            max_clips: config.speech.max_clips,
        };
        let engine = SpeechEngine::start(model, engine_cfg).with_context(|| format!("cannot start speech model `{name}`"))?;
        tracing::info!(model = %name, secs = started.elapsed().as_secs_f64(), "speech model loaded");
        models.insert(name.clone(), engine);
    }
    Ok(models)
}

/// Output of `starling transcribe`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Srt,
    Vtt,
    Json,
}

#[derive(clap::Args)]
pub struct TranscribeArgs {
    /// The audio file (WAV, FLAC, MP3, Ogg Vorbis).
    pub file: PathBuf,
    /// Speech model: a manifest name or a model folder (default: `[speech] default`).
    #[arg(long)]
    pub model: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Spoken language (ISO code); default: detected (multilingual models).
    #[arg(long)]
    pub language: Option<String>,
    /// Translate to English (multilingual models).
    #[arg(long)]
    pub translate: bool,
    /// Beams (1: greedy); default: `[speech] beam_size`.
    #[arg(long)]
    pub beam_size: Option<usize>,
    /// Text that came before the audio, or names and terms to spell as given.
    #[arg(long)]
    pub prompt: Option<String>,
}

/// `starling transcribe FILE`: the transcript on stdout, timing on stderr.
pub fn transcribe(config: &Config, args: TranscribeArgs) -> Result<()> {
    let name = args.model.unwrap_or_else(|| config.speech.default.clone());
    let dir = config.speech_dir(&name)?;
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let ext = extension(&args.file);
    let decoded = audio::decode(bytes, ext.as_deref(), config.speech.max_audio_secs)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let loading = Instant::now();
    let model = SpeechModel::load(&dir, config.engine.device, config.speech.precision).with_context(|| format!("cannot load speech model `{name}`"))?;
    let load_s = loading.elapsed().as_secs_f64();
    if args.translate && !model.tokens.multilingual {
        bail!("`{name}` is English-only and cannot translate");
    }
    let opts = TranscribeOptions {
        language: args.language,
        translate: args.translate,
        initial_prompt: args.prompt,
        beam_size: args.beam_size.unwrap_or(config.speech.beam_size),
        min_window_secs: config.speech.min_window_secs,
        ..TranscribeOptions::default()
    };
    let started = Instant::now();
    let t = model.transcribe(&decoded.samples, opts)?;
    let wall = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    // The server's renderings, from the same verbose_json.
    use gateway::speech::formats;
    let verbose = formats::verbose_json(&t, if args.translate { "translate" } else { "transcribe" });
    match args.format {
        OutputFormat::Text => writeln!(out, "{}", t.text)?,
        OutputFormat::Srt => write!(out, "{}", formats::srt(&verbose))?,
        OutputFormat::Vtt => write!(out, "{}", formats::vtt(&verbose))?,
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&verbose)?)?,
    }
    eprintln!(
        "[{name}: {:.2} s of audio in {:.2} s (RTF {:.3}), language {}, model loaded in {load_s:.2} s]",
        t.duration,
        wall,
        wall / f64::from(t.duration.max(1e-3)),
        t.language.as_deref().unwrap_or("?")
    );
    Ok(())
}

fn extension(p: &Path) -> Option<String> {
    p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase)
}
