//! One loaded Piper voice (its ONNX Runtime sessions, one instance per engine thread), and the
//! process-wide record of how each voice decodes.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use ort::ep;
use ort::session::Session;
use ort::session::builder::{PrepackedWeights, SessionBuilder};
use ort::value::{DynTensor, Tensor};

use super::stream::{self, FIRST_WINDOW_FRAMES, OVERLAP_FRAMES, SplitSessions};
use super::{PiperVoiceConfig, environment};
use super::{phases, planar, shared, split};
use crate::engine::{Engine, EngineError, EngineSettings, FirstChunkScope, Flow, Rest, phonemize_ipa};
use crate::voices::VoiceInfo;

/// Samples handed to the sink per call, so cancellation is checked at least every ~46 ms of audio.
const PIECE_SAMPLES: usize = 1024;
/// Windowed decoding must match decoding the whole latent at least this well, or the voice runs whole.
const MIN_SNR_DB: f64 = 30.0;
/// The 2-D rewrites compute the same functions as the original parts; float rounding alone leaves the
/// decoder about 115 dB away, so anything under this is a rewrite gone wrong.
const PLANAR_MIN_SNR_DB: f64 = 60.0;
/// Phonemes of the sentence a split voice is checked with at its first load (about 70 latent frames, so
/// the check crosses a window seam).
const PROBE_PHONEMES: &str = "ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ, ænd ɹˈʌnz ɐwˈeɪ.";

/// How a Piper voice decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DecoderMode {
    /// The graph was split at the decoder: PCM comes out window by window.
    Streaming,
    /// The graph could not be split: one inference per chunk.
    Whole,
}

impl DecoderMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Streaming => "streaming",
            Self::Whole => "whole",
        }
    }
}

/// How a voice decodes, decided at its first load.
#[derive(Debug, Clone)]
struct Decision {
    /// Ok when it decodes in windows, or why it cannot.
    split: Result<(), String>,
    /// Its convolutions run as 2-D ones ([`planar`]).
    planar: bool,
    /// Its shared optimised graphs keep tensors in the blocked layout ([`super::blocked`]).
    blocked: bool,
}

/// Voice id → how it decodes.
static MODES: Mutex<Option<HashMap<String, Decision>>> = Mutex::new(None);

fn modes() -> MutexGuard<'static, Option<HashMap<String, Decision>>> {
    MODES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every Piper voice loaded so far in this process and how it decodes, sorted by voice id.
pub fn piper_decoder_modes() -> Vec<(String, DecoderMode)> {
    let mut out: Vec<(String, DecoderMode)> = modes()
        .iter()
        .flatten()
        .map(|(voice, decision)| {
            let mode = if decision.split.is_ok() {
                DecoderMode::Streaming
            } else {
                DecoderMode::Whole
            };
            (voice.clone(), mode)
        })
        .collect();
    out.sort();
    out
}

/// Records the first decision for `model`, logging it once (a WARN when the voice cannot stream).
fn record(voice: &str, decision: Decision) {
    let mut guard = modes();
    let map = guard.get_or_insert_with(HashMap::new);
    if map.contains_key(voice) {
        return;
    }
    match &decision.split {
        Ok(()) => tracing::info!(
            voice,
            planar = decision.planar,
            blocked = decision.blocked,
            "Piper voice decodes in windows (streaming decoder)."
        ),
        Err(reason) => tracing::warn!(
            voice,
            reason = reason.as_str(),
            "Piper voice cannot stream its decoder and runs whole chunks."
        ),
    }
    map.insert(voice.to_owned(), decision);
}

/// Whether `voice`'s decoder runs as 2-D convolutions (None before its first load).
#[cfg(test)]
pub(super) fn planar_decoder(voice: &str) -> Option<bool> {
    known(voice).map(|d| d.planar)
}

