//! The HTTP client to cloud providers: kept-alive connections (streams
//! included), connections the provider closed, and TLS verified against
//! the system's roots plus a provider's `ca_file`.

use serde_json::{json, Value};

use crate::fake_openai::{FakeOpenAi, Fault};
use crate::routing::{gateway_for, header, provider, route};
use crate::support::{post_json, start_routed};

fn ask(stream: bool) -> Value {
    json!({"model": "tweet-writer", "messages": [{"role": "user", "content": "Hi"}], "stream": stream})
}

/// Send `body` and read the whole answer; the provider that gave it.
async fn answered_by(url: &str, body: &Value) -> String {
    let res = post_json(url, body).await;
    assert_eq!(res.status(), 200);
    let provider = header(&res, "x-starling-provider");
    let text = res.text().await.expect("body");
    if body["stream"] == true {
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(!text.contains("\"error\""), "{text}");
    }
    provider
}

#[tokio::test]
async fn one_upstream_connection_serves_json_answers_and_streams_in_turn() {
    let openai = FakeOpenAi::start("openai").await;
    let gw = gateway_for(vec![provider("openai", &openai.base_url)], vec![route(&[("openai", "gpt-4o-mini")])]);
    let s = start_routed(gw).await;
    let url = format!("{}/chat/completions", s.v1());
    // A stream's reader stops at `[DONE]`; the connection is reused only if
    // the chunked body's end was read too.
    for stream in [false, true, true, false, true] {
        assert_eq!(answered_by(&url, &ask(stream)).await, "openai");
    }
    let peers: Vec<_> = openai.seen().iter().map(|s| s.peer).collect();
    assert_eq!(peers.len(), 5);
    assert!(peers.iter().all(|p| *p == peers[0]), "{peers:?}");

    // The provider closes its side after an answer: the next request opens
    // a new connection rather than failing on the closed one.
    openai.fail_next([Fault::CloseConnection]);
    assert_eq!(answered_by(&url, &ask(true)).await, "openai");
    assert_eq!(answered_by(&url, &ask(false)).await, "openai");
    assert_eq!(answered_by(&url, &ask(true)).await, "openai");
    let peers: Vec<_> = openai.seen().iter().map(|s| s.peer).collect();
    assert_eq!(peers[5], peers[0]);
    assert_ne!(peers[6], peers[5], "{peers:?}");
    assert_eq!(peers[7], peers[6]);
}

#[tokio::test]
async fn a_provider_over_tls_is_trusted_through_its_ca_file_only() {
    let openai = FakeOpenAi::start_tls("openai").await;
    let groq = FakeOpenAi::start("groq").await;
    let ca = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls/ca.pem");
    let mut trusted = provider("openai", &openai.base_url);
    trusted.ca_file = Some(ca);
    let gw = gateway_for(vec![trusted], vec![route(&[("openai", "gpt-4o-mini")])]);
    let s = start_routed(gw).await;
    let url = format!("{}/chat/completions", s.v1());
    for stream in [false, true, false] {
        assert_eq!(answered_by(&url, &ask(stream)).await, "openai");
    }
    assert_eq!(openai.seen().len(), 3);
    // Kept alive over TLS too.
    assert!(openai.seen().iter().all(|x| x.peer == openai.seen()[0].peer));

    // Without the CA the certificate is refused: the route falls back, and
    // with no fallback the client gets a 502 that says why.
    let gw = gateway_for(
        vec![provider("openai", &openai.base_url), provider("groq", &groq.base_url)],
        vec![route(&[("openai", "gpt-4o-mini"), ("groq", "llama-3.1-8b-instant")])],
    );
    let s = start_routed(gw).await;
    assert_eq!(answered_by(&format!("{}/chat/completions", s.v1()), &ask(false)).await, "groq");
    let gw = gateway_for(vec![provider("openai", &openai.base_url)], vec![route(&[("openai", "gpt-4o-mini")])]);
    let s = start_routed(gw).await;
    let res = post_json(&format!("{}/chat/completions", s.v1()), &ask(false)).await;
    assert_eq!(res.status(), 502);
    let err: Value = res.json().await.expect("error body");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("`openai`") && msg.contains("certificate"), "{err}");
    assert_eq!(openai.seen().len(), 3);
}

#[tokio::test]
async fn a_ca_file_that_is_not_pem_fails_at_startup() {
    let mut p = provider("openai", "https://localhost:1/v1");
    p.ca_file = Some(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    let gw = gateway_for(vec![p], vec![route(&[("openai", "gpt-4o-mini")])]);
    let err = gateway::App::new(gateway::ServerConfig::default(), gw).err().map(|e| e.to_string());
    assert!(err.as_deref().is_some_and(|e| e.contains("ca_file") && e.contains("no certificate")), "{err:?}");
}
