//! Near-duplicates by character n-grams: two posts that differ by a word,
//! an emoji or their hashtags still share most of their trigrams.

use std::collections::HashSet;

/// The n-gram size: trigrams of the normalised text.
const N: usize = 3;

/// Lowercased letters and digits, runs of anything else as one space: what
/// a reader compares, not punctuation or emoji.
fn normalise(text: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(text.len());
    let mut space = true;
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.last() == Some(&' ') {
        out.pop();
    }
    out
}

fn grams(text: &str) -> HashSet<Vec<char>> {
    let chars = normalise(text);
    if chars.len() < N {
        return std::iter::once(chars).filter(|c| !c.is_empty()).collect();
    }
    chars.windows(N).map(<[char]>::to_vec).collect()
}

/// Jaccard similarity of the two texts' character trigrams, in [0, 1].
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (grams(a), grams(b));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let shared = a.intersection(&b).count();
    shared as f64 / (a.len() + b.len() - shared) as f64
}

/// The most similar of `others` to `text`: (index, similarity).
pub fn closest<'a>(text: &str, others: impl IntoIterator<Item = &'a str>) -> Option<(usize, f64)> {
    others.into_iter().map(|o| similarity(text, o)).enumerate().max_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewordings_are_close_and_strangers_are_not() {
        let a = "Our new grinder makes cafe-quality coffee at home. #coffee";
        let b = "Our new grinder makes café quality coffee at home! ☕ #coffee #ad";
        let c = "Trail shoes with a grippy sole for muddy mornings.";
        assert!(similarity(a, b) > 0.6, "{}", similarity(a, b));
        assert!(similarity(a, c) < 0.15, "{}", similarity(a, c));
        assert_eq!(similarity(a, a), 1.0);
        assert_eq!(closest(a, [c, b]).map(|(i, _)| i), Some(1));
    }
}
