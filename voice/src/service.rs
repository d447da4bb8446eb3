//! One command, end to end: speech to text (when audio came), the reading
//! (grammar, else the model), the plan, then either the action or a
//! confirmation token; every command recorded, every stage timed.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use base64::Engine;
use futures_util::future::BoxFuture;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use platform::auth::Caller;
use platform::keys::{ADMIN, POSTING_READ};
use posting::api::ops;
use posting::model::{new_id, now_ms, Account};
use posting::Posting;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::actions::{self, Context, Plan, Step};
use crate::error::VoiceError;
use crate::intent::{Arguments, Intent, Reader};
use crate::metrics::VoiceMetrics;
use crate::model::{self, Failure, Model};
use crate::store::{Claim, Store, Stored};
use crate::when::Clock;
use crate::{grammar, VoiceConfig};

/// Audio as it came.
#[derive(Debug, Clone)]
pub struct Audio {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Its name (the format is read from its extension, else sniffed).
    pub filename: Option<String>,
}

/// Turns audio into text.
pub trait Speech: Send + Sync {
    /// The transcript of `audio` by `model` (None: the default), with
    /// `prompt` as the words to expect, on behalf of `caller`.
    fn transcribe<'a>(&'a self, caller: &'a Caller, audio: Audio, model: Option<&'a str>, prompt: Option<String>) -> BoxFuture<'a, Result<String, Failure>>;
}

/// A command as sent.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// Speech.
    pub audio: Option<Audio>,
    /// Or text (skips speech).
    pub text: Option<String>,
    /// The account it is about (id or handle).
    pub account: Option<String>,
    /// The campaign it is about (id).
    pub campaign: Option<String>,
    /// The zone times are said in (default the account's).
    pub timezone: Option<String>,
    /// The speech model (default `[voice] speech_model`).
    pub speech_model: Option<String>,
}

/// Milliseconds per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Speech to text.
    pub speech_ms: f64,
    /// Reading the command.
    pub intent_ms: f64,
    /// Planning and carrying it out.
    pub action_ms: f64,
    /// All of it.
    pub total_ms: f64,
}

/// The answer to a command (and what is kept of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// `vc_...`.
    pub id: String,
    /// What was heard (or typed).
    pub transcript: String,
    /// What it asks for.
    pub intent: Intent,
    /// With what.
    pub arguments: Arguments,
    /// 0..1.
    pub confidence: f64,
    /// Who read it: the grammar or the model.
    pub reader: Reader,
    /// `done`, `needs_confirmation`, `incomplete` (something to say
    /// again), `unknown`, `failed`, `refused`.
    pub status: String,
    /// Nothing was done: confirm with the token.
    pub needs_confirmation: bool,
    /// Single use; only in the answer, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_token: Option<String>,
    /// When the token stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// What was or will be done, in words.
    pub reply: String,
    /// What the action gave (null until it is done).
    pub result: Option<Value>,
    /// What was unsure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub doubts: Vec<String>,
    /// Where the time went.
    pub timings: Timings,
    /// The account it was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The zone its times are in.
    pub time_zone: String,
    /// RFC 3339.
    pub created_at: String,
}

struct Inner {
    posting: Posting,
    store: Store,
    config: VoiceConfig,
    metrics: VoiceMetrics,
    speech: OnceLock<Arc<dyn Speech>>,
    model: OnceLock<Arc<dyn Model>>,
}

/// The voice command service: cheap to clone.
#[derive(Clone)]
pub struct Voice(Arc<Inner>);

impl std::fmt::Debug for Voice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Voice").field("speech", &self.0.speech.get().is_some()).field("model", &self.0.model.get().is_some()).finish_non_exhaustive()
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// What commands sound like, for the speech model to expect.
const VOCABULARY: &str = "Schedule a tweet. Cancel the next post. Pause the campaign. Resume the campaign. Write three drafts. How many clicks, impressions, revenue?";

