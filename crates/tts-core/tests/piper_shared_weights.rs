//! A Piper voice's instances (one per engine thread, and the quiet set) run on one copy of its weights:
//! every instance after the first costs a fraction of what an instance with its own copy costs, and
//! both speak the same samples. One test in its own binary, so no other test allocates in the process
//! meanwhile. Memory is the bytes glibc's allocator has handed out and not had back (`mallinfo2`; ONNX
//! Runtime allocates through it too): exact, where the resident set would reuse pages an earlier load
//! freed.

#![allow(clippy::unwrap_used)]
// `mallinfo2` is a plain C call; see the SAFETY note where it is made.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

use tts_core::engine::{self, Engine, EngineSettings, Flow, PiperNoise, init_onnx_runtime};
use tts_core::voices::{EngineKind, VoiceInfo};

/// What one more instance of en_US-joe-medium may add on the shared weights: its sessions' graphs,
/// small initializers and kernels' state. Its weights alone are about 60 MB.
const SHARED_INSTANCE_CAP: i64 = 30 << 20;
/// What one more instance with its own copy of the weights adds at least.
const OWN_INSTANCE_FLOOR: i64 = 45 << 20;
const INSTANCES: usize = 3;
const TEXT: &str = "Our service turns short pieces of text into speech for phone menus and alerts.";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn allocated_bytes() -> i64 {
    // SAFETY: `mallinfo2` takes no arguments, only reads glibc's allocator statistics and returns them by
    // value; it is safe to call from any thread at any time.
    let info = unsafe { libc::mallinfo2() };
    // In use from the heap arenas (`uordblks`) plus large blocks served by mmap (`hblkhd`).
    (info.uordblks + info.hblkhd) as i64
}

fn speak(engine: &mut Box<dyn Engine>) -> Vec<i16> {
    let mut pcm = Vec::new();
    engine
        .synthesize(TEXT, &mut |piece| {
            pcm.extend_from_slice(piece);
            Flow::Continue
        })
        .unwrap();
    assert!(!pcm.is_empty());
    pcm
}

/// Loads `INSTANCES` instances of the voice under `id`, each speaking [`TEXT`] once; returns them, what
/// each one after the first added to the bytes allocated on average, and the last one's samples.
fn instances(id: &str, share_weights: bool) -> (Vec<Box<dyn Engine>>, i64, Vec<i16>) {
    let voice = VoiceInfo {
        id: id.into(),
        engine: EngineKind::Piper,
        language: "en-us".into(),
        sample_rate: 22_050,
        model_path: Some(root().join(".cache/voices/en_US-joe-medium.onnx")),
        espeak_voice: "en-us".into(),
    };
    let settings = EngineSettings {
        onnx_quiet_intra_threads: 1,
        piper_noise: Some(PiperNoise {
            noise_scale: 0.0,
            noise_w: 0.0,
        }),
        onnx_share_weights: share_weights,
        ..EngineSettings::default()
    };
    let mut loaded = vec![engine::load(&voice, &settings).unwrap()];
    speak(&mut loaded[0]);
    let before = allocated_bytes();
    let mut samples = Vec::new();
    for _ in 1..INSTANCES {
        let mut instance = engine::load(&voice, &settings).unwrap();
        samples = speak(&mut instance);
        loaded.push(instance);
    }
    let each = (allocated_bytes() - before) / (INSTANCES as i64 - 1);
    (loaded, each, samples)
}

#[test]
fn instances_of_a_voice_share_its_weights_and_speak_the_same() {
    let model = root().join(".cache/voices/en_US-joe-medium.onnx");
    assert!(
        model.is_file(),
        "{} is missing (run scripts/fetch-assets.sh)",
        model.display()
    );
    init_onnx_runtime(&root().join(".cache/ort/libonnxruntime.so.1.32.0")).unwrap();
    // Kept alive throughout, so the second set's memory cannot come from the first set's.
    let (_shared, shared_each, shared_samples) = instances("shared-weights", true);
    let (_own, own_each, own_samples) = instances("own-weights", false);
    eprintln!(
        "one more instance: {} MiB on shared weights, {} MiB with its own copy",
        shared_each >> 20,
        own_each >> 20
    );
    assert!(
        own_each >= OWN_INSTANCE_FLOOR,
        "an instance with its own weights added only {} MiB: this test no longer sees the weights",
        own_each >> 20
    );
    assert!(
        shared_each <= SHARED_INSTANCE_CAP,
        "an instance on the shared weights added {} MiB (cap {} MiB; with its own copy {} MiB)",
        shared_each >> 20,
        SHARED_INSTANCE_CAP >> 20,
        own_each >> 20
    );
    assert_eq!(
        shared_samples, own_samples,
        "the shared weights changed the audio"
    );
}
