use std::sync::Arc;

use tts_core::voices::VoiceInfo;

use super::ModelManager;

/// A resident voice held for a session or chunk; it cannot be unloaded until every lease on it drops.
pub struct VoiceLease {
    pub(super) manager: Arc<ModelManager>,
    pub(super) voice: Arc<VoiceInfo>,
}

impl VoiceLease {
    pub fn voice(&self) -> &Arc<VoiceInfo> {
        &self.voice
    }
}

impl std::fmt::Debug for VoiceLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceLease")
            .field("voice", &self.voice.id)
            .finish()
    }
}

impl Drop for VoiceLease {
    fn drop(&mut self) {
        self.manager.release(&self.voice.id);
    }
}
