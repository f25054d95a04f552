//! Memory stays bounded over many utterances through the real Piper engine: after the voice has seen its
//! longest chunk, synthesising more utterances of varying length does not grow the process.
//!
//! Two measures: the bytes the C allocator has handed out and not had back (glibc's `mallinfo2`, which
//! ONNX Runtime, espeak-ng and this test's Rust code all allocate through), exact enough to catch a leak
//! of a few hundred KiB per utterance; and the resident set, whose peak must stay under a cap. One test in
//! its own binary, so no other test allocates in the process meanwhile.

#![allow(clippy::unwrap_used)]
// `mallinfo2` and `mallopt` are plain C calls; see the SAFETY notes where they are made.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

use tts_core::engine::{self, EngineSettings, Flow, init_onnx_runtime};
use tts_core::voices::{EngineKind, VoiceInfo};

/// RSS over the warmed-up baseline allowed at any point: one chunk's working memory comes and goes (a
/// long chunk's decoder windows and the allocator's free lists, measured up to 40 MiB), a leak does not.
const CAP_BYTES: u64 = 64 << 20;
/// Growth allowed in the bytes allocated and not freed, from after warm-up to after the last utterance.
/// Between utterances nothing of a chunk should stay allocated; a leak of 512 KiB per utterance (a
/// latent, or a window's tensors, kept per chunk) would be 12 MiB.
const IN_USE_GROWTH_BYTES: u64 = 4 << 20;
const MEASURED_UTTERANCES: usize = 24;

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

fn allocated_bytes() -> u64 {
    // SAFETY: `mallinfo2` takes no arguments, only reads glibc's allocator statistics and returns them by
    // value; it is safe to call from any thread at any time.
    let info = unsafe { libc::mallinfo2() };
    // In use from the heap arenas (`uordblks`) plus large blocks served by mmap (`hblkhd`).
    (info.uordblks + info.hblkhd) as u64
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// glibc's mmap threshold, fixed: blocks this large come from mmap and go back to the system when freed.
/// By default the threshold rises to the size of each mmap'd block freed (up to 32 MiB), after which
/// the decoder's 1-20 MB tensors come from glibc's heap, whose freed pages it may keep: RSS then grew by
/// up to 104 MiB over 24 utterances with the bytes in use flat (glibc holding freed memory, not a leak).
/// `ttsd` allocates through jemalloc, which purges freed pages after 5 s, so the fixed threshold makes
/// this process's RSS follow what is in use, as the server's does.
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

#[test]
fn rss_stays_within_a_cap_over_many_piper_utterances() {
    // SAFETY: `mallopt` only changes glibc's allocator parameters; called before anything in this test
    // allocates through ONNX Runtime, and it is safe to call at any time.
    let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
    assert_eq!(set, 1, "mallopt(M_MMAP_THRESHOLD) failed");
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
    let allocated_baseline = allocated_bytes();
    let mut after = Vec::with_capacity(MEASURED_UTTERANCES);
    let mut allocated = Vec::with_capacity(MEASURED_UTTERANCES);
    for i in 0..MEASURED_UTTERANCES {
        // Lengths in a shuffled but fixed order.
        speak(TEXTS[(i * 7 + i / 4) % TEXTS.len()]);
        after.push(resident_bytes());
        allocated.push((allocated_bytes() as i64 - allocated_baseline as i64) >> 10);
    }
    let grown = allocated_bytes().saturating_sub(allocated_baseline);
    assert!(
        grown <= IN_USE_GROWTH_BYTES,
        "{} KiB more allocated after {MEASURED_UTTERANCES} utterances than after warm-up (allowed {} KiB): \
         memory grows per utterance; KiB over the baseline after each: {allocated:?}",
        grown >> 10,
        IN_USE_GROWTH_BYTES >> 10
    );
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
}
