//! What a request costs: USD per million tokens (or per minute of audio)
//! per provider and model, from `[[prices]]` in the config over a shipped
//! default table, and the local engine's cost from the GPU's hourly price
//! and its live load.

use serde::Deserialize;

/// USD per million tokens, and per minute of audio for speech models.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens.
    #[serde(default)]
    pub input: f64,
    /// Generated tokens.
    #[serde(default)]
    pub output: f64,
    /// Prompt tokens served from the provider's prompt cache (default:
    /// the input price).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// A minute of audio transcribed (speech models bill by duration).
    #[serde(default)]
    pub audio_minute: Option<f64>,
}

impl Price {
    /// USD of a request with these token counts.
    pub fn cost(&self, input: u64, cached_input: u64, output: u64) -> f64 {
        let fresh = input.saturating_sub(cached_input) as f64;
        let cached = cached_input as f64 * self.cached_input.unwrap_or(self.input);
        (fresh * self.input + cached + output as f64 * self.output) / 1e6
    }
}

/// One `[[prices]]` entry: overrides or adds to the default table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// A `[[providers]]` name.
    pub provider: String,
    /// The model as that provider names it.
    pub model: String,
    /// The price.
    #[serde(flatten)]
    pub price: Price,
}

/// List prices of the models the docs name, USD per 1M tokens, as the
/// vendors published them when this table was written (2026). Prices
/// change: set `[[prices]]` for what your account pays.
const DEFAULTS: &[(&str, f64, f64, f64)] = &[
    // OpenAI: (model, input, output, cached input)
    ("gpt-4o-mini", 0.15, 0.60, 0.075),
    ("gpt-4o", 2.50, 10.00, 1.25),
    ("gpt-4.1", 2.00, 8.00, 0.50),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025),
    ("gpt-5", 1.25, 10.00, 0.125),
    ("gpt-5-mini", 0.25, 2.00, 0.025),
    ("gpt-5-nano", 0.05, 0.40, 0.005),
    ("o4-mini", 1.10, 4.40, 0.275),
    // Anthropic: cached input is the cache-read price.
    ("claude-3-5-haiku-latest", 0.80, 4.00, 0.08),
    ("claude-haiku-4-5", 1.00, 5.00, 0.10),
    ("claude-sonnet-4-5", 3.00, 15.00, 0.30),
    ("claude-sonnet-4-0", 3.00, 15.00, 0.30),
    ("claude-opus-4-1", 15.00, 75.00, 1.50),
    // Groq (no prompt cache discount).
    ("llama-3.1-8b-instant", 0.05, 0.08, 0.05),
    ("llama-3.3-70b-versatile", 0.59, 0.79, 0.59),
    ("openai/gpt-oss-20b", 0.10, 0.50, 0.10),
    ("openai/gpt-oss-120b", 0.15, 0.75, 0.15),
];

/// Speech models' list prices, USD per minute of audio (2026): OpenAI's
/// `whisper-1` $0.006/min, Groq's `whisper-large-v3` $0.111/h and
/// `-turbo` $0.04/h (Groq bills at least 10 s a request; set `[[prices]]`
/// to model your account).
const AUDIO_DEFAULTS: &[(&str, f64)] =
    &[("whisper-1", 0.006), ("whisper-large-v3", 0.111 / 60.0), ("whisper-large-v3-turbo", 0.04 / 60.0)];

/// The price table: config entries, then the defaults by model name.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    configured: Vec<PriceConfig>,
}

impl Prices {
    /// A table with these overrides.
    pub fn new(configured: Vec<PriceConfig>) -> Self {
        Self { configured }
    }

    /// The price of `model` at `provider`, if known.
    pub fn get(&self, provider: &str, model: &str) -> Option<Price> {
        self.configured
            .iter()
            .find(|p| p.provider == provider && p.model == model)
            .map(|p| p.price)
            .or_else(|| {
                DEFAULTS.iter().find(|d| d.0 == model).map(|&(_, input, output, cached)| Price {
                    input,
                    output,
                    cached_input: Some(cached),
                    audio_minute: None,
                })
            })
            .or_else(|| {
                AUDIO_DEFAULTS.iter().find(|d| d.0 == model).map(|&(_, per_minute)| Price {
                    input: 0.0,
                    output: 0.0,
                    cached_input: None,
                    audio_minute: Some(per_minute),
                })
            })
    }
}

/// The local engine's marginal price. The GPU is paid by the hour whether
/// it works or not, so a token costs what it displaces: nothing while
/// slots are free, up to the GPU's hourly price over one stream's rate
/// when every slot is taken (a request then delays the others). The
/// utilisation is admitted sequences over slots decoded together; prompt
/// tokens are left out (prefill runs several times faster than decode).
pub fn local_price(gpu_usd_per_hour: f64, admitted: usize, max_running: usize, tokens_per_second: f64) -> Price {
    let max_running = max_running.max(1);
    let utilisation = (admitted as f64 / max_running as f64).min(1.0);
    // One stream's share of the measured aggregate rate; before anything
    // was measured, assume a full batch would have run.
    let per_stream = if tokens_per_second > 0.0 { tokens_per_second / admitted.clamp(1, max_running) as f64 } else { 0.0 };
    let output = if per_stream > 0.0 { gpu_usd_per_hour / 3600.0 / per_stream * 1e6 * utilisation } else { 0.0 };
    Price { input: 0.0, output, cached_input: None, audio_minute: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_overrides_defaults_and_costs_add_up() {
        let prices = Prices::new(vec![PriceConfig {
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            price: Price { input: 1.0, output: 2.0, cached_input: None, audio_minute: None },
        }]);
        assert_eq!(prices.get("openai", "gpt-4o-mini").map(|p| p.input), Some(1.0));
        // Another provider name serving the same model falls back to the list price.
        let list = prices.get("azure", "gpt-4o-mini").expect("default");
        assert_eq!((list.input, list.output), (0.15, 0.60));
        assert!(prices.get("openai", "unknown-model").is_none());
        // 1000 fresh + 1000 cached input, 500 output.
        let cost = list.cost(2000, 1000, 500);
        assert!((cost - (1000.0 * 0.15 + 1000.0 * 0.075 + 500.0 * 0.60) / 1e6).abs() < 1e-12);
        assert_eq!(prices.get("groq", "whisper-large-v3").and_then(|p| p.audio_minute), Some(0.111 / 60.0));
        let per_minute: PriceConfig =
            serde_json::from_value(serde_json::json!({"provider": "groq", "model": "whisper-large-v3", "audio_minute": 0.002})).expect("price");
        assert_eq!((per_minute.price.input, per_minute.price.audio_minute), (0.0, Some(0.002)));
    }

    #[test]
    fn an_idle_gpu_is_free_and_a_full_one_costs_its_hourly_rate() {
        assert_eq!(local_price(2.0, 0, 16, 300.0).output, 0.0);
        // Full: 16 streams sharing 320 tok/s, 20 tok/s each: $2/h / 20 tok/s.
        let full = local_price(2.0, 16, 16, 320.0).output;
        assert!((full - 2.0 / 3600.0 / 20.0 * 1e6).abs() < 1e-6, "{full}");
        let half = local_price(2.0, 8, 16, 160.0).output;
        assert!(half < full && half > 0.0);
    }
}
