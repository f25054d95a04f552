//! espeak-ng, in process, through libespeak-ng's synchronous mode and its synth callback.
//!
//! libespeak-ng is one global instance that is not thread-safe, so every call (synthesis, phonemisation,
//! voice listing) goes through [`ESPEAK`], one process-wide lock. At about 1,700 s of audio per CPU second
//! the lock is held briefly; Piper only holds it to phonemise. The library hands back buffers of about
//! 48 ms whatever is asked for; framing to 20 ms happens later, in the session.
#![allow(unsafe_code)]

mod ffi;

use std::cell::Cell;
use std::ffi::{CStr, CString, c_int, c_short, c_void};
use std::ptr;
use std::sync::{Mutex, MutexGuard};

use super::{Engine, EngineError, Flow};
use crate::voices::{EngineKind, VoiceInfo};

/// The initialised library: sample rate and the voice currently selected.
struct Espeak {
    sample_rate: u32,
    voice: Option<String>,
}

static ESPEAK: Mutex<Option<Result<Espeak, String>>> = Mutex::new(None);

type SinkPtr = *mut (dyn FnMut(&[i16]) -> Flow + 'static);

thread_local! {
    /// The sink of the synthesis running on this thread; set only for the duration of `espeak_Synth`,
    /// which (in synchronous mode) calls the callback on the calling thread.
    static SINK: Cell<Option<SinkPtr>> = const { Cell::new(None) };
    /// A panic raised by the sink inside the C callback: unwinding through espeak-ng's C frames would
    /// abort the process, so the callback stops synthesis and `synthesize` re-raises it in Rust.
    static SINK_PANIC: Cell<Option<Box<dyn std::any::Any + Send>>> = const { Cell::new(None) };
}

/// Locks libespeak-ng, initialising it on first use.
fn lock() -> Result<MutexGuard<'static, Option<Result<Espeak, String>>>, EngineError> {
    // A panic that unwound past a holder left the library itself intact (it never unwinds through C
    // frames, see SINK_PANIC), so a poisoned lock is still usable.
    let mut guard = ESPEAK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if guard.is_none() {
        // SAFETY: called once, under the lock; a null path makes espeak-ng use its compiled-in data path.
        let rate = unsafe { ffi::espeak_Initialize(ffi::AUDIO_OUTPUT_SYNCHRONOUS, 20, ptr::null(), 0) };
        let state = if rate > 0 {
            // SAFETY: `synth_callback` has the C signature espeak-ng expects and lives for the program.
            unsafe { ffi::espeak_SetSynthCallback(synth_callback) };
            Ok(Espeak {
                sample_rate: rate as u32,
                voice: None,
            })
        } else {
            Err("espeak_Initialize failed: is espeak-ng-data installed?".to_owned())
        };
        *guard = Some(state);
    }
    match guard.as_ref() {
        Some(Err(reason)) => Err(EngineError::Espeak(reason.clone())),
        _ => Ok(guard),
    }
}

fn state(guard: &mut Option<Result<Espeak, String>>) -> Result<&mut Espeak, EngineError> {
    match guard {
        Some(Ok(espeak)) => Ok(espeak),
        _ => Err(EngineError::Espeak("espeak-ng is not initialised".into())),
    }
}

fn select_voice(espeak: &mut Espeak, name: &str) -> Result<(), EngineError> {
    if espeak.voice.as_deref() == Some(name) {
        return Ok(());
    }
    let c_name = CString::new(name).map_err(|_| EngineError::Espeak(format!("bad voice name {name:?}")))?;
    // SAFETY: c_name is a valid NUL-terminated string for the duration of the call; we hold the lock.
    let rc = unsafe { ffi::espeak_SetVoiceByName(c_name.as_ptr()) };
    if rc != ffi::EE_OK {
        espeak.voice = None;
        return Err(EngineError::Espeak(format!("espeak-ng has no voice {name:?}")));
    }
    espeak.voice = Some(name.to_owned());
    Ok(())
}

