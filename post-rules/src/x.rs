//! X's weighted length: twitter-text's v3 configuration (what X applies to a
//! post), over the `twitter-text` crate.

use std::ops::Range;

use twitter_text_config::Configuration;

/// X's default limit, weighted characters.
pub const X_MAX_WEIGHTED_LENGTH: usize = 280;

/// The weight every URL counts for, whatever its length (t.co's).
pub const X_URL_WEIGHT: usize = 23;

/// How X counts a post: the v3 configuration with this account's limit.
#[derive(Debug, Clone)]
pub struct XRules {
    config: Configuration,
}

impl Default for XRules {
    fn default() -> Self {
        Self::new(X_MAX_WEIGHTED_LENGTH)
    }
}

/// A post as X counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XCount {
    /// Weighted characters (most scripts' code points 2, Latin and
    /// punctuation 1, an emoji sequence 2, a URL 23).
    pub weighted_length: usize,
    /// Not empty, within the limit, no invalid characters.
    pub valid: bool,
    /// `weighted_length` per thousand of the limit (X's meter).
    pub permillage: usize,
    /// The text's span in UTF-16 code units, end inclusive as twitter-text reports it.
    pub display_range: Range<usize>,
    /// The span that fits the limit, likewise.
    pub valid_range: Range<usize>,
}

impl XRules {
    /// v3 with `max_weighted_length` (280; premium accounts post longer).
    pub fn new(max_weighted_length: usize) -> Self {
        let mut config = twitter_text_config::config_v3().clone();
        config.max_weighted_tweet_length = i32::try_from(max_weighted_length).unwrap_or(i32::MAX);
        Self { config }
    }

    /// Counting by a given twitter-text configuration (v2 has no emoji discount).
    pub fn with_config(config: Configuration) -> Self {
        Self { config }
    }

    /// The limit, weighted characters.
    pub fn max_weighted_length(&self) -> usize {
        usize::try_from(self.config.max_weighted_tweet_length).unwrap_or(0)
    }

    /// Count `text` as X does.
    pub fn count(&self, text: &str) -> XCount {
        let r = twitter_text::parse(text, &self.config, true);
        let range = |start: i32, end: i32| to_usize(start)..to_usize(end);
        XCount {
            weighted_length: to_usize(r.weighted_length),
            valid: r.is_valid,
            permillage: to_usize(r.permillage),
            display_range: range(r.display_text_range.start(), r.display_text_range.end()),
            valid_range: range(r.valid_text_range.start(), r.valid_text_range.end()),
        }
    }
}

fn to_usize(v: i32) -> usize {
    usize::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_weigh_23_and_cjk_2() {
        let rules = XRules::default();
        assert_eq!(rules.count("Hi https://example.com/a/very/long/path/that/is/longer/than/23").weighted_length, 3 + X_URL_WEIGHT);
        assert_eq!(rules.count("のの").weighted_length, 4);
        assert!(!rules.count("").valid);
        let premium = XRules::new(25_000);
        let long = "a".repeat(1000);
        assert!(!rules.count(&long).valid && premium.count(&long).valid);
    }
}
