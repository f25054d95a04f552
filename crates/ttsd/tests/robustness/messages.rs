//! Bad WebSocket messages: malformed and wrong-typed JSON, unknown types and commands, binary junk,
//! oversize and fragmented messages, invalid and unusual Unicode, text that normalises to nothing,
//! enormous words. Each kind on a session of its own, every one while a bystander speaks.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tts_test_support::{Event, StreamClient};

use crate::common::{ESPEAK, WAIT, assert_frames_well_formed, connect, read_utterance};
use crate::harness::Stand;
use crate::{close_code, expect_error, plays_to_its_end, raw_socket, speaks};

/// Bad messages of one kind, each answered with `INVALID_MESSAGE` naming the problem.
const MALFORMED: &[(&str, &[(&str, &str)])] = &[
    (
        "malformed JSON",
        &[
            ("{not json", "not valid JSON"),
            (r#"{"type":"text","text":"Hel"#, "not valid JSON"),
            ("", "not valid JSON"),
        ],
    ),
    (
        "JSON that is not an object",
        &[
            ("[1,2]", "JSON object"),
            ("42", "JSON object"),
            (r#""text""#, "JSON object"),
            ("null", "JSON object"),
        ],
    ),
    (
        "missing or non-string type",
        &[
            (r#"{"text":"Hello."}"#, "no \"type\""),
            (r#"{"type":5,"text":"Hello."}"#, "\"type\" must be a string"),
        ],
    ),
    (
        "unknown message type",
        &[
            (r#"{"type":"dance"}"#, "unknown message type \"dance\""),
            (
                r#"{"type":"TEXT","text":"Hello."}"#,
                "unknown message type \"TEXT\"",
            ),
        ],
    ),
    (
        "wrong-typed fields",
        &[
            (r#"{"type":"text","text":5}"#, "\"text\" must be a string"),
            (r#"{"type":"text"}"#, "no \"text\" field"),
            (r#"{"type":"text","text":"Hi.","is_final":"yes"}"#, "is_final"),
            (r#"{"type":"control","command":7}"#, "string \"command\""),
            (r#"{"type":"config","voice":null}"#, "string \"voice\""),
        ],
    ),
    (
        "unknown or lowercase control command",
        &[
            (
                r#"{"type":"control","command":"JUMP"}"#,
                "unknown control command \"JUMP\"",
            ),
            (
                r#"{"type":"control","command":"stop"}"#,
                "unknown control command \"stop\"",
            ),
        ],
    ),
];

/// Sends each of one kind's bad messages, checks its reply, then proves the session still speaks.
async fn malformed_kind(stand: &Stand, kind: &str, cases: &[(&str, &str)]) -> usize {
    let (mut client, _) = connect(&stand.server, "/v1/stream").await;
    for (raw, needle) in cases {
        client.send_raw(Message::Text((*raw).into())).await.unwrap();
        let message = expect_error(&mut client, "INVALID_MESSAGE").await;
        assert!(message.contains(needle), "{kind}: {raw:?} got {message:?}");
    }
    speaks(&mut client, kind).await;
    cases.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_unknown_types_wrong_fields_and_binary_junk_cost_one_error_each() {
    let stand = Stand::start("malformed", "", &[]).await;
    let before = stand.scrape();
    let answered = stand
        .attack("malformed messages", async {
            let kinds = MALFORMED
                .iter()
                .map(|(kind, cases)| malformed_kind(&stand, kind, cases));
            let mut answered: usize = futures_util::future::join_all(kinds).await.iter().sum();
            // Binary junk: a client may not send binary messages at all.
            let (mut client, _) = connect(&stand.server, "/v1/stream").await;
            for junk in [
                vec![0xde, 0xad, 0xbe, 0xef],
                vec![0; 1928],
                b"{\"type\":\"text\"}".to_vec(),
            ] {
                client.send_raw(Message::Binary(junk.into())).await.unwrap();
                let message = expect_error(&mut client, "INVALID_MESSAGE").await;
                assert!(message.contains("binary"), "{message}");
                answered += 1;
            }
            speaks(&mut client, "binary junk").await;
            answered
        })
        .await;
    let after = stand.scrape();
    let delta = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(
        delta("tts_messages_received_total", &[("type", "invalid")]),
        answered as f64
    );
    assert_eq!(
        delta("tts_errors_sent_total", &[("code", "INVALID_MESSAGE")]),
        answered as f64
    );
    let logged = stand.log_lines(&["Sent an error to the client.", "INVALID_MESSAGE"]);
    assert_eq!(logged.len(), answered, "one INFO line per error reply");
    assert_eq!(
        delta("tts_sessions_ended_total", &[("reason", "too_many_errors")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_fragmented_messages_are_answered_or_cut_off_at_the_documented_bound() {
    // 64 KiB per message: MESSAGE_TOO_LARGE above it, the WebSocket layer's cut at 8x (512 KiB).
    let config = "[gateway]\nmax_message_bytes = 65536\nmax_text_chars = 2000\n";
    let stand = Stand::start("oversize", config, &[]).await;
    let before = stand.scrape();
    stand
        .attack("oversize and fragmented messages", async {
            let (mut client, _) = connect(&stand.server, "/v1/stream").await;
            client.send_text(&"a".repeat(2_001), true).await.unwrap();
            let message = expect_error(&mut client, "TEXT_TOO_LONG").await;
            assert!(message.contains("2001") && message.contains("2000"), "{message}");
            let big = json!({"type": "text", "text": "b".repeat(100_000)}).to_string();
            client.send_raw(Message::Text(big.into())).await.unwrap();
            let message = expect_error(&mut client, "MESSAGE_TOO_LARGE").await;
            assert!(message.contains("65536"), "{message}");
            client
                .send_raw(Message::Binary(vec![7; 100_000].into()))
                .await
                .unwrap();
            expect_error(&mut client, "MESSAGE_TOO_LARGE").await;
            // A valid message in three fragments is one message.
            let whole = json!({"type": "text", "text": "Fragments make one message."}).to_string();
            let (head, rest) = whole.split_at(10);
            let (middle, tail) = rest.split_at(10);
            for (part, opcode, fin) in [
                (head, OpCode::Data(Data::Text), false),
                (middle, OpCode::Data(Data::Continue), false),
                (tail, OpCode::Data(Data::Continue), true),
            ] {
                let frame = WsFrame::message(part.as_bytes().to_vec(), opcode, fin);
                client.send_raw(Message::Frame(frame)).await.unwrap();
            }
            plays_to_its_end(&mut client, "a fragmented message").await;
            speaks(&mut client, "after oversize messages").await;
            client.close().await;

            // Far past the limit, whole or in fragments: the connection is cut without reading it all.
            for fragmented in [false, true] {
                let mut socket = raw_socket(&stand.server, "/v1/stream").await;
                let payload = vec![b'x'; 600_000];
                let sent = if fragmented {
                    let half = payload.len() / 2;
                    let first = WsFrame::message(payload[..half].to_vec(), OpCode::Data(Data::Text), false);
                    let second =
                        WsFrame::message(payload[half..].to_vec(), OpCode::Data(Data::Continue), true);
                    let sent = socket.send(Message::Frame(first)).await;
                    sent.and(socket.send(Message::Frame(second)).await)
                } else {
                    socket.send(Message::Binary(payload.into())).await
                };
                let code = close_code(&mut socket).await;
                eprintln!("oversize (fragmented: {fragmented}): send {sent:?}, close {code:?}");
                assert!(
                    code.is_none() || code == Some(1009),
                    "fragmented: {fragmented}: {code:?}"
                );
            }
        })
        .await;
    // The two cut-off connections, the attacker's main session and the two bystanders.
    stand
        .counter_reaches("tts_sessions_ended_total", &[("reason", "client_closed")], 5.0)
        .await;
    let after = stand.scrape();
    let delta = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(
        delta("tts_errors_sent_total", &[("code", "MESSAGE_TOO_LARGE")]),
        2.0
    );
    assert_eq!(delta("tts_errors_sent_total", &[("code", "TEXT_TOO_LONG")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_hard_limit_is_closed_with_1009_as_documented() {
    let stand = Stand::start("close-1009", "[gateway]\nmax_message_bytes = 65536\n", &[]).await;
    stand
        .attack("a message over the hard limit", async {
            let mut socket = raw_socket(&stand.server, "/v1/stream").await;
            let _ = socket.send(Message::Binary(vec![b'x'; 600_000].into())).await;
            assert_eq!(close_code(&mut socket).await, Some(1009));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_protocol_violations_close_only_that_connection() {
    let stand = Stand::start("violations", "", &[]).await;
    stand
        .attack("invalid UTF-8 and framing violations", async {
            let violations: [(&str, WsFrame, u16); 3] = [
                (
                    "invalid UTF-8 in a text frame",
                    WsFrame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true),
                    1007,
                ),
                (
                    "a continuation with no message to continue",
                    WsFrame::message(b"orphan".to_vec(), OpCode::Data(Data::Continue), true),
                    1002,
                ),
                (
                    "a reserved opcode",
                    WsFrame::message(b"???".to_vec(), OpCode::Data(Data::Reserved(3)), true),
                    1002,
                ),
            ];
            for (kind, frame, expected) in violations {
                let mut socket = raw_socket(&stand.server, "/v1/stream").await;
                let _ = socket.send(Message::Frame(frame)).await;
                let code = close_code(&mut socket).await;
                assert_eq!(code, Some(expected), "{kind}");
            }
        })
        .await;
    // Each violating connection ended as client_closed, as did the two bystanders.
    stand
        .counter_reaches("tts_sessions_ended_total", &[("reason", "client_closed")], 5.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_unicode_empty_text_and_enormous_words_are_spoken_or_refused_never_fatal() {
    let stand = Stand::start("unicode", "", &[]).await;
    stand
        .attack("unusual Unicode, empty text, enormous words", async {
            let (mut client, _) = connect(&stand.server, "/v1/stream").await;
            for (kind, text) in [
                ("right-to-left text", "Hello \u{5e9}\u{5dc}\u{5d5}\u{5dd} \u{645}\u{631}\u{62d}\u{628}\u{627} world."),
                ("combining marks", "Cafe\u{301} na\u{308}ive Zalgo t\u{334}\u{335}\u{336}e\u{337}\u{338}x\u{339}t."),
                ("zero-width characters", "zero\u{200b}width\u{200d}joiner\u{feff} and\u{2060}more."),
                ("emoji", "Party time \u{1f389}\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467} yes."),
                ("NUL and control characters", "Null\u{0} in\u{1}the\u{7f} middle."),
            ] {
                client.send_text(text, true).await.unwrap();
                let utterance = read_utterance(&mut client).await;
                eprintln!("{kind}: {} frames, {:?}, {:?}", utterance.frames.len(), utterance.end, utterance.others);
                assert!(
                    matches!(&utterance.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "completed"),
                    "{kind}: {:?} {:?}",
                    utterance.end,
                    utterance.others
                );
            }
            for (kind, text) in [("whitespace only", " \t\n  "), ("empty", "")] {
                client.send_text(text, true).await.unwrap();
                let message = expect_error(&mut client, "INVALID_MESSAGE").await;
                assert!(message.contains("text is empty"), "{kind}: {message}");
            }
            // Text that normalises to nothing speakable: a short utterance of silence, not an error.
            for (kind, text) in [
                ("zero-width only", "\u{200b}\u{200b}\u{feff}"),
                ("punctuation only", "... ?! --- ,,,"),
            ] {
                client.send_text(text, true).await.unwrap();
                let utterance = read_utterance(&mut client).await;
                let peak = utterance.samples().iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
                eprintln!("{kind}: {} frames, peak {peak}, {:?}", utterance.frames.len(), utterance.end);
                assert!(
                    matches!(&utterance.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "completed"),
                    "{kind}: {:?} {:?}",
                    utterance.end,
                    utterance.others
                );
                assert!(utterance.frames.len() < 100, "{kind}: {} frames", utterance.frames.len());
            }
            // An enormous word: one 9,000-letter word is cut hard at max_chunk_chars and spoken.
            client.send_text(&"supercalifragilistic".repeat(450), true).await.unwrap();
            let mut frames = 0;
            while frames < 25 {
                if let Event::Audio { .. } = client.next(WAIT).await.unwrap().event {
                    frames += 1;
                }
            }
            client.send_control("STOP").await.unwrap();
            let stopped = read_utterance(&mut client).await;
            assert!(
                matches!(&stopped.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "stopped"),
                "{:?}",
                stopped.end
            );
            speaks(&mut client, "after unusual text").await;
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_voice_name_and_bad_query_parameters_get_bounded_refusals() {
    let stand = Stand::start("voices", "", &[]).await;
    let before = stand.scrape();
    stand
        .attack("unknown voices and bad query parameters", async {
            for voice in ["klingon-9000".to_owned(), "k".repeat(20_000)] {
                let mut client =
                    StreamClient::connect(&stand.server.url(&format!("/v1/stream?voice={voice}")))
                        .await
                        .unwrap();
                let message = expect_error(&mut client, "UNKNOWN_VOICE").await;
                assert!(message.len() < 600, "a bounded reply: {} bytes", message.len());
                let end = client.next(WAIT).await.unwrap().event;
                assert!(
                    matches!(&end, Event::SessionEnd { reason, .. } if reason == "unknown_voice"),
                    "{end:?}"
                );
            }
            let refused = tokio_tungstenite::connect_async(stand.server.url("/v1/stream?encoding=mp3")).await;
            match refused {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status(), 400);
                }
                other => panic!("encoding=mp3 was not refused before the upgrade: {other:?}"),
            }
            // Mid-session: an unknown voice keeps the session's voice; a voice change while an utterance
            // is open is refused; between utterances it is accepted.
            let (mut client, _) = connect(&stand.server, &format!("/v1/stream?voice={ESPEAK}")).await;
            client
                .send_json(json!({"type": "config", "voice": "k".repeat(50_000)}))
                .await
                .unwrap();
            let message = expect_error(&mut client, "UNKNOWN_VOICE").await;
            assert!(message.len() < 600, "{} bytes", message.len());
            client
                .send_text("An open utterance, not yet", false)
                .await
                .unwrap();
            client
                .send_json(json!({"type": "config", "voice": "espeak-en-gb"}))
                .await
                .unwrap();
            let message = expect_error(&mut client, "INVALID_MESSAGE").await;
            assert!(message.contains("between utterances"), "{message}");
            client.send_text(" finished.", true).await.unwrap();
            let utterance = read_utterance(&mut client).await;
            assert_frames_well_formed(&utterance.frames, 1);
            client
                .send_json(json!({"type": "config", "voice": "espeak-en-gb"}))
                .await
                .unwrap();
            speaks(&mut client, "after a voice change").await;
        })
        .await;
    let after = stand.scrape();
    assert_eq!(
        after.sum("tts_sessions_refused_total", &[("reason", "unknown_voice")])
            - before.sum("tts_sessions_refused_total", &[("reason", "unknown_voice")]),
        2.0
    );
    assert_eq!(
        after.sum("tts_errors_sent_total", &[("code", "UNKNOWN_VOICE")])
            - before.sum("tts_errors_sent_total", &[("code", "UNKNOWN_VOICE")]),
        3.0
    );
}
