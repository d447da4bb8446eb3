//! Circuit breakers, one per provider and model: closed (traffic flows),
//! open (skipped until a time), half-open (one probe decides).
//!
//! A breaker opens after `consecutive_failures` in a row, or when the
//! failure ratio over the last `window_secs` reaches `error_ratio` with at
//! least `min_requests` outcomes, for `cooldown_secs`. A 429 opens it until
//! the provider's own reset time instead. After the cooldown one request is
//! let through: success closes it, failure opens it again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Traffic flows.
    Closed,
    /// Skipped until then.
    Open {
        /// When a probe may go.
        until: Instant,
    },
    /// One probe is in flight (since then).
    HalfOpen {
        /// When the probe started; a probe that never reports (its request
        /// was dropped) is replaced after a cooldown.
        since: Instant,
    },
}

impl State {
    /// 0 closed, 1 open, 2 half-open (the `/metrics` gauge).
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open { .. } => 1,
            Self::HalfOpen { .. } => 2,
        }
    }
}

#[derive(Debug)]
struct Breaker {
    state: State,
    consecutive: u32,
    /// (when, failed) of recent outcomes.
    window: VecDeque<(Instant, bool)>,
}

/// Every breaker, keyed by (provider, model).
#[derive(Debug)]
pub struct Breakers {
    config: BreakerConfig,
    map: Mutex<HashMap<(String, String), Breaker>>,
}

impl Breakers {
    /// No breaker yet: all closed.
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, map: Mutex::new(HashMap::new()) }
    }

    fn with<R>(&self, provider: &str, model: &str, f: impl FnOnce(&mut Breaker, &BreakerConfig) -> R) -> R {
        // A poisoned lock only means another request panicked mid-update;
        // the counters are still usable.
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry((provider.to_owned(), model.to_owned())).or_insert_with(|| Breaker {
            state: State::Closed,
            consecutive: 0,
            window: VecDeque::new(),
        });
        f(b, &self.config)
    }

    /// May a request go to this candidate now? Moves an expired open
    /// breaker to half-open and lets exactly this request probe.
    pub fn allow(&self, provider: &str, model: &str, now: Instant) -> bool {
        self.with(provider, model, |b, cfg| match b.state {
            State::Closed => true,
            State::Open { until } if now >= until => {
                b.state = State::HalfOpen { since: now };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { since } if now.duration_since(since) >= Duration::from_secs(cfg.cooldown_secs) => {
                b.state = State::HalfOpen { since: now };
                true
            }
            State::HalfOpen { .. } => false,
        })
    }

    /// The candidate answered.
    pub fn success(&self, provider: &str, model: &str, now: Instant) {
        self.with(provider, model, |b, cfg| {
            b.state = State::Closed;
            b.consecutive = 0;
            b.record(now, false, cfg);
        });
    }

    /// The candidate failed in a way that says something about its health
    /// (connect error, timeout, 429, 5xx). `reset_after`: the provider said
    /// when to come back (429 `Retry-After`).
    pub fn failure(&self, provider: &str, model: &str, now: Instant, reset_after: Option<Duration>) {
        self.with(provider, model, |b, cfg| {
            b.consecutive += 1;
            b.record(now, true, cfg);
            let cooldown = Duration::from_secs(cfg.cooldown_secs);
            if let Some(after) = reset_after {
                // `after` is the provider's word: a clock that cannot hold it
                // keeps the breaker open for the cooldown instead.
                b.state = State::Open { until: now.checked_add(after).unwrap_or(now + cooldown) };
                return;
            }
            let (total, failed) = (b.window.len() as u32, b.window.iter().filter(|(_, f)| *f).count() as u32);
            let ratio_trips = total >= cfg.min_requests && f64::from(failed) >= cfg.error_ratio * f64::from(total);
            let trips = matches!(b.state, State::HalfOpen { .. }) || b.consecutive >= cfg.consecutive_failures || ratio_trips;
            if trips {
                b.state = State::Open { until: now + cooldown };
            }
        });
    }

    /// A half-open probe ended without saying anything about health (the
    /// request was the client's fault): let the next request probe.
    pub fn release(&self, provider: &str, model: &str) {
        self.with(provider, model, |b, _| {
            if let State::HalfOpen { .. } = b.state {
                b.state = State::Open { until: Instant::now() };
            }
        });
    }

    /// Current state of one breaker.
    pub fn state(&self, provider: &str, model: &str) -> State {
        self.with(provider, model, |b, _| b.state)
    }

    /// Every breaker's state, for `/metrics`.
    pub fn states(&self) -> Vec<(String, String, State)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|((p, m), b)| (p.clone(), m.clone(), b.state)).collect()
    }
}

