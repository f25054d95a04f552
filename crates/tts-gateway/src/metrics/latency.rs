//! Latency histograms of the listener's experience: first audio and its stages, whole utterances, and how
//! fast control messages take effect.

use std::time::Duration;

use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tts_core::voices::VoiceInfo;

use super::Transport;
use super::buckets::{CONTROL_BUCKETS, END_TO_END_BUCKETS, LATENCY_BUCKETS, SYNTHESIS_BUCKETS};
use super::labels::{CommandLabels, FirstAudioLabels, Stage, StageLabels, TraceLabels, VoiceLabels};
use crate::protocol::Command;

/// `tts_first_audio_seconds`, its stages, `tts_synthesis_utterance_seconds`, `tts_end_to_end_seconds`,
/// `tts_barge_in_seconds` and `tts_control_seconds`.
#[derive(Debug)]
pub(super) struct LatencyMetrics {
    first_audio: Family<FirstAudioLabels, HistogramWithExemplars<TraceLabels>>,
    first_audio_stage: Family<StageLabels, Histogram>,
    synthesis_utterance: Family<VoiceLabels, Histogram>,
    end_to_end: Family<VoiceLabels, Histogram>,
    barge_in: Family<CommandLabels, HistogramWithExemplars<TraceLabels>>,
    control: Family<CommandLabels, Histogram>,
}

impl LatencyMetrics {
    pub(super) fn register(r: &mut Registry) -> Self {
        let metrics = Self {
            first_audio: Family::new_with_constructor(|| {
                HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
            }),
            first_audio_stage: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            synthesis_utterance: Family::new_with_constructor(|| Histogram::new(SYNTHESIS_BUCKETS)),
            end_to_end: Family::new_with_constructor(|| Histogram::new(END_TO_END_BUCKETS)),
            barge_in: Family::new_with_constructor(|| {
                HistogramWithExemplars::new(CONTROL_BUCKETS.into_iter())
            }),
            control: Family::new_with_constructor(|| Histogram::new(CONTROL_BUCKETS)),
        };
        let s = Unit::Seconds;
        r.register_with_unit(
            "tts_first_audio",
            "Text read to the utterance's first audio handed to the connection (WebSocket frame, HTTP body bytes, Wyoming audio-chunk)",
            s.clone(),
            metrics.first_audio.clone(),
        );
        r.register_with_unit("tts_first_audio_stage", "First audio split into consecutive stages (intake, queue, engine, delivery) that add up to tts_first_audio_seconds", s.clone(), metrics.first_audio_stage.clone());
        r.register_with_unit(
            "tts_synthesis_utterance",
            "First chunk submitted to last chunk synthesised, per completed utterance",
            s.clone(),
            metrics.synthesis_utterance.clone(),
        );
        r.register_with_unit(
            "tts_end_to_end",
            "Text read to the last frame handed to the socket, per completed utterance",
            s.clone(),
            metrics.end_to_end.clone(),
        );
        r.register_with_unit(
            "tts_barge_in",
            "STOP or PAUSE read from the socket to the last frame of the utterance handed to the socket",
            s.clone(),
            metrics.barge_in.clone(),
        );
        r.register_with_unit(
            "tts_control",
            "Control message read from the socket to the command taking effect",
            s,
            metrics.control.clone(),
        );
        for command in [Command::Pause, Command::Resume, Command::Stop] {
            let _ = metrics.control.get_or_create(&command.into());
        }
        for command in [Command::Pause, Command::Stop] {
            let _ = metrics.barge_in.get_or_create(&command.into());
        }
        metrics
    }

    /// Observes first audio and its stages; returns the total in seconds.
    pub(super) fn first_audio(
        &self,
        trace_id: Option<String>,
        voice: &VoiceInfo,
        transport: Transport,
        stages: [(Stage, Duration); 4],
    ) -> f64 {
        let total: Duration = stages.iter().map(|(_, d)| *d).sum();
        let seconds = total.as_secs_f64();
        let labels = FirstAudioLabels {
            engine: voice.engine.into(),
            voice: voice.id.clone(),
            transport,
        };
        self.first_audio.get_or_create(&labels).observe(
            seconds,
            trace_id.map(|trace_id| TraceLabels { trace_id }),
            None,
        );
        for (stage, duration) in stages {
            self.first_audio_stage
                .get_or_create(&StageLabels {
                    engine: voice.engine.into(),
                    stage,
                })
                .observe(duration.as_secs_f64());
        }
        seconds
    }

    pub(super) fn utterance(
        &self,
        voice: &VoiceInfo,
        synthesis: Option<Duration>,
        end_to_end: Option<Duration>,
    ) {
        let labels = VoiceLabels::of(voice);
        if let Some(synthesis) = synthesis {
            self.synthesis_utterance
                .get_or_create(&labels)
                .observe(synthesis.as_secs_f64());
        }
        if let Some(end_to_end) = end_to_end {
            self.end_to_end
                .get_or_create(&labels)
                .observe(end_to_end.as_secs_f64());
        }
    }

    pub(super) fn barge_in(&self, command: Command, seconds: f64, trace_id: Option<String>) {
        self.barge_in.get_or_create(&command.into()).observe(
            seconds,
            trace_id.map(|trace_id| TraceLabels { trace_id }),
            None,
        );
    }

    pub(super) fn control(&self, command: Command, latency: Duration) {
        self.control
            .get_or_create(&command.into())
            .observe(latency.as_secs_f64());
    }
}
