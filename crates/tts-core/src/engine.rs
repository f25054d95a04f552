//! The streaming, cancellable engine trait and the engines behind it.
//!
//! An [`Engine`] turns one chunk of text into PCM at its own sample rate and hands it over piece by piece
//! through a sink; the sink's return value is how cancellation reaches the engine between pieces. Engines
//! are blocking and run only on the pool's OS threads, never on an async executor.
//!
//! Engines do not resample, frame or pace: the pool resamples to 48 kHz and the session frames and paces.

mod espeak;
mod piper;

use std::path::PathBuf;

pub use espeak::{espeak_voices, phonemize_ipa};
pub use piper::{DecoderMode, PiperVoiceConfig, drop_quiet_sessions, init_onnx_runtime, piper_decoder_modes};

use crate::voices::{EngineKind, VoiceInfo};

/// What the sink tells the engine after each piece of PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// The chunk was cancelled (barge-in): stop as soon as possible and return [`EngineError::Cancelled`].
    Stop,
    /// Another chunk needs this engine thread more urgently. Asked only with an empty piece, before costly
    /// work: an engine that produces audio in pieces may return `Ok` now and keep what it had left to do
    /// for [`Engine::take_rest`]; any other engine goes on as with `Continue`.
    Pause,
}

/// What a paused chunk had left to do ([`Flow::Pause`]), for [`Engine::resume`] on any engine of the same
/// voice. Its audio is the same as if the chunk had not paused.
pub struct Rest(Box<dyn std::any::Any + Send>);

impl Rest {
    pub(crate) fn new(rest: impl std::any::Any + Send) -> Self {
        Self(Box::new(rest))
    }

    pub(crate) fn downcast<T: 'static>(self) -> Option<T> {
        self.0.downcast().ok().map(|rest| *rest)
    }
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rest")
    }
}

/// Failures of an engine (or of the worker running it); the gateway maps them to `SYNTHESIS_FAILED`, and
/// `WorkerUnavailable` to `WORKER_UNAVAILABLE`, for the client.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("synthesis was cancelled")]
    Cancelled,
    #[error("espeak-ng failed: {0}")]
    Espeak(String),
    #[error("ONNX Runtime is not available: {0}")]
    OnnxRuntime(String),
    #[error("cannot load voice {voice} from {path}: {reason}")]
    Load {
        voice: String,
        path: PathBuf,
        reason: String,
    },
    #[error("inference failed for voice {voice}: {reason}")]
    Inference { voice: String, reason: String },
    /// The engine panicked on this chunk; the engine instance was dropped and the thread lives on.
    #[error("the engine for voice {voice} panicked: {message}")]
    Panicked { voice: String, message: String },
    /// Synthesis runs on remote workers and none could take the chunk.
    #[error("no synthesis worker is available: {0}")]
    WorkerUnavailable(String),
}

/// A loaded voice, ready to synthesise on the thread that owns it.
pub trait Engine: Send {
    /// The voice this engine speaks with.
    fn voice(&self) -> &VoiceInfo;

    /// Sample rate of the PCM handed to the sink.
    fn sample_rate(&self) -> u32;

    /// Synthesises `text`, handing PCM to `sink` as soon as the engine has it. Returns
    /// [`EngineError::Cancelled`] once the sink has answered [`Flow::Stop`]. An engine may hand the sink
    /// an empty piece to ask whether to go on before costly work (Piper does before each decoder
    /// window), so sinks must accept one.
    fn synthesize(&mut self, text: &str, sink: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), EngineError>;

    /// After a [`Engine::synthesize`] or [`Engine::resume`] that returned `Ok` because the sink answered
    /// [`Flow::Pause`]: what the chunk had left to do. None when it ran to its end (engines that never
    /// pause always answer None).
    fn take_rest(&mut self) -> Option<Rest> {
        None
    }

    /// Goes on with a paused chunk's `rest` (taken from an engine of the same voice), handing the sink the
    /// rest of its audio; it may pause again.
    fn resume(&mut self, _rest: Rest, _sink: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), EngineError> {
        Err(EngineError::Inference {
            voice: self.voice().id.clone(),
            reason: "this engine cannot resume a paused chunk".into(),
        })
    }

