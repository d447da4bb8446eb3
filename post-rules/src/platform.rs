//! Every platform's length rule and default limit, as data: the posting
//! service's pre-flight gate and the engine's post constraint ask here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use twitter_text::extractor::{Extract, Extractor};

use crate::x::{XRules, X_URL_WEIGHT};

/// A platform a post goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// X: twitter-text v3 weighted length, 280 (premium accounts more).
    X,
    /// Bluesky: 300 grapheme clusters of the record's text.
    Bluesky,
    /// Mastodon: 500 grapheme clusters, every URL with a scheme counting
    /// 23 and a remote mention `@user@domain` counting as `@user` (the
    /// server's `StatusLengthValidator`).
    Mastodon,
    /// LinkedIn: 3,000 characters.
    LinkedIn,
}

/// A text checked against a platform's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The length in the platform's unit.
    pub length: usize,
    /// The limit it was checked against.
    pub limit: usize,
    /// Not empty, within the limit (and, on X, no invalid characters).
    pub valid: bool,
}

impl Platform {
    /// Every platform.
    pub const ALL: [Self; 4] = [Self::X, Self::Bluesky, Self::Mastodon, Self::LinkedIn];

    /// The limit of an ordinary account.
    pub fn default_limit(self) -> usize {
        match self {
            Self::X => crate::x::X_MAX_WEIGHTED_LENGTH,
            Self::Bluesky => 300,
            Self::Mastodon => 500,
            Self::LinkedIn => 3000,
        }
    }

    /// `text`'s length as this platform counts it.
    pub fn length(self, text: &str) -> usize {
        match self {
            Self::X => XRules::default().count(text).weighted_length,
            Self::Bluesky => text.graphemes(true).count(),
            Self::Mastodon => mastodon_length(text),
            Self::LinkedIn => text.chars().count(),
        }
    }

    /// Check `text` against `limit` (the account's; `None`: the default).
    pub fn check(self, text: &str, limit: Option<usize>) -> Check {
        let limit = limit.unwrap_or_else(|| self.default_limit());
        if self == Self::X {
            let c = XRules::new(limit).count(text);
            return Check { length: c.weighted_length, limit, valid: c.valid };
        }
        let length = self.length(text);
        Check { length, limit, valid: !text.trim().is_empty() && length <= limit }
    }
}

/// Mastodon's count (its `StatusLengthValidator`): grapheme clusters of the
/// text after every URL with a scheme becomes 23 characters and every
/// `@user@domain` becomes `@user`.
fn mastodon_length(text: &str) -> usize {
    let mut urls = Extractor::new();
    urls.set_extract_url_without_protocol(false);
    let text = replace_each(text, &urls.extract_urls(text), |_| "x".repeat(X_URL_WEIGHT));
    let remote: Vec<String> = Extractor::new()
        .extract_federated_mentions(&text)
        .into_iter()
        .filter(|m| m.trim_start_matches(['@', '＠']).contains('@'))
        .collect();
    let text = replace_each(&text, &remote, |m| {
        let body = m.trim_start_matches(['@', '＠']);
        let lead = &m[..m.len() - body.len()];
        format!("{lead}{}", body.split_once('@').map_or(body, |(user, _)| user))
    });
    text.graphemes(true).count()
}

/// `text` with each of `found` (entities in order of appearance) replaced by `with(entity)`.
fn replace_each(text: &str, found: &[String], with: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    for f in found {
        if let Some(at) = rest.find(f.as_str()) {
            out.push_str(&rest[..at]);
            out.push_str(&with(f));
            rest = &rest[at + f.len()..];
        }
    }
    out.push_str(rest);
    out
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::X => "x",
            Self::Bluesky => "bluesky",
            Self::Mastodon => "mastodon",
            Self::LinkedIn => "linkedin",
        })
    }
}

/// A platform name nobody knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPlatform(pub String);

impl fmt::Display for UnknownPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not one of x, bluesky, mastodon, linkedin", self.0)
    }
}

impl std::error::Error for UnknownPlatform {}

impl FromStr for Platform {
    type Err = UnknownPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|p| p.to_string().eq_ignore_ascii_case(s)).ok_or_else(|| UnknownPlatform(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_platform_counts_its_own_way() {
        // A family emoji: one grapheme, 7 code points, 2 on X.
        let family = "👨‍👩‍👧‍👦";
        assert_eq!(Platform::Bluesky.length(family), 1);
        assert_eq!(Platform::LinkedIn.length(family), 7);
        assert_eq!(Platform::X.length(family), 2);
        let url = "https://example.com/an/extremely/long/path/for/this/test";
        assert_eq!(Platform::Mastodon.length(&format!("see {url}")), 4 + 23);
        assert_eq!(Platform::Mastodon.length("hi @alice@example.social"), "hi @alice".len());
        // Without a scheme a link is text, as Mastodon counts it.
        assert_eq!(Platform::Mastodon.length("see acme.com"), 12);
        assert_eq!(Platform::Mastodon.length(family), 1);
        // A URL and a remote mention that overlap never count below zero.
        let hostile = format!("@a@(https://example.com/{})", "a".repeat(100));
        assert!(Platform::Mastodon.length(&hostile) <= hostile.chars().count());
        assert!(Platform::Bluesky.check(&"é".repeat(300), None).valid);
        assert!(!Platform::Bluesky.check(&"é".repeat(301), None).valid);
        assert!(!Platform::Mastodon.check("   ", None).valid);
        assert_eq!(Platform::X.check(&"a".repeat(300), Some(25_000)), Check { length: 300, limit: 25_000, valid: true });
        assert_eq!("LinkedIn".parse::<Platform>(), Ok(Platform::LinkedIn));
        assert!("myspace".parse::<Platform>().is_err());
    }
}
