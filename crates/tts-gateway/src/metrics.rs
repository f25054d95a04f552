//! The gateway's metrics: one struct registered once into the process registry, with a method named after
//! each thing that happens. `docs/telemetry.md` states where every clock starts and stops; the driver
//! calls these methods at exactly those points.
//!
//! Each subsystem keeps its own families in a file of its own (`latency`, `engine`, `frames`, `messages`,
//! `sessions`, `api`); `windows` judges events against the SLOs and feeds the sliding windows; this file
//! only routes each event to the subsystems it concerns and honours the `minimal` level.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tts_core::voices::VoiceInfo;

use crate::protocol::{Command, ErrorCode, UtteranceEndReason};
use crate::slo::SloConfig;

mod api;
mod buckets;
mod engine;
mod frames;
mod labels;
mod latency;
mod messages;
mod sessions;
mod summary;
mod windows;

use api::ApiMetrics;
pub(crate) use api::{ApiOutcome, Transport};
use engine::EngineMetrics;
use frames::FrameMetrics;
use labels::Outcome;
pub(crate) use labels::{DropReason, Endpoint, MessageIn, MessageOut, Stage};
use latency::LatencyMetrics;
use messages::MessageMetrics;
pub(crate) use sessions::ActiveSession;
use sessions::SessionMetrics;
use windows::SloSignals;
pub use windows::{EngineWindows, Windows};

/// How much the gateway records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsLevel {
    /// Everything in docs/telemetry.md.
    #[default]
    Full,
    /// Session counters only (benchmark baseline).
    Minimal,
}

