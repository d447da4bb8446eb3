//! Drafts from the content pipeline: the posting service asks a
//! [`Drafter`] for ranked candidates (the gateway implements it with
//! generate-then-rank, so generation is routed, budgeted and recorded like
//! any API call, under the caller's key), and fills a campaign's free
//! slots with the best of them.

use futures_util::future::BoxFuture;
use platform::auth::Caller;

/// What to write.
#[derive(Debug, Clone)]
pub struct DraftRequest {
    /// Whose key pays and is recorded.
    pub caller: Caller,
    /// The platform's rules.
    pub platform: post_rules::Platform,
    /// The account's limit, where larger than the platform's default.
    pub max_length: Option<usize>,
    /// What to write about (the campaign's niche).
    pub topic: Option<String>,
    /// The product to promote.
    pub product: Option<content::prompts::Product>,
    /// A link every candidate must carry.
    pub link: Option<String>,
    /// A disclosure every candidate must carry (`#ad`).
    pub disclosure: Option<String>,
    /// Terms no candidate may use.
    pub banned_terms: Vec<String>,
    /// The account's recent posts, not to repeat.
    pub recent_posts: Vec<String>,
    /// Candidates to write.
    pub n: usize,
    /// For reproducible drafts.
    pub seed: Option<i64>,
}

/// A candidate, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// The text.
    pub text: String,
    /// Its quality score (0..1).
    pub score: f64,
}

/// Why no drafts came.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DraftError {
    /// The HTTP status that fits (503 while models load, 429 over a budget...).
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

/// Writes ranked candidates.
pub trait Drafter: Send + Sync {
    /// Candidates for `req`, best first.
    fn drafts(&self, req: DraftRequest) -> BoxFuture<'_, Result<Vec<Draft>, DraftError>>;
}

/// `text` with the `#ad` disclosure moved to its start (the gate wants it
/// first; the generator only guarantees it is there). Unchanged when it is
/// absent or already first.
pub fn disclosure_first(text: &str, tag: &str) -> String {
    if crate::gate::starts_with_disclosure(text) {
        return text.to_owned();
    }
    let lower = text.to_lowercase();
    let Some(at) = lower.find(&tag.to_lowercase()) else { return text.to_owned() };
    let rest = format!("{}{}", &text[..at], &text[at + tag.len()..]);
    let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{tag} {rest}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn disclosure_moves_first() {
        assert_eq!(super::disclosure_first("Great grinder #ad https://a.co/x", "#ad"), "#ad Great grinder https://a.co/x");
        assert_eq!(super::disclosure_first("#ad Great", "#ad"), "#ad Great");
        assert_eq!(super::disclosure_first("No tag", "#ad"), "No tag");
    }
}
