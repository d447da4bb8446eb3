//! A post's quality score.
//!
//! Each part is a value in [0, 1] with a reason. The score is the weighted
//! mean of the parts that apply to the request (`link` only when the
//! context has a link, `disclosure` only for affiliate content,
//! `duplicate` only with recent posts, `fluency` only when measured):
//!
//! ```text
//! score = exp(Σ wᵢ·ln max(vᵢ, 0.001) / Σ wᵢ),   times 0.3 for each blocking part that fails
//! ```
//!
//! a weighted geometric mean: one part near 0 (eight hashtags, a copy of
//! last week's post) pulls the score down however good the rest is, as it
//! would sink the post (a part at 0 with weight 2 of 18 takes the score
//! to about half); the floor keeps one part from zeroing it. Blocking
//! parts are what would stop the post at the posting gate: a length over
//! the platform's limit (or an empty text), a banned term, an affiliate
//! post without a disclosure. Multiplying keeps the order among blocked
//! candidates. The parts:
//!
//! | part | value |
//! | --- | --- |
//! | `length` | 0 over the limit; 0.4 + 3·r below a fifth of it (r = length / limit); else 1 |
//! | `fluency` | mean token log-likelihood ℓ (nats) as (ℓ + 8) / 4, clamped: -8 → 0, -4 → 1 |
//! | `readability` | the smaller of Flesch reading ease / 60 and words / 6 (hashtags, mentions, URLs and emoji are not words), clamped; times 0.2 when over 60% of 12+ letters are capitals |
//! | `hashtags` | 1 or 2: 1; none or 3: 0.8; more: 0.8 - 0.2 per extra |
//! | `mentions` | up to 2: 1; then -0.25 each |
//! | `emoji` | up to 3: 1; then -0.15 each |
//! | `link` | the context's link present: 1; another link: 0.5; none: 0 |
//! | `disclosure` | `#ad`, `#affiliate`, `#sponsored` or "paid partnership": 1; else 0 |
//! | `banned` | no banned term (case-insensitive): 1; else 0 |
//! | `duplicate` | closest recent post's trigram similarity s: 1 up to 0.4, 0 from 0.8, linear between |
//! | `repetition` | share of distinct words d (of 3+ letters): (d - 0.4) / 0.4, clamped; 1 under 5 words |
//!
//! Everything is a pure function of the text, the context, the weights and
//! the fluency figure: the same inputs always give the same score.

use post_rules::{extract, Platform};
use serde::{Deserialize, Serialize};

use crate::similarity::closest;

/// Factor on the score for each failed blocking part.
pub const BLOCKED_FACTOR: f64 = 0.3;
/// The least a part counts for in the geometric mean.
pub const PART_FLOOR: f64 = 0.001;
/// Mean token log-likelihood that scores 0 and 1 on fluency.
pub const FLUENCY_RANGE: (f64, f64) = (-8.0, -4.0);

/// What the candidates are for.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Whose rules (default X).
    #[serde(default)]
    pub platform: Option<Platform>,
    /// The account's limit (default the platform's).
    pub max_length: Option<usize>,
    /// The product or topic (informational).
    pub product: Option<String>,
    /// The link the post should carry.
    pub link: Option<String>,
    /// Who it is for (informational).
    pub audience: Option<String>,
    /// Affiliate content: a disclosure is required.
    #[serde(default)]
    pub affiliate: bool,
    /// Terms that must not appear.
    #[serde(default)]
    pub banned_terms: Vec<String>,
    /// The account's recent posts, to avoid repeating.
    #[serde(default)]
    pub recent_posts: Vec<String>,
}

/// How much each part counts (`[scoring]` in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    pub length: f64,
    pub fluency: f64,
    pub readability: f64,
    pub hashtags: f64,
    pub mentions: f64,
    pub emoji: f64,
    pub link: f64,
    pub disclosure: f64,
    pub banned: f64,
    pub duplicate: f64,
    pub repetition: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            length: 2.0,
            fluency: 3.0,
            readability: 2.0,
            hashtags: 2.0,
            mentions: 1.0,
            emoji: 2.0,
            link: 1.0,
            disclosure: 1.0,
            banned: 1.0,
            duplicate: 2.0,
            repetition: 2.0,
        }
    }
}

impl Weights {
    /// Every weight finite and not negative, and some positive.
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            self.length, self.fluency, self.readability, self.hashtags, self.mentions, self.emoji, self.link, self.disclosure,
            self.banned, self.duplicate, self.repetition,
        ];
        if all.iter().any(|w| !w.is_finite() || *w < 0.0) || all.iter().all(|w| *w == 0.0) {
            return Err("scoring weights must be finite, not negative, and not all 0".into());
        }
        Ok(())
    }
}

