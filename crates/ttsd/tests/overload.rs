#![allow(clippy::unwrap_used)]
//! Overload, end to end with the real binary: with admission on engine headroom, sessions are admitted up to
//! what the engines can keep real time, every further one (twice as many again) is refused with
//! `OVERLOADED`, readiness fails while the server is full, and the admitted sessions keep pacing: no
//! underrun, no lost frame.
//!
//! Capacity is not a constant here. A first server measures what a chunk costs on this machine today (its
//! `tts_gateway_admission_session_cost_ratio`), and the server under test gets a limit of about three and a
//! half sessions' worth of that, capped at 0.6 of its single engine thread so the admitted load stays well
//! within real time even when the machine is busier than it was during the measurement.

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;
use tts_test_support::{Event, Scrape, ServerProcess, StreamClient, http_get};

/// About 40 s of espeak audio; with `max_buffered_frames` at 60 s the whole utterance is synthesised ahead,
/// so no chunk finishes (and the cost estimate stays put) while the overload phase runs.
fn long_text() -> String {
    [LONG_TEXT, MEDIUM_TEXT, LONG_TEXT, MEDIUM_TEXT, LONG_TEXT].join(" ")
}

/// Sessions at most, whatever the measurement says: the test's bound, and the count limit it must not hit.
const MAX_SESSIONS: usize = 12;

fn scrape(server: &ServerProcess) -> Scrape {
    Scrape::parse(&http_get(&server.admin_base, "/metrics").unwrap().body).unwrap()
}

fn server(limit: f64) -> ServerProcess {
    let config = temp_path(&format!("overload-{limit}.toml"));
    std::fs::write(
        &config,
        format!(
            "[engine]\nthreads = 1\n[gateway]\nadmission_max_utilisation = {limit}\nmax_sessions = {MAX_SESSIONS}\n\
             max_buffered_frames = 3000\n"
        ),
    )
    .unwrap();
    start_espeak(&["--config", config.to_str().unwrap()])
}

/// Waits until the engine thread is idle with nothing queued and the cost estimate has stopped moving.
async fn synthesis_settled(server: &ServerProcess) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        assert!(Instant::now() < deadline, "synthesis never settled");
        let metrics = scrape(server);
        let idle =
            metrics.sum("tts_pool_busy_threads", &[]) == 0.0 && metrics.sum("tts_queue_depth", &[]) == 0.0;
        let cost = metrics.get("tts_gateway_admission_session_cost_ratio", &[]);
        if idle && cost.is_some() && cost == last {
            return cost.unwrap();
        }
        last = cost;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Measures what one session's chunks cost on one engine thread now.
async fn measure_cost() -> f64 {
    let probe = server(0.0);
    let (mut client, _) = connect(&probe, "/v1/stream").await;
    client.send_text(&long_text(), true).await.unwrap();
    let cost = synthesis_settled(&probe).await;
    client.close().await;
    cost
}

enum Admitted {
    Yes(StreamClient),
    Refused(String),
}

/// Connects; a refusal must be `OVERLOADED` then `session_end` `overloaded`, before any `session_start`.
async fn try_session(server: &ServerProcess) -> Admitted {
    try_url(server.url("/v1/stream")).await
}

async fn try_url(url: String) -> Admitted {
    let mut client = StreamClient::connect(&url).await.unwrap();
    match client.next(WAIT).await.unwrap().event {
        Event::SessionStart { .. } => Admitted::Yes(client),
        Event::Error { code, message } => {
            assert_eq!(code, "OVERLOADED", "{message}");
            let end = client.next(WAIT).await.unwrap().event;
            assert!(
                matches!(&end, Event::SessionEnd { reason, .. } if reason == "overloaded"),
                "{end:?}"
            );
            Admitted::Refused(message)
        }
        other => panic!("neither session_start nor a refusal: {other:?}"),
    }
}

