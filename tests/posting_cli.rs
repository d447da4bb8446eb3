//! `starling products|accounts|campaigns|posts` on a real SQLite file: the
//! posting API's checks and errors from the command line, and a secret key
//! rotated with `accounts reseal`.

use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::Value;

fn starling(db: &str, keys: (&str, &str), args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_starling"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("STARLING_DATABASE_URL", db)
        .env("STARLING_SECRET_KEY", keys.0)
        .env("STARLING_SECRET_KEY_PREVIOUS", keys.1)
        .args(args)
        .output()
        .expect("run starling")
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn the_command_line_imports_schedules_and_rotates_the_key() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let base = std::env::temp_dir().join(format!("starling-pcli-{}-{nanos}", std::process::id()));
    let db = format!("sqlite://{}.db", base.display());
    let (old, new) = (base64::engine::general_purpose::STANDARD.encode([1u8; 32]), base64::engine::general_purpose::STANDARD.encode([2u8; 32]));
    let first = (old.as_str(), "");

    let feed = base.with_extension("csv");
    std::fs::write(&feed, "sku,name,url,price\nGR-1,Burr grinder,https://acme.shop/grinder,120\nBAD,,nope,\n").expect("feed");
    let out = starling(&db, first, &["products", "import", feed.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3: name") && err.contains("line 3: url"), "{err}");
    std::fs::write(&feed, "sku,name,url,price\nGR-1,Burr grinder,https://acme.shop/grinder,120\n").expect("feed");
    assert_eq!(json(&starling(&db, first, &["products", "import", feed.to_str().expect("path")]))["created"], 1);

    let acc = json(&starling(&db, first, &["accounts", "add", "--handle", "shop", "--time-zone", "Europe/Paris"]));
    let acc = acc["id"].as_str().expect("id").to_owned();
    let cmp = json(&starling(&db, first, &["campaigns", "create", "--account", &acc, "--name", "spring", "--slot", "mon=09:00", "--slot", "thu=18:30", "--product", "GR-1"]));
    assert_eq!(cmp["slots"]["thu"][0], "18:30", "{cmp}");
    assert_eq!(cmp["products"].as_array().map(Vec::len), Some(1));
    let cmp = cmp["id"].as_str().expect("id").to_owned();
    let post = json(&starling(&db, first, &["posts", "schedule", "--account", &acc, "--text", "Spring is here", "--next-slot", "--campaign", &cmp]));
    assert_eq!(post["state"], "scheduled", "{post}");
    let bad = starling(&db, first, &["posts", "schedule", "--account", &acc, "--text", "x", "--at", "2026-03-29T02:30"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("(scheduled_at)"), "{}", String::from_utf8_lossy(&bad.stderr));
    let listed = json(&starling(&db, first, &["posts", "list", "--state", "scheduled"]));
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));

    // Credentials sealed under the old key; rotate to the new one.
    let creds = base.with_extension("json");
    std::fs::write(&creds, r#"{"access_token": "tok"}"#).expect("creds");
    json(&starling(&db, first, &["accounts", "add", "--platform", "x", "--handle", "brand", "--credentials", creds.to_str().expect("path")]));
    let refused = starling(&db, (&new, ""), &["accounts", "list"]);
    assert_eq!(refused.status.code(), Some(2), "the new key alone cannot open what the old one sealed");
    let resealed = starling(&db, (&new, &old), &["accounts", "reseal"]);
    assert!(String::from_utf8_lossy(&resealed.stderr).contains("sealed 1 secret"), "{}", String::from_utf8_lossy(&resealed.stderr));
    let accounts = json(&starling(&db, (&new, ""), &["accounts", "list"]));
    assert_eq!(accounts["data"].as_array().map(Vec::len), Some(2), "the new key alone opens everything now");
    for file in ["db", "db-wal"] {
        let bytes = std::fs::read(base.with_extension(file)).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains("\"tok\""), "sealed at rest ({file})");
    }

    for suffix in ["db", "db-wal", "db-shm", "csv", "json"] {
        let _ = std::fs::remove_file(base.with_extension(suffix));
    }
}
