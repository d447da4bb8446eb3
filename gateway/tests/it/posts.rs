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