/// Whether `voice`'s shared graphs keep the blocked layout (None before its first load).
#[cfg(test)]
pub(super) fn blocked_decoder(voice: &str) -> Option<bool> {
    known(voice).map(|d| d.blocked)
}

fn known(voice: &str) -> Option<Decision> {
    modes().as_ref()?.get(voice).cloned()
}

enum Model {
    Whole(Session),
    Split(SplitSessions),
}

/// Voice id → its quiet sessions (`onnx_quiet_intra_threads`), one set per process, shared by every
/// instance of the voice; a first chunk uses them only when they are free.
static QUIET: Mutex<Option<HashMap<String, Arc<Mutex<Model>>>>> = Mutex::new(None);

/// Voice id → the container its sessions share prepacked weights through, so the weights ONNX Runtime
/// repacks for its kernels exist once per voice rather than once per session.
static PREPACKED: Mutex<Option<HashMap<String, PrepackedWeights>>> = Mutex::new(None);

/// A voice's parts' shared weights ([`shared`]), by a hash of the part's graph.
type VoiceWeights = HashMap<u64, Arc<shared::Weights>>;

/// Voice id → its parts' shared weights.
static SHARED: Mutex<Option<HashMap<String, VoiceWeights>>> = Mutex::new(None);

/// Drops the voice's process-wide state, its quiet sessions and shared weights (when the pool unloads
/// the voice); instances still running keep theirs until they are dropped.
pub fn drop_quiet_sessions(voice: &str) {
    if let Some(map) = QUIET.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
        map.remove(voice);
    }
    if let Some(map) = PREPACKED.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
        map.remove(voice);
    }
    if let Some(map) = SHARED.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
        map.remove(voice);
    }
}

fn prepacked(voice: &str) -> PrepackedWeights {
    let mut guard = PREPACKED.lock().unwrap_or_else(PoisonError::into_inner);
    guard
        .get_or_insert_with(HashMap::new)
        .entry(voice.to_owned())
        .or_insert_with(PrepackedWeights::new)
        .clone()
}

/// How a voice's ONNX Runtime sessions are built.
#[derive(Clone)]
pub(super) struct SessionOptions {
    pub(super) threads: usize,
    /// ONNX Runtime's CPU arena and memory-pattern planning ([`EngineSettings::onnx_cpu_arena`]).
    pub(super) arena: bool,
    /// Shared by every session of one voice.
    pub(super) prepacked: Option<PrepackedWeights>,
    /// The voice whose shared weights ([`shared`]) the parts of a split voice run on.
    pub(super) shared: Option<String>,
    /// Whether those shared parts keep tensors in the blocked layout ([`super::blocked`]).
    pub(super) blocked: bool,
}

impl SessionOptions {
    pub(super) fn new(voice: &str, settings: &EngineSettings) -> Self {
        Self {
            threads: settings.onnx_intra_threads,
            arena: settings.onnx_cpu_arena,
            prepacked: settings.onnx_share_prepacked.then(|| prepacked(voice)),
            shared: settings.onnx_share_weights.then(|| voice.to_owned()),
            blocked: settings.onnx_blocked_layout,
        }
    }

    fn with_blocked(&self, blocked: bool) -> Self {
        Self {
            blocked,
            ..self.clone()
        }
    }

    fn with_threads(&self, threads: usize) -> Self {
        Self {
            threads,
            ..self.clone()
        }
    }
}

/// The voice's quiet sessions, built at its first load (so no chunk waits for them), decoding the way
/// the voice's other instances do.
fn quiet_model(
    voice: &str,
    path: &Path,
    options: &SessionOptions,
    split: Option<bool>,
) -> Result<Arc<Mutex<Model>>, String> {
    let mut guard = QUIET.lock().unwrap_or_else(PoisonError::into_inner);
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(model) = map.get(voice) {
        return Ok(model.clone());
    }
    let model = match split {
        Some(planar) => Model::Split(split_sessions(path, options, planar)?.0),
        None => Model::Whole(session(options, Err(path))?),
    };
    let model = Arc::new(Mutex::new(model));
    map.insert(voice.to_owned(), model.clone());
    Ok(model)
}