/// 32 random letters and digits (about 190 bits, from the thread's CSPRNG).
fn fresh_token() -> String {
    use rand::Rng;
    let s: String = rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(32).map(char::from).collect();
    format!("vct_{s}")
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn posting_error(e: &posting::api::ApiError) -> VoiceError {
    VoiceError::from_status(e.status().as_u16(), e.message(), e.field())
}

impl Voice {
    /// The service over `posting`, its table on `db`, metrics in `registry`.
    pub async fn open(db: &platform::db::Db, posting: Posting, config: VoiceConfig, registry: &prometheus::Registry) -> Result<Self, crate::SetupError> {
        let store = Store::open(db).await?;
        let metrics = VoiceMetrics::new(registry)?;
        Ok(Self(Arc::new(Inner { posting, store, config, metrics, speech: OnceLock::new(), model: OnceLock::new() })))
    }

    /// Where transcripts come from (later calls are ignored).
    pub fn set_speech(&self, speech: Arc<dyn Speech>) {
        let _ = self.0.speech.set(speech);
    }

    /// Where the model's readings come from (later calls are ignored).
    pub fn set_model(&self, model: Arc<dyn Model>) {
        let _ = self.0.model.set(model);
    }

    pub(crate) fn config(&self) -> &VoiceConfig {
        &self.0.config
    }

    /// Run one command.
    pub async fn command(&self, caller: &Caller, input: Input) -> Result<Answer, VoiceError> {
        let started = Instant::now();
        let mut timings = Timings::default();
        let kept_audio = input.audio.as_ref().filter(|_| self.0.config.keep_audio).map(|a| {
            (base64::engine::general_purpose::STANDARD.encode(&a.bytes), a.filename.clone().unwrap_or_default())
        });
        let spoken = input.audio.is_some();
        let transcript = match (input.audio, input.text) {
            (Some(_), Some(_)) => return Err(VoiceError::invalid("text", "send audio or text, not both")),
            (None, None) => return Err(VoiceError::invalid("file", "send audio as `file` (multipart) or JSON {\"text\": ...}")),
            (None, Some(t)) => t,
            (Some(audio), None) => {
                let speech = self.0.speech.get().ok_or_else(|| VoiceError::unavailable("speech to text is not running in this process"))?;
                let t = Instant::now();
                let model = input.speech_model.as_deref().or((!self.0.config.speech_model.is_empty()).then_some(self.0.config.speech_model.as_str()));
                let prompt = self.vocabulary(caller).await;
                let text = speech.transcribe(caller, audio, model, Some(prompt)).await.map_err(|e| VoiceError::from_status(e.status, &e.message, e.param.as_deref().or(Some("file"))))?;
                timings.speech_ms = ms_since(t);
                text
            }
        };
        let transcript = transcript.trim().to_owned();
        if transcript.is_empty() {
            return Err(VoiceError::invalid(if spoken { "file" } else { "text" }, "nothing was said"));
        }
        if transcript.chars().count() > 2_000 {
            return Err(VoiceError::invalid("text", "a command is at most 2,000 characters"));
        }
        let p = &self.0.posting;
        let accounts = ops::accounts(p, caller).await.map_err(|e| posting_error(&e))?;
        // A key limited to one campaign works in that campaign.
        let campaign = input.campaign.clone().or_else(|| caller.0.as_ref().and_then(|k| k.campaign().map(str::to_owned)));
        let account = pick_account(&accounts, input.account.as_deref(), campaign.as_deref(), p, caller).await?;
        let zone = input.timezone.clone().or_else(|| account.map(|a| a.time_zone.clone())).unwrap_or_else(|| p.default_time_zone().to_owned());
        let tz = TimeZone::get(&zone).map_err(|_| VoiceError::invalid("timezone", format!("`{zone}` is not an IANA time zone")))?;
        let clock = Clock { now: Timestamp::now(), tz };

        let t = Instant::now();
        let mut parsed = grammar::read(&transcript, &clock);
        if parsed.intent == Intent::Unknown {
            if let Some(m) = self.0.model.get() {
                let route = (!self.0.config.model.is_empty()).then_some(self.0.config.model.as_str());
                match m.json(caller, route, model::SYSTEM, &model::user_prompt(&transcript), &model::schema()).await {
                    Ok(v) => {
                        tracing::debug!(answer = %v, "voice: the model's reading");
                        parsed = model::parsed(&v, &transcript, &clock);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "voice: the model did not read the command");
                        parsed.doubts.push(format!("the model could not be asked: {}", e.message));
                    }
                }
            }
        }
        timings.intent_ms = ms_since(t);

        let mut answer = Answer {
            id: new_id("vc"),
            transcript,
            intent: parsed.intent,
            arguments: parsed.args.clone(),
            confidence: parsed.confidence,
            reader: parsed.reader,
            status: String::new(),
            needs_confirmation: false,
            confirmation_token: None,
            expires_at: None,
            reply: String::new(),
            result: None,
            doubts: parsed.doubts.clone(),
            timings,
            account_id: account.map(|a| a.id.clone()),
            time_zone: zone,
            created_at: clock.now.to_string(),
        };
        let owner = caller.0.as_ref().map_or_else(String::new, |k| k.id.clone());
        if parsed.intent.writes() && caller.0.as_ref().is_some_and(|k| k.has_scope(POSTING_READ)) {
            answer.status = "refused".into();
            answer.reply = format!("This key is read-only (posting:read): it may ask for reports and lists, not {}.", parsed.intent);
            self.keep(&owner, &mut answer, None, None, kept_audio, started).await?;
            return Err(VoiceError::forbidden(&answer.reply));
        }

        let t = Instant::now();
        let cx = Context { posting: p, caller, account, campaign_id: campaign.as_deref(), clock: &clock };
        let step = actions::plan(&cx, &parsed).await;
        let mut plan_to_keep = None;
        match step {
            Err(e) => {
                answer.status = "failed".into();
                answer.reply = e.message().to_owned();
                answer.result = Some(serde_json::json!({"error": VoiceError::from_status(e.status().as_u16(), e.message(), e.field()).body()}));
            }
            Ok(Step::Ask(reply)) => {
                answer.status = if parsed.intent == Intent::Unknown { "unknown" } else { "incomplete" }.into();
                answer.reply = reply;
            }
            Ok(Step::Ready { plan, preview, ambiguous }) => {
                let unsure = parsed.confidence < self.0.config.confidence_threshold;
                if parsed.intent.destructive() || unsure || ambiguous {
                    let why = match (parsed.intent.destructive(), ambiguous) {
                        (_, true) => "the name fits more than one thing",
                        (true, _) => "cancelling and pausing are always confirmed",
                        _ => "I am not sure I heard it right",
                    };
                    answer.status = "needs_confirmation".into();
                    answer.needs_confirmation = true;
                    answer.reply = format!("Confirm to {preview} ({why}).");
                    plan_to_keep = Some(plan);
                } else {
                    self.carry_out(&cx, &plan, &mut answer).await;
                }
            }
        }
        answer.timings.action_ms = ms_since(t);
        let token = match plan_to_keep {
            Some(plan) => {
                let token = fresh_token();
                let expires = clock.now.as_millisecond() + i64::try_from(self.0.config.confirmation_ttl_secs).unwrap_or(300) * 1000;
                answer.expires_at = Timestamp::from_millisecond(expires).ok().map(|t| t.to_string());
                let plan = serde_json::to_string(&plan).map_err(|e| VoiceError::internal(e.to_string()))?;
                self.keep(&owner, &mut answer, Some(plan), Some((token_hash(&token), expires)), kept_audio, started).await?;
                Some(token)
            }
            None => {
                self.keep(&owner, &mut answer, None, None, kept_audio, started).await?;
                None
            }
        };
        answer.confirmation_token = token;
        Ok(answer)
    }

    /// Whisper's initial prompt: the words commands use and the caller's
    /// campaign names, so "cancel" is not heard as "can sell" and a
    /// campaign is spelt as it is stored.
    async fn vocabulary(&self, caller: &Caller) -> String {
        let mut prompt = VOCABULARY.to_owned();
        if let Ok(campaigns) = ops::campaigns(&self.0.posting, caller).await {
            let names: Vec<String> = campaigns.iter().take(12).map(|c| c.name.clone()).collect();
            if !names.is_empty() {
                prompt.push_str(&format!(" Campaigns: {}.", names.join(", ")));
            }
        }
        prompt
    }

    async fn carry_out(&self, cx: &Context<'_>, plan: &Plan, answer: &mut Answer) {
        match actions::execute(cx, plan).await {
            Ok((result, reply)) => {
                answer.status = "done".into();
                answer.reply = reply;
                answer.result = Some(result);
            }
            Err(e) => {
                answer.status = "failed".into();
                answer.reply = e.message().to_owned();
                answer.result = Some(serde_json::json!({"error": posting_error(&e).body()}));
            }
        }
    }

    /// Store `answer` (the token only as its hash) and count it.
    #[allow(clippy::too_many_arguments)]
    async fn keep(&self, owner: &str, answer: &mut Answer, plan: Option<String>, token: Option<(String, i64)>, audio: Option<(String, String)>, started: Instant) -> Result<(), VoiceError> {
        answer.timings.total_ms = ms_since(started);
        let record = serde_json::to_string(&answer).map_err(|e| VoiceError::internal(e.to_string()))?;
        let token = token.as_ref().map(|(h, e)| (h.as_str(), *e));
        let audio = audio.as_ref().map(|(b, n)| (b.as_str(), n.as_str()));
        self.0
            .store
            .insert(&answer.id, owner, now_ms(), &answer.status, answer.intent.as_str(), &record, plan.as_deref(), token, audio)
            .await
            .map_err(VoiceError::storage)?;
        self.0.metrics.observe(answer);
        Ok(())
    }

    /// Carry out the command waiting on `token` (once, however often it is sent).
    pub async fn confirm(&self, caller: &Caller, token: &str) -> Result<Answer, VoiceError> {
        let started = Instant::now();
        let owner = caller.0.as_ref().map(|k| k.id.clone()).unwrap_or_default();
        let admin = caller.0.as_ref().is_some_and(|k| k.has_scope(ADMIN));
        let claim = self.0.store.claim(&token_hash(token), (!admin).then_some(owner.as_str()), now_ms()).await.map_err(VoiceError::storage)?;
        let stored = match claim {
            Claim::Won(s) => s,
            Claim::Done(s) => return read_record(&s),
            Claim::Running => return Err(VoiceError::conflict("this command is being carried out now; ask for it again in a moment")),
            Claim::Expired => return Err(VoiceError::gone("the confirmation token has expired: say the command again")),
            Claim::Unknown => return Err(VoiceError::not_found("token", "no command waits on that token for this key")),
        };
        // Until the action starts, a failure gives the token back: a retry may take it again.
        let prepared = async {
            let answer = read_record(&stored)?;
            let plan: Plan = serde_json::from_str(stored.plan.as_deref().unwrap_or("null")).map_err(|e| VoiceError::internal(format!("stored plan: {e}")))?;
            let accounts = ops::accounts(&self.0.posting, caller).await.map_err(|e| posting_error(&e))?;
            Ok::<_, VoiceError>((answer, plan, accounts))
        };
        let (mut answer, plan, accounts) = match prepared.await {
            Ok(p) => p,
            Err(e) => {
                if let Err(release) = self.0.store.release(&stored.id, now_ms()).await {
                    tracing::error!(error = %release, id = %stored.id, "voice: a claimed confirmation could not be given back");
                }
                return Err(e);
            }
        };
        let tz = TimeZone::get(&answer.time_zone).unwrap_or(TimeZone::UTC);
        let clock = Clock { now: Timestamp::now(), tz };
        let account = answer.account_id.as_ref().and_then(|id| accounts.iter().find(|a| &a.id == id));
        let campaign = plan_campaign(&plan);
        let cx = Context { posting: &self.0.posting, caller, account, campaign_id: campaign.as_deref(), clock: &clock };
        self.carry_out(&cx, &plan, &mut answer).await;
        answer.needs_confirmation = false;
        answer.timings.action_ms += ms_since(started);
        let record = serde_json::to_string(&answer).map_err(|e| VoiceError::internal(e.to_string()))?;
        self.0.store.finish(&answer.id, &answer.status, &record, now_ms()).await.map_err(VoiceError::storage)?;
        self.0.metrics.observe(&answer);
        Ok(answer)
    }

    /// The caller's commands (an admin key: everyone's), newest first.
    pub async fn list(&self, caller: &Caller, before: Option<(i64, String)>, limit: i64) -> Result<Vec<(Answer, i64)>, VoiceError> {
        let admin = caller.0.as_ref().is_some_and(|k| k.has_scope(ADMIN));
        let owner = caller.0.as_ref().map(|k| k.id.clone()).unwrap_or_default();
        let rows = self.0.store.list((!admin).then_some(owner.as_str()), before, limit).await.map_err(VoiceError::storage)?;
        rows.iter().map(|s| Ok((read_record(s)?, s.created_ms))).collect()
    }
}

