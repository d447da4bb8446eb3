//! Real speech for the Whisper tests and benches: English sentences a user of a social-media scheduler would say, synthesised
//! with festival's HTS voice and converted by sox into the rates, channel counts and codecs clients upload, plus the word error
//! rate to score transcripts by.
//!
//! Synthesised rather than recorded so the clips need no download and no licence, and are the same on every machine (sox runs
//! with `-R`, which seeds its dither and noise). Each clip is made on first use and kept under `models_dir()/speech-clips`
//! (git-ignored with the models), named by a hash of everything that made it: editing a sentence or a recipe makes new files,
//! never serves stale ones.
//!
//! The tools are festival's `text2wave` with `festvox-us-slt-hts`, and sox with `libsox-fmt-mp3`; `scripts/test` installs them.

#![allow(clippy::panic, reason = "test support fails the calling test with a message naming the fix")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// One sentence: what the voice is given, and what a transcript is scored against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sentence {
    /// Stable and file-name safe: clips are cached under it.
    pub id: &'static str,
    /// The text festival reads: numbers as words, because festival's own reading of "9:30" or "$49" is not what a person says.
    pub spoken: &'static str,
    /// The sentence as written, digits and all, the way Whisper writes it; [`crate::wer::normalize`] makes it equal to `spoken`.
    pub reference: &'static str,
}

/// Seventeen sentences of 3-6 s each (3.2-5.1 s with this voice). Every one transcribes with whisper-tiny-en (beam 5) to within
/// punctuation and digit-versus-word spelling, so a test can hold a model to a low error rate: sentences the voice mispronounced
/// (it says "LinkedIn" so that tiny.en hears "link it in") were rephrased. The first [`PASSAGE_SENTENCES`] make [`long_passage`].
pub const SENTENCES: &[Sentence] = &[
    Sentence {
        id: "earbuds-friday",
        spoken: "Schedule a tweet about our new wireless earbuds for Friday at six p.m.",
        reference: "Schedule a tweet about our new wireless earbuds for Friday at 6 p.m.",
    },
    Sentence {
        id: "summer-sale",
        spoken: "Post the summer sale announcement tomorrow at nine thirty in the morning.",
        reference: "Post the summer sale announcement tomorrow at 9:30 in the morning.",
    },
    Sentence {
        id: "shoes-clicks",
        spoken: "How many clicks did the link to the running shoes get yesterday?",
        reference: "How many clicks did the link to the running shoes get yesterday?",
    },
    Sentence {
        id: "pause-grinder",
        spoken: "Pause the coffee grinder campaign until next Monday.",
        reference: "Pause the coffee grinder campaign until next Monday.",
    },
    Sentence {
        id: "espresso-discount",
        spoken: "Our espresso machine is twenty percent off this weekend only.",
        reference: "Our espresso machine is 20% off this weekend only.",
    },
    Sentence {
        id: "backpack-price",
        spoken: "The hiking backpack is back in stock for forty nine dollars.",
        reference: "The hiking backpack is back in stock for $49.",
    },
    Sentence {
        id: "followers",
        spoken: "We gained two thousand new followers on Instagram last week.",
        reference: "We gained 2,000 new followers on Instagram last week.",
    },
    Sentence {
        id: "birthday-reply",
        spoken: "Draft a friendly reply thanking everyone for their birthday wishes.",
        reference: "Draft a friendly reply thanking everyone for their birthday wishes.",
    },
    Sentence {
        id: "queue-march",
        spoken: "Please add three more posts to the queue for the first week of March.",
        reference: "Please add 3 more posts to the queue for the 1st week of March.",
    },
    Sentence {
        id: "newsletter",
        spoken: "Send the weekly newsletter link to Facebook every Tuesday at noon.",
        reference: "Send the weekly newsletter link to Facebook every Tuesday at noon.",
    },
    Sentence {
        id: "engagement",
        spoken: "Show me the engagement report for the last thirty days.",
        reference: "Show me the engagement report for the last 30 days.",
    },
    Sentence {
        id: "blender-cancel",
        spoken: "Please cancel the post about the kitchen blender because the price is wrong.",
        reference: "Please cancel the post about the kitchen blender because the price is wrong.",
    },
    Sentence {
        id: "gift-guide",
        spoken: "Schedule the holiday gift guide for next Saturday at eight a.m.",
        reference: "Schedule the holiday gift guide for next Saturday at 8 a.m.",
    },
    Sentence {
        id: "fitness-watch",
        spoken: "The new fitness watch launches on Thursday, so post a short teaser video today.",
        reference: "The new fitness watch launches on Thursday, so post a short teaser video today.",
    },
    Sentence {
        id: "ad-budget",
        spoken: "Raise the daily ad budget to one hundred fifty dollars.",
        reference: "Raise the daily ad budget to $150.",
    },
    Sentence {
        id: "comments",
        spoken: "Reply to the last twelve comments on the headphones video.",
        reference: "Reply to the last 12 comments on the headphones video.",
    },
    Sentence {
        id: "company-page",
        spoken: "Don't post anything on the company page before ten a.m.",
        reference: "Don't post anything on the company page before 10 a.m.",
    },
];