unsafe extern "C" fn synth_callback(wav: *mut c_short, numsamples: c_int, _events: *mut c_void) -> c_int {
    let Some(sink) = SINK.with(Cell::get) else {
        return 1;
    };
    if wav.is_null() || numsamples <= 0 {
        return 0;
    }
    // SAFETY: espeak-ng passes a buffer of `numsamples` samples valid for this call.
    let pcm = unsafe { std::slice::from_raw_parts(wav as *const i16, numsamples as usize) };
    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: SINK points at the sink borrowed by `EspeakEngine::synthesize`, which is still on the
        // stack below this call (synchronous mode) and is cleared before that function returns.
        unsafe { (*sink)(pcm) }
    }));
    match called {
        // espeak-ng synthesises a chunk in one call: it cannot pause.
        Ok(Flow::Continue | Flow::Pause) => 0,
        Ok(Flow::Stop) => 1,
        Err(payload) => {
            SINK_PANIC.with(|slot| slot.set(Some(payload)));
            1
        }
    }
}

/// The voices espeak-ng has installed, one per language, as `espeak-<language>`.
pub fn espeak_voices() -> Vec<VoiceInfo> {
    let Ok(mut guard) = lock() else { return Vec::new() };
    let Ok(espeak) = state(&mut guard) else {
        return Vec::new();
    };
    let sample_rate = espeak.sample_rate;
    let mut voices = Vec::new();
    // SAFETY: a null spec lists all voices; the array is owned by espeak-ng, NULL-terminated, and valid
    // until the next ListVoices call, which cannot happen while we hold the lock.
    let mut list = unsafe { ffi::espeak_ListVoices(ptr::null()) };
    while !list.is_null() {
        // SAFETY: `list` points into the NULL-terminated array described above.
        let entry = unsafe { *list };
        if entry.is_null() {
            break;
        }
        // SAFETY: entry is a valid espeak_VOICE; `languages` starts with a priority byte then a C string,
        // and `identifier` is a C string naming the voice file (e.g. `gmw/en-US`).
        let (language, identifier) = unsafe {
            let langs = (*entry).languages;
            let language = if langs.is_null() || *langs == 0 {
                None
            } else {
                Some(CStr::from_ptr(langs.add(1)))
            };
            let ident = (*entry).identifier;
            (
                language,
                if ident.is_null() {
                    None
                } else {
                    Some(CStr::from_ptr(ident))
                },
            )
        };
        let language = language
            .and_then(|l| l.to_str().ok())
            .map(str::to_ascii_lowercase);
        let identifier = identifier.and_then(|i| i.to_str().ok());
        if let (Some(language), Some(identifier)) = (language, identifier) {
            // Variants (`mb-*`) need separately installed mbrola voices; skip them.
            let id = format!("espeak-{language}");
            if !language.is_empty()
                && !identifier.starts_with("mb/")
                && !voices.iter().any(|v: &VoiceInfo| v.id == id)
            {
                voices.push(VoiceInfo {
                    id,
                    engine: EngineKind::Espeak,
                    language,
                    sample_rate,
                    model_path: None,
                    espeak_voice: identifier.to_owned(),
                });
            }
        }
        // SAFETY: still inside the NULL-terminated array.
        list = unsafe { list.add(1) };
    }
    voices
}

/// IPA phonemes for `text` in `voice`, clause by clause, each followed by the punctuation that ended it
/// in the source (espeak-ng 1.51 drops it, and Piper voices use it for prosody).
pub fn phonemize_ipa(text: &str, voice: &str) -> Result<Vec<String>, EngineError> {
    let mut guard = lock()?;
    let espeak = state(&mut guard)?;
    select_voice(espeak, voice)?;
    let c_text = CString::new(text.replace('\0', " "))
        .map_err(|_| EngineError::Espeak("text contains a NUL byte".into()))?;
    let base = c_text.as_ptr() as usize;
    let bytes = c_text.as_bytes();
    let mut cursor: *const c_void = c_text.as_ptr().cast();
    let mut clauses = Vec::new();
    let mut consumed = 0usize;
    while !cursor.is_null() {
        // SAFETY: cursor points into c_text (NUL-terminated, alive for this loop); espeak-ng advances it past
        // one clause per call and sets it to NULL at the end.
        let phonemes = unsafe {
            ffi::espeak_TextToPhonemes(
                &mut cursor,
                ffi::ESPEAK_CHARS_UTF8 as c_int,
                ffi::ESPEAK_PHONEMES_IPA,
            )
        };
        let end = if cursor.is_null() {
            bytes.len()
        } else {
            (cursor as usize - base).min(bytes.len())
        };
        let source = &bytes[consumed.min(end)..end];
        consumed = end;
        if phonemes.is_null() {
            continue;
        }
        // SAFETY: espeak-ng returns a NUL-terminated string valid until its next call.
        let ipa = unsafe { CStr::from_ptr(phonemes) }
            .to_string_lossy()
            .trim()
            .to_owned();
        if ipa.is_empty() {
            continue;
        }
        let punct = clause_punctuation(source);
        clauses.push(match punct {
            Some(p) => format!("{ipa}{p}"),
            None => ipa,
        });
    }
    Ok(clauses)
}

