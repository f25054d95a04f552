//! The streaming decoder against the shipped voice (`scripts/fetch-assets.sh` puts it in `.cache/`).

use std::path::{Path, PathBuf};

use super::engine::PiperEngine;
use super::stream::{self, OVERLAP_FRAMES, SplitSessions};
use super::{
    DecoderMode, PiperVoiceConfig, blocked, init_onnx_runtime, onnx, phases, piper_decoder_modes, planar,
    shared, split, wire,
};
use crate::engine::{Engine, EngineError, EngineSettings, Flow, PiperNoise, Rest};
use crate::voices::{EngineKind, VoiceInfo};

const PARAGRAPH: &str = "Our service turns short pieces of text into speech for phone menus and alerts. Each \
    request carries a voice name and the words to say, and the answer streams back as audio. When traffic \
    rises, operators watch the latency graphs and the queue depth before adding machines.";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped_model() -> PathBuf {
    let model = root().join(".cache/voices/en_US-joe-medium.onnx");
    assert!(
        model.is_file(),
        "{} is missing (run scripts/fetch-assets.sh)",
        model.display()
    );
    init_onnx_runtime(&root().join(".cache/ort/libonnxruntime.so.1.32.0")).unwrap();
    model
}

fn voice(id: &str, model: &Path) -> VoiceInfo {
    VoiceInfo {
        id: id.into(),
        engine: EngineKind::Piper,
        language: "en-us".into(),
        sample_rate: 22_050,
        model_path: Some(model.to_path_buf()),
        espeak_voice: "en-us".into(),
    }
}

/// Deterministic synthesis (no sampling noise), one intra-op thread.
fn settings() -> EngineSettings {
    EngineSettings {
        onnx_intra_threads: 1,
        onnx_quiet_intra_threads: 1,
        piper_noise: Some(PiperNoise {
            noise_scale: 0.0,
            noise_w: 0.0,
        }),
        ..EngineSettings::default()
    }
}

fn synthesize(engine: &mut PiperEngine, text: &str) -> Vec<f32> {
    let mut pcm = Vec::new();
    engine
        .synthesize(text, &mut |piece| {
            pcm.extend(piece.iter().map(|&s| f32::from(s) / 32768.0));
            Flow::Continue
        })
        .unwrap();
    pcm
}

/// A copy of the shipped voice whose decoder cannot be found: `dec.conv_pre` renamed (same length, so the
/// protobuf stays valid) in its node name and in its weight's name.
fn unsplittable_copy(model: &Path, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(model).unwrap();
    let mut renamed = 0;
    for (from, to) in [
        (&b"dec/conv_pre"[..], &b"dec/conv_prX"[..]),
        (b"dec.conv_pre", b"dec.conv_prX"),
    ] {
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(from.len()).position(|w| w == from) {
            bytes[at + i..at + i + to.len()].copy_from_slice(to);
            at += i + to.len();
            renamed += 1;
        }
    }
    assert!(renamed >= 3, "renamed {renamed} occurrences");
    let copy = dir.join("unsplittable.onnx");
    std::fs::write(&copy, bytes).unwrap();
    std::fs::copy(
        model.with_extension("onnx.json"),
        copy.with_extension("onnx.json"),
    )
    .unwrap();
    copy
}

