//! `starling`: the command line. Parses arguments, loads the one config,
//! builds the pieces and runs the command. Every error ends as one line on
//! stderr and exit status 2.

mod config;
mod drafts;
mod http_threads;
mod posting_cli;
mod posts;
mod pull;
mod user_manifest;
mod voice_commands;
mod speech;
mod telemetry;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use inference::{ChatMessage, Engine, Event, GenerateRequest, Prompt, Role, SamplingParams};

use crate::config::Config;

#[derive(Parser)]
#[command(name = "starling", version, about = "Local AI content for social media")]
struct Cli {
    /// Config file (default: built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the local model runs: cpu, cuda, cuda:N (overrides `engine.device`).
    #[arg(long, global = true)]
    device: Option<inference::DeviceSpec>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API over the local model.
    Serve {
        /// Address to listen on (overrides `server.listen`).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Stream a completion of a chat prompt from the local model to stdout.
    Generate(GenerateArgs),
    /// Transcribe an audio file with a local Whisper model.
    Transcribe(speech::TranscribeArgs),
    /// The model manifest.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Virtual API keys (stored hashed in the `[database]`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Posts: generate ranked candidates, schedule, list.
    Posts {
        #[command(subcommand)]
        command: PostsCommand,
    },
    /// Posting accounts (on the configured database).
    Accounts {
        #[command(subcommand)]
        command: posting_cli::AccountsCommand,
    },
    /// Campaigns: create, list, fill their slots with drafts.
    Campaigns {
        #[command(subcommand)]
        command: posting_cli::CampaignsCommand,
    },
    /// The product catalogue.
    Products {
        #[command(subcommand)]
        command: ProductsCommand,
    },
    /// Run a voice command (an audio file, or --text), or confirm one that waits.
    Voice(voice_commands::VoiceArgs),
}

#[derive(Subcommand)]
enum ProductsCommand {
    /// Import a product feed (CSV with a header row, or JSON), upserted by SKU; nothing is imported when a row is bad.
    Import {
        /// The feed (`.json` is JSON, anything else CSV).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PostsCommand {
    /// Write n candidates under the post rules, scored and ranked, best first.
    Generate(posts::GenerateArgs),
    /// Schedule a post (or a thread) on an account.
    Schedule(posting_cli::ScheduleArgs),
    /// Posts, newest first.
    List {
        /// Only those in this state (draft, scheduled, posted, failed, unknown, blocked, ...).
        #[arg(long)]
        state: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; it is shown once.
    Create {
        /// Who or what it is for.
        #[arg(long)]
        name: String,
        /// Cloud spend allowed per UTC day, USD (then only the local model answers).
        #[arg(long)]
        budget_usd_per_day: Option<f64>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute (prompt estimate + max_tokens).
        #[arg(long)]
        tpm: Option<u32>,
        /// Models or routes it may use, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Scopes, comma-separated: `admin` sees every key's usage and posting data, `posting:read` makes the posting API read-only, `campaign:ID` limits it to one campaign.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// Every key (never the key itself).
    List,
    /// Revoke a key by id; servers stop accepting it within seconds.
    Revoke {
        /// The key's id (`key_...`).
        id: String,
    },
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// The user message.
    #[arg(long)]
    prompt: String,
    /// A system message (default: the model template's own).
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 for greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Seed for reproducible sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Model name from models/models.toml.
    #[arg(long)]
    model: Option<String>,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Every model of the manifest and whether it is fetched.
    List,
    /// Fetch a GGUF or a Whisper checkpoint from a Hugging Face-compatible
    /// hub (HF_ENDPOINT, HF_TOKEN) into the models cache and the user
    /// manifest; run it again to resume a broken download.
    Pull {
        /// Repository, `owner/name`.
        repo: String,
        /// Files to fetch (default: the repository's one .gguf, or a Whisper
        /// checkpoint's config.json, weights and tokenizer.json).
        files: Vec<String>,
        /// Model name (default: the repository with `/` replaced by `--`).
        #[arg(long)]
        name: Option<String>,
        /// Branch, tag or commit.
        #[arg(long, default_value = "main")]
        revision: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(d) = cli.device {
        config.engine.device = d;
    }
    match cli.command {
        Command::Serve { listen } => serve(config, listen),
        Command::Generate(args) => generate(&config, args),
        Command::Transcribe(args) => speech::transcribe(&config, args),
        Command::Models { command: ModelsCommand::List } => {
            models_list(&config);
            Ok(())
        }
        Command::Models { command: ModelsCommand::Pull { repo, files, name, revision } } => {
            pull::pull(&config, pull::PullArgs { repo, files, name, revision })
        }
        Command::Keys { command } => keys(&config, command),
        Command::Posts { command: PostsCommand::Generate(args) } => posts::generate_posts(&config, args),
        Command::Posts { command: PostsCommand::Schedule(args) } => posting_cli::schedule(&config, args),
        Command::Posts { command: PostsCommand::List { state } } => posting_cli::list_posts(&config, state),
        Command::Accounts { command } => posting_cli::accounts(&config, command),
        Command::Campaigns { command } => posting_cli::campaigns(&config, command),
        Command::Products { command: ProductsCommand::Import { file } } => posting_cli::import_products(&config, file),
        Command::Voice(args) => voice_commands::cli(&config, args),
    }
}

fn keys(config: &Config, command: KeysCommand) -> Result<()> {
    let url = config.database_url.as_deref().context("keys need a database: set [database] url")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        // The error names the database with its password masked.
        let db = platform::db::Db::open(url).await?;
        let store = platform::keys::KeyStore::new(&db);
        match command {
            KeysCommand::Create { name, budget_usd_per_day, rpm, tpm, models, scopes } => {
                if budget_usd_per_day.is_some_and(|b| !(b >= 0.0 && b.is_finite())) {
                    anyhow::bail!("--budget-usd-per-day must be a non-negative number");
                }
                let new = platform::keys::NewKey { name, budget_usd_per_day, rpm, tpm, models, scopes };
                let (key, info) = store.create(&new).await?;
                println!("{key}");
                eprintln!("created {} ({}): the key above is shown once and stored only as a hash", info.id, info.name);
            }
            KeysCommand::List => {
                println!("{:<18} {:<20} {:<18} {:<8} {:>10} {:>8} {:>9} MODELS", "ID", "NAME", "PREFIX", "STATE", "USD/DAY", "RPM", "TPM");
                for (_, k) in store.all().await? {
                    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                    println!(
                        "{:<18} {:<20} {:<18} {:<8} {:>10} {:>8} {:>9} {}",
                        k.id,
                        k.name,
                        format!("{}...", k.prefix),
                        if k.revoked_ms.is_some() { "revoked" } else { "active" },
                        opt(k.budget_usd_per_day.map(|b| format!("{b:.2}"))),
                        opt(k.rpm.map(|v| v.to_string())),
                        opt(k.tpm.map(|v| v.to_string())),
                        if k.models.is_empty() { "all".into() } else { k.models.join(",") },
                    );
                }
            }
            KeysCommand::Revoke { id } => {
                store.revoke(&id).await?;
                eprintln!("revoked {id}");
            }
        }
        Ok(())
    })
}

fn models_list(config: &Config) {
    println!(
        "{:<24} {:<16} {:<12} {:<8} {:<9} {:<8} SOURCE",
        "NAME", "KIND", "FORMAT", "CONTEXT", "TEMPLATE", "FETCHED"
    );
    for m in &config.models {
        let fetched = if config.model_path(m).exists() { "yes" } else { "no" };
        let source = match &m.hub {
            Some(h) => {
                let commit = h.commit.as_deref().map(|c| format!(" ({})", c.get(..12).unwrap_or(c))).unwrap_or_default();
                format!("hub:{}@{}{commit}", h.repo, h.revision)
            }
            None => m.source_packages().iter().map(|s| format!("{}=={}", s.package, s.version)).collect::<Vec<_>>().join(" + "),
        };
        println!(
            "{:<24} {:<16} {:<12} {:<8} {:<9} {:<8} {source}",
            m.name, m.kind, m.format, m.context_length, m.chat_template, fetched
        );
    }
}

fn serve(config: Config, listen: Option<String>) -> Result<()> {
    // `models.default = ""`: a gateway over providers only, no local model.
    let local = if config.default_model.is_empty() {
        None
    } else {
        let model = config.llm(None)?;
        Some((model.name.clone(), config.engine_config(model)?))
    };
    let mut server_cfg = config.server.clone();
    let gateway_cfg = config.gateway.clone();
    let database_url = config.database_url.clone();
    let journal = config.usage_journal.clone();
    let mut posting_config = config.posting.clone();
    let voice_config = config.voice.clone();
    let secret_keys = config.secret_keys.clone();
    let grace = std::time::Duration::from_secs(server_cfg.shutdown_grace_secs);
    // A speech model that is not fetched stops `serve` here, before it
    // listens, as a missing LLM does (loading itself happens in the background).
    for name in &config.speech.models {
        config.speech_dir(name)?;
    }
    let speech_config = config.clone();
    let speech_example = config.speech.models.first().cloned();
    if let Some(l) = listen {
        server_cfg.listen = l;
    }
    let listeners = http_threads::bind(&server_cfg.listen, server_cfg.threads())?;
    let addr = listeners.first().context("no listening socket")?.local_addr()?;
    if posting_config.public_url.is_empty() {
        posting_config.public_url = format!("http://{addr}");
    }
    // This runtime runs what is not a request: model loading, the usage
    // writer, signals. Requests run on the HTTP threads.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async move {
        // Before the "serving" line: whoever started us may signal at once.
        let mut signal = std::pin::pin!(shutdown_signal());
        // One registry for the process: every service registers its
        // metrics in it, and /metrics renders it whole.
        let registry = prometheus::Registry::new();
        let app = gateway::App::with_registry(server_cfg, gateway_cfg, &registry).context("cannot set up the gateway")?;
        // Audio requests are read and routed (to cloud candidates) while the local Whisper models load.
        app.set_speech_config(speech_config.speech.clone());
        let mut posting = None;
        if let Some(url) = &database_url {
            let attach = async {
                // The errors name the database with its password masked.
                let db = platform::db::Db::open(url).await?;
                let shown = platform::db::redacted(url);
                app.attach_database(&db, journal.as_deref()).await.with_context(|| format!("cannot set up the database {shown}"))?;
                if !posting_config.enabled {
                    return Ok(None);
                }
                let sealer = posting::secrets::Sealer::new(secret_keys.0.as_deref(), &secret_keys.1)?;
                let service = posting::Posting::open(&db, posting_config, sealer).await.context("cannot start the posting service")?;
                service.set_drafter(Arc::new(drafts::GatewayDrafter(app.clone())));
                let mut routes = service.router(app.key_guard());
                if voice_config.enabled {
                    let commands = voice_commands::start(&db, &service, &app, voice_config, &registry).await?;
                    routes = routes.merge(commands.router(app.key_guard()));
                }
                app.mount(routes);
                anyhow::Ok(Some(service))
            };
            // A database that is slow to answer must not make the server deaf
            // to Ctrl-C.
            tokio::select! {
                r = attach => posting = r?,
                () = &mut signal => return Ok(()),
            }
        }
        // The dispatcher stops between steps: a post being sent is sent
        // and recorded before the process exits.
        let (stop_dispatch, dispatch_stopped) = tokio::sync::oneshot::channel::<()>();
        let dispatcher = posting.as_ref().map(|p| {
            let d = p.dispatcher();
            tokio::spawn(d.run(async move {
                let _ = dispatch_stopped.await;
            }))
        });
        // Campaigns with autofill keep their coming slots filled (the
        // drafts wait until the model has loaded).
        if let Some(p) = posting.clone() {
            let keys = app.key_guard().keys;
            let every = std::time::Duration::from_secs(p.autofill_every_secs().max(60));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = p.autofill(keys.get().map(|k| k.as_ref())).await {
                        tracing::warn!(error = %e, "autofill failed");
                    }
                }
            });
        }
        // Listen first, load in the background: /health answers at once and
        // /ready turns 200 when the model is loaded.
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
        let (speech_failed_tx, speech_failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
        {
            let loading = app.clone();
            tokio::spawn(async move {
                match tokio::task::spawn_blocking(move || speech::load(&speech_config)).await {
                    Ok(Ok(models)) => loading.set_speech(models),
                    Ok(Err(e)) => drop(speech_failed_tx.send(e)),
                    Err(e) => drop(speech_failed_tx.send(anyhow::anyhow!("speech model loading panicked: {e}"))),
                }
            });
        }
        let example = local.as_ref().map_or("ROUTE", |(name, _)| name.as_str()).to_owned();
        match local {
            Some((name, engine_cfg)) => {
                let loading = app.clone();
                tokio::spawn(async move {
                    match tokio::task::spawn_blocking(move || Engine::start(engine_cfg)).await {
                        Ok(Ok(engine)) => {
                            let provider: Arc<dyn gateway::Generator> = Arc::new(gateway::LocalModel::new(engine));
                            loading.set_ready(gateway::Generators::new(vec![provider]));
                            tracing::info!("model `{name}` ready");
                            eprintln!("ready: model `{name}` loaded");
                        }
                        Ok(Err(e)) => drop(failed_tx.send(anyhow::Error::new(e).context("cannot start the engine"))),
                        Err(e) => drop(failed_tx.send(anyhow::anyhow!("model loading panicked: {e}"))),
                    }
                });
                say(&format!("Starling serving the OpenAI API on http://{addr}/v1 (model `{example}`)"));
            }
            None => {
                app.set_ready(gateway::Generators::new(Vec::new()));
                drop(failed_tx);
                say(&format!("Starling serving the OpenAI API on http://{addr}/v1 (gateway only: no local model)"));
            }
        }
        say(&format!(
            "  curl http://{addr}/v1/chat/completions -H 'Content-Type: application/json' \\\n    -d '{{\"model\": \"{example}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Write a tweet about coffee.\"}}]}}'"
        ));
        if let Some(m) = &speech_example {
            say(&format!("  curl http://{addr}/v1/audio/transcriptions -F file=@note.wav -F model={m}"));
        }
        if posting.is_some() {
            say(&format!("Posting API on http://{addr}/api/v1 (accounts on the dry-run platform post to the local outbox)"));
            say(&format!("  voice commands: curl http://{addr}/v1/voice/commands -F file=@command.wav   (or -H 'Content-Type: application/json' -d '{{\"text\": \"What is scheduled tomorrow?\"}}')"));
        }
        let (failure_tx, mut failure) = tokio::sync::oneshot::channel();
        let shutdown = async move {
            tokio::select! {
                () = signal => {}
                // Err (no local model, or it loaded): the branch is disabled.
                Ok(e) = failed_rx => { let _ = failure_tx.send(e); }
                Ok(e) = speech_failed_rx => { let _ = failure_tx.send(e); }
            }
        };
        let threads = http_threads::spawn(listeners, &app)?;
        shutdown.await;
        drop(stop_dispatch);
        if let Some(d) = dispatcher {
            if tokio::time::timeout(grace, d).await.is_err() {
                tracing::warn!("the dispatcher did not stop within the grace; its posts' leases will expire");
            }
        }
        threads.stop().await?;
        app.close().await;
        match failure.try_recv() {
            Ok(e) => Err(e),
            Err(_) => Ok(()),
        }
    })
}

