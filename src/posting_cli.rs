//! The posting service from the command line: `starling accounts`,
//! `campaigns`, `posts schedule|list`, `products import`. Each command is
//! a request to the same `/api/v1` router the server serves, called in
//! this process on the configured database (no server needed, the same
//! checks and errors), as the operator (no key: what keys created is
//! theirs). A running server's dispatcher sends what is scheduled here.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::http::{header, Method, Request};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum AccountsCommand {
    /// Every account.
    List,
    /// Add an account (dry-run needs no credentials).
    Add {
        /// dry-run, x or mastodon.
        #[arg(long, default_value = "dry-run")]
        platform: String,
        /// The handle on the platform.
        #[arg(long)]
        handle: String,
        /// IANA time zone of its slots and daily cap.
        #[arg(long)]
        time_zone: Option<String>,
        /// Most posts per local day.
        #[arg(long)]
        daily_cap: Option<i64>,
        /// A JSON file with the platform's credentials (sealed when stored).
        #[arg(long)]
        credentials: Option<PathBuf>,
    },
    /// Seal every stored secret again under the current STARLING_SECRET_KEY
    /// (after a key rotation; the old key in STARLING_SECRET_KEY_PREVIOUS).
    Reseal,
}

#[derive(clap::Subcommand)]
pub enum CampaignsCommand {
    /// Every campaign.
    List,
    /// Create a campaign.
    Create {
        /// The account it posts from.
        #[arg(long)]
        account: String,
        /// Its name.
        #[arg(long)]
        name: String,
        /// What it is about.
        #[arg(long, default_value = "")]
        niche: String,
        /// A posting time, `mon=09:00` (repeatable), in the account's zone.
        #[arg(long = "slot")]
        slots: Vec<String>,
        /// A product's SKU or id (repeatable).
        #[arg(long = "product")]
        products: Vec<String>,
        /// `auto` schedules drafts at once; `required` waits for approval.
        #[arg(long, default_value = "required")]
        approval: String,
    },
    /// Fill the campaign's next free slots with drafts from the local model.
    Fill {
        /// The campaign's id.
        id: String,
        /// Slots to fill.
        #[arg(long, default_value_t = 7)]
        slots: usize,
        /// Candidates per slot.
        #[arg(long, default_value_t = 4)]
        candidates: usize,
    },
}

#[derive(clap::Args)]
pub struct ScheduleArgs {
    /// The account it goes out from.
    #[arg(long)]
    account: String,
    /// The text (repeat for a thread).
    #[arg(long = "text", required = true)]
    texts: Vec<String>,
    /// RFC 3339, or a local `2026-03-29T09:00` in the account's zone.
    #[arg(long, conflicts_with = "next_slot")]
    at: Option<String>,
    /// The campaign's next free slot.
    #[arg(long, requires = "campaign")]
    next_slot: bool,
    /// Its campaign.
    #[arg(long)]
    campaign: Option<String>,
}

/// In-process calls to the posting API.
struct Api {
    router: axum::Router,
}

impl Api {
    async fn open(config: &Config, drafter: Option<Arc<dyn posting::drafts::Drafter>>) -> Result<(Self, posting::Posting)> {
        let url = config.database_url.as_deref().context("the posting service needs a database: set [database] url")?;
        let db = platform::db::Db::open(url).await?;
        let sealer = posting::secrets::Sealer::new(config.secret_keys.0.as_deref(), &config.secret_keys.1)?;
        let service = posting::Posting::open(&db, config.posting.clone(), sealer).await.context("cannot open the posting service")?;
        if let Some(d) = drafter {
            service.set_drafter(d);
        }
        // No key ring: the command line is the operator.
        let guard = platform::auth::Guard { keys: Arc::default(), reject: |_| axum::response::IntoResponse::into_response(axum::http::StatusCode::UNAUTHORIZED) };
        let router = service.router(guard).layer(axum::Extension(platform::auth::Exposure::default()));
        Ok((Self { router }, service))
    }

    async fn call(&self, method: Method, path: &str, ctype: &str, body: String) -> Result<Value> {
        let req = Request::builder().method(method).uri(format!("/api/v1{path}")).header(header::CONTENT_TYPE, ctype).body(Body::from(body))?;
        let res = self.router.clone().oneshot(req).await?;
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 64 << 20).await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let e = &v["error"];
            let field = e["field"].as_str().map(|f| format!(" ({f})")).unwrap_or_default();
            let rows: Vec<String> = e["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("\n  line {}: {}: {}", r["line"], r["field"].as_str().unwrap_or(""), r["message"].as_str().unwrap_or("")))
                .collect();
            bail!("{}{field}{}", e["message"].as_str().unwrap_or(status.as_str()), rows.concat());
        }
        Ok(v)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, "application/json", String::new()).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(Method::POST, path, "application/json", body.to_string()).await
    }
}

