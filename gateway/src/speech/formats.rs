//! A transcript in each of OpenAI's audio `response_format`s, and the SSE
//! events of a streamed one (`transcript.text.delta` / `transcript.text.done`).

use inference::speech::{languages, Segment, Transcript};
use serde_json::{json, Value};

/// `usage` as OpenAI reports it for audio billed by duration.
pub fn usage(seconds: f32) -> Value {
    json!({"type": "duration", "seconds": seconds.ceil() as u64})
}

pub fn json(t: &Transcript) -> Value {
    json!({"text": t.text, "usage": usage(t.duration)})
}

pub fn verbose_json(t: &Transcript, task: &str) -> Value {
    let segments: Vec<Value> = t
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": i,
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
        })
        .collect();
    json!({
        "task": task,
        "language": languages::name(t.language.as_deref().unwrap_or("en")),
        "duration": round3(t.duration),
        "text": t.text,
        "segments": segments,
        "usage": usage(t.duration),
    })
}

fn round3(x: f32) -> f64 {
    (x as f64 * 1000.0).round() / 1000.0
}

/// `HH:MM:SS{sep}mmm`.
fn stamp(secs: f32, sep: char) -> String {
    let ms = (secs.max(0.0) as f64 * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{sep}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

pub fn srt(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        out.push_str(&format!("{}\n{} --> {}\n{}\n\n", i + 1, stamp(s.start, ','), stamp(s.end, ','), s.text.trim()));
    }
    out
}

pub fn vtt(segments: &[Segment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in segments {
        out.push_str(&format!("{} --> {}\n{}\n\n", stamp(s.start, '.'), stamp(s.end, '.'), s.text.trim()));
    }
    out
}

/// The delta event of one segment; the first loses its leading space, as the whole text does.
pub fn delta(text: &str, first: bool) -> Value {
    let delta = if first { text.trim_start() } else { text };
    json!({"type": "transcript.text.delta", "delta": delta})
}

pub fn done(t: &Transcript) -> Value {
    json!({"type": "transcript.text.done", "text": t.text, "usage": usage(t.duration)})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: f32, end: f32, text: &str) -> Segment {
        Segment {
            id: 0,
            seek: 0,
            start,
            end,
            text: text.into(),
            tokens: vec![],
            temperature: 0.0,
            avg_logprob: -0.2,
            compression_ratio: 1.0,
            no_speech_prob: 0.01,
        }
    }

    #[test]
    fn subtitles_number_and_time_segments() {
        let s = [seg(0.0, 2.5, " Hello there."), seg(3661.25, 3662.0, " Bye.")];
        assert_eq!(srt(&s), "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye.\n\n");
        assert_eq!(vtt(&s), "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n01:01:01.250 --> 01:01:02.000\nBye.\n\n");
    }
}