/// How many of [`SENTENCES`] (the first ones) [`long_passage`] joins: fourteen make about 61 s, past Whisper's 30 s window, so
/// a transcript of it exercises seeking from one window to the next.
pub const PASSAGE_SENTENCES: usize = 14;

/// Silence between the passage's sentences, in seconds: a pause a speaker makes, short enough that Whisper does not drop it as
/// a no-speech window.
const PASSAGE_GAP_S: &str = "0.3";

/// festival's HTS voice: far clearer than its default diphone voice, so a transcription error is the model's, not the voice's.
const VOICE: &str = "(voice_cmu_us_slt_arctic_hts)";

/// sox's effects from festival's output (32 kHz) to the base clip.
const BASE_EFFECTS: [&str; 8] = ["channels", "1", "gain", "-n", "-3", "rate", "-v", "16000"];

/// What a missing tool's panic says to run.
const INSTALL_HINT: &str = "run scripts/test (installs festival, sox)";

/// The forms a clip is delivered in. Each differs from [`Variant::Base16k`] in one respect, so a failing test names what broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// 16 kHz mono 16-bit WAV: what Whisper consumes, no resampling or decoding beyond PCM.
    Base16k,
    /// 8 kHz mono WAV: telephone audio, upsampled on the way in.
    Rate8k,
    /// 44.1 kHz mono WAV: downsampled on the way in.
    Rate44k,
    /// 44.1 kHz stereo WAV (the same speech in both channels): downmixed and downsampled.
    Stereo44k,
    /// MP3 at 64 kbit/s, 16 kHz mono (MPEG-2 layer III), lossy.
    Mp3,
    /// FLAC, 16 kHz mono: lossless, so its samples equal the base clip's.
    Flac,
    /// Ogg Vorbis at quality 3, 16 kHz mono, lossy.
    Ogg,
    /// The base clip with pink noise mixed in about 20 dB below the speech (RMS over the whole clip, pauses included, so the
    /// ratio while words are spoken is a little better): a noisy room, still easy to understand.
    Noisy,
}

impl Variant {
    /// Every variant, for tests that run them all.
    pub const ALL: [Variant; 8] = [
        Variant::Base16k,
        Variant::Rate8k,
        Variant::Rate44k,
        Variant::Stereo44k,
        Variant::Mp3,
        Variant::Flac,
        Variant::Ogg,
        Variant::Noisy,
    ];

