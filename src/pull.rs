//! `starling models pull REPO [FILE...]`: fetch a GGUF or a Whisper
//! checkpoint from a Hugging Face-compatible hub into the models cache
//! (`cache_dir/<name>/`) and add it to the user manifest, so `serve`,
//! `generate` and `transcribe` load it by name.
//!
//! The transfer is `hf-hub`'s sync client (ureq). It keeps its own cache
//! under `cache_dir/.hub/` (blobs named by ETag, snapshots linking to them)
//! and resumes a broken download from its `blobs/<etag>.part` file with
//! `Range: bytes=<len>-` when the command runs again. It checks nothing it
//! receives, so this module checks every file before it lands in
//! `cache_dir/<name>/`: its size against the hub's, and for LFS files (whose
//! ETag is the sha256 of the content) its sha256.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, CacheRepo, Repo, RepoType};
use sha2::{Digest, Sha256};

use crate::config::{Config, HubSource};
use crate::user_manifest::{UserFile, UserModel};

/// hf-hub's cache inside the models cache: on the same file system, so a
/// verified blob is hard-linked into `cache_dir/<name>/`, never stored twice.
const HUB_DIR: &str = ".hub";

/// Decoder context of a Whisper model whose config.json does not say.
const WHISPER_CONTEXT: usize = 448;

/// `starling models pull`'s arguments.
#[derive(Debug)]
pub struct PullArgs {
    /// `owner/name` on the hub.
    pub repo: String,
    /// Files to fetch; empty: chosen from the repository's file list.
    pub files: Vec<String>,
    /// Model name (default: the repo with `/` replaced by `--`).
    pub name: Option<String>,
    /// Branch, tag or commit.
    pub revision: String,
}

/// Fetch, check, install and list one model.
pub fn pull(config: &Config, args: PullArgs) -> Result<()> {
    check_repo(&args.repo)?;
    let name = args.name.clone().unwrap_or_else(|| args.repo.replace('/', "--"));
    check_name(&name)?;
    let mut user = UserFile::read(&config.user_manifest)?;
    // Config::load merged both manifests: a name it knows that the user
    // manifest does not have is a shipped model, which a pull must not shadow.
    if config.models.iter().any(|m| m.name == name) && !user.model.iter().any(|m| m.name == name) {
        bail!("`{name}` is already a model of {}: pull under another name with --name", config.manifest.display());
    }
    let hub = Hub::connect(&config.cache_dir.join(HUB_DIR), &args.repo, &args.revision)?;
    let asked = if args.files.is_empty() { hub.default_files()? } else { args.files.clone() };
    let mut files = Vec::new();
    for f in asked {
        check_file(&f)?;
        if !files.contains(&f) {
            files.push(f);
        }
    }
    let plan = plan_of(&files)?;

    // config.json first: a checkpoint that is not Whisper fails before its
    // weights are fetched.
    let mut order = files.clone();
    order.sort_by_key(|f| f.as_str() != "config.json");
    let mut fetched = Vec::new();
    let mut context_length = 0;
    for file in &order {
        let f = hub.fetch(file)?;
        if file.as_str() == "config.json" && plan.kind == "speech-to-text" {
            context_length = whisper_context(&f.path, plan.format == "safetensors", &hub.shown)?;
        }
        fetched.push(f);
    }

    // Every file is checked: only now does anything land in cache_dir/<name>/.
    let dir = config.cache_dir.join(&name);
    for f in &fetched {
        install(&f.path, &dir.join(&f.file))?;
    }
    let main = fetched.iter().find(|f| f.file == plan.main).context("the main file was not fetched")?;
    if plan.kind == "llm" {
        context_length = gguf_context(&dir.join(&main.file)).unwrap_or_else(|| {
            eprintln!("{}: no readable GGUF header; context length left unknown (0)", main.file);
            0
        });
    }
    user.put(UserModel {
        name: name.clone(),
        kind: plan.kind.into(),
        format: plan.format.into(),
        file: plan.main.clone(),
        sha256: Some(main.sha256.clone()),
        chat_template: plan.chat_template.into(),
        context_length,
        source: None,
        sources: Vec::new(),
        hub: Some(HubSource {
            repo: args.repo.clone(),
            revision: args.revision.clone(),
            commit: Some(main.commit.clone()),
            files: files.clone(),
        }),
    });
    user.write(&config.user_manifest)?;
    println!(
        "pulled `{name}` ({}, {}, {}) into {}; listed in {}",
        plan.kind,
        plan.format,
        plan.main,
        dir.display(),
        config.user_manifest.display()
    );
    if plan.kind == "llm" {
        eprintln!("use it: starling generate --model {name} --prompt ..., or [models] default = \"{name}\" for serve");
    } else {
        eprintln!("use it: starling transcribe --model {name} FILE, or [speech] models = [\"{name}\"] for serve");
    }
    Ok(())
}

