//! Streaming, band-limited conversion from an engine's sample rate to 48 kHz (and, for clients that ask
//! for another rate, from 48 kHz to that rate).
//!
//! Built on rubato's `SincFixedIn<f32>`: a 128-tap Blackman-windowed sinc with its cutoff at about
//! 0.95 of the lower Nyquist frequency. Input is cut into fixed 256-sample chunks (11.6 ms at
//! 22,050 Hz) so output follows input closely whether an engine hands over 48 ms buffers (espeak-ng)
//! or a whole clause (Piper). The filter looks 64 input samples ahead, so output trails input by
//! at most a chunk plus about 3 ms until [`StreamResampler::finish`] flushes it.
//!
//! The output is time-aligned: output sample `k` is the input signal at instant `k / ratio`, exactly
//! for every rate whose ratio to 48 kHz reduces to a numerator of at most 640 (8, 11.025, 16,
//! 22.05, 24, 32, 44.1, 96, 192 kHz...) and to within half an output sample for odd rates. So a
//! clause starts and ends where it should and concatenated clauses do not drift.
//!
//! Cost, measured with a scratch benchmark (x86-64 with AVX2, release build, one core, 1,072-sample
//! pushes): about 2 ms of CPU per second of 22,050 Hz speech, i.e. 0.2% of a core per realtime
//! stream, two thirds of it in rubato's AVX dot product. Building one for 22,050 Hz takes about
//! 2 ms and 160 KiB (the sinc table), so keep one per session rather than one per clause.
//!
//! It does not change the ratio on the fly, mix channels or dither: rounding to i16 is plain
//! round-half-away-from-zero with clamping.

use std::fmt;

use rubato::{
    Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
    calculate_cutoff,
};

use super::{AudioError, OUTPUT_SAMPLE_RATE};

/// Input rates the filter design is meant and tested for: from telephone speech to studio rates.
const SUPPORTED_RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;

/// Input samples per rubato call: small enough that output follows input within ~12 ms at
/// 22,050 Hz, large enough that rubato's per-call overhead (shifting 2 × `SINC_LEN` samples of
/// history) stays below the filtering work itself.
const CHUNK: usize = 256;

/// Filter taps. 128 taps with a Blackman window give a transition band of about 5.5 / 128 of the
/// input rate (950 Hz at 22,050 Hz) and about 74 dB of stopband rejection, far below what 16-bit
/// TTS voices carry near Nyquist, for 128 multiply-adds per output sample.
const SINC_LEN: usize = 128;

/// Blackman rather than rubato's default Blackman-Harris²: at 128 taps its faster roll-off lets the
/// cutoff sit at 0.95 of Nyquist (rubato's `calculate_cutoff` puts it there so the stopband begins
/// at Nyquist), keeping speech up to ~10 kHz, where Blackman-Harris² would need 256 taps.
const WINDOW: WindowFunction = WindowFunction::Blackman;

/// Largest oversampling factor used for exact rational resampling. With `Nearest` interpolation and
/// an oversampling factor equal to the numerator of the reduced ratio (320 for 22,050 → 48,000,
/// 160 for 44,100, 3 for 16,000), every output instant falls exactly on a precomputed sinc phase:
/// one dot product per output sample and no interpolation error. The table costs
/// `SINC_LEN × factor × 4` bytes (160 KiB at 22,050 Hz, 320 KiB at 11,025 Hz), so odd rates above
/// this cap use `Linear` instead.
const MAX_EXACT_OVERSAMPLING: u32 = 640;

/// Oversampling for rates without a small rational ratio: with linear interpolation between 256
/// phases the interpolation error is well under the 16-bit noise floor, and the table stays 128 KiB.
const LINEAR_OVERSAMPLING: usize = 256;

/// Streaming band-limited resampler from an engine's rate to 48 kHz, mono i16 in and out.
///
/// Feed it any number of [`process`](Self::process) calls of any length, then
/// [`finish`](Self::finish) once per chunk of speech: the output then has exactly
/// `round(total_in * 48000 / input_rate)` samples and is time-aligned (the first output sample
/// corresponds to the first input sample; see the module docs for how exactly). After `finish` it is
/// reset and can be reused for the next chunk. Input already at 48 kHz passes through unchanged (no
/// filtering).
pub struct StreamResampler {
    input_rate: u32,
    output_rate: u32,
    /// `None` when the input is already at 48 kHz.
    sinc: Option<SincStream>,
}

/// The filtering path: rubato plus the bookkeeping that makes chunks, alignment and exact lengths
/// work. Reset after each chunk of speech.
struct SincStream {
    resampler: SincFixedIn<f32>,
    /// rubato's output buffer, allocated once at its maximum size.
    out_buf: Vec<Vec<f32>>,
    /// Input waiting for a whole `CHUNK`.
    pending: Vec<f32>,
    input_rate: u64,
    output_rate: u64,
    align: Alignment,
    /// Whether this chunk of speech has had its leading zeros fed yet.
    started: bool,
    /// Leading outputs still to drop.
    skip_left: usize,
    /// Caller's input samples since the last reset.
    total_in: u64,
    /// Output samples handed to the caller since the last reset.
    emitted: u64,
}

