//! Turns the server's 48 kHz PCM into the bytes of a response format, as it arrives: raw PCM, or WAV
//! whose header goes out first with unknown lengths (`0xFFFFFFFF`, as OpenAI's own streamed WAV), since
//! the length is not known until synthesis ends. SSE wraps either in `speech.audio.delta` events.

use base64::Engine as _;
use bytes::Bytes;
use tts_core::audio::{AudioError, OUTPUT_SAMPLE_RATE, StreamResampler};

/// Response formats this server encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Wav,
    Pcm,
}

pub(crate) const SUPPORTED_FORMATS: &str = "wav, pcm";

impl Format {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "wav" => Some(Format::Wav),
            "pcm" => Some(Format::Pcm),
            _ => None,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Wav => "audio/wav",
            Format::Pcm => "audio/pcm",
        }
    }
}

/// 48 kHz samples in, the format's bytes out.
pub(crate) struct Encoder {
    format: Format,
    rate: u32,
    resampler: StreamResampler,
    header_sent: bool,
    /// Samples at the output rate encoded so far.
    pub(crate) samples: u64,
}

impl Encoder {
    pub(crate) fn new(format: Format, rate: u32) -> Result<Self, AudioError> {
        Ok(Self {
            format,
            rate,
            resampler: StreamResampler::between(OUTPUT_SAMPLE_RATE, rate)?,
            header_sent: false,
            samples: 0,
        })
    }

    /// Encodes `samples` (48 kHz); the first call also carries the WAV header.
    pub(crate) fn audio(&mut self, samples: &[i16]) -> Result<Bytes, AudioError> {
        let mut out = Vec::with_capacity(samples.len());
        self.resampler.process(samples, &mut out)?;
        Ok(self.bytes(&out))
    }

    /// Flushes the resampler at the end of a chunk of speech (its output then has its exact length).
    pub(crate) fn end_of_chunk(&mut self) -> Result<Bytes, AudioError> {
        let mut out = Vec::new();
        self.resampler.finish(&mut out)?;
        Ok(self.bytes(&out))
    }

    fn bytes(&mut self, samples: &[i16]) -> Bytes {
        let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
        if !self.header_sent {
            self.header_sent = true;
            if self.format == Format::Wav {
                bytes.extend_from_slice(&streaming_wav_header(self.rate));
            }
        }
        for sample in samples {
            bytes.extend_from_slice(&sample.to_le_bytes());
        }
        self.samples += samples.len() as u64;
        Bytes::from(bytes)
    }

    pub(crate) fn seconds(&self) -> f64 {
        self.samples as f64 / f64::from(self.rate)
    }
}

/// A 44-byte RIFF/WAVE header for 16-bit mono PCM at `rate`, with the RIFF and data lengths unknown.
pub(crate) fn streaming_wav_header(rate: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&1u16.to_le_bytes());
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * 2).to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    h
}

/// One SSE event carrying audio bytes.
pub(crate) fn sse_delta(audio: &[u8]) -> Bytes {
    let encoded = base64::engine::general_purpose::STANDARD.encode(audio);
    Bytes::from(format!(
        "data: {{\"type\":\"speech.audio.delta\",\"audio\":\"{encoded}\"}}\n\n"
    ))
}

/// The last SSE event: `speech.audio.done` with usage, plus ttsd's own timings under `ttsd`.
pub(crate) fn sse_done(input_characters: usize, timings: serde_json::Value) -> Bytes {
    let event = serde_json::json!({
        "type": "speech.audio.done",
        "usage": {
            "input_tokens": input_characters,
            "output_tokens": 0,
            "total_tokens": input_characters,
        },
        "ttsd": timings,
    });
    Bytes::from(format!("data: {event}\n\n"))
}

/// An SSE event for a failure after the audio started (the status line is already sent).
pub(crate) fn sse_error(message: &str) -> Bytes {
    let event = serde_json::json!({
        "type": "error",
        "error": {"message": message, "type": "server_error", "param": null, "code": "synthesis_failed"},
    });
    Bytes::from(format!("data: {event}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_header_comes_once_then_pcm_at_the_asked_rate() {
        let mut encoder = Encoder::new(Format::Wav, 24_000).unwrap();
        let first = encoder.audio(&[1000; 4800]).unwrap();
        let rest = encoder.end_of_chunk().unwrap();
        assert_eq!(&first[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(first[24..28].try_into().unwrap()), 24_000);
        assert_eq!(&first[36..40], b"data");
        // 4800 samples at 48 kHz are 2400 at 24 kHz, 2 bytes each, after the 44-byte header.
        assert_eq!(first.len() + rest.len(), 44 + 2400 * 2);
        assert_eq!(encoder.samples, 2400);
        let more = encoder.audio(&[0; 960]).unwrap();
        assert_ne!(more.get(0..4), Some(&b"RIFF"[..]));
    }

    #[test]
    fn pcm_at_48k_passes_through() {
        let mut encoder = Encoder::new(Format::Pcm, 48_000).unwrap();
        let bytes = encoder.audio(&[1, -1]).unwrap();
        assert_eq!(&bytes[..], &[1, 0, 255, 255]);
    }

    #[test]
    fn sse_events_are_data_lines() {
        let delta = sse_delta(&[0, 1, 2]);
        assert_eq!(
            &delta[..],
            b"data: {\"type\":\"speech.audio.delta\",\"audio\":\"AAEC\"}\n\n"
        );
        let done = sse_done(5, serde_json::json!({}));
        let text = std::str::from_utf8(&done).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(json["type"], "speech.audio.done");
        assert_eq!(json["usage"]["input_tokens"], 5);
    }
}