/// One repository at one revision on the hub, through hf-hub.
struct Hub {
    api: Api,
    repo: ApiRepo,
    cache: CacheRepo,
    /// `owner/name@revision on ENDPOINT`, for messages.
    shown: String,
}

/// A file fetched and checked, still in hf-hub's cache.
struct Fetched {
    /// Path in the repository (and in `cache_dir/<name>/`).
    file: String,
    /// The verified blob.
    path: PathBuf,
    /// Its sha256, hex.
    sha256: String,
    /// The commit the hub served it from.
    commit: String,
}

impl Hub {
    fn connect(dir: &Path, repo: &str, revision: &str) -> Result<Self> {
        // Read here rather than by hf-hub: its `from_env` reads HF_HOME and
        // HF_ENDPOINT but never HF_TOKEN (only a token file beside its cache
        // folder), and `with_token` replaces that file's token either way,
        // so only HF_TOKEN ever authenticates a pull. The token goes into
        // an `Authorization: Bearer` header and nowhere else.
        let endpoint = std::env::var("HF_ENDPOINT").ok().map(|e| e.trim_end_matches('/').to_owned()).filter(|e| !e.is_empty());
        let token = std::env::var("HF_TOKEN").ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        let mut builder = ApiBuilder::from_cache(Cache::new(dir.to_path_buf())).with_progress(true).with_token(token);
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e.clone());
        }
        let api = builder.build().map_err(hub_error).context("cannot set up the hub client")?;
        let r = Repo::with_revision(repo.to_owned(), RepoType::Model, revision.to_owned());
        Ok(Self {
            repo: api.repo(r.clone()),
            cache: Cache::new(dir.to_path_buf()).repo(r),
            api,
            shown: format!("{repo}@{revision} on {}", endpoint.as_deref().unwrap_or("the default hub")),
        })
    }

    /// The files to pull when none are named, from the repository's list.
    fn default_files(&self) -> Result<Vec<String>> {
        let info = self.repo.info().map_err(hub_error).with_context(|| format!("cannot list the files of {}", self.shown))?;
        let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        choose_files(&self.shown, &names)
    }

    /// Download `file` (or reuse hf-hub's cached copy) and check it.
    fn fetch(&self, file: &str) -> Result<Fetched> {
        let meta = self
            .api
            .metadata(&self.repo.url(file))
            .map_err(hub_error)
            .with_context(|| format!("cannot fetch {file} from {}", self.shown))?;
        let size = meta.size() as u64;
        // hf-hub's own paths: the blob is named by the ETag (quotes removed),
        // the partial download beside it with the extension `part`.
        let blob = self.cache.blob_path(meta.etag());
        let mut part = blob.clone();
        part.set_extension("part");
        settle_part(&part, &blob, size)?;
        let path = if blob.is_file() {
            blob
        } else {
            let kept = file_len(&part);
            if kept > 0 {
                eprintln!("{file}: resuming after {kept} of {size} bytes");
            }
            match self.repo.download(file) {
                // A snapshot link to the blob: the blob itself is what gets linked.
                Ok(pointer) => std::fs::canonicalize(&pointer).with_context(|| format!("cannot resolve {}", pointer.display()))?,
                Err(e) => {
                    let kept = file_len(&part);
                    let resume = if kept > 0 {
                        format!(" ({kept} of {size} bytes kept: run the same command again to resume)")
                    } else {
                        String::new()
                    };
                    return Err(hub_error(e)).with_context(|| format!("cannot download {file} from {}{resume}", self.shown));
                }
            }
        };
        let len = file_len(&path);
        let sha256 = sha256_file(&path)?;
        let expected = lfs_sha256(meta.etag());
        let problem = if len != size {
            Some(format!("{len} bytes where the hub announced {size}"))
        } else {
            match &expected {
                Some(want) if *want != sha256 => Some(format!("sha256 {sha256}, the hub's ETag says {want}")),
                _ => None,
            }
        };
        if let Some(problem) = problem {
            // Neither the bad blob nor hf-hub's snapshot link to it may serve
            // a later pull: the next run downloads the file afresh.
            let _ = std::fs::remove_file(&path);
            let mut pointer = self.cache.pointer_path(meta.commit_hash());
            pointer.push(file);
            let _ = std::fs::remove_file(&pointer);
            bail!("{file} from {} is corrupt ({problem}); it was removed, nothing was installed", self.shown);
        }
        let checked = if expected.is_some() { "sha256 verified" } else { "size checked (no sha256 ETag: not an LFS file)" };
        eprintln!("{file}: {len} bytes, {checked}");
        Ok(Fetched { file: file.to_owned(), path, sha256, commit: meta.commit_hash().to_owned() })
    }
}