/// One part of a score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Part {
    /// Its name (the weight's).
    pub name: &'static str,
    /// In [0, 1].
    pub value: f64,
    /// What was measured: the length, the mean log-likelihood, the reading
    /// ease, the count, the similarity, the share of distinct words.
    pub measure: f64,
    /// Its weight.
    pub weight: f64,
    /// Whether failing it blocks the post.
    pub blocking: bool,
    /// Why, in words.
    pub reason: String,
}

/// A candidate's score and its parts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Score {
    /// In [0, 1].
    pub score: f64,
    /// The parts that applied.
    pub parts: Vec<Part>,
}

fn clamp01(v: f64) -> f64 {
    v.clamp(0.0, 1.0)
}

/// Score `text` for `ctx`; `fluency`: its mean token log-likelihood, when measured.
pub fn score(text: &str, fluency: Option<f64>, ctx: &Context, w: &Weights) -> Score {
    let platform = ctx.platform.unwrap_or(Platform::X);
    let entities = extract::entities(text);
    let mut parts = Vec::with_capacity(11);
    let mut part = |name, weight, blocking, value: f64, measure: f64, reason: String| {
        parts.push(Part { name, value: clamp01(value), measure, weight, blocking, reason });
    };

    let check = platform.check(text, ctx.max_length);
    let r = check.length as f64 / check.limit.max(1) as f64;
    let (v, why) = if !check.valid {
        (0.0, format!("{} of {}: not a valid {platform} post", check.length, check.limit))
    } else if r < 0.2 {
        (0.4 + 3.0 * r, format!("{} of {}: short", check.length, check.limit))
    } else {
        (1.0, format!("{} of {}", check.length, check.limit))
    };
    part("length", w.length, true, v, check.length as f64, why);

    if let Some(lp) = fluency {
        let (lo, hi) = FLUENCY_RANGE;
        part("fluency", w.fluency, false, (lp - lo) / (hi - lo), lp, format!("mean token log-likelihood {lp:.2}"));
    }

    let (v, fre, why) = readability(text);
    part("readability", w.readability, false, v, fre, why);

    let n = entities.hashtags.len();
    let v = match n {
        1 | 2 => 1.0,
        0 | 3 => 0.8,
        _ => 0.8 - 0.2 * (n - 3) as f64,
    };
    part("hashtags", w.hashtags, false, v, n as f64, format!("{n} hashtags"));

    let n = entities.mentions.len();
    part("mentions", w.mentions, false, 1.0 - 0.25 * n.saturating_sub(2) as f64, n as f64, format!("{n} mentions"));

    let n = emoji_count(text);
    part("emoji", w.emoji, false, 1.0 - 0.15 * n.saturating_sub(3) as f64, n as f64, format!("{n} emoji"));

    if let Some(link) = &ctx.link {
        let (v, why) = if text.contains(link.as_str()) {
            (1.0, "carries the link".to_owned())
        } else if entities.urls.is_empty() {
            (0.0, "the link is missing".to_owned())
        } else {
            (0.5, "links elsewhere, not to the link".to_owned())
        };
        part("link", w.link, false, v, v, why);
    }

    let lower = text.to_lowercase();
    if ctx.affiliate {
        let disclosed = ["#ad", "#affiliate", "#sponsored", "paid partnership"].iter().find(|d| lower.contains(*d));
        let (v, why) = match disclosed {
            Some(d) => (1.0, format!("disclosed with `{d}`")),
            None => (0.0, "affiliate content without a disclosure".to_owned()),
        };
        part("disclosure", w.disclosure, true, v, v, why);
    }

    if !ctx.banned_terms.is_empty() {
        let found: Vec<&str> = ctx.banned_terms.iter().filter(|t| lower.contains(&t.to_lowercase())).map(String::as_str).collect();
        let (v, why) = if found.is_empty() { (1.0, "no banned term".to_owned()) } else { (0.0, format!("banned: {}", found.join(", "))) };
        part("banned", w.banned, true, v, found.len() as f64, why);
    }

    if let Some((i, s)) = closest(text, ctx.recent_posts.iter().map(String::as_str)) {
        part("duplicate", w.duplicate, false, (0.8 - s) / 0.4, s, format!("recent post {i} is {s:.2} similar"));
    }

    let (v, d, why) = repetition(text);
    part("repetition", w.repetition, false, v, d, why);

    let total: f64 = parts.iter().map(|p| p.weight).sum();
    let log_mean = parts.iter().map(|p| p.weight * p.value.max(PART_FLOOR).ln()).sum::<f64>() / total.max(f64::MIN_POSITIVE);
    let mean = if total > 0.0 { log_mean.exp() } else { 0.0 };
    let blocked = parts.iter().filter(|p| p.blocking && p.value == 0.0).count();
    Score { score: clamp01(mean * BLOCKED_FACTOR.powi(blocked as i32)), parts }
}