    /// Tells the engine whether the next [`Engine::synthesize`] call runs while the machine is quiet (a
    /// first chunk and no other engine thread busy), so it may use more than one core. Engines that
    /// cannot use spare cores ignore it.
    fn set_quiet(&mut self, _quiet: bool) {}

    /// Tells the engine whether the next [`Engine::synthesize`] call is the first chunk of its utterance,
    /// which a listener may be waiting for: an engine that produces audio in pieces starts it with a
    /// small one. How the pieces are cut depends on nothing else (not on timing or load), so a text
    /// with repeatable settings sounds the same every time. Engines without pieces ignore it.
    fn set_first_chunk(&mut self, _first: bool) {}

    /// Sets the speaking rate of the next [`Engine::synthesize`] calls: 1.0 is the voice's own pace, 2.0
    /// twice as fast, 0.5 half as fast. Callers keep it within [`SPEED_RANGE`]. The pool sets it before
    /// every chunk, so every engine must honour it.
    fn set_speed(&mut self, speed: f32);
}

/// The speaking rates every engine honours ([`Engine::set_speed`]): OpenAI's speech API range.
pub const SPEED_RANGE: std::ops::RangeInclusive<f32> = 0.25..=4.0;

/// Settings every engine instance is built with.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// ONNX Runtime intra-op threads per Piper session.
    pub onnx_intra_threads: usize,
    /// Intra-op threads of one extra set of sessions per Piper voice, shared by the process, that a
    /// first chunk uses when no other engine thread is busy (see [`Engine::set_quiet`]); at most
    /// `onnx_intra_threads` turns it off.
    pub onnx_quiet_intra_threads: usize,
    /// Overrides the Piper voices' `noise_scale` and `noise_w`; 0 makes their output repeatable.
    pub piper_noise: Option<PiperNoise>,
    /// ONNX Runtime's CPU memory arena and memory-pattern planning for Piper sessions. On, each session
    /// keeps what its largest chunk needed for good; off, tensors go back to the allocator after each run.
    pub onnx_cpu_arena: bool,
    /// Every session of a Piper voice shares one container of prepacked weights.
    pub onnx_share_prepacked: bool,
    /// Every session of a split Piper voice runs on one copy of its weights, optimised once.
    pub onnx_share_weights: bool,
    /// With shared weights, the optimised graph keeps tensors in ONNX Runtime's blocked layout between
    /// convolutions instead of reordering them for element-wise operators.
    pub onnx_blocked_layout: bool,
    /// Called on the engine thread when a split Piper voice starts an utterance's first chunk; what it
    /// returns is dropped once the chunk's first PCM exists. `ttsd` uses it to allocate that stretch from
    /// memory that stays resident (`engine.first_chunk_warm_arena`).
    pub first_chunk_scope: Option<FirstChunkScope>,
}

/// See [`EngineSettings::first_chunk_scope`].
pub type FirstChunkScope = fn() -> Box<dyn std::any::Any>;

impl Default for EngineSettings {
    /// One intra-op thread, no quiet sessions, each voice's own noise, no arena, shared weights in the
    /// blocked layout, nothing around first chunks.
    fn default() -> Self {
        Self {
            onnx_intra_threads: 1,
            onnx_quiet_intra_threads: 1,
            piper_noise: None,
            onnx_cpu_arena: false,
            onnx_share_prepacked: true,
            onnx_share_weights: true,
            onnx_blocked_layout: true,
            first_chunk_scope: None,
        }
    }
}

/// Piper's sampling noise (the voice's `.onnx.json` has its defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PiperNoise {
    pub noise_scale: f32,
    pub noise_w: f32,
}

/// Loads `voice` for use on the calling thread.
pub fn load(voice: &VoiceInfo, settings: &EngineSettings) -> Result<Box<dyn Engine>, EngineError> {
    match voice.engine {
        EngineKind::Espeak => Ok(Box::new(espeak::EspeakEngine::new(voice.clone())?)),
        EngineKind::Piper => Ok(Box::new(piper::PiperEngine::load(voice.clone(), settings)?)),
    }
}
