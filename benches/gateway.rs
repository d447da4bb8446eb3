//! Gateway overhead bench: `cargo bench -p starling-benches --bench gateway`.
//!
//! A fake OpenAI upstream answers at once (a fixed `chat.completion`, or a
//! 5-chunk SSE stream), in a process of its own as a real provider is. The
//! same chat request goes to it directly, through `starling serve` (gateway
//! only: no local model, no database, no cache, one provider and one
//! route), through LiteLLM proxy (installed once into
//! `benches/.anchor/litellm` by `benches/litellm_anchor.sh`), and through
//! `floor`: the least an HTTP hop can cost here, a bare axum server that
//! forwards each request over a kept-alive hyper connection and does nothing
//! else (this binary again, in a process of its own). For each of 1, 16, 64
//! and 256 concurrent keep-alive connections, JSON and SSE: requests/s and
//! latency p50/p99, and the latency each adds over direct at the same
//! concurrency. Then both gateways' RSS and Starling's own overhead
//! histogram (`starling_gateway_overhead_seconds`) next to the outside
//! figure less the floor's.
//!
//! Arguments select gateways (`starling`, `litellm`); `STARLING_BENCH_ANCHOR=0`
//! skips LiteLLM. `STARLING_BENCH_SECS` sets seconds per point (default 4).
//! Nothing is asserted: this reports, tests check behaviour.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::json;
use starling_benches::load::{sustained, Conn};
use starling_benches::process::{free_port, root, starling_binary, ServerProcess};
use starling_benches::{fail, percentile, wanted};

/// Concurrency levels; `STARLING_BENCH_LEVELS=1` overrides.
const LEVELS: [usize; 4] = [1, 16, 64, 256];

/// One level's (p50 seconds, p99 seconds, requests/s).
type Row = (f64, f64, f64);

/// The fake upstream: OpenAI's shapes, no work.
async fn fake_upstream(listener: tokio::net::TcpListener) {
    async fn chat(body: Bytes) -> axum::response::Response {
        let stream = serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["stream"] == true);
        let usage = json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17});
        if !stream {
            return axum::Json(json!({
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_700_000_000u64, "model": "fake-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Fresh tea, fresh start."},
                             "logprobs": null, "finish_reason": "stop"}],
                "usage": usage,
            }))
            .into_response();
        }
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            let v = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                           "model": "fake-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {v}\n\n")
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        for w in ["Fresh", " tea,", " fresh", " start."] {
            events.push(chunk(json!({"content": w}), None));
        }
        events.push(chunk(json!({}), Some("stop")));
        let u = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                       "model": "fake-model", "choices": [], "usage": usage});
        events.push(format!("data: {u}\n\n"));
        events.push("data: [DONE]\n\n".to_owned());
        // As OpenAI sends a stream: chunked, one event per chunk (all ready
        // at once here, so they leave in one write).
        let body = axum::body::Body::from_stream(futures_util::stream::iter(events.into_iter().map(Ok::<_, std::io::Error>)));
        ([("content-type", "text/event-stream")], body).into_response()
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    serve_nodelay(listener, app).await;
}

async fn serve_nodelay(listener: tokio::net::TcpListener, app: axum::Router) {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, app).await {
        fail(format!("serve: {e}"));
    }
}

/// The floor: forward every request to `upstream` over kept-alive
/// connections and return the answer, nothing else.
async fn floor_proxy(listener: tokio::net::TcpListener, upstream: SocketAddr) {
    use std::sync::{Arc, Mutex};
    let idle: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let forward = move |body: Bytes| {
        let idle = Arc::clone(&idle);
        async move {
            let taken = idle.lock().ok().and_then(|mut v| v.pop());
            let mut conn = taken.unwrap_or_else(|| Conn::new(upstream));
            let answer = conn.post_raw("/v1/chat/completions", body).await;
            if let Ok(mut v) = idle.lock() {
                v.push(conn);
            }
            match answer {
                Ok((status, kind, body)) => {
                    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                    let kind = kind.unwrap_or_else(|| "application/json".into());
                    (status, [("content-type", kind)], body).into_response()
                }
                Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(forward));
    serve_nodelay(listener, app).await;
}

/// This binary again as a server: `upstream` (the fake provider) or
/// `floor` (forwarding to `to`). Returns its process and address.
fn spawn_role(role: &str, to: Option<SocketAddr>) -> ServerProcess {
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(format!("current exe: {e}")));
    let port = free_port();
    let mut cmd = Command::new(exe);
    cmd.env(ROLE, role).env(ROLE_PORT, port.to_string()).stdout(Stdio::null()).stderr(Stdio::inherit());
    if let Some(to) = to {
        cmd.env(ROLE_UPSTREAM, to.to_string());
    }
    let child = cmd.spawn().unwrap_or_else(|e| fail(format!("cannot start {role}: {e}")));
    ServerProcess { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
}

const ROLE: &str = "STARLING_BENCH_ROLE";
const ROLE_PORT: &str = "STARLING_BENCH_ROLE_PORT";
const ROLE_UPSTREAM: &str = "STARLING_BENCH_ROLE_UPSTREAM";

/// Run as a role's server when the environment says so (never returns then).
fn run_role() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let port: u16 = std::env::var(ROLE_PORT).ok().and_then(|p| p.parse().ok()).unwrap_or_else(|| fail("no role port"));
    // Two work-stealing workers: the usual runtime of a provider or a plain
    // proxy (`starling serve` itself runs one event loop per core).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("tokio: {e}")));
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap_or_else(|e| fail(format!("bind: {e}")));
        match role.as_str() {
            "upstream" => fake_upstream(listener).await,
            "floor" => {
                let to = std::env::var(ROLE_UPSTREAM).ok().and_then(|a| a.parse().ok()).unwrap_or_else(|| fail("no upstream"));
                floor_proxy(listener, to).await;
            }
            other => fail(format!("unknown role {other}")),
        }
    });
    std::process::exit(0);
}

