//! Words as people say them and Whisper writes them: an utterance lowered
//! into tokens (punctuation dropped, `p.m.` as `pm`, `6pm` as `6 pm`,
//! `twenty-five` as two words), and numbers read from digits or words.

/// A token and where it is in the text it came from (bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Lower case, normalised.
    pub text: String,
    /// Its bytes in the original text.
    pub span: std::ops::Range<usize>,
}

/// The utterance as lower-case tokens.
pub fn tokens(text: &str) -> Vec<String> {
    spans(text).into_iter().map(|t| t.text).collect()
}

/// The utterance as lower-case tokens with their places. Kept inside a
/// token: `:`, `.` and `,` between digits (`6:30`, Whisper's `8.30`,
/// `1,000`), `.` between letters (`p.m`, `example.com`), `_` (ids such as
/// `post_01h...`), `'` before a letter (`o'clock`, `what's`).
pub fn spans(text: &str) -> Vec<Token> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut raw: Vec<Token> = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (k, &(i, c)) in chars.iter().enumerate() {
        let c = if c == '\u{2019}' || c == '\u{2018}' { '\'' } else { c };
        let prev = cur.chars().last();
        let next = chars.get(k + 1).map(|x| x.1);
        let keep = c.is_alphanumeric()
            || c == '_'
            || (c == '\'' && prev.is_some() && next.is_some_and(char::is_alphabetic))
            || (matches!(c, ':' | '.' | ',') && prev.is_some_and(|p| p.is_ascii_digit()) && next.is_some_and(|n| n.is_ascii_digit()))
            || (c == '.' && prev.is_some_and(char::is_alphabetic) && next.is_some_and(char::is_alphabetic));
        if keep {
            if cur.is_empty() {
                start = i;
            }
            if c != ',' {
                cur.extend(c.to_lowercase());
            }
        } else if !cur.is_empty() {
            raw.push(Token { text: std::mem::take(&mut cur), span: start..i });
        }
    }
    if !cur.is_empty() {
        raw.push(Token { text: cur, span: start..text.len() });
    }
    let mut out = Vec::with_capacity(raw.len());
    for Token { text: mut t, span } in raw {
        // `6pm`, `10a.m`, `6:30pm`: the number and the half of the day apart.
        let meridiem = ["p.m", "pm", "a.m", "am"].into_iter().find_map(|m| {
            let n = t.strip_suffix(m)?;
            (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '.')).then_some((n.len(), m))
        });
        if let Some((n, m)) = meridiem {
            out.push(Token { text: t[..n].to_owned(), span: span.start..span.start + n });
            out.push(Token { text: m.replace('.', ""), span: span.start + n..span.end });
            continue;
        }
        if t == "p.m" || t == "a.m" {
            t = t.replace('.', "");
        }
        // Possessives go ("next week's posts", "Friday's post"); contractions stay.
        if t.ends_with("'s") && !CONTRACTIONS.contains(&t.as_str()) {
            t.truncate(t.len() - 2);
        }
        out.push(Token { text: t, span });
    }
    out
}

/// Words whose `'s` is "is", not a possessive.
const CONTRACTIONS: [&str; 8] = ["what's", "that's", "it's", "let's", "there's", "here's", "who's", "how's"];

fn unit(w: &str) -> Option<u32> {
    Some(match w {
        "zero" | "oh" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        _ => return None,
    })
}