/// One Piper voice with its own ONNX Runtime sessions (sessions need `&mut` to run, so one per thread).
pub(in crate::engine) struct PiperEngine {
    voice: VoiceInfo,
    config: PiperVoiceConfig,
    model: Model,
    /// The voice's shared multi-threaded sessions, when `onnx_quiet_intra_threads` asks for them.
    quiet: Option<Arc<Mutex<Model>>>,
    /// Whether the next chunk may use `quiet` ([`Engine::set_quiet`]).
    quiet_next: bool,
    /// Decoder runs so far (windows), for the logs and tests.
    windows_decoded: u64,
    /// Chunks run on the quiet sessions so far.
    quiet_chunks: u64,
    /// Speaking rate of the next chunks ([`Engine::set_speed`]): divides the voice's `length_scale`.
    speed: f32,
    /// Whether the next chunk is the first of its utterance ([`Engine::set_first_chunk`]).
    first_chunk: bool,
    /// Wraps a first chunk up to its first PCM ([`crate::engine::EngineSettings::first_chunk_scope`]).
    first_chunk_scope: Option<FirstChunkScope>,
    /// What the last chunk left to do when its sink paused it ([`Engine::take_rest`]).
    rest: Option<Paused>,
}

/// A chunk paused between two decoder windows: its latent and the windows still to decode.
pub(super) struct Paused {
    latent: stream::Latent,
    windows: Vec<(usize, usize)>,
}

/// A session of `model` (its bytes, or its file) with its own copy of the weights.
pub(super) fn session(options: &SessionOptions, model: Result<&[u8], &Path>) -> Result<Session, String> {
    builder(options)
        .and_then(|mut b| match model {
            Ok(bytes) => b.commit_from_memory(bytes),
            Err(path) => b.commit_from_file(path),
        })
        .map_err(|e| e.to_string())
}

/// A session builder with `options`' threads, arena and prepacked weights.
pub(super) fn builder(options: &SessionOptions) -> ort::Result<SessionBuilder> {
    let env = environment().map_err(|e| ort::Error::new(e.to_string()))?;
    let cpu = ep::CPU::default().with_arena_allocator(options.arena).build();
    Session::builder(env)
        .and_then(|b| b.with_intra_threads(options.threads.max(1)).map_err(Into::into))
        .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
        .and_then(|b| b.with_execution_providers([cpu]).map_err(Into::into))
        .and_then(|b| b.with_memory_pattern(options.arena).map_err(Into::into))
        .and_then(|b| match &options.prepacked {
            Some(weights) => b.with_prepacked_weights(weights).map_err(Into::into),
            None => Ok(b),
        })
}

/// A session of one part of a split voice: on the voice's shared weights ([`shared`]) when `options`
/// asks for them, else (or when they cannot be made or used, with a WARN) with its own copy.
fn part_session(options: &SessionOptions, part: &[u8], what: &str) -> Result<Session, String> {
    let Some(voice) = &options.shared else {
        return session(options, Ok(part));
    };
    match shared_weights(voice, part, what, options.blocked).and_then(|weights| weights.session(options)) {
        Ok(session) => Ok(session),
        Err(reason) => {
            tracing::warn!(
                voice = voice.as_str(),
                part = what,
                reason = reason.as_str(),
                "Piper voice's session keeps its own copy of the weights (more memory)."
            );
            session(options, Ok(part))
        }
    }
}

