//! The bad-input catalogue of docs/robustness.md, end to end: the real `ttsd` over real sockets, one
//! kind (or a family of kinds) of bad or hostile input per test, what the client gets, what is counted
//! and logged, and a bystander session on the same server that must lose no frame and keep its pacing
//! (see `robustness/harness.rs`). Kinds that stop ttsd from starting (configuration) have no bystander.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;
#[path = "robustness/config.rs"]
mod config;
#[path = "robustness/connections.rs"]
mod connections;
#[path = "robustness/controls.rs"]
mod controls;
#[path = "robustness/harness.rs"]
mod harness;
#[path = "robustness/liar.rs"]
mod liar;
#[path = "robustness/messages.rs"]
mod messages;
#[path = "robustness/remote.rs"]
mod remote;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tts_test_support::{Event, ServerProcess, StreamClient};

use common::{WAIT, read_utterance};

/// A WebSocket without the protocol client's parsing, for what that client cannot send or see.
type RawSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next event is an `error` with `code`; returns its message.
async fn expect_error(client: &mut StreamClient, code: &str) -> String {
    match client.next(WAIT).await.unwrap().event {
        Event::Error { code: got, message } => {
            assert_eq!(got, code, "{message}");
            assert!(!message.is_empty());
            message
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// The session still works: a short text plays to its end.
async fn speaks(client: &mut StreamClient, kind: &str) {
    client.send_text("Still here.", true).await.unwrap();
    plays_to_its_end(client, kind).await;
}

/// The utterance for a text already sent plays to its end.
async fn plays_to_its_end(client: &mut StreamClient, kind: &str) {
    let utterance = read_utterance(client).await;
    assert!(
        matches!(&utterance.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "completed"),
        "{kind}: the session no longer speaks: {:?} {:?}",
        utterance.end,
        utterance.others
    );
    assert!(
        utterance.frames.len() > 10,
        "{kind}: {} frames",
        utterance.frames.len()
    );
}

/// A raw WebSocket to `path`, its `session_start` read.
async fn raw_socket(server: &ServerProcess, path: &str) -> RawSocket {
    let (mut socket, _) = tokio_tungstenite::connect_async(server.url(path)).await.unwrap();
    match socket.next().await {
        Some(Ok(Message::Text(text))) => assert!(text.contains("session_start"), "{text}"),
        other => panic!("expected session_start, got {other:?}"),
    }
    socket
}

/// Reads until the server closes: the close frame's code, or None when the connection ended without
/// one. Audio and other messages on the way are skipped.
async fn close_code(socket: &mut RawSocket) -> Option<u16> {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(until, socket.next())
            .await
            .expect("the server closes the connection");
        match next {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// Waits (up to `WAIT`) until a new session with `voice` speaks: remote workers found, up and routable.
async fn until_speaking(server: &ServerProcess, voice: &str) {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let url = server.url(&format!("/v1/stream?voice={voice}"));
        let mut client = StreamClient::connect(&url).await.unwrap();
        let _ = client.next(WAIT).await.unwrap();
        client.send_text("Ready.", true).await.unwrap();
        let utterance = read_utterance(&mut client).await;
        client.close().await;
        if matches!(&utterance.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "completed") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no session speaks: {:?}",
            utterance.others
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