fn tens(w: &str) -> Option<u32> {
    Some(match w {
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

/// A whole number at `t[0..]`: digits (`12`), words up to 999 (`two`,
/// `twenty five`, `a hundred`), `a`/`an` as one, `a couple (of)` as two,
/// `a few` as three. With the tokens it used.
pub fn number(t: &[String]) -> Option<(u32, usize)> {
    let w = |i: usize| t.get(i).map(String::as_str);
    let first = w(0)?;
    if let Ok(n) = first.parse::<u32>() {
        return Some((n, 1));
    }
    match (first, w(1), w(2)) {
        ("a", Some("couple"), Some("of")) => return Some((2, 3)),
        ("a", Some("couple"), _) => return Some((2, 2)),
        ("a", Some("few"), _) => return Some((3, 2)),
        ("a" | "an", Some("hundred"), _) => return Some((100, 2)),
        ("a" | "an", _, _) => return Some((1, 1)),
        _ => {}
    }
    let (mut n, mut used) = if let Some(u) = unit(first) {
        (u, 1)
    } else if let Some(t10) = tens(first) {
        match w(1).and_then(unit).filter(|u| (1..10).contains(u)) {
            Some(u) => (t10 + u, 2),
            None => (t10, 1),
        }
    } else {
        return None;
    };
    if w(used) == Some("hundred") && n < 10 {
        n *= 100;
        used += 1;
        let rest = if w(used) == Some("and") { used + 1 } else { used };
        if let Some((r, k)) = t.get(rest..).and_then(number).filter(|&(r, _)| r < 100) {
            n += r;
            used = rest + k;
        }
    }
    Some((n, used))
}

/// An ordinal day of the month at `t[0]`: `12th`, `1st`, `third`, `twenty first`.
pub fn ordinal(t: &[String]) -> Option<(u32, usize)> {
    let first = t.first()?.as_str();
    for suffix in ["st", "nd", "rd", "th"] {
        if let Some(n) = first.strip_suffix(suffix).and_then(|d| d.parse::<u32>().ok()) {
            return Some((n, 1));
        }
    }
    let word = |w: &str| -> Option<u32> {
        Some(match w {
            "first" => 1,
            "second" => 2,
            "third" => 3,
            "fourth" => 4,
            "fifth" => 5,
            "sixth" => 6,
            "seventh" => 7,
            "eighth" => 8,
            "ninth" => 9,
            "tenth" => 10,
            "eleventh" => 11,
            "twelfth" => 12,
            "thirteenth" => 13,
            "fourteenth" => 14,
            "fifteenth" => 15,
            "sixteenth" => 16,
            "seventeenth" => 17,
            "eighteenth" => 18,
            "nineteenth" => 19,
            "twentieth" => 20,
            "thirtieth" => 30,
            _ => return None,
        })
    };
    if let Some(n) = word(first) {
        return Some((n, 1));
    }
    let t10 = match first {
        "twenty" => 20,
        "thirty" => 30,
        _ => return None,
    };
    let u = word(t.get(1)?)?;
    (u < 10).then_some((t10 + u, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        tokens(s)
    }

    #[test]
    fn tokens_as_whisper_writes_them() {
        assert_eq!(toks("Friday at 6 p.m."), ["friday", "at", "6", "pm"]);
        assert_eq!(toks("Tomorrow at 9am, please!"), ["tomorrow", "at", "9", "am", "please"]);
        assert_eq!(toks("at 6:30pm"), ["at", "6:30", "pm"]);
        assert_eq!(toks("eight-thirty"), ["eight", "thirty"]);
        assert_eq!(toks("at 8.30."), ["at", "8.30"]);
        assert_eq!(toks("What's scheduled?"), ["what's", "scheduled"]);
        assert_eq!(toks("nine o'clock"), ["nine", "o'clock"]);
        assert_eq!(toks("cancel post_01ab"), ["cancel", "post_01ab"]);
        assert_eq!(toks("1,000 clicks"), ["1000", "clicks"]);
        assert_eq!(toks("next week's posts"), ["next", "week", "posts"]);
    }

    #[test]
    fn numbers_in_digits_and_words() {
        let n = |s: &str| number(&toks(s));
        assert_eq!(n("3 posts"), Some((3, 1)));
        assert_eq!(n("three posts"), Some((3, 1)));
        assert_eq!(n("twenty five minutes"), Some((25, 2)));
        assert_eq!(n("an hour"), Some((1, 1)));
        assert_eq!(n("a couple of hours"), Some((2, 3)));
        assert_eq!(n("a few days"), Some((3, 2)));
        assert_eq!(n("two hundred and five"), Some((205, 4)));
        assert_eq!(n("posts"), None);
        assert_eq!(ordinal(&toks("12th")), Some((12, 1)));
        assert_eq!(ordinal(&toks("twenty first")), Some((21, 2)));
    }
}
