use prometheus_client::registry::Registry;
use serde_json::Value;

use super::*;
use crate::logging::{LogFormat, build};

/// A subscriber writing nowhere, with these bounds, and its buffers.
fn subscriber(bounds: RecentConfig) -> (tracing::Dispatch, Recent) {
    let (dispatch, handle, _) = build(LogFormat::Json, "debug", std::io::sink, None, bounds).unwrap();
    (dispatch, handle.recent().clone())
}

fn session(id: &str, utterances: u64) {
    let session = tracing::info_span!("session", session_id = id, "tts.voice" = "v");
    let _entered = session.enter();
    for n in 0..utterances {
        let utterance = tracing::info_span!(
            "utterance",
            utterance_id = n,
            "tts.outcome" = tracing::field::Empty
        );
        let _entered = utterance.enter();
        tracing::info_span!("synthesize", "tts.characters" = 12_u64).in_scope(|| {
            tracing::info!(chunk = n, "Chunk synthesised.");
        });
        utterance.record("tts.outcome", "completed");
    }
    tracing::warn!("Session ending.");
}

#[test]
fn spans_form_traces_per_session_and_logs_carry_the_session() {
    let (dispatch, recent) = subscriber(RecentConfig::default());
    tracing::dispatcher::with_default(&dispatch, || {
        session("ws-aaa", 2);
        session("ws-bbb", 1);
        tracing::debug!(target: "other::module", "Outside any session.");
    });

    let all = recent.traces().query(&TraceQuery::default()).unwrap();
    assert_eq!(all.len(), 2, "one trace per session: {all:#?}");
    let first = &all[1];
    assert_eq!(first.session_id.as_deref(), Some("ws-aaa"));
    let names: Vec<&str> = first.spans.iter().map(|h| h.span.name).collect();
    assert_eq!(names.iter().filter(|n| **n == "utterance").count(), 2);
    assert_eq!(names.iter().filter(|n| **n == "synthesize").count(), 2);
    let root = first.spans.iter().find(|h| h.span.name == "session").unwrap();
    assert_eq!(root.span.parent_span_id, None);
    for held in &first.spans {
        let span = &held.span;
        assert_eq!(span.session_id.as_deref(), Some("ws-aaa"), "inherited: {span:?}");
        assert_eq!(format!("{:032x}", span.trace_id), first.trace_id);
        if span.name == "utterance" {
            assert_eq!(span.parent_span_id, Some(root.span.span_id));
            assert!(
                span.attributes
                    .contains(&("tts.outcome", Value::from("completed")))
            );
        }
    }

    let by_id = TraceQuery {
        trace_id: Some(first.trace_id.clone()),
        ..TraceQuery::default()
    };
    assert_eq!(recent.traces().query(&by_id).unwrap().len(), 1);
    let by_session = TraceQuery {
        session_id: Some("ws-bbb".into()),
        ..TraceQuery::default()
    };
    let other = recent.traces().query(&by_session).unwrap();
    assert_eq!(other.len(), 1);
    assert_ne!(other[0].trace_id, first.trace_id);
    let limited = TraceQuery {
        limit: Some(1),
        ..TraceQuery::default()
    };
    assert_eq!(
        recent.traces().query(&limited).unwrap()[0].trace_id,
        other[0].trace_id
    );

    let logs = recent.logs();
    let of_aaa = logs
        .query(&LogQuery {
            session_id: Some("ws-aaa".into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(of_aaa.len(), 3, "two chunks and the ending");
    for held in &of_aaa {
        let (trace_id, _) = held.record.trace.unwrap();
        assert_eq!(format!("{trace_id:032x}"), first.trace_id);
    }
    let line = serde_json::to_value(&of_aaa[0]).unwrap();
    assert_eq!(line["message"], "Chunk synthesised.");
    assert_eq!(line["session_id"], "ws-aaa");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["trace_id"], first.trace_id.as_str());
    let warnings = logs
        .query(&LogQuery {
            level: Some("warn".into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(warnings.len(), 2);
    let other_target = logs
        .query(&LogQuery {
            target: Some("other".into()),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(other_target.len(), 1);
    let after = logs
        .query(&LogQuery {
            after: Some(other_target[0].seq - 1),
            ..LogQuery::default()
        })
        .unwrap();
    assert_eq!(after.len(), 1);
}

#[test]
fn both_buffers_stay_within_their_bounds_under_a_flood() {
    let bounds = RecentConfig {
        max_spans: 500,
        max_span_bytes: 64 * 1024,
        max_logs: 300,
        max_log_bytes: 48 * 1024,
    };
    let (dispatch, recent) = subscriber(bounds);
    let mut registry = Registry::default();
    recent.register(&mut registry, "tts");
    let sessions = 400;
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let dispatch = dispatch.clone();
            scope.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for n in 0..sessions / 4 {
                        session(&format!("ws-{thread}-{n}"), 3);
                    }
                });
            });
        }
    });
    // Per session: 1 + 3 × 2 spans and 3 + 1 log records.
    let (spans_made, logs_made) = (sessions * 7, sessions * 4);
    let traces = recent.traces().stats();
    let logs = recent.logs().stats();
    for (stats, made) in [(traces, spans_made), (logs, logs_made)] {
        assert!(stats.records <= stats.max_records, "{stats:?}");
        assert!(stats.bytes <= stats.max_bytes, "{stats:?}");
        assert!(stats.records > 0, "{stats:?}");
        assert_eq!(
            stats.records as u64 + stats.evicted_records + stats.rejected_records,
            made as u64,
            "{stats:?}"
        );
    }
    let text = crate::exposition::encode(&registry, crate::exposition::Exposition::PrometheusText).unwrap();
    let evicted = format!(
        "tts_recent_buffer_evicted_records_total{{buffer=\"spans\"}} {}",
        traces.evicted_records
    );
    assert!(text.contains(&evicted), "{text}");
    let held = format!("tts_recent_buffer_records{{buffer=\"logs\"}} {}", logs.records);
    assert!(text.contains(&held), "{text}");
    // The newest survive.
    let newest = recent.logs().query(&LogQuery::default()).unwrap();
    assert_eq!(newest.last().unwrap().record.message, "Session ending.");
}
