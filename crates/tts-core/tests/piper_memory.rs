//! Memory stays bounded over many utterances through the real Piper engine: after the voice has seen its
//! longest chunk, synthesising more utterances of varying length does not grow the process.
//!
//! One test in its own binary, so no other test allocates in the process while it reads its RSS.

use std::path::{Path, PathBuf};

use tts_core::engine::{self, EngineSettings, Flow, init_onnx_runtime};
use tts_core::voices::{EngineKind, VoiceInfo};

/// RSS over the warmed-up baseline allowed at any point: one chunk's working memory comes and goes (a
/// long chunk's decoder windows and the allocator's free lists, measured up to 40 MiB), a leak does not.
const CAP_BYTES: u64 = 64 << 20;
/// How much the floor (the lowest RSS over a stretch of utterances) may rise from the first stretch to
/// the last. A leak of 1 MiB per utterance (a session, a latent, or a window's tensors kept per chunk)
/// raises it by about 20 MiB.
const FLOOR_RISE_BYTES: u64 = 8 << 20;
const MEASURED_UTTERANCES: usize = 30;
const STRETCH: usize = 8;

const TEXTS: [&str; 4] = [
    "Hello.",
    "The quick brown fox jumps over the lazy dog.",
    "Our service turns short pieces of text into speech for phone menus and alerts, and the answer \
     streams back as audio.",
    "When traffic rises, operators watch the latency graphs and the queue depth before adding machines, \
     and each request carries a voice name and the words to say, so the audio that streams back can start \
     playing while the rest of the sentence is still being synthesised on the server.",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn rss_stays_within_a_cap_over_many_piper_utterances() {
    let model = root().join(".cache/voices/en_US-joe-medium.onnx");
    assert!(
        model.is_file(),
        "{} is missing (run scripts/fetch-assets.sh)",
        model.display()
    );
    init_onnx_runtime(&root().join(".cache/ort/libonnxruntime.so.1.32.0")).unwrap();
    let voice = VoiceInfo {
        id: "memory-test".into(),
        engine: EngineKind::Piper,
        language: "en-us".into(),
        sample_rate: 22_050,
        model_path: Some(model),
        espeak_voice: "en-us".into(),
    };
    let mut engine = engine::load(&voice, &EngineSettings::default()).unwrap();
    let mut speak = |text: &str| {
        let mut samples = 0usize;
        engine
            .synthesize(text, &mut |pcm| {
                samples += pcm.len();
                Flow::Continue
            })
            .unwrap();
        assert!(samples > 0, "no audio for {text:?}");
    };
    // Warm-up: every length twice, the longest last, so allocator pools reach their working size.
    for _ in 0..2 {
        for text in TEXTS {
            speak(text);
        }
    }
    let baseline = resident_bytes();
    let mut after = Vec::with_capacity(MEASURED_UTTERANCES);
    for i in 0..MEASURED_UTTERANCES {
        // Lengths in a shuffled but fixed order.
        speak(TEXTS[(i * 7 + i / 4) % TEXTS.len()]);
        after.push(resident_bytes());
    }
    let trace: Vec<i64> = after
        .iter()
        .map(|&b| (b as i64 - baseline as i64) >> 20)
        .collect();
    let peak = after.iter().copied().max().unwrap_or(baseline);
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth <= CAP_BYTES,
        "RSS peaked {} MiB over the {} MiB baseline (cap {} MiB); MiB over baseline after each: {trace:?}",
        growth >> 20,
        baseline >> 20,
        CAP_BYTES >> 20
    );
    let floor = |stretch: &[u64]| stretch.iter().copied().min().unwrap_or(baseline);
    let (early, late) = (
        floor(&after[..STRETCH]),
        floor(&after[MEASURED_UTTERANCES - STRETCH..]),
    );
    assert!(
        late.saturating_sub(early) <= FLOOR_RISE_BYTES,
        "the RSS floor rose {} MiB from the first {STRETCH} utterances to the last {STRETCH} (allowed {} \
         MiB): memory grows per utterance; MiB over baseline after each: {trace:?}",
        late.saturating_sub(early) >> 20,
        FLOOR_RISE_BYTES >> 20
    );
}
