#![allow(clippy::unwrap_used)]
//! End-to-end: the real `ttsd serve` binary over real sockets, with a client that keeps its own clocks.

#[path = "support/common.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tts_test_support::{Event, Scrape, http_get, rms_dbfs};

const FOX: &str = "The quick brown fox jumps over the lazy dog.";

async fn check_speech_matches_engine(voice: &str, reference_seconds: f64) {
    let server = start(&["--voice", voice]);
    let (mut client, start) = connect(&server, "/v1/stream").await;
    let Event::SessionStart {
        sample_rate,
        frame_ms,
        voice: announced,
        ..
    } = start
    else {
        unreachable!()
    };
    assert_eq!((sample_rate, frame_ms, announced.as_str()), (48_000, 20, voice));
    client.send_text(FOX, true).await.unwrap();
    let utterance = read_utterance(&mut client).await;
    assert_frames_well_formed(&utterance.frames, 1);
    let Some(Event::UtteranceEnd { frames, reason, .. }) = &utterance.end else {
        panic!("no utterance_end: {:?}", utterance.end)
    };
    assert_eq!(
        (*frames as usize, reason.as_str()),
        (utterance.frames.len(), "completed")
    );
    let level = rms_dbfs(&utterance.samples());
    assert!(
        level > -35.0,
        "{voice}: audio is not speech-level ({level:.1} dBFS)"
    );
    let ratio = utterance.seconds() / reference_seconds;
    assert!(
        (0.7..=1.3).contains(&ratio),
        "{voice}: {:.2} s streamed vs {reference_seconds:.2} s from the engine",
        utterance.seconds()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn espeak_streams_exact_frames_of_speech_as_long_as_espeak_ng_itself() {
    let wav = temp_path("espeak-cli.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-w"])
        .arg(&wav)
        .arg(FOX)
        .status()
        .unwrap();
    assert!(status.success());
    check_speech_matches_engine(ESPEAK, wav_seconds(&wav)).await;
    let _ = std::fs::remove_file(wav);
}

#[tokio::test(flavor = "multi_thread")]
async fn piper_streams_exact_frames_of_speech_as_long_as_the_voice_offline() {
    let wav = temp_path("piper-say.wav");
    let status = Command::new(env!("CARGO_BIN_EXE_ttsd"))
        .current_dir(root())
        .args(["say", "--voice", PIPER, "-o"])
        .arg(&wav)
        .arg(FOX)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "ttsd say with the Piper voice (run scripts/fetch-assets.sh)"
    );
    check_speech_matches_engine(PIPER, wav_seconds(&wav)).await;
    let _ = std::fs::remove_file(wav);
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_are_paced_at_20_ms_after_the_lead() {
    let server = start_espeak(&[]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    client.send_text(LONG_TEXT, true).await.unwrap();
    let utterance = read_utterance(&mut client).await;
    let frames = &utterance.frames;
    assert!(frames.len() > 200, "{} frames", frames.len());
    // After the 3-frame lead, frame k arrives about k − 3 frame periods after the first. Never early: a
    // loaded machine can delay a frame but cannot make the server send ahead of its clock. Late by more
    // than 60 ms: at most 2 % of frames, since a stall of this test's own client task (other tests run
    // beside it on two cores) also shows up here; the total duration below still pins the pace.
    let first = frames[0].at;
    let due = |k: usize| first + Duration::from_millis(20 * (k as u64 - 3));
    let early = frames.iter().enumerate().skip(3);
    let early = early
        .filter(|(k, f)| f.at + Duration::from_millis(40) < due(*k))
        .count();
    assert_eq!(early, 0, "frames sent ahead of the 20 ms clock");
    let late = frames.iter().enumerate().skip(3);
    let late = late
        .filter(|(k, f)| f.at > due(*k) + Duration::from_millis(60))
        .count();
    assert!(
        late * 50 <= frames.len(),
        "{late} of {} frames more than 60 ms behind the 20 ms clock",
        frames.len()
    );
    let total = frames.last().unwrap().at.duration_since(first).as_secs_f64();
    let expected = (frames.len() - 4) as f64 * 0.02;
    assert!(
        (total - expected).abs() < 0.1,
        "paced over {total:.2} s, expected {expected:.2} s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_holds_frames_and_resume_continues_without_loss() {
    let server = start_repeatable_piper();
    let (mut reference_client, _) = connect(&server, "/v1/stream").await;
    reference_client.send_text(MEDIUM_TEXT, true).await.unwrap();
    let reference = read_utterance(&mut reference_client).await;

    let (mut client, _) = connect(&server, "/v1/stream").await;
    client.send_text(MEDIUM_TEXT, true).await.unwrap();
    let mut before = Vec::new();
    while before.len() < 10 {
        match client.next(WAIT).await.unwrap().event {
            Event::Audio { sequence, pcm } => before.push((sequence, pcm)),
            other => panic!("unexpected {other:?}"),
        }
    }
    client.send_control("PAUSE").await.unwrap();
    // At most one frame that was already being written may still arrive; then silence.
    let mut during = 0;
    loop {
        match client.next(Duration::from_millis(500)).await {
            Err(_) => break,
            Ok(r) if matches!(r.event, Event::Audio { .. }) => {
                during += 1;
                let Event::Audio { sequence, pcm } = r.event else {
                    unreachable!()
                };
                before.push((sequence, pcm));
                assert!(during <= 1, "frames kept coming while paused");
            }
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    client.send_control("RESUME").await.unwrap();
    let rest = read_utterance(&mut client).await;
    let mut all: Vec<_> = before
        .into_iter()
        .map(|(sequence, pcm)| Frame {
            sequence,
            pcm,
            at: rest.frames[0].at,
        })
        .collect();
    all.extend(rest.frames.clone());
    assert_frames_well_formed(&all, 1);
    assert!(matches!(&rest.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "completed"));
    let paused: Vec<u8> = all.iter().flat_map(|f| f.pcm.clone()).collect();
    let reference: Vec<u8> = reference.frames.iter().flat_map(|f| f.pcm.clone()).collect();
    assert_eq!(paused.len(), reference.len(), "PAUSE/RESUME lost or added audio");
    assert!(paused == reference, "PAUSE/RESUME changed the audio");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_yields_at_most_one_frame_then_stopped_and_the_session_goes_on() {
    let server = start_espeak(&[]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    client.send_text(LONG_TEXT, true).await.unwrap();
    let mut received = 0;
    while received < 10 {
        if let Event::Audio { .. } = client.next(WAIT).await.unwrap().event {
            received += 1;
        }
    }
    let stop_sent = client.send_control("STOP").await.unwrap();
    let after = read_utterance(&mut client).await;
    assert!(
        after.frames.len() <= 1,
        "{} frames after STOP",
        after.frames.len()
    );
    let Some(Event::UtteranceEnd { reason, frames, .. }) = &after.end else {
        panic!("{:?}", after.end)
    };
    assert_eq!(reason, "stopped");
    assert_eq!(*frames as usize, 10 + after.frames.len());
    let ended_at = client.next(Duration::from_millis(300)).await;
    assert!(
        ended_at.is_err(),
        "nothing more after utterance_end: {ended_at:?}"
    );
    let _ = stop_sent;
    // The next text in the same session plays normally, and sequences stay contiguous.
    client.send_text("Hello again.", true).await.unwrap();
    let next = read_utterance(&mut client).await;
    assert_frames_well_formed(&next.frames, 11 + after.frames.len() as u64);
    assert!(next.frames.len() > 20);
    assert!(matches!(&next.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "completed"));
}

async fn expect_error(client: &mut tts_test_support::StreamClient, code: &str) -> String {
    let received = client.next(WAIT).await.unwrap();
    match received.event {
        Event::Error { code: got, message } => {
            assert_eq!(got, code, "{message}");
            assert!(!message.is_empty());
            message
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_messages_get_the_documented_error_and_the_session_keeps_working() {
    let server = start_espeak(&[]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    client.send_raw(Message::Text("{not json".into())).await.unwrap();
    expect_error(&mut client, "INVALID_MESSAGE").await;
    client.send_json(json!({"type": "dance"})).await.unwrap();
    let message = expect_error(&mut client, "INVALID_MESSAGE").await;
    assert!(message.contains("dance"), "{message}");
    client
        .send_json(json!({"type": "config", "voice": "klingon-9000"}))
        .await
        .unwrap();
    let message = expect_error(&mut client, "UNKNOWN_VOICE").await;
    assert!(
        message.contains("klingon-9000") && message.contains("GET /v1/voices"),
        "names the voice and where the list is: {message}"
    );
    // Bounded: a long voice name does not come back whole, nor every installed voice with it.
    client
        .send_json(json!({"type": "config", "voice": "k".repeat(50_000)}))
        .await
        .unwrap();
    let message = expect_error(&mut client, "UNKNOWN_VOICE").await;
    assert!(message.len() < 600, "{} bytes", message.len());
    client.send_text(&"a".repeat(10_001), true).await.unwrap();
    expect_error(&mut client, "TEXT_TOO_LONG").await;
    let big = json!({"type": "text", "text": "b".repeat(2 * 1024 * 1024)}).to_string();
    client.send_raw(Message::Text(big.into())).await.unwrap();
    expect_error(&mut client, "MESSAGE_TOO_LARGE").await;
    client
        .send_raw(Message::Binary(vec![0xde, 0xad, 0xbe, 0xef].into()))
        .await
        .unwrap();
    expect_error(&mut client, "INVALID_MESSAGE").await;
    client.send_control("STOP").await.unwrap();
    expect_error(&mut client, "INVALID_MESSAGE").await;
    client.send_control("PAUSE").await.unwrap();
    expect_error(&mut client, "INVALID_MESSAGE").await;
    // 10,000 characters exactly is within the limit (accepted, then stopped to keep the test short).
    client.send_text(&"word ".repeat(2_000), true).await.unwrap();
    client.send_control("STOP").await.unwrap();
    let stopped = read_utterance(&mut client).await;
    assert!(
        matches!(&stopped.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "stopped"),
        "{:?}",
        stopped.end
    );
    client.send_text(FOX, true).await.unwrap();
    let utterance = read_utterance(&mut client).await;
    assert!(matches!(&utterance.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "completed"));
    assert!(utterance.frames.len() > 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bad_messages_ends_only_that_session() {
    let server = start_espeak(&[]);
    let (mut good, _) = connect(&server, "/v1/stream").await;
    let (mut bad, _) = connect(&server, "/v1/stream").await;
    good.send_text(LONG_TEXT, true).await.unwrap();
    for _ in 0..25 {
        let _ = bad.send_raw(Message::Text("nonsense".into())).await;
    }
    let mut ended = None;
    for _ in 0..40 {
        match bad.next(WAIT).await.unwrap().event {
            Event::SessionEnd { reason, .. } => {
                ended = Some(reason);
                break;
            }
            Event::Error { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ended.as_deref(), Some("too_many_errors"));
    let utterance = read_utterance(&mut good).await;
    assert_frames_well_formed(&utterance.frames, 1);
    assert!(
        matches!(&utterance.end, Some(Event::UtteranceEnd { reason, underruns: 0, .. }) if reason == "completed")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sessions_at_once_get_exactly_their_own_audio() {
    let server = start_repeatable_piper();
    let texts = [
        "The first session speaks about apples and pears.",
        "A second voice reads numbers: one, two, three, four.",
    ];
    let mut alone = Vec::new();
    for text in texts {
        let (mut client, _) = connect(&server, "/v1/stream").await;
        client.send_text(text, true).await.unwrap();
        alone.push(read_utterance(&mut client).await.samples());
    }
    let (mut a, _) = connect(&server, "/v1/stream").await;
    let (mut b, _) = connect(&server, "/v1/stream").await;
    a.send_text(texts[0], true).await.unwrap();
    b.send_text(texts[1], true).await.unwrap();
    let (ua, ub) = tokio::join!(read_utterance(&mut a), read_utterance(&mut b));
    assert_frames_well_formed(&ua.frames, 1);
    assert_frames_well_formed(&ub.frames, 1);
    assert!(ua.samples() == alone[0], "session A's audio differs from A alone");
    assert!(ub.samples() == alone[1], "session B's audio differs from B alone");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_over_the_limit_are_refused_with_overloaded() {
    let server = start_espeak(&["--max-sessions", "2"]);
    let (_a, _) = connect(&server, "/v1/stream").await;
    let (_b, _) = connect(&server, "/v1/stream").await;
    let mut c = tts_test_support::StreamClient::connect(&server.url("/v1/stream"))
        .await
        .unwrap();
    let first = c.next(WAIT).await.unwrap().event;
    assert!(
        matches!(&first, Event::Error { code, .. } if code == "OVERLOADED"),
        "{first:?}"
    );
    let second = c.next(WAIT).await.unwrap().event;
    assert!(
        matches!(&second, Event::SessionEnd { reason, .. } if reason == "overloaded"),
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_voice_on_connect_is_an_error_listing_voices_not_a_fallback() {
    let server = start_espeak(&[]);
    let mut client = tts_test_support::StreamClient::connect(&server.url("/v1/stream?voice=nope"))
        .await
        .unwrap();
    let first = client.next(WAIT).await.unwrap().event;
    let Event::Error { code, message } = first else {
        panic!("{first:?}")
    };
    assert_eq!(code, "UNKNOWN_VOICE");
    assert!(
        message.contains("nope") && message.contains("espeak-") && message.contains("GET /v1/voices"),
        "names the request, installed voices and where the full list is: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_encoding_carries_sequence_and_pcm() {
    let server = start_espeak(&[]);
    let (mut client, _) = connect(&server, "/v1/stream?encoding=binary").await;
    client.send_text("Binary frames please.", true).await.unwrap();
    let utterance = read_utterance(&mut client).await;
    assert!(utterance.frames.len() > 20);
    assert_frames_well_formed(&utterance.frames, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_text_pieces_form_one_utterance_and_voice_can_change_between_utterances() {
    let server = start_espeak(&[]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    client
        .send_text("Hello there, this sentence arrives", false)
        .await
        .unwrap();
    client.send_text(" in three pieces", false).await.unwrap();
    client.send_text(" and ends here.", true).await.unwrap();
    let first = read_utterance(&mut client).await;
    assert!(
        matches!(&first.end, Some(Event::UtteranceEnd { utterance_id: 1, reason, .. }) if reason == "completed")
    );
    client
        .send_json(json!({"type": "config", "voice": "espeak-en-gb"}))
        .await
        .unwrap();
    client.send_text("Now in another accent.", true).await.unwrap();
    let second = read_utterance(&mut client).await;
    assert!(
        second.others.is_empty(),
        "no error for a valid voice change: {:?}",
        second.others
    );
    assert!(
        matches!(&second.end, Some(Event::UtteranceEnd { utterance_id: 2, reason, .. }) if reason == "completed")
    );
    assert_frames_well_formed(&second.frames, first.frames.len() as u64 + 1);
    // Which voice spoke each utterance, as the server accounted for it: one first audio each.
    let scrape = scrape(&server);
    for voice in [ESPEAK, "espeak-en-gb"] {
        assert_eq!(
            scrape.sum("tts_first_audio_seconds_count", &[("voice", voice)]),
            1.0,
            "one utterance spoken by {voice}"
        );
    }
}

fn scrape(server: &tts_test_support::ServerProcess) -> Scrape {
    let response = http_get(&server.admin_base, "/metrics").unwrap();
    assert_eq!(response.status, 200);
    Scrape::parse(&response.body).unwrap()
}

fn pcm(utterance: &Utterance) -> Vec<u8> {
    utterance
        .frames
        .iter()
        .flat_map(|f| f.pcm.iter().copied())
        .collect()
}

/// Piper without sampling noise speaks a text the same way every time, so the audio itself shows which
/// voice spoke: switching to espeak changes it, and switching back gives Piper's bytes again.
#[tokio::test(flavor = "multi_thread")]
async fn a_voice_change_changes_the_audio_and_changing_back_restores_it() {
    let server = start_repeatable_piper();
    let (mut client, _) = connect(&server, "/v1/stream").await;
    let mut spoken = Vec::new();
    for voice in [PIPER, ESPEAK, PIPER] {
        client
            .send_json(json!({"type": "config", "voice": voice}))
            .await
            .unwrap();
        client.send_text(FOX, true).await.unwrap();
        let utterance = read_utterance(&mut client).await;
        assert!(utterance.others.is_empty(), "{voice}: {:?}", utterance.others);
        assert!(
            matches!(&utterance.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "completed"),
            "{voice}: {:?}",
            utterance.end
        );
        spoken.push(pcm(&utterance));
    }
    assert!(
        spoken[0] == spoken[2],
        "Piper again after espeak: the same bytes as Piper's first time"
    );
    assert!(spoken[0] != spoken[1], "espeak's audio is not Piper's");
    let scrape = scrape(&server);
    assert_eq!(
        scrape.sum("tts_first_audio_seconds_count", &[("voice", PIPER)]),
        2.0
    );
    assert_eq!(
        scrape.sum("tts_first_audio_seconds_count", &[("voice", ESPEAK)]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn original_protocol_clients_at_root_see_only_original_messages() {
    let server = start_espeak(&[]);
    let (mut client, _) = connect(&server, "/").await;
    client.send_text(FOX, true).await.unwrap();
    let mut frames = Vec::new();
    loop {
        match client.next(Duration::from_millis(1500)).await {
            Err(_) => break,
            Ok(received) => match received.event {
                Event::Audio { sequence, pcm } => frames.push(Frame {
                    sequence,
                    pcm,
                    at: received.at,
                }),
                other => panic!("original clients must not receive {other:?}"),
            },
        }
    }
    assert!(frames.len() > 50);
    assert_frames_well_formed(&frames, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_end_with_a_reason() {
    let server = start(&[
        "--voice",
        ESPEAK,
        "--config",
        &write_config("[gateway]\nidle_timeout_seconds = 1\n"),
    ]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    let event = client.next(Duration::from_secs(5)).await.unwrap().event;
    assert!(
        matches!(&event, Event::SessionEnd { reason, .. } if reason == "idle_timeout"),
        "{event:?}"
    );
}

fn write_config(text: &str) -> String {
    let path = temp_path(&format!("config-{}.toml", text.len()));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_without_a_drain_ends_sessions_at_once_and_exits_zero() {
    // drain_seconds = 0: the open utterance is not waited for (tests/drain.rs covers the drain).
    let server = start_espeak(&["--config", &write_config("[server]\ndrain_seconds = 0\n")]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    client.send_text(LONG_TEXT, true).await.unwrap();
    let _ = client.next(WAIT).await.unwrap();
    let handle = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(10)));
    let mut reason = None;
    for _ in 0..2000 {
        match client.next(WAIT).await.unwrap().event {
            Event::SessionEnd { reason: r, .. } => {
                reason = Some(r);
                break;
            }
            Event::Closed => break,
            _ => {}
        }
    }
    assert_eq!(reason.as_deref(), Some("server_shutdown"));
    assert_eq!(handle.await.unwrap(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_tiny_utterances_is_bounded_and_every_text_is_answered() {
    let config = temp_path("queued-utterances.toml");
    // Enough bad-message allowance that the utterance bound, not the error limit, answers the flood.
    std::fs::write(
        &config,
        "[gateway]\nmax_queued_utterances = 4\nmax_bad_messages = 100\nmax_error_replies_per_second = 100\n",
    )
    .unwrap();
    let server = start_espeak(&["--config", config.to_str().unwrap()]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    const SENT: usize = 40;
    for _ in 0..SENT {
        client.send_text("Hi.", true).await.unwrap();
    }
    // Every final text is answered: it either opened an utterance that ends, or got TEXT_TOO_LONG.
    let (mut ended, mut refused) = (0, 0);
    while ended + refused < SENT {
        match client.next(WAIT).await.unwrap().event {
            Event::UtteranceEnd { reason, .. } => {
                assert_eq!(reason, "completed");
                ended += 1;
            }
            Event::Error { code, message } => {
                assert_eq!(code, "TEXT_TOO_LONG", "{message}");
                assert!(message.contains("utterances"), "names the bound: {message}");
                refused += 1;
            }
            _ => {}
        }
    }
    assert!(
        refused > 0,
        "40 texts sent at once cannot all fit in 4 open utterances"
    );
    assert!(ended >= 4, "the first four were accepted and played: {ended}");
    client.send_text(FOX, true).await.unwrap();
    let utterance = read_utterance(&mut client).await;
    assert!(matches!(&utterance.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "completed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ill_timed_messages_count_toward_the_error_limit_and_end_the_session() {
    let server = start_espeak(&[]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    // Well-formed, but nothing is playing: each one is answered, and each one counts.
    for _ in 0..25 {
        client.send_control("STOP").await.unwrap();
    }
    let (mut errors, mut end) = (0, None);
    while end.is_none() {
        match client.next(WAIT).await.unwrap().event {
            Event::Error { .. } => errors += 1,
            Event::SessionEnd { reason, .. } => end = Some(reason),
            Event::Closed => break,
            _ => {}
        }
    }
    assert_eq!(end.as_deref(), Some("too_many_errors"));
    // 21 answers (the limit is 20 within the window), then the closing error: no reply per STOP after it.
    assert_eq!(errors, 22, "bounded error replies");
}

/// Error replies are bounded per second: past the bound the errors are counted, not answered, and every
/// bad message still counts toward `max_bad_messages`, which still ends the session.
#[tokio::test(flavor = "multi_thread")]
async fn error_replies_are_bounded_per_second_and_the_rest_are_counted() {
    let config = temp_path("error-replies.toml");
    std::fs::write(
        &config,
        "[gateway]\nmax_error_replies_per_second = 3\nmax_bad_messages = 40\nbad_message_window_seconds = 60\n",
    )
    .unwrap();
    let server = start_espeak(&["--config", config.to_str().unwrap()]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    const FIRST: usize = 30;
    let started = tokio::time::Instant::now();
    for _ in 0..FIRST {
        client.send_control("STOP").await.unwrap();
    }
    // A valid utterance after them: when it ends, every STOP before it has been handled.
    client.send_text("Hi.", true).await.unwrap();
    let mut replies = 0;
    loop {
        match client.next(WAIT).await.unwrap().event {
            Event::Error { code, message } => {
                assert_eq!(code, "INVALID_MESSAGE", "{message}");
                replies += 1;
            }
            Event::UtteranceEnd { reason, .. } => {
                assert_eq!(reason, "completed");
                break;
            }
            _ => {}
        }
    }
    // The server sent them all between `started` and now: at most 3 in each second of that span.
    let seconds = started.elapsed().as_secs();
    let bound = 3 * (seconds as usize + 1);
    assert!(replies >= 3, "the first three are answered: {replies}");
    assert!(
        replies <= bound,
        "{replies} error replies in {seconds} s, bound {bound}"
    );
    let suppressed =
        |scrape: &Scrape| scrape.sum("tts_errors_suppressed_total", &[("code", "INVALID_MESSAGE")]) as usize;
    assert_eq!(
        replies + suppressed(&scrape(&server)),
        FIRST,
        "every bad message is answered or counted"
    );

    // 11 more take the session past 40 bad messages: it ends, with the closing error sent.
    for _ in 0..11 {
        client.send_control("STOP").await.unwrap();
    }
    let (mut more, mut closing, mut end) = (0, 0, None);
    while end.is_none() {
        match client.next(WAIT).await.unwrap().event {
            Event::Error { message, .. } if message.contains("closing the session") => closing += 1,
            Event::Error { .. } => more += 1,
            Event::SessionEnd { reason, .. } => end = Some(reason),
            Event::Closed => break,
            _ => {}
        }
    }
    assert_eq!(end.as_deref(), Some("too_many_errors"));
    assert_eq!(closing, 1, "the closing error is always sent");
    assert_eq!(
        replies + more + suppressed(&scrape(&server)),
        FIRST + 11,
        "the 41 bad messages: answered or counted"
    );
}
