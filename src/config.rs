//! Starling's configuration: `starling.toml` (optional) -> [`RawConfig`]
//! -> environment overrides -> [`Config`], loaded once at start.
//! Nothing reads files or the environment after [`Config::load`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The file as written. Unknown keys are an error, so a typo never goes unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[models]`.
    pub models: RawModels,
    /// `[engine]`.
    pub engine: RawEngine,
    /// `[server]`: `starling serve`.
    pub server: gateway::ServerConfig,
    /// `[[providers]]`: cloud or remote OpenAI-compatible endpoints.
    pub providers: Vec<gateway::ProviderConfig>,
    /// `[[routes]]`: public model names and their candidates.
    pub routes: Vec<gateway::RouteConfig>,
    /// `[gateway]`: retry and breaker settings, the GPU's price.
    pub gateway: RawGateway,
    /// `[[prices]]`: USD per 1M tokens over the shipped table.
    pub prices: Vec<gateway::routing::prices::PriceConfig>,
    /// `[database]`: where durable records live.
    pub database: RawDatabase,
    /// `[speech]`: Whisper models served on `/v1/audio/*` and their limits.
    pub speech: gateway::SpeechConfig,
    /// `[scoring]`: the weight of each part of a post's quality score.
    pub scoring: content::Weights,
    /// `[posts]`: the content pipeline's files.
    pub posts: RawPosts,
    /// `[posting]`: accounts, campaigns, the dispatcher and its platforms.
    pub posting: posting::PostingConfig,
    /// `[voice]`: voice commands.
    pub voice: voice::VoiceConfig,
}

/// `[posts]`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawPosts {
    /// The prompt templates of `/v1/posts/generate`, one file each; the
    /// built-in copies of the shipped ones where the folder does not exist.
    pub prompts_dir: PathBuf,
}

impl Default for RawPosts {
    fn default() -> Self {
        Self { prompts_dir: "prompts".into() }
    }
}

/// `[database]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    /// `sqlite://path` (created if missing) or `postgres://...`; empty:
    /// keep no usage records. Env `STARLING_DATABASE_URL` overrides.
    pub url: String,
    /// Local file where usage records wait until they are in the database,
    /// so a crash loses none; empty: none. Env `STARLING_USAGE_JOURNAL`
    /// overrides.
    pub journal: PathBuf,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self { url: "sqlite://starling.db".into(), journal: "starling-usage.journal".into() }
    }
}

/// `[gateway]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGateway {
    /// `[gateway.retry]`.
    pub retry: gateway::config::RetryConfig,
    /// `[gateway.breaker]`.
    pub breaker: gateway::config::BreakerConfig,
    /// `[gateway.cache]`.
    pub cache: gateway::accounting::cache::CacheConfig,
    /// USD per hour of the machine the local engine runs on.
    pub gpu_usd_per_hour: f64,
}

/// `[models]`: where models are described and stored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModels {
    /// The manifest (`models/models.toml`).
    pub manifest: PathBuf,
    /// Where `scripts/fetch-models` and `starling models pull` put models (`models/cache`).
    pub cache_dir: PathBuf,
    /// The user manifest (`models/user.toml`): models added by `starling
    /// models pull`, read after `manifest` when the file exists.
    pub user_manifest: PathBuf,
    /// Model served when a request names none.
    pub default: String,
}

impl Default for RawModels {
    fn default() -> Self {
        Self {
            manifest: "models/models.toml".into(),
            cache_dir: "models/cache".into(),
            user_manifest: "models/user.toml".into(),
            default: "smollm2-135m-instruct".into(),
        }
    }
}

/// `[engine]`: the local engine's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEngine {
    /// Forward-pass threads (0: every core).
    pub threads: usize,
    /// Sequences decoded together.
    pub max_running: usize,
    /// Requests waiting for a slot before new ones get "overloaded".
    pub max_waiting: usize,
    /// KV cache budget for all sequences, MiB.
    pub kv_cache_mb: usize,
    /// Most tokens per forward pass.
    pub max_batch_tokens: usize,
    /// Most prompt tokens one sequence prefills per step.
    pub prefill_chunk: usize,
    /// Where the forward pass runs: `cpu`, `cuda`, `cuda:N` (a CUDA build;
    /// falls back to the CPU when no GPU opens). Env `STARLING_DEVICE`
    /// and `--device` override.
    pub device: inference::DeviceSpec,
}