/// hf-hub's errors as text, with a hint where the status says what to do.
/// (ureq words a refused request `http status: N`; nothing in it carries
/// the token.)
fn hub_error(e: ApiError) -> anyhow::Error {
    let msg = e.to_string();
    if msg.contains("http status: 401") || msg.contains("http status: 403") {
        anyhow!("{msg} (a gated or private repository needs HF_TOKEN)")
    } else if msg.contains("http status: 404") {
        anyhow!("{msg} (no such repository, revision or file)")
    } else {
        anyhow::Error::msg(msg)
    }
}

/// hf-hub resumes a `.part` file from its length; two lengths it cannot
/// resume from: past the end (it fails with "Invalid part file") and exactly
/// complete (a broken run that had every byte: the range `bytes=<size>-`
/// gets 416). The first is started afresh, the second is taken as the blob,
/// which the sha256 check then judges like any download.
fn settle_part(part: &Path, blob: &Path, size: u64) -> Result<()> {
    let Ok(meta) = std::fs::metadata(part) else { return Ok(()) };
    if meta.len() > size {
        std::fs::remove_file(part).with_context(|| format!("cannot remove {}", part.display()))?;
    } else if meta.len() == size && size > 0 && !blob.exists() {
        std::fs::rename(part, blob).with_context(|| format!("cannot rename {}", part.display()))?;
    }
    Ok(())
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The sha256 an ETag promises: the hub's LFS files have their content's
/// sha256 as (linked) ETag; other files a git blob id, which says nothing
/// checkable here. A weak `W/` prefix and quotes are dropped.
fn lfs_sha256(etag: &str) -> Option<String> {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e).trim_matches('"');
    (e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit())).then(|| e.to_ascii_lowercase())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let mut hex = String::with_capacity(64);
    for b in hasher.finalize() {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(hex)
}

/// Put the verified blob `src` at `dest`: a hard link, so a multi-GB GGUF
/// is not stored twice; a copy (then a rename, so a half copy never looks
/// complete) where links cannot be made.
fn install(src: &Path, dest: &Path) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Removed first: a rename onto another link of the same blob (a re-pull)
    // would be a no-op, and a hard link cannot replace a file.
    match std::fs::remove_file(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", dest.display())),
    }
    if std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".pulling");
    let tmp = PathBuf::from(tmp);
    std::fs::copy(src, &tmp).with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("cannot rename {}", tmp.display()))?;
    Ok(())
}

