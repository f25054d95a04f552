//! What the always-on buffers of recent spans and log records cost (`tts_telemetry::recent`):
//!
//! - `push_log` / `push_span`: adding one typical record to a full buffer (so every push also evicts),
//!   the buffers' own work;
//! - `log_line` / `span`: one log line inside a session span, and one span with four attributes created
//!   and closed, through the production JSON subscriber at `info` writing to a sink: everything a line or
//!   span costs now, buffers included.
//!
//! `docs/performance.md` puts these next to the per-chunk span cost of `benches/tracing.rs`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::Value;
use tts_telemetry::recent::{LogRecord, SpanRecord};
use tts_telemetry::{LogFormat, Recent, RecentConfig, build_subscriber};

fn full(config: RecentConfig) -> Recent {
    let recent = Recent::new(config);
    for n in 0..config.max_logs {
        recent.logs().record(log_record(n as u64));
    }
    for n in 0..config.max_spans {
        recent.traces().record(span_record(n as u64));
    }
    recent
}

fn log_record(n: u64) -> LogRecord {
    LogRecord {
        unix_micros: 1_767_225_600_000_000 + n,
        level: tracing::Level::INFO,
        target: "tts_gateway::session",
        message: "Utterance finished.".to_owned(),
        trace: Some((u128::from(n) << 64 | 7, n | 1)),
        fields: vec![
            ("session_id", Value::from("ws-0123456789ab")),
            ("utterance_id", Value::from(n)),
            ("voice", Value::from("en_US-joe-medium")),
            ("frames", Value::from(120)),
        ],
    }
}

fn span_record(n: u64) -> SpanRecord {
    SpanRecord {
        trace_id: u128::from(n) << 64 | 7,
        span_id: n | 1,
        parent_span_id: Some(3),
        name: "synthesize",
        target: "tts_core::pool",
        level: tracing::Level::INFO,
        start_unix_micros: 1_767_225_600_000_000 + n,
        duration: Duration::from_micros(180),
        session_id: Some("ws-0123456789ab".to_owned()),
        attributes: vec![
            ("tts.engine", Value::from("piper")),
            ("tts.voice", Value::from("en_US-joe-medium")),
            ("tts.characters", Value::from(64)),
            ("tts.queue_wait_ms", Value::from(0.4)),
        ],
    }
}

fn buffers(c: &mut Criterion) {
    let recent = full(RecentConfig::default());
    let mut group = c.benchmark_group("recent");
    group.bench_function("push_log", |b| {
        b.iter_batched(
            || log_record(1),
            |r| recent.logs().record(r),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("push_span", |b| {
        b.iter_batched(
            || span_record(1),
            |r| recent.traces().record(r),
            BatchSize::SmallInput,
        )
    });

    let (dispatch, _handle) =
        build_subscriber(LogFormat::Json, "info", std::io::sink).unwrap_or_else(|e| panic!("{e}"));
    tracing::dispatcher::with_default(&dispatch, || {
        let session = tracing::info_span!("session", session_id = "ws-0123456789ab", "tts.voice" = "v");
        let _entered = session.enter();
        group.bench_function("log_line", |b| {
            b.iter(|| tracing::info!(utterance_id = 3_u64, frames = 120_u64, "Utterance finished."))
        });
        group.bench_function("span", |b| {
            b.iter(|| {
                let span = tracing::info_span!(
                    "synthesize",
                    "tts.engine" = "piper",
                    "tts.voice" = "en_US-joe-medium",
                    "tts.characters" = 64_u64,
                    "tts.queue_wait_ms" = tracing::field::Empty,
                );
                span.record("tts.queue_wait_ms", 0.4);
                black_box(span);
            })
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = buffers
}
criterion_main!(benches);