#[test]
fn the_shipped_voice_splits_at_its_decoder_and_windows_need_their_overlap() {
    let model = shipped_model();
    let bytes = std::fs::read(&model).unwrap();
    let parts = split::split(&bytes).unwrap();
    assert_eq!(parts.latent, "/Mul_7_output_0");
    assert!(parts.extra.is_empty(), "{:?}", parts.extra);
    // Every initializer lands in one part or the other (a few small shared constants in both).
    let total = parts.encoder.len() + parts.decoder.len();
    assert!(
        total >= bytes.len() - 1024 && total < bytes.len() + 64 * 1024,
        "{total} vs {}",
        bytes.len()
    );

    let options = super::engine::SessionOptions::new("test-split", &settings());
    let mut sessions = SplitSessions::new(
        super::engine::session(&options, Ok(&parts.encoder)).unwrap(),
        super::engine::session(&options, Ok(&parts.decoder)).unwrap(),
        parts.latent,
        parts.extra,
    );
    let config = PiperVoiceConfig::read(&model.with_extension("onnx.json")).unwrap();
    let (ids, _) = config.phoneme_ids("ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ.");
    let feeds = super::engine::feeds(&config, ids, [0.0, 1.0, 0.0]).unwrap();
    let latent = sessions.encode(feeds).unwrap();
    assert!(latent.frames() > 60, "{} frames", latent.frames());
    let whole = sessions.decode(&latent, (0, latent.frames()), 0).unwrap();
    let windowed = |overlap: usize, sessions: &mut SplitSessions| -> Vec<f32> {
        stream::windows(latent.frames(), 16, 32)
            .into_iter()
            .flat_map(|w| sessions.decode(&latent, w, overlap).unwrap())
            .collect()
    };
    let with_overlap = stream::snr_db(&whole, &windowed(OVERLAP_FRAMES, &mut sessions));
    let without = stream::snr_db(&whole, &windowed(0, &mut sessions));
    eprintln!(
        "windowed vs whole decoder: {with_overlap:.1} dB with {OVERLAP_FRAMES} frames of overlap, {without:.1} dB without"
    );
    assert!(
        with_overlap >= 30.0,
        "{with_overlap:.1} dB with {OVERLAP_FRAMES} frames of overlap"
    );
    assert!(
        without < 30.0,
        "{without:.1} dB without overlap: the seams should show"
    );
}

#[test]
fn streamed_audio_equals_the_whole_graph_and_an_unsplittable_voice_runs_whole_and_says_so() {
    let model = shipped_model();
    let dir = tempfile::tempdir().unwrap();
    let copy = unsplittable_copy(&model, dir.path());
    let mut streaming = PiperEngine::load(voice("test-streaming", &model), &settings()).unwrap();
    let mut whole = PiperEngine::load(voice("test-whole", &copy), &settings()).unwrap();
    assert_eq!(streaming.mode(), DecoderMode::Streaming);
    assert_eq!(whole.mode(), DecoderMode::Whole);
    let modes = piper_decoder_modes();
    assert!(
        modes.contains(&("test-streaming".into(), DecoderMode::Streaming)),
        "{modes:?}"
    );
    assert!(
        modes.contains(&("test-whole".into(), DecoderMode::Whole)),
        "{modes:?}"
    );

    // A first chunk: a small first window, a second, then windows of at most `MAX_WINDOW_FRAMES` (the
    // paragraph is over 1,000 frames, so at least five).
    let streamed = synthesize(&mut streaming, PARAGRAPH);
    let reference = synthesize(&mut whole, PARAGRAPH);
    assert!(
        streaming.windows_decoded() >= 5,
        "{} windows",
        streaming.windows_decoded()
    );
    assert_eq!(whole.windows_decoded(), 0);
    assert!(reference.len() > 10 * 22_050, "{} samples", reference.len());
    let snr = stream::snr_db(&reference, &streamed);
    eprintln!("streamed vs whole graph (16-bit PCM): {snr:.1} dB");
    assert!(
        snr >= 30.0,
        "streamed vs whole: {snr:.1} dB ({} vs {} samples)",
        streamed.len(),
        reference.len()
    );

    // The same text as a first chunk again: the same windows, so the same bytes.
    assert!(
        synthesize(&mut streaming, PARAGRAPH) == streamed,
        "the same text sounded different"
    );

    // A later chunk of an utterance: a sentence decodes in one window, and sounds the same.
    let text = "The quick brown fox jumps over the lazy dog.";
    let before = streaming.windows_decoded();
    streaming.set_first_chunk(false);
    let streamed = synthesize(&mut streaming, text);
    assert_eq!(streaming.windows_decoded() - before, 1);
    let snr = stream::snr_db(&synthesize(&mut whole, text), &streamed);
    assert!(snr >= 30.0, "one window vs whole graph: {snr:.1} dB");
}

