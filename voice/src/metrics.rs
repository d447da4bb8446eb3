//! Prometheus metrics of voice commands, in the process's one registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::service::Answer;

/// Commands by intent and outcome; latency by stage.
#[derive(Clone, Debug)]
pub struct VoiceMetrics {
    commands: IntCounterVec,
    seconds: HistogramVec,
}

impl VoiceMetrics {
    /// Registered in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let commands = IntCounterVec::new(Opts::new("starling_voice_commands_total", "Voice commands by intent and outcome (done, needs_confirmation, incomplete, unknown, failed, refused)."), &["intent", "outcome"])?;
        let buckets = vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0];
        let seconds = HistogramVec::new(
            HistogramOpts::new("starling_voice_command_seconds", "Voice command latency by stage: speech, intent, action, total.").buckets(buckets),
            &["stage"],
        )?;
        registry.register(Box::new(commands.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(Self { commands, seconds })
    }

    /// Count `a` and its stages.
    pub fn observe(&self, a: &Answer) {
        self.commands.with_label_values(&[a.intent.as_str(), a.status.as_str()]).inc();
        let t = &a.timings;
        if t.speech_ms > 0.0 {
            self.seconds.with_label_values(&["speech"]).observe(t.speech_ms / 1e3);
        }
        for (stage, ms) in [("intent", t.intent_ms), ("action", t.action_ms), ("total", t.total_ms)] {
            self.seconds.with_label_values(&[stage]).observe(ms / 1e3);
        }
    }
}
