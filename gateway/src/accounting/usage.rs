//! Usage records: one row per chat request (who, which route, which
//! provider and model answered, tokens, cost, latency, status, attempts),
//! in SQLite by default or PostgreSQL by URL.
//!
//! Handlers hand records to [`UsageLog::record`] (an unbounded channel:
//! never blocks, never drops); one writer task inserts them in batches, one
//! transaction per batch, so the database never sits on a request's path.
//! A write that fails (the database restarting, a network blip) is kept
//! and retried with growing pauses: an outage delays records, it does not
//! lose them. [`UsageLog::close`] drains the channel and flushes; `serve`
//! calls it after the last request ended. With a journal (`serve` keeps
//! one, [`crate::accounting::journal`]) each record is also appended to a local file
//! before it is queued, so a hard kill or a database that stays away past
//! the shutdown grace loses nothing: the next start writes what the file
//! holds. Without one, those records are logged whole at shutdown, and a
//! hard kill loses what is still queued. SQLite runs in WAL mode with
//! `synchronous=NORMAL`, so a committed batch survives a process crash.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use platform::db::Db;
use crate::accounting::journal::Journal;
use sqlx::{AnyPool, Row};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One request's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The response id (`chatcmpl-...`), or a generated one for failures.
    pub request_id: String,
    /// Unix milliseconds when the request arrived.
    pub ts_ms: i64,
    /// The API key's id, when the request carried one.
    pub key_id: Option<String>,
    /// The model the client asked for (a route or a model name).
    pub route: String,
    /// Provider that answered (empty when none did).
    pub provider: String,
    /// Its model.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Generated tokens.
    pub completion_tokens: i64,
    /// Prompt tokens served from the provider's cache.
    pub cached_tokens: i64,
    /// USD.
    pub cost_usd: f64,
    /// Arrival to first chunk (streams), milliseconds.
    pub ttft_ms: Option<f64>,
    /// Arrival to the end of the answer, milliseconds.
    pub latency_ms: f64,
    /// HTTP status of the answer (200 even if a stream failed midway; then
    /// `error` says why).
    pub status: i64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Served from the gateway's cache.
    pub cache_hit: bool,
    /// Provider attempts made.
    pub attempts: i64,
}

/// Why the usage store could not be opened or queried.
#[derive(Debug, thiserror::Error)]
#[error("usage store: {0}")]
pub struct UsageError(#[from] sqlx::Error);

const INSERT: &str = "INSERT INTO usage_records (request_id, ts_ms, key_id, route, provider, model, prompt_tokens, \
    completion_tokens, cached_tokens, cost_usd, ttft_ms, latency_ms, status, error, cache_hit, attempts) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULLIF($11, 'NaN'), $12, $13, $14, $15, $16)";
/// [`INSERT`] unless the record is already there: records read back from
/// the journal may have been written just before the crash. Id, arrival
/// and latency single one out (latency within a nanosecond: the JSON round
/// trip of the journal may move a double by one ulp).
const INSERT_MISSING: &str = "INSERT INTO usage_records (request_id, ts_ms, key_id, route, provider, model, prompt_tokens, \
    completion_tokens, cached_tokens, cost_usd, ttft_ms, latency_ms, status, error, cache_hit, attempts) \
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULLIF($11, 'NaN'), $12, $13, $14, $15, $16 \
    WHERE NOT EXISTS (SELECT 1 FROM usage_records WHERE request_id = $1 AND ts_ms = $2 AND route = $4 \
    AND latency_ms BETWEEN $12 - 0.000001 AND $12 + 0.000001)";
/// Most records per transaction.
const BATCH: usize = 256;

/// The store: a connection pool to SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct UsageStore {
    pool: AnyPool,
}

impl UsageStore {
    /// Usage records in `db` (the table is `platform`'s first migration).
    pub fn new(db: &Db) -> Self {
        Self { pool: db.pool().clone() }
    }

    /// Insert records in one transaction.
    pub async fn insert(&self, records: &[UsageRecord]) -> Result<(), UsageError> {
        self.insert_with(INSERT, records).await
    }

    /// Insert those of `records` the store does not have yet.
    pub async fn insert_missing(&self, records: &[UsageRecord]) -> Result<(), UsageError> {
        self.insert_with(INSERT_MISSING, records).await
    }