#[test]
fn a_quiet_first_chunk_runs_on_the_shared_multi_threaded_sessions_and_sounds_the_same() {
    let model = shipped_model();
    let quiet_settings = EngineSettings {
        onnx_quiet_intra_threads: 2,
        ..settings()
    };
    let mut a = PiperEngine::load(voice("test-quiet", &model), &quiet_settings).unwrap();
    let mut b = PiperEngine::load(voice("test-quiet", &model), &quiet_settings).unwrap();
    let text = "The quick brown fox jumps over the lazy dog.";
    let own = synthesize(&mut a, text);
    assert_eq!(a.quiet_chunks(), 0);
    a.set_quiet(true);
    let quiet = synthesize(&mut a, text);
    assert_eq!(a.quiet_chunks(), 1);
    // The hint covers one chunk only.
    synthesize(&mut a, text);
    assert_eq!(a.quiet_chunks(), 1);
    let snr = stream::snr_db(&own, &quiet);
    assert!(snr >= 30.0, "quiet vs own sessions: {snr:.1} dB");
    // A second instance of the voice shares the same quiet sessions.
    b.set_quiet(true);
    synthesize(&mut b, text);
    assert_eq!(b.quiet_chunks(), 1);
    // Without `onnx_quiet_intra_threads` above `onnx_intra_threads` the hint changes nothing.
    let mut plain = PiperEngine::load(voice("test-plain", &model), &settings()).unwrap();
    plain.set_quiet(true);
    synthesize(&mut plain, text);
    assert_eq!(plain.quiet_chunks(), 0);
}

#[test]
fn a_stop_during_the_first_window_stops_before_the_next_window() {
    let model = shipped_model();
    let mut engine = PiperEngine::load(voice("test-stop", &model), &settings()).unwrap();
    let mut pieces = 0;
    let outcome = engine.synthesize(PARAGRAPH, &mut |pcm| {
        if pcm.is_empty() {
            return Flow::Continue; // asked before a window
        }
        pieces += 1;
        Flow::Stop
    });
    assert!(matches!(outcome, Err(EngineError::Cancelled)), "{outcome:?}");
    assert_eq!(pieces, 1);
    assert_eq!(engine.windows_decoded(), 1);

    // A STOP before the first window (during the first part) decodes no window at all.
    let before = engine.windows_decoded();
    let outcome = engine.synthesize(PARAGRAPH, &mut |_| Flow::Stop);
    assert!(matches!(outcome, Err(EngineError::Cancelled)), "{outcome:?}");
    assert_eq!(engine.windows_decoded(), before);

    // The same text uncancelled needs several windows, so the stop above did cut it short.
    let mut samples = 0usize;
    engine
        .synthesize(PARAGRAPH, &mut |piece| {
            samples += piece.len();
            Flow::Continue
        })
        .unwrap();
    assert!(
        engine.windows_decoded() >= 5,
        "{} windows",
        engine.windows_decoded()
    );
    assert!(samples > 10 * 22_050, "{samples} samples");
}

#[test]
fn a_chunk_paused_between_windows_resumes_on_another_instance_with_the_same_audio() {
    let model = shipped_model();
    let mut a = PiperEngine::load(voice("test-pause", &model), &settings()).unwrap();
    let mut b = PiperEngine::load(voice("test-pause", &model), &settings()).unwrap();
    let mut reference = Vec::new();
    a.synthesize(PARAGRAPH, &mut |piece| {
        reference.extend_from_slice(piece);
        Flow::Continue
    })
    .unwrap();
    assert!(
        a.take_rest().is_none(),
        "a chunk that was never paused leaves nothing"
    );

    // Pause at every window boundary once the run has handed on audio, alternating the instances.
    let mut pcm = Vec::new();
    let mut run = |engine: &mut PiperEngine, rest: Option<Rest>| {
        let mut made = 0usize;
        let mut sink = |piece: &[i16]| {
            if piece.is_empty() {
                return if made > 0 { Flow::Pause } else { Flow::Continue };
            }
            made += piece.len();
            pcm.extend_from_slice(piece);
            Flow::Continue
        };
        match rest {
            None => engine.synthesize(PARAGRAPH, &mut sink).unwrap(),
            Some(rest) => engine.resume(rest, &mut sink).unwrap(),
        }
        assert!(made > 0, "every run hands on audio");
        engine.take_rest()
    };
    let mut rest = run(&mut a, None);
    let mut runs = 1;
    while let Some(left) = rest {
        rest = if runs % 2 == 1 {
            run(&mut b, Some(left))
        } else {
            run(&mut a, Some(left))
        };
        runs += 1;
    }
    assert!(runs >= 4, "the paragraph crosses several windows: {runs} runs");
    assert_eq!(pcm.len(), reference.len());
    assert!(
        pcm == reference,
        "paused and resumed audio differs from the unpaused chunk"
    );
}

