//! Voice discovery: which voices this process can speak with.
//!
//! espeak-ng voices come from the installed espeak-ng data (`espeak-<language>`, e.g. `espeak-en-us`);
//! Piper voices are `<id>.onnx` files with their `<id>.onnx.json` next to them in the voices directory.
//! An unknown voice is always an error naming the voices that do exist, never a fallback.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::{PiperVoiceConfig, espeak_voices};

/// The engine family behind a voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Espeak,
    Piper,
}

impl EngineKind {
    /// Stable lowercase name, as used in ids, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Espeak => "espeak",
            EngineKind::Piper => "piper",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One voice a client can ask for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VoiceInfo {
    /// The id clients use (`espeak-en-us`, `en_US-joe-medium`).
    pub id: String,
    pub engine: EngineKind,
    /// BCP-47-ish language tag (`en-us`).
    pub language: String,
    /// The engine's native rate; the server always sends 48 kHz.
    pub sample_rate: u32,
    /// The ONNX model, for Piper voices.
    #[serde(skip)]
    pub model_path: Option<PathBuf>,
    /// The name passed to espeak-ng (`en-us`): the voice itself, or a Piper voice's phonemiser voice.
    #[serde(skip)]
    pub espeak_voice: String,
}

/// The requested voice does not exist. Its message is bounded whatever the request: the requested id is
/// cut to [`SHOWN_ID_CHARS`] characters and at most [`SUGGESTED_VOICES`] ids are named (those sharing
/// the longest prefix with the request), so an error reply never amplifies what a client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown voice {:?}; {}", shown(requested), suggestions(requested, available))]
pub struct UnknownVoice {
    pub requested: String,
    pub available: Vec<String>,
}

/// How much of an unknown voice id an error repeats.
pub const SHOWN_ID_CHARS: usize = 64;
/// How many installed voices an unknown-voice error names.
pub const SUGGESTED_VOICES: usize = 6;

fn shown(requested: &str) -> String {
    match requested.char_indices().nth(SHOWN_ID_CHARS) {
        Some((cut, _)) => format!("{}…", &requested[..cut]),
        None => requested.to_owned(),
    }
}

fn suggestions(requested: &str, available: &[String]) -> String {
    let shared = |id: &str| {
        id.chars()
            .zip(requested.chars())
            .take_while(|(a, b)| a.eq_ignore_ascii_case(b))
            .count()
    };
    let mut ranked: Vec<&String> = available.iter().collect();
    ranked.sort_by_key(|id| (std::cmp::Reverse(shared(id)), id.len(), id.as_str()));
    let named: Vec<&str> = ranked
        .iter()
        .take(SUGGESTED_VOICES)
        .map(|id| id.as_str())
        .collect();
    let more = available.len().saturating_sub(named.len());
    if more == 0 {
        format!("available voices: {}", named.join(", "))
    } else {
        format!(
            "available voices include {} and {more} more (GET /v1/voices or `ttsd voices` lists them all)",
            named.join(", ")
        )
    }
}

/// Problems found while reading the voices directory.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    #[error("cannot read voice config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("cannot read voices directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
}

/// Every voice this process knows, by id.
#[derive(Debug, Clone, Default)]
pub struct VoiceCatalog {
    voices: BTreeMap<String, VoiceInfo>,
}

impl VoiceCatalog {
    /// espeak-ng's voices plus every Piper voice in `voices_dir`. A missing directory only means no
    /// Piper voices; a broken `.onnx.json` is an error, because it names a voice the operator meant to ship.
    pub fn discover(voices_dir: &Path) -> Result<Self, VoiceError> {
        let mut catalog = Self::default();
        for voice in espeak_voices() {
            catalog.insert(voice);
        }
        if voices_dir.is_dir() {
            for voice in piper_voices(voices_dir)? {
                catalog.insert(voice);
            }
        }
        Ok(catalog)
    }

    /// A catalog holding exactly these voices (tests and tools).
    pub fn from_voices(voices: impl IntoIterator<Item = VoiceInfo>) -> Self {
        let mut catalog = Self::default();
        for voice in voices {
            catalog.insert(voice);
        }
        catalog
    }

