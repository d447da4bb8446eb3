//! Word error rate for speech tests: transcripts are scored by words, after a normalisation
//! that makes spelling choices free ("9:30" and "nine thirty", "$49" and "forty nine dollars").

/// The word error rate of `hypothesis` against `reference`: word-level edit distance (substitutions, insertions, deletions)
/// over the reference's word count, both [`normalize`]d first so spelling choices ("9:30" or "nine thirty") cost nothing.
/// An empty reference counts as one word, so a hypothesis of n words against it scores n rather than infinity.
pub fn wer(reference: &str, hypothesis: &str) -> f32 {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    // One row of the Levenshtein table at a time.
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut row = Vec::with_capacity(h.len() + 1);
        row.push(i + 1);
        for (j, hw) in h.iter().enumerate() {
            let substitute = prev[j] + usize::from(rw != hw);
            row.push(substitute.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[h.len()] as f32 / r.len().max(1) as f32
}

/// The words of `text` in one spelling, so a transcript is not penalised for writing what was said differently from the
/// reference: lowercase; numbers as words ("2,000" and "2000" are "two thousand", "9:30" and Whisper's "9.30" are "nine
/// thirty", "9:00" is "nine", "9:05" is "nine oh five", "20%" is "twenty percent", "$49" is "forty nine dollars", "$4.99" is
/// "four dollars ninety nine cents", "1st" is "first"; other decimals are "two point five"; numbers past the billions and ones
/// with leading zeros digit by digit); "p.m.", "6pm", "6 PM" and "a.m." alike are "p m" / "a m" ("am" and "pm" only after a
/// number, so "I am" stays); "&" is "and"; apostrophes inside words kept ("don't"), every other mark a word break ("e-mail" is
/// "e mail").
pub fn normalize(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.to_lowercase().chars().collect();
    let mut words: Vec<String> = Vec::new();
    // Whether the last word was a number, for "am"/"pm".
    let mut after_number = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || (c == '$' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            i = number(&chars, i, &mut words);
            after_number = true;
        } else if c.is_alphabetic() {
            let start = i;
            let mut word = String::new();
            while i < chars.len() {
                if chars[i].is_alphabetic() {
                    word.push(chars[i]);
                } else if is_apostrophe(chars[i]) && i > start && chars.get(i + 1).is_some_and(|c| c.is_alphabetic()) {
                    word.push('\'');
                } else {
                    break;
                }
                i += 1;
            }
            if after_number && (word == "am" || word == "pm") {
                words.push(word[..1].to_string());
                words.push("m".into());
            } else {
                after_number = is_number_word(&word);
                words.push(word);
            }
        } else {
            match c {
                '%' => words.push("percent".into()),
                '&' => words.push("and".into()),
                _ => {}
            }
            if !c.is_whitespace() {
                after_number = false;
            }
            i += 1;
        }
    }
    words
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// Whether `w` is a cardinal number word, after which "am"/"pm" means the time of day ("six pm").
fn is_number_word(w: &str) -> bool {
    ONES.contains(&w) || TENS.contains(&w) || ["hundred", "thousand", "million", "billion"].contains(&w)
}

const ONES: [&str; 20] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen",
    "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
];
const TENS: [&str; 10] = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];

