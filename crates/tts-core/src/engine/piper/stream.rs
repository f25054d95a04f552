//! Runs a split Piper voice: the first part once per chunk, then the decoder over windows of latent
//! frames, each window's PCM handed on as soon as it exists.
//!
//! The decoder is convolutional, so a window of latent frames decodes to the same samples as the whole
//! latent does, provided the window carries enough frames of context on each side to cover the
//! decoder's receptive field. [`OVERLAP_FRAMES`] was measured (en_US-joe-medium, `noise_scale = 0`):
//! against the decoder run over the whole latent, 0 frames of context give 15.6 dB SNR, 4 give 36 dB,
//! 8 give 65 dB and 12 or more are exact to float precision (129 dB).
//!
//! Every window pays its context twice over (2 × [`OVERLAP_FRAMES`] frames decoded and thrown away), so
//! windows are as large as the listener allows ([`window_frames`]): a listener waiting for first audio
//! gets a [`FIRST_WINDOW_FRAMES`] window, and each later window may take as long to decode as half the
//! audio the listener has in hand. A chunk whose session has seconds of audio buffered decodes in one
//! window up to [`MAX_WINDOW_FRAMES`], paying almost nothing for its context.

use std::time::{Duration, Instant};

use ort::session::Session;
use ort::value::{DynTensor, Tensor};

/// Latent frames of context on each side of a window.
pub(super) const OVERLAP_FRAMES: usize = 10;
/// Latent frames in the first window (one frame is 256 samples, 11.6 ms at 22,050 Hz).
pub(super) const FIRST_WINDOW_FRAMES: usize = 24;
/// The largest window (3 s of audio at 22,050 Hz). Its context adds 8 % of decoder work, but per frame
/// a 256-frame window decodes as fast as a 512-frame one with half the context (smaller tensors stay in
/// cache: 0.68 ms per frame either way, measured), and it halves the decoder's working memory.
pub(super) const MAX_WINDOW_FRAMES: usize = 256;
/// The share of the listener's audio in hand a window may take to decode.
const BUDGET_SHARE: f64 = 0.5;
/// Decoder seconds per latent frame assumed before an instance has measured its own (pessimistic:
/// about 0.17 × real time, so the first windows err small).
const INITIAL_SECONDS_PER_FRAME: f64 = 0.002;
/// Weight of the newest window in the running estimate of seconds per frame.
const EWMA_WEIGHT: f64 = 0.3;

/// The next window's size in latent frames, `remaining` frames still to decode, when the listener's
/// audio lasts `budget` more and decoding costs `seconds_per_frame` (context included): the largest
/// window that decodes within [`BUDGET_SHARE`] of the budget, at least [`FIRST_WINDOW_FRAMES`] and at
/// most [`MAX_WINDOW_FRAMES`]. A tail no longer than the context is taken along rather than decoded on
/// its own.
pub(super) fn window_frames(remaining: usize, budget: Duration, seconds_per_frame: f64) -> usize {
    let affordable = budget.as_secs_f64() * BUDGET_SHARE / seconds_per_frame.max(1e-9);
    let affordable = if affordable.is_finite() {
        affordable.min(1e9) as usize
    } else {
        usize::MAX
    };
    let size = affordable
        .saturating_sub(2 * OVERLAP_FRAMES)
        .clamp(FIRST_WINDOW_FRAMES, MAX_WINDOW_FRAMES);
    if remaining <= size + OVERLAP_FRAMES {
        remaining
    } else {
        size
    }
}

/// When the listener runs out of audio while a chunk is being decoded: `deadline` (when its audio in
/// hand ends; a moment already past when it has none) until the chunk's first PCM, then that moment or
/// the first PCM's, whichever is later, plus `emitted` of audio.
pub(super) fn playback_end(
    deadline: Instant,
    first_pcm: Option<Instant>,
    emitted: Duration,
    now: Instant,
) -> Instant {
    match first_pcm {
        None => deadline.max(now),
        Some(at) => deadline.max(at) + emitted,
    }
}

/// `[start, end)` ranges of latent frames that cover `frames`: `first`, then doubling up to `max`.
pub(super) fn windows(frames: usize, first: usize, max: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = first.max(1);
    while start < frames {
        let end = (start + size).min(frames);
        out.push((start, end));
        start = end;
        size = (size * 2).min(max.max(1));
    }
    out
}