    async fn insert_with(&self, sql: &str, records: &[UsageRecord]) -> Result<(), UsageError> {
        let mut tx = self.pool.begin().await?;
        for r in records {
            sqlx::query(sql)
                .bind(text(&r.request_id))
                .bind(r.ts_ms)
                .bind(r.key_id.as_deref().map(text))
                .bind(text(&r.route))
                .bind(text(&r.provider))
                .bind(text(&r.model))
                .bind(r.prompt_tokens)
                .bind(r.completion_tokens)
                .bind(r.cached_tokens)
                .bind(r.cost_usd)
                .bind(platform::db::nullable_f64(r.ttft_ms))
                .bind(r.latency_ms)
                .bind(r.status)
                .bind(r.error.as_deref().map(text))
                .bind(r.cache_hit)
                .bind(r.attempts)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Totals per group over `[from_ms, to_ms)`, of one key's records or
    /// (`None`) of all.
    pub async fn summary(&self, from_ms: i64, to_ms: i64, group_by: GroupBy, key_id: Option<&str>) -> Result<Vec<UsageGroup>, UsageError> {
        // The column comes from the enum, never from the request.
        let col = group_by.column();
        let of_key = if key_id.is_some() { "AND key_id = $3" } else { "" };
        let sql = format!(
            "SELECT COALESCE({col}, '') AS grp, COUNT(*) AS requests, \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens, \
             CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd, \
             CAST(COALESCE(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0) AS BIGINT) AS cache_hits, \
             CAST(COALESCE(SUM(CASE WHEN status >= 400 OR error IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors \
             FROM usage_records WHERE ts_ms >= $1 AND ts_ms < $2 {of_key} GROUP BY COALESCE({col}, '') ORDER BY grp"
        );
        let mut query = sqlx::query(&sql).bind(from_ms).bind(to_ms);
        if let Some(k) = key_id {
            query = query.bind(k);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(UsageGroup::from_row).collect::<Result<_, _>>().map_err(UsageError)
    }
}

/// Text as the database can hold it. PostgreSQL text cannot contain NUL
/// (SQLite can), and a client's model name or an upstream's error message
/// may: one such record would fail its batch on every retry and hold up
/// every record behind it.
fn text(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

/// `group_by` of `GET /v1/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// API key id.
    Key,
    /// Provider.
    Provider,
    /// Provider's model.
    Model,
    /// Requested model or route.
    Route,
}

impl GroupBy {
    /// From the query string value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(Self::Key),
            "provider" => Some(Self::Provider),
            "model" => Some(Self::Model),
            "route" => Some(Self::Route),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Key => "key_id",
            Self::Provider => "provider",
            Self::Model => "model",
            Self::Route => "route",
        }
    }
}

/// One group's totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageGroup {
    /// The group's value (key id, provider, model or route).
    pub group: String,
    /// Requests.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Generated tokens.
    pub completion_tokens: i64,
    /// Cached prompt tokens.
    pub cached_tokens: i64,
    /// USD.
    pub cost_usd: f64,
    /// Answers from the cache.
    pub cache_hits: i64,
    /// Failed requests.
    pub errors: i64,
}

impl UsageGroup {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            group: row.try_get("grp")?,
            requests: row.try_get("requests")?,
            prompt_tokens: row.try_get("prompt_tokens")?,
            completion_tokens: row.try_get("completion_tokens")?,
            cached_tokens: row.try_get("cached_tokens")?,
            cost_usd: row.try_get("cost_usd")?,
            cache_hits: row.try_get("cache_hits")?,
            errors: row.try_get("errors")?,
        })
    }
}

/// What handlers send the writer.
#[derive(Debug)]
// Nearly every message is a record: boxing it would add an allocation per
// request to shrink the one `Close`.
#[allow(clippy::large_enum_variant)]
enum Message {
    /// A record, and its journal segment (0 without a journal).
    Record(UsageRecord, u64),
    /// Write what is queued, retrying until this instant, then stop.
    Close(tokio::time::Instant),
}

/// The first pause after a failed write; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between attempts while the database is away.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// How long the writer keeps trying when every handle to it is gone
/// without a `close` (an embedder that dropped the app).
const ORPHAN_GRACE: Duration = Duration::from_secs(30);

