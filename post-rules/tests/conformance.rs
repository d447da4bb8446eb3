//! twitter-text's official conformance files (`tests/fixtures/twitter-text`,
//! commit 30e2430, Apache 2.0) against post-rules: every case of the
//! weighted-length sections of `validate.yml` and of the `urls`, `hashtags`,
//! `mentions` and `cashtags` sections of `extract.yml`. Each test prints how
//! many cases passed and fails on any that did not.

#![allow(clippy::panic)]

use post_rules::extract::entities;
use post_rules::XRules;
use serde_yaml_ng::Value;

const VALIDATE: &str = include_str!("../../tests/fixtures/twitter-text/validate.yml");
const EXTRACT: &str = include_str!("../../tests/fixtures/twitter-text/extract.yml");

fn section<'a>(doc: &'a Value, name: &str) -> &'a [Value] {
    doc["tests"][name].as_sequence().map(Vec::as_slice).unwrap_or_else(|| panic!("no section {name}"))
}

fn text(case: &Value) -> &str {
    case["text"].as_str().unwrap_or_else(|| panic!("a case without text: {case:?}"))
}

/// Report a section's score; the failures are returned for the final assert.
fn report(name: &str, total: usize, failures: Vec<String>) -> Vec<String> {
    println!("{name}: {}/{total} cases pass", total - failures.len());
    failures.into_iter().map(|f| format!("{name}: {f}")).collect()
}

#[test]
fn weighted_length_validity_and_ranges_match_every_case() {
    let doc: Value = serde_yaml_ng::from_str(VALIDATE).expect("validate.yml");
    // The sections name the configuration they were written for: v2 (no
    // emoji discount) for the first, v3 (X's) for the others.
    let sections = [
        ("WeightedTweetsCounterTest", twitter_text_config::config_v2()),
        ("WeightedTweetsWithDiscountedEmojiCounterTest", twitter_text_config::config_v3()),
        ("UnicodeDirectionalMarkerCounterTest", twitter_text_config::config_v3()),
    ];
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, config) in sections {
        let rules = XRules::with_config(config.clone());
        let cases = section(&doc, name);
        total += cases.len();
        let mut failed = Vec::new();
        for case in cases {
            let e = &case["expected"];
            let n = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k} in {case:?}")) as usize;
            let got = rules.count(text(case));
            let want = (n("weightedLength"), e["valid"].as_bool(), n("permillage"), n("displayRangeStart")..n("displayRangeEnd"), n("validRangeStart")..n("validRangeEnd"));
            let have = (got.weighted_length, Some(got.valid), got.permillage, got.display_range, got.valid_range);
            if have != want {
                failed.push(format!("{:?}: {have:?}, expected {want:?}", case["description"].as_str().unwrap_or("?")));
            }
        }
        failures.extend(report(name, cases.len(), failed));
    }
    println!("weighted length: {} of {total} cases pass", total - failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn urls_hashtags_mentions_and_cashtags_are_extracted_as_twitter_text_does() {
    let doc: Value = serde_yaml_ng::from_str(EXTRACT).expect("extract.yml");
    let mut failures = Vec::new();
    for name in ["urls", "hashtags", "mentions", "cashtags"] {
        let cases = section(&doc, name);
        let mut failed = Vec::new();
        for case in cases {
            let want: Vec<&str> = case["expected"].as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
            let e = entities(text(case));
            let got = match name {
                "urls" => e.urls,
                "hashtags" => e.hashtags,
                "mentions" => e.mentions,
                _ => e.cashtags,
            };
            if got != want {
                failed.push(format!("{:?}: {got:?}, expected {want:?}", case["description"].as_str().unwrap_or("?")));
            }
        }
        failures.extend(report(name, cases.len(), failed));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
