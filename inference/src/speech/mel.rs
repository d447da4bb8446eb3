//! Whisper's log-mel front end, as faster-whisper's `FeatureExtractor` computes it:
//! 160 zero samples appended, a centred STFT (reflect padding, periodic Hann
//! window, n_fft 400, hop 160) whose last frame is dropped, power spectrum,
//! librosa's Slaney mel filter bank (not stored in the model file, so computed
//! here), `log10(max(x, 1e-10))`, floored at the clip's maximum minus 8, then
//! `(x + 4) / 4`. The whole clip is transformed once; 30 s windows are cut out
//! of the result.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub const SAMPLE_RATE: u32 = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Mel frames per 30 s window, the encoder's full input.
pub const WINDOW_FRAMES: usize = 3000;

/// A log-mel spectrogram, `[n_mels][frames]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct LogMel {
    pub n_mels: usize,
    pub frames: usize,
    pub data: Vec<f32>,
}

impl LogMel {
    /// Frames `start..start + len` of every bin, zero-padded past the end (as
    /// faster-whisper's `pad_or_trim` pads the spectrogram, not the audio).
    pub fn window(&self, start: usize, len: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.n_mels * len];
        let have = self.frames.saturating_sub(start).min(len);
        for m in 0..self.n_mels {
            let row = &self.data[m * self.frames..(m + 1) * self.frames];
            out[m * len..m * len + have].copy_from_slice(&row[start..start + have]);
        }
        out
    }
}

/// The front end for one mel size (80 for Whisper up to large-v2, 128 for large-v3).
#[derive(Clone)]
pub struct MelFrontEnd {
    n_mels: usize,
    /// `[n_mels][N_FFT / 2 + 1]`, each row stored as (first non-zero bin, weights).
    filters: Vec<(usize, Vec<f32>)>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for MelFrontEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelFrontEnd").field("n_mels", &self.n_mels).finish()
    }
}

impl MelFrontEnd {
    pub fn new(n_mels: usize) -> Self {
        let window = (0..N_FFT)
            .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()) as f32)
            .collect();
        let filters = slaney_filters(n_mels, N_FFT, SAMPLE_RATE as f64)
            .into_iter()
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |l| l + 1);
                (first, row[first..last].to_vec())
            })
            .collect();
        Self {
            n_mels,
            filters,
            window,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// The log-mel spectrogram of 16 kHz mono samples.
    pub fn compute(&self, samples: &[f32]) -> LogMel {
        let pad = N_FFT / 2;
        // 160 trailing zeros (faster-whisper's `padding=160`), then reflect-pad both ends.
        let mut x = samples.to_vec();
        x.extend(std::iter::repeat_n(0.0, HOP));
        let n = x.len();
        let reflect = |i: isize| -> f32 {
            // numpy "reflect": the edge sample is not repeated.
            let mut i = i;
            let n = n as isize;
            if n == 1 {
                return x[0];
            }
            loop {
                if i < 0 {
                    i = -i;
                } else if i >= n {
                    i = 2 * (n - 1) - i;
                } else {
                    return x[i as usize];
                }
            }
        };
        let total = n + 2 * pad;
        // torch/numpy STFT frame count, less the dropped last frame.
        let frames = (total - N_FFT) / HOP;
        let bins = N_FFT / 2 + 1;
        // One frame's power spectrum at a time, straight into the mel bins:
        // an hour of audio would need 290 MB for all frames' spectra.
        let mut power = vec![0.0f32; bins];
        let mut data = vec![0.0f32; self.n_mels * frames];
        let mut max = f32::NEG_INFINITY;
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        for f in 0..frames {
            let start = (f * HOP) as isize - pad as isize;
            for (j, v) in input.iter_mut().enumerate() {
                *v = reflect(start + j as isize) * self.window[j];
            }
            // Lengths come from the plan itself, so this cannot fail.
            if self.fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch).is_err() {
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, (first, w)) in self.filters.iter().enumerate() {
                let e: f32 = power[*first..first + w.len()].iter().zip(w).map(|(a, b)| a * b).sum();
                let l = e.max(1e-10).log10();
                max = max.max(l);
                data[m * frames + f] = l;
            }
        }
        for v in &mut data {
            *v = (v.max(max - 8.0) + 4.0) / 4.0;
        }
        LogMel {
            n_mels: self.n_mels,
            frames,
            data,
        }
    }
}

/// Slaney-scale mel (librosa's default, `htk=False`).
fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let (min_log_hz, min_log_mel, logstep) = (1000.0, 1000.0 / f_sp, 6.4f64.ln() / 27.0);
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let (min_log_hz, min_log_mel, logstep) = (1000.0, 1000.0 / f_sp, 6.4f64.ln() / 27.0);
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// librosa.filters.mel(sr, n_fft, n_mels, fmin=0, fmax=sr/2, norm="slaney").
fn slaney_filters(n_mels: usize, n_fft: usize, sr: f64) -> Vec<Vec<f32>> {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins).map(|i| i as f64 * sr / n_fft as f64).collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    (0..n_mels)
        .map(|i| {
            let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
            fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - mel_f[i]) / (mel_f[i + 1] - mel_f[i]);
                    let upper = (mel_f[i + 2] - f) / (mel_f[i + 2] - mel_f[i + 1]);
                    (lower.min(upper).max(0.0) * enorm) as f32
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips_and_matches_librosa_at_8_khz() {
        for hz in [0.0, 440.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6);
        }
        // librosa.hz_to_mel(8000) == 45.245640471924965
        assert!((hz_to_mel(8000.0) - 45.245640471924965).abs() < 1e-9);
    }

    #[test]
    fn frame_count_follows_the_centred_stft_less_its_last_frame() {
        let fe = MelFrontEnd::new(80);
        for n in [0, 1, 159, 160, 16_000, 48_123] {
            let mel = fe.compute(&vec![0.1; n.max(1)]);
            assert_eq!(mel.frames, n.max(1) / HOP + 1, "{n} samples");
            assert_eq!(mel.data.len(), 80 * mel.frames);
        }
    }
}
