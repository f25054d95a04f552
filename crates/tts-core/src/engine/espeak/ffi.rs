//! The few libespeak-ng entry points ttsd uses, declared by hand from `speak_lib.h` (espeak-ng 1.51).
//!
//! Everything here is `unsafe` and raw; the safe layer in `espeak.rs` serialises every call behind one
//! lock, because libespeak-ng keeps global state and is not thread-safe.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_short, c_uint, c_void};

pub(super) const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
pub(super) const POS_CHARACTER: c_int = 1;
pub(super) const ESPEAK_CHARS_UTF8: c_uint = 1;
pub(super) const ESPEAK_PHONEMES_IPA: c_int = 0x02;
pub(super) const EE_OK: c_int = 0;
/// `espeakRATE` of `espeak_PARAMETER`: words per minute, 80..=450, 175 by default.
pub(super) const ESPEAK_RATE: c_int = 1;

/// `espeak_VOICE` from `speak_lib.h`.
#[repr(C)]
pub(super) struct EspeakVoice {
    pub(super) name: *const c_char,
    /// A list of (priority byte, NUL-terminated language) pairs, ended by a zero priority byte.
    pub(super) languages: *const c_char,
    pub(super) identifier: *const c_char,
    pub(super) gender: u8,
    pub(super) age: u8,
    pub(super) variant: u8,
    pub(super) xx1: u8,
    pub(super) score: c_int,
    pub(super) spare: *mut c_void,
}

/// `t_espeak_callback`: return 0 to continue, 1 to abort synthesis.
pub(super) type SynthCallback =
    unsafe extern "C" fn(wav: *mut c_short, numsamples: c_int, events: *mut c_void) -> c_int;

unsafe extern "C" {
    pub(super) fn espeak_Initialize(
        output: c_int,
        buflength: c_int,
        path: *const c_char,
        options: c_int,
    ) -> c_int;
    pub(super) fn espeak_SetSynthCallback(callback: SynthCallback);
    pub(super) fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
    pub(super) fn espeak_SetParameter(parameter: c_int, value: c_int, relative: c_int) -> c_int;
    pub(super) fn espeak_ListVoices(spec: *const EspeakVoice) -> *const *const EspeakVoice;
    pub(super) fn espeak_Synth(
        text: *const c_void,
        size: usize,
        position: c_uint,
        position_type: c_int,
        end_position: c_uint,
        flags: c_uint,
        unique_identifier: *mut c_uint,
        user_data: *mut c_void,
    ) -> c_int;
    pub(super) fn espeak_Synchronize() -> c_int;
    pub(super) fn espeak_TextToPhonemes(
        textptr: *mut *const c_void,
        textmode: c_int,
        phonememode: c_int,
    ) -> *const c_char;
}