/// Reads the number starting at `chars[i]` (a digit, or "$" and a digit) with what belongs to it (thousands commas, a time's
/// minutes, a decimal part, an ordinal suffix, "$"'s "dollars"), pushes its words and returns the index after it.
fn number(chars: &[char], mut i: usize, words: &mut Vec<String>) -> usize {
    let money = chars[i] == '$';
    if money {
        i += 1;
    }
    let digits_at = |from: usize| chars[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut digits: String = chars[i..i + digits_at(i)].iter().collect();
    i += digits.len();
    // "2,000": a comma followed by exactly three digits groups thousands; "1,2" is a list.
    while chars.get(i) == Some(&',') && digits_at(i + 1) == 3 {
        digits.extend(&chars[i + 1..i + 4]);
        i += 4;
    }
    let start = words.len();
    say_digits(&digits, words);
    let whole: u64 = digits.parse().unwrap_or(u64::MAX);
    let sep = chars.get(i).copied();
    let frac = if matches!(sep, Some(':' | '.')) { digits_at(i + 1) } else { 0 };
    let frac_digits: String = if frac > 0 { chars[i + 1..i + 1 + frac].iter().collect() } else { String::new() };
    let minutes = frac_digits.parse::<u64>().unwrap_or(0);
    let mut cents = None;
    if frac > 0 {
        i += 1 + frac;
        if money && frac == 2 {
            cents = Some(minutes);
        } else if frac == 2 && minutes < 60 && (sep == Some(':') || whole <= 24) {
            // A time: "9:30", and "9.30" as Whisper writes it. "9:00" is said "nine".
            if minutes > 0 && minutes < 10 {
                words.push("oh".into());
            }
            if minutes > 0 {
                say(minutes, words);
            }
        } else {
            words.push(if sep == Some(':') { "colon" } else { "point" }.into());
            for d in frac_digits.chars() {
                say_digits(&d.to_string(), words);
            }
        }
    }
    if money {
        words.push(if whole == 1 && cents.is_none() { "dollar" } else { "dollars" }.into());
        if let Some(c) = cents {
            say(c, words);
            words.push(if c == 1 { "cent" } else { "cents" }.into());
        }
        return i;
    }
    // "1st", "22nd", "3rd", "4th": the last word in its ordinal form.
    let suffix: String = chars[i..].iter().take_while(|c| c.is_alphabetic()).collect();
    if frac == 0 && ["st", "nd", "rd", "th"].contains(&suffix.as_str()) && words.len() > start {
        if let Some(last) = words.last_mut() {
            *last = ordinal(last);
        }
        i += 2;
    }
    i
}

/// A digit string as words: a number up to the billions as it is said, anything longer or with a leading zero digit by digit.
fn say_digits(digits: &str, words: &mut Vec<String>) {
    match digits.parse::<u64>() {
        Ok(n) if n < 1_000_000_000_000 && (digits.len() == 1 || !digits.starts_with('0')) => say(n, words),
        _ => words.extend(digits.chars().filter_map(|d| d.to_digit(10)).map(|d| ONES[d as usize].to_string())),
    }
}

/// `n` (below a trillion) in words, American style without "and": 150 is "one hundred fifty".
fn say(n: u64, words: &mut Vec<String>) {
    const SCALES: [(u64, &str); 3] = [(1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand")];
    if n < 20 {
        words.push(ONES[n as usize].into());
        return;
    }
    if n < 100 {
        words.push(TENS[(n / 10) as usize].into());
        if !n.is_multiple_of(10) {
            words.push(ONES[(n % 10) as usize].into());
        }
        return;
    }
    let (unit, name) = SCALES.iter().copied().find(|&(u, _)| n >= u).unwrap_or((100, "hundred"));
    say(n / unit, words);
    words.push(name.into());
    if !n.is_multiple_of(unit) {
        say(n % unit, words);
    }
}

/// The ordinal of a cardinal number word: "one" is "first", "twenty" is "twentieth", "hundred" is "hundredth".
fn ordinal(word: &str) -> String {
    match word {
        "one" => "first".into(),
        "two" => "second".into(),
        "three" => "third".into(),
        "five" => "fifth".into(),
        "eight" => "eighth".into(),
        "nine" => "ninth".into(),
        "twelve" => "twelfth".into(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;


    fn n(text: &str) -> String {
        normalize(text).join(" ")
    }

    #[test]
    fn normalize_spells_numbers_times_prices_and_percentages() {
        assert_eq!(n("9:30"), "nine thirty");
        assert_eq!(n("at 9.30 in the morning"), "at nine thirty in the morning");
        assert_eq!(n("9:00 a.m."), "nine a m");
        assert_eq!(n("12:05"), "twelve oh five");
        assert_eq!(n("6 p.m."), "six p m");
        assert_eq!(n("6pm"), "six p m");
        assert_eq!(n("6 PM"), "six p m");
        assert_eq!(n("six pm"), "six p m");
        assert_eq!(n("20%"), "twenty percent");
        assert_eq!(n("$49"), "forty nine dollars");
        assert_eq!(n("$1"), "one dollar");
        assert_eq!(n("$4.99"), "four dollars ninety nine cents");
        assert_eq!(n("$150."), "one hundred fifty dollars");
        assert_eq!(n("2,000"), "two thousand");
        assert_eq!(n("2000"), "two thousand");
        assert_eq!(n("999,999"), "nine hundred ninety nine thousand nine hundred ninety nine");
        assert_eq!(n("1,250,000"), "one million two hundred fifty thousand");
        assert_eq!(n("0"), "zero");
        assert_eq!(n("1,2"), "one two");
        assert_eq!(n("2.5"), "two point five");
        assert_eq!(n("007"), "zero zero seven");
        assert_eq!(n("1st 2nd 3rd 4th 12th 20th 21st 100th"), "first second third fourth twelfth twentieth twenty first one hundredth");
    }

    #[test]
    fn normalize_words_and_punctuation() {
        assert_eq!(n("  Don't   POST, please! "), "don't post please");
        assert_eq!(n("don\u{2019}t"), "don't");
        assert_eq!(n("'quoted' runners'"), "quoted runners");
        assert_eq!(n("e-mail"), "e mail");
        assert_eq!(n("twenty-five"), "twenty five");
        assert_eq!(n("I am here"), "i am here");
        assert_eq!(n("p.m."), "p m");
        assert_eq!(n("Tom & Jerry"), "tom and jerry");
        assert_eq!(n("#SpringSale @starling"), "springsale starling");
        assert_eq!(n(""), "");
        assert!(normalize("...").is_empty());
    }

    #[test]
    fn wer_ignores_spelling_and_counts_edits() {
        assert_eq!(wer("nine thirty", "9:30"), 0.0);
        assert_eq!(wer("Friday at 6 p.m.", "friday at six pm"), 0.0);
        assert_eq!(wer("Our espresso machine is 20% off", "our espresso machine is twenty percent off."), 0.0);
        assert_eq!(wer("the cat sat on the mat", "the cat sat on the hat"), 1.0 / 6.0);
        assert_eq!(wer("the cat sat on the mat", "the cat sat down on the mat"), 1.0 / 6.0);
        assert_eq!(wer("the cat sat on the mat", "the cat on the mat"), 1.0 / 6.0);
        assert_eq!(wer("pause the campaign", ""), 1.0);
        assert_eq!(wer("a b c d", "x y"), 1.0);
        assert_eq!(wer("a b", "a b c d e f"), 2.0);
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "hello there"), 2.0);
    }
}