/// Decodes the fox sentence's whole latent with the original decoder and with `rewritten` (`what`): the
/// same number of samples, at least 60 dB apart.
fn assert_decodes_as_the_original(parts: split::SplitModel, rewritten: &[u8], what: &str) {
    let model = shipped_model();
    let options = super::engine::SessionOptions::new("test-planar", &settings());
    let encoder = super::engine::session(&options, Ok(&parts.encoder)).unwrap();
    let original = super::engine::session(&options, Ok(&parts.decoder)).unwrap();
    let mut rewritten_decoder = super::engine::session(&options, Ok(rewritten)).unwrap();
    let mut sessions = SplitSessions::new(encoder, original, parts.latent.clone(), parts.extra);
    let config = PiperVoiceConfig::read(&model.with_extension("onnx.json")).unwrap();
    let (ids, _) = config.phoneme_ids("ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ.");
    let latent = sessions
        .encode(super::engine::feeds(&config, ids, [0.0, 1.0, 0.0]).unwrap())
        .unwrap();
    let whole = (0, latent.frames());
    let reference = sessions.decode(&latent, whole, 0).unwrap();
    let audio = stream::decode_on(&mut rewritten_decoder, &parts.latent, &latent, whole, 0).unwrap();
    assert_eq!(audio.len(), reference.len(), "{what}");
    let snr = stream::snr_db(&reference, &audio);
    eprintln!("{what} vs original: {snr:.1} dB");
    assert!(snr >= 60.0, "{what}: {snr:.1} dB");
}

#[test]
fn the_shipped_decoder_runs_as_2d_convolutions_and_computes_the_same() {
    let parts = split::split(&std::fs::read(shipped_model()).unwrap()).unwrap();
    let rewritten = planar::rewrite(&parts.decoder).unwrap();
    // Every convolution weight is 4-D now, and the decoder's other operators are the original ones plus
    // one Unsqueeze of the latent and one Squeeze before the final Unsqueeze.
    let mut expected = ops(&parts.decoder);
    expected.extend(["Squeeze".to_owned(), "Unsqueeze".to_owned()]);
    expected.sort();
    assert_eq!(ops(&rewritten), expected);
    assert_decodes_as_the_original(parts, &rewritten, "2-D decoder");
}

#[test]
fn the_shipped_decoders_upsampling_runs_as_phase_convolutions_and_computes_the_same() {
    let parts = split::split(&std::fs::read(shipped_model()).unwrap()).unwrap();
    let planar = planar::rewrite(&parts.decoder).unwrap();
    let phased = phases::rewrite(&planar).unwrap();
    // Each of the three transposed convolutions (strides 8, 8, 4; kernels 16, 16, 8) becomes two
    // convolutions (phases shifted by 0 and by 1 frame), a Concat, a Transpose and two Reshapes.
    let count = |ops: &[String], op: &str| ops.iter().filter(|o| *o == op).count();
    let (before, after) = (ops(&planar), ops(&phased));
    assert_eq!(count(&before, "ConvTranspose"), 3);
    assert_eq!(count(&after, "ConvTranspose"), 0);
    assert_eq!(count(&after, "Conv"), count(&before, "Conv") + 6);
    for (op, n) in [("Concat", 3), ("Transpose", 3), ("Reshape", 6)] {
        assert_eq!(count(&after, op), count(&before, op) + n, "{op}");
    }
    assert_eq!(after.len(), before.len() - 3 + 3 * 6);
    assert_decodes_as_the_original(parts, &phased, "phase-split decoder");
}

