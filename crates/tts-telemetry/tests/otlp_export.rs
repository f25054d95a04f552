//! Spans go to a real OTLP/gRPC receiver (in-process), keep their parent links across threads, and share
//! their ids with the JSON log lines written inside them.
#![allow(clippy::unwrap_used)]

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;
use tts_telemetry::recent::{LogQuery, TraceQuery};
use tts_telemetry::{
    LogFormat, LogHandle, OtelGuard, TracingConfig, build_subscriber_with_tracing,
    set_parent_from_traceparent, trace_ids,
};
use tts_test_support::{OtlpSink, ReceivedSpan};

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn json_lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

fn traced(sink: &OtlpSink, captured: &Captured) -> (tracing::Dispatch, OtelGuard) {
    let (dispatch, _handle, guard) = traced_with_handle(sink, captured);
    (dispatch, guard)
}

fn traced_with_handle(sink: &OtlpSink, captured: &Captured) -> (tracing::Dispatch, LogHandle, OtelGuard) {
    let config = TracingConfig {
        otlp_endpoint: Some(sink.endpoint()),
        service_name: "ttsd-test".into(),
        ..TracingConfig::default()
    };
    let (dispatch, handle, guard) =
        build_subscriber_with_tracing(LogFormat::Json, "info", captured.clone(), &config).unwrap();
    (dispatch, handle, guard.expect("an endpoint turns export on"))
}

