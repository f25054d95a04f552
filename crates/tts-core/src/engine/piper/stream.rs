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
//! windows are as large as first audio allows ([`chunk_windows`]): the first chunk of an utterance (a
//! listener may be waiting) starts with a [`FIRST_WINDOW_FRAMES`] window and a [`SECOND_WINDOW_FRAMES`]
//! one, and every other window is up to [`MAX_WINDOW_FRAMES`], so most later chunks decode in one
//! window. The cut depends only on the chunk's length and whether it is a first chunk, never on timing:
//! windowed decoding differs from whole decoding in the last bits, so the same cut is what makes the
//! same text sound the same every time.

use ort::session::Session;
use ort::value::{DynTensor, Tensor};

/// Latent frames of context on each side of a window.
pub(super) const OVERLAP_FRAMES: usize = 10;
/// Latent frames in the first window (one frame is 256 samples, 11.6 ms at 22,050 Hz).
pub(super) const FIRST_WINDOW_FRAMES: usize = 24;
/// The second window of a first chunk: decodes within the first window's 0.28 s of audio even on a
/// loaded machine.
pub(super) const SECOND_WINDOW_FRAMES: usize = 72;
/// The largest window (3 s of audio at 22,050 Hz). Its context adds 8 % of decoder work, but per frame
/// a 256-frame window decodes as fast as a 512-frame one with half the context (smaller tensors stay in
/// cache: 0.68 ms per frame either way, measured), and it halves the decoder's working memory.
pub(super) const MAX_WINDOW_FRAMES: usize = 256;

/// The windows of a chunk of `frames` latent frames: for a first chunk `FIRST_WINDOW_FRAMES`, then
/// `SECOND_WINDOW_FRAMES`, then up to `MAX_WINDOW_FRAMES` each; for any other chunk up to
/// `MAX_WINDOW_FRAMES` each. A tail no longer than the context is taken into the window before it.
pub(super) fn chunk_windows(frames: usize, first: bool) -> Vec<(usize, usize)> {
    let sizes = if first {
        [FIRST_WINDOW_FRAMES, SECOND_WINDOW_FRAMES]
    } else {
        [MAX_WINDOW_FRAMES; 2]
    };
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for size in sizes.into_iter().chain(std::iter::repeat(MAX_WINDOW_FRAMES)) {
        if start >= frames {
            break;
        }
        let end = (start + size).min(frames);
        match out.last_mut() {
            Some(last) if end - start <= OVERLAP_FRAMES => last.1 = end,
            _ => out.push((start, end)),
        }
        start = end;
    }
    out
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

    /// The latent's values, channel by channel.
    pub(super) fn data(&self) -> &[f32] {
        &self.data
    }
}

/// The two sessions of a split voice.
pub(super) struct SplitSessions {
    pub(super) encoder: Session,
    pub(super) decoder: Session,
    pub(super) latent: String,
    pub(super) extra: Vec<String>,
}

impl SplitSessions {
    pub(super) fn new(encoder: Session, decoder: Session, latent: String, extra: Vec<String>) -> Self {
        Self {
            encoder,
            decoder,
            latent,
            extra,
        }
    }

    /// Runs the first part.
    pub(super) fn encode(&mut self, feeds: Vec<(String, DynTensor)>) -> Result<Latent, String> {
        encode_on(&mut self.encoder, &self.latent, &self.extra, feeds)
    }

    /// Decodes frames `[start, end)` of `latent` with up to `overlap` frames of context on each side
    /// and returns the samples of exactly those frames.
    pub(super) fn decode(
        &mut self,
        latent: &Latent,
        window: (usize, usize),
        overlap: usize,
    ) -> Result<Vec<f32>, String> {
        decode_on(&mut self.decoder, &self.latent, latent, window, overlap)
    }
}

/// Runs a first part, `encoder`, whose outputs are the latent named `latent` and the decoder's `extra`
/// inputs.
pub(super) fn encode_on(
    encoder: &mut Session,
    latent: &str,
    extra: &[String],
    feeds: Vec<(String, DynTensor)>,
) -> Result<Latent, String> {
    let outputs = encoder.run(feeds).map_err(|e| e.to_string())?;
    let extract = |name: &str| -> Result<Owned, String> {
        let (shape, data) = outputs[name]
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(Owned {
            shape: shape.to_vec(),
            data: data.to_vec(),
        })
    };
    let tensor = extract(latent)?;
    let [1, channels, frames] = tensor.shape[..] else {
        return Err(format!(
            "latent {latent} has shape {:?}, not [1, channels, frames]",
            tensor.shape
        ));
    };
    let extra = extra
        .iter()
        .map(|name| extract(name).map(|t| (name.clone(), t)))
        .collect::<Result<_, _>>()?;
    Ok(Latent {
        channels: usize::try_from(channels).map_err(|e| e.to_string())?,
        frames: usize::try_from(frames).map_err(|e| e.to_string())?,
        data: tensor.data,
        extra,
    })
}

/// Decodes frames `[start, end)` of `latent` on `decoder` (whose latent input is `input`) with up to
/// `overlap` frames of context on each side; returns the samples of exactly those frames.
pub(super) fn decode_on(
    decoder: &mut Session,
    input: &str,
    latent: &Latent,
    (start, end): (usize, usize),
    overlap: usize,
) -> Result<Vec<f32>, String> {
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
    Ok(audio[(start - from) * hop..(end - from) * hop].to_vec())
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
    fn first_chunks_start_small_and_other_chunks_take_the_largest_windows() {
        assert_eq!(chunk_windows(0, true), vec![]);
        assert_eq!(chunk_windows(20, true), vec![(0, 20)]);
        assert_eq!(
            chunk_windows(600, true),
            vec![(0, 24), (24, 96), (96, 352), (352, 600)]
        );
        assert_eq!(chunk_windows(200, false), vec![(0, 200)]);
        assert_eq!(chunk_windows(600, false), vec![(0, 256), (256, 512), (512, 600)]);
        // A tail no longer than the context joins the window before it.
        assert_eq!(chunk_windows(256 + OVERLAP_FRAMES, false), vec![(0, 266)]);
        assert_eq!(chunk_windows(24 + OVERLAP_FRAMES, true), vec![(0, 34)]);
        assert_eq!(
            chunk_windows(256 + OVERLAP_FRAMES + 1, false),
            vec![(0, 256), (256, 267)]
        );
    }

    #[test]
    fn snr_is_high_for_equal_signals_and_low_for_different_ones() {
        let a = [0.5, -0.25, 0.125];
        assert!(snr_db(&a, &a) > 100.0);
        assert!(snr_db(&a, &[0.0, 0.0, 0.0]).abs() < 1e-9);
        assert!(snr_db(&a, &a[..2]) < 20.0);
    }
}