#[test]
fn the_shipped_first_part_runs_its_convolutions_as_2d_ones_and_computes_the_same() {
    let model = shipped_model();
    let parts = split::split(&std::fs::read(&model).unwrap()).unwrap();
    let wrapped = planar::wrap_convs(&parts.encoder).unwrap();
    let options = super::engine::SessionOptions::new("test-planar-first", &settings());
    let mut original = super::engine::session(&options, Ok(&parts.encoder)).unwrap();
    let mut planar_encoder = super::engine::session(&options, Ok(&wrapped)).unwrap();
    let config = PiperVoiceConfig::read(&model.with_extension("onnx.json")).unwrap();
    let (ids, _) = config.phoneme_ids("ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ.");
    let latent = |session: &mut ort::session::Session| {
        let feeds = super::engine::feeds(&config, ids.clone(), [0.0, 1.0, 0.0]).unwrap();
        stream::encode_on(session, &parts.latent, &parts.extra, feeds).unwrap()
    };
    let (reference, rewritten) = (latent(&mut original), latent(&mut planar_encoder));
    assert_eq!(rewritten.frames(), reference.frames());
    let snr = stream::snr_db(reference.data(), rewritten.data());
    eprintln!(
        "2-D first part vs original: {snr:.1} dB over {} frames",
        reference.frames()
    );
    assert!(snr >= 60.0, "{snr:.1} dB");
    // Each wrapped convolution adds one Unsqueeze and one Squeeze; most of the first part's are wrapped.
    let count = |bytes: &[u8], op: &str| ops(bytes).iter().filter(|o| *o == op).count();
    let convs = count(&parts.encoder, "Conv");
    let wrapped_convs = count(&wrapped, "Squeeze") - count(&parts.encoder, "Squeeze");
    assert_eq!(count(&wrapped, "Conv"), convs);
    assert_eq!(
        count(&wrapped, "Unsqueeze") - count(&parts.encoder, "Unsqueeze"),
        wrapped_convs
    );
    assert!(
        wrapped_convs * 10 >= convs * 9,
        "{wrapped_convs} of {convs} convolutions"
    );
}

#[test]
fn sessions_on_the_shared_weights_decode_as_a_session_with_its_own_copy() {
    let model = shipped_model();
    let parts = split::split(&std::fs::read(&model).unwrap()).unwrap();
    let decoder = phases::rewrite(&planar::rewrite(&parts.decoder).unwrap()).unwrap();
    let options = super::engine::SessionOptions::new("test-shared", &settings());
    let weights = shared::Weights::optimise(&decoder, false).unwrap();
    // Nearly all of the decoder's bytes are weights, and nearly all of them are held once, outside the
    // graph (blocked-layout padding can make them a little larger than the original).
    let names = weights.initializer_names();
    assert!(
        weights.bytes() * 10 >= decoder.len() * 9,
        "{} of {} bytes shared, in {} initializers",
        weights.bytes(),
        decoder.len(),
        names.len()
    );

    let encoder = super::engine::session(&options, Ok(&parts.encoder)).unwrap();
    let own = super::engine::session(&options, Ok(&decoder)).unwrap();
    let mut sessions = SplitSessions::new(encoder, own, parts.latent.clone(), parts.extra);
    let config = PiperVoiceConfig::read(&model.with_extension("onnx.json")).unwrap();
    let (ids, _) = config.phoneme_ids("ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ.");
    let latent = sessions
        .encode(super::engine::feeds(&config, ids, [0.0, 1.0, 0.0]).unwrap())
        .unwrap();
    let whole = (0, latent.frames());
    let reference = sessions.decode(&latent, whole, 0).unwrap();
    for _ in 0..2 {
        let mut on_shared = weights.session(&options).unwrap();
        let audio = stream::decode_on(&mut on_shared, &parts.latent, &latent, whole, 0).unwrap();
        assert_eq!(audio.len(), reference.len());
        let snr = stream::snr_db(&reference, &audio);
        assert!(snr >= 100.0, "{snr:.1} dB");
    }
    // A session missing one shared weight does not load (the weights file it names is empty) rather
    // than run with zeros.
    let error = weights.without(names[0]).session(&options).err().unwrap();
    assert!(error.contains(names[0]), "{error}");
}

#[test]
fn the_shipped_voice_loads_with_the_2d_decoder() {
    let model = shipped_model();
    let engine = PiperEngine::load(voice("test-planar-load", &model), &settings()).unwrap();
    assert_eq!(engine.mode(), DecoderMode::Streaming);
    assert_eq!(super::engine::planar_decoder("test-planar-load"), Some(true));
    assert_eq!(
        super::engine::blocked_decoder("test-planar-load"),
        Some(blocked::block_floats().is_some())
    );
}