    fn insert(&mut self, voice: VoiceInfo) {
        self.voices.insert(voice.id.clone(), voice);
    }

    /// The voice with this id, or an error listing the ids that exist.
    pub fn get(&self, id: &str) -> Result<&VoiceInfo, UnknownVoice> {
        self.voices.get(id).ok_or_else(|| UnknownVoice {
            requested: id.to_owned(),
            available: self.voices.keys().cloned().collect(),
        })
    }

    /// All voices, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &VoiceInfo> {
        self.voices.values()
    }

    pub fn len(&self) -> usize {
        self.voices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.voices.is_empty()
    }
}

fn piper_voices(dir: &Path) -> Result<Vec<VoiceInfo>, VoiceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| VoiceError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let mut voices = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(id) = name.strip_suffix(".onnx") else {
            continue;
        };
        let config_path = dir.join(format!("{name}.json"));
        if !config_path.is_file() {
            tracing::warn!(model = %path.display(), "Skipping ONNX model without its .onnx.json config.");
            continue;
        }
        let config = PiperVoiceConfig::read(&config_path).map_err(|reason| VoiceError::Config {
            path: config_path.clone(),
            reason,
        })?;
        voices.push(VoiceInfo {
            id: id.to_owned(),
            engine: EngineKind::Piper,
            language: config.language_tag(),
            sample_rate: config.sample_rate,
            model_path: Some(path),
            espeak_voice: config.espeak_voice.clone(),
        });
    }
    Ok(voices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_voice_error_is_bounded_and_suggests_the_closest_ids() {
        let available: Vec<String> = (0..100)
            .map(|i| format!("espeak-x{i:02}"))
            .chain(["espeak-en-us".into()])
            .collect();
        let huge = UnknownVoice {
            requested: "e".repeat(100_000),
            available: available.clone(),
        };
        let message = huge.to_string();
        assert!(message.len() < 600, "{} bytes", message.len());
        assert!(message.contains("and 95 more"), "{message}");
        let close = UnknownVoice {
            requested: "espeak-en-gb".into(),
            available,
        }
        .to_string();
        assert!(
            close.contains("espeak-en-us"),
            "the closest id comes first: {close}"
        );
        let few = UnknownVoice {
            requested: "x".into(),
            available: vec!["a".into(), "b".into()],
        };
        assert_eq!(few.to_string(), "unknown voice \"x\"; available voices: a, b");
    }

    fn voice(id: &str) -> VoiceInfo {
        VoiceInfo {
            id: id.into(),
            engine: EngineKind::Espeak,
            language: "en-us".into(),
            sample_rate: 22_050,
            model_path: None,
            espeak_voice: "en-us".into(),
        }
    }

    #[test]
    fn unknown_voice_lists_the_available_ones() {
        let catalog = VoiceCatalog::from_voices([voice("espeak-en-us"), voice("espeak-de")]);
        let err = catalog.get("nope").unwrap_err();
        assert_eq!(
            err.available,
            vec!["espeak-de".to_owned(), "espeak-en-us".to_owned()]
        );
        assert!(err.to_string().contains("espeak-de, espeak-en-us"), "{err}");
    }

    #[test]
    fn discovery_finds_espeak_english_and_ignores_a_missing_dir() {
        let catalog = VoiceCatalog::discover(Path::new("/nonexistent/voices")).unwrap();
        let en = catalog.get("espeak-en-us").unwrap();
        assert_eq!(en.engine, EngineKind::Espeak);
        assert_eq!(en.sample_rate, 22_050);
    }

    #[test]
    fn a_broken_piper_config_is_an_error_not_a_silent_skip() {
        let dir = std::env::temp_dir().join(format!("ttsd-voices-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bad.onnx"), b"not a model").unwrap();
        std::fs::write(dir.join("bad.onnx.json"), b"{ not json").unwrap();
        let err = VoiceCatalog::discover(&dir).unwrap_err();
        assert!(err.to_string().contains("bad.onnx.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