/// The punctuation that ended a clause. espeak-ng advances its text pointer one character into the next
/// clause, so the slice looks like `"Hello there, w"`: take the last mark followed by whitespace or the end.
fn clause_punctuation(source: &[u8]) -> Option<char> {
    let text = String::from_utf8_lossy(source);
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len())
        .rev()
        .find(|&i| ".,;:!?".contains(chars[i]) && chars.get(i + 1).is_none_or(|c| c.is_whitespace()))
        .map(|i| chars[i])
}

/// An espeak-ng voice; cheap, since the library itself is shared.
pub(super) struct EspeakEngine {
    voice: VoiceInfo,
    sample_rate: u32,
    /// Words per minute for the next chunks ([`Engine::set_speed`]).
    rate_wpm: c_int,
}

/// espeak-ng's own pace (`espeakRATE_NORMAL`) and the rates it accepts.
const RATE_NORMAL_WPM: f32 = 175.0;
const RATE_MIN_WPM: c_int = 80;
const RATE_MAX_WPM: c_int = 450;

impl EspeakEngine {
    pub(super) fn new(voice: VoiceInfo) -> Result<Self, EngineError> {
        let mut guard = lock()?;
        let espeak = state(&mut guard)?;
        select_voice(espeak, &voice.espeak_voice)?;
        Ok(Self {
            sample_rate: espeak.sample_rate,
            voice,
            rate_wpm: RATE_NORMAL_WPM as c_int,
        })
    }
}

impl Engine for EspeakEngine {
    fn voice(&self) -> &VoiceInfo {
        &self.voice
    }

    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn set_speed(&mut self, speed: f32) {
        // espeak-ng speaks 80..=450 words per minute: 0.46x to 2.6x its own pace, the nearest rate
        // beyond that.
        self.rate_wpm = ((RATE_NORMAL_WPM * speed).round() as c_int).clamp(RATE_MIN_WPM, RATE_MAX_WPM);
    }

