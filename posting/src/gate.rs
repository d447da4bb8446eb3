//! The pre-flight gate: asked before every post goes out, after it is
//! claimed and before anything is sent. A post it blocks says why; one
//! over the account's daily cap waits for the next local day.

use content::similarity::similarity;

use crate::model::{now_ms, Account, Campaign, Post};
use crate::schedule;
use crate::store::{Store, StoreError};

/// `[posting.gate]`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Words no post may contain, on top of each campaign's.
    pub banned_terms: Vec<String>,
    /// A post this similar (character trigrams, 0..1) to one of the
    /// account's recent posts is a near-duplicate.
    pub near_duplicate: f64,
    /// How far back duplicates are looked for, days.
    pub duplicate_days: i64,
    /// What the platform charges for a post with a link, USD (X charges
    /// more for them), against a campaign's `link_budget_usd`.
    pub link_post_usd: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self { banned_terms: Vec::new(), near_duplicate: 0.8, duplicate_days: 30, link_post_usd: 0.2 }
    }
}

/// What the gate says.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// It may go.
    Pass,
    /// It may not, for this reason.
    Block(String),
    /// Not now: at `until_ms`, for this reason.
    Defer {
        /// Unix ms.
        until_ms: i64,
        /// Why.
        reason: String,
    },
}

/// Whether `text` contains `term` as a whole word (or phrase), ignoring case.
pub fn contains_term(text: &str, term: &str) -> bool {
    let (text, term) = (text.to_lowercase(), term.trim().to_lowercase());
    if term.is_empty() {
        return false;
    }
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    text.match_indices(&term)
        .any(|(i, _)| boundary(text[..i].chars().next_back()) && boundary(text[i + term.len()..].chars().next()))
}

/// Whether `text` opens with the `#ad` disclosure.
pub fn starts_with_disclosure(text: &str) -> bool {
    let t = text.trim_start();
    t.get(..3).is_some_and(|s| s.eq_ignore_ascii_case("#ad")) && t[3..].chars().next().is_none_or(|c| !c.is_alphanumeric())
}

/// Whitespace-collapsed, lower-cased: what counts as the same text.
fn normal(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Check `post` from `account` (of `campaign`) under `rules` (the
/// platform's length rule).
pub async fn check(
    store: &Store,
    cfg: &GateConfig,
    rules: post_rules::Platform,
    account: &Account,
    campaign: Option<&Campaign>,
    post: &Post,
) -> Result<Verdict, StoreError> {
    let limit = account.max_length.and_then(|l| usize::try_from(l).ok());
    for (i, part) in post.parts.iter().enumerate() {
        let c = rules.check(&part.text, limit);
        if !c.valid {
            let which = if post.parts.len() > 1 { format!("part {} ", i + 1) } else { String::new() };
            return Ok(Verdict::Block(format!("{which}is {} long where {} allows {}, or empty or invalid", c.length, account.platform, c.limit)));
        }
    }
    let text: Vec<&str> = post.parts.iter().map(|p| p.text.as_str()).collect();
    let banned = cfg.banned_terms.iter().chain(campaign.map(|c| &c.banned_terms).into_iter().flatten());
    for term in banned {
        if text.iter().any(|t| contains_term(t, term)) {
            return Ok(Verdict::Block(format!("contains the banned term `{term}`")));
        }
    }
    let needs_disclosure = post.affiliate || campaign.is_some_and(|c| c.disclosure != "none" && Post::has_link(&post.parts));
    let disclosed = text.first().is_some_and(|t| starts_with_disclosure(t)) || (post.paid_partnership && account.platform == "x");
    if needs_disclosure && !disclosed {
        return Ok(Verdict::Block(
            "an affiliate post must disclose it: start it with #ad (or, on X, set paid_partnership)".into(),
        ));
    }
    let now = now_ms();
    let recent = store.recent_texts(&account.id, now - cfg.duplicate_days * 86_400_000, &post.id).await?;
    for ours in &text {
        if recent.iter().any(|r| normal(r) == normal(ours)) {
            return Ok(Verdict::Block(format!("the account posted the same text in the last {} days", cfg.duplicate_days)));
        }
        if let Some((score, _)) = recent.iter().map(|r| (similarity(ours, r), r)).max_by(|a, b| a.0.total_cmp(&b.0)) {
            if score >= cfg.near_duplicate {
                return Ok(Verdict::Block(format!(
                    "a near-duplicate (similarity {score:.2} >= {}) of a post from the last {} days",
                    cfg.near_duplicate, cfg.duplicate_days
                )));
            }
        }
    }
    if let Some(c) = campaign {
        if let (Some(budget), true) = (c.link_budget_usd, Post::has_link(&post.parts)) {
            let spent = store.link_posts(&c.id).await? as f64 * cfg.link_post_usd;
            if spent + cfg.link_post_usd > budget + 1e-9 {
                return Ok(Verdict::Block(format!(
                    "campaign `{}` has spent ${spent:.2} of its ${budget:.2} link-post budget (${:.2} a post with a link)",
                    c.name, cfg.link_post_usd
                )));
            }
        }
    }
    let tz = schedule::zone(&account.time_zone).map_err(|e| StoreError::Corrupt { id: account.id.clone(), column: "time_zone", error: e })?;
    let (start, end) = schedule::local_day(&tz, now);
    let today = store.posts_in_day(&account.id, start, end).await?;
    if today >= account.daily_cap {
        return Ok(Verdict::Defer {
            until_ms: end,
            reason: format!(
                "the account's daily cap ({} a day) is reached; moved to the next day in {} ({})",
                account.daily_cap,
                account.time_zone,
                schedule::show(end, &tz)
            ),
        });
    }
    Ok(Verdict::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_and_disclosures() {
        assert!(contains_term("Best Crypto tips", "crypto"));
        assert!(!contains_term("cryptography notes", "crypto"));
        assert!(contains_term("get rich quick, now", "rich quick"));
        assert!(!contains_term("anything", " "));
        assert!(starts_with_disclosure("#ad The grinder"));
        assert!(starts_with_disclosure("  #AD: the grinder"));
        assert!(!starts_with_disclosure("#adventure time"));
        assert!(!starts_with_disclosure("The grinder #ad"));
    }
}
