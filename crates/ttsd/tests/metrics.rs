//! The metrics tell the truth: every catalogued metric checked against what a client with its own clocks
//! saw, over real sockets to the real binary.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use tts_test_support::{Event, Scrape, http_get, http_request};

fn scrape(server: &tts_test_support::ServerProcess) -> Scrape {
    let response = http_get(&server.admin_base, "/metrics").unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response
            .content_type
            .as_deref()
            .unwrap_or("")
            .starts_with("text/plain; version=0.0.4")
    );
    Scrape::parse(&response.body).unwrap()
}

/// What the client measured, to compare with the server's view.
#[derive(Default, Debug)]
struct Seen {
    frames: u64,
    first_audio: Vec<f64>,
    stop_to_end: Vec<f64>,
    utterances_completed: u64,
    utterances_stopped: u64,
    underruns: u64,
    utterances_with_frames: u64,
}

async fn speak(client: &mut tts_test_support::StreamClient, text: &str, seen: &mut Seen) {
    let sent = client.send_text(text, true).await.unwrap();
    let utterance = read_utterance(client).await;
    seen.frames += utterance.frames.len() as u64;
    seen.first_audio
        .push(utterance.frames[0].at.duration_since(sent).as_secs_f64());
    seen.utterances_with_frames += 1;
    let Some(Event::UtteranceEnd {
        reason, underruns, ..
    }) = utterance.end
    else {
        panic!("{:?}", utterance.end)
    };
    assert_eq!(reason, "completed");
    seen.utterances_completed += 1;
    seen.underruns += underruns;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_match_what_the_client_saw() {
    let server = start_espeak(&[]);
    let mut seen = Seen::default();
    let (mut a, _) = connect(&server, "/v1/stream").await;
    for text in [
        "The first utterance of session A.",
        "A second one, with a clause.",
        "And a third.",
    ] {
        speak(&mut a, text, &mut seen).await;
    }

    // Session B: PAUSE (twice) and RESUME inside one utterance, then a STOP, then a bad message.
    let (mut b, _) = connect(&server, "/v1/stream").await;
    let sent = b.send_text(LONG_TEXT, true).await.unwrap();
    let mut frames = Vec::new();
    while frames.len() < 5 {
        let r = b.next(WAIT).await.unwrap();
        if let Event::Audio { .. } = r.event {
            frames.push(r.at);
        }
    }
    seen.first_audio
        .push(frames[0].duration_since(sent).as_secs_f64());
    b.send_control("PAUSE").await.unwrap();
    // A second PAUSE silences nothing: it must not pad the barge-in SLO with a free fast sample.
    b.send_control("PAUSE").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.send_control("RESUME").await.unwrap();
    let rest = read_utterance(&mut b).await;
    seen.frames += frames.len() as u64 + rest.frames.len() as u64;
    seen.utterances_with_frames += 1;
    let Some(Event::UtteranceEnd {
        reason, underruns, ..
    }) = rest.end
    else {
        panic!()
    };
    assert_eq!(reason, "completed");
    seen.utterances_completed += 1;
    seen.underruns += underruns;

    let sent = b.send_text(LONG_TEXT, true).await.unwrap();
    let mut received = 0u64;
    let mut first = None;
    while received < 10 {
        let r = b.next(WAIT).await.unwrap();
        if let Event::Audio { .. } = r.event {
            first.get_or_insert(r.at);
            received += 1;
        }
    }
    seen.first_audio
        .push(first.unwrap().duration_since(sent).as_secs_f64());
    let stop_sent = b.send_control("STOP").await.unwrap();
    let after = read_utterance(&mut b).await;
    let Some(Event::UtteranceEnd { reason, .. }) = &after.end else {
        panic!()
    };
    assert_eq!(reason, "stopped");
    let ended = Instant::now();
    seen.stop_to_end
        .push(ended.duration_since(stop_sent).as_secs_f64());
    seen.frames += received + after.frames.len() as u64;
    seen.utterances_with_frames += 1;
    seen.utterances_stopped += 1;
    b.send_raw(tokio_tungstenite::tungstenite::Message::Text("not json".into()))
        .await
        .unwrap();
    assert!(matches!(b.next(WAIT).await.unwrap().event, Event::Error { .. }));
    a.close().await;
    b.close().await;

    // Wait until both sessions are accounted as ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(&server);
        if m.sum("tts_sessions_ended_total", &[]) == 2.0 || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Counts are exact.
    assert_eq!(m.sum("tts_sessions_started_total", &[("endpoint", "v1")]), 2.0);
    assert_eq!(
        m.sum("tts_sessions_ended_total", &[("reason", "client_closed")]),
        2.0
    );
    assert_eq!(m.get("tts_sessions_active", &[]), Some(0.0));
    assert_eq!(
        m.sum("tts_websocket_connections_total", &[("endpoint", "v1")]),
        2.0
    );
    assert_eq!(m.sum("tts_session_duration_seconds_count", &[]), 2.0);
    assert_eq!(m.sum("tts_frames_sent_total", &[]), seen.frames as f64);
    assert_eq!(
        m.sum("tts_audio_sent_bytes_total", &[]),
        (seen.frames * 1920) as f64
    );
    assert_eq!(
        m.sum("tts_messages_sent_total", &[("type", "audio")]),
        seen.frames as f64
    );
    assert_eq!(
        m.sum("tts_messages_sent_total", &[("type", "session_start")]),
        2.0
    );
    assert_eq!(
        m.sum("tts_messages_sent_total", &[("type", "utterance_end")]),
        5.0
    );
    assert_eq!(m.sum("tts_messages_sent_total", &[("type", "error")]), 1.0);
    assert_eq!(
        m.sum("tts_errors_sent_total", &[("code", "INVALID_MESSAGE")]),
        1.0
    );
    assert_eq!(m.sum("tts_messages_received_total", &[("type", "text")]), 5.0);
    assert_eq!(m.sum("tts_messages_received_total", &[("type", "control")]), 4.0);
    assert_eq!(m.sum("tts_messages_received_total", &[("type", "invalid")]), 1.0);
    assert_eq!(
        m.sum("tts_utterances_total", &[("outcome", "completed")]),
        seen.utterances_completed as f64
    );
    assert_eq!(
        m.sum("tts_utterances_total", &[("outcome", "stopped")]),
        seen.utterances_stopped as f64
    );
    assert_eq!(m.sum("tts_underruns_total", &[]), seen.underruns as f64);
    assert_eq!(m.sum("tts_barge_in_seconds_count", &[("command", "stop")]), 1.0);
    assert_eq!(m.sum("tts_barge_in_seconds_count", &[("command", "pause")]), 1.0);
    assert_eq!(m.sum("tts_control_seconds_count", &[("command", "resume")]), 1.0);
    // One interval per pair of consecutive frames in an utterance; PAUSE restarts the count once.
    let intervals = seen.frames - seen.utterances_with_frames - 1;
    assert_eq!(m.sum("tts_frame_interval_seconds_count", &[]), intervals as f64);
    assert!(m.sum("tts_engine_tasks_total", &[("outcome", "completed")]) >= 4.0);

    // First audio: the server's clock runs inside the client's (read after send, sent before receipt), and
    // loopback plus parsing explain at most a few milliseconds per utterance (docs/telemetry.md).
    let n = seen.first_audio.len() as f64;
    assert_eq!(m.sum("tts_first_audio_seconds_count", &[]), n);
    let server_sum = m.sum("tts_first_audio_seconds_sum", &[]);
    let client_sum: f64 = seen.first_audio.iter().sum();
    assert!(
        server_sum <= client_sum + 1e-3,
        "server {server_sum:.4} s > client {client_sum:.4} s"
    );
    assert!(
        client_sum - server_sum <= 0.005 * n,
        "server {server_sum:.4} s vs client {client_sum:.4} s"
    );
    let stages = m.sum("tts_first_audio_stage_seconds_sum", &[]);
    assert!(
        (stages - server_sum).abs() < 1e-5,
        "stages {stages} do not add up to first audio {server_sum}"
    );
    // Barge-in: from the server's read of STOP to silence, inside the client's STOP → utterance_end.
    let barge_in = m.sum("tts_barge_in_seconds_sum", &[("command", "stop")]);
    assert!(
        barge_in <= seen.stop_to_end[0] + 1e-3,
        "server barge-in {barge_in} > client {}",
        seen.stop_to_end[0]
    );

    // /metrics/summary agrees with /metrics.
    let summary: serde_json::Value =
        serde_json::from_str(&http_get(&server.admin_base, "/metrics/summary").unwrap().body).unwrap();
    assert_eq!(
        summary["synthesis_total"].as_f64(),
        Some(m.sum("tts_engine_tasks_total", &[("outcome", "completed")]))
    );
    assert_eq!(
        summary["synthesis_errors"].as_f64(),
        Some(m.sum("tts_engine_tasks_total", &[("outcome", "failed")]))
    );
    assert_eq!(
        summary["sessions_active"].as_f64(),
        m.get("tts_sessions_active", &[])
    );
    let violations = m.sum("tts_slo_events_total", &[("result", "bad")]);
    assert_eq!(summary["sla_violations"].as_f64(), Some(violations));
    // Every SLI event was judged: utterances (availability), first audios, barge-ins and intervals.
    let events = |slo: &str| m.sum("tts_slo_events_total", &[("slo", slo)]);
    assert_eq!(events("availability"), 5.0);
    assert_eq!(events("underruns"), 5.0);
    assert_eq!(events("first_audio"), n);
    assert_eq!(events("barge_in"), 2.0);
    assert_eq!(events("frame_pacing"), intervals as f64);
    assert_eq!(
        events("error_rate"),
        m.sum("tts_engine_tasks_total", &[("outcome", "completed")])
            + m.sum("tts_engine_tasks_total", &[("outcome", "failed")])
    );
    let p50 = summary["first_audio_p50_ms"].as_f64().unwrap() / 1000.0;
    let (lo, hi) = seen
        .first_audio
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    assert!(
        p50 <= hi * 1.02 && p50 >= 0.0 && lo >= 0.0,
        "summary p50 {p50} outside what clients saw"
    );
    assert!(summary["session_barge_in_p95_ms"].as_f64().is_some());
    assert_eq!(summary["slo_compliance"]["availability"].as_f64(), Some(1.0));
    // The status is judged against the objectives, not a constant: it agrees with the compliance ratios.
    let breached: Vec<&str> = ["first_audio", "barge_in", "frame_pacing", "availability"]
        .into_iter()
        .filter(|slo| {
            let ratio = summary["slo_compliance"][slo].as_f64();
            let objective = summary["slo"]["objectives"][slo].as_f64().unwrap();
            ratio.is_some_and(|r| r < objective)
        })
        .collect();
    let expected = if breached.is_empty() { "ok" } else { "degraded" };
    assert_eq!(summary["status"], expected, "{summary}");
    assert_eq!(summary["slo_breached"], serde_json::json!(breached));

    // No label value may identify a session, a client or text.
    for sample in &m.samples {
        for (key, value) in &sample.labels {
            let hexy = value.len() >= 8
                && value.chars().filter(|c| c.is_ascii_hexdigit()).count() >= 8
                && value.chars().any(|c| c.is_ascii_digit());
            assert!(
                !value.starts_with("ws-") && !hexy && !value.contains(' '),
                "{}{{{key}={value:?}}} looks like an id or text",
                sample.name
            );
        }
    }
}

/// Rows of the catalogue tables in docs/telemetry.md: (name, emitted by an in-process `ttsd serve`?). The
/// other statuses (`remote`, `worker`, `gpu`) are checked where those parts run (tests/workers.rs).
fn catalogue() -> Vec<(String, bool)> {
    catalogue_rows()
        .into_iter()
        .map(|(name, status)| (name, status == "implemented"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalogue_lists_exactly_the_metrics_emitted() {
    let server = start_espeak(&[]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    client.send_text("Catalogue check.", true).await.unwrap();
    read_utterance(&mut client).await;
    client.send_text(LONG_TEXT, true).await.unwrap();
    while !matches!(client.next(WAIT).await.unwrap().event, Event::Audio { .. }) {}
    client.send_control("STOP").await.unwrap();
    read_utterance(&mut client).await;
    let m = scrape(&server);
    let emitted: std::collections::BTreeSet<String> = m.families.keys().cloned().collect();
    let listed = catalogue();
    assert!(
        listed.len() > 40,
        "catalogue table not found or too small: {}",
        listed.len()
    );
    let listed_names: std::collections::BTreeSet<String> = listed.iter().map(|(n, _)| n.clone()).collect();
    let unlisted: Vec<_> = emitted.iter().filter(|n| !listed_names.contains(*n)).collect();
    assert!(
        unlisted.is_empty(),
        "emitted but not in docs/telemetry.md: {unlisted:?}"
    );
    let missing: Vec<_> = listed
        .iter()
        .filter(|(n, implemented)| *implemented && !emitted.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "in docs/telemetry.md but never emitted: {missing:?}"
    );
}

#[test]
fn promtool_finds_nothing_wrong_with_a_real_scrape() {
    let server = start_espeak(&[]);
    let body = http_get(&server.admin_base, "/metrics").unwrap().body;
    if let Err(findings) = tts_test_support::promtool_check_metrics(&body) {
        panic!("promtool check metrics:\n{findings}");
    }
    let open = http_request(
        "GET",
        &server.admin_base,
        "/metrics",
        Some("application/openmetrics-text"),
        None,
    )
    .unwrap();
    assert!(
        open.body.trim_end().ends_with("# EOF"),
        "OpenMetrics when asked for"
    );
}

#[test]
fn readiness_is_503_until_the_default_voice_is_warm_then_200() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ttsd"))
        .current_dir(root())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--voice",
            PIPER,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let admin = loop {
        let line = lines.next().expect("ttsd prints its admin address").unwrap();
        if let Some(url) = line.strip_prefix("ttsd admin: ") {
            break url.to_owned();
        }
    };
    let gauge_before = Scrape::parse(&http_get(&admin, "/metrics").unwrap().body).unwrap();
    let before = http_get(&admin, "/readiness").unwrap();
    assert_eq!(before.status, 503, "not ready before warm-up: {}", before.body);
    assert_eq!(
        gauge_before.get("tts_ready", &[]),
        Some(0.0),
        "tts_ready follows /readiness"
    );
    assert!(before.body.contains("default_voice"), "{}", before.body);
    assert_eq!(
        http_get(&admin, "/liveness").unwrap().status,
        200,
        "alive while warming"
    );
    let ready_line = lines.next().unwrap().unwrap();
    assert!(ready_line.starts_with("ttsd ready:"), "{ready_line}");
    assert_eq!(http_get(&admin, "/readiness").unwrap().status, 200);
    assert_eq!(http_get(&admin, "/readyz").unwrap().status, 200);
    let gauge_after = Scrape::parse(&http_get(&admin, "/metrics").unwrap().body).unwrap();
    assert_eq!(
        gauge_after.get("tts_ready", &[]),
        Some(1.0),
        "tts_ready follows /readiness"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_is_503_while_the_engine_pool_is_saturated() {
    let server = start(&["--voice", PIPER, "--threads", "1"]);
    assert_eq!(http_get(&server.admin_base, "/readiness").unwrap().status, 200);
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (mut client, _) = connect(&server, "/v1/stream").await;
        client.send_text(LONG_TEXT, true).await.unwrap();
        clients.push(client);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_503 = false;
    while Instant::now() < deadline && !saw_503 {
        saw_503 = http_get(&server.admin_base, "/readiness").unwrap().status == 503;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_503, "readiness never reported the saturated pool");
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&server.admin_base, "/readiness").unwrap().status != 200 {
        assert!(
            Instant::now() < deadline,
            "readiness did not recover once the load was gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn liveness_fails_when_the_heartbeat_stops() {
    let server = start_espeak(&["--test-hooks"]);
    assert_eq!(http_get(&server.admin_base, "/liveness").unwrap().status, 200);
    assert_eq!(
        http_request("POST", &server.admin_base, "/test/freeze-heartbeats", None, None)
            .unwrap()
            .status,
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = http_get(&server.admin_base, "/livez").unwrap();
        if response.status == 503 {
            assert!(response.body.contains("async_runtime"), "{}", response.body);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "liveness never failed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_session_id_from_engine_threads_and_never_the_text() {
    let config = temp_path("debug-logs.toml");
    std::fs::write(&config, "[logging]\nfilter = \"debug\"\nformat = \"json\"\n").unwrap();
    let server = start(&["--voice", PIPER, "--config", config.to_str().unwrap()]);
    let (mut client, start) = connect(&server, "/v1/stream").await;
    let Event::SessionStart { session_id, .. } = start else {
        unreachable!()
    };
    let secret = "My e-mail is jane.doe@example.com and the code word is marmalade.";
    client.send_text(secret, true).await.unwrap();
    read_utterance(&mut client).await;
    client.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = server.logs();
    let mut engine_lines = 0;
    // Warm-up runs before any session; everything after the session's first line is the session's work.
    let first = logs
        .iter()
        .position(|l| l.contains(session_id.as_str()))
        .expect("the session is logged");
    for line in &logs[first..] {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            !line.contains("marmalade") && !line.contains("jane.doe@example.com"),
            "user text in logs: {line}"
        );
        if value["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("tts_core::engine"))
        {
            assert_eq!(
                value["session_id"].as_str(),
                Some(session_id.as_str()),
                "engine-thread line without session_id: {line}"
            );
            engine_lines += 1;
        }
    }
    assert!(
        engine_lines > 0,
        "no engine-thread log lines at debug level:\n{}",
        logs.join("\n")
    );
}