/// The shared weights of `part` of `voice`, optimised at the first call for that part.
fn shared_weights(
    voice: &str,
    part: &[u8],
    what: &str,
    blocked: bool,
) -> Result<Arc<shared::Weights>, String> {
    let key = {
        let mut hasher = DefaultHasher::new();
        part.hash(&mut hasher);
        blocked.hash(&mut hasher);
        hasher.finish()
    };
    // Held while a part is optimised, so the voice's instances loading at once optimise it once.
    let mut guard = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    let parts = guard
        .get_or_insert_with(HashMap::new)
        .entry(voice.to_owned())
        .or_default();
    if let Some(weights) = parts.get(&key) {
        return Ok(weights.clone());
    }
    let weights = Arc::new(shared::Weights::optimise(part, blocked)?);
    tracing::info!(
        voice,
        part = what,
        shared_mb = weights.bytes() as f64 / 1e6,
        reorders_removed = weights.reorders_removed(),
        "Piper voice part optimised once; all of its sessions share these weights."
    );
    parts.insert(key, weights.clone());
    Ok(weights)
}

/// The first inputs of a Piper model: ids, their length, the three scales and (multi-speaker) speaker 0.
pub(super) fn feeds(
    config: &PiperVoiceConfig,
    ids: Vec<i64>,
    scales: [f32; 3],
) -> Result<Vec<(String, DynTensor)>, String> {
    let len = ids.len();
    let err = |e: ort::Error| e.to_string();
    let mut feeds = vec![
        (
            "input".to_owned(),
            Tensor::from_array(([1usize, len], ids)).map_err(err)?.upcast(),
        ),
        (
            "input_lengths".to_owned(),
            Tensor::from_array(([1usize], vec![len as i64]))
                .map_err(err)?
                .upcast(),
        ),
        (
            "scales".to_owned(),
            Tensor::from_array(([3usize], scales.to_vec()))
                .map_err(err)?
                .upcast(),
        ),
    ];
    if config.num_speakers > 1 {
        feeds.push((
            "sid".to_owned(),
            Tensor::from_array(([1usize], vec![0i64])).map_err(err)?.upcast(),
        ));
    }
    Ok(feeds)
}

/// The parts of a voice as its model has them, kept when [`planar`] rewrote them, for [`check`] to
/// compare against.
#[derive(Default)]
struct Originals {
    encoder: Option<Vec<u8>>,
    decoder: Option<Vec<u8>>,
}

impl Originals {
    fn any(&self) -> bool {
        self.encoder.is_some() || self.decoder.is_some()
    }
}

/// Splits the model and builds its two sessions, with their convolutions rewritten to 2-D ones when
/// `planar` ([`planar`]: the whole decoder, each convolution of the first part); the error says why the
/// voice must run whole. Also returns the parts the rewrites replaced.
fn split_sessions(
    model: &Path,
    options: &SessionOptions,
    planar: bool,
) -> Result<(SplitSessions, Originals), String> {
    let bytes = std::fs::read(model).map_err(|e| e.to_string())?;
    let parts = split::split(&bytes)?;
    drop(bytes);
    let mut originals = Originals::default();
    let rewritten = |part: Vec<u8>,
                     rewrite: fn(&[u8]) -> Result<Vec<u8>, String>,
                     original: &mut Option<Vec<u8>>,
                     what: &str| {
        if !planar {
            return part;
        }
        match rewrite(&part) {
            Ok(rewritten) => {
                *original = Some(part);
                rewritten
            }
            Err(reason) => {
                tracing::warn!(
                    model = %model.display(),
                    part = what,
                    reason = reason.as_str(),
                    "Piper voice keeps 1-D convolutions in this part (slower kernels)."
                );
                part
            }
        }
    };
    let encoder = rewritten(
        parts.encoder,
        planar::wrap_convs,
        &mut originals.encoder,
        "first part",
    );
    let decoder = rewritten(parts.decoder, decoder_2d, &mut originals.decoder, "decoder");
    let load = |part: &[u8], original: &mut Option<Vec<u8>>, what: &str| {
        part_session(options, part, what).or_else(|error| {
            // A rewritten part ONNX Runtime refuses: the original part, as if it had not been rewritten.
            let original = original.take().ok_or_else(|| format!("{what}: {error}"))?;
            tracing::warn!(
                model = %model.display(),
                part = what,
                reason = error.as_str(),
                "Piper voice keeps this part as it was: its rewrite does not load."
            );
            part_session(options, &original, what).map_err(|e| format!("{what}: {e}"))
        })
    };
    let sessions = SplitSessions::new(
        load(&encoder, &mut originals.encoder, "first part")?,
        load(&decoder, &mut originals.decoder, "decoder")?,
        parts.latent,
        parts.extra,
    );
    Ok((sessions, originals))
}

