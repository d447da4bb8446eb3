//! Voice commands get their transcripts and model readings from the
//! gateway of this process (`/v1/audio/transcriptions` and
//! `/v1/chat/completions` without the HTTP): the caller's key, its limits,
//! the router and a usage record, like any API call.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use futures_util::future::BoxFuture;
use platform::auth::Caller;
use serde_json::{json, Value};
use voice::{Audio, Failure, Model, Speech, Voice, VoiceConfig};

/// Whisper by the gateway.
pub struct GatewaySpeech(pub gateway::App);

fn failure(e: gateway::ApiError) -> Failure {
    Failure { status: e.status.as_u16(), message: e.message, param: e.param }
}

impl Speech for GatewaySpeech {
    fn transcribe<'a>(&'a self, caller: &'a Caller, audio: Audio, model: Option<&'a str>, prompt: Option<String>) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move { gateway::speech::transcribe(&self.0, caller, audio.bytes.into(), audio.filename, model, prompt).await.map_err(failure) })
    }
}

/// Chat under a JSON schema by the gateway (the local model unless a route is named).
pub struct GatewayModel(pub gateway::App);

impl Model for GatewayModel {
    fn json<'a>(&'a self, caller: &'a Caller, route: Option<&'a str>, system: &'a str, user: &'a str, schema: &'a Value) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async move {
            let model = match route {
                Some(r) => r.to_owned(),
                None => self.0.local_model().ok_or_else(|| Failure { status: 503, message: "no local model is loaded".into(), param: None })?,
            };
            let mut body = serde_json::Map::new();
            body.insert("model".into(), json!(model));
            body.insert("messages".into(), json!([{"role": "system", "content": system}, {"role": "user", "content": user}]));
            body.insert("response_format".into(), json!({"type": "json_schema", "json_schema": {"name": "command", "schema": schema, "strict": false}}));
            body.insert("temperature".into(), json!(0));
            body.insert("max_tokens".into(), json!(96));
            let answer = gateway::api::chat::complete(&self.0, caller, body).await.map_err(failure)?;
            let content = answer["choices"][0]["message"]["content"].as_str().unwrap_or_default();
            serde_json::from_str(content).map_err(|e| Failure { status: 502, message: format!("the model's answer is not JSON: {e}"), param: None })
        })
    }
}

/// The voice service over `posting`, reading and hearing through `app`.
pub async fn start(db: &platform::db::Db, posting: &posting::Posting, app: &gateway::App, config: VoiceConfig, registry: &prometheus::Registry) -> Result<Voice> {
    let v = Voice::open(db, posting.clone(), config, registry).await.context("cannot start voice commands")?;
    v.set_speech(Arc::new(GatewaySpeech(app.clone())));
    v.set_model(Arc::new(GatewayModel(app.clone())));
    Ok(v)
}

#[derive(clap::Args)]
pub struct VoiceArgs {
    /// The spoken command (WAV, FLAC, MP3, Ogg Vorbis).
    #[arg(required_unless_present_any = ["text", "confirm"], conflicts_with_all = ["text", "confirm"])]
    file: Option<PathBuf>,
    /// The command as text (no speech).
    #[arg(long, conflicts_with = "confirm")]
    text: Option<String>,
    /// Carry out a command that waits for a confirmation: its token.
    #[arg(long)]
    confirm: Option<String>,
    /// The account it is about (id or handle).
    #[arg(long)]
    account: Option<String>,
    /// The campaign it is about (id).
    #[arg(long)]
    campaign: Option<String>,
    /// The zone its times are said in (default: the account's).
    #[arg(long)]
    timezone: Option<String>,
}

/// `starling voice FILE|--text "..."|--confirm TOKEN`: the command run in
/// this process on the configured database, as the operator (no key); the
/// answer as JSON on stdout, the reply on stderr.
pub fn cli(config: &crate::config::Config, args: VoiceArgs) -> Result<()> {
    let app = gateway::App::new(config.server.clone(), config.gateway.clone()).context("cannot set up the gateway")?;
    let engine = inference::Engine::start(config.engine_config(config.llm(None)?)?).context("cannot start the engine")?;
    app.set_ready(gateway::Generators::new(vec![Arc::new(gateway::LocalModel::new(engine))]));
    if args.file.is_some() {
        app.set_speech(crate::speech::load(config)?);
    }
    let audio = match &args.file {
        Some(path) => Some(Audio { bytes: std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?, filename: path.file_name().map(|n| n.to_string_lossy().into_owned()) }),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async {
        let url = config.database_url.as_deref().context("voice commands need a database: set [database] url")?;
        let db = platform::db::Db::open(url).await?;
        let sealer = posting::secrets::Sealer::new(config.secret_keys.0.as_deref(), &config.secret_keys.1)?;
        let posting = posting::Posting::open(&db, config.posting.clone(), sealer).await.context("cannot open the posting service")?;
        posting.set_drafter(Arc::new(crate::drafts::GatewayDrafter(app.clone())));
        let commands = start(&db, &posting, &app, config.voice.clone(), &prometheus::Registry::new()).await?;
        let caller = Caller(None);
        let answer = match args.confirm {
            Some(token) => commands.confirm(&caller, &token).await,
            None => {
                let input = voice::Input { audio, text: args.text, account: args.account, campaign: args.campaign, timezone: args.timezone, speech_model: None };
                commands.command(&caller, input).await
            }
        }
        .map_err(|e| anyhow!("{e}"))?;
        println!("{}", serde_json::to_string_pretty(&answer)?);
        eprintln!("{}", answer.reply);
        if let Some(token) = &answer.confirmation_token {
            eprintln!("to carry it out: starling voice --confirm {token}");
        }
        Ok(())
    })
}