fn print(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

pub fn accounts(config: &Config, command: AccountsCommand) -> Result<()> {
    runtime()?.block_on(async {
        let (api, service) = Api::open(config, None).await?;
        match command {
            AccountsCommand::List => print(&api.get("/accounts").await?),
            AccountsCommand::Add { platform, handle, time_zone, daily_cap, credentials } => {
                let credentials: Option<Value> = match credentials {
                    Some(path) => Some(serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?)?),
                    None => None,
                };
                let body = json!({"platform": platform, "handle": handle, "time_zone": time_zone, "daily_cap": daily_cap, "credentials": credentials});
                print(&api.post("/accounts", body).await?)
            }
            AccountsCommand::Reseal => {
                let n = service.reseal().await?;
                eprintln!("sealed {n} secret(s) again under the current key");
                Ok(())
            }
        }
    })
}

pub fn campaigns(config: &Config, command: CampaignsCommand) -> Result<()> {
    // Drafts come from the local model, loaded only for `fill`.
    let drafter: Option<Arc<dyn posting::drafts::Drafter>> = match &command {
        CampaignsCommand::Fill { .. } => {
            let engine = inference::Engine::start(config.engine_config(config.llm(None)?)?).context("cannot start the engine")?;
            let app = gateway::App::new(config.server.clone(), config.gateway.clone()).context("cannot set up the gateway")?;
            let provider: Arc<dyn gateway::Generator> = Arc::new(gateway::LocalModel::new(engine));
            app.set_ready(gateway::Generators::new(vec![provider]));
            Some(Arc::new(crate::drafts::GatewayDrafter(app)))
        }
        _ => None,
    };
    runtime()?.block_on(async {
        let (api, _) = Api::open(config, drafter).await?;
        match command {
            CampaignsCommand::List => print(&api.get("/campaigns").await?),
            CampaignsCommand::Create { account, name, niche, slots, products, approval } => {
                let mut by_day = serde_json::Map::new();
                for s in &slots {
                    let (day, time) = s.split_once('=').with_context(|| format!("--slot {s}: day=HH:MM, e.g. mon=09:00"))?;
                    if let Some(times) = by_day.entry(day.to_owned()).or_insert_with(|| json!([])).as_array_mut() {
                        times.push(json!(time));
                    }
                }
                let known = api.get("/products").await?;
                let ids = products
                    .iter()
                    .map(|p| {
                        known["data"].as_array().into_iter().flatten().find(|k| k["sku"] == **p || k["id"] == **p).and_then(|k| k["id"].as_str().map(str::to_owned)).with_context(|| format!("no product `{p}`: import it first"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let body = json!({"account_id": account, "name": name, "niche": niche, "slots": by_day, "products": ids, "approval": approval});
                print(&api.post("/campaigns", body).await?)
            }
            CampaignsCommand::Fill { id, slots, candidates } => print(&api.post(&format!("/campaigns/{id}/fill"), json!({"slots": slots, "candidates": candidates})).await?),
        }
    })
}

pub fn schedule(config: &Config, args: ScheduleArgs) -> Result<()> {
    runtime()?.block_on(async {
        let (api, _) = Api::open(config, None).await?;
        let mut body = json!({"account_id": args.account, "campaign_id": args.campaign, "state": "scheduled"});
        if args.texts.len() == 1 {
            body["text"] = json!(args.texts[0]);
        } else {
            body["parts"] = json!(args.texts.iter().map(|t| json!({"text": t})).collect::<Vec<_>>());
        }
        match (args.at, args.next_slot) {
            (Some(at), _) => body["scheduled_at"] = json!(at),
            (None, true) => body["next_slot"] = json!(true),
            (None, false) => body["scheduled_at"] = json!(jiff::Timestamp::now().to_string()),
        }
        print(&api.post("/posts", body).await?)
    })
}

pub fn list_posts(config: &Config, state: Option<String>) -> Result<()> {
    runtime()?.block_on(async {
        let (api, _) = Api::open(config, None).await?;
        let path = state.map_or_else(|| "/posts?limit=500".to_owned(), |s| format!("/posts?limit=500&state={s}"));
        print(&api.get(&path).await?)
    })
}

pub fn import_products(config: &Config, file: PathBuf) -> Result<()> {
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let ctype = if file.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) { "application/json" } else { "text/csv" };
    runtime()?.block_on(async {
        let (api, _) = Api::open(config, None).await?;
        print(&api.call(Method::POST, "/products/import", ctype, text).await?)
    })
}
