//! `starling models pull` against a fake hub on loopback that speaks the
//! hub's file-resolve protocol as hf-hub's sync client uses it:
//! `GET /api/models/{repo}/revision/{rev}` (the file list),
//! `GET /{repo}/resolve/{rev}/{file}` answering LFS files with a 302 to a
//! CDN route (`x-repo-commit`, `x-linked-etag: "<sha256>"`,
//! `x-linked-size`) and other files directly (a git-blob-like ETag), and
//! ranges (`bytes=a-b`, `bytes=a-`) with 206 and `Content-Range`. Never
//! the real hub: HF_ENDPOINT points at the fake one.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

const TOKEN: &str = "hf_fakeTestToken_7c1e5a";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().fold(String::new(), |mut s, b| {
        let _ = write!(&mut s, "{b:02x}");
        s
    })
}

/// Bytes that are not a GGUF (no magic): the pull does not load them.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[derive(Clone)]
struct HubFile {
    bytes: Vec<u8>,
    /// Served through a redirect to the CDN route, its sha256 as ETag.
    lfs: bool,
    /// The sha256 the hub announces (LFS): normally that of `bytes`.
    announced: String,
    /// Bytes sent before the connection is dropped, on the first download
    /// (not the `bytes=0-0` probes) only.
    break_after: Option<usize>,
}

impl HubFile {
    fn lfs(bytes: Vec<u8>) -> Self {
        Self { announced: sha256_hex(&bytes), bytes, lfs: true, break_after: None }
    }
    fn plain(bytes: &[u8]) -> Self {
        Self { announced: String::new(), bytes: bytes.to_vec(), lfs: false, break_after: None }
    }
}

/// One request the fake hub answered.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

struct State {
    addr: String,
    /// `owner/repo/file` -> the file.
    files: HashMap<String, HubFile>,
    broken: Mutex<HashSet<String>>,
    seen: Mutex<Vec<Seen>>,
    /// Answer 401 to requests without `Authorization: Bearer TOKEN`.
    require_token: bool,
}

struct FakeHub {
    state: Arc<State>,
}

impl FakeHub {
    fn start(files: Vec<(&str, HubFile)>, require_token: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let files = files.into_iter().map(|(k, f)| (k.to_owned(), f)).collect();
        let state = Arc::new(State {
            addr,
            files,
            broken: Mutex::new(HashSet::new()),
            seen: Mutex::new(Vec::new()),
            require_token,
        });
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || handle(conn, &s));
            }
        });
        Self { state }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    /// The requests answered since the last call.
    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.state.seen.lock().expect("lock"))
    }
}

/// One request per connection (`Connection: close`).
fn handle(conn: TcpStream, state: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let range = headers.get("range").cloned();
    let authorization = headers.get("authorization").cloned();
    state.seen.lock().expect("lock").push(Seen { path: path.clone(), range: range.clone(), authorization: authorization.clone() });
    let mut out = conn;
    let bearer = format!("Bearer {TOKEN}");
    if state.require_token && !path.starts_with("/cdn/") && authorization.as_deref() != Some(bearer.as_str()) {
        return answer(&mut out, "401 Unauthorized", &[("x-error-code", "GatedRepo".into())], b"");
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, _rev)) = rest.split_once("/revision/") else { return answer(&mut out, "404 Not Found", &[], b"") };
        let prefix = format!("{repo}/");
        let siblings: Vec<serde_json::Value> = state
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        if siblings.is_empty() {
            return answer(&mut out, "404 Not Found", &[], b"");
        }
        let body = serde_json::json!({ "id": repo, "sha": COMMIT, "siblings": siblings }).to_string();
        return answer(&mut out, "200 OK", &[("content-type", "application/json".into())], body.as_bytes());
    }
    if let Some(key) = path.strip_prefix("/cdn/") {
        let Some(f) = state.files.get(key) else { return answer(&mut out, "404 Not Found", &[], b"") };
        let probe = range.as_deref() == Some("bytes=0-0");
        let cut = f.break_after.filter(|_| !probe && state.broken.lock().expect("lock").insert(key.to_owned()));
        return serve(&mut out, &f.bytes, range.as_deref(), &[("etag", format!("\"{}\"", f.announced))], cut);
    }
    let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return answer(&mut out, "404 Not Found", &[], b"");
    };
    let Some((_rev, file)) = rest.split_once('/') else { return answer(&mut out, "404 Not Found", &[], b"") };
    let key = format!("{repo}/{file}");
    let Some(f) = state.files.get(&key) else {
        return answer(&mut out, "404 Not Found", &[("x-error-code", "EntryNotFound".into())], b"");
    };
    // A git blob id for the pointer or the small file: 40 hex, not a sha256.
    let git_etag = format!("\"{}\"", &sha256_hex(key.as_bytes())[..40]);
    if f.lfs {
        let headers = [
            ("location", format!("http://{}/cdn/{key}", state.addr)),
            ("x-repo-commit", COMMIT.into()),
            ("x-linked-etag", format!("\"{}\"", f.announced)),
            ("x-linked-size", f.bytes.len().to_string()),
            ("etag", git_etag),
        ];
        return answer(&mut out, "302 Found", &headers, b"");
    }
    serve(&mut out, &f.bytes, range.as_deref(), &[("x-repo-commit", COMMIT.into()), ("etag", git_etag)], None);
}

