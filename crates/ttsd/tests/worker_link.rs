//! A session's link to its worker, with a real `ttsd worker` and gateway over real gRPC: what the worker
//! reports is counted on the gateway (engine busy seconds), a PAUSE/RESUME storm collapses to the final
//! state, and a STOP after a PAUSE leaves the worker playing the next utterance.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;
use tts_test_support::{Event, Scrape, ServerProcess, StreamClient, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_ttsd");

fn config(name: &str) -> String {
    let path = temp_path(&format!("{name}.toml"));
    std::fs::write(
        &path,
        "[engine]\nthreads = 1\n\n[workers]\nhealth_interval_seconds = 0.2\nstall_timeout_seconds = 5.0\n",
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// A worker named `name` and a gateway using it, ready.
async fn pair(name: &str) -> (ServerProcess, ServerProcess) {
    let cfg = config(name);
    let worker = ServerProcess::start_worker(
        BIN,
        &root(),
        &["--name", name, "--voice", ESPEAK, "--config", &cfg],
    )
    .expect("ttsd worker starts");
    let gateway = ServerProcess::start(
        BIN,
        &root(),
        &[
            "--voice",
            ESPEAK,
            "--config",
            &cfg,
            "--workers",
            &worker.grpc_addr,
        ],
    )
    .expect("ttsd serve starts");
    let deadline = Instant::now() + WAIT;
    while http_get(&gateway.admin_base, "/readiness").unwrap().status != 200 {
        assert!(
            Instant::now() < deadline,
            "the gateway never saw its worker ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (worker, gateway)
}

fn scrape(base: &str) -> Scrape {
    Scrape::parse(&http_get(base, "/metrics").unwrap().body).unwrap()
}

/// Reads until `utterance_end`, counting frames on top of `already` read; errors are not expected.
async fn finish(client: &mut StreamClient, already: u64) -> (u64, String) {
    let mut frames = already;
    loop {
        match client.next(WAIT).await.unwrap().event {
            Event::Audio { .. } => frames += 1,
            Event::UtteranceEnd {
                frames: sent, reason, ..
            } => {
                assert_eq!(sent, frames, "frames lost");
                return (frames, reason);
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
}

async fn first_frame(client: &mut StreamClient) {
    while !matches!(client.next(WAIT).await.unwrap().event, Event::Audio { .. }) {}
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_seconds_reported_by_the_worker_are_counted_on_the_gateway() {
    let (worker, gateway) = pair("busy-w").await;
    // A static worker is labelled by the address the gateway dials.
    let label = [("worker", worker.grpc_addr.as_str())];
    let before = scrape(&gateway.admin_base);
    assert_eq!(
        before.get("tts_worker_engine_busy_seconds_total", &label),
        Some(0.0),
        "the series exists at zero for a known worker"
    );
    let (mut client, _) = connect(&gateway, "/v1/stream").await;
    client.send_text(LONG_TEXT, true).await.unwrap();
    let (_, reason) = finish(&mut client, 0).await;
    assert_eq!(reason, "completed");
    let busy = scrape(&gateway.admin_base)
        .get("tts_worker_engine_busy_seconds_total", &label)
        .unwrap();
    assert!(busy > 0.0, "busy seconds after real synthesis: {busy}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pause_resume_storm_collapses_and_the_session_plays_to_its_end() {
    let (worker, gateway) = pair("storm-w").await;
    let (mut client, _) = connect(&gateway, "/v1/stream").await;
    client.send_text(LONG_TEXT, true).await.unwrap();
    first_frame(&mut client).await;
    const STORM: usize = 200;
    for i in 0..STORM {
        let command = if i % 2 == 0 { "PAUSE" } else { "RESUME" };
        client.send_control(command).await.unwrap();
    }
    // The storm ends on RESUME: the rest plays, every frame, and nothing else is said.
    let (_, reason) = finish(&mut client, 1).await;
    assert_eq!(reason, "completed");

    let at_worker: f64 = ["pause", "resume"]
        .iter()
        .map(|command| {
            scrape(&worker.admin_base).sum(
                "tts_worker_server_controls_total",
                &[("worker", "storm-w"), ("command", command)],
            )
        })
        .sum();
    let coalesced = scrape(&gateway.admin_base).sum("tts_worker_link_controls_coalesced_total", &[]);
    eprintln!(
        "{STORM} PAUSE/RESUME sent: {at_worker} Control calls reached the worker, {coalesced} coalesced"
    );
    assert!(
        at_worker + coalesced <= STORM as f64,
        "every Control call stands for at least one message"
    );
    assert_eq!(at_worker % 2.0, 0.0, "the worker was left playing");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_pause_then_stop_the_next_utterance_plays() {
    let (_worker, gateway) = pair("stop-w").await;
    let (mut client, _) = connect(&gateway, "/v1/stream").await;
    client.send_text(LONG_TEXT, true).await.unwrap();
    first_frame(&mut client).await;
    client.send_control("PAUSE").await.unwrap();
    client.send_control("STOP").await.unwrap();
    loop {
        match client.next(WAIT).await.unwrap().event {
            Event::UtteranceEnd { reason, .. } => {
                assert_eq!(reason, "stopped");
                break;
            }
            Event::Audio { .. } => {}
            other => panic!("unexpected: {other:?}"),
        }
    }
    // The worker was paused when the STOP came; the session plays again, so must the worker.
    client.send_text(MEDIUM_TEXT, true).await.unwrap();
    let (frames, reason) = finish(&mut client, 0).await;
    assert_eq!(reason, "completed");
    assert!(frames > 50, "{frames} frames");
}