/// What a speaking session received: frames in order, and its `utterance_end`.
struct Played {
    sequences: Vec<u64>,
    end: Event,
}

/// Reads everything until the utterance ends, so the client is never the slow one.
fn play(mut client: StreamClient) -> tokio::task::JoinHandle<Played> {
    tokio::spawn(async move {
        let mut sequences = Vec::new();
        loop {
            match client.next(Duration::from_secs(120)).await.unwrap().event {
                Event::Audio { sequence, .. } => sequences.push(sequence),
                end @ Event::UtteranceEnd { .. } => {
                    client.close().await;
                    return Played { sequences, end };
                }
                other => panic!("unexpected while playing: {other:?}"),
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn past_engine_headroom_new_sessions_are_refused_and_admitted_ones_keep_pacing() {
    let cost = measure_cost().await;
    assert!(cost > 0.0 && cost.is_finite(), "{cost}");
    let limit = (3.5 * cost).min(0.6);
    let server = server(limit);

    // Ramp: speaking sessions, one after another, until the server says no. Each is synthesised to its end
    // (buffered ahead) before the next comes, so no session's start competes with another's for the engine,
    // and the estimate the next admission reads has stopped moving. The first one teaches the server what a
    // chunk costs; until then only the count applies.
    let mut speaking = Vec::new();
    let mut refusals = Vec::new();
    while refusals.is_empty() {
        assert!(
            speaking.len() < MAX_SESSIONS - 1,
            "{} sessions admitted at limit {limit} and cost {cost}: the headroom never ran out",
            speaking.len()
        );
        match try_session(&server).await {
            Admitted::Yes(mut client) => {
                client.send_text(&long_text(), true).await.unwrap();
                speaking.push(play(client));
                synthesis_settled(&server).await;
            }
            Admitted::Refused(message) => refusals.push(message),
        }
    }
    assert!(!speaking.is_empty(), "not even one session fits at limit {limit}");

    // Synthesis is done (everything is buffered ahead): the estimate no longer moves. Should a session
    // still fit now (the last chunks moved the estimate down), it is admitted and stays silent.
    let mut silent = Vec::new();
    loop {
        match try_session(&server).await {
            Admitted::Yes(client) => silent.push(client),
            Admitted::Refused(message) => {
                refusals.push(message);
                break;
            }
        }
        assert!(
            speaking.len() + silent.len() < MAX_SESSIONS,
            "the headroom never ran out"
        );
    }
    let admitted = speaking.len() + silent.len();
    eprintln!(
        "measured cost {cost:.4} per session on one engine thread, limit {limit:.3}: {} speaking + {} silent admitted",
        speaking.len(),
        silent.len()
    );

    // Full: readiness says so, and twice as many sessions again are all refused.
    let readiness = http_get(&server.admin_base, "/readiness").unwrap();
    assert_eq!(readiness.status, 503, "{}", readiness.body);
    assert!(readiness.body.contains("engine_headroom"), "{}", readiness.body);
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..2 * admitted {
        attempts.spawn(try_url(server.url("/v1/stream")));
    }
    while let Some(outcome) = attempts.join_next().await {
        match outcome.unwrap() {
            Admitted::Yes(_) => panic!("a session was admitted past the headroom"),
            Admitted::Refused(message) => refusals.push(message),
        }
    }
    for message in &refusals {
        assert!(message.contains("no headroom"), "{message}");
    }
    let metrics = scrape(&server);
    let refused = refusals.len() as f64;
    assert_eq!(
        metrics.sum(
            "tts_gateway_admission_refusals_total",
            &[("limit", "engine_headroom")]
        ),
        refused
    );
    assert_eq!(
        metrics.sum(
            "tts_gateway_admission_refusals_total",
            &[("limit", "max_sessions")]
        ),
        0.0
    );
    assert_eq!(
        metrics.sum("tts_sessions_refused_total", &[("reason", "overloaded")]),
        refused
    );

    // The admitted sessions played through it all: every frame, in order, no underrun.
    for session in speaking {
        let played = session.await.unwrap();
        let Event::UtteranceEnd {
            frames,
            reason,
            underruns,
            ..
        } = played.end
        else {
            unreachable!()
        };
        assert_eq!(reason, "completed");
        assert_eq!(underruns, 0, "an admitted session underran");
        assert_eq!(frames as usize, played.sequences.len(), "frames lost");
        let first = played.sequences[0];
        let contiguous = played
            .sequences
            .iter()
            .enumerate()
            .all(|(i, s)| *s == first + i as u64);
        assert!(contiguous, "sequence gap");
    }
    assert_eq!(scrape(&server).sum("tts_underruns_total", &[]), 0.0);
    for client in silent {
        client.close().await;
    }
    // Room again once they are gone.
    let deadline = Instant::now() + WAIT;
    while http_get(&server.admin_base, "/readiness").unwrap().status != 200 {
        assert!(Instant::now() < deadline, "readiness never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(try_session(&server).await, Admitted::Yes(_)));
}

/// `gateway.max_buffered_frames` bounds the audio a session holds: a paused session stops asking for
/// synthesis once that much is waiting, and a STOP then throws away at most that plus the one chunk that was
/// at the engine; the session goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_session_holds_at_most_max_buffered_frames_and_one_chunk() {
    const BUFFERED: usize = 50;
    // 60 characters of espeak speech is ~4 s (200 frames); 300 leaves room for a slow speaker.
    const ONE_CHUNK_FRAMES: usize = 300;
    let config = temp_path("buffered.toml");
    std::fs::write(
        &config,
        format!("[engine]\nthreads = 1\n[gateway]\nmax_buffered_frames = {BUFFERED}\nmax_chunk_chars = 60\n"),
    )
    .unwrap();
    let server = start_espeak(&["--config", config.to_str().unwrap()]);
    let (mut client, _) = connect(&server, "/v1/stream").await;
    let text = [long_text(), long_text(), long_text()].join(" ");
    let total_chars = text.chars().count() as f64;
    client.send_text(&text, true).await.unwrap();
    while !matches!(client.next(WAIT).await.unwrap().event, Event::Audio { .. }) {}
    client.send_control("PAUSE").await.unwrap();

    // Synthesis stops by itself: the characters synthesised stop growing with the engine idle.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = -1.0;
    let synthesised = loop {
        assert!(Instant::now() < deadline, "synthesis never stopped while paused");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let metrics = scrape(&server);
        let chars = metrics.sum("tts_characters_synthesized_total", &[]);
        if chars == last && metrics.sum("tts_pool_busy_threads", &[]) == 0.0 {
            break chars;
        }
        last = chars;
    };
    assert!(
        synthesised < total_chars / 4.0,
        "{synthesised} of {total_chars} characters synthesised for a paused session"
    );

    let mut received = 1usize;
    client.send_control("STOP").await.unwrap();
    loop {
        match client.next(WAIT).await.unwrap().event {
            Event::Audio { .. } => received += 1,
            Event::UtteranceEnd { reason, .. } => {
                assert_eq!(reason, "stopped");
                break;
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    let dropped = scrape(&server).sum("tts_frames_dropped_total", &[("reason", "stop")]) as usize;
    eprintln!(
        "paused session: {received} frames sent before the PAUSE took hold, {dropped} held and dropped by STOP"
    );
    assert!(dropped >= BUFFERED, "the buffer filled to its bound: {dropped}");
    assert!(
        dropped <= BUFFERED + ONE_CHUNK_FRAMES,
        "held {dropped} frames, bound {BUFFERED} + one chunk"
    );

    client.send_text(MEDIUM_TEXT, true).await.unwrap();
    let after = read_utterance(&mut client).await;
    assert!(matches!(after.end, Some(Event::UtteranceEnd { ref reason, .. }) if reason == "completed"));
}
