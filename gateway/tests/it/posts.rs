//! `/v1/posts/score` on the real model, validated on posts labelled by
//! written rules (`tests/fixtures/posts/labelled.json`), not on its own
//! past output.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::support::{default_server, post_json};

async fn score(url: &str, candidates: &[String], context: &Value) -> Vec<Value> {
    let res = post_json(url, &json!({"candidates": candidates, "context": context})).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.expect("json");
    v["data"].as_array().expect("data").clone()
}

/// ROC AUC: the chance a good post outscores a bad one (ties count half).
fn auc(good: &[f64], bad: &[f64]) -> f64 {
    let mut wins = 0.0;
    for g in good {
        for b in bad {
            wins += if g > b { 1.0 } else if g == b { 0.5 } else { 0.0 };
        }
    }
    wins / (good.len() * bad.len()) as f64
}

#[tokio::test]
async fn the_score_separates_posts_labelled_by_written_rules() {
    let s = default_server().await;
    let url = format!("{}/posts/score", s.v1());
    let fx = test_support::fixture("posts/labelled.json");
    let posts = fx["posts"].as_array().expect("posts");
    assert!(posts.len() >= 80);
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    let mut worst = Vec::new();
    for (name, context) in fx["contexts"].as_object().expect("contexts") {
        let mine: Vec<&Value> = posts.iter().filter(|p| p["context"] == name.as_str()).collect();
        let texts: Vec<String> = mine.iter().map(|p| p["text"].as_str().expect("text").to_owned()).collect();
        for (p, d) in mine.iter().zip(score(&url, &texts, context).await) {
            let sc = d["score"].as_f64().expect("score");
            assert!((0.0..=1.0).contains(&sc));
            if p["label"] == "good" {
                good.push(sc);
            } else {
                bad.push(sc);
            }
            let parts: Vec<String> = d["parts"].as_array().expect("parts").iter().map(|p| format!("{}={:.2}", p["name"].as_str().unwrap_or_default(), p["value"].as_f64().unwrap_or_default())).collect();
            worst.push((p["label"].as_str().unwrap_or_default().to_owned(), sc, format!("{} [{}]", p["text"].as_str().unwrap_or_default(), parts.join(" "))));
        }
    }
    let a = auc(&good, &bad);
    println!("quality score: ROC AUC {a:.3} over {} good and {} bad posts", good.len(), bad.len());
    worst.sort_by(|x, y| x.1.total_cmp(&y.1));
    for (label, sc, text) in &worst {
        println!("  {label:4} {sc:.3} {text}");
    }
    assert!(a > 0.9, "AUC {a:.3}");
}

#[tokio::test]
async fn fluency_ranks_a_sentence_above_its_shuffled_words() {
    let s = default_server().await;
    let url = format!("{}/posts/score", s.v1());
    let fx = test_support::fixture("posts/sentences.json");
    let mut rng = StdRng::seed_from_u64(15);
    let mut texts = Vec::new();
    for sentence in fx["sentences"].as_array().expect("sentences").iter().filter_map(Value::as_str) {
        let mut words: Vec<&str> = sentence.split(' ').collect();
        let mut shuffled = sentence.to_owned();
        while shuffled == sentence {
            words.shuffle(&mut rng);
            shuffled = words.join(" ");
        }
        texts.push(sentence.to_owned());
        texts.push(shuffled);
    }
    let mut data = Vec::new();
    for chunk in texts.chunks(40) {
        data.extend(score(&url, chunk, &json!({})).await);
    }
    let fluency = |d: &Value| {
        let parts = d["parts"].as_array().expect("parts");
        parts.iter().find(|p| p["name"] == "fluency").and_then(|p| p["measure"].as_f64()).expect("fluency measured")
    };
    let pairs = data.len() / 2;
    let wins = data.chunks(2).filter(|pair| fluency(&pair[0]) > fluency(&pair[1])).count();
    println!("fluency: the sentence beats its shuffle in {wins} of {pairs} pairs");
    assert!(wins as f64 > 0.95 * pairs as f64, "{wins} of {pairs}");
}

#[tokio::test]
async fn bad_score_requests_name_their_field() {
    let s = default_server().await;
    let url = format!("{}/posts/score", s.v1());
    let many: Vec<String> = (0..65).map(|i| format!("post {i}")).collect();
    for (body, param) in [
        (json!({"candidates": []}), "candidates"),
        (json!({"candidates": many}), "candidates"),
        (json!({"candidates": ["hi"], "context": {"colour": "red"}}), "context.colour"),
        (json!({"candidates": ["hi"], "context": {"platform": "myspace"}}), "context.platform"),
        (json!({"candidates": "hi"}), "candidates"),
    ] {
        let res = post_json(&url, &body).await;
        let status = res.status().as_u16();
        let err: Value = res.json().await.expect("json");
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{body}: {err}");
    }
    let res = post_json(&url, &json!({"candidates": ["hi"], "model": "nope"})).await;
    assert_eq!(res.status(), 404);
}

