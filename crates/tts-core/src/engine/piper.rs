//! Piper VITS voices on ONNX Runtime (loaded at run time from `libonnxruntime.so`, never downloaded).
//!
//! Text is phonemised by espeak-ng clause by clause (see [`super::phonemize_ipa`]), mapped to ids with the
//! voice's `phoneme_id_map` as Piper does (`^ _ (id _)* $`), and run through the model in one inference
//! per chunk: VITS is not streaming, so the pool hands it clause-sized chunks and the PCM is passed on in
//! pieces as soon as the inference returns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;

use super::{Engine, EngineError, EngineSettings, Flow, phonemize_ipa};
use crate::voices::VoiceInfo;

/// Samples handed to the sink per call, so cancellation is checked at least every ~46 ms of audio.
const PIECE_SAMPLES: usize = 1024;

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

/// One Piper voice with its own ONNX Runtime session (sessions need `&mut` to run, so one per thread).
pub(super) struct PiperEngine {
    voice: VoiceInfo,
    config: PiperVoiceConfig,
    session: Session,
}

impl PiperEngine {
    pub(super) fn load(voice: VoiceInfo, settings: &EngineSettings) -> Result<Self, EngineError> {
        let model: PathBuf = voice.model_path.clone().ok_or_else(|| EngineError::Load {
            voice: voice.id.clone(),
            path: PathBuf::new(),
            reason: "no model path".into(),
        })?;
        let load_err = |reason: String| EngineError::Load {
            voice: voice.id.clone(),
            path: model.clone(),
            reason,
        };
        let mut config = PiperVoiceConfig::read(&model.with_extension("onnx.json")).map_err(load_err)?;
        if let Some(noise) = settings.piper_noise {
            config.noise_scale = noise.noise_scale;
            config.noise_w = noise.noise_w;
        }
        let env = environment()?;
        let session = Session::builder(env)
            .and_then(|b| {
                b.with_intra_threads(settings.onnx_intra_threads.max(1))
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(&model))
            .map_err(|e| load_err(e.to_string()))?;
        Ok(Self {
            voice,
            config,
            session,
        })
    }

    fn infer(&mut self, ids: Vec<i64>) -> Result<Vec<f32>, String> {
        let len = ids.len();
        let input = Tensor::from_array(([1usize, len], ids)).map_err(|e| e.to_string())?;
        let lengths = Tensor::from_array(([1usize], vec![len as i64])).map_err(|e| e.to_string())?;
        let scales = Tensor::from_array((
            [3usize],
            vec![
                self.config.noise_scale,
                self.config.length_scale,
                self.config.noise_w,
            ],
        ))
        .map_err(|e| e.to_string())?;
        let outputs = if self.config.num_speakers > 1 {
            let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(|e| e.to_string())?;
            self.session.run(
                ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales, "sid" => sid],
            )
        } else {
            self.session
                .run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales])
        }
        .map_err(|e| e.to_string())?;
        let (_, audio) = outputs["output"]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        Ok(audio.to_vec())
    }
}

impl Engine for PiperEngine {
    fn voice(&self) -> &VoiceInfo {
        &self.voice
    }

    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    fn synthesize(&mut self, text: &str, sink: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), EngineError> {
        let started = std::time::Instant::now();
        let clauses = phonemize_ipa(text, &self.config.espeak_voice)?;
        let phonemised = started.elapsed();
        let phonemes = clauses.join(" ");
        if phonemes.trim().is_empty() {
            return Ok(());
        }
        let (ids, missing) = self.config.phoneme_ids(&phonemes);
        if missing > 0 {
            tracing::debug!(voice = %self.voice.id, missing, "Skipped phonemes the voice does not know.");
        }
        let audio = self.infer(ids).map_err(|reason| EngineError::Inference {
            voice: self.voice.id.clone(),
            reason,
        })?;
        tracing::debug!(
            voice = %self.voice.id,
            phonemize_ms = phonemised.as_secs_f64() * 1e3,
            inference_ms = (started.elapsed() - phonemised).as_secs_f64() * 1e3,
            samples = audio.len(),
            "Piper inference done."
        );
        let pcm: Vec<i16> = audio
            .iter()
            .map(|s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        for piece in pcm.chunks(PIECE_SAMPLES) {
            if sink(piece) == Flow::Stop {
                return Err(EngineError::Cancelled);
            }
        }
        Ok(())
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
