//! The gateway's metrics: one struct registered once into the process registry, with a method named after
//! each thing that happens. `docs/telemetry.md` states where every clock starts and stops; the driver
//! calls these methods at exactly those points.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tts_core::voices::{EngineKind, VoiceInfo};
use tts_telemetry::window::{WindowedHistogram, WindowedRatio};

use crate::protocol::{Command, ErrorCode, UtteranceEndReason};
use crate::slo::{Slo, SloConfig, SloEvents};

mod api;

use api::ApiMetrics;
pub(crate) use api::{ApiOutcome, Transport};

/// Latencies a listener notices: 5 ms to 5 s, dense where the targets are (20 ms espeak, 150–300 ms Piper).
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0,
];
/// Control and barge-in: sub-millisecond to a quarter second (the SLO is 50 ms).
const CONTROL_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25,
];
/// Frame send intervals cluster at 20 ms; lead frames leave at ~0, stalls show past 30 ms.
const INTERVAL_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.015, 0.018, 0.019, 0.02, 0.021, 0.022, 0.025, 0.03, 0.04, 0.06, 0.1,
];
/// Engine work per chunk: 1 ms (espeak) to 10 s (a long Piper chunk on a busy machine).
const SYNTHESIS_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 10.0,
];
/// Real-time factor (engine seconds per audio second): espeak ~0.001, Piper 0.02–0.2, > 1 cannot keep up.
const RTF_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
];
/// Session lifetimes: a second to the one-hour cap.
const SESSION_BUCKETS: [f64; 10] = [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// Label values are the variants' names in snake_case (`Delivery` → `delivery`), as Prometheus users expect.
macro_rules! snake_case_label_values {
    ($($ty:ty),+ $(,)?) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                use std::fmt::Write;
                let name = format!("{self:?}");
                for (i, c) in name.chars().enumerate() {
                    if c.is_ascii_uppercase() {
                        if i > 0 {
                            encoder.write_char('_')?;
                        }
                        encoder.write_char(c.to_ascii_lowercase())?;
                    } else {
                        encoder.write_char(c)?;
                    }
                }
                Ok(())
            }
        }
    )+};
}

snake_case_label_values!(
    Engine,
    Stage,
    CommandLabel,
    DropReason,
    Endpoint,
    MessageIn,
    MessageOut,
    Outcome,
    TaskOutcome,
    Lane,
    Transport,
    ApiOutcome
);

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Engine {
    Espeak,
    Piper,
}

impl From<EngineKind> for Engine {
    fn from(kind: EngineKind) -> Self {
        match kind {
            EngineKind::Espeak => Engine::Espeak,
            EngineKind::Piper => Engine::Piper,
        }
    }
}

/// A voice from the catalog: bounded by the voices installed, never free text.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VoiceLabels {
    engine: Engine,
    voice: String,
}

impl VoiceLabels {
    fn of(voice: &VoiceInfo) -> Self {
        Self {
            engine: voice.engine.into(),
            voice: voice.id.clone(),
        }
    }
}

/// First audio: the voice, and how the client reached the server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FirstAudioLabels {
    engine: Engine,
    voice: String,
    transport: Transport,
}

/// Exemplar labels: the trace that produced the observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceLabels {
    trace_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    engine: Engine,
}

/// The four consecutive parts of first audio; they add up to `tts_first_audio_seconds`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Text read → chunk submitted to the pool (segmentation, admission).
    Intake,
    /// Submitted → an engine thread took it.
    Queue,
    /// Engine took it → first PCM back in the session.
    Engine,
    /// First PCM → first frame handed to the socket (resampling, framing, pacing, write).
    Delivery,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    engine: Engine,
    stage: Stage,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum CommandLabel {
    Pause,
    Resume,
    Stop,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: CommandLabel,
}

impl From<Command> for CommandLabels {
    fn from(command: Command) -> Self {
        let command = match command {
            Command::Pause => CommandLabel::Pause,
            Command::Resume => CommandLabel::Resume,
            Command::Stop => CommandLabel::Stop,
        };
        Self { command }
    }
}