impl Breaker {
    fn record(&mut self, now: Instant, failed: bool, cfg: &BreakerConfig) {
        let window = Duration::from_secs(cfg.window_secs);
        while self.window.front().is_some_and(|(t, _)| now.duration_since(*t) > window) {
            self.window.pop_front();
        }
        self.window.push_back((now, failed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig { consecutive_failures: 3, error_ratio: 0.5, min_requests: 4, window_secs: 30, cooldown_secs: 10 }
    }

    #[test]
    fn consecutive_failures_open_then_one_probe_closes() {
        let b = Breakers::new(cfg());
        let t0 = Instant::now();
        for i in 0..2 {
            b.failure("p", "m", t0 + Duration::from_secs(i), None);
            assert_eq!(b.state("p", "m"), State::Closed);
        }
        b.failure("p", "m", t0 + Duration::from_secs(2), None);
        assert!(matches!(b.state("p", "m"), State::Open { .. }));
        assert!(!b.allow("p", "m", t0 + Duration::from_secs(5)));
        // Cooldown over: exactly one probe.
        let later = t0 + Duration::from_secs(13);
        assert!(b.allow("p", "m", later));
        assert!(!b.allow("p", "m", later));
        b.success("p", "m", later);
        assert_eq!(b.state("p", "m"), State::Closed);
        assert!(b.allow("p", "m", later));
    }

    #[test]
    fn failed_probe_reopens() {
        let b = Breakers::new(cfg());
        let t0 = Instant::now();
        for _ in 0..3 {
            b.failure("p", "m", t0, None);
        }
        let probe = t0 + Duration::from_secs(11);
        assert!(b.allow("p", "m", probe));
        b.failure("p", "m", probe, None);
        assert_eq!(b.state("p", "m"), State::Open { until: probe + Duration::from_secs(10) });
    }

    #[test]
    fn error_ratio_opens_without_a_streak() {
        let b = Breakers::new(cfg());
        let t0 = Instant::now();
        // F S F S: never 3 in a row, but 2 of 4 failed.
        b.failure("p", "m", t0, None);
        b.success("p", "m", t0);
        b.failure("p", "m", t0, None);
        assert_eq!(b.state("p", "m"), State::Closed);
        b.success("p", "m", t0);
        b.failure("p", "m", t0, None);
        assert!(matches!(b.state("p", "m"), State::Open { .. }));
    }

    #[test]
    fn rate_limit_opens_until_the_reset_and_keys_are_separate() {
        let b = Breakers::new(cfg());
        let t0 = Instant::now();
        b.failure("p", "m", t0, Some(Duration::from_secs(2)));
        assert!(!b.allow("p", "m", t0 + Duration::from_secs(1)));
        assert!(b.allow("p", "other", t0));
        assert!(b.allow("p", "m", t0 + Duration::from_secs(2)));
    }

    /// A reset the clock cannot hold (a hostile `Retry-After`) opens the
    /// breaker for the cooldown rather than panicking.
    #[test]
    fn unrepresentable_reset_opens_for_the_cooldown() {
        let b = Breakers::new(cfg());
        let t0 = Instant::now();
        b.failure("p", "m", t0, Some(Duration::MAX));
        assert!(!b.allow("p", "m", t0 + Duration::from_secs(5)));
        assert!(b.allow("p", "m", t0 + Duration::from_secs(11)));
    }
}
