//! The gateway's part of `starling.toml`: `[[providers]]`, `[[routes]]`,
//! `[gateway.retry]` and `[gateway.breaker]`. Secrets are never in here:
//! a provider names the environment variable holding its key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Everything the router is built from.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// Cloud (or remote) providers; `local` is always there.
    pub providers: Vec<ProviderConfig>,
    /// Public model names and their candidates.
    pub routes: Vec<RouteConfig>,
    /// Retries and fallback.
    pub retry: RetryConfig,
    /// Circuit breakers.
    pub breaker: BreakerConfig,
    /// Response cache.
    pub cache: crate::accounting::cache::CacheConfig,
    /// Prices over the shipped defaults.
    pub prices: Vec<crate::routing::prices::PriceConfig>,
    /// What the GPU costs per hour, USD: the local engine's price under
    /// `cheapest` (see `prices::local_price`).
    pub gpu_usd_per_hour: f64,
    /// `[scoring]`: the weights of a post's quality score.
    pub scoring: content::Weights,
    /// `[posts] prompts_dir`: the prompt templates (the shipped ones where
    /// the folder does not exist).
    pub prompts_dir: std::path::PathBuf,
}

/// A credential: its `Debug` never shows it, so it cannot end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI's Chat Completions API: OpenAI, Groq, another Starling, vLLM,
    /// llama-server, any OpenAI-compatible base URL.
    OpenaiCompatible,
    /// Anthropic's Messages API (Claude), translated both ways.
    Anthropic,
}

/// One `[[providers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name routes use (`openai`, `groq`, ...); `local` is reserved.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL up to and including the version (`https://api.openai.com/v1`).
    pub base_url: String,
    /// Environment variable holding the API key (none: no auth header).
    pub api_key_env: Option<String>,
    /// The key itself: never in the file, filled from `api_key_env` by
    /// whoever loads the config.
    #[serde(skip)]
    pub api_key: Option<Secret>,
    /// Extra headers sent with every request (not secrets: use the key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Models reachable directly as `<name>/<model>`.
    #[serde(default)]
    pub models: Vec<String>,
    /// TCP + TLS connect timeout, milliseconds.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time to the first streamed chunk (or the headers of a non-streamed
    /// answer), milliseconds.
    #[serde(default = "defaults::ttft_timeout_ms")]
    pub ttft_timeout_ms: u64,
    /// Whole request, seconds.
    #[serde(default = "defaults::total_timeout_secs")]
    pub total_timeout_secs: u64,
    /// `max_tokens` sent when the client named none (Anthropic requires one).
    #[serde(default = "defaults::max_tokens")]
    pub default_max_tokens: u64,
    /// PEM file of CA certificates trusted for this provider besides the
    /// system's (a self-hosted server behind a private CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// HTTP proxy to reach this provider through
    /// (`http://[user:password@]host:port`; https goes through a CONNECT
    /// tunnel). Unset: the environment's, as curl reads it ([`env_proxy`]);
    /// `""`: none.
    #[serde(default)]
    pub proxy: Option<ProxyUrl>,
    /// The server continues a final assistant message when asked with
    /// `continue_final_message: true` (vLLM, SGLang): a stream another
    /// candidate broke off mid-answer can be resumed here. Anthropic always
    /// can.
    #[serde(default)]
    pub continue_final_message: bool,
}

/// The proxy the environment names for `url`: `HTTPS_PROXY` or
/// `HTTP_PROXY` by its scheme (`ALL_PROXY` otherwise; lowercase names
/// first), unless `NO_PROXY` lists its host (a name matches itself and its
/// subdomains; `*` matches all). `var` reads one variable.
///
/// As curl, a proxy named without a scheme is `http://`. One Starling
/// cannot speak (`socks5://`, `https://`) is skipped with a warning rather
/// than stopping the server over an environment set for other programs.
/// `NO_PROXY` entries may also be address ranges (`10.0.0.0/8`).
pub fn env_proxy(url: &str, var: impl Fn(&str) -> Option<String>) -> Option<ProxyUrl> {
    let get = |name: &str| var(&name.to_ascii_lowercase()).or_else(|| var(name)).filter(|v| !v.trim().is_empty());
    let uri = url.parse::<axum::http::Uri>().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if let Some(no) = get("NO_PROXY") {
        let skip = no.split(',').map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase()).any(|e| {
            e == "*" || (!e.is_empty() && (host == e || host.ends_with(&format!(".{e}")) || in_range(&host, &e)))
        });
        if skip {
            return None;
        }
    }
    let own = if uri.scheme_str() == Some("https") { "HTTPS_PROXY" } else { "HTTP_PROXY" };
    let proxy = get(own).or_else(|| get("ALL_PROXY"))?;
    let proxy = proxy.trim();
    let proxy = if proxy.contains("://") { proxy.to_owned() } else { format!("http://{proxy}") };
    if !proxy.starts_with("http://") {
        let shown = ProxyUrl(proxy);
        tracing::warn!("ignoring the environment's proxy {shown:?} for {url}: only http:// proxies are supported");
        return None;
    }
    Some(ProxyUrl(proxy))
}