fn is_gguf(file: &str) -> bool {
    Path::new(file).extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The files to pull from a repository listing `names`: its one GGUF, or a
/// Whisper checkpoint's files (CTranslate2's `model.bin` or Hugging Face's
/// `model.safetensors`, with `config.json` and `tokenizer.json` and the
/// optional files the loader reads when present).
fn choose_files(shown: &str, names: &[&str]) -> Result<Vec<String>> {
    let ggufs: Vec<&str> = names.iter().copied().filter(|n| is_gguf(n)).collect();
    match ggufs.as_slice() {
        [one] => return Ok(vec![(*one).to_owned()]),
        [] => {}
        many => bail!("{shown} has {} GGUF files; name the one to pull: {}", many.len(), many.join(", ")),
    }
    let has = |f: &str| names.contains(&f);
    let (weights, optional): (&str, &[&str]) = if has("model.bin") {
        ("model.bin", &["vocabulary.txt", "vocabulary.json", "preprocessor_config.json"][..])
    } else if has("model.safetensors") {
        ("model.safetensors", &["generation_config.json", "preprocessor_config.json"][..])
    } else {
        bail!("{shown} has no .gguf, model.bin or model.safetensors: name the files to pull");
    };
    if !has("config.json") || !has("tokenizer.json") {
        bail!("{shown} has {weights} but not both config.json and tokenizer.json: not a Whisper checkpoint Starling loads");
    }
    let mut files = vec!["config.json", weights, "tokenizer.json"];
    files.extend(optional.iter().copied().filter(|f| has(f)));
    Ok(files.into_iter().map(str::to_owned).collect())
}

/// What the pulled files make, judged by their names.
#[derive(Debug, PartialEq)]
struct Plan {
    kind: &'static str,
    format: &'static str,
    main: String,
    chat_template: &'static str,
}

fn plan_of(files: &[String]) -> Result<Plan> {
    let ggufs: Vec<&String> = files.iter().filter(|f| is_gguf(f)).collect();
    match ggufs.as_slice() {
        // The GGUF carries its own chat template.
        [one] => return Ok(Plan { kind: "llm", format: "gguf", main: (*one).clone(), chat_template: "gguf" }),
        [] => {}
        many => bail!(
            "one GGUF per model: pull {} one at a time, each with its own --name",
            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
    let has = |f: &str| files.iter().any(|x| x == f);
    // The speech loader prefers model.bin when a folder has both.
    let (format, main) = if has("model.bin") {
        ("ctranslate2", "model.bin")
    } else if has("model.safetensors") {
        ("safetensors", "model.safetensors")
    } else {
        bail!(
            "cannot tell what {} is: pull one .gguf file, or a Whisper checkpoint (config.json, tokenizer.json and model.bin or model.safetensors)",
            files.join(" ")
        );
    };
    for need in ["config.json", "tokenizer.json"] {
        if !has(need) {
            bail!("a Whisper checkpoint needs {need} beside {main}: add it to the files to pull");
        }
    }
    Ok(Plan { kind: "speech-to-text", format, main: main.to_owned(), chat_template: "none" })
}

/// The decoder context of a Whisper checkpoint from its config.json. A
/// Hugging Face checkpoint must say `"model_type": "whisper"`: safetensors
/// of any other architecture would load as nonsense. CTranslate2's
/// config.json names no architecture (model.bin does; the loader checks it).
fn whisper_context(path: &Path, hugging_face: bool, shown: &str) -> Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("config.json of {shown} is not JSON"))?;
    if hugging_face {
        match v.get("model_type").and_then(|t| t.as_str()) {
            Some("whisper") => {}
            other => bail!(
                "{shown} is not a Whisper checkpoint (config.json model_type: {}): only Whisper loads from safetensors; pull a .gguf for an LLM",
                other.unwrap_or("none")
            ),
        }
    }
    Ok(v.get("max_target_positions").and_then(|n| n.as_u64()).and_then(|n| usize::try_from(n).ok()).unwrap_or(WHISPER_CONTEXT))
}

/// The GGUF's own `<arch>.context_length` (only the header is read). The
/// manifest's number is informative (`models list`): the engine reads the
/// file itself when it loads.
fn gguf_context(path: &Path) -> Option<usize> {
    let g = inference::gguf::GgufFile::open(path).ok()?;
    let arch = g.str_opt("general.architecture")?;
    g.u64(&format!("{arch}.context_length")).ok().and_then(|n| usize::try_from(n).ok())
}

/// `owner/name` or `name`, in the hub's characters: it becomes a URL path
/// and, by default, a folder name.
fn check_repo(repo: &str) -> Result<()> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty() && *p != "." && *p != ".." && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !ok {
        bail!("`{repo}` is not a repository id (owner/name)");
    }
    Ok(())
}

