//! HTTP load generation against an OpenAI-compatible server.
//!
//! [`Conn`] is one keep-alive HTTP/1.1 connection that posts JSON bodies and
//! reads the answer as it arrives: for an SSE stream it counts content
//! deltas (the time to the first one is the TTFT) and picks up the `usage`
//! chunk when the server sends one; for a JSON answer it reads `usage`.
//! [`burst`] fires a set of requests at once, one connection each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What one request measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u16,
    /// Request sent to first content delta (SSE) or to the whole body (JSON).
    pub ttft: Option<Duration>,
    /// Request sent to the end of the body.
    pub total: Duration,
    /// Content deltas seen (SSE); one per token on every server measured.
    pub deltas: usize,
    /// `usage.completion_tokens`, when the server reported it.
    pub usage_tokens: Option<usize>,
    /// The first choice's `finish_reason`.
    pub finish: Option<String>,
}

impl Outcome {
    /// Completion tokens: the server's own count when it gave one; else a
    /// `length` finish means `max_tokens` were written (llama-cpp-python's
    /// stream has no usage and sends no delta for a token that ends inside
    /// a UTF-8 character); else the deltas seen.
    pub fn tokens(&self, max_tokens: usize) -> usize {
        match (self.usage_tokens, self.finish.as_deref()) {
            (Some(n), _) => n,
            (None, Some("length")) => max_tokens,
            (None, _) => self.deltas,
        }
    }
}

/// One keep-alive connection; reconnects when the server closed it.
pub struct Conn {
    addr: SocketAddr,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, host: addr.to_string(), sender: None }
    }

    /// Open the connection now (so a measurement does not include it).
    pub async fn connect(&mut self) -> Result<(), Error> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the server closes or the sender is dropped.
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// GET `path`; the status and body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, Bytes), Error> {
        let req = hyper::Request::get(path).header(HOST, &self.host).body(Full::new(Bytes::new()))?;
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// POST a JSON `body` to `path`; the status, content type and whole body.
    pub async fn post_raw(&mut self, path: &str, body: Bytes) -> Result<(u16, Option<String>, Bytes), Error> {
        let req = hyper::Request::post(path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        let kind = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok((status, kind, resp.into_body().collect().await?.to_bytes()))
    }

    /// POST a JSON `body` to `path`; the status and the parsed JSON answer.
    pub async fn post_json(&mut self, path: &str, body: Bytes) -> Result<(u16, Value), Error> {
        let (status, _, bytes) = self.post_raw(path, body).await?;
        Ok((status, serde_json::from_slice(&bytes)?))
    }

    /// POST a JSON `body` to `path` and read the whole answer.
    pub async fn post(&mut self, path: &str, body: Bytes) -> Result<Outcome, Error> {
        let req = hyper::Request::post(path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let t0 = Instant::now();
        let resp = self.send(req).await?;
        let status = resp.status().as_u16();
        let sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut out = Outcome { status, ttft: None, total: Duration::ZERO, deltas: 0, usage_tokens: None, finish: None };
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            buf.extend_from_slice(&data);
            if sse {
                // Whole lines only; a line may span frames. sse-starlette
                // (the Python server) ends lines with \r\n.
                let Some(end) = buf.iter().rposition(|&b| b == b'\n') else { continue };
                for line in buf[..end].split(|&b| b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if let Some(payload) = line.strip_prefix(b"data:") {
                        event(payload.trim_ascii(), t0, &mut out);
                    }
                }
                buf.drain(..=end);
            }
        }
        out.total = t0.elapsed();
        if !sse {
            out.ttft = Some(out.total);
            if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                out.usage_tokens = completion_tokens(&v);
                out.finish = finish_reason(&v);
            }
        }
        Ok(out)
    }

    async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>, Error> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().ok_or("not connected")?;
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }
}

/// One SSE `data:` payload.
fn event(payload: &[u8], t0: Instant, out: &mut Outcome) {
    if payload == b"[DONE]" {
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(payload) else { return };
    let content = v["choices"].as_array().into_iter().flatten().any(|c| {
        // Chat deltas carry `delta.content`, legacy completions `text`.
        let text = c["delta"]["content"].as_str().or_else(|| c["text"].as_str());
        text.is_some_and(|t| !t.is_empty())
    });
    if content {
        out.deltas += 1;
        out.ttft.get_or_insert_with(|| t0.elapsed());
    }
    if let Some(n) = completion_tokens(&v) {
        out.usage_tokens = Some(n);
    }
    if let Some(f) = finish_reason(&v) {
        out.finish = Some(f);
    }
}

fn completion_tokens(v: &Value) -> Option<usize> {
    v["usage"]["completion_tokens"].as_u64().map(|n| n as usize)
}

fn finish_reason(v: &Value) -> Option<String> {
    v["choices"][0]["finish_reason"].as_str().map(str::to_owned)
}

/// Fire `bodies` at `path` all at once, one fresh connection each (opened
/// before the clock starts). Returns every outcome and the wall time from
/// the start to the last answer's end.
pub async fn burst(addr: SocketAddr, path: &str, bodies: Vec<Bytes>) -> Result<(Vec<Outcome>, Duration), Error> {
    let mut conns = Vec::with_capacity(bodies.len());
    for _ in 0..bodies.len() {
        let mut c = Conn::new(addr);
        c.connect().await?;
        conns.push(c);
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(bodies)
        .map(|(mut c, body)| {
            let path = path.to_owned();
            tokio::spawn(async move { c.post(&path, body).await })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await??);
    }
    Ok((outcomes, t0.elapsed()))
}

/// What a sustained run measured.
#[derive(Debug, Clone)]
pub struct Sustained {
    /// Completed requests per second.
    pub rps: f64,
    /// Per-request latency (send to the end of the body), seconds.
    pub latencies: Vec<f64>,
    /// Answers that were not 200.
    pub failures: usize,
}

/// `concurrency` workers, each on its own keep-alive connection, posting
/// `body` to `path` back to back for `duration`.
pub async fn sustained(
    addr: SocketAddr,
    path: &str,
    body: Bytes,
    concurrency: usize,
    duration: Duration,
) -> Result<Sustained, Error> {
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut c = Conn::new(addr);
        c.connect().await?;
        conns.push(c);
    }
    let t0 = Instant::now();
    let end = t0 + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (path, body) = (path.to_owned(), body.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut failures = 0;
                while Instant::now() < end {
                    let o = c.post(&path, body.clone()).await?;
                    if o.status != 200 {
                        failures += 1;
                    }
                    lat.push(o.total.as_secs_f64());
                }
                Ok::<_, Error>((lat, failures))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await??;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    Ok(Sustained { rps: latencies.len() as f64 / elapsed, latencies, failures })
}
