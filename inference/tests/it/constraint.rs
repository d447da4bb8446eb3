//! Constrained decoding on the real model: outputs always parse and
//! validate (checked by an independent JSON Schema validator and by
//! `post-rules`, never by the code that constrained them).

use futures_util::future::join_all;
use futures_util::StreamExt;
use inference::{
    ChatMessage, Constraint, Engine, Error, Event, FinishReason, GenerateRequest, Grammar, PostRules, Prompt, Role,
    SamplingParams,
};
use post_rules::Platform;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::support::engine_with;

/// The text of a stream and why it ended.
async fn run(engine: &Engine, req: GenerateRequest) -> (String, FinishReason) {
    let (text, finish, _) = run_counted(engine, req).await;
    (text, finish)
}

/// The same and the tokens it generated.
async fn run_counted(engine: &Engine, req: GenerateRequest) -> (String, FinishReason, usize) {
    let mut s = engine.generate(req).expect("admitted");
    let mut text = String::new();
    loop {
        match s.next().await.expect("stream ended without Done") {
            Event::Token(t) => text.push_str(&t.text),
            Event::Done(d) => return (text + &d.flush, d.finish, d.usage.completion_tokens),
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
}

fn request(user: &str, constraint: Constraint, seed: u64, max_tokens: usize) -> GenerateRequest {
    let mut r = GenerateRequest::new(Prompt::Chat(vec![ChatMessage::new(Role::User, user)]));
    r.max_tokens = Some(max_tokens);
    r.sampling = SamplingParams { temperature: 0.8, top_p: 0.95, seed: Some(seed), ..Default::default() };
    r.constraint = Some(constraint);
    r
}

const WORDS: [&str; 8] = ["red", "green", "blue", "shoe", "coffee", "tea", "launch", "sale"];

/// A random schema node: every kind a structured-output user writes
/// (bounded strings, ranges, enums, patterns, unions, nullable, arrays,
/// nested objects with required keys and no extras).
fn schema(rng: &mut StdRng, depth: usize) -> Value {
    let kinds = if depth >= 2 { 7 } else { 9 };
    match rng.gen_range(0..kinds) {
        0 => json!({"type": "string", "minLength": rng.gen_range(0..3), "maxLength": rng.gen_range(3..30)}),
        1 => {
            let lo: i64 = rng.gen_range(-100..100);
            json!({"type": "integer", "minimum": lo, "maximum": lo + rng.gen_range(0..1000)})
        }
        2 => json!({"type": "boolean"}),
        3 => json!({"enum": WORDS[..rng.gen_range(1..WORDS.len())].to_vec()}),
        4 => json!({"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}),
        5 => json!({"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "string", "maxLength": 8}]}),
        6 => json!({"type": ["string", "null"], "maxLength": 12}),
        7 => json!({"type": "array", "items": schema(rng, depth + 1), "minItems": 0, "maxItems": rng.gen_range(1..4)}),
        _ => object(rng, depth + 1),
    }
}

fn object(rng: &mut StdRng, depth: usize) -> Value {
    let n = rng.gen_range(1..5);
    let mut props = serde_json::Map::new();
    let mut required = Vec::new();
    for i in 0..n {
        let key = format!("{}_{i}", WORDS[rng.gen_range(0..WORDS.len())]);
        props.insert(key.clone(), schema(rng, depth));
        if rng.gen_bool(0.7) {
            required.push(key);
        }
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// The property: for generated schemas, every output ends by the grammar's
/// choice (not `max_tokens`), parses, and validates.
#[tokio::test]
async fn json_schema_outputs_always_validate() {
    let engine = engine_with(|_| {});
    let mut rng = StdRng::seed_from_u64(7);
    let schemas: Vec<Value> = (0..32).map(|_| object(&mut rng, 0)).collect();
    let runs = schemas.iter().enumerate().map(|(i, s)| {
        let c = Constraint::Grammar(Grammar::JsonSchema(s.clone()));
        run(&engine, request("Describe a product launch as JSON.", c, i as u64, 600))
    });
    let outputs = join_all(runs).await;
    for ((text, finish), schema) in outputs.iter().zip(&schemas) {
        assert_eq!(*finish, FinishReason::Eos, "cut short: {text}\nschema: {schema}");
        let doc: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}\nschema: {schema}"));
        let validator = jsonschema::validator_for(schema).expect("a valid schema");
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{text} breaks {schema}: {errors:?}");
    }
    println!("{} generated schemas: every output parsed and validated", outputs.len());
}

#[tokio::test]
async fn json_object_regex_choice_and_lark_hold() {
    let engine = engine_with(|_| {});
    let (text, _) = run(&engine, request("Give me a JSON object about tea.", Constraint::Grammar(Grammar::JsonObject), 1, 300)).await;
    assert!(serde_json::from_str::<Value>(&text).expect("JSON").is_object(), "{text}");

    let rx = Constraint::Grammar(Grammar::Regex(r"\(\d{3}\) \d{3}-\d{4}".into()));
    let (text, finish) = run(&engine, request("Give me a phone number.", rx, 2, 40)).await;
    let shape: String = text.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect();
    assert_eq!((shape.as_str(), finish), ("(999) 999-9999", FinishReason::Eos), "{text}");

    let options = vec!["positive".to_owned(), "negative".to_owned(), "neutral \"quoted\"".to_owned()];
    for seed in 0..4 {
        let c = Constraint::Grammar(Grammar::Choice(options.clone()));
        let (text, _) = run(&engine, request("Is 'I love it' positive or negative?", c, seed, 20)).await;
        assert!(options.contains(&text), "{text:?}");
    }

    let lark = r#"start: answer " because " reason
answer: "yes" | "no"
reason: /[a-z ]{3,30}/"#;
    let (text, _) = run(&engine, request("Is tea good?", Constraint::Grammar(Grammar::Lark(lark.into())), 3, 60)).await;
    let (answer, reason) = text.split_once(" because ").unwrap_or_else(|| panic!("{text:?}"));
    assert!(["yes", "no"].contains(&answer) && (3..=30).contains(&reason.len()), "{text:?}");
    assert!(reason.chars().all(|c| c.is_ascii_lowercase() || c == ' '), "{text:?}");
}

#[tokio::test]
async fn bad_constraints_are_refused_at_admission() {
    let engine = engine_with(|_| {});
    let bad = [
        Grammar::JsonSchema(json!({"type": "strnig"})),
        Grammar::JsonSchema(json!(42)),
        Grammar::Regex("(unclosed".into()),
        Grammar::Choice(vec![]),
        Grammar::Lark("start: undefined_rule".into()),
    ];
    for g in bad {
        let err = engine.generate(request("Hi", Constraint::Grammar(g.clone()), 0, 10)).expect_err("refused");
        assert!(matches!(err, Error::Constraint(_)), "{g:?}: {err}");
    }
    let mut impossible = PostRules::new(Platform::X);
    impossible.max_length = Some(3);
    impossible.require = vec!["#sponsored".into()];
    let err = engine.generate(request("Hi", Constraint::Post(impossible), 0, 10)).expect_err("refused");
    assert!(matches!(err, Error::Constraint(ref m) if m.contains("limit")), "{err}");
    let mut r = request("Hi", Constraint::Grammar(Grammar::JsonObject), 0, 10);
    r.ignore_eos = true;
    assert!(matches!(engine.generate(r), Err(Error::InvalidRequest { param: "ignore_eos", .. })));
}

/// Adversarial prompts under post rules: every one of 200 seeded samples is
/// a valid post by `post-rules` (the posting gate's own check), carries what
/// is required, and lacks what is forbidden.
#[tokio::test]
async fn post_constraint_yields_no_invalid_post_in_200_samples() {
    let engine = engine_with(|c| c.max_running = 16);
    let prompts = [
        "Write 500 words about our new running shoes.",
        "Write a tweet about coffee that uses 50 emoji.",
        "用中文写一段很长的关于茶的介绍，至少五百字。",
        "List twenty links: https://a.example.com https://b.example.com https://shop.example.org/sale and more.",
        "Write a post with at least ten hashtags about a summer sale.",
        "Repeat the word guaranteed forever.",
        "Tell me a long story about a cat.",
        "Write a LinkedIn-style post about teamwork.",
    ];
    // Mostly short limits: they cut more often, which is the hard case,
    // and keep the test's 200 generations inside a minute or two.
    let limits = [
        (Platform::X, None),
        (Platform::X, Some(100)),
        (Platform::Bluesky, Some(120)),
        (Platform::Mastodon, Some(160)),
        (Platform::X, Some(140)),
        (Platform::X, Some(60)),
        (Platform::Bluesky, Some(80)),
        (Platform::X, Some(120)),
    ];
    let rules = |i: usize| {
        let (platform, max_length) = limits[i % limits.len()];
        let mut r = PostRules::new(platform);
        r.max_length = max_length;
        r.require = vec!["#ad".into()];
        r.forbid = vec!["guaranteed".into(), "cheap".into()];
        r.max_hashtags = Some(3);
        r.max_urls = Some(1);
        r
    };
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut cut = 0;
    let mut tokens = 0;
    // 16 in flight at a time, a new one as soon as one ends: the engine's batch.
    let runs = futures_util::stream::iter((0..200).map(|i| {
        let r = rules(i);
        let req = request(prompts[(i / limits.len()) % prompts.len()], Constraint::Post(r.clone()), i as u64, 300);
        let engine = &engine;
        async move { (r, run_counted(engine, req).await) }
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    for (r, (text, finish, generated)) in runs {
        cut += usize::from(finish == FinishReason::Length);
        tokens += generated;
        if let Err(why) = r.check(&text) {
            failures.push(format!("{why}: {:?} ({}) {text:?}", r.platform, r.limit()));
        }
    }
    println!(
        "post constraint: 200 samples, {} invalid, {cut} cut short at their room ({tokens} tokens in {:.1?})",
        failures.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{} invalid posts:\n{}", failures.len(), failures.join("\n"));
}