impl Default for RawEngine {
    fn default() -> Self {
        Self {
            threads: 0,
            max_running: 16,
            max_waiting: 64,
            kv_cache_mb: 1024,
            max_batch_tokens: 512,
            prefill_chunk: 256,
            device: inference::DeviceSpec::Cpu,
        }
    }
}

/// One `[[model]]` of the manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestModel {
    /// Name used in requests and on the command line.
    pub name: String,
    /// `llm`, `speech-to-text`, ...
    pub kind: String,
    /// `gguf`, `ctranslate2`, ...
    pub format: String,
    /// Main file inside `cache_dir/<name>/`.
    pub file: String,
    /// Where the chat template comes from.
    pub chat_template: String,
    /// Context length in tokens.
    pub context_length: usize,
    /// Source package (`[model.source]`: the model's files come from one wheel).
    #[serde(default)]
    pub source: Option<ManifestSource>,
    /// Source packages (`[[model.sources]]`: a model split across wheels, the
    /// main file joined from their parts).
    #[serde(default)]
    pub sources: Vec<ManifestSource>,
    /// The hub repository a pulled model came from (`[model.hub]`, written
    /// by `starling models pull`). Exactly one of the three is given.
    #[serde(default)]
    pub hub: Option<HubSource>,
}

impl ManifestModel {
    /// The packages the model's bytes come from, in order.
    pub fn source_packages(&self) -> Vec<&ManifestSource> {
        self.source.iter().chain(&self.sources).collect()
    }
}

/// Where a model's bytes come from.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestSource {
    /// PyPI package.
    pub package: String,
    /// Its version.
    pub version: String,
}

/// Where a pulled model's bytes come from: files of a repository on a
/// Hugging Face-compatible hub.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit asked for.
    pub revision: String,
    /// The commit the hub resolved `revision` to when pulled (what was
    /// actually fetched, should the branch move on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Files fetched into `cache_dir/<name>/`, the main `file` among them.
    pub files: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    model: Vec<ManifestModel>,
}

/// The user manifest: may be empty (every pulled model removed by hand).
#[derive(Debug, Deserialize)]
struct UserManifest {
    #[serde(default)]
    model: Vec<ManifestModel>,
}

/// How to fetch a missing model: pulled models come back the way they came.
fn fetch_hint(m: &ManifestModel) -> String {
    match &m.hub {
        Some(h) => format!("run starling models pull {} {} --name {} --revision {}", h.repo, h.files.join(" "), m.name, h.revision),
        None => "run scripts/fetch-models".into(),
    }
}

/// Every model of `manifest` has exactly one source of bytes.
fn check_sources(models: &[ManifestModel], manifest: &Path) -> Result<()> {
    for m in models {
        let given = [m.source.is_some(), !m.sources.is_empty(), m.hub.is_some()];
        if given.iter().filter(|&&g| g).count() != 1 {
            bail!(
                "invalid model manifest {}: model `{}` needs exactly one of [model.source], [[model.sources]] or [model.hub]",
                manifest.display(),
                m.name
            );
        }
    }
    Ok(())
}

/// The models of the user manifest at `path` (none when the file does not
/// exist: nothing was ever pulled).
fn read_user_manifest(path: &Path) -> Result<Vec<ManifestModel>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read user model manifest {}", path.display())),
    };
    let user: UserManifest =
        toml::from_str(&text).with_context(|| format!("invalid user model manifest {}", path.display()))?;
    check_sources(&user.model, path)?;
    Ok(user.model)
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Models from the manifest, then those of the user manifest.
    pub models: Vec<ManifestModel>,
    /// The shipped manifest's path (for messages).
    pub manifest: PathBuf,
    /// The user manifest's path (`starling models pull` writes it).
    pub user_manifest: PathBuf,
    /// Folder holding fetched models.
    pub cache_dir: PathBuf,
    /// Default model name.
    pub default_model: String,
    /// Engine limits (model path filled in per model).
    pub engine: RawEngine,
    /// HTTP server settings.
    pub server: gateway::ServerConfig,
    /// Providers (keys read from their env vars), routes, retry, breakers.
    pub gateway: gateway::GatewayConfig,
    /// Database URL for usage records (None: keep none).
    pub database_url: Option<String>,
    /// The usage journal (None: none).
    pub usage_journal: Option<PathBuf>,
    /// Speech models and limits.
    pub speech: gateway::SpeechConfig,
    /// The posting service.
    pub posting: posting::PostingConfig,
    /// Voice commands.
    pub voice: voice::VoiceConfig,
    /// The key credentials are sealed with (`STARLING_SECRET_KEY`), and
    /// older ones they may still be sealed with
    /// (`STARLING_SECRET_KEY_PREVIOUS`, comma-separated).
    pub secret_keys: (Option<String>, Vec<String>),
}