    /// The file extension, which is also what a client would name the upload by.
    pub fn extension(self) -> &'static str {
        match self {
            Variant::Mp3 => "mp3",
            Variant::Flac => "flac",
            Variant::Ogg => "ogg",
            Variant::Base16k | Variant::Rate8k | Variant::Rate44k | Variant::Stereo44k | Variant::Noisy => "wav",
        }
    }

    /// The sample rate and channel count of the file.
    pub fn format(self) -> (u32, u16) {
        match self {
            Variant::Rate8k => (8_000, 1),
            Variant::Rate44k => (44_100, 1),
            Variant::Stereo44k => (44_100, 2),
            Variant::Base16k | Variant::Mp3 | Variant::Flac | Variant::Ogg | Variant::Noisy => (16_000, 1),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Variant::Base16k => "base16k",
            Variant::Rate8k => "rate8k",
            Variant::Rate44k => "rate44k",
            Variant::Stereo44k => "stereo44k",
            Variant::Mp3 => "mp3",
            Variant::Flac => "flac",
            Variant::Ogg => "ogg",
            Variant::Noisy => "noisy",
        }
    }

    /// sox's output options and effects that turn the base clip into this variant (the noise is mixed separately). Part of the
    /// cache key: changing them makes new files.
    fn sox_recipe(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Variant::Base16k | Variant::Noisy => (&["-b", "16"], &[]),
            Variant::Rate8k => (&["-b", "16"], &["rate", "-v", "8000"]),
            Variant::Rate44k => (&["-b", "16"], &["rate", "-v", "44100"]),
            Variant::Stereo44k => (&["-b", "16"], &["channels", "2", "rate", "-v", "44100"]),
            Variant::Mp3 => (&["-C", "64"], &[]),
            Variant::Flac => (&["-C", "5"], &[]),
            Variant::Ogg => (&["-C", "3"], &[]),
        }
    }
}

/// How far below the speech's RMS level [`Variant::Noisy`]'s noise is, in dB.
const NOISE_BELOW_SPEECH_DB: f32 = 20.0;

/// A clip of `sentence` as `variant`, synthesised and converted on first use, then reused (across tests, processes and runs).
/// Panics, naming the tool and what to run, when festival or sox is missing.
pub fn clip(sentence: &Sentence, variant: Variant) -> PathBuf {
    if variant == Variant::Base16k {
        // The sox step is part of the key, so a change to how the raw synthesis is converted also makes new files.
        let key = format!("{VOICE}|{}|{}", BASE_EFFECTS.join(" "), sentence.spoken);
        return cached(&format!("{}-{}", sentence.id, variant.tag()), &key, "wav", |dir, out| synthesise(sentence.spoken, dir, out));
    }
    derive(&clip(sentence, Variant::Base16k), &format!("{}-{}", sentence.id, variant.tag()), variant)
}

/// A long clip and what was said in it.
#[derive(Debug, Clone)]
pub struct Passage {
    /// 16 kHz mono 16-bit WAV.
    pub path: PathBuf,
    /// The sentences' references joined by spaces.
    pub reference: String,
}

/// About 61 s of speech: the first [`PASSAGE_SENTENCES`] sentences' base clips with 0.3 s of silence between them, for tests
/// of transcripts longer than one 30 s window and for benches.
pub fn long_passage() -> Passage {
    let sentences = &SENTENCES[..PASSAGE_SENTENCES];
    let parts: Vec<PathBuf> = sentences.iter().map(|s| clip(s, Variant::Base16k)).collect();
    let names: Vec<String> = parts.iter().map(|p| file_name(p)).collect();
    let key = format!("gap {PASSAGE_GAP_S}|{}", names.join("|"));
    let path = cached(&format!("passage-{PASSAGE_SENTENCES}"), &key, "wav", |dir, out| {
        let gap = dir.join("gap.wav");
        let mut silence = Command::new("sox");
        silence.args(["-R", "-n", "-r", "16000", "-c", "1", "-b", "16"]).arg(&gap).args(["trim", "0", PASSAGE_GAP_S]);
        run(&mut silence, "sox");
        let mut join = Command::new("sox");
        join.arg("-R");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                join.arg(&gap);
            }
            join.arg(part);
        }
        run(join.arg(out), "sox");
    });
    Passage { path, reference: sentences.iter().map(|s| s.reference).collect::<Vec<_>>().join(" ") }
}

