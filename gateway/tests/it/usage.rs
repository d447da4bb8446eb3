//! Usage records: one per chat request, with tokens, cost, provider and
//! status; written off the request path, flushed on shutdown, readable
//! through `GET /v1/usage` after a restart.

use serde_json::{json, Value};

use crate::fake_openai::{Fault, FakeOpenAi};
use crate::routing::{gateway_for, header, provider, route};
use crate::support::{post_json, start_recorded, MODEL};

/// A fresh SQLite file, removed on drop.
pub struct TempDb(pub std::path::PathBuf);

impl TempDb {
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        Self(std::env::temp_dir().join(format!("starling-usage-{}-{nanos}.db", std::process::id())))
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
        for (file, _) in crate::support::journal_files(&crate::support::journal_for(&self.url())) {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The `GET /v1/usage?group_by=...` row of `name` (asserted present).
pub fn group<'a>(data: &'a Value, name: &str) -> &'a Value {
    let found = data["data"].as_array().and_then(|a| a.iter().find(|g| g["group"] == name));
    assert!(found.is_some(), "no group `{name}` in {data}");
    found.expect("checked above")
}

#[tokio::test]
async fn every_request_is_recorded_priced_and_kept_across_a_restart() {
    recorded_priced_and_kept_across_a_restart(&TempDb::new().url()).await;
}

