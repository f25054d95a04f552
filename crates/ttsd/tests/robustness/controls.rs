//! Floods of valid and invalid messages: PAUSE/RESUME storms, controls with nothing to control, a flood
//! of bad messages, too much pending text, too many queued utterances.

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tts_test_support::Event;

use crate::common::{LONG_TEXT, WAIT, assert_frames_well_formed, connect, read_utterance};
use crate::harness::Stand;
use crate::{expect_error, speaks};

/// PAUSE/RESUME pairs in the storm.
const STORM_PAIRS: usize = 300;
/// Repeated PAUSEs while paused.
const PAUSES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_storms_and_repeated_pauses_lose_no_frame_and_count_no_error() {
    let stand = Stand::start("storms", "", &[]).await;
    let before = stand.scrape();
    stand
        .attack("PAUSE/RESUME storm", async {
            let (mut client, _) = connect(&stand.server, "/v1/stream").await;
            client.send_text(LONG_TEXT, true).await.unwrap();
            let mut first = None;
            while first.is_none() {
                if let Event::Audio { sequence, .. } = client.next(WAIT).await.unwrap().event {
                    first = Some(sequence);
                }
            }
            for _ in 0..STORM_PAIRS {
                client.send_control("PAUSE").await.unwrap();
                client.send_control("RESUME").await.unwrap();
            }
            // A PAUSE while paused is accepted and changes nothing, however many arrive.
            for _ in 0..PAUSES {
                client.send_control("PAUSE").await.unwrap();
            }
            client.send_control("RESUME").await.unwrap();
            let rest = read_utterance(&mut client).await;
            assert!(
                rest.others.is_empty(),
                "no error for valid controls: {:?}",
                rest.others
            );
            let Some(Event::UtteranceEnd { frames, reason, .. }) = &rest.end else {
                panic!("{:?}", rest.end)
            };
            assert_eq!(reason, "completed");
            assert_frames_well_formed(&rest.frames, 2);
            assert_eq!(*frames, rest.frames.len() as u64 + 1, "every frame arrived");
        })
        .await;
    let after = stand.scrape();
    let delta = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    // Two STOPs from the bystanders, the rest from the storm.
    assert_eq!(
        delta("tts_messages_received_total", &[("type", "control")]),
        (2 * STORM_PAIRS + PAUSES + 1 + 2) as f64
    );
    assert_eq!(delta("tts_errors_sent_total", &[]), 0.0);
    let pauses = delta("tts_barge_in_seconds_count", &[("command", "pause")]);
    assert!(
        pauses <= (STORM_PAIRS + 1) as f64,
        "a PAUSE while paused is no barge-in: {pauses} counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ill_timed_controls_and_bad_message_floods_end_only_the_flooding_session() {
    let stand = Stand::start("floods", "", &[]).await;
    let before = stand.scrape();
    stand
        .attack("control and bad-message floods", async {
            // Controls with nothing to control, RESUME while not paused: answered, counted, harmless.
            let (mut client, _) = connect(&stand.server, "/v1/stream").await;
            for command in ["STOP", "PAUSE", "RESUME"] {
                client.send_control(command).await.unwrap();
                let message = expect_error(&mut client, "INVALID_MESSAGE").await;
                assert!(message.contains("nothing is playing"), "{message}");
            }
            client.send_text(LONG_TEXT, true).await.unwrap();
            client.send_control("RESUME").await.unwrap();
            let message = loop {
                match client.next(WAIT).await.unwrap().event {
                    Event::Error { code, message } => {
                        assert_eq!(code, "INVALID_MESSAGE");
                        break message;
                    }
                    Event::Audio { .. } => {}
                    other => panic!("{other:?}"),
                }
            };
            assert!(message.contains("not paused"), "{message}");
            client.send_control("STOP").await.unwrap();
            let stopped = read_utterance(&mut client).await;
            assert!(matches!(&stopped.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "stopped"));
            speaks(&mut client, "after ill-timed controls").await;

            // Floods: 200 ill-timed STOPs, 200 junk messages. 21 answers, the closing error, the end.
            for flood in ["STOP", "junk"] {
                let (mut client, _) = connect(&stand.server, "/v1/stream").await;
                for _ in 0..200 {
                    let sent = match flood {
                        "STOP" => client.send_control("STOP").await,
                        _ => client.send_raw(Message::Text("junk".into())).await,
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                let (mut errors, mut end) = (0, None);
                while end.is_none() {
                    match client.next(WAIT).await.unwrap().event {
                        Event::Error { code, .. } => {
                            assert_eq!(code, "INVALID_MESSAGE");
                            errors += 1;
                        }
                        Event::SessionEnd { reason, .. } => end = Some(reason),
                        other => panic!("{flood}: {other:?}"),
                    }
                }
                assert_eq!(end.as_deref(), Some("too_many_errors"), "{flood}");
                assert_eq!(errors, 22, "{flood}: the error replies are bounded");
                assert!(matches!(client.next(WAIT).await.unwrap().event, Event::Closed));
            }
        })
        .await;
    let after = stand.scrape();
    let delta = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(
        delta("tts_sessions_ended_total", &[("reason", "too_many_errors")]),
        2.0
    );
    assert_eq!(
        delta("tts_errors_sent_total", &[("code", "INVALID_MESSAGE")]),
        4.0 + 44.0
    );
    stand.wait_for_log(&["Session ended.", "too_many_errors"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_much_pending_text_and_too_many_queued_utterances_are_refused_and_the_session_goes_on() {
    // Every one of 40 texts sent at once is answered: the error-reply bound is raised out of the way.
    let config = "[gateway]\nmax_text_chars = 1000\nmax_pending_chars = 3000\nmax_queued_utterances = 4\n\
                  max_bad_messages = 1000\nmax_error_replies_per_second = 1000\n";
    let stand = Stand::start("pending", config, &[]).await;
    let before = stand.scrape();
    let refused = stand
        .attack("pending text and queued utterances", async {
            // Non-final pieces pile up faster than they play: the piece past 3,000 characters is refused.
            let (mut client, _) = connect(&stand.server, "/v1/stream").await;
            let piece = "word ".repeat(200);
            for _ in 0..3 {
                client.send_text(&piece, false).await.unwrap();
            }
            client.send_text(&piece, false).await.unwrap();
            let refused = loop {
                match client.next(WAIT).await.unwrap().event {
                    Event::Error { code, message } => break (code, message),
                    Event::Audio { .. } => {}
                    other => panic!("{other:?}"),
                }
            };
            assert_eq!(refused.0, "TEXT_TOO_LONG", "{}", refused.1);
            assert!(refused.1.contains("3000"), "{}", refused.1);
            client.send_control("STOP").await.unwrap();
            let stopped = read_utterance(&mut client).await;
            assert!(matches!(&stopped.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "stopped"));

            // 40 one-word utterances at once: four open at a time, every text answered.
            let (mut client, _) = connect(&stand.server, "/v1/stream").await;
            for _ in 0..40 {
                client
                    .send_json(json!({"type": "text", "text": "Hi."}))
                    .await
                    .unwrap();
            }
            let (mut ended, mut refused) = (0, 0);
            while ended + refused < 40 {
                match client.next(WAIT).await.unwrap().event {
                    Event::UtteranceEnd { reason, .. } => {
                        assert_eq!(reason, "completed");
                        ended += 1;
                    }
                    Event::Error { code, message } => {
                        assert_eq!(code, "TEXT_TOO_LONG", "{message}");
                        assert!(message.contains("utterances"), "{message}");
                        refused += 1;
                    }
                    _ => {}
                }
            }
            assert!(ended >= 4 && refused > 0, "{ended} played, {refused} refused");
            speaks(&mut client, "after a flood of utterances").await;
            refused
        })
        .await;
    let after = stand.scrape();
    let delta = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(
        delta("tts_errors_sent_total", &[("code", "TEXT_TOO_LONG")]),
        1.0 + refused as f64,
        "every refusal the clients saw is counted"
    );
}
