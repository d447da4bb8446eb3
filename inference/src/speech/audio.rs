//! Audio in: any container and codec symphonia decodes (WAV PCM 8/16/24/32-bit
//! and float, FLAC, MP3, Ogg Vorbis, WebM/Matroska with those codecs), downmixed
//! to mono and resampled to 16 kHz with rubato's FFT resampler (band-limited,
//! not nearest-sample).
//!
//! Opus is not decoded: symphonia has no Opus decoder and the maintained one
//! (`opus`, libopus bindings) needs the C library at build and run time; a
//! client recording in a browser can send WAV or convert first. An Opus file
//! gets the "unsupported codec" error below.

use std::io::Cursor;

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::speech::mel::SAMPLE_RATE;

/// Why a body is not audio we can transcribe. Each message names the problem
/// as a client should read it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AudioError {
    #[error("the audio file is empty")]
    Empty,
    #[error("the audio format is not supported or not recognised ({0}); send WAV, FLAC, MP3 or Ogg Vorbis")]
    Unsupported(String),
    #[error("the audio file is corrupt: {0}")]
    Corrupt(String),
    #[error("the audio contains no samples")]
    NoSamples,
    #[error("the audio is silent")]
    Silent,
    #[error("the audio is {secs:.1} s long; the limit is {limit:.0} s")]
    TooLong { secs: f32, limit: f32 },
}

/// Decoded audio: 16 kHz mono samples in [-1, 1].
#[derive(Clone, Debug)]
pub struct Audio {
    pub samples: Vec<f32>,
    /// The file's own rate and channel count, for logs and metrics.
    pub source_rate: u32,
    pub source_channels: usize,
}

impl Audio {
    pub fn seconds(&self) -> f32 {
        self.samples.len() as f32 / SAMPLE_RATE as f32
    }
}

/// Peak amplitude under which a clip counts as silent (about -80 dBFS).
const SILENCE_PEAK: f32 = 1e-4;

/// Decode `bytes` (the file name's extension, if any, helps the probe) into
/// 16 kHz mono, refusing audio longer than `max_secs`.
pub fn decode(bytes: Vec<u8>, extension: Option<&str>, max_secs: f32) -> Result<Audio, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &FormatOptions::default(), &MetadataOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(what) => AudioError::Unsupported(what.to_string()),
            SymphoniaError::IoError(_) => AudioError::Unsupported("unrecognised container".into()),
            other => AudioError::Corrupt(other.to_string()),
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::Unsupported("no audio track".into()))?;
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| AudioError::Unsupported(format!("codec: {e}")))?;
    let mut rate = track.codec_params.sample_rate;
    let mut channels = track.codec_params.channels.map(|c| c.count());
    let mut mono: Vec<f32> = Vec::new();
    let mut buf: Option<SampleBuffer<f32>> = None;
    let mut bad_packets = 0usize;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged packet is skipped, as players do; a file of only damaged packets is corrupt below.
            Err(SymphoniaError::DecodeError(_)) => {
                bad_packets += 1;
                continue;
            }
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        let spec = *decoded.spec();
        rate = Some(spec.rate);
        let ch = spec.channels.count().max(1);
        channels = Some(ch);
        let b = match &mut buf {
            Some(b) if b.capacity() >= decoded.capacity() * ch => b,
            _ => buf.insert(SampleBuffer::<f32>::new(decoded.capacity() as u64, spec)),
        };
        b.copy_interleaved_ref(decoded);
        mono.extend(b.samples().chunks(ch).map(|f| f.iter().sum::<f32>() / ch as f32));
        let secs = mono.len() as f32 / spec.rate.max(1) as f32;
        if secs > max_secs {
            return Err(AudioError::TooLong { secs, limit: max_secs });
        }
    }
    let rate = rate.ok_or_else(|| AudioError::Corrupt("no sample rate".into()))?;
    if mono.is_empty() {
        return Err(if bad_packets > 0 {
            AudioError::Corrupt(format!("{bad_packets} undecodable packets and no audio"))
        } else {
            AudioError::NoSamples
        });
    }
    if mono.iter().all(|s| s.abs() < SILENCE_PEAK) {
        return Err(AudioError::Silent);
    }
    let samples = resample(&mono, rate).map_err(AudioError::Corrupt)?;
    Ok(Audio {
        samples,
        source_rate: rate,
        source_channels: channels.unwrap_or(1),
    })
}

