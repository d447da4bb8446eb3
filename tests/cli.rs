//! The `starling` command line: keys against a real SQLite file, serve,
//! and the device flag on the real model.

use std::process::{Command, Output};

fn starling(db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_starling"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STARLING_DATABASE_URL", db)
        .args(args)
        .output()
        .expect("run starling")
}

#[test]
fn keys_are_shown_once_listed_without_the_key_and_revoked() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let path = std::env::temp_dir().join(format!("starling-cli-{}-{nanos}.db", std::process::id()));
    let db = format!("sqlite://{}", path.display());

    let out = starling(&db, &["keys", "create", "--name", "social-team", "--rpm", "60", "--models", "a,b"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("sk-starling-") && key.len() == 44, "{key}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stderr.split_whitespace().nth(1).expect("created <id>").to_owned();
    assert!(id.starts_with("key_"), "{stderr}");

    let list = String::from_utf8_lossy(&starling(&db, &["keys", "list"]).stdout).into_owned();
    assert!(list.contains(&id) && list.contains("social-team") && list.contains("a,b") && list.contains("active"), "{list}");
    assert!(!list.contains(&key), "the key itself is never listed");

    assert!(starling(&db, &["keys", "revoke", &id]).status.success());
    let list = String::from_utf8_lossy(&starling(&db, &["keys", "list"]).stdout).into_owned();
    assert!(list.contains("revoked"), "{list}");
    let again = starling(&db, &["keys", "revoke", &id]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no key with id"));

    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// `starling serve` on `config`; the child and the address it printed.
fn serve(config: &std::path::Path, db: &str) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STARLING_DATABASE_URL", db)
        // Each test its own journal, beside its database.
        .env("STARLING_USAGE_JOURNAL", journal_of(db))
        .arg("--config")
        .arg(config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start serve");
    let mut first = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).expect("read");
    assert!(first.contains("gateway only"), "{first}");
    let addr = first.split("http://").nth(1).and_then(|s| s.split('/').next()).expect("address").to_owned();
    (child, addr)
}

/// The usage journal `serve` keeps for the SQLite database `db`.
fn journal_of(db: &str) -> String {
    format!("{}.journal", db.trim_start_matches("sqlite://"))
}

/// A temporary config for a gateway with no local model (ready at once).
fn gateway_only_config(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let cfg = std::env::temp_dir().join(format!("starling-cli-{tag}-{}-{nanos}.toml", std::process::id()));
    std::fs::write(&cfg, "[models]\ndefault = \"\"\n").expect("write config");
    cfg
}

/// One HTTP/1.1 request on a connection of its own; the whole answer.
fn http(addr: &str, request: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(&mut conn, request.as_bytes()).expect("send");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut conn, &mut answer).expect("answer");
    answer
}

/// `n` chat requests for a model nobody has (404, recorded all the same),
/// each on a connection of its own.
fn ask_for_an_unknown_model(addr: &str, n: usize) {
    let body = r#"{"model": "nope", "messages": [{"role": "user", "content": "Hi"}]}"#;
    let ask = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..n {
        let answer = http(addr, &ask);
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }
}

/// SIGTERM `child` and check that it shuts down cleanly (exit 0).
fn terminate(child: std::process::Child) {
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(term.success());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "serve exits 0 on SIGTERM: {:?}", out.status);
}

/// The files whose path starts with `base` (a test's config, database and
/// journal), and their sizes.
fn files_of(base: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let (Some(dir), Some(prefix)) = (base.parent(), base.file_name().and_then(|n| n.to_str())) else { return Vec::new() };
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(prefix)))
        .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect()
}