/// Everything the gateway measures.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// False for the `minimal` level: only session counters are kept (for A/B overhead measurements).
    full: bool,
    pub windows: Arc<Windows>,
    slo: SloSignals,
    latency: LatencyMetrics,
    frames: FrameMetrics,
    engine: EngineMetrics,
    sessions: SessionMetrics,
    messages: MessageMetrics,
    api: ApiMetrics,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry, slo: SloConfig) -> Self {
        Self::register_with_level(registry, slo, MetricsLevel::Full)
    }

    /// `Minimal` keeps the families (so scrapes look the same) but records only session counters; it
    /// exists to measure what the per-frame and per-chunk instrumentation costs. Every series whose labels
    /// are known up front is created at zero, so dashboards and `rate()` see them from the first scrape;
    /// voice-labelled series appear with their voice's first use.
    pub fn register_with_level(registry: &mut Registry, slo: SloConfig, level: MetricsLevel) -> Self {
        let slo = SloSignals::register(registry, slo);
        let api = ApiMetrics::register(registry);
        Self {
            full: level == MetricsLevel::Full,
            windows: slo.windows.clone(),
            latency: LatencyMetrics::register(registry),
            frames: FrameMetrics::register(registry),
            engine: EngineMetrics::register(registry),
            sessions: SessionMetrics::register(registry),
            messages: MessageMetrics::register(registry),
            slo,
            api,
        }
    }

    pub(crate) fn connection(&self, endpoint: Endpoint) {
        self.sessions.connection(endpoint);
    }

    /// A connection refused a session; an `overloaded` refusal is the server failing a request, so it
    /// counts against availability.
    pub(crate) fn session_refused(&self, reason: &'static str) {
        self.sessions.refused(reason);
        if self.full && reason == "overloaded" {
            self.slo.refused_overloaded();
        }
    }

    /// Counts the session in; the returned guard counts it out of `tts_sessions_active` when dropped, so a
    /// session that ends any way at all (a panic included) can never leave the gauge too high or push it
    /// below zero.
    pub(crate) fn session_started(&self, endpoint: Endpoint) -> ActiveSession {
        self.sessions.started(endpoint)
    }

    pub(crate) fn session_ended(&self, reason: &'static str, lifetime: Duration) {
        self.sessions.ended(reason, lifetime);
    }

    pub(crate) fn message_received(&self, kind: MessageIn) {
        if self.full {
            self.messages.received(kind);
        }
    }

    pub(crate) fn message_sent(&self, kind: MessageOut) {
        if self.full {
            self.messages.sent(kind);
        }
    }

    pub(crate) fn error_sent(&self, code: ErrorCode) {
        if self.full {
            self.messages.error_sent(code);
        }
    }

    /// An error reply not sent: the session was over `gateway.max_error_replies_per_second`.
    pub(crate) fn error_suppressed(&self, code: ErrorCode) {
        if self.full {
            self.messages.error_suppressed(code);
        }
    }

    pub(crate) fn frame_sent(&self, bytes: usize) {
        if self.full {
            self.frames.sent(bytes);
            self.messages.audio_sent();
        }
    }

    pub(crate) fn frame_interval(&self, interval: Duration) {
        if self.full {
            let seconds = interval.as_secs_f64();
            self.frames.interval(seconds);
            self.slo.frame_interval(seconds);
        }
    }

    pub(crate) fn frames_dropped(&self, reason: DropReason, frames: usize) {
        if self.full {
            self.frames.dropped(reason, frames);
        }
    }

    pub(crate) fn underrun(&self, voice: &VoiceInfo) {
        if self.full {
            self.frames.underrun(voice);
            self.slo.underrun();
        }
    }

    /// First audio and its four stages (each `Duration` is one stage; they add up to the total).
    /// `trace_id` becomes an exemplar (OpenMetrics output) when the utterance's trace is sampled.
    pub(crate) fn first_audio(
        &self,
        trace_id: Option<String>,
        voice: &VoiceInfo,
        transport: Transport,
        stages: [(Stage, Duration); 4],
    ) {
        if self.full {
            let seconds = self.latency.first_audio(trace_id, voice, transport, stages);
            self.slo.first_audio(voice.engine, seconds);
        }
    }

    pub(crate) fn queue_wait(&self, first: bool, wait: Duration) {
        if self.full {
            self.engine.queue_wait(first, wait);
        }
    }

    pub(crate) fn chunk_synthesized(
        &self,
        voice: &VoiceInfo,
        characters: usize,
        stats: &tts_core::pool::JobStats,
    ) {
        if self.full {
            let times = self.engine.chunk_synthesized(voice, characters, stats);
            self.slo
                .chunk_synthesized(voice.engine, times.engine_seconds, times.real_time_factor);
        }
    }

    pub(crate) fn chunk_failed(&self, voice: &VoiceInfo) {
        if self.full {
            self.engine.chunk_failed(voice);
            self.slo.chunk_failed(voice.engine);
        }
    }

    pub(crate) fn chunk_cancelled(&self, voice: &VoiceInfo) {
        if self.full {
            self.engine.chunk_cancelled(voice);
        }
    }

    pub(crate) fn utterance_ended(
        &self,
        voice: &VoiceInfo,
        transport: Transport,
        reason: UtteranceEndReason,
        synthesis: Option<Duration>,
        end_to_end: Option<Duration>,
        // `None` for transports that do not pace audio (HTTP, Wyoming): no underrun can happen there, and
        // counting them as good events would dilute the underrun SLO.
        underruns: Option<u64>,
    ) {
        if !self.full {
            return;
        }
        let outcome = match reason {
            UtteranceEndReason::Completed => Outcome::Completed,
            UtteranceEndReason::Stopped => Outcome::Stopped,
            UtteranceEndReason::Failed => Outcome::Failed,
        };
        self.sessions.utterance(outcome, transport);
        self.latency.utterance(voice, synthesis, end_to_end);
        let available = reason != UtteranceEndReason::Failed;
        self.slo.utterance(voice.engine, available, underruns);
    }

    /// An HTTP speech request or a Wyoming synthesis ended this way.
    pub(crate) fn api_request(&self, transport: Transport, outcome: ApiOutcome) {
        self.api.request(transport, outcome);
    }

    /// STOP or PAUSE taking effect: `latency` is from the read to the point after which no frame leaves.
    pub(crate) fn barge_in(&self, command: Command, latency: Duration, trace_id: Option<String>) {
        if self.full {
            let seconds = latency.as_secs_f64();
            self.latency.barge_in(command, seconds, trace_id);
            self.slo.barge_in(seconds);
        }
    }

    pub(crate) fn control(&self, command: Command, latency: Duration) {
        if self.full {
            self.latency.control(command, latency);
        }
    }
}
