//! The writer task behind [`UsageLog`]: records in, batches out, the
//! database's outages waited out.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::accounting::journal::{Journal, Left};

use super::store::{UsageError, UsageStore, BATCH};
use super::UsageRecord;

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
    /// Records taken from handlers and not yet written, in memory.
    pub queued: prometheus::IntGauge,
    /// Records not yet written that are kept only in the journal (the
    /// memory queue was full during an outage).
    pub journal_only: prometheus::IntGauge,
}

/// Most records the writer keeps in memory when there is a journal: past
/// it, during a long outage, records stay only in the journal and are read
/// back from it once the database answers. Without a journal memory is the
/// only copy, and nothing is let go.
const MEMORY_LIMIT: usize = 10_000;

/// The writer task: takes records as they come, writes them in batches,
/// and keeps every record it could not write (a database restart, a
/// network blip) to retry with growing pauses, so an outage delays records
/// but loses none. With a journal, memory holds at most `limit` of them:
/// the rest wait in the journal, counted per segment, and are read back
/// from it once the queue has drained (every insert skips a record the
/// store already has, so reading a segment again writes nothing twice).
/// Only a `close` whose deadline passes with the database still away gives
/// up; records stay in the journal then, or are logged whole without one.
struct Writer {
    store: UsageStore,
    rx: mpsc::UnboundedReceiver<Message>,
    queued: Vec<UsageRecord>,
    /// The journal segment of each of `queued`.
    segments: Vec<u64>,
    /// Per journal segment, records left only there. While any are, new
    /// records join them, so that they are read back before any newer
    /// record is written from memory.
    spilled: BTreeMap<u64, usize>,
    /// Most records in memory (with a journal).
    limit: usize,
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
            let done = if !self.queued.is_empty() {
                self.write_batch().await
            } else if !self.spilled.is_empty() {
                self.read_back().await
            } else if self.close_by.is_some() {
                return;
            } else {
                continue;
            };
            match done {
                Ok(()) => pause = FIRST_PAUSE,
                Err(e) => {
                    self.metrics.write_errors.inc();
                    let now = tokio::time::Instant::now();
                    if self.close_by.is_some_and(|by| now >= by) {
                        self.give_up(&e);
                        return;
                    }
                    let waiting = self.queued.len() + self.spilled.values().sum::<usize>();
                    tracing::warn!(waiting, "cannot write usage records, retrying in {pause:?}: {e}");
                    self.wait(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    /// Write the oldest batch of the memory queue.
    async fn write_batch(&mut self) -> Result<(), UsageError> {
        let n = self.queued.len().min(BATCH);
        self.store.insert(&self.queued[..n]).await?;
        self.queued.drain(..n);
        let segments: Vec<u64> = self.segments.drain(..n).collect();
        if let Some(j) = &self.journal {
            // Runs of one segment (they come in order, mostly).
            for run in segments.chunk_by(|a, b| a == b) {
                j.written(run[0], run.len());
            }
        }
        self.metrics.queued.set(self.queued.len() as i64);
        Ok(())
    }

    /// Write what the oldest segment with records left only in the journal
    /// holds. The count is taken before the file is read, so every record
    /// it counts is in what is read.
    async fn read_back(&mut self) -> Result<(), UsageError> {
        let Some((&segment, &count)) = self.spilled.iter().next() else { return Ok(()) };
        let Some(journal) = self.journal.clone() else {
            self.spilled.clear();
            return Ok(());
        };
        match journal.read(segment) {
            Ok(records) => {
                for batch in records.chunks(BATCH) {
                    self.store.insert(batch).await?;
                }
                journal.written(segment, count);
            }
            Err(e) => tracing::error!(segment, "cannot read usage records back from the journal (the next start will): {e}"),
        }
        match self.spilled.get_mut(&segment) {
            Some(left) if *left > count => *left -= count,
            _ => {
                self.spilled.remove(&segment);
            }
        }
        self.metrics.journal_only.sub(count as i64);
        Ok(())
    }

    fn take(&mut self, m: Message) {
        match m {
            Message::Record(r, segment) => {
                if self.journal.is_some() && (!self.spilled.is_empty() || self.queued.len() >= self.limit) {
                    // It is in the journal already: leave it there for now.
                    *self.spilled.entry(segment).or_default() += 1;
                    self.metrics.journal_only.inc();
                    return;
                }
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
        let records = self.queued.len() + self.spilled.values().sum::<usize>();
        tracing::error!(records, "usage records not written by the shutdown deadline: {e}");
        if self.journal.is_some() {
            tracing::error!("they stay in the usage journal: the next start writes them");
            self.queued.clear();
            self.segments.clear();
            self.spilled.clear();
            self.metrics.journal_only.set(0);
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
        Self::start_with_limit(store, metrics, journal, MEMORY_LIMIT)
    }

    /// [`UsageLog::start`] keeping at most `limit` records in memory.
    fn start_with_limit(store: UsageStore, metrics: WriterMetrics, journal: Option<&Path>, limit: usize) -> Self {
        let (journal, left) = match journal.map(|path| (path, Journal::open(path))) {
            None => (None, Left::new()),
            Some((path, Ok(Some((j, left))))) => {
                if !left.is_empty() {
                    let records: usize = left.values().sum();
                    tracing::warn!(records, journal = %path.display(), "usage records from a run that did not shut down cleanly: writing them");
                }
                (Some(Arc::new(j)), left)
            }
            Some((path, Ok(None))) => {
                tracing::error!(journal = %path.display(), "the usage journal is in use by another process: running without one");
                (None, Left::new())
            }
            Some((path, Err(e))) => {
                tracing::error!(journal = %path.display(), "cannot open the usage journal, running without one: {e}");
                (None, Left::new())
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // What a previous run left is read back a segment at a time.
        metrics.queued.set(0);
        metrics.journal_only.set(left.values().sum::<usize>() as i64);
        let writer = Writer {
            store: store.clone(),
            rx,
            spilled: left,
            limit,
            queued: Vec::new(),
            segments: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> WriterMetrics {
        WriterMetrics {
            write_errors: prometheus::IntCounter::new("e", "e").expect("counter"),
            queued: prometheus::IntGauge::new("q", "q").expect("gauge"),
            journal_only: prometheus::IntGauge::new("j", "j").expect("gauge"),
        }
    }

    /// During an outage memory holds at most the limit; the rest wait in
    /// the journal and are read back once the database answers: every
    /// record is written, once.
    #[tokio::test]
    async fn a_long_outage_keeps_memory_bounded_and_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("starling-usage-outage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = platform::Db::open(&format!("sqlite://{}", dir.join("usage.db").display())).await.expect("db");
        sqlx::query("ALTER TABLE usage_records RENAME TO away").execute(db.pool()).await.expect("outage");
        let m = metrics();
        let log = UsageLog::start_with_limit(UsageStore::new(&db), m.clone(), Some(&dir.join("usage.journal")), 10);
        for i in 0..50 {
            let mut r = super::super::draft("route", None);
            r.request_id = format!("req-{i}");
            log.record(r);
        }
        let taken = async {
            while m.queued.get() + m.journal_only.get() < 50 || m.write_errors.get() == 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), taken).await.expect("the writer takes every record");
        assert!(m.queued.get() <= 10, "{} in memory", m.queued.get());
        assert_eq!(m.journal_only.get(), 50 - m.queued.get());
        sqlx::query("ALTER TABLE away RENAME TO usage_records").execute(db.pool()).await.expect("back");
        log.close(Duration::from_secs(30)).await;
        let (rows, ids): (i64, i64) = sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage_records")
            .fetch_one(db.pool())
            .await
            .expect("count");
        assert_eq!((rows, ids), (50, 50));
        assert_eq!((m.queued.get(), m.journal_only.get()), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