/// Whether the address `host` lies in the range `cidr` (`10.0.0.0/8`,
/// `fd00::/8`).
fn in_range(host: &str, cidr: &str) -> bool {
    use std::net::IpAddr;
    let Some((net, bits)) = cidr.split_once('/') else { return false };
    let (Ok(host), Ok(net), Ok(bits)) = (host.parse::<IpAddr>(), net.parse::<IpAddr>(), bits.parse::<u32>()) else { return false };
    let (h, n, width) = match (host, net) {
        (IpAddr::V4(h), IpAddr::V4(n)) => (u128::from(u32::from(h)), u128::from(u32::from(n)), 32),
        (IpAddr::V6(h), IpAddr::V6(n)) => (u128::from(h), u128::from(n), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    shift >= 128 || (h >> shift) == (n >> shift)
}

/// A proxy URL, which may carry credentials: shown without them.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ProxyUrl(pub String);

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redacted(&self.0))
    }
}

/// `url` without its credentials, for logs and messages.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

impl ProviderConfig {
    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// First-chunk timeout.
    pub fn ttft_timeout(&self) -> Duration {
        Duration::from_millis(self.ttft_timeout_ms)
    }

    /// Whole-request timeout.
    pub fn total_timeout(&self) -> Duration {
        Duration::from_secs(self.total_timeout_secs)
    }
}

/// How a route orders its candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// By `priority` (default: the order listed): the first healthy
    /// candidate answers, the rest are fallbacks.
    #[default]
    Priority,
    /// Lowest expected cost of this request first (unknown prices last).
    Cheapest,
    /// Lowest recent time to first token first (EWMA; untried first).
    Fastest,
}

/// One `[[routes]]` entry: a public model name and who may answer it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The name clients send as `model`.
    pub model: String,
    /// Candidate order.
    #[serde(default)]
    pub policy: Policy,
    /// Who may answer, as `{ provider, model }`.
    pub candidates: Vec<CandidateConfig>,
    /// Spill-over: when the local engine predicts a longer wait than this
    /// for a new request (milliseconds), it goes after the other candidates.
    pub ttft_slo_ms: Option<u64>,
}

/// One candidate of a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateConfig {
    /// A `[[providers]]` name, or `local`.
    pub provider: String,
    /// The model name that provider knows.
    pub model: String,
    /// Rank under `priority` (lower first; default: position in the list).
    pub priority: Option<u32>,
    /// Share of traffic among candidates that rank equal (default 1).
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

/// `[gateway.retry]`: retries and fallback happen only while nothing has
/// reached the client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Most attempts per request, over all candidates.
    pub max_attempts: u32,
    /// First backoff before a candidate is tried again, milliseconds;
    /// doubles each round, with full jitter.
    pub backoff_base_ms: u64,
    /// Longest backoff, milliseconds.
    pub backoff_max_ms: u64,
    /// Time from the request's arrival after which no new attempt starts
    /// and a waiting attempt is abandoned, seconds.
    pub deadline_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { max_attempts: 4, backoff_base_ms: 100, backoff_max_ms: 2000, deadline_secs: 120 }
    }
}

/// `[gateway.breaker]`: per provider and model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open it.
    pub consecutive_failures: u32,
    /// Failure ratio over the window that opens it...
    pub error_ratio: f64,
    /// ...once the window holds at least this many outcomes.
    pub min_requests: u32,
    /// The window, seconds.
    pub window_secs: u64,
    /// How long it stays open before one probe is let through, seconds.
    pub cooldown_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { consecutive_failures: 5, error_ratio: 0.5, min_requests: 10, window_secs: 30, cooldown_secs: 30 }
    }
}

mod defaults {
    pub fn max_tokens() -> u64 {
        4096
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn ttft_timeout_ms() -> u64 {
        30_000
    }
    pub fn total_timeout_secs() -> u64 {
        600
    }
}

#[cfg(test)]
mod tests {
    use super::env_proxy;

    #[test]
    fn proxy_from_the_environment_as_curl_reads_it() {
        let env = |vars: &'static [(&'static str, &'static str)]| move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let at = |url: &str, vars| env_proxy(url, vars).map(|p| p.0);
        let vars = env(&[("HTTPS_PROXY", "http://secure:3128"), ("http_proxy", "plain:3128"), ("NO_PROXY", "internal.example, .corp,localhost,10.0.0.0/8,fd00::/8")]);
        assert_eq!(at("https://api.openai.com/v1", vars).as_deref(), Some("http://secure:3128"));
        // No scheme: http://, as curl reads it.
        assert_eq!(at("http://192.168.1.5:8000/v1", vars).as_deref(), Some("http://plain:3128"));
        for skipped in [
            "https://internal.example/v1",
            "https://gpu.internal.example/v1",
            "http://vllm.corp:8000/v1",
            "http://localhost:8000/v1",
            "http://10.1.2.3:8000/v1",
            "http://[fd12::1]:8000/v1",
        ] {
            assert_eq!(at(skipped, vars), None, "{skipped}");
        }
        // A name only matches whole labels; a range only its addresses.
        assert!(at("https://notinternal.example/v1", vars).is_some());
        assert!(at("http://11.0.0.1/v1", vars).is_some());
        let vars = env(&[("ALL_PROXY", "http://all:3128"), ("https_proxy", ""), ("no_proxy", "")]);
        assert_eq!(at("https://api.groq.com/openai/v1", vars).as_deref(), Some("http://all:3128"));
        assert_eq!(at("https://x/v1", env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "*")])), None);
        // One Starling cannot speak is left alone.
        assert_eq!(at("https://x/v1", env(&[("ALL_PROXY", "socks5://p:1080")])), None);
        // Credentials never show.
        let p = env_proxy("https://x/v1", env(&[("HTTPS_PROXY", "http://user:secret@p:1")]));
        assert_eq!(format!("{p:?}"), r#"Some("http://***@p:1")"#);
    }
}