    fn synthesize(&mut self, text: &str, sink: &mut dyn FnMut(&[i16]) -> Flow) -> Result<(), EngineError> {
        let mut guard = lock()?;
        let espeak = state(&mut guard)?;
        select_voice(espeak, &self.voice.espeak_voice)?;
        // The library is shared by every voice and caller: set the rate under the lock, every chunk.
        // SAFETY: plain call under the lock.
        let rc = unsafe { ffi::espeak_SetParameter(ffi::ESPEAK_RATE, self.rate_wpm, 0) };
        if rc != ffi::EE_OK {
            return Err(EngineError::Espeak(format!(
                "espeak_SetParameter(rate) returned {rc}"
            )));
        }
        let c_text = CString::new(text.replace('\0', " "))
            .map_err(|_| EngineError::Espeak("text contains a NUL byte".into()))?;
        let mut stopped = false;
        let mut guarded_sink = |pcm: &[i16]| {
            let flow = sink(pcm);
            stopped |= flow == Flow::Stop;
            flow
        };
        let sink_ref: &mut dyn FnMut(&[i16]) -> Flow = &mut guarded_sink;
        // SAFETY: erases the borrow's lifetime so the C callback can reach the sink; SINK is reset to None
        // below before `guarded_sink` goes out of scope, and only this thread reads it.
        let sink_ptr: SinkPtr =
            unsafe { std::mem::transmute(sink_ref as *mut (dyn FnMut(&[i16]) -> Flow + '_)) };
        SINK.with(|s| s.set(Some(sink_ptr)));
        // SAFETY: c_text is NUL-terminated and outlives the call; synchronous mode returns when done.
        let rc = unsafe {
            ffi::espeak_Synth(
                c_text.as_ptr().cast(),
                c_text.as_bytes_with_nul().len(),
                0,
                ffi::POS_CHARACTER,
                0,
                ffi::ESPEAK_CHARS_UTF8,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        // SAFETY: plain call under the lock.
        unsafe { ffi::espeak_Synchronize() };
        SINK.with(|s| s.set(None));
        drop(guard);
        if let Some(payload) = SINK_PANIC.with(Cell::take) {
            std::panic::resume_unwind(payload);
        }
        if stopped {
            return Err(EngineError::Cancelled);
        }
        if rc != ffi::EE_OK {
            return Err(EngineError::Espeak(format!("espeak_Synth returned {rc}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn en_us() -> VoiceInfo {
        espeak_voices()
            .into_iter()
            .find(|v| v.id == "espeak-en-us")
            .expect("espeak-en-us installed")
    }

    #[test]
    fn synthesises_speech_in_about_48_ms_buffers() {
        let mut engine = EspeakEngine::new(en_us()).unwrap();
        let mut buffers = 0;
        let mut samples = Vec::new();
        engine
            .synthesize("The quick brown fox jumps over the lazy dog.", &mut |pcm| {
                buffers += 1;
                samples.extend_from_slice(pcm);
                Flow::Continue
            })
            .unwrap();
        let seconds = samples.len() as f64 / engine.sample_rate() as f64;
        assert!((1.5..5.0).contains(&seconds), "{seconds} s of audio");
        assert!(buffers > 10, "streamed in {buffers} buffers");
        let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak > 3000, "peak {peak}: not speech");
    }

    #[test]
    fn speed_changes_the_rate_for_this_engine_only_and_holds_until_changed() {
        let text = "Please hold while I check the schedule, it will only take a moment.";
        let length = |engine: &mut EspeakEngine| {
            let mut samples = 0usize;
            engine
                .synthesize(text, &mut |pcm| {
                    samples += pcm.len();
                    Flow::Continue
                })
                .unwrap();
            samples as f64
        };
        let mut fast = EspeakEngine::new(en_us()).unwrap();
        let mut normal = EspeakEngine::new(en_us()).unwrap();
        let base = length(&mut normal);
        fast.set_speed(2.0);
        let doubled = length(&mut fast);
        // The library is shared: the other engine's next chunk is back at its own pace.
        let again = length(&mut normal);
        fast.set_speed(0.5);
        let halved = length(&mut fast);
        assert!(
            (0.35..0.7).contains(&(doubled / base)),
            "speed 2: {doubled} vs {base}"
        );
        assert!(
            (0.95..1.05).contains(&(again / base)),
            "speed 1 again: {again} vs {base}"
        );
        assert!(
            (1.5..2.5).contains(&(halved / base)),
            "speed 0.5: {halved} vs {base}"
        );
    }

    #[test]
    fn stop_from_the_sink_cancels_between_buffers() {
        let mut engine = EspeakEngine::new(en_us()).unwrap();
        let mut calls = 0;
        let result = engine.synthesize("One two three four five six seven eight nine ten.", &mut |_| {
            calls += 1;
            if calls == 2 { Flow::Stop } else { Flow::Continue }
        });
        assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
        assert_eq!(calls, 2, "no buffer after Stop");
        // The library is still usable afterwards.
        let mut more = 0;
        engine
            .synthesize("Hello.", &mut |pcm| {
                more += pcm.len();
                Flow::Continue
            })
            .unwrap();
        assert!(more > 0);
    }

    #[test]
    fn clause_punctuation_ignores_the_next_clauses_first_letter() {
        assert_eq!(clause_punctuation(b"Hello there, w"), Some(','));
        assert_eq!(clause_punctuation(b"orld. H"), Some('.'));
        assert_eq!(clause_punctuation(b"ow are you?"), Some('?'));
        assert_eq!(clause_punctuation(b"pi is 3.14 and"), None);
    }

    #[test]
    fn phonemes_keep_clause_punctuation() {
        let clauses = phonemize_ipa("Hello there, world. How are you?", "en-us").unwrap();
        assert!(clauses.len() >= 2, "{clauses:?}");
        assert!(clauses[0].ends_with(','), "{clauses:?}");
        assert!(clauses.last().unwrap().ends_with('?'), "{clauses:?}");
        assert!(
            clauses.iter().any(|c| c.contains('ð')),
            "IPA expected: {clauses:?}"
        );
    }
}
