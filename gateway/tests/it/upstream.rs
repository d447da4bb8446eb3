//! The HTTP client to cloud providers: kept-alive connections (streams
//! included), connections the provider closed, TLS verified against the
//! system's roots plus a provider's `ca_file`, and HTTP proxies.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fake_openai::{FakeOpenAi, Fault};
use crate::routing::{gateway_for, header, provider, route};
use crate::support::{post_json, start_routed};

fn ask(stream: bool) -> Value {
    json!({"model": "tweet-writer", "messages": [{"role": "user", "content": "Hi"}], "stream": stream})
}

/// Send `body` and read the whole answer; the provider that gave it.
async fn answered_by(url: &str, body: &Value) -> String {
    let res = post_json(url, body).await;
    let status = res.status();
    let provider = header(&res, "x-starling-provider");
    let text = res.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    if body["stream"] == true {
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(!text.contains("\"error\""), "{text}");
    }
    provider
}

/// Ask for a JSON answer that must fail as 502; its error message.
async fn bad_gateway(url: &str) -> String {
    let res = post_json(url, &ask(false)).await;
    assert_eq!(res.status(), 502);
    let err: Value = res.json().await.expect("error body");
    err["error"]["message"].as_str().unwrap_or_default().to_owned()
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
    let msg = bad_gateway(&format!("{}/chat/completions", s.v1())).await;
    assert!(msg.contains("`openai`") && msg.contains("certificate"), "{msg}");
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

/// An HTTP proxy on loopback, as squid or tinyproxy are: CONNECT tunnels
/// for https, absolute-form requests for plain HTTP, `407` without the
/// expected `Proxy-Authorization`. It records each connection's head.
struct FakeProxy {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

/// Whether `head` carries `user:secret` as proxy credentials.
fn authorized(head: &str) -> bool {
    head.lines().any(|l| l.split_once(':').is_some_and(|(n, v)| n.eq_ignore_ascii_case("proxy-authorization") && v.trim() == "Basic dXNlcjpzZWNyZXQ="))
}

impl FakeProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, seen.clone()));
            }
        });
        Self { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

async fn relay(mut client: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    heads.lock().expect("lock").push(head.clone());
    if !authorized(&head) {
        let _ = client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n").await;
        return;
    }
    let mut words = head.split(' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let mut upstream = if method == "CONNECT" {
        let Ok(up) = TcpStream::connect(target.replace("localhost", "127.0.0.1")).await else { return };
        if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
            return;
        }
        up
    } else {
        // `http://host:port/path`: forwarded as it came (servers accept the
        // absolute form).
        let authority = target.trim_start_matches("http://").split('/').next().unwrap_or_default();
        let Ok(mut up) = TcpStream::connect(authority).await else { return };
        if up.write_all(&buf).await.is_err() {
            return;
        }
        up
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

#[tokio::test]
async fn providers_are_reached_through_an_http_proxy() {
    let proxy = FakeProxy::start().await;
    let (secure, plain) = (FakeOpenAi::start_tls("openai").await, FakeOpenAi::start("groq").await);
    let through = |fake: &FakeOpenAi, creds: &str| {
        let mut p = provider("openai", &fake.base_url);
        p.ca_file = Some(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls/ca.pem"));
        p.proxy = Some(gateway::config::ProxyUrl(format!("http://{creds}{}", proxy.addr)));
        gateway_for(vec![p], vec![route(&[("openai", "gpt-4o-mini")])])
    };
    // https: one CONNECT tunnel, kept alive across a JSON answer and a stream
    // (the credentials percent-encoded, as URLs carry them).
    let s = start_routed(through(&secure, "user:s%65cret@")).await;
    let url = format!("{}/chat/completions", s.v1());
    for stream in [false, true, false] {
        assert_eq!(answered_by(&url, &ask(stream)).await, "openai");
    }
    let port = secure.base_url.trim_start_matches("https://localhost:").trim_end_matches("/v1");
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with(&format!("CONNECT localhost:{port} HTTP/1.1\r\n")), "{heads:?}");
    assert!(authorized(&heads[0]), "{heads:?}");

    // Plain HTTP: requests by absolute URL, the credentials on each.
    let s = start_routed(through(&plain, "user:secret@")).await;
    let url = format!("{}/chat/completions", s.v1());
    assert_eq!(answered_by(&url, &ask(true)).await, "openai");
    let heads = proxy.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[1].starts_with(&format!("POST {}/chat/completions HTTP/1.1\r\n", plain.base_url)), "{heads:?}");
    assert!(authorized(&heads[1]), "{heads:?}");
    assert_eq!(plain.seen().len(), 1);

    // Refused (407): a 502 that says so, never the proxy's credentials.
    let s = start_routed(through(&secure, "user:wrong@")).await;
    let msg = bad_gateway(&format!("{}/chat/completions", s.v1())).await;
    assert!(msg.contains("proxy") && msg.contains("407"), "{msg}");
    assert_eq!(secure.seen().len(), 3);
}
