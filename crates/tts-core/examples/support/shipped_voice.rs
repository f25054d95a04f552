//! The voice the set-up script ships, with ONNX Runtime loaded, for the Piper examples.

use std::path::Path;

use tts_core::engine;
use tts_core::voices::{EngineKind, VoiceInfo};

/// Loads ONNX Runtime from the set-up script's cache and describes `en_US-joe-medium` from it.
pub(crate) fn shipped_voice() -> VoiceInfo {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    engine::init_onnx_runtime(&root.join(".cache/ort/libonnxruntime.so.1.32.0")).expect("ONNX Runtime");
    VoiceInfo {
        id: "en_US-joe-medium".into(),
        engine: EngineKind::Piper,
        language: "en-us".into(),
        sample_rate: 22_050,
        model_path: Some(root.join(".cache/voices/en_US-joe-medium.onnx")),
        espeak_voice: "en-us".into(),
    }
}