/// How to line rubato's output up with the input (see [`Alignment::find`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Alignment {
    /// Zeros fed before the caller's first sample.
    lead_zeros: usize,
    /// Outputs dropped before the first one handed out.
    skip: usize,
}

impl StreamResampler {
    /// A resampler from `input_rate` Hz to 48 kHz. Fails for rates outside 8,000..=192,000 Hz.
    pub fn new(input_rate: u32) -> Result<Self, AudioError> {
        Self::between(input_rate, OUTPUT_SAMPLE_RATE)
    }

    /// A resampler from `input_rate` to `output_rate` Hz (both within 8,000..=192,000 Hz), e.g. from the
    /// server's 48 kHz to the rate an HTTP or Wyoming client asked for. Downsampling moves the cutoff to
    /// 0.95 of the output's Nyquist frequency, so nothing above it folds back.
    pub fn between(input_rate: u32, output_rate: u32) -> Result<Self, AudioError> {
        for rate in [input_rate, output_rate] {
            if !SUPPORTED_RATES.contains(&rate) {
                return Err(AudioError::UnsupportedRate(rate));
            }
        }
        let sinc = if input_rate == output_rate {
            None
        } else {
            Some(SincStream::new(input_rate, output_rate)?)
        };
        Ok(Self {
            input_rate,
            output_rate,
            sinc,
        })
    }

    /// The engine rate this resampler converts from.
    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    /// The rate this resampler converts to.
    pub fn output_rate(&self) -> u32 {
        self.output_rate
    }

    /// Resamples `input` and appends whatever output is ready to `out`. Up to a chunk plus the
    /// filter's look-ahead stays inside until more input or [`finish`](Self::finish) arrives.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), AudioError> {
        match &mut self.sinc {
            None => {
                out.extend_from_slice(input);
                Ok(())
            }
            Some(sinc) => sinc.process(input, out),
        }
    }

    /// Appends the rest of this chunk of speech, trimmed to its exact length, then resets for the next.
    pub fn finish(&mut self, out: &mut Vec<i16>) -> Result<(), AudioError> {
        match &mut self.sinc {
            None => Ok(()),
            Some(sinc) => sinc.finish(out),
        }
    }
}

impl fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamResampler")
            .field("input_rate", &self.input_rate)
            .field("output_rate", &self.output_rate)
            .field("passthrough", &self.sinc.is_none())
            .finish_non_exhaustive()
    }
}

impl SincStream {
    fn new(input_rate: u32, output_rate: u32) -> Result<Self, AudioError> {
        let ratio = f64::from(output_rate) / f64::from(input_rate);
        let (num, den) = reduced_ratio(input_rate, output_rate);
        let (interpolation, oversampling, search) = if num <= MAX_EXACT_OVERSAMPLING {
            // `den` bounds the search: an exact alignment exists within two periods of the ratio.
            (SincInterpolationType::Nearest, num as usize, 2 * den as usize + 2)
        } else {
            // No exact alignment may exist; a chunk of zeros is as far as it is worth looking.
            (SincInterpolationType::Linear, LINEAR_OVERSAMPLING, CHUNK)
        };
        let params = SincInterpolationParameters {
            sinc_len: SINC_LEN,
            f_cutoff: calculate_cutoff(SINC_LEN, WINDOW),
            oversampling_factor: oversampling,
            interpolation,
            window: WINDOW,
        };
        // Relative ratio 1.0: the ratio never changes, so rubato need not size buffers for more.
        let resampler = SincFixedIn::<f32>::new(ratio, 1.0, params, CHUNK, 1)
            .map_err(|e| AudioError::Resampler(e.to_string()))?;
        let out_buf = resampler.output_buffer_allocate(true);
        let align = Alignment::find(ratio, oversampling, search);
        Ok(Self {
            resampler,
            out_buf,
            pending: Vec::with_capacity(CHUNK),
            input_rate: u64::from(input_rate),
            output_rate: u64::from(output_rate),
            align,
            started: false,
            skip_left: align.skip,
            total_in: 0,
            emitted: 0,
        })
    }

    fn process(&mut self, input: &[i16], out: &mut Vec<i16>) -> Result<(), AudioError> {
        self.start(out)?;
        self.total_in += input.len() as u64;
        self.feed(input.iter().map(|&s| f32::from(s) / 32768.0), u64::MAX, out)
    }