/// A tensor copied out of the first part's outputs, so it outlives them.
pub(super) struct Owned {
    pub(super) shape: Vec<i64>,
    pub(super) data: Vec<f32>,
}

impl Owned {
    fn tensor(&self) -> Result<DynTensor, String> {
        Tensor::from_array((self.shape.clone(), self.data.clone()))
            .map(Tensor::upcast)
            .map_err(|e| e.to_string())
    }
}

/// The first part's outputs for one chunk: the latent `[1, channels, frames]` and the rest.
pub(super) struct Latent {
    channels: usize,
    frames: usize,
    data: Vec<f32>,
    extra: Vec<(String, Owned)>,
}

impl Latent {
    pub(super) fn frames(&self) -> usize {
        self.frames
    }
}

/// The two sessions of a split voice.
pub(super) struct SplitSessions {
    pub(super) encoder: Session,
    pub(super) decoder: Session,
    pub(super) latent: String,
    pub(super) extra: Vec<String>,
    /// Running estimate of decoder seconds per latent frame (context included), wall clock, so it
    /// counts the cores' other work too.
    seconds_per_frame: f64,
}

impl SplitSessions {
    pub(super) fn new(encoder: Session, decoder: Session, latent: String, extra: Vec<String>) -> Self {
        Self {
            encoder,
            decoder,
            latent,
            extra,
            seconds_per_frame: INITIAL_SECONDS_PER_FRAME,
        }
    }

    /// Decoder seconds per latent frame, as measured so far.
    pub(super) fn seconds_per_frame(&self) -> f64 {
        self.seconds_per_frame
    }

    /// Runs the first part.
    pub(super) fn encode(&mut self, feeds: Vec<(String, DynTensor)>) -> Result<Latent, String> {
        let outputs = self.encoder.run(feeds).map_err(|e| e.to_string())?;
        let extract = |name: &str| -> Result<Owned, String> {
            let (shape, data) = outputs[name]
                .try_extract_tensor::<f32>()
                .map_err(|e| format!("{name}: {e}"))?;
            Ok(Owned {
                shape: shape.to_vec(),
                data: data.to_vec(),
            })
        };
        let latent = extract(&self.latent)?;
        let [1, channels, frames] = latent.shape[..] else {
            return Err(format!(
                "latent {} has shape {:?}, not [1, channels, frames]",
                self.latent, latent.shape
            ));
        };
        let extra = self
            .extra
            .iter()
            .map(|name| extract(name).map(|t| (name.clone(), t)))
            .collect::<Result<_, _>>()?;
        Ok(Latent {
            channels: usize::try_from(channels).map_err(|e| e.to_string())?,
            frames: usize::try_from(frames).map_err(|e| e.to_string())?,
            data: latent.data,
            extra,
        })
    }

    /// Decodes frames `[start, end)` of `latent` with up to `overlap` frames of context on each side
    /// and returns the samples of exactly those frames.
    pub(super) fn decode(
        &mut self,
        latent: &Latent,
        window: (usize, usize),
        overlap: usize,
    ) -> Result<Vec<f32>, String> {
        let started = Instant::now();
        let (audio, width) = decode_on(&mut self.decoder, &self.latent, latent, window, overlap)?;
        let per_frame = started.elapsed().as_secs_f64() / width.max(1) as f64;
        self.seconds_per_frame += EWMA_WEIGHT * (per_frame - self.seconds_per_frame);
        Ok(audio)
    }
}