/// Resample mono `input` at `rate` Hz to 16 kHz.
pub fn resample(input: &[f32], rate: u32) -> Result<Vec<f32>, String> {
    if rate == SAMPLE_RATE {
        return Ok(input.to_vec());
    }
    if rate == 0 {
        return Err("sample rate 0".into());
    }
    const CHUNK: usize = 1024;
    let mut r = FftFixedIn::<f32>::new(rate as usize, SAMPLE_RATE as usize, CHUNK, 2, 1).map_err(|e| e.to_string())?;
    let delay = r.output_delay();
    let want = (input.len() as u64 * SAMPLE_RATE as u64).div_ceil(rate as u64) as usize;
    let mut out = Vec::with_capacity(want + delay + CHUNK);
    let mut chunk = vec![0.0f32; CHUNK];
    let mut at = 0;
    // Feed whole chunks, zero-padding the last, then flush the filter's delay with silence.
    while out.len() < want + delay {
        chunk.fill(0.0);
        if at < input.len() {
            let n = (input.len() - at).min(CHUNK);
            chunk[..n].copy_from_slice(&input[at..at + n]);
            at += n;
        }
        let frames = r.process(&[&chunk[..]], None).map_err(|e| e.to_string())?;
        out.extend_from_slice(&frames[0]);
    }
    Ok(out[delay..delay + want].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, frames: &[Vec<i16>]) -> Vec<u8> {
        let data: Vec<u8> = frames.iter().flatten().flat_map(|s| s.to_le_bytes()).collect();
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * channels as u32 * 2).to_le_bytes());
        b.extend_from_slice(&(channels * 2).to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&data);
        b
    }

    fn tone(rate: u32, hz: f32, secs: f32) -> Vec<i16> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| ((2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 8000.0) as i16)
            .collect()
    }

    /// Frequency of the strongest bin of a plain DFT around `hz` (coarse but independent of our resampler).
    fn energy_at(x: &[f32], hz: f32) -> f32 {
        let (mut re, mut im) = (0.0f32, 0.0f32);
        for (i, s) in x.iter().enumerate() {
            let a = 2.0 * std::f32::consts::PI * hz * i as f32 / SAMPLE_RATE as f32;
            re += s * a.cos();
            im += s * a.sin();
        }
        (re * re + im * im).sqrt() / x.len() as f32
    }

    #[test]
    fn stereo_44k_is_downmixed_and_resampled_keeping_the_tone() -> Result<(), AudioError> {
        let t = tone(44_100, 440.0, 1.0);
        let frames: Vec<Vec<i16>> = t.iter().map(|&s| vec![s, s]).collect();
        let a = decode(wav(44_100, 2, &frames), Some("wav"), 30.0)?;
        assert_eq!((a.source_rate, a.source_channels), (44_100, 2));
        assert!((a.samples.len() as i64 - 16_000).abs() <= 1, "{}", a.samples.len());
        // The tone survives at 440 Hz, and nothing appears where nearest-sample aliasing would put it.
        assert!(energy_at(&a.samples, 440.0) > 0.1, "{}", energy_at(&a.samples, 440.0));
        assert!(energy_at(&a.samples, 1000.0) < 0.01);
        Ok(())
    }

    #[test]
    fn bad_input_gets_the_error_that_names_it() {
        assert_eq!(decode(Vec::new(), None, 30.0).expect_err("refused"), AudioError::Empty);
        assert!(matches!(decode(b"not audio at all, just text".to_vec(), None, 30.0), Err(AudioError::Unsupported(_))));
        let silent = wav(16_000, 1, &vec![vec![0i16]; 16_000]);
        assert_eq!(decode(silent, Some("wav"), 30.0).expect_err("refused"), AudioError::Silent);
        let long = wav(16_000, 1, &tone(16_000, 300.0, 3.0).into_iter().map(|s| vec![s]).collect::<Vec<_>>());
        assert!(matches!(decode(long, Some("wav"), 2.0), Err(AudioError::TooLong { .. })));
        let empty_data = wav(16_000, 1, &[]);
        assert!(decode(empty_data, Some("wav"), 30.0).is_err());
    }
}
