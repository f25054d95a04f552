//! Piper VITS voices on ONNX Runtime (loaded at run time from `libonnxruntime.so`, never downloaded).
//!
//! Text is phonemised by espeak-ng clause by clause (see [`super::phonemize_ipa`]), mapped to ids with the
//! voice's `phoneme_id_map` as Piper does (`^ _ (id _)* $`), and run through the model. At load the
//! model's graph is split at the VITS decoder's input ([`split`]): the text encoder, duration predictor
//! and flow run once per chunk, then the decoder runs over windows of latent frames and each window's PCM
//! is passed on as soon as it exists ([`stream`]). A model that cannot be split runs whole, one inference
//! per chunk, and says so (a WARN once, and `tts_engine_decoder_mode{mode="whole"}`).

mod blocked;
mod engine;
mod onnx;
mod phases;
mod planar;
mod shared;
mod split;
mod stream;
mod wire;

#[cfg(test)]
mod model_tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use serde::Deserialize;

use super::EngineError;

pub(super) use engine::PiperEngine;
pub use engine::{DecoderMode, drop_quiet_sessions, piper_decoder_modes};

static ORT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime from `library` once per process. Later calls return the first outcome, whatever path
/// they pass, because ONNX Runtime allows one environment per process.
pub fn init_onnx_runtime(library: &Path) -> Result<(), EngineError> {
    let outcome = ORT.get_or_init(|| {
        if !library.is_file() {
            return Err(format!(
                "{} does not exist (run scripts/fetch-assets.sh)",
                library.display()
            ));
        }
        ort::init_from(library)
            .map_err(|e| format!("{}: {e}", library.display()))?
            .with_name("ttsd")
            .build()
            .map_err(|e| e.to_string())
    });
    outcome
        .as_ref()
        .map(|_| ())
        .map_err(|e| EngineError::OnnxRuntime(e.clone()))
}

fn environment() -> Result<&'static Environment, EngineError> {
    match ORT.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(e)) => Err(EngineError::OnnxRuntime(e.clone())),
        None => Err(EngineError::OnnxRuntime(
            "ONNX Runtime was not initialised (onnx_runtime_path)".into(),
        )),
    }
}

/// The parts of a Piper `.onnx.json` that synthesis needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PiperVoiceConfig {
    pub sample_rate: u32,
    pub espeak_voice: String,
    pub language_code: Option<String>,
    pub num_speakers: u32,
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
    pub phoneme_id_map: HashMap<char, Vec<i64>>,
}

#[derive(Deserialize)]
struct RawConfig {
    audio: RawAudio,
    espeak: RawEspeak,
    #[serde(default)]
    language: Option<RawLanguage>,
    #[serde(default = "one")]
    num_speakers: u32,
    #[serde(default)]
    inference: Option<RawInference>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}
#[derive(Deserialize)]
struct RawAudio {
    sample_rate: u32,
}
#[derive(Deserialize)]
struct RawEspeak {
    voice: String,
}
#[derive(Deserialize)]
struct RawLanguage {
    code: Option<String>,
}
#[derive(Deserialize)]
struct RawInference {
    noise_scale: Option<f32>,
    length_scale: Option<f32>,
    noise_w: Option<f32>,
}
fn one() -> u32 {
    1
}

impl PiperVoiceConfig {
    /// Reads and checks a voice's `.onnx.json`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut phoneme_id_map = HashMap::new();
        for (phoneme, ids) in raw.phoneme_id_map {
            let mut chars = phoneme.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if !ids.is_empty() => {
                    phoneme_id_map.insert(c, ids);
                }
                _ => {
                    return Err(format!(
                        "phoneme_id_map entry {phoneme:?} is not one character with ids"
                    ));
                }
            }
        }
        for required in ['^', '$', '_'] {
            if !phoneme_id_map.contains_key(&required) {
                return Err(format!("phoneme_id_map lacks {required:?}"));
            }
        }
        let inference = raw.inference.unwrap_or(RawInference {
            noise_scale: None,
            length_scale: None,
            noise_w: None,
        });
        Ok(Self {
            sample_rate: raw.audio.sample_rate,
            espeak_voice: raw.espeak.voice,
            language_code: raw.language.and_then(|l| l.code),
            num_speakers: raw.num_speakers,
            noise_scale: inference.noise_scale.unwrap_or(0.667),
            length_scale: inference.length_scale.unwrap_or(1.0),
            noise_w: inference.noise_w.unwrap_or(0.8),
            phoneme_id_map,
        })
    }

    /// `en_US` → `en-us`.
    pub fn language_tag(&self) -> String {
        self.language_code
            .clone()
            .unwrap_or_else(|| self.espeak_voice.clone())
            .replace('_', "-")
            .to_ascii_lowercase()
    }

    /// Piper's id sequence: BOS, pad, then each known phoneme followed by pad, then EOS. Unknown
    /// phonemes are skipped and counted.
    pub fn phoneme_ids(&self, phonemes: &str) -> (Vec<i64>, usize) {
        let id = |c: char| self.phoneme_id_map.get(&c).map(Vec::as_slice).unwrap_or(&[]);
        let mut ids = Vec::with_capacity(phonemes.len() * 2 + 3);
        ids.extend_from_slice(id('^'));
        ids.extend_from_slice(id('_'));
        let mut missing = 0;
        for c in phonemes.chars() {
            match self.phoneme_id_map.get(&c) {
                Some(known) => {
                    ids.extend_from_slice(known);
                    ids.extend_from_slice(id('_'));
                }
                None => missing += 1,
            }
        }
        ids.extend_from_slice(id('$'));
        (ids, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "audio": {"sample_rate": 22050},
        "espeak": {"voice": "en-us"},
        "language": {"code": "en_US"},
        "num_speakers": 1,
        "inference": {"noise_scale": 0.5, "length_scale": 1.1, "noise_w": 0.7},
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], "a": [14], "b": [15]}
    }"#;

    #[test]
    fn parses_a_voice_config() {
        let config = PiperVoiceConfig::parse(CONFIG).unwrap();
        assert_eq!(config.sample_rate, 22_050);
        assert_eq!(config.language_tag(), "en-us");
        assert_eq!(config.length_scale, 1.1);
    }

    #[test]
    fn ids_follow_pipers_interspersed_layout_and_count_unknown_phonemes() {
        let config = PiperVoiceConfig::parse(CONFIG).unwrap();
        let (ids, missing) = config.phoneme_ids("ab zа");
        assert_eq!(ids, vec![1, 0, 14, 0, 15, 0, 3, 0, 2]);
        assert_eq!(missing, 2);
    }

    #[test]
    fn a_config_without_the_special_symbols_is_rejected() {
        let err = PiperVoiceConfig::parse(
            r#"{"audio":{"sample_rate":22050},"espeak":{"voice":"en-us"},"phoneme_id_map":{"a":[4]}}"#,
        )
        .unwrap_err();
        assert!(err.contains("lacks"), "{err}");
    }
}
