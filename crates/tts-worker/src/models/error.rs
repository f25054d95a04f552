use tts_core::voices::{UnknownVoice, VoiceInfo};

use super::{LoadFailure, LoadFailureReason};

/// Why the model manager refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    UnknownVoice(#[from] UnknownVoice),
    #[error("voice {voice} is in use by {users} sessions or chunks")]
    InUse { voice: String, users: u32 },
    #[error(
        "the resident voice cap ({cap}) is reached and every resident voice is in use or was loaded too \
         recently to evict"
    )]
    CapReached { cap: usize },
    #[error("cannot load voice {voice} ({reason}): {message}")]
    LoadFailed {
        voice: String,
        reason: LoadFailureReason,
        message: String,
    },
}

impl ModelError {
    pub(super) fn load_failed(voice: &VoiceInfo, failure: LoadFailure) -> Self {
        ModelError::LoadFailed {
            voice: voice.id.clone(),
            reason: failure.reason,
            message: failure.message,
        }
    }
}
