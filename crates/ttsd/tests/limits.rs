//! Connection bounds before the upgrade, end to end with the real binary: a flood of connections over
//! `server.max_connections` is closed at once and counted while a session keeps streaming every frame;
//! silent connections over `server.max_pending_handshakes` are refused and counted; a connection that
//! never sends its request head is closed after `server.handshake_timeout_ms`, while a session that did
//! upgrade stays open as long as it likes.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tts_test_support::{Event, Scrape, ServerProcess, StreamClient, http_get};

fn start_with(name: &str, server_section: &str) -> ServerProcess {
    let path = temp_path(&format!("limits-{name}.toml"));
    std::fs::write(&path, format!("[server]\n{server_section}\n")).unwrap();
    start_espeak(&["--config", path.to_str().unwrap()])
}

fn scrape(server: &ServerProcess) -> Scrape {
    Scrape::parse(&http_get(&server.admin_base, "/metrics").unwrap().body).unwrap()
}

fn rejected(server: &ServerProcess, reason: &str) -> f64 {
    scrape(server)
        .get(
            "tts_server_connections_rejected_total",
            &[("listener", "public"), ("reason", reason)],
        )
        .unwrap_or(0.0)
}

fn gauge(server: &ServerProcess, name: &str) -> f64 {
    scrape(server)
        .get(name, &[("listener", "public")])
        .unwrap_or_else(|| panic!("{name}{{listener=\"public\"}} is exported"))
}

fn addr(server: &ServerProcess) -> String {
    server.ws_base.trim_start_matches("ws://").to_owned()
}

/// Reads until the server closes the connection (EOF or reset), at most `WAIT`; returns what it sent.
async fn closed_by_server(tcp: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the server closed the connection");
    raw
}

/// Polls `probe` every 50 ms until it holds, at most `WAIT`.
async fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !probe() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A session that is speaking `LONG_TEXT`, with the frames heard so far.
async fn speaking(server: &ServerProcess) -> (StreamClient, Vec<Frame>) {
    let (mut client, _) = connect(server, "/v1/stream").await;
    client.send_text(LONG_TEXT, true).await.unwrap();
    let mut frames = Vec::new();
    while frames.len() < 5 {
        let received = client.next(WAIT).await.unwrap();
        if let Event::Audio { sequence, pcm } = received.event {
            frames.push(Frame {
                sequence,
                pcm,
                at: received.at,
            });
        }
    }
    (client, frames)
}

/// The rest of the utterance: it completes and, with `before`, every frame arrived once, in order.
async fn finish(client: &mut StreamClient, mut before: Vec<Frame>) {
    let rest = read_utterance(client).await;
    let Some(Event::UtteranceEnd { frames, reason, .. }) = rest.end else {
        panic!("the utterance ends: {:?}", rest.end)
    };
    assert_eq!(reason, "completed");
    before.extend(rest.frames);
    assert_frames_well_formed(&before, before[0].sequence);
    assert_eq!(frames as usize, before.len(), "no frame lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_over_max_connections_is_refused_and_counted_while_a_session_keeps_streaming() {
    const MAX: usize = 6;
    const FLOOD: usize = 12;
    let server = start_with(
        "flood",
        &format!("max_connections = {MAX}\nmax_pending_handshakes = 64\nhandshake_timeout_ms = 120000"),
    );
    let (mut bystander, heard) = speaking(&server).await;

    // The bystander holds one slot; five silent connections take the rest.
    let mut held = Vec::new();
    for _ in 1..MAX {
        held.push(TcpStream::connect(addr(&server)).await.unwrap());
    }
    eventually("every slot is taken", || {
        gauge(&server, "tts_server_connections_active") == MAX as f64
    })
    .await;
    // Each one more is closed at once, before any byte is read.
    for _ in 0..FLOOD {
        let mut extra = TcpStream::connect(addr(&server)).await.unwrap();
        let _ = extra
            .write_all(b"GET /v1/voices HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let answer = closed_by_server(&mut extra).await;
        assert!(
            answer.is_empty(),
            "no answer for a refused connection: {answer:?}"
        );
    }
    assert_eq!(rejected(&server, "max_connections"), FLOOD as f64);
    assert_eq!(gauge(&server, "tts_server_connections_active"), MAX as f64);

    finish(&mut bystander, heard).await;

    // Closing the silent ones frees their slots: a new session opens.
    drop(held);
    eventually("the slots are free again", || {
        gauge(&server, "tts_server_connections_active") == 1.0
    })
    .await;
    let (late, _) = connect(&server, "/v1/stream").await;
    late.close().await;
    bystander.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_handshakes_are_bounded_and_silent_connections_time_out() {
    const PENDING: usize = 3;
    let server = start_with(
        "pending",
        &format!("max_pending_handshakes = {PENDING}\nhandshake_timeout_ms = 1500"),
    );
    let (mut bystander, heard) = speaking(&server).await;

    // Three silent connections fill the pending slots (one sends half a request head); more are refused.
    let started = Instant::now();
    let mut silent = Vec::new();
    for index in 0..PENDING {
        let mut tcp = TcpStream::connect(addr(&server)).await.unwrap();
        if index == 0 {
            tcp.write_all(b"GET /v1/voices HTTP/1.1\r\n").await.unwrap();
        }
        silent.push(tcp);
    }
    eventually("the pending slots are taken", || {
        gauge(&server, "tts_server_handshakes_pending") == PENDING as f64
    })
    .await;
    for _ in 0..4 {
        let mut extra = TcpStream::connect(addr(&server)).await.unwrap();
        assert!(closed_by_server(&mut extra).await.is_empty());
    }
    assert_eq!(rejected(&server, "max_pending_handshakes"), 4.0);

    // The silent ones are closed once the handshake timeout has passed, not before.
    for tcp in &mut silent {
        let answer = closed_by_server(tcp).await;
        assert!(answer.is_empty(), "no answer to a silent connection: {answer:?}");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "closed by the timeout, not at once: {:?}",
        started.elapsed()
    );
    assert_eq!(rejected(&server, "handshake_timeout"), PENDING as f64);
    assert_eq!(gauge(&server, "tts_server_handshakes_pending"), 0.0);

    // The session upgraded long before: well past the timeout, it still streams every frame and takes
    // more text.
    finish(&mut bystander, heard).await;
    bystander.send_text("One more.", true).await.unwrap();
    let more = read_utterance(&mut bystander).await;
    assert!(!more.frames.is_empty(), "the old session still speaks");
    let logs = server.logs().join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
}