/// The decoder on 2-D convolutions ([`planar::rewrite`]), its transposed convolutions split into phases
/// ([`phases`]) where they can be.
fn decoder_2d(decoder: &[u8]) -> Result<Vec<u8>, String> {
    let planar = planar::rewrite(decoder)?;
    Ok(phases::rewrite(&planar).unwrap_or_else(|reason| {
        tracing::warn!(
            reason = reason.as_str(),
            "Piper voice keeps its transposed convolutions (slower kernels)."
        );
        planar
    }))
}

/// A voice's first load: split it with 2-D convolutions in the blocked layout and check it; when a
/// rewrite fails its check, again without the blocked layout, then without the 2-D rewrite. Returns the
/// sessions (and whether they are 2-D and blocked) and what to record.
fn first_split(
    model: &Path,
    options: &SessionOptions,
    config: &PiperVoiceConfig,
) -> (Option<(SplitSessions, bool, bool)>, Decision) {
    let attempt = |planar: bool, blocked: bool| -> Result<(SplitSessions, bool, bool), Check> {
        let options = options.with_blocked(blocked);
        let (mut sessions, originals) = split_sessions(model, &options, planar).map_err(Check::Split)?;
        check(&mut sessions, config, &originals, &options)?;
        Ok((sessions, originals.any(), blocked && options.shared.is_some()))
    };
    let outcome = attempt(true, options.blocked)
        .or_else(|failed| match failed {
            Check::Planar(reason) if options.shared.is_some() && options.blocked => {
                tracing::warn!(
                    model = %model.display(),
                    reason = reason.as_str(),
                    "Piper voice keeps ONNX Runtime's layout reorders: the blocked-layout graph did not match."
                );
                attempt(true, false)
            }
            other => Err(other),
        })
        .or_else(|failed| match failed {
            Check::Planar(reason) => {
                tracing::warn!(
                    model = %model.display(),
                    reason = reason.as_str(),
                    "Piper voice keeps its 1-D convolutions: the 2-D rewrite did not match."
                );
                attempt(false, false)
            }
            split => Err(split),
        });
    match outcome {
        Ok((sessions, planar, blocked)) => (
            Some((sessions, planar, blocked)),
            Decision {
                split: Ok(()),
                planar,
                blocked,
            },
        ),
        Err(Check::Split(reason) | Check::Planar(reason)) => (
            None,
            Decision {
                split: Err(reason),
                planar: false,
                blocked: false,
            },
        ),
    }
}

/// Why a voice's first-load check failed.
enum Check {
    /// Windowed decoding does not match whole decoding: the voice runs whole.
    Split(String),
    /// The 2-D rewrite of the decoder does not match the original: the voice loads without it.
    Planar(String),
}

