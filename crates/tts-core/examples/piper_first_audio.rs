//! Where an utterance's first audio goes inside the Piper engine, without a server. The bench's sentences
//! are cut as a session cuts them, and the first chunk of each is synthesised the way a session's first
//! chunk is, `gap_ms` apart (a session idles while its listener hears the utterance before). Two
//! instances of the shipped voice take turns, one with `first_chunk_warm_arena` on and one with it off,
//! so both are measured in the same minutes. For each it prints, p50 / p95 over the runs: the time until
//! the engine first asks its sink whether to go on (espeak-ng phonemes and the voice's first part, before
//! the first decoder window), the time until the first PCM (the first window), and the page faults the
//! process took meanwhile.
//!
//! MALLOC_CONF=... cargo run --release -p tts-core --example piper_first_audio -- [runs] [quiet_threads] [gap_ms]
//! Give it the server's `MALLOC_CONF` (the string in `crates/ttsd/src/main.rs`, without the `prof`
//! options) so freed pages go back to the kernel as the server's do. `quiet_threads > 1` runs the first
//! chunks on the voice's shared multi-threaded sessions, as an otherwise idle server does
//! (`onnx_quiet_intra_threads`).

use std::time::{Duration, Instant};

use tts_core::engine::{self, Engine, EngineError, EngineSettings, FirstChunkScope, Flow};
use tts_core::text::{Segmenter, SegmenterConfig};

/// ttsd's `first_chunk_scope`, the very code it runs.
#[path = "../../ttsd/src/warm.rs"]
mod warm;

#[path = "support/shipped_voice.rs"]
mod shipped_voice;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The sentences `ttsd bench` sends (the last one up to its second sentence).
const TEXTS: [&str; 4] = [
    "The quick brown fox jumps over the lazy dog.",
    "Please hold while I check the schedule for tomorrow morning.",
    "Observability means you can answer new questions without shipping new code.",
    "Our service turns short pieces of text into speech for phone menus and alerts. Each request carries a \
     voice name and the words to say, and the answer streams back as audio.",
];

#[allow(unsafe_code)]
fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is valid, and `usage` is a valid, writable rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_minflt
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() - 1) as f64 * p).round() as usize;
    values[rank]
}

/// `p50 / p95` of `values`, to `decimals` places.
fn spread(values: &mut [f64], decimals: usize) -> String {
    let (p50, p95) = (percentile(values, 0.5), percentile(values, 0.95));
    format!("{p50:5.decimals$} / {p95:5.decimals$}")
}

/// One instance's figures, per sentence: (first part ms, first PCM ms, page faults).
#[derive(Default)]
struct Figures(Vec<[Vec<f64>; 3]>);

impl Figures {
    fn push(&mut self, sentence: usize, figures: [f64; 3]) {
        if self.0.len() <= sentence {
            self.0.resize_with(sentence + 1, Default::default);
        }
        for (kind, value) in figures.into_iter().enumerate() {
            self.0[sentence][kind].push(value);
        }
    }

    fn print(&mut self, name: &str, firsts: &[String]) {
        println!("{name}");
        let mut all = [Vec::new(), Vec::new(), Vec::new()];
        for (text, figures) in firsts.iter().zip(&mut self.0) {
            let (part, pcm) = (spread(&mut figures[0], 1), spread(&mut figures[1], 1));
            println!("  {text:<36} first part {part}   first pcm {pcm}");
            for (kind, values) in figures.iter().enumerate() {
                all[kind].extend(values);
            }
        }
        let [part, pcm, faults] = &mut all;
        println!(
            "  all first chunks: first part {}, first pcm {}, page faults {}",
            spread(part, 1),
            spread(pcm, 1),
            spread(faults, 0),
        );
    }
}

/// Synthesises `text` as a first chunk up to its first PCM: (first part ms, first PCM ms, page faults).
fn first_chunk(engine: &mut dyn Engine, text: &str, quiet: bool) -> [f64; 3] {
    engine.set_first_chunk(true);
    engine.set_quiet(quiet);
    let faults = minor_faults();
    let started = Instant::now();
    let (mut asked, mut audio) = (None, None);
    let outcome = engine.synthesize(text, &mut |pcm| {
        if pcm.is_empty() {
            asked.get_or_insert_with(|| started.elapsed());
            Flow::Continue
        } else {
            audio = Some(started.elapsed());
            Flow::Stop
        }
    });
    assert!(
        matches!(outcome, Err(EngineError::Cancelled)),
        "synthesis: {outcome:?}"
    );
    let ms = |at: Option<Duration>| at.expect("the engine reached this point").as_secs_f64() * 1e3;
    [ms(asked), ms(audio), (minor_faults() - faults) as f64]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (runs, quiet_threads, gap) = (arg(1, 10) as usize, arg(2, 2) as usize, arg(3, 2000));
    let voice = shipped_voice::shipped_voice();
    let instance = |warm: bool| {
        let settings = EngineSettings {
            onnx_quiet_intra_threads: quiet_threads,
            first_chunk_scope: warm.then_some(warm::scope as FirstChunkScope),
            ..EngineSettings::default()
        };
        engine::load(&voice, &settings).expect("voice")
    };
    let mut engines = [instance(true), instance(false)];
    let firsts: Vec<String> = TEXTS
        .iter()
        .map(|text| {
            let mut segmenter = Segmenter::new(SegmenterConfig::default());
            segmenter.push(text, true).remove(0).text
        })
        .collect();
    let mut figures = [Figures::default(), Figures::default()];
    // The first round loads what first chunks need; it is not counted.
    for run in 0..=runs {
        for (sentence, text) in firsts.iter().enumerate() {
            for (engine, figures) in engines.iter_mut().zip(&mut figures) {
                std::thread::sleep(Duration::from_millis(gap));
                let measured = first_chunk(engine.as_mut(), text, quiet_threads > 1);
                if run > 0 {
                    figures.push(sentence, measured);
                }
            }
        }
    }
    println!("{runs} runs, quiet threads {quiet_threads}, {gap} ms apart; ms and page faults p50 / p95");
    figures[0].print("first_chunk_warm_arena = true", &firsts);
    figures[1].print("first_chunk_warm_arena = false", &firsts);
}
