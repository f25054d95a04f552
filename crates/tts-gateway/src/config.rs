//! Gateway settings: limits, pacing and text segmentation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const DEFAULT_MAX_SESSIONS: usize = 256;
/// Off: only `max_sessions` limits admission until an operator sets a utilisation.
pub const DEFAULT_ADMISSION_MAX_UTILISATION: f64 = 0.0;
/// The largest admission utilisation accepted (100× overcommit); more is surely a typo.
pub const MAX_ADMISSION_UTILISATION: f64 = 100.0;
pub const DEFAULT_MAX_TEXT_CHARS: usize = 10_000;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_PENDING_CHARS: usize = 100_000;
pub const DEFAULT_MAX_QUEUED_UTTERANCES: usize = 64;
/// The longest any `*_seconds` limit may be (one year): larger values would overflow clock arithmetic.
pub const MAX_LIMIT_SECONDS: u64 = 365 * 24 * 3600;
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 300;
pub const DEFAULT_MAX_SESSION_SECONDS: u64 = 3600;
pub const DEFAULT_PACING_LEAD_FRAMES: u32 = 3;
pub const DEFAULT_MAX_BUFFERED_FRAMES: usize = 500;
pub const DEFAULT_MAX_BAD_MESSAGES: u32 = 20;
pub const DEFAULT_BAD_MESSAGE_WINDOW_SECONDS: u64 = 10;
pub const DEFAULT_MAX_ERROR_REPLIES_PER_SECOND: u32 = 25;
pub const DEFAULT_SLOW_CLIENT_TIMEOUT_SECONDS: u64 = 10;

/// How sessions behave and where they stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Concurrent sessions; one more is refused with `OVERLOADED`.
    pub max_sessions: usize,
    /// Engine utilisation (sessions × measured real-time factor ÷ engine threads) past which a new session
    /// is refused with `OVERLOADED`; 0 turns this off. 1.0 admits what the engines keep real time if every
    /// session speaks at once; above 1 overcommits for sessions that mostly listen.
    pub admission_max_utilisation: f64,
    /// Characters of text in one message; more is `TEXT_TOO_LONG`.
    pub max_text_chars: usize,
    /// Bytes in one WebSocket message; more is `MESSAGE_TOO_LARGE`. Messages over 8× this close the
    /// connection at the protocol level (close code 1009) without being read.
    pub max_message_bytes: usize,
    /// Characters a session may have accepted but not yet synthesised; more is `TEXT_TOO_LONG`.
    pub max_pending_chars: usize,
    /// Utterances a session may have open (queued, synthesising or playing); a final text that would
    /// open one more is `TEXT_TOO_LONG`. Bounds each session's memory; the driver's work per event does not
    /// depend on it.
    pub max_queued_utterances: usize,
    /// A session with no message and nothing playing for this long is ended (`idle_timeout`).
    pub idle_timeout_seconds: u64,
    /// A session is ended after this long, whatever it is doing (`max_duration`).
    pub max_session_seconds: u64,
    /// Frames sent ahead of the 20 ms clock, as the client's jitter cushion.
    pub pacing_lead_frames: u32,
    /// Synthesised frames a session may hold (while paused or ahead of the clock) before synthesis
    /// of its next chunk waits; 500 frames = 10 s.
    pub max_buffered_frames: usize,
    /// Bad messages within `bad_message_window_seconds` that end the session (`too_many_errors`).
    pub max_bad_messages: u32,
    pub bad_message_window_seconds: u64,
    /// `error` replies a session sends in any one second; more are dropped (and counted in
    /// `tts_errors_suppressed_total`), each still counting against `max_bad_messages`.
    pub max_error_replies_per_second: u32,
    /// A client that has not taken one frame for this long is disconnected (`slow_client`).
    pub slow_client_timeout_seconds: u64,
    /// The first chunk of an utterance is cut at the first clause boundary past this many characters.
    pub first_chunk_min_chars: usize,
    /// A first chunk with no boundary within this many words (and the three after them) is cut after
    /// them, at a word boundary; 0 turns the early cut off.
    pub first_chunk_max_words: usize,
    /// No chunk sent to an engine is longer than this.
    pub max_chunk_chars: usize,
    /// OpenAI voice names (`alloy`, `nova`, ...) to installed voice ids, for `POST /v1/audio/speech`. An
    /// OpenAI name not listed speaks with the default voice; a voice id is accepted as it is.
    pub openai_voices: BTreeMap<String, String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            admission_max_utilisation: DEFAULT_ADMISSION_MAX_UTILISATION,
            max_text_chars: DEFAULT_MAX_TEXT_CHARS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_pending_chars: DEFAULT_MAX_PENDING_CHARS,
            max_queued_utterances: DEFAULT_MAX_QUEUED_UTTERANCES,
            idle_timeout_seconds: DEFAULT_IDLE_TIMEOUT_SECONDS,
            max_session_seconds: DEFAULT_MAX_SESSION_SECONDS,
            pacing_lead_frames: DEFAULT_PACING_LEAD_FRAMES,
            max_buffered_frames: DEFAULT_MAX_BUFFERED_FRAMES,
            max_bad_messages: DEFAULT_MAX_BAD_MESSAGES,
            bad_message_window_seconds: DEFAULT_BAD_MESSAGE_WINDOW_SECONDS,
            max_error_replies_per_second: DEFAULT_MAX_ERROR_REPLIES_PER_SECOND,
            slow_client_timeout_seconds: DEFAULT_SLOW_CLIENT_TIMEOUT_SECONDS,
            first_chunk_min_chars: tts_core::text::DEFAULT_FIRST_CHUNK_MIN_CHARS,
            first_chunk_max_words: tts_core::text::DEFAULT_FIRST_CHUNK_MAX_WORDS,
            max_chunk_chars: tts_core::text::DEFAULT_MAX_CHUNK_CHARS,
            openai_voices: BTreeMap::new(),
        }
    }
}

