//! `starling posts generate`: the content pipeline from the command line,
//! in process (no server): the local model (or a route of the config)
//! writes `n` candidates under the post rules, and they are printed best
//! first with their scores.

use std::sync::Arc;

use anyhow::{Context, Result};
use gateway::posts::generate::{generate, GenerateRequest};
use inference::Engine;

use crate::config::Config;

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// What to write about.
    #[arg(long, required_unless_present = "product")]
    pub topic: Option<String>,
    /// A product to promote instead (its name).
    #[arg(long)]
    pub product: Option<String>,
    /// Candidates (1 to 16).
    #[arg(short, long, default_value_t = 4)]
    pub n: usize,
    /// Who it is for.
    #[arg(long)]
    pub audience: Option<String>,
    /// How it should sound.
    #[arg(long)]
    pub tone: Option<String>,
    /// x, bluesky, mastodon or linkedin.
    #[arg(long)]
    pub platform: Option<post_rules::Platform>,
    /// A link every candidate carries.
    #[arg(long)]
    pub link: Option<String>,
    /// Disclosure every candidate carries (paid promotion), e.g. `#ad`.
    #[arg(long)]
    pub disclosure: Option<String>,
    /// A route of the config instead of the local model.
    #[arg(long)]
    pub model: Option<String>,
    /// Seed for reproducible candidates.
    #[arg(long)]
    pub seed: Option<i64>,
    /// Print the whole answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn generate_posts(config: &Config, args: GenerateArgs) -> Result<()> {
    let model = config.llm(None)?;
    let engine_cfg = config.engine_config(model)?;
    let engine = Engine::start(engine_cfg).context("cannot start the engine")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = rt.block_on(async {
        let app = gateway::App::new(config.server.clone(), config.gateway.clone()).context("cannot set up the gateway")?;
        let provider: Arc<dyn gateway::Generator> = Arc::new(gateway::LocalModel::new(engine));
        app.set_ready(gateway::Generators::new(vec![provider]));
        let req = GenerateRequest {
            topic: args.topic,
            product: args.product.map(|name| content::prompts::Product { name, ..Default::default() }),
            audience: args.audience,
            tone: args.tone,
            platform: args.platform,
            link: args.link,
            disclosure: args.disclosure,
            n: Some(args.n),
            model: args.model,
            seed: args.seed,
            ..Default::default()
        };
        // The command line is the operator: no key, no key's limits.
        generate(&app, &gateway::Caller(None), &req).await.map_err(|e| anyhow::anyhow!("{}", e.message))
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    for c in answer["candidates"].as_array().into_iter().flatten() {
        println!("{}. [{:.2}] {}", c["rank"], c["score"].as_f64().unwrap_or_default(), c["text"].as_str().unwrap_or_default());
    }
    let removed = answer["removed"].as_array().map_or(0, Vec::len);
    eprintln!(
        "{} candidates from `{}` ({} constraint), {removed} removed; {} tokens, ${:.6}",
        answer["candidates"].as_array().map_or(0, Vec::len),
        answer["provider"].as_str().unwrap_or_default(),
        answer["constraint"].as_str().unwrap_or_default(),
        answer["usage"]["total_tokens"],
        answer["cost_usd"].as_f64().unwrap_or_default()
    );
    Ok(())
}
