//! Any text, however odd, is counted and extracted without a panic: the
//! engine checks every drawn token with these rules and the posting gate
//! checks whatever a user sends. Seeded random texts built from the pieces
//! that steer twitter-text's parsers (entity sigils after multi-byte
//! characters, "RT" prefixes, URL fragments, emoji sequences, CJK,
//! fullwidth sigils, combining marks, bidi marks).

#![allow(clippy::panic)]

use post_rules::{extract, Platform, XRules};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PIECES: &[&str] = &[
    "@", "＠", "#", "＃", "$", ":", "RT", "rt:", " ", "\n", "a", "Z", "9", "_", "-", ".", "/", "?", "=", "&",
    "https://", "http://", "www.", "example.com", ".co", ".jp", "t.co/x", "🌭", "👨‍👩‍👧", "🏳️‍🌈", "🇺🇸", "👍🏽", "é", "e\u{301}",
    "中", "文", "。", "今日は", "한국", "\u{200F}", "\u{202E}", "\u{FEFF}", "\u{FFFD}", "ø", "ß", "\u{1F600}", "©", "™",
    "user", "list/", "tag", "$AAPL", "ｈｔｔｐ", "\u{3000}",
];

fn texts(seed: u64, n: usize) -> impl Iterator<Item = String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(move |_| {
        let len = rng.gen_range(1..24);
        (0..len).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect()
    })
}

#[test]
fn odd_texts_never_panic() {
    let x = XRules::default();
    let mut counted = 0;
    for text in texts(11, 50_000) {
        let r = std::panic::catch_unwind(|| {
            let c = x.count(&text);
            let e = extract::entities(&text);
            let lengths: Vec<usize> = Platform::ALL.iter().map(|p| p.check(&text, None).length).collect();
            (c.weighted_length, e.urls.len(), lengths)
        });
        if r.is_err() {
            panic!("panicked on {text:?}");
        }
        counted += 1;
    }
    println!("{counted} hostile texts counted on every platform without a panic");
}