/// A line on stdout for whoever started the server. A closed stdout (the
/// reader went away) must not take a running server down, as `println!`
/// would by panicking.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// SIGINT (Ctrl-C) or SIGTERM (docker stop, systemd): listened for from
/// this call on, so a signal that comes before the future is awaited (right
/// after the "serving" line) still shuts down gracefully rather than
/// killing the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| tracing::error!("cannot listen for {name}: {e}")).ok()
        };
        let (mut int, mut term) = (listen(SignalKind::interrupt(), "SIGINT"), listen(SignalKind::terminate(), "SIGTERM"));
        async fn next(s: Option<&mut tokio::signal::unix::Signal>) {
            match s {
                Some(s) => drop(s.recv().await),
                None => std::future::pending::<()>().await,
            }
        }
        async move {
            tokio::select! {
                () = next(int.as_mut()) => {}
                () = next(term.as_mut()) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    }
}

fn generate(config: &Config, args: GenerateArgs) -> Result<()> {
    let model = config.llm(args.model.as_deref())?;
    let engine = Engine::start(config.engine_config(model)?).context("cannot start the engine")?;
    let mut messages = Vec::new();
    if let Some(system) = args.system {
        messages.push(ChatMessage::new(Role::System, system));
    }
    messages.push(ChatMessage::new(Role::User, args.prompt));
    let mut req = GenerateRequest::new(Prompt::Chat(messages));
    req.max_tokens = Some(args.max_tokens);
    req.sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        ..SamplingParams::default()
    };
    req.stop = args.stop;
    let started = Instant::now();
    let mut stream = engine.generate(req)?;
    let mut out = std::io::stdout().lock();
    let mut first = None;
    let mut n = 0;
    while let Some(event) = stream.blocking_next() {
        match event {
            Event::Token(t) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                out.write_all(t.text.as_bytes())?;
                out.flush()?;
            }
            Event::Done(d) => {
                writeln!(out, "{}", d.flush)?;
                let decode = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
                eprintln!(
                    "[{} prompt + {} tokens, {:?}; ttft {:.0} ms, {:.1} tok/s]",
                    d.usage.prompt_tokens,
                    d.usage.completion_tokens,
                    d.finish,
                    first.map(|f| (f - started).as_secs_f64() * 1e3).unwrap_or(0.0),
                    if decode > 0.0 { (n - 1) as f64 / decode } else { 0.0 }
                );
                return Ok(());
            }
            Event::Error(e) => anyhow::bail!("generation failed: {e}"),
        }
    }
    anyhow::bail!("the engine stopped before the answer was complete")
}