impl Config {
    /// Load `path` (or the built-in defaults when `None`), apply
    /// `STARLING_MODELS_DIR` and `STARLING_DEVICE`, read and check the
    /// manifest and the user manifest.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut raw: RawConfig = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("cannot read config {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid config {}", p.display()))?
            }
            None => RawConfig::default(),
        };
        let cache_dir = std::env::var_os("STARLING_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or(raw.models.cache_dir);
        let text = std::fs::read_to_string(&raw.models.manifest)
            .with_context(|| format!("cannot read model manifest {}", raw.models.manifest.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .with_context(|| format!("invalid model manifest {}", raw.models.manifest.display()))?;
        check_sources(&manifest.model, &raw.models.manifest)?;
        let mut models = manifest.model;
        let shipped = models.len();
        // Pulled models come after the shipped ones. A name in both would
        // make `--model NAME` ambiguous, so it is an error, not an override.
        for m in read_user_manifest(&raw.models.user_manifest)? {
            if models[..shipped].iter().any(|s| s.name == m.name) {
                bail!(
                    "model `{}` is in both {} and {}: rename or remove it in {}",
                    m.name,
                    raw.models.manifest.display(),
                    raw.models.user_manifest.display(),
                    raw.models.user_manifest.display()
                );
            }
            if models[shipped..].iter().any(|u| u.name == m.name) {
                bail!("model `{}` is twice in {}", m.name, raw.models.user_manifest.display());
            }
            models.push(m);
        }
        if let Ok(d) = std::env::var("STARLING_DEVICE") {
            raw.engine.device = d.parse().map_err(|e: String| anyhow::anyhow!("STARLING_DEVICE: {e}"))?;
        }
        let e = &raw.engine;
        if e.max_running == 0 || e.max_batch_tokens == 0 || e.prefill_chunk == 0 || e.kv_cache_mb == 0 {
            bail!("engine.max_running, max_batch_tokens, prefill_chunk and kv_cache_mb must be at least 1");
        }
        let mut providers = raw.providers;
        for p in &mut providers {
            if p.proxy.is_none() {
                p.proxy = gateway::config::env_proxy(&p.base_url, |name| std::env::var(name).ok());
            }
            let Some(var) = &p.api_key_env else { continue };
            match std::env::var(var) {
                Ok(key) if !key.is_empty() => p.api_key = Some(gateway::Secret::new(key)),
                _ => tracing::warn!("provider `{}`: {var} is not set; its requests will fail over", p.name),
            }
        }
        let database_url = std::env::var("STARLING_DATABASE_URL").unwrap_or(raw.database.url);
        Ok(Self {
            database_url: (!database_url.is_empty()).then_some(database_url),
            usage_journal: Some(std::env::var_os("STARLING_USAGE_JOURNAL").map_or(raw.database.journal, PathBuf::from))
                .filter(|p| !p.as_os_str().is_empty()),
            models,
            manifest: raw.models.manifest,
            user_manifest: raw.models.user_manifest,
            cache_dir,
            default_model: raw.models.default,
            speech: raw.speech,
            posting: {
                let mut p = raw.posting;
                p.x.client_secret = std::env::var("STARLING_X_CLIENT_SECRET").ok().filter(|s| !s.is_empty()).map(posting::secrets::Hidden);
                p
            },
            voice: raw.voice,
            secret_keys: (
                std::env::var("STARLING_SECRET_KEY").ok().filter(|k| !k.trim().is_empty()),
                std::env::var("STARLING_SECRET_KEY_PREVIOUS")
                    .map(|v| v.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect())
                    .unwrap_or_default(),
            ),
            engine: raw.engine,
            server: raw.server,
            gateway: gateway::GatewayConfig {
                providers,
                routes: raw.routes,
                retry: raw.gateway.retry,
                breaker: raw.gateway.breaker,
                cache: raw.gateway.cache,
                prices: raw.prices,
                gpu_usd_per_hour: raw.gateway.gpu_usd_per_hour,
                scoring: raw.scoring,
                prompts_dir: raw.posts.prompts_dir,
            },
        })
    }

    /// The manifest entry of an LLM by name (`None`: the default).
    pub fn llm(&self, name: Option<&str>) -> Result<&ManifestModel> {
        let name = name.unwrap_or(&self.default_model);
        let known = || self.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
        let m = self
            .models
            .iter()
            .find(|m| m.name == name)
            .with_context(|| format!("unknown model `{name}` (known: {})", known()))?;
        if m.kind != "llm" || m.format != "gguf" {
            bail!("model `{name}` is a {} {} model, not a GGUF LLM", m.format, m.kind);
        }
        Ok(m)
    }

    /// Where a manifest model's main file lives.
    pub fn model_path(&self, m: &ManifestModel) -> PathBuf {
        self.cache_dir.join(&m.name).join(&m.file)
    }

    /// The folder of speech model `name` (a `speech-to-text` model of the
    /// manifest, fetched), or any folder path holding a Whisper model.
    pub fn speech_dir(&self, name: &str) -> Result<PathBuf> {
        let as_path = Path::new(name);
        if as_path.is_dir() {
            return Ok(as_path.to_path_buf());
        }
        let Some(m) = self.models.iter().find(|m| m.name == name) else {
            let known: Vec<&str> = self.models.iter().filter(|m| m.kind == "speech-to-text").map(|m| m.name.as_str()).collect();
            bail!("unknown speech model `{name}` (the manifest has: {})", known.join(", "));
        };
        if m.kind != "speech-to-text" {
            bail!("model `{name}` is a {} model, not speech-to-text", m.kind);
        }
        let path = self.model_path(m);
        if !path.exists() {
            bail!("model `{name}` is not fetched ({} missing): {}", path.display(), fetch_hint(m));
        }
        Ok(self.cache_dir.join(&m.name))
    }

    /// Engine settings for a model.
    pub fn engine_config(&self, m: &ManifestModel) -> Result<inference::EngineConfig> {
        let path = self.model_path(m);
        if !path.exists() {
            bail!("model `{}` is not fetched ({} missing): {}", m.name, path.display(), fetch_hint(m));
        }
        let e = &self.engine;
        let mut cfg = inference::EngineConfig::new(path, &m.name);
        cfg.threads = e.threads;
        cfg.max_running = e.max_running;
        cfg.max_waiting = e.max_waiting;
        cfg.kv_cache_bytes = e.kv_cache_mb << 20;
        cfg.max_batch_tokens = e.max_batch_tokens;
        cfg.prefill_chunk = e.prefill_chunk;
        cfg.device = e.device;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example parses (no unknown or mistyped key) and says
    /// what the built-in defaults are.
    #[test]
    fn example_config_documents_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/starling.example.toml"))
            .expect("starling.example.toml");
        let ex: RawConfig = toml::from_str(&text).expect("example parses");
        let d = RawConfig::default();
        assert_eq!(format!("{:?}", ex.models), format!("{:?}", d.models));
        assert_eq!(format!("{:?}", ex.engine), format!("{:?}", d.engine));
        assert_eq!(format!("{:?}", ex.server), format!("{:?}", d.server));
        assert_eq!(format!("{:?}", ex.gateway), format!("{:?}", d.gateway));
        assert_eq!(format!("{:?}", ex.database), format!("{:?}", d.database));
        assert_eq!(format!("{:?}", ex.speech), format!("{:?}", d.speech));
        assert_eq!(ex.scoring, d.scoring);
        assert_eq!(ex.posts, d.posts);
        assert_eq!(format!("{:?}", ex.posting), format!("{:?}", d.posting));
        assert_eq!(format!("{:?}", ex.voice), format!("{:?}", d.voice));
        // The example's providers and routes are examples, not defaults:
        // they must build into a router.
        let gw = gateway::GatewayConfig {
            providers: ex.providers,
            routes: ex.routes,
            retry: ex.gateway.retry,
            breaker: ex.gateway.breaker,
            cache: ex.gateway.cache,
            prices: ex.prices,
            gpu_usd_per_hour: ex.gateway.gpu_usd_per_hour,
            scoring: ex.scoring,
            prompts_dir: ex.posts.prompts_dir,
        };
        assert!(!gw.routes.is_empty());
        gateway::App::new(ex.server, gw).expect("the example's providers and routes build");
    }
}