/// Decodes a probe sentence (no sampling noise) in windows and whole; they must agree to [`MIN_SNR_DB`].
/// Where [`planar`] rewrote a part, the rewritten part must also equal `originals`' to
/// [`PLANAR_MIN_SNR_DB`]: the first part's latent, and the decoder's audio.
fn check(
    sessions: &mut SplitSessions,
    config: &PiperVoiceConfig,
    originals: &Originals,
    options: &SessionOptions,
) -> Result<(), Check> {
    let probe = || {
        let (ids, _) = config.phoneme_ids(PROBE_PHONEMES);
        feeds(config, ids, [0.0, config.length_scale, 0.0])
    };
    let latent = sessions
        .encode(probe().map_err(Check::Split)?)
        .map_err(Check::Split)?;
    if let Some(bytes) = &originals.encoder {
        let mut encoder = session(options, Ok(bytes)).map_err(Check::Planar)?;
        let reference = stream::encode_on(
            &mut encoder,
            &sessions.latent,
            &sessions.extra,
            probe().map_err(Check::Planar)?,
        )
        .map_err(Check::Planar)?;
        if reference.frames() != latent.frames() {
            return Err(Check::Planar(format!(
                "the 2-D first part gave {} latent frames where the original gives {}",
                latent.frames(),
                reference.frames()
            )));
        }
        let snr = stream::snr_db(reference.data(), latent.data());
        if snr < PLANAR_MIN_SNR_DB {
            return Err(Check::Planar(format!(
                "the 2-D first part is only {snr:.1} dB from the original"
            )));
        }
    }
    let whole = sessions
        .decode(&latent, (0, latent.frames()), 0)
        .map_err(Check::Split)?;
    if let Some(bytes) = &originals.decoder {
        let mut decoder = session(options, Ok(bytes)).map_err(Check::Planar)?;
        let reference = stream::decode_on(&mut decoder, &sessions.latent, &latent, (0, latent.frames()), 0)
            .map_err(Check::Planar)?;
        let snr = stream::snr_db(&reference, &whole);
        if snr < PLANAR_MIN_SNR_DB {
            return Err(Check::Planar(format!(
                "the 2-D decoder is only {snr:.1} dB from the original"
            )));
        }
    }
    let mut windowed = Vec::with_capacity(whole.len());
    for window in stream::windows(latent.frames(), FIRST_WINDOW_FRAMES, 2 * FIRST_WINDOW_FRAMES) {
        windowed.extend(
            sessions
                .decode(&latent, window, OVERLAP_FRAMES)
                .map_err(Check::Split)?,
        );
    }
    let snr = stream::snr_db(&whole, &windowed);
    if snr < MIN_SNR_DB {
        return Err(Check::Split(format!(
            "windowed decoding is only {snr:.1} dB from whole decoding"
        )));
    }
    Ok(())
}

impl PiperEngine {
    pub(in crate::engine) fn load(voice: VoiceInfo, settings: &EngineSettings) -> Result<Self, EngineError> {
        let model_path: PathBuf = voice.model_path.clone().ok_or_else(|| EngineError::Load {
            voice: voice.id.clone(),
            path: PathBuf::new(),
            reason: "no model path".into(),
        })?;
        let load_err = |reason: String| EngineError::Load {
            voice: voice.id.clone(),
            path: model_path.clone(),
            reason,
        };
        let mut config = PiperVoiceConfig::read(&model_path.with_extension("onnx.json")).map_err(load_err)?;
        if let Some(noise) = settings.piper_noise {
            config.noise_scale = noise.noise_scale;
            config.noise_w = noise.noise_w;
        }
        environment()?;
        let mut options = SessionOptions::new(&voice.id, settings);
        let split = match known(&voice.id) {
            Some(Decision { split: Err(_), .. }) => None,
            Some(Decision {
                split: Ok(()),
                planar,
                blocked,
            }) => {
                options = options.with_blocked(blocked);
                split_sessions(&model_path, &options, planar)
                    .ok()
                    .map(|(sessions, _)| (sessions, planar))
            }
            None => {
                let (split, decision) = first_split(&model_path, &options, &config);
                options = options.with_blocked(decision.blocked);
                record(&voice.id, decision);
                split.map(|(sessions, planar, _)| (sessions, planar))
            }
        };
        let (model, planar) = match split {
            Some((sessions, planar)) => (Model::Split(sessions), Some(planar)),
            None => (
                Model::Whole(session(&options, Err(&model_path)).map_err(&load_err)?),
                None,
            ),
        };
        let quiet_threads = settings.onnx_quiet_intra_threads;
        let quiet = if quiet_threads > options.threads {
            let quiet_options = options.with_threads(quiet_threads);
            Some(quiet_model(&voice.id, &model_path, &quiet_options, planar).map_err(&load_err)?)
        } else {
            None
        };
        Ok(Self {
            voice,
            config,
            model,
            quiet,
            quiet_next: false,
            windows_decoded: 0,
            quiet_chunks: 0,
            speed: 1.0,
            first_chunk: true,
            first_chunk_scope: settings.first_chunk_scope,
            rest: None,
        })
    }