/// Decodes frames `[start, end)` of `latent` on `decoder` (whose latent input is `input`) with up to
/// `overlap` frames of context on each side; returns the samples of exactly those frames and the
/// number of frames decoded.
pub(super) fn decode_on(
    decoder: &mut Session,
    input: &str,
    latent: &Latent,
    (start, end): (usize, usize),
    overlap: usize,
) -> Result<(Vec<f32>, usize), String> {
    let from = start.saturating_sub(overlap);
    let to = (end + overlap).min(latent.frames);
    let width = to - from;
    let mut window = Vec::with_capacity(latent.channels * width);
    for channel in latent.data.chunks_exact(latent.frames) {
        window.extend_from_slice(&channel[from..to]);
    }
    let mut feeds: Vec<(String, DynTensor)> = Vec::with_capacity(1 + latent.extra.len());
    let tensor = Tensor::from_array(([1, latent.channels, width], window)).map_err(|e| e.to_string())?;
    feeds.push((input.to_owned(), tensor.upcast()));
    for (name, tensor) in &latent.extra {
        feeds.push((name.clone(), tensor.tensor()?));
    }
    let outputs = decoder.run(feeds).map_err(|e| e.to_string())?;
    let (_, audio) = outputs[0]
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    if width == 0 || audio.len() % width != 0 {
        return Err(format!(
            "the decoder gave {} samples for {width} frames",
            audio.len()
        ));
    }
    let hop = audio.len() / width;
    Ok((audio[(start - from) * hop..(end - from) * hop].to_vec(), width))
}

/// Signal-to-noise ratio of `test` against `reference` in dB (the noise is their difference; a length
/// mismatch counts the missing samples as noise).
pub(super) fn snr_db(reference: &[f32], test: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
    let mut noise: f64 = reference
        .iter()
        .zip(test)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    let common = reference.len().min(test.len());
    noise += reference[common..]
        .iter()
        .chain(&test[common..])
        .map(|&s| f64::from(s).powi(2))
        .sum::<f64>();
    10.0 * (signal / noise.max(1e-20)).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_start_small_double_and_cover_every_frame_once() {
        assert_eq!(windows(0, 24, 256), vec![]);
        assert_eq!(windows(10, 24, 256), vec![(0, 10)]);
        assert_eq!(
            windows(500, 24, 256),
            vec![(0, 24), (24, 72), (72, 168), (168, 360), (360, 500)]
        );
        assert_eq!(windows(5, 0, 0), vec![(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
    }

    #[test]
    fn windows_are_small_for_a_waiting_listener_and_grow_with_the_audio_in_hand() {
        let per_frame = 0.001; // 1 ms per frame
        let none = Duration::ZERO;
        assert_eq!(window_frames(500, none, per_frame), FIRST_WINDOW_FRAMES);
        // 0.2 s in hand: 100 ms of decoding = 100 frames, 80 after the context.
        assert_eq!(window_frames(500, Duration::from_millis(200), per_frame), 80);
        // Seconds in hand: one window, up to the largest.
        assert_eq!(window_frames(250, Duration::from_secs(5), per_frame), 250);
        assert_eq!(
            window_frames(2000, Duration::from_secs(5), per_frame),
            MAX_WINDOW_FRAMES
        );
        // A short tail is taken along; a longer one is left for the next window.
        assert_eq!(
            window_frames(FIRST_WINDOW_FRAMES + OVERLAP_FRAMES, none, per_frame),
            34
        );
        assert_eq!(
            window_frames(FIRST_WINDOW_FRAMES + OVERLAP_FRAMES + 1, none, per_frame),
            24
        );
        // A slower machine gets smaller windows for the same audio in hand.
        assert_eq!(
            window_frames(500, Duration::from_millis(200), 0.004),
            FIRST_WINDOW_FRAMES
        );
        assert_eq!(window_frames(3, Duration::MAX, 0.0), 3);
    }

    #[test]
    fn the_listener_runs_dry_at_its_deadline_then_after_what_was_emitted() {
        let now = Instant::now();
        let past = now - Duration::from_secs(1);
        let later = now + Duration::from_secs(2);
        let second = Duration::from_secs(1);
        assert_eq!(playback_end(past, None, Duration::ZERO, now), now);
        assert_eq!(playback_end(later, None, Duration::ZERO, now), later);
        // Nothing was in hand: playback started with the first PCM.
        assert_eq!(playback_end(past, Some(now), second, now), now + second);
        // Audio was in hand: the new audio plays after it.
        assert_eq!(playback_end(later, Some(now), second, now), later + second);
    }

    #[test]
    fn snr_is_high_for_equal_signals_and_low_for_different_ones() {
        let a = [0.5, -0.25, 0.125];
        assert!(snr_db(&a, &a) > 100.0);
        assert!(snr_db(&a, &[0.0, 0.0, 0.0]).abs() < 1e-9);
        assert!(snr_db(&a, &a[..2]) < 20.0);
    }
}
