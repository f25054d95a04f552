//! Label sets of the gateway's metrics. Every label value comes from a closed enum or from the voice
//! catalogue, so no series can be created from client input.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use tts_core::voices::{EngineKind, VoiceInfo};

use super::{ApiOutcome, Transport};
use crate::protocol::Command;

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
pub(super) enum Engine {
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
pub(super) struct VoiceLabels {
    pub(super) engine: Engine,
    pub(super) voice: String,
}

impl VoiceLabels {
    pub(super) fn of(voice: &VoiceInfo) -> Self {
        Self {
            engine: voice.engine.into(),
            voice: voice.id.clone(),
        }
    }
}

/// First audio: the voice, and how the client reached the server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct FirstAudioLabels {
    pub(super) engine: Engine,
    pub(super) voice: String,
    pub(super) transport: Transport,
}

/// Exemplar labels: the trace that produced the observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TraceLabels {
    pub(super) trace_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EngineLabels {
    pub(super) engine: Engine,
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
pub(super) struct StageLabels {
    pub(super) engine: Engine,
    pub(super) stage: Stage,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) enum CommandLabel {
    Pause,
    Resume,
    Stop,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CommandLabels {
    pub(super) command: CommandLabel,
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
pub(super) struct DropLabels {
    pub(super) reason: DropReason,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/v1/stream`
    V1,
    /// `/`, the original protocol
    Legacy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EndpointLabels {
    pub(super) endpoint: Endpoint,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) reason: &'static str,
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
pub(super) struct MessageInLabels {
    pub(super) r#type: MessageIn,
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
pub(super) struct MessageOutLabels {
    pub(super) r#type: MessageOut,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CodeLabels {
    pub(super) code: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum Outcome {
    Completed,
    Stopped,
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    pub(super) outcome: Outcome,
    pub(super) transport: Transport,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum TaskOutcome {
    Completed,
    Cancelled,
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TaskLabels {
    pub(super) engine: Engine,
    pub(super) outcome: TaskOutcome,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum Lane {
    First,
    Later,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LaneLabels {
    pub(super) lane: Lane,
}
