//! ttsd's domain layer: everything between text and 48 kHz PCM frames, with no network.
//!
//! - [`text`] cuts streaming text into chunks tuned for first audio (first clause, then sentences).
//! - [`audio`] resamples engine output to 48 kHz and cuts it into 20 ms frames of 1920 bytes.
//! - [`engine`] holds the streaming, cancellable [`engine::Engine`] trait and its two engines:
//!   espeak-ng in-process over FFI, and Piper VITS voices on ONNX Runtime.
//! - [`voices`] discovers the voices a server can speak with.
//! - [`pool`] runs engines on a fixed set of OS threads behind a bounded, first-audio-first scheduler.
//!
//! It does not know about sockets, sessions, pacing or metrics exporters; the gateway and the worker
//! build those on top of it.

pub mod audio;
pub mod engine;
pub mod pool;
pub mod text;
pub mod voices;
