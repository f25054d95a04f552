//! Engine throughput without a server: N threads, each with its own instance of the shipped Piper voice,
//! synthesise the bench's sentences for a while; prints CPU seconds per second of audio (the engine's
//! real-time factor on a busy machine), the same figure `ttsd bench` capacity comes down to.
//!
//! cargo run --release -p tts-core --example piper_throughput -- [threads] [seconds] [arena:0|1] [first:0|1] [shared:0|1] [blocked:0|1]
//! `first = 1` decodes every sentence as an utterance's first chunk (small first windows), 0 as a later
//! chunk (one window up to 256 frames); `shared = 0` gives each thread's sessions their own copy of the
//! weights (`onnx_share_weights = false`); `blocked = 0` keeps ONNX Runtime's layout reorders
//! (`onnx_blocked_layout = false`).

use std::time::{Duration, Instant};

use tts_core::engine::{self, EngineSettings, Flow};

#[path = "support/shipped_voice.rs"]
mod shipped_voice;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const TEXTS: [&str; 7] = [
    "The quick brown fox jumps over the lazy dog.",
    "Please hold while I check the schedule for tomorrow morning.",
    "Observability means you can answer new questions without shipping new code.",
    "Our service turns short pieces of text into speech for phone menus and alerts.",
    "Each request carries a voice name and the words to say, and the answer streams back as audio.",
    "When traffic rises, operators watch the latency graphs and the queue depth before adding machines.",
    "Tonight the scheduled backup job starts at eleven o'clock, so please keep all of your recorded messages brief, friendly and clear.",
];

#[allow(unsafe_code)]
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (threads, seconds, arena, first) = (arg(1, 2) as usize, arg(2, 20), arg(3, 0) == 1, arg(4, 1) == 1);
    let (shared, blocked) = (arg(5, 1) == 1, arg(6, 1) == 1);
    let voice = shipped_voice::shipped_voice();
    let settings = EngineSettings {
        onnx_cpu_arena: arena,
        onnx_share_weights: shared,
        onnx_blocked_layout: blocked,
        ..EngineSettings::default()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let handles: Vec<_> = (0..threads)
        .map(|index| {
            let (voice, settings) = (voice.clone(), settings.clone());
            std::thread::spawn(move || {
                let mut engine = engine::load(&voice, &settings).expect("voice");
                let mut samples = 0usize;
                let run = |engine: &mut Box<dyn engine::Engine>, text: &str, samples: &mut usize| {
                    engine.set_first_chunk(first);
                    engine
                        .synthesize(text, &mut |pcm| {
                            *samples += pcm.len();
                            Flow::Continue
                        })
                        .expect("synthesis");
                };
                for text in TEXTS {
                    run(&mut engine, text, &mut 0);
                }
                while Instant::now() < deadline {}
                let (cpu, wall) = (thread_cpu(), Instant::now());
                let end = wall + Duration::from_secs(seconds);
                let mut i = index;
                while Instant::now() < end {
                    run(&mut engine, TEXTS[i % TEXTS.len()], &mut samples);
                    i += 1;
                }
                (
                    thread_cpu() - cpu,
                    wall.elapsed().as_secs_f64(),
                    samples as f64 / 22_050.0,
                )
            })
        })
        .collect();
    let results: Vec<(f64, f64, f64)> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
    let (cpu, audio): (f64, f64) = results.iter().fold((0.0, 0.0), |(c, a), r| (c + r.0, a + r.2));
    let wall = results.iter().map(|r| r.1).fold(0.0, f64::max);
    println!(
        "threads {threads} arena {arena} first {first} shared {shared} blocked {blocked}: audio {audio:.1} s in {wall:.1} s wall, cpu {cpu:.1} s => cpu/audio {:.4}, wall/audio per thread {:.4}",
        cpu / audio,
        wall * threads as f64 / audio
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
    {
        println!("{line}");
    }
}