/// `text` in festival's voice, as 16 kHz mono 16-bit WAV peaking at -3 dBFS (every clip at the same level, so the noise level
/// means the same for each, and no clipping when resampled).
fn synthesise(text: &str, dir: &Path, out: &Path) {
    let input = dir.join("input.txt");
    let raw = dir.join("raw.wav");
    std::fs::write(&input, text).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let stderr = run(Command::new("text2wave").args(["-eval", VOICE, "-o"]).arg(&raw).arg(&input), "text2wave");
    // text2wave exits 0 even when the voice is missing (festival prints "unbound variable" and writes nothing).
    if !std::fs::metadata(&raw).is_ok_and(|m| m.len() > 0) {
        panic!("text2wave wrote no audio; is festival's HTS voice (festvox-us-slt-hts) installed? {INSTALL_HINT}\n{stderr}");
    }
    run(Command::new("sox").arg("-R").arg(&raw).args(["-b", "16"]).arg(out).args(BASE_EFFECTS), "sox");
}

/// `base` (a 16 kHz mono WAV) converted to `variant`, cached under `stem`.
fn derive(base: &Path, stem: &str, variant: Variant) -> PathBuf {
    let (options, effects) = variant.sox_recipe();
    let noise = if variant == Variant::Noisy { format!("pinknoise -{NOISE_BELOW_SPEECH_DB} dB") } else { String::new() };
    let key = format!("{}|{}|{}|{noise}", file_name(base), options.join(" "), effects.join(" "));
    cached(stem, &key, variant.extension(), |dir, out| {
        if variant != Variant::Noisy {
            run(Command::new("sox").arg("-R").arg(base).args(options).arg(out).args(effects), "sox");
            return;
        }
        // Noise of the clip's length, then scaled so its RMS sits NOISE_BELOW_SPEECH_DB under the speech's, and mixed in.
        let frames = wav_info(base).frames;
        let noise = dir.join("noise.wav");
        let synth = format!("{frames}s");
        let mut make_noise = Command::new("sox");
        make_noise.args(["-R", "-n", "-r", "16000", "-c", "1", "-b", "16"]).arg(&noise).args(["synth", &synth, "pinknoise"]);
        run(&mut make_noise, "sox");
        let gain_db = rms_db(base) - NOISE_BELOW_SPEECH_DB - rms_db(&noise);
        let volume = format!("{:.6}", 10f32.powf(gain_db / 20.0));
        run(Command::new("sox").args(["-R", "-m", "-v", "1"]).arg(base).args(["-v", &volume]).arg(&noise).args(options).arg(out), "sox");
    })
}

