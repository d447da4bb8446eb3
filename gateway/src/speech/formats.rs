//! A transcript in each of OpenAI's audio `response_format`s, and the SSE
//! events of a streamed one (`transcript.text.delta` / `transcript.text.done`).
//!
//! Every provider answers `verbose_json` (the local engines build it here
//! from their [`Transcript`]); the client's format is rendered from that.

use inference::speech::{languages, Segment, Transcript};
use serde_json::{json, Value};

/// `usage` as OpenAI reports it for audio billed by duration.
pub fn usage(seconds: f64) -> Value {
    json!({"type": "duration", "seconds": seconds.ceil().max(0.0) as u64})
}

/// The local engine's transcript as OpenAI's `verbose_json`.
pub fn verbose_json(t: &Transcript, task: &str) -> Value {
    let duration = round3(t.duration);
    json!({
        "task": task,
        "language": languages::name(t.language.as_deref().unwrap_or("en")),
        "duration": duration,
        "text": t.text,
        "segments": t.segments.iter().map(segment).collect::<Vec<_>>(),
        "usage": usage(duration),
    })
}

/// One segment of `verbose_json`.
pub fn segment(s: &Segment) -> Value {
    json!({
        "id": s.id,
        "seek": s.seek,
        "start": round3(s.start),
        "end": round3(s.end),
        "text": s.text,
        "tokens": s.tokens,
        "temperature": s.temperature,
        "avg_logprob": s.avg_logprob,
        "compression_ratio": s.compression_ratio,
        "no_speech_prob": s.no_speech_prob,
    })
}

fn round3(x: f32) -> f64 {
    (f64::from(x) * 1000.0).round() / 1000.0
}

/// Seconds of audio a `verbose_json` answer covers.
pub fn duration(v: &Value) -> f64 {
    v["duration"].as_f64().unwrap_or(0.0)
}

/// Its text (OpenAI's has no leading space; Whisper's segments do).
pub fn text(v: &Value) -> &str {
    v["text"].as_str().unwrap_or_default().trim()
}

/// Its segments (none when a provider sends none).
pub fn segments(v: &Value) -> &[Value] {
    v["segments"].as_array().map_or(&[], Vec::as_slice)
}

/// `verbose_json` as the client gets it: with `usage`, which older answers lack.
pub fn verbose(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if !o.contains_key("usage") {
            let seconds = o.get("duration").and_then(Value::as_f64).unwrap_or(0.0);
            o.insert("usage".into(), usage(seconds));
        }
    }
    v
}

/// `json`: the text and its usage.
pub fn json(v: &Value) -> Value {
    json!({"text": text(v), "usage": usage(duration(v))})
}

/// `HH:MM:SS{sep}mmm`.
fn stamp(secs: f64, sep: char) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{sep}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// (start, end, text) of a segment.
fn cue(s: &Value) -> (f64, f64, &str) {
    (s["start"].as_f64().unwrap_or(0.0), s["end"].as_f64().unwrap_or(0.0), s["text"].as_str().unwrap_or_default().trim())
}

pub fn srt(v: &Value) -> String {
    let mut out = String::new();
    for (i, s) in segments(v).iter().enumerate() {
        let (start, end, text) = cue(s);
        out.push_str(&format!("{}\n{} --> {}\n{text}\n\n", i + 1, stamp(start, ','), stamp(end, ',')));
    }
    out
}

pub fn vtt(v: &Value) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in segments(v) {
        let (start, end, text) = cue(s);
        out.push_str(&format!("{} --> {}\n{text}\n\n", stamp(start, '.'), stamp(end, '.')));
    }
    out
}

/// The delta event of one segment; the first loses its leading space, as the whole text does.
pub fn delta(segment: &Value, first: bool) -> Value {
    let text = segment["text"].as_str().unwrap_or_default();
    let delta = if first { text.trim_start() } else { text };
    json!({"type": "transcript.text.delta", "delta": delta})
}

pub fn done(v: &Value) -> Value {
    json!({"type": "transcript.text.done", "text": text(v), "usage": usage(duration(v))})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtitles_number_and_time_segments() {
        let v = json!({"segments": [
            {"start": 0.0, "end": 2.5, "text": " Hello there."},
            {"start": 3661.25, "end": 3662.0, "text": " Bye."},
        ]});
        assert_eq!(srt(&v), "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n\n");
        assert_eq!(vtt(&v), "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n01:01:01.250 --> 01:01:02.000\nBye.\n\n");
        // An answer without segments (or a hostile one) renders empty, never panics.
        assert_eq!(srt(&json!({"segments": "no"})), "");
        assert_eq!(json(&json!({"text": 7})), json!({"text": "", "usage": {"type": "duration", "seconds": 0}}));
    }
}