impl GatewayConfig {
    /// How every transport cuts an utterance's text into chunks.
    pub fn segmenter(&self) -> tts_core::text::SegmenterConfig {
        tts_core::text::SegmenterConfig {
            first_chunk_min_chars: self.first_chunk_min_chars,
            first_chunk_max_words: self.first_chunk_max_words,
            max_chunk_chars: self.max_chunk_chars,
        }
    }

    /// Every problem at once, one sentence each.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut positive = |name: &str, value: u64| {
            if value == 0 {
                problems.push(format!("gateway.{name} must be greater than 0"));
            }
        };
        positive("max_sessions", self.max_sessions as u64);
        positive("max_text_chars", self.max_text_chars as u64);
        positive("max_message_bytes", self.max_message_bytes as u64);
        positive("max_pending_chars", self.max_pending_chars as u64);
        positive("max_queued_utterances", self.max_queued_utterances as u64);
        positive("idle_timeout_seconds", self.idle_timeout_seconds);
        positive("max_session_seconds", self.max_session_seconds);
        positive("max_buffered_frames", self.max_buffered_frames as u64);
        positive("max_bad_messages", u64::from(self.max_bad_messages));
        positive("bad_message_window_seconds", self.bad_message_window_seconds);
        positive(
            "max_error_replies_per_second",
            u64::from(self.max_error_replies_per_second),
        );
        positive("slow_client_timeout_seconds", self.slow_client_timeout_seconds);
        positive("max_chunk_chars", self.max_chunk_chars as u64);
        for (name, value) in [
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("max_session_seconds", self.max_session_seconds),
            ("bad_message_window_seconds", self.bad_message_window_seconds),
            ("slow_client_timeout_seconds", self.slow_client_timeout_seconds),
        ] {
            if value > MAX_LIMIT_SECONDS {
                problems.push(format!(
                    "gateway.{name} must be at most {MAX_LIMIT_SECONDS} (one year)"
                ));
            }
        }
        if !(0.0..=MAX_ADMISSION_UTILISATION).contains(&self.admission_max_utilisation) {
            problems.push(format!(
                "gateway.admission_max_utilisation must be between 0 (off) and {MAX_ADMISSION_UTILISATION}"
            ));
        }
        if self.first_chunk_min_chars >= self.max_chunk_chars {
            problems.push("gateway.first_chunk_min_chars must be below gateway.max_chunk_chars".into());
        }
        if self.max_pending_chars < self.max_text_chars {
            problems.push("gateway.max_pending_chars must be at least gateway.max_text_chars".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_would_overflow_the_clock_are_rejected_all_at_once() {
        let config = GatewayConfig {
            idle_timeout_seconds: u64::MAX,
            max_session_seconds: u64::MAX,
            max_queued_utterances: 0,
            admission_max_utilisation: f64::NAN,
            ..GatewayConfig::default()
        };
        let problems = config.validate();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("admission_max_utilisation must be between 0 (off) and 100"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("idle_timeout_seconds must be at most"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("max_session_seconds must be at most"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("max_queued_utterances must be greater than 0"))
        );
        assert!(GatewayConfig::default().validate().is_empty());
    }
}
