//! What spans cost per unit of work, in process CPU time (every thread, so the OTLP batch exporter's
//! encoding and gRPC sends count), under the three ways ttsd runs:
//!
//! - `no_subscriber`: nothing consumes spans (the floor);
//! - `logs_only`: the production JSON log subscriber at `info`, OpenTelemetry export off (ttsd's default);
//! - `export_100_percent`: the same plus OTLP/gRPC export of every span to a real receiver on loopback. The
//!   receiver runs in this process, so its decoding is counted too: an upper bound.
//!
//! One unit is the span set the server makes for one synthesised chunk: a chunk span and its inference span
//! under a long-lived request span, with the same number of attributes (some recorded after creation). Also:
//! `profile_section` with profiling off, which the warm-up path calls.
//! `docs/performance.md` turns these into a share of the server's CPU per second of audio.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tts_telemetry::{LogFormat, TracingConfig, build_subscriber, build_subscriber_with_tracing};

/// CPU time of the whole process (all threads).
fn process_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the pointer, which points to a live local of
    // that exact type; CLOCK_PROCESS_CPUTIME_ID is supported on every Linux this builds for.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The spans of one chunk, shaped like the server's (`utterance` → `synthesize` → `inference`).
fn one_chunk(request: &tracing::Span, chunk: u64) {
    let work = tracing::info_span!(
        parent: request,
        "utterance",
        utterance_id = chunk,
        "tts.engine" = "espeak",
        "tts.voice" = "espeak-en-us",
        "tts.first_audio_ms" = tracing::field::Empty,
        "tts.frames" = tracing::field::Empty,
        "tts.outcome" = tracing::field::Empty,
        "otel.status_code" = tracing::field::Empty,
    );
    let synthesize = tracing::info_span!(
        parent: &work,
        "synthesize",
        session_id = "ws-0123456789ab",
        utterance_id = chunk,
        "tts.engine" = "espeak",
        "tts.voice" = "espeak-en-us",
        "tts.characters" = 64,
        "tts.audio_seconds" = tracing::field::Empty,
        "tts.real_time_factor" = tracing::field::Empty,
    );
    {
        let _entered = synthesize.enter();
        let inference = tracing::info_span!("inference", "tts.engine" = "espeak");
        let _inference = inference.enter();
        black_box(chunk);
    }
    synthesize.record("tts.audio_seconds", 3.1);
    synthesize.record("tts.real_time_factor", 0.004);
    work.record("tts.first_audio_ms", 4.2);
    work.record("tts.frames", 155);
    work.record("tts.outcome", "completed");
}

/// Runs `iters` units of `work` under `dispatch` inside a long-lived request span; returns the process
/// CPU they took (plus the export they caused, when `flush` waits for it).
fn measure(
    dispatch: &tracing::Dispatch,
    iters: u64,
    work: fn(&tracing::Span, u64),
    flush: &dyn Fn(),
) -> Duration {
    tracing::dispatcher::with_default(dispatch, || {
        let request = tracing::info_span!("session", session_id = "ws-0123456789ab", "tts.endpoint" = "v1");
        let started = process_cpu();
        for unit in 0..iters {
            work(&request, unit);
        }
        drop(request);
        flush();
        process_cpu() - started
    })
}

/// A session's tasks run instrumented with its span: every poll enters and leaves it (about one poll per
/// 20 ms frame, plus one per engine event).
fn one_poll(request: &tracing::Span, unit: u64) {
    let _entered = request.enter();
    black_box(unit);
}

fn spans(c: &mut Criterion) {
    // Each subscriber is built just before its own runs: building one makes tracing re-evaluate every
    // callsite's interest, which a subscriber built earlier would not see for callsites first hit later.
    let none = tracing::Dispatch::none();
    c.bench_function("chunk_spans_no_subscriber", |b| {
        b.iter_custom(|iters| measure(&none, iters, one_chunk, &|| {}))
    });
    c.bench_function("session_poll_no_subscriber", |b| {
        b.iter_custom(|iters| measure(&none, iters, one_poll, &|| {}))
    });

    let (logs, _handle) = build_subscriber(LogFormat::Json, "info", std::io::sink).expect("log subscriber");
    c.bench_function("chunk_spans_logs_only", |b| {
        b.iter_custom(|iters| measure(&logs, iters, one_chunk, &|| {}))
    });
    c.bench_function("session_poll_logs_only", |b| {
        b.iter_custom(|iters| measure(&logs, iters, one_poll, &|| {}))
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let sink = runtime
        .block_on(tts_test_support::OtlpSink::start())
        .expect("OTLP receiver");
    let config = TracingConfig {
        otlp_endpoint: Some(sink.endpoint()),
        sample_ratio: 1.0,
        ..TracingConfig::default()
    };
    let (exporting, _handle, guard) =
        build_subscriber_with_tracing(LogFormat::Json, "info", std::io::sink, &config).expect("exporter");
    let guard = guard.expect("export is on");
    c.bench_function("chunk_spans_export_100_percent", |b| {
        b.iter_custom(|iters| measure(&exporting, iters, one_chunk, &|| guard.flush()))
    });
    c.bench_function("session_poll_export_100_percent", |b| {
        b.iter_custom(|iters| measure(&exporting, iters, one_poll, &|| guard.flush()))
    });
    let received = sink.spans().len();
    assert!(received > 0, "the receiver got the exported spans");
    println!("OTLP receiver got {received} spans");

    c.bench_function("profile_section_profiling_off", |b| {
        b.iter(|| drop(black_box(tts_telemetry::profile_section("warm_up"))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = spans
}
criterion_main!(benches);