fn brief(extra: Value) -> Value {
    let mut b = json!({
        "product": {"name": "Burrly burr grinder", "price": "89", "currency": "USD", "features": ["40 grind settings", "quiet motor"]},
        "audience": "home baristas", "tone": "warm", "disclosure": "#ad", "link": "https://shop.example.com/grinder",
        "banned_terms": ["guaranteed"], "n": 6, "seed": 11,
    });
    for (k, v) in extra.as_object().expect("object") {
        b[k] = v.clone();
    }
    b
}

/// On the local model: every candidate obeys the rules (the engine's
/// constraint, checked here by `post-rules`), carries the disclosure and
/// the link, and the list is ranked by score with duplicates removed.
#[tokio::test]
async fn generate_ranks_constrained_candidates_on_the_local_model() {
    let s = default_server().await;
    let res = post_json(&format!("{}/posts/generate", s.v1()), &brief(json!({}))).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.expect("json");
    assert_eq!((v["provider"].as_str(), v["constraint"].as_str()), (Some("local"), Some("engine")), "{v}");
    let candidates = v["candidates"].as_array().expect("candidates");
    let removed = v["removed"].as_array().expect("removed");
    assert_eq!(candidates.len() + removed.len(), 6, "{v}");
    assert!(!candidates.is_empty());
    let mut rules = inference::PostRules::new(post_rules::Platform::X);
    rules.require = vec!["#ad".into(), "https://shop.example.com/grinder".into()];
    rules.forbid = vec!["guaranteed".into()];
    let mut last = f64::INFINITY;
    for (i, c) in candidates.iter().enumerate() {
        let text = c["text"].as_str().expect("text");
        assert!(rules.check(text).is_ok(), "{:?}: {text}", rules.check(text));
        assert_eq!(c["rank"], i + 1);
        let score = c["score"].as_f64().expect("score");
        assert!(score <= last, "{v}");
        last = score;
    }
    for r in removed {
        assert!(r["reason"].as_str().is_some_and(|m| m.starts_with("near-duplicate")), "{r}");
    }
    assert!(v["usage"]["completion_tokens"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(v["cost_usd"], 0.0);

    let bad = post_json(&format!("{}/posts/generate", s.v1()), &json!({"n": 3})).await;
    let err: Value = bad.json().await.expect("json");
    assert_eq!(err["error"]["param"], "topic", "{err}");
    let bad = post_json(&format!("{}/posts/generate", s.v1()), &brief(json!({"n": 17}))).await;
    let err: Value = bad.json().await.expect("json");
    assert_eq!(err["error"]["param"], "n", "{err}");
}

/// Through a route to a cloud model (a fake of OpenAI's API): no `x_post`
/// goes upstream, the answers are checked with the same rules, the ones
/// that break them are asked for again (bounded) and reported, and
/// identical answers are kept once.
#[tokio::test]
async fn generate_validates_and_retries_on_a_cloud_route() {
    use crate::fake_openai::FakeOpenAi;
    use crate::routing::{gateway_for, provider, route, ROUTE};
    let openai = FakeOpenAi::start("openai").await;
    let s = crate::support::start_routed(gateway_for(vec![provider("openai", &openai.base_url)], vec![route(&[("openai", "gpt-4o-mini")])])).await;
    let url = format!("{}/posts/generate", s.v1());

    // The fake answers "Hello from openai." to everything: no disclosure.
    let v: Value = post_json(&url, &brief(json!({"model": ROUTE, "n": 3}))).await.json().await.expect("json");
    assert_eq!((v["provider"].as_str(), v["constraint"].as_str()), (Some("openai"), Some("validated")), "{v}");
    assert_eq!(v["candidates"].as_array().map(Vec::len), Some(0), "{v}");
    let removed = v["removed"].as_array().expect("removed");
    assert_eq!(removed.len(), 3 * (1 + gateway::posts::generate::MAX_RETRIES), "{v}");
    assert!(removed.iter().all(|r| r["reason"].as_str().is_some_and(|m| m.contains("`#ad` is missing"))), "{v}");
    let seen = openai.seen();
    assert_eq!(seen.len(), 1 + gateway::posts::generate::MAX_RETRIES);
    assert!(seen.iter().all(|s| s.body.get("x_post").is_none() && s.body["n"] == 3), "{:?}", seen[0].body);

    // Without rules it cannot meet, the first answer is kept once and its copies removed.
    let v: Value = post_json(&url, &json!({"topic": "coffee", "model": ROUTE, "n": 3})).await.json().await.expect("json");
    assert_eq!(v["candidates"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["candidates"][0]["text"], "Hello from openai.");
    assert_eq!(v["removed"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(v["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{v}");
}
