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

#[test]
fn serve_without_a_local_model_is_a_gateway_only() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let cfg = std::env::temp_dir().join(format!("starling-cli-{}-{nanos}.toml", std::process::id()));
    std::fs::write(&cfg, "[models]\ndefault = \"\"\n[database]\nurl = \"\"\n").expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_starling"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--config")
        .arg(&cfg)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start serve");
    let mut first = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).expect("read");
    // Ready at once: no model to load.
    let addr = first.split("http://").nth(1).and_then(|s| s.split('/').next()).expect("address").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    std::io::Write::write_all(&mut conn, b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut conn, &mut answer).expect("answer");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&cfg);
    assert!(first.contains("gateway only"), "{first}");
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
