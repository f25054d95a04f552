//! Traces: a real OTLP receiver in the test, the real binary exporting to it, a client over a real socket.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use tts_test_support::{Event, OtlpSink, ReceivedSpan, http_get, http_request};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn by_id<'a>(spans: &'a [ReceivedSpan], id: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.span_id == id)
        .unwrap_or_else(|| panic!("no span {id}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_form_a_tree_per_session_join_the_clients_trace_and_match_logs_and_exemplars() {
    let sink = OtlpSink::start().await.unwrap();
    let server = start_espeak(&["--otlp-endpoint", &sink.endpoint()]);

    // Session 1: its own trace; one utterance and a STOP.
    let (mut own, start) = connect(&server, "/v1/stream").await;
    let Event::SessionStart { session_id, .. } = start else {
        unreachable!()
    };
    own.send_text("The first trace speaks.", true).await.unwrap();
    read_utterance(&mut own).await;
    own.send_text(LONG_TEXT, true).await.unwrap();
    while !matches!(own.next(WAIT).await.unwrap().event, Event::Audio { .. }) {}
    own.send_control("STOP").await.unwrap();
    read_utterance(&mut own).await;
    own.close().await;

    // Session 2: joins the client's trace through the traceparent query parameter.
    let path = format!("/v1/stream?traceparent=00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (mut joined, joined_start) = connect(&server, &path).await;
    let Event::SessionStart {
        session_id: joined_id,
        ..
    } = joined_start
    else {
        unreachable!()
    };
    joined
        .send_text("Joined to the client's trace.", true)
        .await
        .unwrap();
    read_utterance(&mut joined).await;
    joined.close().await;

    let spans = sink
        .wait_for(
            |s| s.iter().filter(|s| s.name == "session").count() >= 2,
            Duration::from_secs(20),
        )
        .await;
    let sessions: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "session").collect();
    assert_eq!(sessions.len(), 2, "one session span per session: {spans:#?}");
    let own_session = sessions
        .iter()
        .find(|s| s.attributes.get("session_id") == Some(&session_id))
        .unwrap();
    assert!(
        own_session.parent_span_id.is_empty(),
        "a session without traceparent is a root"
    );
    assert_eq!(own_session.service_name, "ttsd");
    let joined_session = sessions
        .iter()
        .find(|s| s.trace_id == CLIENT_TRACE)
        .expect("joined the client's trace");
    assert_eq!(joined_session.parent_span_id, CLIENT_SPAN);
    assert_ne!(own_session.trace_id, CLIENT_TRACE);

    // session → utterance → synthesize → inference, with the documented attributes.
    let utterances: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == "utterance" && s.trace_id == own_session.trace_id)
        .collect();
    assert_eq!(utterances.len(), 2);
    for utterance in &utterances {
        assert_eq!(utterance.parent_span_id, own_session.span_id);
        assert_eq!(
            utterance.attributes.get("tts.voice").map(String::as_str),
            Some(ESPEAK)
        );
    }
    let outcomes: Vec<&str> = utterances
        .iter()
        .filter_map(|u| u.attributes.get("tts.outcome").map(String::as_str))
        .collect();
    assert!(
        outcomes.contains(&"completed") && outcomes.contains(&"stopped"),
        "{outcomes:?}"
    );
    assert!(
        utterances
            .iter()
            .any(|u| u.attributes.contains_key("tts.first_audio_ms"))
    );
    let synth: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == "synthesize" && s.trace_id == own_session.trace_id)
        .collect();
    assert!(!synth.is_empty());
    for s in &synth {
        let parent = by_id(&spans, &s.parent_span_id);
        assert_eq!(parent.name, "utterance");
        for key in ["tts.engine", "tts.voice", "tts.characters", "tts.queue_wait_ms"] {
            assert!(
                s.attributes.contains_key(key),
                "synthesize lacks {key}: {:?}",
                s.attributes
            );
        }
    }
    assert!(
        synth
            .iter()
            .any(|s| s.attributes.contains_key("tts.real_time_factor"))
    );
    let inference = spans
        .iter()
        .find(|s| s.name == "inference" && s.trace_id == own_session.trace_id)
        .unwrap();
    assert_eq!(by_id(&spans, &inference.parent_span_id).name, "synthesize");
    let control = spans
        .iter()
        .find(|s| s.name == "control" && s.trace_id == own_session.trace_id)
        .unwrap();
    assert_eq!(
        control.attributes.get("tts.command").map(String::as_str),
        Some("STOP")
    );
    assert!(control.attributes.contains_key("tts.barge_in_ms"));

    // The same trace id in the JSON logs and in an exemplar on /metrics (OpenMetrics).
    let logs = server.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains(&own_session.trace_id) && l.contains(&session_id)),
        "no log line carries the session's trace_id"
    );
    let metrics = http_request(
        "GET",
        &server.admin_base,
        "/metrics",
        Some("application/openmetrics-text"),
        None,
    )
    .unwrap()
    .body;
    // A bucket's exemplar is its latest observation, so the joined session (the last first audio) is
    // always there; an earlier session's is there unless a later one landed in the same bucket.
    let exemplars: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("tts_first_audio_seconds_bucket"))
        .filter_map(|l| l.split("trace_id=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(
        exemplars.contains(&CLIENT_TRACE),
        "no first-audio exemplar with the joined session's trace id: {exemplars:?}"
    );
    assert!(
        exemplars
            .iter()
            .all(|t| *t == CLIENT_TRACE || *t == own_session.trace_id),
        "a first-audio exemplar from no session of this test: {exemplars:?}"
    );

    // /admin/traces holds the very ids the collector received, and /admin/logs the sessions' lines.
    assert_buffers_agree(
        &server.admin_base,
        &spans,
        &[(&session_id, &own_session.trace_id), (&joined_id, CLIENT_TRACE)],
    );
}