/// The records test on any database (`postgres.rs` runs it on PostgreSQL).
pub async fn recorded_priced_and_kept_across_a_restart(db_url: &str) {
    let (openai, groq) = (FakeOpenAi::start("openai").await, FakeOpenAi::start("groq").await);
    let gw = || {
        gateway_for(
            vec![provider("openai", &openai.base_url), provider("groq", &groq.base_url)],
            vec![route(&[("openai", "gpt-4o-mini"), ("groq", "llama-3.1-8b-instant")])],
        )
    };
    let mut s = start_recorded(|_| {}, |_| {}, gw(), Some(db_url)).await;
    let url = format!("{}/chat/completions", s.v1());
    let ask = |extra: Value| {
        let mut b = json!({"model": "tweet-writer", "messages": [{"role": "user", "content": "Hi"}]});
        if let (Some(o), Value::Object(e)) = (b.as_object_mut(), extra) {
            o.extend(e);
        }
        b
    };
    // 1: openai fails, groq answers (JSON). 2: openai streams.
    openai.fail_next([Fault::ServerError]);
    let res = post_json(&url, &ask(json!({}))).await;
    assert_eq!(header(&res, "x-starling-provider"), "groq");
    let res = post_json(&url, &ask(json!({"stream": true}))).await;
    assert_eq!(header(&res, "x-starling-provider"), "openai");
    res.text().await.expect("stream");
    // 3: the local model. 4: a model nobody has.
    // `ignore_eos` on the local requests: the token counts below are exact,
    // and a sampled end token would end an answer early.
    let res = post_json(&url, &json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "ignore_eos": true})).await;
    assert_eq!(res.status(), 200);
    let res = post_json(&url, &json!({"model": "nope", "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(res.status(), 404);
    // A model name PostgreSQL text cannot hold (NUL): still recorded.
    let res = post_json(&url, &json!({"model": "no\u{0}pe", "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(res.status(), 404);
    // 5 and 6: a deterministic request twice; the second is a cache hit.
    let greedy = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3, "temperature": 0, "ignore_eos": true});
    post_json(&url, &greedy).await.text().await.expect("body");
    let res = post_json(&url, &greedy).await;
    assert_eq!(header(&res, "x-starling-cache"), "hit");
    // 7: a legacy completion, streamed without include_usage.
    let legacy = json!({"model": MODEL, "prompt": "Tea is", "max_tokens": 2, "stream": true, "ignore_eos": true});
    let text = post_json(&format!("{}/completions", s.v1()), &legacy).await.text().await.expect("body");
    assert!(!text.contains("\"usage\""), "{text}");

    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.expect("metrics").text().await.expect("text");
    let words = groq.answer_words().len() as f64;
    let groq_cost = (9.0 * 0.05 + words * 0.08) / 1e6;
    assert!(
        metrics.contains(&format!(r#"starling_gateway_cost_usd_total{{model="llama-3.1-8b-instant",provider="groq"}} {groq_cost}"#)),
        "{metrics}"
    );

    // Graceful shutdown writes what is queued; a new server on the same
    // file reads it back.
    s.shutdown();
    s.done.take().expect("serve task").await.expect("join").expect("serve");
    let s2 = start_recorded(|_| {}, |_| {}, gw(), Some(db_url)).await;
    let by_provider: Value =
        reqwest::get(format!("{}/usage?group_by=provider", s2.v1())).await.expect("usage").json().await.expect("json");
    let g = group(&by_provider, "groq");
    assert_eq!(g["requests"], 1);
    assert_eq!((g["prompt_tokens"].as_i64(), g["completion_tokens"].as_f64()), (Some(9), Some(words)));
    assert!((g["cost_usd"].as_f64().unwrap_or(-1.0) - groq_cost).abs() < 1e-15, "{g}");
    let o = group(&by_provider, "openai");
    assert_eq!((o["requests"].as_i64(), o["completion_tokens"].as_f64()), (Some(1), Some(openai.answer_words().len() as f64)));
    let local = group(&by_provider, "local");
    assert_eq!((local["requests"].as_i64(), local["cache_hits"].as_i64()), (Some(4), Some(1)), "{by_provider}");
    assert_eq!(local["completion_tokens"], 4 + 3 + 3 + 2);
    let none = group(&by_provider, "");
    assert_eq!((none["requests"].as_i64(), none["errors"].as_i64()), (Some(2), Some(2)));

    let by_route: Value =
        reqwest::get(format!("{}/usage?group_by=route", s2.v1())).await.expect("usage").json().await.expect("json");
    assert_eq!(group(&by_route, "tweet-writer")["requests"], 2);
    assert_eq!(group(&by_route, "no\u{fffd}pe")["requests"], 1);
    // A time window that ends before the requests holds none.
    let empty: Value = reqwest::get(format!("{}/usage?to=1000", s2.v1())).await.expect("usage").json().await.expect("json");
    assert_eq!(empty["data"], json!([]));
    let bad = reqwest::get(format!("{}/usage?group_by=colour", s2.v1())).await.expect("usage");
    assert_eq!(bad.status(), 400);
}

/// Records a crashed run left in the journal are written at the next
/// start, except those it had already written, and a line the crash cut
/// off is skipped; a clean shutdown leaves the journal empty.
#[tokio::test]
async fn records_left_in_the_journal_are_written_once() {
    journal_written_once(&TempDb::new().url()).await;
}

/// The journal test on any database (`postgres.rs` runs it on PostgreSQL).
pub async fn journal_written_once(db_url: &str) {
    let journal = crate::support::journal_for(db_url);
    let record = |id: &str, latency_ms: f64| gateway::accounting::usage::UsageRecord {
        request_id: id.into(),
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        completion_tokens: 7,
        status: 200,
        latency_ms,
        ..gateway::accounting::usage::draft("tweet-writer", None)
    };
    let (written, unwritten) = (record("chatcmpl-written", 12.5), record("chatcmpl-unwritten", 30.25));
    {
        let pool = platform::db::Db::open(db_url).await.expect("database");
        let store = gateway::accounting::usage::UsageStore::new(&pool);
        store.insert(std::slice::from_ref(&written)).await.expect("insert");
    }
    let mut lines = String::new();
    for r in [&written, &unwritten] {
        lines.push_str(&serde_json::to_string(r).expect("json"));
        lines.push('\n');
    }
    lines.push_str(r#"{"request_id": "chatcmpl-cut", "ts_"#);
    // Left in the newest segment of a run that died.
    std::fs::write(format!("{}.7", journal.display()), lines).expect("write journal");

    let mut s = start_recorded(|_| {}, |_| {}, gateway_for(vec![], vec![]), Some(db_url)).await;
    s.shutdown();
    s.done.take().expect("serve task").await.expect("join").expect("serve");
    // Segment 7 is gone, its records written; the lock and an empty newest
    // segment remain.
    let files = crate::support::journal_files(&journal);
    assert!(files.iter().all(|(f, len)| *len == 0 && !f.ends_with(".7")), "{files:?}");
    assert!(files.iter().any(|(f, _)| f.to_string_lossy().ends_with(".8")), "{files:?}");
    let s = start_recorded(|_| {}, |_| {}, gateway_for(vec![], vec![]), Some(db_url)).await;
    let by_provider: Value =
        reqwest::get(format!("{}/usage?group_by=provider", s.v1())).await.expect("usage").json().await.expect("json");
    let o = group(&by_provider, "openai");
    assert_eq!((o["requests"].as_i64(), o["completion_tokens"].as_i64()), (Some(2), Some(14)), "{by_provider}");
}

/// A stream cut short never reaches its usage chunk, yet the provider
/// bills the prompt and what it streamed: the record counts the chunks
/// seen and estimates the prompt, whether the upstream broke or the client
/// left.
#[tokio::test]
async fn a_stream_cut_short_is_billed_for_what_it_streamed() {
    use crate::routing::{read_past_a_break, read_until_first_word};
    let db = TempDb::new();
    let openai = FakeOpenAi::start("openai").await;
    let gw = || gateway_for(vec![provider("openai", &openai.base_url)], vec![route(&[("openai", "gpt-4o-mini")])]);
    let mut s = start_recorded(|_| {}, |_| {}, gw(), Some(&db.url())).await;
    let url = format!("{}/chat/completions", s.v1());
    let body = json!({"model": "tweet-writer", "messages": [{"role": "user", "content": "Write a tweet about tea"}], "stream": true});
    for client_leaves in [false, true] {
        openai.fail_next([Fault::ResetAfterFirstChunk]);
        let mut res = post_json(&url, &body).await;
        if client_leaves {
            read_until_first_word(&mut res, &openai).await;
            drop(res);
        } else {
            read_past_a_break(&mut res, &openai).await;
        }
    }
    s.shutdown();
    s.done.take().expect("serve task").await.expect("join").expect("serve");
    // The upstream left hanging by the client that went away.
    openai.cut();

    let s2 = start_recorded(|_| {}, |_| {}, gw(), Some(&db.url())).await;
    let by_provider: Value =
        reqwest::get(format!("{}/usage?group_by=provider", s2.v1())).await.expect("usage").json().await.expect("json");
    let o = group(&by_provider, "openai");
    // One word each; the prompt estimated from its text (about 4 bytes a token).
    assert_eq!((o["requests"].as_i64(), o["errors"].as_i64()), (Some(2), Some(2)), "{o}");
    assert_eq!(o["completion_tokens"].as_i64(), Some(2), "{o}");
    let prompt = o["prompt_tokens"].as_i64().unwrap_or(0);
    assert!((2 * 5..=2 * 12).contains(&prompt), "{o}");
    let cost = (prompt as f64 * 0.15 + 2.0 * 0.6) / 1e6;
    assert!((o["cost_usd"].as_f64().unwrap_or(-1.0) - cost).abs() < 1e-12, "{o}");
}

/// The value of an unlabelled metric in `/metrics`.
async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("text");
    let value = text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()));
    assert!(value.is_some(), "no {name} in {text}");
    value.unwrap_or_default()
}

/// Records taken while the database is down wait in the writer, which
/// retries, and land once it is back; a graceful shutdown waits for them.
pub async fn kept_through_a_database_outage(pg: &mut crate::postgres::PgServer) {
    let openai = FakeOpenAi::start("openai").await;
    let gw = gateway_for(vec![provider("openai", &openai.base_url)], vec![route(&[("openai", "gpt-4o-mini")])]);
    let mut s = start_recorded(|_| {}, |_| {}, gw, Some(&pg.url)).await;
    let url = format!("{}/chat/completions", s.v1());
    let ask = |stream: bool| json!({"model": "tweet-writer", "messages": [{"role": "user", "content": "Hi"}], "stream": stream});
    let res = post_json(&url, &ask(false)).await;
    assert_eq!(res.status(), 200);

    pg.pause();
    for stream in [false, true, false] {
        let res = post_json(&url, &ask(stream)).await;
        assert_eq!(res.status(), 200, "requests are answered while the database is away");
        res.text().await.expect("body");
    }
    // Wait until the writer has failed at least once with all three (and
    // maybe the first) queued: the outage is seen, not just scheduled.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let failed = metric(&s.base, "starling_gateway_usage_write_errors_total").await;
        let queued = metric(&s.base, "starling_gateway_usage_queued_records").await;
        if failed >= 1.0 && queued >= 3.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the writer never failed: errors {failed}, queued {queued}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    pg.resume().await;
    s.shutdown();
    s.done.take().expect("serve task").await.expect("join").expect("serve");
    let db = platform::db::Db::open(&pg.url).await.expect("database");
    let store = gateway::accounting::usage::UsageStore::new(&db);
    let by_provider = store.summary(0, i64::MAX, gateway::accounting::usage::GroupBy::Provider, None).await.expect("summary");
    let openai_rows: Vec<_> = by_provider.iter().filter(|g| g.group == "openai").collect();
    assert_eq!(openai_rows.len(), 1, "{by_provider:?}");
    assert_eq!((openai_rows[0].requests, openai_rows[0].errors), (4, 0), "{by_provider:?}");
}