/// The shipped decoder as ONNX Runtime optimises it, with and without [`blocked`]: the rewrite leaves
/// only the latent's reorder into the blocked layout and the audio's out of it, and the samples are
/// the same.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_shipped_decoder_stays_in_the_blocked_layout_and_computes_the_same() {
    let model = shipped_model();
    let parts = split::split(&std::fs::read(&model).unwrap()).unwrap();
    let decoder = phases::rewrite(&planar::rewrite(&parts.decoder).unwrap()).unwrap();
    let options = super::engine::SessionOptions::new("test-blocked", &settings());
    let reordered = shared::Weights::optimise(&decoder, false).unwrap();
    let blocked = shared::Weights::optimise(&decoder, true).unwrap();
    let reorders = |weights: &shared::Weights| {
        ops(weights.graph())
            .iter()
            .filter(|op| op.starts_with("Reorder"))
            .count()
    };
    let before = reorders(&reordered);
    eprintln!(
        "reorders: {before} in ONNX Runtime's graph, {} after the rewrite",
        reorders(&blocked)
    );
    assert_eq!(reorders(&blocked), 2, "only the latent's and the audio's");
    assert_eq!(blocked.reorders_removed(), before - 2);

    let encoder = super::engine::session(&options, Ok(&parts.encoder)).unwrap();
    let own = super::engine::session(&options, Ok(&decoder)).unwrap();
    let mut sessions = SplitSessions::new(encoder, own, parts.latent.clone(), parts.extra);
    let config = PiperVoiceConfig::read(&model.with_extension("onnx.json")).unwrap();
    let (ids, _) = config.phoneme_ids(&"ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ. ".repeat(3));
    let latent = sessions
        .encode(super::engine::feeds(&config, ids, [0.0, 1.0, 0.0]).unwrap())
        .unwrap();
    let mut on_reordered = reordered.session(&options).unwrap();
    let mut on_blocked = blocked.session(&options).unwrap();
    // Short and long windows, with context on both sides, as the engine cuts them.
    for (window, overlap) in [
        ((0, 24), 0),
        ((24, 96), OVERLAP_FRAMES),
        ((0, latent.frames()), 0),
    ] {
        let expected = stream::decode_on(&mut on_reordered, &parts.latent, &latent, window, overlap).unwrap();
        let audio = stream::decode_on(&mut on_blocked, &parts.latent, &latent, window, overlap).unwrap();
        assert_eq!(audio.len(), expected.len());
        let snr = stream::snr_db(&expected, &audio);
        assert!(snr >= 100.0, "window {window:?}: {snr:.1} dB");
    }
}

/// A blocked-layout graph that does not compute what the decoder does (here: blocks of the wrong size)
/// fails the first-load check, and the voice loads with ONNX Runtime's own graph, still 2-D.
#[test]
fn a_blocked_layout_rewrite_that_does_not_match_falls_back_to_onnx_runtimes_graph() {
    let model = shipped_model();
    blocked::BLOCK_FLOATS.set(Some(4));
    let loaded = PiperEngine::load(voice("test-blocked-wrong", &model), &settings());
    blocked::BLOCK_FLOATS.set(None);
    let mut engine = loaded.unwrap();
    assert_eq!(engine.mode(), DecoderMode::Streaming);
    assert_eq!(super::engine::planar_decoder("test-blocked-wrong"), Some(true));
    assert_eq!(super::engine::blocked_decoder("test-blocked-wrong"), Some(false));
    let mut reference = PiperEngine::load(voice("test-blocked-right", &model), &settings()).unwrap();
    let (audio, expected) = (
        synthesize(&mut engine, "Good morning."),
        synthesize(&mut reference, "Good morning."),
    );
    assert_eq!(audio.len(), expected.len());
    assert!(stream::snr_db(&expected, &audio) >= 100.0);
}

/// The operator of every node of `model`, sorted.
fn ops(model: &[u8]) -> Vec<String> {
    let fields = wire::fields(model).unwrap();
    let graph = wire::fields(
        split::single(&fields, onnx::MODEL_GRAPH, "graph")
            .unwrap()
            .payload,
    )
    .unwrap();
    let mut ops: Vec<String> = graph
        .iter()
        .filter(|f| f.number == onnx::GRAPH_NODE)
        .map(|f| {
            let node = wire::fields(f.payload).unwrap();
            node.iter()
                .find(|n| n.number == onnx::NODE_OP_TYPE)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ops.sort();
    ops
}