fn answer(out: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes()).and_then(|()| out.write_all(body)).and_then(|()| out.flush());
}

/// `bytes`, whole or the asked range; with `cut`, only that many body
/// bytes, then the connection ends (the announced length is not met).
fn serve(out: &mut TcpStream, bytes: &[u8], range: Option<&str>, headers: &[(&str, String)], cut: Option<usize>) {
    let len = bytes.len();
    let parsed = range.and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-')).and_then(|(a, b)| {
        let a: usize = a.parse().ok()?;
        let b: Option<usize> = if b.is_empty() { None } else { Some(b.parse().ok()?) };
        Some((a, b))
    });
    let mut headers = headers.to_vec();
    headers.push(("accept-ranges", "bytes".into()));
    let (status, start, end) = match parsed {
        Some((a, _)) if a >= len => {
            headers.push(("content-range", format!("bytes */{len}")));
            return answer(out, "416 Range Not Satisfiable", &headers, b"");
        }
        Some((a, b)) => {
            let end = b.map_or(len - 1, |b| b.min(len - 1));
            headers.push(("content-range", format!("bytes {a}-{end}/{len}")));
            ("206 Partial Content", a, end)
        }
        None => ("200 OK", 0, len.saturating_sub(1)),
    };
    let body = if len == 0 { &[][..] } else { &bytes[start..=end] };
    let Some(cut) = cut else { return answer(out, status, &headers, body) };
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes()).and_then(|()| out.write_all(&body[..cut.min(body.len())])).and_then(|()| out.flush());
    // FIN after the bytes sent; wait for the client to give up and close.
    let _ = out.shutdown(Shutdown::Write);
    let _ = out.read(&mut [0u8; 64]);
}

/// A temporary folder with a config whose models cache and user manifest
/// are inside it, and a fake hub.
struct Env {
    dir: PathBuf,
    hub: FakeHub,
}