fn remove_files_of(base: &std::path::Path) {
    for (file, _) in files_of(base) {
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn sigterm_ends_every_http_thread_and_keeps_their_records() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let base = std::env::temp_dir().join(format!("starling-cli-threads-{}-{nanos}", std::process::id()));
    let cfg = base.with_extension("toml");
    let db_path = base.with_extension("db");
    let db = format!("sqlite://{}", db_path.display());
    std::fs::write(&cfg, "[models]\ndefault = \"\"\n[server]\nhttp_threads = 3\n").expect("write config");

    let (child, addr) = serve(&cfg, &db);
    // Connections of their own, spread over the threads by the kernel.
    ask_for_an_unknown_model(&addr, 6);
    terminate(child);

    let (mut child, addr) = serve(&cfg, &db);
    let usage = http(&addr, "GET /v1/usage?group_by=route HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = child.kill();
    let _ = child.wait();
    remove_files_of(&base);
    assert!(usage.starts_with("HTTP/1.1 200"), "{usage}");
    // One group (the route asked for), with all six requests.
    assert!(usage.contains(r#""group":"nope""#) && usage.matches(r#""group":"#).count() == 1, "{usage}");
    assert!(usage.contains(r#""requests":6"#), "{usage}");
}

/// `kill -9` while the records of answered requests are still queued (the
/// database is locked by another writer): the next start writes them from
/// the journal, each once.
#[test]
fn a_killed_server_loses_no_usage_record() {
    use sqlx::{Connection, Executor};
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let base = std::env::temp_dir().join(format!("starling-cli-kill-{}-{nanos}", std::process::id()));
    let cfg = base.with_extension("toml");
    let db = format!("sqlite://{}", base.with_extension("db").display());
    std::fs::write(&cfg, "[models]\ndefault = \"\"\n").expect("write config");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    let (mut child, addr) = serve(&cfg, &db);
    // Another writer holds the database: the server's inserts wait, then
    // fail and are retried, so its records stay queued.
    let mut locker = rt.block_on(sqlx::SqliteConnection::connect(&db)).expect("open the database");
    rt.block_on(locker.execute("BEGIN IMMEDIATE")).expect("lock");
    ask_for_an_unknown_model(&addr, 5);
    child.kill().expect("kill -9");
    let _ = child.wait();
    rt.block_on(locker.execute("ROLLBACK")).expect("unlock");
    let count = |rt: &tokio::runtime::Runtime, conn: &mut sqlx::SqliteConnection| -> i64 {
        rt.block_on(sqlx::query_scalar("SELECT COUNT(*) FROM usage_records").fetch_one(conn)).expect("count")
    };
    assert_eq!(count(&rt, &mut locker), 0, "the killed server wrote nothing");

    // The next start writes them; a clean shutdown leaves the journal empty.
    let (child, _) = serve(&cfg, &db);
    terminate(child);
    let written = count(&rt, &mut locker);
    // What is left of the journal: its lock and empty segments.
    let journal = files_of(std::path::Path::new(&journal_of(&db)));
    drop(locker);
    remove_files_of(&base);
    assert_eq!(written, 5);
    assert!(!journal.is_empty() && journal.iter().all(|(_, len)| *len == 0), "{journal:?}");
}

#[test]
fn a_second_server_on_a_busy_port_is_refused() {
    let cfg = gateway_only_config("busy");
    let (mut first, addr) = serve(&cfg, "");
    // The threads' sockets share the port with each other, never with
    // another process.
    let mut second = Command::new(env!("CARGO_BIN_EXE_starling"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STARLING_DATABASE_URL", "")
        .arg("--config")
        .arg(&cfg)
        .args(["serve", "--listen", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run starling");
    // It should exit at once; one that binds would serve until killed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stderr = second.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
    let _ = first.kill();
    let _ = first.wait();
    let _ = std::fs::remove_file(&cfg);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "the second server did not exit with 2: {stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
}

#[test]
fn serve_without_a_local_model_is_a_gateway_only() {
    let cfg = gateway_only_config("ready");
    // Ready at once: no model to load.
    let (mut child, addr) = serve(&cfg, "");
    let answer = http(&addr, "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&cfg);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_cuda_device_that_cannot_open_falls_back_to_the_cpu_with_a_warning() {
    // No machine has GPU 7 of this build (and a default build has no CUDA):
    // the model still answers, on the CPU, and the log says why.
    let out = Command::new(env!("CARGO_BIN_EXE_starling"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STARLING_DATABASE_URL", "")
        .args(["--device", "cuda:7", "generate", "--prompt", "Say hello.", "--max-tokens", "4", "--temperature", "0"])
        .output()
        .expect("run starling");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty(), "no text generated");
    assert!(stderr.contains("CUDA device unavailable; running on the CPU") && stderr.contains("cuda:7"), "{stderr}");

    let bad = Command::new(env!("CARGO_BIN_EXE_starling"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--device", "gpu", "models", "list"])
        .output()
        .expect("run starling");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown device `gpu`"));
}

#[test]
fn transcribe_prints_the_transcript_and_serve_refuses_an_unknown_speech_model() {
    let clip = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech/mel-clip.wav");
    let out = starling("", &["transcribe", clip, "--beam-size", "1", "--format", "srt"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("1\n00:00:00,000 --> "), "{stdout}");
    assert!(stdout.contains("tomorrow morning."), "{stdout}");
    let missing = starling("", &["transcribe", "/no/such/clip.wav"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/clip.wav"));

    // Checked before listening: it exits at once with the names it knows.
    let cfg = gateway_only_config("speech");
    std::fs::write(&cfg, "[models]\ndefault = \"\"\n[speech]\nmodels = [\"whisper-nope\"]\n").expect("write config");
    let bad = starling("", &["--config", cfg.to_str().expect("utf-8 path"), "serve", "--listen", "127.0.0.1:0"]);
    let _ = std::fs::remove_file(&cfg);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("unknown speech model `whisper-nope`") && stderr.contains("whisper-tiny-en"), "{stderr}");
}