/// A gateway process and its config directory (removed after the process
/// is killed: fields drop in order).
struct Gateway {
    process: ServerProcess,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("starling-gwbench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| fail(format!("temp dir: {e}")));
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn starling(upstream: SocketAddr) -> Gateway {
    let bin = starling_binary();
    let dir = TempDir::new("starling");
    let port = free_port();
    let config = format!(
        r#"
[models]
default = ""
[server]
listen = "127.0.0.1:{port}"
[database]
url = ""
[gateway.cache]
enabled = false
[[providers]]
name = "fake"
kind = "openai_compatible"
base_url = "http://{upstream}/v1"
[[routes]]
model = "bench"
candidates = [{{ provider = "fake", model = "fake-model" }}]
"#
    );
    let path = dir.0.join("starling.toml");
    std::fs::write(&path, config).unwrap_or_else(|e| fail(format!("config: {e}")));
    let child = Command::new(bin)
        .current_dir(root())
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| fail(format!("cannot start starling: {e}")));
    Gateway { process: ServerProcess { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }, _dir: dir }
}

fn litellm(upstream: SocketAddr) -> Gateway {
    let out = Command::new(root().join("benches/litellm_anchor.sh"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| fail(format!("cannot run litellm_anchor.sh: {e}")));
    if !out.status.success() {
        fail("litellm_anchor.sh failed");
    }
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let dir = TempDir::new("litellm");
    let port = free_port();
    let config = format!(
        "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/fake-model\n      api_base: http://{upstream}/v1\n      api_key: sk-bench\n"
    );
    let path = dir.0.join("litellm.yaml");
    std::fs::write(&path, config).unwrap_or_else(|e| fail(format!("config: {e}")));
    let child = Command::new(bin)
        .arg("--config")
        .arg(&path)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", "1"])
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_TELEMETRY", "False")
        // Starling on loopback without keys checks none either; LiteLLM
        // refuses to start without a master key unless told this.
        .env("LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(format!("cannot start litellm: {e}")));
    Gateway { process: ServerProcess { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }, _dir: dir }
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (p50, p99) seconds and req/s at each level for one target and shape.
async fn sweep(addr: SocketAddr, model: &str, stream: bool, secs: f64) -> Vec<Row> {
    let body = Bytes::from(
        json!({"model": model, "messages": [{"role": "user", "content": "Write a tweet about tea."}], "stream": stream})
            .to_string(),
    );
    let mut out = Vec::new();
    for c in starling_benches::levels(&LEVELS) {
        // A short warm-up per level: connections, pools, caches.
        let _ = sustained(addr, "/v1/chat/completions", body.clone(), c, Duration::from_millis(300)).await;
        let s = sustained(addr, "/v1/chat/completions", body.clone(), c, Duration::from_secs_f64(secs))
            .await
            .unwrap_or_else(|e| fail(format!("load against {addr}: {e}")));
        if s.failures > 0 {
            eprintln!("warning: {} of {} answers from {addr} were not 200", s.failures, s.latencies.len());
        }
        out.push((percentile(s.latencies.clone(), 50.0), percentile(s.latencies, 99.0), s.rps));
    }
    out
}

/// The two answer shapes measured, in row order.
const SHAPES: [&str; 2] = ["json", "sse"];

/// JSON then SSE rows against `addr`, each printed with what it adds over
/// `direct` (`None`: these are the direct rows).
async fn sweep_shapes(name: &str, addr: SocketAddr, model: &str, secs: f64, direct: Option<&[Vec<Row>]>) -> Vec<Vec<Row>> {
    let mut out = Vec::new();
    for (i, shape) in SHAPES.iter().enumerate() {
        let rows = sweep(addr, model, *shape == "sse", secs).await;
        print(name, shape, &rows, direct.map_or(&rows, |d| &d[i]));
        out.push(rows);
    }
    out
}

fn print(name: &str, shape: &str, rows: &[Row], direct: &[Row]) {
    for (i, c) in starling_benches::levels(&LEVELS).iter().enumerate() {
        let (p50, p99, rps) = rows[i];
        let (d50, d99, _) = direct[i];
        println!(
            "{name:<9} {shape:<4} c={c:<4} req_s {rps:>9.0}  p50_ms {:>8.3}  p99_ms {:>8.3}  added_p50_ms {:>8.3}  added_p99_ms {:>8.3}",
            p50 * 1e3,
            p99 * 1e3,
            (p50 - d50) * 1e3,
            (p99 - d99) * 1e3
        );
    }
}

/// Starling's own overhead histogram: (count, mean seconds, share <= 100 µs).
async fn overhead_histogram(addr: SocketAddr) -> (f64, f64, f64) {
    let (_, body) = Conn::new(addr).get("/metrics").await.unwrap_or_else(|e| fail(format!("metrics: {e}")));
    let text = String::from_utf8_lossy(&body);
    let metric = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(f64::NAN)
    };
    let count = metric("starling_gateway_overhead_seconds_count");
    let sum = metric("starling_gateway_overhead_seconds_sum");
    let le_100us = metric("starling_gateway_overhead_seconds_bucket{le=\"0.0001\"}");
    (count, sum / count, le_100us / count)
}

fn main() {
    run_role();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("tokio: {e}")));
    rt.block_on(bench());
}

async fn bench() {
    let secs: f64 = std::env::var("STARLING_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(4.0);
    let mut fake = spawn_role("upstream", None);
    fake.until_listening(Duration::from_secs(30)).await;
    let upstream = fake.addr;
    println!("# Gateway overhead: fake upstream answering at once, {secs} s per point, keep-alive connections");
    let direct = sweep_shapes("direct", upstream, "fake-model", secs, None).await;
    let mut floor = Vec::new();
    if wanted("floor") || wanted("starling") {
        let mut proxy = spawn_role("floor", Some(upstream));
        proxy.until_listening(Duration::from_secs(30)).await;
        floor = sweep_shapes("floor", proxy.addr, "fake-model", secs, Some(&direct)).await;
    }
    // JSON and SSE rows of each gateway measured.
    let mut results: Vec<Vec<Vec<Row>>> = Vec::new();
    if wanted("starling") {
        let mut gw = starling(upstream);
        let g = &mut gw.process;
        g.until_ready("/ready", Duration::from_secs(180)).await;
        let idle = rss_mb(g.child.id());
        let rows = sweep_shapes("starling", g.addr, "bench", secs, Some(&direct)).await;
        let busy = rss_mb(g.child.id());
        let (count, mean, share) = overhead_histogram(g.addr).await;
        println!("starling  rss_mb idle {idle:.1}  after load {busy:.1}");
        println!(
            "starling  /metrics overhead: {count:.0} requests, mean {:.1} us, {:.1}% <= 100 us",
            mean * 1e6,
            share * 100.0
        );
        let at1 = starling_benches::levels(&LEVELS).iter().position(|&c| c == 1);
        for (i, f) in floor.iter().enumerate().filter(|_| at1.is_some()) {
            let (ours, d, j) = (&rows[i], &direct[i], at1.unwrap_or(0));
            println!(
                "starling  {:<4} c=1 added beyond the floor: p50 {:.3} ms, p99 {:.3} ms (the floor adds p50 {:.3} ms over direct)",
                SHAPES[i],
                (ours[j].0 - f[j].0) * 1e3,
                (ours[j].1 - f[j].1) * 1e3,
                (f[j].0 - d[j].0) * 1e3
            );
        }
        results.push(rows);
    }
    if wanted("litellm") && !std::env::var("STARLING_BENCH_ANCHOR").is_ok_and(|v| v == "0") {
        let mut gw = litellm(upstream);
        let g = &mut gw.process;
        g.until_ready("/health/liveliness", Duration::from_secs(180)).await;
        let idle = rss_mb(g.child.id());
        let v = sweep_shapes("litellm", g.addr, "bench", secs, Some(&direct)).await;
        println!("litellm   rss_mb idle {idle:.1}  after load {:.1}", rss_mb(g.child.id()));
        results.push(v);
    }
    let at64 = starling_benches::levels(&LEVELS).iter().position(|&c| c == 64);
    if let ([ours, theirs], Some(at64)) = (&results[..], at64) {
        println!("# ratios at 64 concurrent (Starling / LiteLLM req/s; target >= 50x)");
        println!("json {:>8.1}x", ours[0][at64].2 / theirs[0][at64].2);
        println!("sse  {:>8.1}x", ours[1][at64].2 / theirs[1][at64].2);
    }
}