/// A model name is a folder of the models cache: one plain component, not
/// hidden (hf-hub's cache is `.hub`).
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.starts_with('.') || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        bail!("`{name}` cannot be a model name: use letters, digits, `-`, `_` and `.`, not first");
    }
    Ok(())
}

/// A file of the repository, relative and inside it: it is also a path
/// under `cache_dir/<name>/`.
fn check_file(file: &str) -> Result<()> {
    let p = Path::new(file);
    if file.is_empty() || file.contains('\\') || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("`{file}` is not a file path inside the repository");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_a_sha256_etag_is_checked() {
        let sha = "B179C9523D0E6A0F98A330C7562B682750A6F8C8C15E5BC70EA373728110DB53";
        assert_eq!(lfs_sha256(sha).as_deref(), Some(sha.to_ascii_lowercase().as_str()));
        assert_eq!(lfs_sha256(&format!("\"{sha}\"")), lfs_sha256(sha));
        assert_eq!(lfs_sha256(&format!("W/\"{sha}\"")), lfs_sha256(sha));
        // A git blob id (non-LFS file) and anything else: nothing to check.
        assert_eq!(lfs_sha256("\"4b5ce0f2d8e1a2c3b4d5e6f708192a3b4c5d6e7f\""), None);
        assert_eq!(lfs_sha256(&format!("{}zz", &sha[..62])), None);
    }

    #[test]
    fn default_files_are_the_one_gguf_or_a_whisper_checkpoint() {
        let shown = "acme/x@main";
        let one = choose_files(shown, &["README.md", "m.Q4_0.gguf", ".gitattributes"]).expect("one gguf");
        assert_eq!(one, strings(&["m.Q4_0.gguf"]));
        let many = choose_files(shown, &["a.Q4_0.gguf", "a.Q8_0.gguf"]).expect_err("two ggufs");
        assert!(many.to_string().contains("a.Q4_0.gguf, a.Q8_0.gguf"), "{many}");
        let hf = choose_files(
            shown,
            &["README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "pytorch_model.bin"],
        )
        .expect("hf whisper");
        assert_eq!(hf, strings(&["config.json", "model.safetensors", "tokenizer.json", "generation_config.json"]));
        let ct2 = choose_files(shown, &["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]).expect("ct2");
        assert_eq!(ct2, strings(&["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]));
        assert!(choose_files(shown, &["model.safetensors", "config.json"]).is_err(), "no tokenizer");
        assert!(choose_files(shown, &["README.md"]).is_err());
    }

    #[test]
    fn the_plan_follows_the_file_names() {
        let llm = plan_of(&strings(&["m.gguf"])).expect("llm");
        assert_eq!((llm.kind, llm.format, llm.main.as_str(), llm.chat_template), ("llm", "gguf", "m.gguf", "gguf"));
        let hf = plan_of(&strings(&["config.json", "model.safetensors", "tokenizer.json"])).expect("hf");
        assert_eq!((hf.kind, hf.format, hf.main.as_str()), ("speech-to-text", "safetensors", "model.safetensors"));
        let ct2 = plan_of(&strings(&["model.bin", "config.json", "tokenizer.json"])).expect("ct2");
        assert_eq!((ct2.format, ct2.main.as_str()), ("ctranslate2", "model.bin"));
        assert!(plan_of(&strings(&["a.gguf", "b.gguf"])).is_err());
        assert!(plan_of(&strings(&["model.safetensors", "config.json"])).is_err(), "no tokenizer.json");
        assert!(plan_of(&strings(&["weights.pt"])).is_err());
    }

    #[test]
    fn names_repos_and_files_stay_inside_their_folders() {
        assert!(check_repo("acme/tiny-llm_v1.5").is_ok() && check_repo("gpt2").is_ok());
        for bad in ["", "a/b/c", "../x", "a/..", "a b/c", "/x"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
        assert!(check_name("acme--tiny-llm").is_ok());
        for bad in ["", ".hub", "a/b", "..", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_file("sub/model.gguf").is_ok());
        for bad in ["", "../x", "/etc/passwd", "a/../../b", "a\\b", "./a"] {
            assert!(check_file(bad).is_err(), "{bad}");
        }
    }
}
