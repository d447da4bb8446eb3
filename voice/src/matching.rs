//! Names said against names stored: "the coffee grinder campaign" finds
//! "Coffee Grinders — spring launch". Words match whole, as singular and
//! plural, as a prefix of at least four letters, or one edit apart in words
//! of five letters or more (what speech recognition gets wrong). Two
//! things that fit about as well are both returned: the caller asks.

use crate::words::tokens;

/// What a name matched.
#[derive(Debug, PartialEq)]
pub enum Match<'a, T> {
    /// Nothing fits.
    None,
    /// One thing fits best.
    One(&'a T),
    /// These fit about as well, best first.
    Several(Vec<&'a T>),
}

/// Words that do not name anything.
const STOP: &[&str] = &["the", "a", "an", "my", "our", "campaign", "campaigns", "link", "links", "for", "of", "and", "on", "to", "with"];

fn edits_at_most_one(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let (mut i, mut j, mut edits) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            i += 1;
            j += 1;
            continue;
        }
        edits += 1;
        if edits > 1 {
            return false;
        }
        match a.len().cmp(&b.len()) {
            std::cmp::Ordering::Greater => i += 1,
            std::cmp::Ordering::Less => j += 1,
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    edits + (a.len() - i) + (b.len() - j) <= 1
}

fn same_word(a: &str, b: &str) -> bool {
    let (sa, sb) = (a.trim_end_matches('s'), b.trim_end_matches('s'));
    a == b
        || sa == sb
        || (sa.len() >= 4 && sb.len() >= 4 && (sa.starts_with(sb) || sb.starts_with(sa)))
        || (a.len() >= 5 && b.len() >= 5 && edits_at_most_one(a, b))
}

fn content_words(s: &str) -> Vec<String> {
    // URLs and codes split on their punctuation too.
    tokens(&s.replace(['/', '-', '.', '_', '?', '=', '&'], " ")).into_iter().filter(|w| !STOP.contains(&w.as_str())).collect()
}

/// How well `said` names something called `name`: the share of said words
/// found in it (most of the weight) and of its words said.
fn score(said: &[String], name: &str) -> f64 {
    let name = content_words(name);
    if said.is_empty() || name.is_empty() {
        return 0.0;
    }
    let found = said.iter().filter(|w| name.iter().any(|n| same_word(w, n))).count() as f64;
    let covered = name.iter().filter(|n| said.iter().any(|w| same_word(w, n))).count() as f64;
    0.8 * found / said.len() as f64 + 0.2 * covered / name.len() as f64
}

/// The item of `items` whose names (`names(item)`) best fit `said`.
pub fn best<'a, T>(said: &str, items: &'a [T], names: impl Fn(&T) -> Vec<String>) -> Match<'a, T> {
    let said = content_words(said);
    let mut scored: Vec<(f64, &T)> = items.iter().map(|it| (names(it).iter().map(|n| score(&said, n)).fold(0.0, f64::max), it)).collect();
    // At least half the words said must be found.
    scored.retain(|(s, _)| *s >= 0.4);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    match scored.as_slice() {
        [] => Match::None,
        [(_, one)] => Match::One(one),
        [(top, first), rest @ ..] => {
            let close: Vec<&T> = rest.iter().take_while(|(s, _)| top - s < 0.1).map(|(_, t)| *t).collect();
            if close.is_empty() {
                Match::One(first)
            } else {
                Match::Several(std::iter::once(*first).chain(close).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_said_loosely() {
        let names = ["Coffee Grinders spring launch", "Running shoes", "Wireless earbuds"];
        let pick = |said: &str| match best(said, &names, |n| vec![n.to_string()]) {
            Match::One(n) => Some(*n),
            _ => None,
        };
        assert_eq!(pick("the coffee grinder campaign"), Some("Coffee Grinders spring launch"));
        assert_eq!(pick("running shoe"), Some("Running shoes"));
        assert_eq!(pick("wireless earbud"), Some("Wireless earbuds"));
        assert_eq!(pick("the garden hose"), None);
        let two = ["Summer sale", "Summer launch"];
        assert!(matches!(best("summer", &two, |n| vec![n.to_string()]), Match::Several(v) if v.len() == 2));
        assert!(matches!(best("summer sale", &two, |n| vec![n.to_string()]), Match::One(&"Summer sale")));
    }
}
