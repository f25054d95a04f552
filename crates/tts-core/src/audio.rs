//! Audio plumbing between an engine and the wire: resampling to 48 kHz, cutting into 20 ms frames,
//! and two small helpers (a WAV writer for `ttsd say` and tests, an RMS meter).
//!
//! Everything here is mono, 16-bit signed PCM. Engines speak at their own rate (22,050 Hz for espeak-ng
//! and the Piper voices); [`StreamResampler`] brings that to [`OUTPUT_SAMPLE_RATE`] with a band-limited
//! sinc filter, and [`Framer`] cuts the result into [`Frame`]s of exactly [`FRAME_BYTES`] little-endian
//! bytes, the unit the gateway paces and sends.
//!
//! It does not pace, encode (no Opus), mix, change volume, or handle more than one channel, and it
//! knows nothing about sessions or sockets.

mod frame;
mod level;
mod resample;
mod wav;

pub use frame::{Frame, Framer};
pub use level::rms_dbfs;
pub use resample::StreamResampler;
pub use wav::write_wav;

/// The one sample rate ttsd sends to clients.
pub const OUTPUT_SAMPLE_RATE: u32 = 48_000;
/// Duration of one [`Frame`].
pub const FRAME_MS: u32 = 20;
/// Samples in one [`Frame`]: 20 ms at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Bytes in one [`Frame`]: two per s16le sample.
pub const FRAME_BYTES: usize = 1920;

// The wire format is defined by these four numbers; keep them from drifting apart.
const _: () = assert!(FRAME_SAMPLES == (OUTPUT_SAMPLE_RATE * FRAME_MS / 1000) as usize);
const _: () = assert!(FRAME_BYTES == FRAME_SAMPLES * 2);

/// What can go wrong while converting engine audio.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The engine's rate is outside what the resampler is built and tested for.
    #[error("unsupported input sample rate {0} Hz (supported: 8000..=192000)")]
    UnsupportedRate(u32),
    /// rubato refused to build or run; carries its message.
    #[error("resampler failed: {0}")]
    Resampler(String),
}
