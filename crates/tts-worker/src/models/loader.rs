//! What the model manager asks of the engines: load and warm a voice, drop it again.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tts_core::engine::EngineError;
use tts_core::pool::{Pool, WarmError};
use tts_core::voices::VoiceInfo;

/// What the loader measured of a load: the warm-up. The manager times the whole load itself (from its
/// parallel-load slot, so waiting for a blocking thread counts) and takes the warm-up out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadTimings {
    pub warmup: Duration,
}

/// Loads and unloads voices for the [`ModelManager`](super::ModelManager).
pub trait VoiceLoader: Send + Sync + 'static {
    /// Loads and warms the voice. Blocking work goes to `spawn_blocking` inside; the manager bounds how
    /// many loads run at once, which also bounds the blocking threads they take.
    fn load(
        &self,
        voice: Arc<VoiceInfo>,
    ) -> Pin<Box<dyn Future<Output = Result<LoadTimings, LoadFailure>> + Send>>;

    /// Drops the voice's loaded instances. Called with the manager's state locked, so it must be quick.
    fn unload(&self, voice: &VoiceInfo);
}

/// Why a load gave no usable voice; the `reason` label of `tts_model_load_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadFailureReason {
    /// The model file or espeak-ng voice does not exist.
    NotFound,
    /// It exists but cannot be read as a voice.
    Invalid,
    OutOfMemory,
    /// Loaded, but the warm-up sentence failed.
    Warmup,
    Other,
}

impl LoadFailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadFailureReason::NotFound => "not_found",
            LoadFailureReason::Invalid => "invalid",
            LoadFailureReason::OutOfMemory => "out_of_memory",
            LoadFailureReason::Warmup => "warmup",
            LoadFailureReason::Other => "other",
        }
    }
}

impl fmt::Display for LoadFailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A failed load: a bounded reason for metrics and the detail for logs and callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct LoadFailure {
    pub reason: LoadFailureReason,
    pub message: String,
}

impl LoadFailure {
    pub fn new(reason: LoadFailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl From<&WarmError> for LoadFailure {
    /// Reads the file system (whether a model path exists), so call it off the async executor.
    fn from(error: &WarmError) -> Self {
        let message = error.to_string();
        let reason = if looks_out_of_memory(&message) {
            LoadFailureReason::OutOfMemory
        } else {
            match error {
                WarmError::WarmUp(_) => LoadFailureReason::Warmup,
                WarmError::Load(engine) => load_reason(engine),
            }
        };
        Self { reason, message }
    }
}

fn load_reason(error: &EngineError) -> LoadFailureReason {
    match error {
        EngineError::Load { path, .. } if path == Path::new("") || !path.exists() => {
            LoadFailureReason::NotFound
        }
        EngineError::Load { .. } => LoadFailureReason::Invalid,
        EngineError::Espeak(reason) if reason.contains("has no voice") => LoadFailureReason::NotFound,
        EngineError::Espeak(_)
        | EngineError::OnnxRuntime(_)
        | EngineError::Inference { .. }
        | EngineError::Panicked { .. }
        | EngineError::WorkerUnavailable(_)
        | EngineError::Cancelled => LoadFailureReason::Other,
    }
}

/// ONNX Runtime and the allocator say it in several ways; none of them has a type to match on.
fn looks_out_of_memory(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "out of memory",
        "failed to allocate",
        "bad_alloc",
        "cannot allocate memory",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// Loads voices into the engine pool: every engine thread gets a warmed instance.
#[derive(Debug, Clone)]
pub struct PoolLoader {
    pool: Arc<Pool>,
}

impl PoolLoader {
    pub fn new(pool: Arc<Pool>) -> Self {
        Self { pool }
    }
}

impl VoiceLoader for PoolLoader {
    fn load(
        &self,
        voice: Arc<VoiceInfo>,
    ) -> Pin<Box<dyn Future<Output = Result<LoadTimings, LoadFailure>> + Send>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let warmed = tokio::task::spawn_blocking(move || {
                pool.warm_timed(&voice)
                    .map(|timings| LoadTimings {
                        warmup: timings.warmup,
                    })
                    .map_err(|error| LoadFailure::from(&error))
            })
            .await;
            warmed.unwrap_or_else(|error| {
                Err(LoadFailure::new(
                    LoadFailureReason::Other,
                    format!("the load task ended early: {error}"),
                ))
            })
        })
    }

    fn unload(&self, voice: &VoiceInfo) {
        self.pool.unload(&voice.id);
    }
}