    /// How this instance decodes.
    #[cfg(test)]
    pub(super) fn mode(&self) -> super::DecoderMode {
        match self.model {
            Model::Whole(_) => DecoderMode::Whole,
            Model::Split(_) => DecoderMode::Streaming,
        }
    }

    #[cfg(test)]
    pub(super) fn quiet_chunks(&self) -> u64 {
        self.quiet_chunks
    }

    #[cfg(test)]
    pub(super) fn windows_decoded(&self) -> u64 {
        self.windows_decoded
    }

    /// Runs `ids` through the quiet sessions when this chunk may and they are free, else through the
    /// instance's own.
    fn infer(
        &mut self,
        ids: Vec<i64>,
        sink: &mut dyn FnMut(&[i16]) -> Flow,
    ) -> Result<Option<Paused>, Failure> {
        // VITS's length scale stretches every phoneme's duration: a faster speed is a shorter one.
        let scales = [
            self.config.noise_scale,
            self.config.length_scale / self.speed,
            self.config.noise_w,
        ];
        let feeds = feeds(&self.config, ids, scales).map_err(Failure::Inference)?;
        let quiet = match (&self.quiet, std::mem::take(&mut self.quiet_next)) {
            (Some(quiet), true) => quiet.try_lock().ok(),
            _ => None,
        };
        let first = std::mem::replace(&mut self.first_chunk, true);
        match quiet {
            Some(mut model) => {
                self.quiet_chunks += 1;
                run(&mut model, feeds, first, sink, &mut self.windows_decoded)
            }
            None => run(&mut self.model, feeds, first, sink, &mut self.windows_decoded),
        }
    }
}

/// Runs one chunk through `model`, handing PCM to `sink` window by window (or all at once, whole); a
/// `first` chunk starts with small windows ([`stream::chunk_windows`]). Returns what is left when the
/// sink paused it.
fn run(
    model: &mut Model,
    feeds: Vec<(String, DynTensor)>,
    first: bool,
    sink: &mut dyn FnMut(&[i16]) -> Flow,
    windows_decoded: &mut u64,
) -> Result<Option<Paused>, Failure> {
    let failed = |e: ort::Error| Failure::Inference(e.to_string());
    match model {
        Model::Whole(session) => {
            let outputs = session.run(feeds).map_err(failed)?;
            let (_, audio) = outputs["output"].try_extract_tensor::<f32>().map_err(failed)?;
            emit(audio, sink).map(|()| None)
        }
        Model::Split(sessions) => {
            let latent = sessions.encode(feeds).map_err(Failure::Inference)?;
            let windows = stream::chunk_windows(latent.frames(), first);
            decode(sessions, Paused { latent, windows }, sink, windows_decoded)
        }
    }
}

/// Decodes `chunk`'s windows in order, handing each one's PCM to `sink`. Before each window the sink is
/// asked whether to go on: a STOP that came during the first part (or the last window) is seen before
/// the next window costs anything, and a pause returns the windows still to decode.
fn decode(
    sessions: &mut SplitSessions,
    chunk: Paused,
    sink: &mut dyn FnMut(&[i16]) -> Flow,
    windows_decoded: &mut u64,
) -> Result<Option<Paused>, Failure> {
    let Paused { latent, windows } = chunk;
    for (done, &window) in windows.iter().enumerate() {
        match sink(&[]) {
            Flow::Stop => return Err(Failure::Cancelled),
            Flow::Pause => {
                return Ok(Some(Paused {
                    latent,
                    windows: windows[done..].to_vec(),
                }));
            }
            Flow::Continue => {}
        }
        let audio = sessions
            .decode(&latent, window, OVERLAP_FRAMES)
            .map_err(Failure::Inference)?;
        *windows_decoded += 1;
        emit(&audio, sink)?;
    }
    Ok(None)
}