/// A file's RMS level in dBFS, from `sox FILE -n stats`.
fn rms_db(path: &Path) -> f32 {
    let stats = run(Command::new("sox").arg(path).args(["-n", "stats"]), "sox");
    stats
        .lines()
        .find(|l| l.starts_with("RMS lev dB"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no RMS level in sox stats of {}:\n{stats}", path.display()))
}

/// Runs a tool to completion and returns its stderr; panics naming the tool when it is missing or fails.
fn run(cmd: &mut Command, tool: &str) -> String {
    let output = cmd.output().unwrap_or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            panic!("{tool} is not installed: {INSTALL_HINT}");
        }
        panic!("cannot run {tool}: {e}");
    });
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{tool} failed ({}): {cmd:?}\n{stderr}", output.status);
    stderr
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Where the clips are kept; made on first use.
fn clips_dir() -> PathBuf {
    let dir = crate::models_dir().join("speech-clips");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// `STEM-HASH.EXT` in the clips folder, made by `make(work_dir, output)` when it is not there yet. `make` works in a folder of
/// its own and the result is renamed into place, so tests in other threads and processes see the whole file or none; two that
/// race both make it and the second rename replaces the first with the same content.
fn cached(stem: &str, key: &str, ext: &str, make: impl FnOnce(&Path, &Path)) -> PathBuf {
    let dir = clips_dir();
    let path = dir.join(format!("{stem}-{:016x}.{ext}", fnv1a(key)));
    if path.exists() {
        return path;
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let work = WorkDir(dir.join(format!(".tmp-{stem}-{}-{}-{nanos}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))));
    std::fs::create_dir_all(&work.0).unwrap_or_else(|e| panic!("cannot create {}: {e}", work.0.display()));
    let out = work.0.join(format!("out.{ext}"));
    make(&work.0, &out);
    match std::fs::metadata(&out) {
        Ok(m) if m.len() > 0 => {}
        _ => panic!("{} was not written", out.display()),
    }
    std::fs::rename(&out, &path).unwrap_or_else(|e| panic!("cannot move {} to {}: {e}", out.display(), path.display()));
    path
}

/// A work folder removed when dropped, also when the tool in it panicked.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 64-bit FNV-1a: a stable hash for cache names (std's hasher is not promised stable across releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A WAV file's format, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    pub sample_rate: u32,
    pub channels: u16,
    pub bits_per_sample: u16,
    /// Samples per channel in the data chunk.
    pub frames: usize,
}

/// The format of a PCM WAV file; panics when it is not one.
pub fn wav_info(path: &Path) -> WavInfo {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_wav(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display())).0
}

/// The samples of a 16 kHz mono 16-bit WAV (any clip of [`Variant::Base16k`], [`Variant::Noisy`] or the [`long_passage`]),
/// scaled to [-1, 1); panics on any other format. A convenience for feeding a model directly, without the product's decoder.
pub fn pcm16k(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (info, data) = parse_wav(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        (info.sample_rate, info.channels, info.bits_per_sample) == (16_000, 1, 16),
        "{}: {} Hz, {} channel(s), {}-bit; pcm16k reads 16000 Hz mono 16-bit",
        path.display(),
        info.sample_rate,
        info.channels,
        info.bits_per_sample
    );
    data.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect()
}

/// The RIFF header's format and the data chunk's bytes. Just enough RIFF for sox's output: a `fmt ` chunk (PCM, plain or
/// extensible) before a `data` chunk, other chunks skipped.
fn parse_wav(bytes: &[u8]) -> Result<(WavInfo, &[u8]), String> {
    let u16_at = |i: usize| bytes.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |i: usize| bytes.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err("not a RIFF WAVE file".into());
    }
    let mut format: Option<(u32, u16, u16)> = None;
    let mut at = 12;
    while let (Some(id), Some(size)) = (bytes.get(at..at + 4), u32_at(at + 4)) {
        let body = at + 8;
        // A streamed header may claim more than the file holds: take what is there.
        let end = body.saturating_add(size as usize).min(bytes.len());
        match id {
            b"fmt " => {
                let tag = u16_at(body).ok_or("short fmt chunk")?;
                let pcm = tag == 1 || (tag == 0xFFFE && u16_at(body + 24) == Some(1));
                if !pcm {
                    return Err(format!("WAV format tag {tag:#x} is not PCM"));
                }
                let channels = u16_at(body + 2).ok_or("short fmt chunk")?;
                let rate = u32_at(body + 4).ok_or("short fmt chunk")?;
                let bits = u16_at(body + 14).ok_or("short fmt chunk")?;
                format = Some((rate, channels, bits));
            }
            b"data" => {
                let (sample_rate, channels, bits_per_sample) = format.ok_or("data chunk before the fmt chunk")?;
                let frame_bytes = usize::from(channels) * usize::from(bits_per_sample).div_ceil(8);
                if frame_bytes == 0 {
                    return Err("zero channels or bits per sample".into());
                }
                let data = &bytes[body..end];
                return Ok((WavInfo { sample_rate, channels, bits_per_sample, frames: data.len() / frame_bytes }, data));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = end + (size as usize & 1);
    }
    Err("no data chunk".into())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;
    use crate::wer::{normalize, wer};

    #[test]
    fn sentences_are_well_formed() {
        let mut ids: Vec<&str> = SENTENCES.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), SENTENCES.len(), "sentence ids are unique: clips are cached by them");
        assert!(SENTENCES.len() >= 14 && PASSAGE_SENTENCES <= SENTENCES.len());
        for s in SENTENCES {
            assert!(s.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{}: not file-name safe", s.id);
            // The reference is the spoken text as written: a perfect transcript scores 0 against it.
            assert_eq!(wer(s.reference, s.spoken), 0.0, "{}: {:?} vs {:?}", s.id, normalize(s.reference), normalize(s.spoken));
        }
        let mut tags: Vec<&str> = Variant::ALL.iter().map(|v| v.tag()).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), Variant::ALL.len());
    }

    #[test]
    fn parse_wav_reads_a_minimal_header() {
        let mut wav = Vec::new();
        wav.extend(b"RIFF");
        wav.extend(40u32.to_le_bytes());
        wav.extend(b"WAVE");
        wav.extend(b"LIST");
        wav.extend(3u32.to_le_bytes());
        wav.extend([0, 0, 0, 0]); // three bytes and the pad byte
        wav.extend(b"fmt ");
        wav.extend(16u32.to_le_bytes());
        wav.extend(1u16.to_le_bytes());
        wav.extend(1u16.to_le_bytes());
        wav.extend(16_000u32.to_le_bytes());
        wav.extend(32_000u32.to_le_bytes());
        wav.extend(2u16.to_le_bytes());
        wav.extend(16u16.to_le_bytes());
        wav.extend(b"data");
        wav.extend(4u32.to_le_bytes());
        wav.extend(i16::MIN.to_le_bytes());
        wav.extend(16_384i16.to_le_bytes());
        let (info, data) = parse_wav(&wav).expect("wav");
        assert_eq!(info, WavInfo { sample_rate: 16_000, channels: 1, bits_per_sample: 16, frames: 2 });
        assert_eq!(data.len(), 4);
        assert!(parse_wav(b"RIFX0000WAVE").is_err());
    }

    /// Needs festival and sox (`scripts/test` installs them).
    #[test]
    fn synthesises_and_caches_a_clip() {
        let s = &SENTENCES[0];
        let wav = clip(s, Variant::Base16k);
        let mp3 = clip(s, Variant::Mp3);
        let info = wav_info(&wav);
        assert_eq!((info.sample_rate, info.channels, info.bits_per_sample), (16_000, 1, 16), "{}", wav.display());
        let secs = info.frames as f32 / 16_000.0;
        assert!((3.0..=6.0).contains(&secs), "{}: {secs} s", wav.display());
        let samples = pcm16k(&wav);
        assert_eq!(samples.len(), info.frames);
        let peak = samples.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(peak > 0.5, "peak {peak}: the clip is normalised to -3 dBFS");
        let mp3_len = std::fs::metadata(&mp3).expect("mp3").len();
        // 64 kbit/s for about 4.5 s is about 36 KB.
        assert!(mp3_len > 10_000, "{}: {mp3_len} bytes", mp3.display());
        assert_eq!(mp3.extension(), Some(OsStr::new("mp3")));
        // Cached: the same path again, and not rewritten.
        let modified = std::fs::metadata(&wav).and_then(|m| m.modified()).expect("mtime");
        assert_eq!(clip(s, Variant::Base16k), wav);
        assert_eq!(std::fs::metadata(&wav).and_then(|m| m.modified()).expect("mtime"), modified);
    }
}
