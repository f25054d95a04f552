//! Frame delivery and pacing: frames and bytes sent, the interval between frames, underruns, and frames
//! that were synthesised but never sent.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tts_core::voices::VoiceInfo;

use super::buckets::INTERVAL_BUCKETS;
use super::labels::{DropLabels, DropReason, Engine, EngineLabels};

/// `tts_frame_interval_seconds`, `tts_underruns_total`, `tts_frames_dropped_total`, `tts_frames_sent_total`
/// and `tts_audio_sent_bytes_total`.
#[derive(Debug)]
pub(super) struct FrameMetrics {
    frame_interval: Histogram,
    underruns: Family<EngineLabels, Counter>,
    frames_dropped: Family<DropLabels, Counter>,
    frames_sent: Counter,
    audio_bytes_sent: Counter,
}

impl FrameMetrics {
    pub(super) fn register(r: &mut Registry) -> Self {
        let metrics = Self {
            frame_interval: Histogram::new(INTERVAL_BUCKETS),
            underruns: Family::default(),
            frames_dropped: Family::default(),
            frames_sent: Counter::default(),
            audio_bytes_sent: Counter::default(),
        };
        r.register_with_unit(
            "tts_frame_interval",
            "Time between consecutive frames of an utterance handed to the socket (20 ms when paced)",
            Unit::Seconds,
            metrics.frame_interval.clone(),
        );
        r.register(
            "tts_underruns",
            "Times synthesis fell behind the 20 ms clock and the client's cushion ran dry",
            metrics.underruns.clone(),
        );
        r.register(
            "tts_frames_dropped",
            "Synthesised frames never sent, by reason",
            metrics.frames_dropped.clone(),
        );
        r.register(
            "tts_frames_sent",
            "Audio frames handed to the socket",
            metrics.frames_sent.clone(),
        );
        r.register_with_unit(
            "tts_audio_sent",
            "PCM bytes handed to the socket",
            Unit::Bytes,
            metrics.audio_bytes_sent.clone(),
        );
        for engine in [Engine::Espeak, Engine::Piper] {
            let _ = metrics.underruns.get_or_create(&EngineLabels { engine });
        }
        for reason in [DropReason::Stop, DropReason::Backpressure, DropReason::SessionEnd] {
            let _ = metrics.frames_dropped.get_or_create(&DropLabels { reason });
        }
        metrics
    }

    pub(super) fn sent(&self, bytes: usize) {
        self.frames_sent.inc();
        self.audio_bytes_sent.inc_by(bytes as u64);
    }

    pub(super) fn interval(&self, seconds: f64) {
        self.frame_interval.observe(seconds);
    }

    pub(super) fn dropped(&self, reason: DropReason, frames: usize) {
        if frames > 0 {
            self.frames_dropped
                .get_or_create(&DropLabels { reason })
                .inc_by(frames as u64);
        }
    }

    pub(super) fn underrun(&self, voice: &VoiceInfo) {
        self.underruns
            .get_or_create(&EngineLabels {
                engine: voice.engine.into(),
            })
            .inc();
    }
}