enum Failure {
    Cancelled,
    Inference(String),
}

/// Hands `audio` to the sink as 16-bit PCM in pieces, stopping when the sink says so.
fn emit(audio: &[f32], sink: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), Failure> {
    let mut pcm = Vec::with_capacity(PIECE_SAMPLES);
    for piece in audio.chunks(PIECE_SAMPLES) {
        pcm.clear();
        pcm.extend(
            piece
                .iter()
                .map(|s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16),
        );
        if sink(&pcm) == Flow::Stop {
            return Err(Failure::Cancelled);
        }
    }
    Ok(())
}

impl Engine for PiperEngine {
    fn voice(&self) -> &VoiceInfo {
        &self.voice
    }

    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    fn set_quiet(&mut self, quiet: bool) {
        self.quiet_next = quiet;
    }

    fn set_speed(&mut self, speed: f32) {
        self.speed = speed;
    }

    fn set_first_chunk(&mut self, first: bool) {
        self.first_chunk = first;
    }

    fn synthesize(&mut self, text: &str, sink: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), EngineError> {
        self.rest = None;
        let started = Instant::now();
        let mut scope = match self.first_chunk_scope {
            Some(scope) if self.first_chunk && matches!(self.model, Model::Split(_)) => Some(scope()),
            _ => None,
        };
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
        let (windows_before, quiet_before) = (self.windows_decoded, self.quiet_chunks);
        let mut samples = 0usize;
        let outcome = self.infer(ids, &mut |pcm| {
            if !pcm.is_empty() {
                drop(scope.take());
            }
            samples += pcm.len();
            sink(pcm)
        });
        drop(scope);
        tracing::debug!(
            voice = %self.voice.id,
            phonemize_ms = phonemised.as_secs_f64() * 1e3,
            inference_ms = (started.elapsed() - phonemised).as_secs_f64() * 1e3,
            audio_ms = samples as f64 * 1e3 / f64::from(self.config.sample_rate),
            windows = self.windows_decoded - windows_before,
            quiet = self.quiet_chunks > quiet_before,
            paused = matches!(outcome, Ok(Some(_))),
            "Piper inference done."
        );
        self.finish(outcome)
    }

    fn take_rest(&mut self) -> Option<Rest> {
        self.rest.take().map(Rest::new)
    }

    fn resume(&mut self, rest: Rest, sink: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), EngineError> {
        self.rest = None;
        let failed = |reason: &str| EngineError::Inference {
            voice: self.voice.id.clone(),
            reason: reason.to_owned(),
        };
        let chunk = rest
            .downcast::<Paused>()
            .ok_or_else(|| failed("the paused chunk is not a Piper one"))?;
        let Model::Split(sessions) = &mut self.model else {
            return Err(failed(
                "a paused chunk resumed on a voice that decodes whole chunks",
            ));
        };
        let outcome = decode(sessions, chunk, sink, &mut self.windows_decoded);
        self.finish(outcome)
    }
}

impl PiperEngine {
    /// Keeps what a paused chunk left for [`Engine::take_rest`]; maps the failures.
    fn finish(&mut self, outcome: Result<Option<Paused>, Failure>) -> Result<(), EngineError> {
        match outcome {
            Ok(rest) => {
                self.rest = rest;
                Ok(())
            }
            Err(Failure::Cancelled) => Err(EngineError::Cancelled),
            Err(Failure::Inference(reason)) => Err(EngineError::Inference {
                voice: self.voice.id.clone(),
                reason,
            }),
        }
    }
}
