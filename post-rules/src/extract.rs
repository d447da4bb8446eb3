//! Entities in a post, found as twitter-text finds them (the TLD list
//! included): what X links, tags and notifies.

use twitter_text::extractor::Extractor;

/// The entities of one text, in order of appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entities {
    /// URLs, with or without a scheme where the TLD makes them one.
    pub urls: Vec<String>,
    /// Hashtags, without `#`.
    pub hashtags: Vec<String>,
    /// Mentioned usernames, without `@`.
    pub mentions: Vec<String>,
    /// Cashtags, without `$`.
    pub cashtags: Vec<String>,
}

/// Every entity of `text`.
pub fn entities(text: &str) -> Entities {
    let e = Extractor::new();
    Entities {
        urls: e.extract_urls(text),
        hashtags: e.extract_hashtags(text),
        mentions: e.extract_mentioned_screennames(text),
        cashtags: e.extract_cashtags(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_with_everything() {
        let e = entities("New #coffee grinder from @acme, $ACME up: https://acme.shop/grinder and acme.com");
        assert_eq!(e.hashtags, ["coffee"]);
        assert_eq!(e.mentions, ["acme"]);
        assert_eq!(e.cashtags, ["ACME"]);
        assert_eq!(e.urls, ["https://acme.shop/grinder", "acme.com"]);
    }
}