/// The campaign a stored plan works in.
fn plan_campaign(plan: &Plan) -> Option<String> {
    match plan {
        Plan::Drafts { campaign_id, .. } | Plan::Schedule { campaign_id, .. } | Plan::Report { campaign_id, .. } => campaign_id.clone(),
        Plan::Campaign { campaign_id, .. } => Some(campaign_id.clone()),
        Plan::Cancel { .. } | Plan::Posts { .. } => None,
    }
}

fn read_record(s: &Stored) -> Result<Answer, VoiceError> {
    let mut a: Answer = serde_json::from_str(&s.record).map_err(|e| VoiceError::internal(format!("stored command {}: {e}", s.id)))?;
    a.status.clone_from(&s.status);
    Ok(a)
}

/// The account a command is about: the one named (id or handle), else the
/// campaign's, else the only one the key sees.
async fn pick_account<'a>(accounts: &'a [Account], named: Option<&str>, campaign: Option<&str>, p: &Posting, caller: &Caller) -> Result<Option<&'a Account>, VoiceError> {
    if let Some(n) = named {
        let handle = n.trim_start_matches('@');
        return accounts
            .iter()
            .find(|a| a.id == n || a.handle.eq_ignore_ascii_case(handle))
            .map(Some)
            .ok_or_else(|| VoiceError::invalid("account", format!("no account `{n}`")));
    }
    if let Some(c) = campaign {
        let campaigns = ops::campaigns(p, caller).await.map_err(|e| posting_error(&e))?;
        let c = campaigns.iter().find(|x| x.id == c).ok_or_else(|| VoiceError::invalid("campaign", format!("no campaign `{c}`")))?;
        return Ok(accounts.iter().find(|a| a.id == c.account_id));
    }
    Ok(match accounts {
        [one] => Some(one),
        _ => None,
    })
}