/// Every span the collector got is in `/admin/traces` under the same trace and span id, each session's
/// trace is found by its session id, and `/admin/logs?session_id=` returns that session's lines, inside
/// its trace.
fn assert_buffers_agree(admin: &str, received: &[ReceivedSpan], sessions: &[(&str, &str)]) {
    let body = http_get(admin, "/admin/traces?limit=1000").unwrap();
    assert_eq!(body.status, 200, "{}", body.body);
    let traces: serde_json::Value = serde_json::from_str(&body.body).unwrap();
    let held: std::collections::HashSet<(String, String)> = traces["traces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["spans"].as_array().unwrap().iter())
        .map(|s| {
            (
                s["trace_id"].as_str().unwrap().to_owned(),
                s["span_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for span in received {
        assert!(
            held.contains(&(span.trace_id.clone(), span.span_id.clone())),
            "span {} {}/{} reached the collector but not /admin/traces",
            span.name,
            span.trace_id,
            span.span_id
        );
    }
    for (session_id, trace_id) in sessions {
        let body = http_get(admin, &format!("/admin/traces?session_id={session_id}")).unwrap();
        let traces: serde_json::Value = serde_json::from_str(&body.body).unwrap();
        let ids: Vec<&str> = traces["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [*trace_id], "session {session_id}");
        let body = http_get(admin, &format!("/admin/logs?session_id={session_id}")).unwrap();
        let logs: serde_json::Value = serde_json::from_str(&body.body).unwrap();
        let logs = logs["logs"].as_array().unwrap();
        assert!(
            !logs.is_empty(),
            "no log line of session {session_id} in /admin/logs"
        );
        for line in logs {
            assert_eq!(line["session_id"], *session_id, "{line}");
            assert_eq!(line["trace_id"], *trace_id, "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_workers_spans_join_the_gateways_trace() {
    let sink = OtlpSink::start().await.unwrap();
    let endpoint = sink.endpoint();
    let worker = tts_test_support::ServerProcess::start_worker(
        env!("CARGO_BIN_EXE_ttsd"),
        &root(),
        &[
            "--name",
            "traced",
            "--voice",
            ESPEAK,
            "--otlp-endpoint",
            &endpoint,
        ],
    )
    .unwrap();
    let gateway = start_espeak(&["--workers", &worker.grpc_addr, "--otlp-endpoint", &endpoint]);
    let until = tokio::time::Instant::now() + WAIT;
    while tts_test_support::http_get(&gateway.admin_base, "/readiness")
        .unwrap()
        .status
        != 200
    {
        assert!(
            tokio::time::Instant::now() < until,
            "the worker never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut client, start) = connect(&gateway, "/v1/stream").await;
    let Event::SessionStart { session_id, .. } = start else {
        unreachable!()
    };
    client.send_text("Across the hop.", true).await.unwrap();
    read_utterance(&mut client).await;
    client.close().await;

    let spans = sink
        .wait_for(
            |s| s.iter().any(|s| s.name == "worker_chunk") && s.iter().any(|s| s.name == "session"),
            Duration::from_secs(20),
        )
        .await;
    let session = spans.iter().find(|s| s.name == "session").unwrap();
    let chunk = spans.iter().find(|s| s.name == "worker_chunk").unwrap();
    assert_eq!(
        chunk.trace_id, session.trace_id,
        "the worker's span is in the session's trace"
    );
    let parent = by_id(&spans, &chunk.parent_span_id);
    assert_eq!(parent.name, "utterance", "a chunk hangs under its utterance");
    assert_eq!(
        chunk.attributes.get("session_id"),
        Some(&session_id),
        "same session id on both sides"
    );
    let synthesize = spans
        .iter()
        .find(|s| s.name == "synthesize" && s.parent_span_id == chunk.span_id)
        .expect("the worker's synthesize span is a child of its chunk span");
    assert_eq!(synthesize.trace_id, session.trace_id);
}