/// Why frames that were synthesised never reached the client.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// STOP dropped them.
    Stop,
    /// The client stopped reading (session ended `slow_client`).
    Backpressure,
    /// The session ended for any other reason (client gone, timeout, error, shutdown).
    SessionEnd,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: DropReason,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/v1/stream`
    V1,
    /// `/`, the original protocol
    Legacy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: Endpoint,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Message types received, `invalid` for anything rejected before it had a type.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum MessageIn {
    Text,
    Control,
    Config,
    Invalid,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageInLabels {
    r#type: MessageIn,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum MessageOut {
    SessionStart,
    Audio,
    UtteranceEnd,
    SessionEnd,
    Error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageOutLabels {
    r#type: MessageOut,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Outcome {
    Completed,
    Stopped,
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
    transport: Transport,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum TaskOutcome {
    Completed,
    Cancelled,
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    engine: Engine,
    outcome: TaskOutcome,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Lane {
    First,
    Later,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabels {
    lane: Lane,
}

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

/// Sliding windows behind `/metrics/summary` and the compliance ratios.
#[derive(Debug)]
pub struct Windows {
    pub first_audio: WindowedHistogram,
    pub synthesis: WindowedHistogram,
    pub barge_in: WindowedHistogram,
    pub frame_interval: WindowedHistogram,
    pub real_time_factor: WindowedHistogram,
    pub first_audio_ok: WindowedRatio,
    pub barge_in_ok: WindowedRatio,
    pub jitter_ok: WindowedRatio,
    pub availability_ok: WindowedRatio,
    /// Per engine class (`EngineKind` order: espeak, piper), for the alert engine's per-engine signals.
    pub engines: [EngineWindows; 2],
    /// Underruns since start, all engines: the alert engine turns it into a rate.
    pub underruns: std::sync::atomic::AtomicU64,
}

/// The windows the alert engine reads per engine class.
#[derive(Debug)]
pub struct EngineWindows {
    pub first_audio: WindowedHistogram,
    pub synthesis: WindowedHistogram,
    pub real_time_factor: WindowedHistogram,
}

impl Windows {
    /// The windows of `engine`'s class.
    pub fn engine(&self, engine: tts_core::voices::EngineKind) -> &EngineWindows {
        match engine {
            tts_core::voices::EngineKind::Espeak => &self.engines[0],
            tts_core::voices::EngineKind::Piper => &self.engines[1],
        }
    }
}

impl Windows {
    fn new(window: Duration) -> Self {
        let slots = 30;
        Self {
            first_audio: WindowedHistogram::new(window, slots),
            synthesis: WindowedHistogram::new(window, slots),
            barge_in: WindowedHistogram::new(window, slots),
            frame_interval: WindowedHistogram::new(window, slots),
            real_time_factor: WindowedHistogram::new(window, slots),
            first_audio_ok: WindowedRatio::new(window, slots),
            barge_in_ok: WindowedRatio::new(window, slots),
            jitter_ok: WindowedRatio::new(window, slots),
            availability_ok: WindowedRatio::new(window, slots),
            engines: std::array::from_fn(|_| EngineWindows {
                first_audio: WindowedHistogram::new(window, slots),
                synthesis: WindowedHistogram::new(window, slots),
                real_time_factor: WindowedHistogram::new(window, slots),
            }),
            underruns: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// Everything the gateway measures.
#[derive(Debug)]
pub struct GatewayMetrics {
    slo: SloConfig,
    /// False for the `minimal` level: only session counters are kept (for A/B overhead measurements).
    full: bool,
    pub windows: Arc<Windows>,
    first_audio: Family<FirstAudioLabels, HistogramWithExemplars<TraceLabels>>,
    first_audio_stage: Family<StageLabels, Histogram>,
    synthesis_chunk: Family<VoiceLabels, Histogram>,
    synthesis_utterance: Family<VoiceLabels, Histogram>,
    end_to_end: Family<VoiceLabels, Histogram>,
    real_time_factor: Family<VoiceLabels, Histogram>,
    barge_in: Family<CommandLabels, HistogramWithExemplars<TraceLabels>>,
    control: Family<CommandLabels, Histogram>,
    frame_interval: Histogram,
    underruns: Family<EngineLabels, Counter>,
    frames_dropped: Family<DropLabels, Counter>,
    frames_sent: Counter,
    audio_bytes_sent: Counter,
    queue_wait: Family<LaneLabels, Histogram>,
    engine_tasks: Family<TaskLabels, Counter>,
    sessions_started: Family<EndpointLabels, Counter>,
    sessions_ended: Family<ReasonLabels, Counter>,
    sessions_active: Gauge,
    sessions_refused: Family<ReasonLabels, Counter>,
    session_duration: Histogram,
    connections: Family<EndpointLabels, Counter>,
    messages_received: Family<MessageInLabels, Counter>,
    messages_sent: Family<MessageOutLabels, Counter>,
    /// `messages_sent{type="audio"}`, looked up once: it is bumped for every frame, and a family lookup takes
    /// a lock and hashes the labels.
    audio_messages_sent: Counter,
    errors_sent: Family<CodeLabels, Counter>,
    utterances: Family<OutcomeLabels, Counter>,
    characters: Family<EngineLabels, Counter>,
    slo_events: SloEvents,
    /// Totals for `/metrics/summary`, equal to sums over the labelled counters above.
    synthesis_total: std::sync::atomic::AtomicU64,
    synthesis_errors: std::sync::atomic::AtomicU64,
    api: ApiMetrics,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry, slo: SloConfig) -> Self {
        Self::register_with_level(registry, slo, MetricsLevel::Full)
    }

    /// `Minimal` keeps the families (so scrapes look the same) but records only session counters; it
    /// exists to measure what the per-frame and per-chunk instrumentation costs.
    pub fn register_with_level(registry: &mut Registry, slo: SloConfig, level: MetricsLevel) -> Self {
        let messages_sent: Family<MessageOutLabels, Counter> = Family::default();
        let audio_messages_sent = messages_sent
            .get_or_create(&MessageOutLabels {
                r#type: MessageOut::Audio,
            })
            .clone();
        let metrics = Self {
            messages_sent,
            audio_messages_sent,
            slo,
            full: level == MetricsLevel::Full,
            windows: Arc::new(Windows::new(Duration::from_secs(slo.window_seconds.max(1)))),
            first_audio: Family::new_with_constructor(|| {
                HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
            }),
            first_audio_stage: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            synthesis_chunk: Family::new_with_constructor(|| Histogram::new(SYNTHESIS_BUCKETS)),
            synthesis_utterance: Family::new_with_constructor(|| Histogram::new(SYNTHESIS_BUCKETS)),
            end_to_end: Family::new_with_constructor(|| Histogram::new(SESSION_BUCKETS_E2E)),
            real_time_factor: Family::new_with_constructor(|| Histogram::new(RTF_BUCKETS)),
            barge_in: Family::new_with_constructor(|| {
                HistogramWithExemplars::new(CONTROL_BUCKETS.into_iter())
            }),
            control: Family::new_with_constructor(|| Histogram::new(CONTROL_BUCKETS)),
            frame_interval: Histogram::new(INTERVAL_BUCKETS),
            underruns: Family::default(),
            frames_dropped: Family::default(),
            frames_sent: Counter::default(),
            audio_bytes_sent: Counter::default(),
            queue_wait: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            engine_tasks: Family::default(),
            sessions_started: Family::default(),
            sessions_ended: Family::default(),
            sessions_active: Gauge::default(),
            sessions_refused: Family::default(),
            session_duration: Histogram::new(SESSION_BUCKETS),
            connections: Family::default(),
            messages_received: Family::default(),

            errors_sent: Family::default(),
            utterances: Family::default(),
            characters: Family::default(),
            slo_events: SloEvents::register(registry),
            synthesis_total: Default::default(),
            synthesis_errors: Default::default(),
            api: ApiMetrics::register(registry),
        };
        let r = registry;
        let s = Unit::Seconds;
        r.register_with_unit(
            "tts_first_audio",
            "Text read to the utterance's first audio handed to the connection (WebSocket frame, HTTP body bytes, Wyoming audio-chunk)",
            s.clone(),
            metrics.first_audio.clone(),
        );
        r.register_with_unit("tts_first_audio_stage", "First audio split into consecutive stages (intake, queue, engine, delivery) that add up to tts_first_audio_seconds", s.clone(), metrics.first_audio_stage.clone());
        r.register_with_unit(
            "tts_synthesis_chunk",
            "Engine wall time for one chunk of text",
            s.clone(),
            metrics.synthesis_chunk.clone(),
        );
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
        r.register(
            "tts_real_time_factor_ratio",
            "Engine seconds per second of audio produced, per chunk",
            metrics.real_time_factor.clone(),
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
            s.clone(),
            metrics.control.clone(),
        );
        r.register_with_unit(
            "tts_frame_interval",
            "Time between consecutive frames of an utterance handed to the socket (20 ms when paced)",
            s.clone(),
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
        r.register_with_unit(
            "tts_queue_wait",
            "Chunk submitted to the engine pool to an engine thread taking it, by lane",
            s.clone(),
            metrics.queue_wait.clone(),
        );
        r.register(
            "tts_engine_tasks",
            "Chunks that reached an engine, by engine and outcome",
            metrics.engine_tasks.clone(),
        );
        r.register(
            "tts_sessions_started",
            "Sessions that received session_start, by endpoint",
            metrics.sessions_started.clone(),
        );
        r.register(
            "tts_sessions_ended",
            "Sessions ended, by reason",
            metrics.sessions_ended.clone(),
        );
        r.register(
            "tts_sessions_active",
            "Sessions open now",
            metrics.sessions_active.clone(),
        );
        r.register(
            "tts_sessions_refused",
            "Connections refused a session, by reason",
            metrics.sessions_refused.clone(),
        );
        r.register_with_unit(
            "tts_session_duration",
            "session_start to the session's end",
            s,
            metrics.session_duration.clone(),
        );
        r.register(
            "tts_websocket_connections",
            "WebSocket upgrades accepted, by endpoint",
            metrics.connections.clone(),
        );
        r.register(
            "tts_messages_received",
            "Client messages read, by type (invalid: rejected before it had one)",
            metrics.messages_received.clone(),
        );
        r.register(
            "tts_messages_sent",
            "Server messages handed to the socket, by type",
            metrics.messages_sent.clone(),
        );
        r.register(
            "tts_errors_sent",
            "error messages sent to clients, by code",
            metrics.errors_sent.clone(),
        );
        r.register(
            "tts_utterances",
            "Utterances ended, by outcome",
            metrics.utterances.clone(),
        );
        r.register(
            "tts_characters_synthesized",
            "Characters of text handed to engines",
            metrics.characters.clone(),
        );
        r.register_collector(Box::new(SloCollector {
            windows: metrics.windows.clone(),
        }));
        metrics.init_series();
        metrics
    }

    /// Creates every series whose labels are known up front at zero, so dashboards and `rate()` see them
    /// from the first scrape instead of appearing with the first event. Voice-labelled series appear with
    /// their voice's first use.
    fn init_series(&self) {
        for engine in [Engine::Espeak, Engine::Piper] {
            let _ = self.underruns.get_or_create(&EngineLabels {
                engine: engine.clone(),
            });
            let _ = self.characters.get_or_create(&EngineLabels {
                engine: engine.clone(),
            });
            for outcome in [
                TaskOutcome::Completed,
                TaskOutcome::Cancelled,
                TaskOutcome::Failed,
            ] {
                let _ = self.engine_tasks.get_or_create(&TaskLabels {
                    engine: engine.clone(),
                    outcome,
                });
            }
        }
        for reason in [DropReason::Stop, DropReason::Backpressure, DropReason::SessionEnd] {
            let _ = self.frames_dropped.get_or_create(&DropLabels { reason });
        }
        for endpoint in [Endpoint::V1, Endpoint::Legacy] {
            let _ = self.connections.get_or_create(&EndpointLabels { endpoint });
            let _ = self.sessions_started.get_or_create(&EndpointLabels { endpoint });
        }
        for reason in crate::session::END_REASONS {
            let _ = self.sessions_ended.get_or_create(&ReasonLabels { reason });
        }
        for reason in ["overloaded", "unknown_voice", "draining"] {
            let _ = self.sessions_refused.get_or_create(&ReasonLabels { reason });
        }
        for kind in [
            MessageIn::Text,
            MessageIn::Control,
            MessageIn::Config,
            MessageIn::Invalid,
        ] {
            let _ = self
                .messages_received
                .get_or_create(&MessageInLabels { r#type: kind });
        }
        for kind in [
            MessageOut::SessionStart,
            MessageOut::Audio,
            MessageOut::UtteranceEnd,
            MessageOut::SessionEnd,
            MessageOut::Error,
        ] {
            let _ = self
                .messages_sent
                .get_or_create(&MessageOutLabels { r#type: kind });
        }
        for code in ErrorCode::ALL {
            let _ = self
                .errors_sent
                .get_or_create(&CodeLabels { code: code.as_str() });
        }
        for outcome in [Outcome::Completed, Outcome::Stopped, Outcome::Failed] {
            for transport in Transport::ALL {
                let _ = self
                    .utterances
                    .get_or_create(&OutcomeLabels { outcome, transport });
            }
        }
        for command in [Command::Pause, Command::Resume, Command::Stop] {
            let _ = self.control.get_or_create(&command.into());
        }
        for command in [Command::Pause, Command::Stop] {
            let _ = self.barge_in.get_or_create(&command.into());
        }
        for lane in [Lane::First, Lane::Later] {
            let _ = self.queue_wait.get_or_create(&LaneLabels { lane });
        }
    }

    pub(crate) fn connection(&self, endpoint: Endpoint) {
        self.connections.get_or_create(&EndpointLabels { endpoint }).inc();
    }

    /// A connection refused a session; an `overloaded` refusal is the server failing a request, so it
    /// counts against availability.
    pub(crate) fn session_refused(&self, reason: &'static str) {
        self.sessions_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
        if self.full && reason == "overloaded" {
            self.windows.availability_ok.record(false);
            self.slo_events.record_unlabelled(Slo::Availability, false);
        }
    }

    /// Counts the session in; the returned guard counts it out of `tts_sessions_active` when dropped, so a
    /// session that ends any way at all (a panic included) can never leave the gauge too high or push it
    /// below zero.
    pub(crate) fn session_started(&self, endpoint: Endpoint) -> ActiveSession {
        self.sessions_started
            .get_or_create(&EndpointLabels { endpoint })
            .inc();
        self.sessions_active.inc();
        ActiveSession(self.sessions_active.clone())
    }

    pub(crate) fn session_ended(&self, reason: &'static str, lifetime: Duration) {
        self.sessions_ended.get_or_create(&ReasonLabels { reason }).inc();
        self.session_duration.observe(lifetime.as_secs_f64());
    }

    pub(crate) fn message_received(&self, kind: MessageIn) {
        if !self.full {
            return;
        }
        self.messages_received
            .get_or_create(&MessageInLabels { r#type: kind })
            .inc();
    }

    pub(crate) fn message_sent(&self, kind: MessageOut) {
        if !self.full {
            return;
        }
        self.messages_sent
            .get_or_create(&MessageOutLabels { r#type: kind })
            .inc();
    }

    pub(crate) fn error_sent(&self, code: ErrorCode) {
        if !self.full {
            return;
        }
        self.errors_sent
            .get_or_create(&CodeLabels { code: code.as_str() })
            .inc();
        self.message_sent(MessageOut::Error);
    }

    pub(crate) fn frame_sent(&self, bytes: usize) {
        if !self.full {
            return;
        }
        self.frames_sent.inc();
        self.audio_bytes_sent.inc_by(bytes as u64);
        self.audio_messages_sent.inc();
    }

    pub(crate) fn frame_interval(&self, interval: Duration) {
        if !self.full {
            return;
        }
        let seconds = interval.as_secs_f64();
        self.frame_interval.observe(seconds);
        self.windows.frame_interval.observe(seconds);
        let ok = seconds <= self.slo.frame_interval_limit_seconds();
        self.windows.jitter_ok.record(ok);
        self.slo_events.record_unlabelled(Slo::FramePacing, ok);
    }

    pub(crate) fn frames_dropped(&self, reason: DropReason, frames: usize) {
        if !self.full {
            return;
        }
        if frames > 0 {
            self.frames_dropped
                .get_or_create(&DropLabels { reason })
                .inc_by(frames as u64);
        }
    }

    pub(crate) fn underrun(&self, voice: &VoiceInfo) {
        if !self.full {
            return;
        }
        self.underruns
            .get_or_create(&EngineLabels {
                engine: voice.engine.into(),
            })
            .inc();
        self.windows
            .underruns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        if !self.full {
            return;
        }
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
        self.windows.first_audio.observe(seconds);
        self.windows.engine(voice.engine).first_audio.observe(seconds);
        let ok = seconds <= self.slo.first_audio_seconds.get(voice.engine);
        self.windows.first_audio_ok.record(ok);
        self.slo_events.record(Slo::FirstAudio, voice.engine, ok);
    }

    pub(crate) fn queue_wait(&self, first: bool, wait: Duration) {
        if !self.full {
            return;
        }
        let lane = if first { Lane::First } else { Lane::Later };
        self.queue_wait
            .get_or_create(&LaneLabels { lane })
            .observe(wait.as_secs_f64());
    }

    pub(crate) fn chunk_synthesized(
        &self,
        voice: &VoiceInfo,
        characters: usize,
        stats: &tts_core::pool::JobStats,
    ) {
        if !self.full {
            return;
        }
        let labels = VoiceLabels::of(voice);
        let engine_seconds = stats.engine_time.as_secs_f64();
        self.synthesis_chunk
            .get_or_create(&labels)
            .observe(engine_seconds);
        self.windows.synthesis.observe(engine_seconds);
        let engine_windows = self.windows.engine(voice.engine);
        engine_windows.synthesis.observe(engine_seconds);
        if let Some(rtf) = stats.real_time_factor() {
            self.real_time_factor.get_or_create(&labels).observe(rtf);
            self.windows.real_time_factor.observe(rtf);
            engine_windows.real_time_factor.observe(rtf);
        }
        self.engine_tasks
            .get_or_create(&TaskLabels {
                engine: voice.engine.into(),
                outcome: TaskOutcome::Completed,
            })
            .inc();
        self.synthesis_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.slo_events.record(Slo::ErrorRate, voice.engine, true);
        self.characters
            .get_or_create(&EngineLabels {
                engine: voice.engine.into(),
            })
            .inc_by(characters as u64);
    }

    pub(crate) fn chunk_failed(&self, voice: &VoiceInfo) {
        if !self.full {
            return;
        }
        self.engine_tasks
            .get_or_create(&TaskLabels {
                engine: voice.engine.into(),
                outcome: TaskOutcome::Failed,
            })
            .inc();
        self.synthesis_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.slo_events.record(Slo::ErrorRate, voice.engine, false);
    }

    pub(crate) fn chunk_cancelled(&self, voice: &VoiceInfo) {
        if !self.full {
            return;
        }
        self.engine_tasks
            .get_or_create(&TaskLabels {
                engine: voice.engine.into(),
                outcome: TaskOutcome::Cancelled,
            })
            .inc();
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
        self.utterances
            .get_or_create(&OutcomeLabels { outcome, transport })
            .inc();
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
        let available = reason != UtteranceEndReason::Failed;
        self.windows.availability_ok.record(available);
        self.slo_events.record_unlabelled(Slo::Availability, available);
        if available && let Some(underruns) = underruns {
            self.slo_events
                .record(Slo::Underruns, voice.engine, underruns == 0);
        }
    }

    /// An HTTP speech request or a Wyoming synthesis ended this way.
    pub(crate) fn api_request(&self, transport: Transport, outcome: ApiOutcome) {
        self.api.request(transport, outcome);
    }

    /// STOP or PAUSE taking effect: `latency` is from the read to the point after which no frame leaves.
    pub(crate) fn barge_in(&self, command: Command, latency: Duration, trace_id: Option<String>) {
        if !self.full {
            return;
        }
        let seconds = latency.as_secs_f64();
        self.barge_in.get_or_create(&command.into()).observe(
            seconds,
            trace_id.map(|trace_id| TraceLabels { trace_id }),
            None,
        );
        self.windows.barge_in.observe(seconds);
        let ok = seconds <= self.slo.barge_in_seconds;
        self.windows.barge_in_ok.record(ok);
        self.slo_events.record_unlabelled(Slo::BargeIn, ok);
    }

    pub(crate) fn control(&self, command: Command, latency: Duration) {
        if !self.full {
            return;
        }
        self.control
            .get_or_create(&command.into())
            .observe(latency.as_secs_f64());
    }

    /// The body of `/metrics/summary`: seed 000's keys plus first audio, jitter, real-time factor and SLO
    /// compliance. Percentiles are over the sliding window (`slo.window_seconds`), `null` without data.
    pub fn summary(&self, pool: &tts_core::pool::PoolStats) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let w = &self.windows;
        let ms = |h: &WindowedHistogram, q: f64| h.quantile(q).map(|v| round(v * 1000.0, 3));
        let violations: u64 = Slo::ALL.iter().map(|slo| self.slo_events.bad(*slo)).sum();
        let per_slo: serde_json::Map<String, serde_json::Value> = Slo::ALL
            .iter()
            .map(|slo| (slo.as_str().to_owned(), self.slo_events.bad(*slo).into()))
            .collect();
        let threads = pool.threads.max(1);
        let compliance = [
            (
                "first_audio",
                w.first_audio_ok.ratio(),
                self.slo.objectives.first_audio,
            ),
            ("barge_in", w.barge_in_ok.ratio(), self.slo.objectives.barge_in),
            (
                "frame_pacing",
                w.jitter_ok.ratio(),
                self.slo.objectives.frame_pacing,
            ),
            (
                "availability",
                w.availability_ok.ratio(),
                self.slo.objectives.availability,
            ),
        ];
        // Degraded while any SLO's share of good events over the window is below its objective: what an
        // operator curling the summary needs to know first, not a constant "ok".
        let breached: Vec<&str> = compliance
            .iter()
            .filter(|(_, ratio, objective)| ratio.is_some_and(|r| r < *objective))
            .map(|(name, _, _)| *name)
            .collect();
        let compliance: serde_json::Map<String, serde_json::Value> = compliance
            .iter()
            .map(|(name, ratio, _)| ((*name).to_owned(), (*ratio).into()))
            .collect();
        serde_json::json!({
            "status": if breached.is_empty() { "ok" } else { "degraded" },
            "slo_breached": breached,
            "window_seconds": self.slo.window_seconds,
            "synthesis_total": self.synthesis_total.load(Relaxed),
            "synthesis_errors": self.synthesis_errors.load(Relaxed),
            "synthesis_latency_p50_ms": ms(&w.synthesis, 0.5),
            "synthesis_latency_p95_ms": ms(&w.synthesis, 0.95),
            "synthesis_latency_p99_ms": ms(&w.synthesis, 0.99),
            "workers_active": pool.busy,
            "workers_idle": threads.saturating_sub(pool.busy),
            "worker_utilization_percent": round(pool.busy as f64 * 100.0 / threads as f64, 1),
            "queue_depth": pool.queued,
            "sessions_active": self.sessions_active.get(),
            "session_barge_in_p95_ms": ms(&w.barge_in, 0.95),
            "sla_violations": violations,
            "slo_violations": per_slo,
            "first_audio_p50_ms": ms(&w.first_audio, 0.5),
            "first_audio_p95_ms": ms(&w.first_audio, 0.95),
            "first_audio_p99_ms": ms(&w.first_audio, 0.99),
            "frame_interval_p95_ms": ms(&w.frame_interval, 0.95),
            "real_time_factor_p50": w.real_time_factor.quantile(0.5).map(|v| round(v, 5)),
            "slo": self.slo_lines(),
            "slo_compliance": compliance,
        })
    }
}

impl GatewayMetrics {
    /// The configured SLO thresholds, in the summary's milliseconds (the dashboard draws them as lines),
    /// and the objectives its error-budget figures are computed against.
    fn slo_lines(&self) -> serde_json::Value {
        let first_audio = &self.slo.first_audio_seconds;
        let frame_interval =
            self.slo.frame_interval_target_seconds + self.slo.frame_interval_tolerance_seconds;
        serde_json::json!({
            "first_audio_ms": {
                "espeak": round(first_audio.espeak * 1000.0, 3),
                "piper": round(first_audio.piper * 1000.0, 3),
            },
            "barge_in_ms": round(self.slo.barge_in_seconds * 1000.0, 3),
            "frame_interval_ms": round(frame_interval * 1000.0, 3),
            "objectives": self.slo.objectives,
        })
    }
}

/// Text-to-last-frame latencies: 50 ms to a minute (long utterances play in real time).
const SESSION_BUCKETS_E2E: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0];

/// Holds one session in `tts_sessions_active`.
#[derive(Debug)]
pub(crate) struct ActiveSession(Gauge);

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Compliance ratios over the SLO window, computed at scrape time; a ratio with no events in the window
/// is left out rather than reported as 1.
#[derive(Debug)]
struct SloCollector {
    windows: Arc<Windows>,
}

impl prometheus_client::collector::Collector for SloCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let w = &self.windows;
        let ratios = [
            (
                "tts_slo_first_audio_compliance_ratio",
                "Share of utterances within the first-audio SLO over the SLO window",
                &w.first_audio_ok,
            ),
            (
                "tts_slo_barge_in_compliance_ratio",
                "Share of STOP/PAUSE within the barge-in SLO over the SLO window",
                &w.barge_in_ok,
            ),
            (
                "tts_slo_jitter_compliance_ratio",
                "Share of frame intervals within the jitter SLO over the SLO window",
                &w.jitter_ok,
            ),
            (
                "tts_slo_availability_compliance_ratio",
                "Share of utterances not failed by the server over the SLO window",
                &w.availability_ok,
            ),
        ];
        for (name, help, ratio) in ratios {
            if let Some(value) = ratio.ratio() {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> tts_core::pool::PoolStats {
        tts_core::pool::PoolStats {
            threads: 2,
            busy: 0,
            queued: 0,
            queue_capacity: 16,
            discarded: 0,
            busy_seconds: 0.0,
            panics: 0,
        }
    }

    #[test]
    fn the_summary_status_is_degraded_exactly_while_an_slo_is_below_its_objective() {
        let metrics = GatewayMetrics::register(&mut Registry::default(), SloConfig::default());
        assert_eq!(
            metrics.summary(&pool())["status"],
            "ok",
            "no events, nothing breached"
        );
        for _ in 0..19 {
            metrics.barge_in(Command::Stop, Duration::from_millis(5), None);
        }
        let summary = metrics.summary(&pool());
        assert_eq!(
            summary["status"], "ok",
            "19 of 19 barge-ins within 50 ms: {summary}"
        );
        // 19 good and 2 bad is 90.5 %, below the 95 % objective.
        metrics.barge_in(Command::Stop, Duration::from_secs(1), None);
        metrics.barge_in(Command::Pause, Duration::from_secs(1), None);
        let summary = metrics.summary(&pool());
        assert_eq!(summary["status"], "degraded", "{summary}");
        assert_eq!(summary["slo_breached"], serde_json::json!(["barge_in"]));
        assert_eq!(summary["slo"]["objectives"]["barge_in"], 0.95);
    }
}