/// Flushes off the async workers: the exporter's gRPC channel runs on them.
async fn flush(guard: OtelGuard) {
    tokio::task::spawn_blocking(move || drop(guard)).await.unwrap();
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_parent_links_and_match_the_log_lines() {
    let sink = OtlpSink::start().await.unwrap();
    let captured = Captured::default();
    let (dispatch, handle, guard) = traced_with_handle(&sink, &captured);

    let parent_ids = tracing::dispatcher::with_default(&dispatch, || {
        let session = tracing::info_span!("session", session_id = "s-42", voice = "lessac");
        let _entered = session.enter();
        tracing::info!("Session started.");
        // The exporter's own crates are never traced (they would feed themselves).
        tracing::info_span!(target: "h2::proto", "poll").in_scope(|| {});
        std::thread::scope(|scope| {
            scope.spawn(|| {
                tracing::dispatcher::with_default(&dispatch, || {
                    let synth = tracing::info_span!(parent: &session, "synthesis", chars = 12_u64);
                    synth.in_scope(|| tracing::info!(frames = 3, "Synthesised."));
                });
            });
        });
        trace_ids(&session).expect("a traced span has ids")
    });
    flush(guard).await;

    let spans = sink
        .wait_for(|spans| spans.len() >= 2, Duration::from_secs(10))
        .await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let session = named(&spans, "session");
    let synth = named(&spans, "synthesis");
    assert_eq!(
        (&session.trace_id, &session.span_id),
        (&parent_ids.0, &parent_ids.1)
    );
    assert!(session.parent_span_id.is_empty(), "{session:?}");
    assert_eq!(synth.trace_id, session.trace_id);
    assert_eq!(synth.parent_span_id, session.span_id);
    assert_eq!(session.attributes["session_id"], "s-42");
    assert_eq!(session.attributes["voice"], "lessac");
    assert_eq!(synth.attributes["chars"], "12");
    assert_eq!(session.service_name, "ttsd-test");
    assert_eq!(synth.events[0].0, "Synthesised.");
    assert_eq!(synth.events[0].1["frames"], "3");
    assert!(session.start_time_unix_nano <= synth.start_time_unix_nano);
    assert!(synth.end_time_unix_nano <= session.end_time_unix_nano);

    let lines = captured.json_lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0]["message"], "Session started.");
    assert_eq!(lines[0]["trace_id"], session.trace_id.as_str());
    assert_eq!(lines[0]["span_id"], session.span_id.as_str());
    assert_eq!(lines[1]["message"], "Synthesised.");
    assert_eq!(lines[1]["trace_id"], session.trace_id.as_str());
    assert_eq!(lines[1]["span_id"], synth.span_id.as_str());
    assert_eq!(lines[1]["session_id"], "s-42");

    // The recent-span buffer holds the same ids the collector received, and the exporter's own span
    // is in neither.
    let held = handle.recent().traces().query(&TraceQuery::default()).unwrap();
    assert_eq!(held.len(), 1, "{held:#?}");
    assert_eq!(held[0].trace_id, session.trace_id);
    let mut held_ids: Vec<(String, Option<String>)> = held[0]
        .spans
        .iter()
        .map(|h| {
            (
                format!("{:016x}", h.span.span_id),
                h.span.parent_span_id.map(|id| format!("{id:016x}")),
            )
        })
        .collect();
    held_ids.sort();
    let mut received: Vec<(String, Option<String>)> = spans
        .iter()
        .map(|s| {
            (
                s.span_id.clone(),
                Some(s.parent_span_id.clone()).filter(|p| !p.is_empty()),
            )
        })
        .collect();
    received.sort();
    assert_eq!(held_ids, received);
    let logs = handle.recent().logs().query(&LogQuery::default()).unwrap();
    let log_trace_ids: Vec<String> = logs
        .iter()
        .map(|l| format!("{:032x}", l.record.trace.unwrap().0))
        .collect();
    assert_eq!(
        log_trace_ids,
        [session.trace_id.clone(), session.trace_id.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_makes_the_span_join_the_callers_trace() {
    let sink = OtlpSink::start().await.unwrap();
    let captured = Captured::default();
    let (dispatch, guard) = traced(&sink, &captured);

    let (joined, fresh) = tracing::dispatcher::with_default(&dispatch, || {
        let joined = tracing::info_span!("joined");
        assert!(set_parent_from_traceparent(
            &joined,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        let fresh = tracing::info_span!("fresh");
        assert!(!set_parent_from_traceparent(&fresh, "00-not-a-trace-01"));
        let ids = (trace_ids(&joined).unwrap(), trace_ids(&fresh).unwrap());
        // Too late: the span has started.
        assert!(!set_parent_from_traceparent(
            &joined,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        ids
    });
    assert_eq!(joined.0, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(fresh.0, joined.0);
    flush(guard).await;

    let spans = sink
        .wait_for(|spans| spans.len() >= 2, Duration::from_secs(10))
        .await;
    let remote_child = named(&spans, "joined");
    assert_eq!(remote_child.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(remote_child.parent_span_id, "00f067aa0ba902b7");
    assert!(named(&spans, "fresh").parent_span_id.is_empty());
}

#[test]
fn without_an_endpoint_nothing_is_traced() {
    let captured = Captured::default();
    let (dispatch, _handle, guard) = build_subscriber_with_tracing(
        LogFormat::Json,
        "info",
        captured.clone(),
        &TracingConfig::default(),
    )
    .unwrap();
    assert!(guard.is_none());
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("session");
        assert!(!set_parent_from_traceparent(
            &span,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert_eq!(trace_ids(&span), None);
        span.in_scope(|| tracing::info!("Untraced."));
    });
    let line = &captured.json_lines()[0];
    assert!(
        line.get("trace_id").is_none() && line.get("span_id").is_none(),
        "{line}"
    );
}

#[test]
fn export_needs_a_runtime_and_a_plain_http_endpoint() {
    let config = TracingConfig {
        otlp_endpoint: Some("http://127.0.0.1:4317".into()),
        ..TracingConfig::default()
    };
    let error = build_subscriber_with_tracing(LogFormat::Json, "info", io::sink, &config).unwrap_err();
    assert!(matches!(error, tts_telemetry::LoggingError::NoRuntime), "{error}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let config = TracingConfig {
        otlp_endpoint: Some("https://collector:4317".into()),
        ..TracingConfig::default()
    };
    let error = build_subscriber_with_tracing(LogFormat::Json, "info", io::sink, &config).unwrap_err();
    assert!(
        matches!(error, tts_telemetry::LoggingError::TraceExport { .. }),
        "{error}"
    );
}