impl Env {
    fn new(tag: &str, files: Vec<(&str, HubFile)>, require_token: bool) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("starling-pull-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/models.toml");
        let config = format!(
            "[models]\nmanifest = '{}'\ncache_dir = '{}'\nuser_manifest = '{}'\ndefault = \"\"\n",
            manifest.display(),
            dir.join("cache").display(),
            dir.join("user.toml").display()
        );
        std::fs::write(dir.join("starling.toml"), config).expect("write config");
        Self { dir, hub: FakeHub::start(files, require_token) }
    }

    fn starling(&self, args: &[&str]) -> Output {
        self.starling_with(TOKEN, args)
    }

    fn starling_with(&self, token: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_starling"));
        cmd.current_dir(&self.dir)
            .arg("--config")
            .arg(self.dir.join("starling.toml"))
            .args(args)
            .env("HF_ENDPOINT", self.hub.endpoint())
            .env("HF_TOKEN", token)
            .env("HF_HOME", self.dir.join("hf-home"))
            .env("STARLING_MODELS_DIR", self.dir.join("cache"))
            .env_remove("RUST_LOG");
        // Loopback only: no proxy in between.
        for p in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
            cmd.env_remove(p);
        }
        cmd.output().expect("run starling")
    }

    fn model_file(&self, name: &str, file: &str) -> PathBuf {
        self.dir.join("cache").join(name).join(file)
    }

    /// The user manifest's `[[model]]` tables.
    fn user_models(&self) -> Vec<toml::Table> {
        let Ok(text) = std::fs::read_to_string(self.dir.join("user.toml")) else { return Vec::new() };
        let t: toml::Table = toml::from_str(&text).expect("user.toml parses");
        t.get("model")
            .and_then(|m| m.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn str_of<'a>(t: &'a toml::Table, key: &str) -> &'a str {
    t.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

#[test]
fn a_gguf_and_a_whisper_checkpoint_land_in_the_cache_and_the_user_manifest() {
    let gguf = pattern(5000, 1);
    let weights = pattern(3000, 2);
    let config = br#"{"model_type": "whisper", "max_target_positions": 448}"#;
    let tokenizer = br#"{"version": "1.0"}"#;
    let env = Env::new(
        "ok",
        vec![
            ("acme/tiny-llm/tiny.Q4_0.gguf", HubFile::lfs(gguf.clone())),
            ("acme/tiny-llm/README.md", HubFile::plain(b"# tiny")),
            ("acme/whisper-mini/config.json", HubFile::plain(config)),
            ("acme/whisper-mini/tokenizer.json", HubFile::plain(tokenizer)),
            ("acme/whisper-mini/model.safetensors", HubFile::lfs(weights.clone())),
            ("acme/whisper-mini/README.md", HubFile::plain(b"# whisper")),
            ("acme/whisper-mini/.gitattributes", HubFile::plain(b"*.safetensors filter=lfs")),
        ],
        false,
    );

    let out = env.starling(&["models", "pull", "acme/tiny-llm", "tiny.Q4_0.gguf"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pulled `acme--tiny-llm`"), "{}", text(&out));
    assert_eq!(std::fs::read(env.model_file("acme--tiny-llm", "tiny.Q4_0.gguf")).expect("gguf"), gguf);
    // hf-hub's requests: the resolve URL, then the CDN it redirects to.
    let seen = env.hub.take_seen();
    assert!(seen.iter().any(|s| s.path == "/acme/tiny-llm/resolve/main/tiny.Q4_0.gguf"), "{seen:?}");
    assert!(seen.iter().any(|s| s.path == "/cdn/acme/tiny-llm/tiny.Q4_0.gguf" && s.range.as_deref() == Some("bytes=0-")), "{seen:?}");

    // No files named: the checkpoint's files from the repository's list.
    let out = env.starling(&["models", "pull", "acme/whisper-mini", "--name", "whisper-mini"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(env.model_file("whisper-mini", "model.safetensors")).expect("weights"), weights);
    assert_eq!(std::fs::read(env.model_file("whisper-mini", "config.json")).expect("config"), config);
    assert_eq!(std::fs::read(env.model_file("whisper-mini", "tokenizer.json")).expect("tokenizer"), tokenizer);
    assert!(!env.model_file("whisper-mini", "README.md").exists());
    assert!(env.hub.take_seen().iter().any(|s| s.path == "/api/models/acme/whisper-mini/revision/main"));

    let models = env.user_models();
    assert_eq!(models.iter().map(|m| str_of(m, "name")).collect::<Vec<_>>(), ["acme--tiny-llm", "whisper-mini"]);
    let (llm, stt) = (&models[0], &models[1]);
    assert_eq!((str_of(llm, "kind"), str_of(llm, "format"), str_of(llm, "file")), ("llm", "gguf", "tiny.Q4_0.gguf"));
    assert_eq!((str_of(llm, "sha256"), str_of(llm, "chat_template")), (sha256_hex(&gguf).as_str(), "gguf"));
    let hub = llm.get("hub").and_then(|h| h.as_table()).expect("[model.hub]");
    assert_eq!((str_of(hub, "repo"), str_of(hub, "revision"), str_of(hub, "commit")), ("acme/tiny-llm", "main", COMMIT));
    assert_eq!((str_of(stt, "kind"), str_of(stt, "format"), str_of(stt, "file")), ("speech-to-text", "safetensors", "model.safetensors"));
    assert_eq!(str_of(stt, "sha256"), sha256_hex(&weights));
    assert_eq!(stt.get("context_length").and_then(|v| v.as_integer()), Some(448));

    let out = env.starling(&["models", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = |name: &str| list.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or("").to_owned();
    let llm_row = row("acme--tiny-llm");
    assert!(llm_row.contains("llm") && llm_row.contains("yes") && llm_row.contains("hub:acme/tiny-llm@main"), "{list}");
    let stt_row = row("whisper-mini");
    assert!(stt_row.contains("speech-to-text") && stt_row.contains("448") && stt_row.contains("yes"), "{list}");

    // Pulled again: the hub cache's blob is reused (only the 1-byte probes)
    // and the entry replaced, not added.
    let out = env.starling(&["models", "pull", "acme/tiny-llm", "tiny.Q4_0.gguf"]);
    assert!(out.status.success(), "{}", text(&out));
    let seen = env.hub.take_seen();
    assert!(seen.iter().all(|s| s.range.as_deref() == Some("bytes=0-0")), "{seen:?}");
    assert_eq!(env.user_models().len(), 2);
    assert_eq!(std::fs::read(env.model_file("acme--tiny-llm", "tiny.Q4_0.gguf")).expect("gguf"), gguf);

    // A shipped model's name is not taken over.
    let out = env.starling(&["models", "pull", "acme/tiny-llm", "tiny.Q4_0.gguf", "--name", "smollm2-135m-instruct"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("models.toml") && text(&out).contains("--name"), "{}", text(&out));
}

#[test]
fn a_broken_download_resumes_where_it_stopped() {
    let bytes = pattern(300_000, 3);
    let mut file = HubFile::lfs(bytes.clone());
    file.break_after = Some(100_000);
    let env = Env::new("resume", vec![("acme/big/big.gguf", file)], false);

    let out = env.starling(&["models", "pull", "acme/big", "big.gguf"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("big.gguf") && err.contains("of 300000 bytes kept") && err.contains("again to resume"), "{err}");
    assert!(!env.model_file("acme--big", "big.gguf").exists());
    assert!(env.user_models().is_empty());
    env.hub.take_seen();

    let out = env.starling(&["models", "pull", "acme/big", "big.gguf"]);
    assert!(out.status.success(), "{}", text(&out));
    // The second run asked only for the missing tail.
    let seen = env.hub.take_seen();
    let starts: Vec<usize> = seen
        .iter()
        .filter(|s| s.path.starts_with("/cdn/") && s.range.as_deref() != Some("bytes=0-0"))
        .filter_map(|s| s.range.as_deref()?.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .collect();
    assert!(matches!(starts.as_slice(), [s] if (1..=100_000).contains(s)), "{seen:?}");
    assert_eq!(std::fs::read(env.model_file("acme--big", "big.gguf")).expect("gguf"), bytes);
    assert_eq!(str_of(&env.user_models()[0], "sha256"), sha256_hex(&bytes));
}

#[test]
fn bytes_that_do_not_match_the_etag_sha256_are_refused() {
    let mut file = HubFile::lfs(pattern(4000, 4));
    file.announced = sha256_hex(b"something else");
    let env = Env::new("corrupt", vec![("acme/bad/bad.gguf", file.clone())], false);

    let out = env.starling(&["models", "pull", "acme/bad", "bad.gguf"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("bad.gguf") && err.contains("sha256"), "{err}");
    assert!(!env.dir.join("cache/acme--bad").exists(), "nothing in the models cache");
    assert!(env.user_models().is_empty());
    // Nor kept in the hub cache, where a later pull would find it.
    assert!(!env.dir.join("cache/.hub/models--acme--bad/blobs").join(&file.announced).exists());
}

#[test]
fn the_token_is_sent_as_a_bearer_and_never_printed() {
    let env = Env::new("token", vec![("acme/private/p.gguf", HubFile::lfs(pattern(1000, 5)))], true);

    let out = env.starling(&["models", "pull", "acme/private", "p.gguf"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(TOKEN));
    let seen = env.hub.take_seen();
    let to_hub: Vec<&Seen> = seen.iter().filter(|s| !s.path.starts_with("/cdn/")).collect();
    assert!(!to_hub.is_empty());
    let bearer = format!("Bearer {TOKEN}");
    assert!(to_hub.iter().all(|s| s.authorization.as_deref() == Some(bearer.as_str())), "{seen:?}");
    let user = std::fs::read_to_string(env.dir.join("user.toml")).expect("user.toml");
    assert!(!user.contains(TOKEN));

    // A wrong token: refused, with a hint, and not echoed either.
    let wrong = "hf_wrongToken_0000";
    let out = env.starling_with(wrong, &["models", "pull", "acme/private", "p.gguf", "--name", "other"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("401") && text(&out).contains("HF_TOKEN"), "{}", text(&out));
    assert!(!text(&out).contains(wrong));
}
