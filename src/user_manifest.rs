//! The user model manifest (`[models] user_manifest`, `models/user.toml`,
//! git-ignored): what `starling models pull` adds, in the shipped
//! manifest's `[[model]]` shape, read after it by `Config::load`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::HubSource;

/// The user manifest as `pull` reads and writes it. It keeps every entry it
/// does not replace as it was, and refuses keys it does not know rather
/// than dropping them on the next write.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserFile {
    #[serde(default)]
    pub(crate) model: Vec<UserModel>,
}

/// One `[[model]]`: `ManifestModel`'s shape, hand-written sources kept verbatim.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserModel {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) format: String,
    pub(crate) file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sha256: Option<String>,
    pub(crate) chat_template: String,
    pub(crate) context_length: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) sources: Vec<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hub: Option<HubSource>,
}

const USER_HEADER: &str = "# Models added by `starling models pull` (git-ignored), read after\n\
# models/models.toml. Same [[model]] shape; re-pulling a name replaces its\n\
# entry, and this file is rewritten then (comments are not kept).\n\n";

impl UserFile {
    pub(crate) fn read(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("invalid user model manifest {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read user model manifest {}", path.display())),
        }
    }

    /// Add `m`, in place of an entry of the same name.
    pub(crate) fn put(&mut self, m: UserModel) {
        match self.model.iter_mut().find(|old| old.name == m.name) {
            Some(old) => *old = m,
            None => self.model.push(m),
        }
    }

    /// Write through a temporary file: a crash never leaves half a manifest
    /// that would stop every command from loading the config.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let body = toml::to_string(self).context("cannot encode the user model manifest")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, format!("{USER_HEADER}{body}")).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_manifest_round_trips_and_a_re_pull_replaces_its_entry() {
        let entry = |name: &str, sha: &str| UserModel {
            name: name.into(),
            kind: "llm".into(),
            format: "gguf".into(),
            file: "m.gguf".into(),
            sha256: Some(sha.into()),
            chat_template: "gguf".into(),
            context_length: 0,
            source: None,
            sources: Vec::new(),
            hub: Some(HubSource { repo: "acme/m".into(), revision: "main".into(), commit: Some("c0ffee".into()), files: vec!["m.gguf".into()] }),
        };
        let mut user = UserFile::default();
        user.put(entry("a", "1"));
        user.put(entry("b", "2"));
        user.put(entry("a", "3"));
        let text = toml::to_string(&user).expect("encode");
        let back: UserFile = toml::from_str(&text).expect("decode");
        assert_eq!(back.model.iter().map(|m| (m.name.as_str(), m.sha256.as_deref())).collect::<Vec<_>>(), [("a", Some("3")), ("b", Some("2"))]);
        assert!(text.contains("[model.hub]"), "{text}");
    }
}