    fn finish(&mut self, out: &mut Vec<i16>) -> Result<(), AudioError> {
        self.start(out)?;
        let out_rate = self.output_rate;
        let expected = (self.total_in * out_rate + self.input_rate / 2) / self.input_rate;
        // The filter holds back the partial chunk plus `SINC_LEN / 2 + 2` input samples, so two
        // chunks of zeros suffice; the bound only turns a rubato change into an error, not a hang.
        let mut rounds = 0;
        while self.emitted < expected {
            if rounds > 4 + (SINC_LEN + self.align.lead_zeros) / CHUNK {
                return Err(AudioError::Resampler(format!(
                    "flush stalled at {} of {expected} samples",
                    self.emitted
                )));
            }
            let zeros = CHUNK - self.pending.len();
            self.feed(std::iter::repeat_n(0.0, zeros), expected, out)?;
            rounds += 1;
        }
        self.reset();
        Ok(())
    }

    /// Feeds the alignment zeros once per chunk of speech, before the caller's first sample.
    fn start(&mut self, out: &mut Vec<i16>) -> Result<(), AudioError> {
        if !self.started {
            self.started = true;
            self.feed(std::iter::repeat_n(0.0, self.align.lead_zeros), u64::MAX, out)?;
        }
        Ok(())
    }

    /// Runs `samples` through the filter a whole chunk at a time, emitting at most `limit` samples in
    /// total since the last reset.
    fn feed(
        &mut self,
        mut samples: impl ExactSizeIterator<Item = f32>,
        limit: u64,
        out: &mut Vec<i16>,
    ) -> Result<(), AudioError> {
        while samples.len() > 0 {
            let take = (CHUNK - self.pending.len()).min(samples.len());
            self.pending.extend(samples.by_ref().take(take));
            if self.pending.len() == CHUNK {
                self.run_chunk(limit, out)?;
            }
        }
        Ok(())
    }

    fn run_chunk(&mut self, limit: u64, out: &mut Vec<i16>) -> Result<(), AudioError> {
        let (_, produced) = self
            .resampler
            .process_into_buffer(&[&self.pending], &mut self.out_buf, None)
            .map_err(|e| AudioError::Resampler(e.to_string()))?;
        self.pending.clear();
        let mut fresh = &self.out_buf[0][..produced];
        let skip = self.skip_left.min(fresh.len());
        self.skip_left -= skip;
        fresh = &fresh[skip..];
        let room = usize::try_from(limit.saturating_sub(self.emitted)).unwrap_or(usize::MAX);
        let fresh = &fresh[..fresh.len().min(room)];
        out.extend(fresh.iter().map(|&x| to_i16(x)));
        self.emitted += fresh.len() as u64;
        Ok(())
    }

    fn reset(&mut self) {
        self.resampler.reset();
        self.pending.clear();
        self.started = false;
        self.skip_left = self.align.skip;
        self.total_in = 0;
        self.emitted = 0;
    }
}

impl Alignment {
    /// Picks leading zeros and dropped outputs so that output `k` lands on input instant `k / ratio`.
    ///
    /// rubato 0.16's `SincFixedIn` computes its output `k` (from a reset) at input instant
    /// `(k + 1) / ratio - 1 + 1 / oversampling`; its `output_delay()` (`SINC_LEN · ratio / 2`)
    /// describes latency, not this offset. Feeding `z` zeros first moves that instant back by `z`,
    /// so the offset in output samples is `d(z) = (z + 1 - 1 / oversampling) · ratio - 1`. We take
    /// the smallest `z` that makes `d` a non-negative integer and drop `d` outputs; where no `z`
    /// below `search` does (only for `Linear` rates), the one with the smallest fractional part.
    /// The alignment tests pin this down in case a rubato upgrade changes it.
    fn find(ratio: f64, oversampling: usize, search: usize) -> Self {
        let offset = |z: usize| (z as f64 + 1.0 - 1.0 / oversampling as f64) * ratio - 1.0;
        let error = |d: f64| (d - d.round()).abs();
        let z = (0..search)
            .filter(|&z| offset(z) > -1e-6)
            .find(|&z| error(offset(z)) < 1e-6)
            .or_else(|| {
                (0..search)
                    .filter(|&z| offset(z) > -1e-6)
                    .min_by(|&a, &b| error(offset(a)).total_cmp(&error(offset(b))))
            })
            // Unreachable for search >= 2 / ratio; 0 only costs sub-sample alignment.
            .unwrap_or(0);
        Self {
            lead_zeros: z,
            skip: offset(z).round().max(0.0) as usize,
        }
    }
}

/// `output_rate / input_rate` in lowest terms, as (numerator, denominator).
fn reduced_ratio(input_rate: u32, output_rate: u32) -> (u32, u32) {
    let (mut a, mut b) = (output_rate, input_rate);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    (output_rate / a, input_rate / a)
}

/// Back to 16 bits: the filter can overshoot full scale on clipped input, so clamp rather than wrap.
fn to_i16(x: f32) -> i16 {
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

// The tests outweigh the code; they live in resample/tests.rs to keep this file readable.
#[cfg(test)]
mod tests;
