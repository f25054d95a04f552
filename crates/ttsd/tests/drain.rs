#![allow(clippy::unwrap_used)]
//! Graceful drain on SIGTERM, end to end with the real binary: readiness fails at once, nothing new is
//! admitted, the utterance already playing plays to its end, and every session ends with a reason.

#[path = "support/common.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use tts_test_support::{Event, http_get};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_open_utterances_and_refuses_new_work() {
    let server = start_espeak(&[]);
    let (mut speaking, _) = connect(&server, "/v1/stream").await;
    let (mut idle, _) = connect(&server, "/v1/stream").await;
    speaking.send_text(LONG_TEXT, true).await.unwrap();
    let mut frames = 0usize;
    while frames < 5 {
        if let Event::Audio { .. } = speaking.next(WAIT).await.unwrap().event {
            frames += 1;
        }
    }
    assert_eq!(http_get(&server.admin_base, "/readiness").unwrap().status, 200);

    let sent = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());

    // Readiness fails at once (bounded wait for the signal to be handled, not a speed assertion).
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(&server.admin_base, "/readiness").unwrap().status != 503 {
        assert!(tokio::time::Instant::now() < deadline, "readiness never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = http_get(&server.admin_base, "/health").unwrap().body;
    assert!(health.contains("shutting down"), "{health}");

    // The idle session has nothing left to play: it ends now, with the reason.
    let ended = loop {
        if let Event::SessionEnd { reason, .. } = idle.next(WAIT).await.unwrap().event {
            break reason;
        }
    };
    assert_eq!(ended, "server_shutdown");

    // A new session is refused with a reason, not a dropped connection.
    let mut late = tts_test_support::StreamClient::connect(&server.url("/v1/stream"))
        .await
        .unwrap();
    let Event::Error { code, message } = late.next(WAIT).await.unwrap().event else {
        panic!("a refused session gets an error first")
    };
    assert_eq!(code, "OVERLOADED");
    assert!(message.contains("shutting down"), "{message}");
    assert!(matches!(
        late.next(WAIT).await.unwrap().event,
        Event::SessionEnd { reason, .. } if reason == "server_shutdown"
    ));

    // Counted while the server drains (the admin port answers until the drain is over).
    let metrics = http_get(&server.admin_base, "/metrics").unwrap().body;
    assert!(
        metrics.contains("tts_sessions_refused_total{reason=\"draining\"} 1"),
        "the refusal is counted"
    );

    // The speaking session may not start a new utterance, but the open one plays to its end.
    speaking.send_text("And one more thing.", true).await.unwrap();
    let mut refused = false;
    let end = loop {
        match speaking.next(WAIT).await.unwrap().event {
            Event::Audio { .. } => frames += 1,
            Event::Error { code, .. } => {
                assert_eq!(code, "OVERLOADED");
                refused = true;
            }
            Event::UtteranceEnd {
                reason,
                frames: total,
                ..
            } => {
                assert_eq!(reason, "completed", "the open utterance is not cut");
                assert_eq!(total as usize, frames, "every frame of it arrived");
            }
            Event::SessionEnd { reason, .. } => break reason,
            _ => {}
        }
    };
    assert!(refused, "new text during the drain is refused");
    assert_eq!(end, "server_shutdown");
    assert!(frames > 100, "a long utterance played: {frames} frames");
    assert_eq!(server.terminate(WAIT), Some(0), "the process exits cleanly");
}