/// Words of letters and digits, lowercased.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Vowel groups, at least one: the usual estimate of English syllables.
fn syllables(word: &str) -> usize {
    let mut n = 0;
    let mut prev = false;
    for c in word.chars() {
        let v = "aeiouy".contains(c);
        if v && !prev {
            n += 1;
        }
        prev = v;
    }
    if word.ends_with('e') && n > 1 {
        n -= 1;
    }
    n.max(1)
}

/// The text without its hashtags, mentions and URLs: what is read.
fn prose(text: &str) -> String {
    let entity = |t: &&str| t.starts_with(['#', '@', '$']) || t.contains("://") || t.starts_with("www.");
    text.split_whitespace().filter(|t| !entity(t)).collect::<Vec<_>>().join(" ")
}

/// (value, Flesch reading ease, reason).
fn readability(text: &str) -> (f64, f64, String) {
    let text = prose(text);
    let ws: Vec<String> = words(&text).into_iter().filter(|w| w.chars().any(char::is_alphabetic)).collect();
    if ws.is_empty() {
        return (0.0, 0.0, "no words, only tags, links or emoji".into());
    }
    let sentences = text.split(['.', '!', '?']).filter(|s| s.chars().any(char::is_alphanumeric)).count().max(1);
    let syl: usize = ws.iter().map(|w| syllables(w)).sum();
    let fre = 206.835 - 1.015 * (ws.len() as f64 / sentences as f64) - 84.6 * (syl as f64 / ws.len() as f64);
    let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
    let caps = letters.iter().filter(|c| c.is_uppercase()).count();
    // A post needs about six words of text to read as one.
    let v = clamp01(fre / 60.0).min(ws.len() as f64 / 6.0);
    if letters.len() >= 12 && caps as f64 > 0.6 * letters.len() as f64 {
        return (0.2 * v, fre, format!("Flesch reading ease {fre:.0} over {} words, mostly capitals", ws.len()));
    }
    (v, fre, format!("Flesch reading ease {fre:.0} over {} words", ws.len()))
}

/// (value, share of distinct words, reason).
fn repetition(text: &str) -> (f64, f64, String) {
    let ws: Vec<String> = words(text).into_iter().filter(|w| w.chars().count() >= 3).collect();
    if ws.len() < 5 {
        return (1.0, 1.0, format!("{} words", ws.len()));
    }
    let distinct = ws.iter().collect::<std::collections::HashSet<_>>().len();
    let d = distinct as f64 / ws.len() as f64;
    ((d - 0.4) / 0.4, d, format!("{distinct} distinct of {} words", ws.len()))
}

/// Pictographic characters (emoji), not counting joiners and modifiers.
fn emoji_count(text: &str) -> usize {
    text.chars()
        .filter(|&c| matches!(c as u32, 0x1F300..=0x1FAFF | 0x2600..=0x27BF | 0x1F000..=0x1F2FF) && !matches!(c as u32, 0x1F3FB..=0x1F3FF))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            link: Some("https://shop.example.com/grinder".into()),
            affiliate: true,
            banned_terms: vec!["guaranteed".into()],
            recent_posts: vec!["Fresh beans deserve a fresh grind. Our burr grinder is back in stock! #coffee".into()],
            ..Context::default()
        }
    }

    #[test]
    fn a_good_post_beats_each_kind_of_bad_one() {
        let w = Weights::default();
        let good = "Fresh coffee starts with an even grind. Our new burr grinder keeps every bean consistent. #coffee #ad https://shop.example.com/grinder";
        let g = score(good, None, &ctx(), &w);
        assert!(g.score > 0.85, "{g:?}");
        let bad = [
            "GUARANTEED best grinder!!! buy buy buy #ad https://shop.example.com/grinder",
            "Fresh coffee starts with an even grind. Our new burr grinder keeps every bean consistent. #coffee https://shop.example.com/grinder",
            "Fresh beans deserve a fresh grind. Our burr grinder is back in stock! #coffee #ad https://shop.example.com/grinder",
            "grinder grinder grinder coffee coffee coffee grinder coffee grinder #ad https://shop.example.com/grinder",
            "#coffee #grinder #beans #morning #barista #espresso #latte #ad https://shop.example.com/grinder",
        ];
        for b in bad {
            let s = score(b, None, &ctx(), &w);
            assert!(s.score < g.score - 0.1, "{b}: {s:?}");
        }
    }

    #[test]
    fn blocking_failures_cut_the_score_and_name_themselves() {
        let s = score(&"x".repeat(300), None, &Context::default(), &Weights::default());
        let length = s.parts.iter().find(|p| p.name == "length").expect("length");
        assert_eq!(length.value, 0.0);
        assert!(length.reason.contains("300 of 280"), "{}", length.reason);
        assert!(s.score <= BLOCKED_FACTOR, "{s:?}");
        assert!(Weights { fluency: -1.0, ..Weights::default() }.validate().is_err());
    }
}