/// Metrics the writer keeps.
#[derive(Debug, Clone)]
pub struct WriterMetrics {
    /// Failed batch writes.
    pub write_errors: prometheus::IntCounter,
    /// Records taken from handlers and not yet written.
    pub queued: prometheus::IntGauge,
}

/// The writer task: takes records as they come, writes them in batches,
/// and keeps every record it could not write (a database restart, a
/// network blip) to retry with growing pauses, so an outage delays records
/// but loses none. Only a `close` whose deadline passes with the database
/// still away gives up; it logs each record whole, so they stay
/// recoverable from the log.
struct Writer {
    store: UsageStore,
    rx: mpsc::UnboundedReceiver<Message>,
    queued: Vec<UsageRecord>,
    /// The journal segment of each of `queued`.
    segments: Vec<u64>,
    /// How many of `queued`, from the front, came back from the journal
    /// (and may already be in the store).
    replayed: usize,
    journal: Option<Arc<Journal>>,
    close_by: Option<tokio::time::Instant>,
    metrics: WriterMetrics,
}

impl Writer {
    async fn run(mut self) {
        let mut pause = FIRST_PAUSE;
        loop {
            if self.queued.is_empty() && self.close_by.is_none() {
                let mut got = Vec::with_capacity(BATCH);
                if self.rx.recv_many(&mut got, BATCH).await == 0 {
                    self.orphaned();
                }
                got.into_iter().for_each(|m| self.take(m));
            }
            // What else is queued joins this round, so a burst is written
            // in as few transactions as it fills.
            while let Ok(m) = self.rx.try_recv() {
                self.take(m);
            }
            if self.queued.is_empty() {
                if self.close_by.is_some() {
                    return;
                }
                continue;
            }
            let replay = self.replayed > 0;
            let n = self.queued.len().min(if replay { self.replayed } else { usize::MAX }).min(BATCH);
            let batch = &self.queued[..n];
            let done = if replay { self.store.insert_missing(batch).await } else { self.store.insert(batch).await };
            match done {
                Ok(()) => {
                    self.queued.drain(..n);
                    self.replayed = self.replayed.saturating_sub(n);
                    let segments: Vec<u64> = self.segments.drain(..n).collect();
                    if let Some(j) = &self.journal {
                        // Runs of one segment (they come in order, mostly).
                        for run in segments.chunk_by(|a, b| a == b) {
                            j.written(run[0], run.len());
                        }
                    }
                    self.metrics.queued.set(self.queued.len() as i64);
                    pause = FIRST_PAUSE;
                }
                Err(e) => {
                    self.metrics.write_errors.inc();
                    let now = tokio::time::Instant::now();
                    if self.close_by.is_some_and(|by| now >= by) {
                        self.give_up(&e);
                        return;
                    }
                    tracing::warn!(queued = self.queued.len(), "cannot write usage records, retrying in {pause:?}: {e}");
                    self.wait(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    fn take(&mut self, m: Message) {
        match m {
            Message::Record(r, segment) => {
                self.queued.push(r);
                self.segments.push(segment);
                self.metrics.queued.set(self.queued.len() as i64);
            }
            Message::Close(by) => self.close_by = Some(by),
        }
    }

    /// Every sender is gone without a close: finish as a close would.
    fn orphaned(&mut self) {
        if self.close_by.is_none() {
            self.close_by = Some(tokio::time::Instant::now() + ORPHAN_GRACE);
        }
    }

    /// Pause before the next attempt, taking in records meanwhile. The
    /// pause never runs past a close's deadline, so the last attempt comes
    /// before it.
    async fn wait(&mut self, pause: Duration) {
        let mut until = tokio::time::Instant::now() + pause;
        loop {
            if let Some(by) = self.close_by {
                until = until.min(by);
            }
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(m)) => self.take(m),
                Ok(None) => {
                    // Closed: `recv` would return at once from now on. The
                    // orphan deadline lies past `until` (a pause is shorter).
                    self.orphaned();
                    tokio::time::sleep_until(until).await;
                    return;
                }
                Err(_) => return,
            }
        }
    }

    fn give_up(&mut self, e: &UsageError) {
        tracing::error!(records = self.queued.len(), "usage records not written by the shutdown deadline: {e}");
        if self.journal.is_some() {
            tracing::error!("they stay in the usage journal: the next start writes them");
            self.queued.clear();
            self.segments.clear();
        }
        for r in self.queued.drain(..) {
            let line = serde_json::to_string(&r).unwrap_or_else(|_| format!("{r:?}"));
            tracing::error!(record = %line, "usage record not written");
        }
        self.metrics.queued.set(0);
    }
}

/// The handlers' side: a channel to the writer task (and the journal).
#[derive(Debug)]
pub struct UsageLog {
    tx: mpsc::UnboundedSender<Message>,
    journal: Option<Arc<Journal>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    store: UsageStore,
}

impl UsageLog {
    /// Start the writer task (needs a tokio runtime), journaling every
    /// record in the file at `journal` if given; records a previous run left
    /// there are written first.
    ///
    /// A journal that cannot be opened (a read-only directory) or that
    /// another process holds is logged, and records are kept in memory only:
    /// usage records never keep the server from starting.
    pub fn start(store: UsageStore, metrics: WriterMetrics, journal: Option<&Path>) -> Self {
        let (journal, left) = match journal.map(|path| (path, Journal::open(path))) {
            None => (None, Vec::new()),
            Some((path, Ok(Some((j, left))))) => {
                if !left.is_empty() {
                    tracing::warn!(records = left.len(), journal = %path.display(), "usage records from a run that did not shut down cleanly: writing them");
                }
                (Some(Arc::new(j)), left)
            }
            Some((path, Ok(None))) => {
                tracing::error!(journal = %path.display(), "the usage journal is in use by another process: running without one");
                (None, Vec::new())
            }
            Some((path, Err(e))) => {
                tracing::error!(journal = %path.display(), "cannot open the usage journal, running without one: {e}");
                (None, Vec::new())
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        metrics.queued.set(left.len() as i64);
        let (queued, segments): (Vec<_>, Vec<_>) = left.into_iter().unzip();
        let writer = Writer {
            store: store.clone(),
            rx,
            replayed: queued.len(),
            queued,
            segments,
            journal: journal.clone(),
            close_by: None,
            metrics,
        };
        let writer = tokio::spawn(writer.run());
        Self { tx, journal, writer: Mutex::new(Some(writer)), store }
    }

    /// Queue a record (never blocks): journaled first, if there is a journal.
    pub fn record(&self, r: UsageRecord) {
        let segment = self.journal.as_ref().map_or(0, |j| j.append(&r));
        if self.tx.send(Message::Record(r, segment)).is_err() {
            tracing::error!("usage writer is gone; record lost");
        }
    }

    /// Write every queued record and stop the writer; while the database
    /// is away, keep trying for `patience`.
    pub async fn close(&self, patience: Duration) {
        let _ = self.tx.send(Message::Close(tokio::time::Instant::now() + patience));
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            if let Err(e) = w.await {
                tracing::error!("usage writer failed: {e}");
            }
        }
    }

    /// The store, for queries.
    pub fn store(&self) -> &UsageStore {
        &self.store
    }
}

/// Take `usage` (OpenAI's shape) and the response id from a
/// `chat.completion` or a chunk into the record.
pub fn observe(record: &mut UsageRecord, v: &serde_json::Value) {
    if let Some(id) = v["id"].as_str() {
        if record.request_id.is_empty() {
            record.request_id = id.to_owned();
        }
    }
    let u = &v["usage"];
    if u.is_object() {
        let n = |x: &serde_json::Value| x.as_i64().unwrap_or(0);
        record.prompt_tokens = n(&u["prompt_tokens"]);
        record.completion_tokens = n(&u["completion_tokens"]);
        record.cached_tokens = n(&u["prompt_tokens_details"]["cached_tokens"]);
    }
}

/// A stream that fills a record as its chunks pass and hands it to
/// `finish` when it ends, fails or is dropped (a client that went away).
/// A handover ([`crate::providers::Handover`]: another provider carries the
/// stream on) closes the record of the provider that broke off and opens
/// one for the next; the handover itself is not passed on.
pub fn metered(
    chunks: crate::providers::ChunkValues,
    mut record: UsageRecord,
    started: std::time::Instant,
    finish: impl Fn(UsageRecord) + Send + 'static,
) -> crate::providers::ChunkValues {
    use futures_util::StreamExt;

    struct Guard<F: Fn(UsageRecord)> {
        record: UsageRecord,
        started: std::time::Instant,
        ended: bool,
        usage_seen: bool,
        output_chunks: i64,
        /// Output of earlier providers that the usage reported to the
        /// client includes (see the router's resume).
        carried: i64,
        finish: F,
    }
    impl<F: Fn(UsageRecord)> Guard<F> {
        /// Close the record as it stands, hand it over, and go on with
        /// `next`.
        fn close(&mut self, default_error: &str, next: UsageRecord) {
            if !self.ended && self.record.error.is_none() {
                self.record.error = Some(default_error.into());
            }
            if !self.usage_seen {
                // Cut short (the usage chunk comes last): the provider still
                // bills what it generated. Upstreams send about one token per
                // chunk, and the local engine exactly one.
                self.record.completion_tokens = self.output_chunks;
            }
            self.record.latency_ms = self.started.elapsed().as_secs_f64() * 1e3;
            (self.finish)(std::mem::replace(&mut self.record, next));
        }
    }
    impl<F: Fn(UsageRecord)> Drop for Guard<F> {
        fn drop(&mut self) {
            self.close("the client went away before the end", empty());
        }
    }
    record.status = 200;
    let guard = Guard { record, started, ended: false, usage_seen: false, output_chunks: 0, carried: 0, finish };
    futures_util::stream::unfold((chunks, guard), |(mut chunks, mut g)| async move {
        loop {
            let item = chunks.next().await;
            match &item {
                Some(Ok(v)) => {
                    if let Some(h) = crate::providers::Handover::of(v) {
                        let why = format!("broke off mid-answer; `{}` finished it", h.provider);
                        // The same request (id, arrival, key, route, prompt
                        // estimate), now the next provider's.
                        let next = UsageRecord {
                            provider: h.provider,
                            model: h.model,
                            completion_tokens: 0,
                            cached_tokens: 0,
                            error: None,
                            ttft_ms: None,
                            attempts: g.record.attempts + 1,
                            ..g.record.clone()
                        };
                        g.close(&why, next);
                        (g.usage_seen, g.output_chunks, g.carried) = (false, 0, h.carried);
                        continue;
                    }
                    if g.record.ttft_ms.is_none() {
                        g.record.ttft_ms = Some(g.started.elapsed().as_secs_f64() * 1e3);
                    }
                    observe(&mut g.record, v);
                    if v["usage"].is_object() {
                        g.usage_seen = true;
                        g.record.completion_tokens -= g.carried;
                    }
                    g.output_chunks += output_parts(v);
                }
                Some(Err(e)) => {
                    g.record.error = Some(e.message.clone());
                    g.ended = true;
                }
                None => g.ended = true,
            }
            return item.map(|i| (i, (chunks, g)));
        }
    })
    .boxed()
}

/// How many choices of a chunk carry output: text (chat or legacy
/// completions), reasoning, or tool-call arguments.
fn output_parts(chunk: &serde_json::Value) -> i64 {
    let nonempty = |v: &serde_json::Value| v.as_str().is_some_and(|s| !s.is_empty());
    let Some(choices) = chunk["choices"].as_array() else { return 0 };
    let carries = |c: &serde_json::Value| {
        let d = &c["delta"];
        nonempty(&c["text"])
            || nonempty(&d["content"])
            || nonempty(&d["reasoning_content"])
            || nonempty(&d["reasoning"])
            || d["tool_calls"].as_array().is_some_and(|calls| calls.iter().any(|t| nonempty(&t["function"]["arguments"])))
    };
    choices.iter().filter(|c| carries(c)).count() as i64
}

fn empty() -> UsageRecord {
    UsageRecord {
        request_id: String::new(),
        ts_ms: 0,
        key_id: None,
        route: String::new(),
        provider: String::new(),
        model: String::new(),
        prompt_tokens: 0,
        completion_tokens: 0,
        cached_tokens: 0,
        cost_usd: 0.0,
        ttft_ms: None,
        latency_ms: 0.0,
        status: 0,
        error: None,
        cache_hit: false,
        attempts: 0,
    }
}

/// A fresh record for a request to `route` that arrived now.
pub fn draft(route: &str, key_id: Option<String>) -> UsageRecord {
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    UsageRecord { ts_ms, key_id, route: route.to_owned(), ..empty() }
}
