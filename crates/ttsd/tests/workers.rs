//! Gateway and workers as separate processes of the real binary, over real gRPC, with a real
//! `redis-server` for discovery: sessions spread, a worker killed mid-utterance, a worker started late,
//! Redis restarted, and PAUSE isolation between sessions on one worker.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;
use tts_test_support::{Event, RedisServer, Scrape, ServerProcess, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_ttsd");

/// Fast heartbeats, discovery and health checks, so the tests see changes within a second.
fn fast_config(name: &str, extra: &str) -> String {
    let path = temp_path(&format!("{name}.toml"));
    let body = format!(
        "[worker]\nheartbeat_interval_seconds = 0.2\nregistration_ttl_seconds = 1.0\n\n\
         [workers]\nhealth_interval_seconds = 0.2\ndiscovery_interval_seconds = 0.2\n\
         stall_timeout_seconds = 3.0\n\n{extra}"
    );
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_owned()
}

fn worker(name: &str, voice: &str, extra: &[&str]) -> ServerProcess {
    let config = fast_config(name, "[engine]\npiper_noise_scale = 0.0\nthreads = 1\n");
    let mut args = vec!["--name", name, "--voice", voice, "--config", &config];
    args.extend_from_slice(extra);
    ServerProcess::start_worker(BIN, &root(), &args).expect("ttsd worker starts")
}

fn gateway(voice: &str, extra: &[&str]) -> ServerProcess {
    let config = fast_config(
        &format!("gateway-{}", extra.join("-").replace(['/', ':', '.'], "_")),
        "",
    );
    let mut args = vec!["--voice", voice, "--config", &config];
    args.extend_from_slice(extra);
    ServerProcess::start(BIN, &root(), &args).expect("ttsd serve starts")
}

fn scrape(base: &str) -> Scrape {
    let response = http_get(base, "/metrics").unwrap();
    assert_eq!(response.status, 200);
    Scrape::parse(&response.body).unwrap()
}

fn readiness(base: &str) -> (u16, serde_json::Value) {
    let response = http_get(base, "/readiness").unwrap();
    (
        response.status,
        serde_json::from_str(&response.body).unwrap_or_default(),
    )
}

/// Polls `probe` every 50 ms until it is true or `limit` passes.
async fn eventually(limit: Duration, what: &str, mut probe: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !probe() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sessions_on(worker: &ServerProcess) -> u64 {
    let body = http_get(&worker.admin_base, "/metrics/summary").unwrap().body;
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    summary["active_sessions"].as_u64().unwrap()
}

/// Speaks `text` on a new session and returns the utterance.
async fn speak(gateway: &ServerProcess, voice: &str, text: &str) -> Utterance {
    let (mut client, _) = connect(gateway, &format!("/v1/stream?voice={voice}")).await;
    client.send_text(text, true).await.unwrap();
    let utterance = read_utterance(&mut client).await;
    client.close().await;
    utterance
}

/// Every family `scrape` has is in docs/telemetry.md, and every row whose status names `part` is there.
fn assert_catalogued(scrape: &Scrape, part: &str) {
    let rows = catalogue_rows();
    let unlisted: Vec<&String> = scrape
        .families
        .keys()
        .filter(|name| !rows.iter().any(|(listed, _)| listed == *name))
        .collect();
    assert!(
        unlisted.is_empty(),
        "{part} emits families missing from docs/telemetry.md: {unlisted:?}"
    );
    let missing: Vec<&String> = rows
        .iter()
        .filter(|(_, status)| status.split(", ").any(|s| s == part))
        .map(|(name, _)| name)
        .filter(|name| !scrape.families.contains_key(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/telemetry.md rows for {part} that it never emitted: {missing:?}"
    );
}

fn redis() -> RedisServer {
    RedisServer::start().expect("redis-server starts (CI installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_found_through_redis_share_sessions_and_late_workers_and_redis_restarts_are_survived() {
    let mut redis = redis();
    let url = redis.url();
    let w1 = worker("w1", ESPEAK, &["--redis", &url]);
    let gw = gateway(ESPEAK, &["--redis", &url]);
    eventually(Duration::from_secs(10), "the gateway finds w1", || {
        readiness(&gw.admin_base).0 == 200
    })
    .await;

    // A worker started after the gateway is discovered.
    let w2 = worker("w2", ESPEAK, &["--redis", &url]);
    eventually(Duration::from_secs(10), "the gateway finds w2", || {
        let (_, body) = readiness(&gw.admin_base);
        body.to_string().contains("2 of 2 workers ready")
    })
    .await;

    // Four concurrent sessions spread over both workers, and every one gets its audio.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (mut client, _) = connect(&gw, &format!("/v1/stream?voice={ESPEAK}")).await;
        client.send_text(LONG_TEXT, true).await.unwrap();
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (on_w1, on_w2) = (sessions_on(&w1), sessions_on(&w2));
    assert_eq!(
        (on_w1, on_w2),
        (2, 2),
        "least-loaded routing spreads 4 sessions 2/2"
    );
    for client in &mut clients {
        let utterance = read_utterance(client).await;
        assert!(completed(&utterance));
        assert_frames_well_formed(&utterance.frames, utterance.frames[0].sequence);
        assert!(
            utterance.seconds() > 5.0,
            "whole text spoken: {} s",
            utterance.seconds()
        );
    }
    for client in clients {
        client.close().await;
    }
    let metrics = scrape(&gw.admin_base);
    for name in ["w1", "w2"] {
        let started = metrics.sum(
            "tts_worker_rpc_seconds_count",
            &[("worker", name), ("method", "start_session")],
        );
        assert_eq!(started, 2.0, "{name} got two StartSession calls");
        assert_eq!(metrics.get("tts_worker_up", &[("worker", name)]), Some(1.0));
    }
    assert!(
        metrics.sum("tts_worker_hop_seconds_count", &[]) > 0.0,
        "the hop is measured"
    );
    let worker_metrics = scrape(&w1.admin_base);
    assert!(
        worker_metrics.sum(
            "tts_worker_server_chunks_total",
            &[("worker", "w1"), ("outcome", "finished")]
        ) > 0.0,
        "w1's metrics carry its worker label"
    );

    // Redis goes away: the gateway keeps its view and keeps serving, and says so.
    redis.stop();
    eventually(
        Duration::from_secs(10),
        "health reports Redis down, readiness holds",
        || {
            let health = http_get(&gw.admin_base, "/health").unwrap();
            health.status == 503 && health.body.contains("unreachable") && readiness(&gw.admin_base).0 == 200
        },
    )
    .await;
    let during = speak(&gw, ESPEAK, MEDIUM_TEXT).await;
    assert!(!during.frames.is_empty(), "sessions go on while Redis is down");
    assert!(scrape(&gw.admin_base).sum("tts_redis_command_errors_total", &[]) > 0.0);

    // Redis comes back (empty): workers re-register and the gateway's view recovers.
    redis.restart().unwrap();
    eventually(Duration::from_secs(10), "discovery recovers", || {
        let health = http_get(&gw.admin_base, "/health").unwrap();
        health.body.contains("2 workers registered")
    })
    .await;
    let after = speak(&gw, ESPEAK, MEDIUM_TEXT).await;
    assert!(!after.frames.is_empty());

    // A worker that dies is taken out of routing, and its registration expires.
    let mut w2 = w2;
    w2.kill();
    eventually(Duration::from_secs(10), "w2 is down and gone", || {
        readiness(&gw.admin_base)
            .1
            .to_string()
            .contains("1 of 1 workers ready")
    })
    .await;
    let alone = speak(&gw, ESPEAK, MEDIUM_TEXT).await;
    assert!(!alone.frames.is_empty(), "w1 serves alone");

    // Every family either process emits is catalogued, and every catalogued one is emitted.
    assert_catalogued(&scrape(&gw.admin_base), "remote");
    assert_catalogued(&scrape(&w1.admin_base), "worker");
}

/// Two Piper workers (noise off, so the same text gives the same audio) behind a gateway with a static list.
async fn piper_pair(tag: &str) -> (ServerProcess, ServerProcess, ServerProcess) {
    let a = worker(&format!("{tag}-a"), PIPER, &[]);
    let b = worker(&format!("{tag}-b"), PIPER, &[]);
    let list = format!("{},{}", a.grpc_addr, b.grpc_addr);
    let gw = gateway(PIPER, &["--workers", &list]);
    eventually(Duration::from_secs(10), "both workers ready", || {
        readiness(&gw.admin_base)
            .1
            .to_string()
            .contains("2 of 2 workers ready")
    })
    .await;
    (a, b, gw)
}

fn completed(utterance: &Utterance) -> bool {
    matches!(&utterance.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "completed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stalls_mid_utterance_is_left_and_the_session_goes_on() {
    let (a, b, gw) = piper_pair("stalled").await;
    let reference = speak(&gw, PIPER, LONG_TEXT).await;
    let (mut client, _) = connect(&gw, &format!("/v1/stream?voice={PIPER}")).await;
    client.send_text(LONG_TEXT, true).await.unwrap();
    let mut utterance = Utterance::default();
    let first = client.next(WAIT).await.unwrap();
    let Event::Audio { sequence, pcm } = first.event else {
        panic!("audio first: {:?}", first.event);
    };
    utterance.frames.push(Frame {
        sequence,
        pcm,
        at: first.at,
    });
    // SIGSTOP: the process is alive and its sockets open, but it answers nothing.
    let stalled = if sessions_on(&a) == 1 { &a } else { &b };
    let signal = |name: &str| {
        std::process::Command::new("kill")
            .args([name, &stalled.pid().to_string()])
            .status()
            .unwrap()
    };
    signal("-STOP");
    let rest = read_utterance(&mut client).await;
    signal("-CONT");
    utterance.frames.extend(rest.frames);
    utterance.end = rest.end;
    assert!(
        completed(&utterance),
        "the session goes on, never hangs: {:?}",
        utterance.end
    );
    let ratio = utterance.seconds() / reference.seconds();
    assert!((0.85..1.15).contains(&ratio), "whole text: {ratio:.2}");
    let failovers = scrape(&gw.admin_base).sum("tts_worker_failovers_total", &[]);
    assert_eq!(failovers, 1.0, "one stream moved off the stalled worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_utterance_hands_the_rest_to_another_then_none_is_left() {
    let (mut a, mut b, gw) = piper_pair("killed").await;

    // The same text on an undisturbed session, for the expected length.
    let reference = speak(&gw, PIPER, LONG_TEXT).await;

    let (mut client, _) = connect(&gw, &format!("/v1/stream?voice={PIPER}")).await;
    client.send_text(LONG_TEXT, true).await.unwrap();
    let first = client.next(WAIT).await.unwrap();
    let Event::Audio { sequence, pcm } = first.event else {
        panic!("audio first: {:?}", first.event);
    };
    // Kill whichever worker holds the session, while it synthesises the next sentence.
    let (victim, survivor) = if sessions_on(&a) == 1 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    victim.kill();
    let mut utterance = read_utterance(&mut client).await;
    utterance.frames.insert(
        0,
        Frame {
            sequence,
            pcm,
            at: first.at,
        },
    );
    assert!(
        completed(&utterance),
        "the utterance completes on the other worker: {:?}",
        utterance.end
    );
    let ratio = utterance.seconds() / reference.seconds();
    assert!(
        (0.85..1.15).contains(&ratio),
        "the listener gets the whole text, not a repeat or a cut: {:.2} s vs {:.2} s",
        utterance.seconds(),
        reference.seconds()
    );
    let underruns = match &utterance.end {
        Some(Event::UtteranceEnd { underruns, .. }) => *underruns,
        _ => 0,
    };
    let metrics = scrape(&gw.admin_base);
    let failovers = metrics.sum("tts_worker_failovers_total", &[]);
    let gap_sum = metrics.sum("tts_worker_failover_gap_seconds_sum", &[]);
    eprintln!(
        "failover: {failovers} stream(s) moved; synthesis gap {:.0} ms; frames the listener missed (underruns): {underruns}",
        gap_sum * 1000.0
    );
    assert_eq!(failovers, 1.0, "one stream moved");
    assert!(gap_sum > 0.0 && gap_sum < 5.0, "the gap is measured: {gap_sum} s");

    // With no worker left the session gets WORKER_UNAVAILABLE and stays open.
    survivor.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.send_text(MEDIUM_TEXT, true).await.unwrap();
    let mut codes = Vec::new();
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        match client.next(WAIT).await.unwrap().event {
            Event::Error { code, message } => {
                assert!(message.contains("worker"), "the error says why: {message}");
                codes.push(code);
            }
            Event::UtteranceEnd { reason, .. } => {
                assert_eq!(reason, "failed");
                break;
            }
            Event::Closed | Event::SessionEnd { .. } => panic!("the session must stay open"),
            _ => {}
        }
    }
    assert_eq!(codes, vec!["WORKER_UNAVAILABLE".to_owned()]);
    client.send_text(MEDIUM_TEXT, true).await.unwrap();
    let again = client.next(WAIT).await.unwrap().event;
    assert!(
        matches!(&again, Event::Error { code, .. } if code == "WORKER_UNAVAILABLE"),
        "the session is still open and answers: {again:?}"
    );
    let second_end = read_utterance(&mut client).await;
    assert!(
        matches!(&second_end.end, Some(Event::UtteranceEnd { reason, .. }) if reason == "failed"),
        "{:?}",
        second_end.end
    );
    assert_eq!(readiness(&gw.admin_base).0, 503, "no worker: not ready");

    // A worker back at a known address is found again, and the same session speaks on it.
    let config = fast_config("killed-back", "[engine]\npiper_noise_scale = 0.0\nthreads = 1\n");
    let _back = ServerProcess::start_worker_on(
        BIN,
        &root(),
        &survivor.grpc_addr,
        &["--name", "killed-back", "--voice", PIPER, "--config", &config],
    )
    .expect("a worker starts on the old address");
    eventually(
        Duration::from_secs(10),
        "the gateway sees the worker again",
        || readiness(&gw.admin_base).0 == 200,
    )
    .await;
    client.send_text(MEDIUM_TEXT, true).await.unwrap();
    let recovered = read_utterance(&mut client).await;
    assert!(completed(&recovered), "the session recovers: {:?}", recovered.end);
    assert!(recovered.seconds() > 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_on_one_session_does_not_delay_another_on_the_same_worker() {
    let w = worker("pause-w", ESPEAK, &[]);
    let gw = gateway(ESPEAK, &["--workers", &w.grpc_addr]);
    eventually(Duration::from_secs(10), "the worker is ready", || {
        readiness(&gw.admin_base).0 == 200
    })
    .await;

    let (mut paused, _) = connect(&gw, &format!("/v1/stream?voice={ESPEAK}")).await;
    paused.send_text(LONG_TEXT, true).await.unwrap();
    let first = paused.next(WAIT).await.unwrap();
    assert!(matches!(first.event, Event::Audio { .. }));
    paused.send_control("PAUSE").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Drain what was in flight before the PAUSE, then nothing more may come.
    while let Ok(received) = tokio::time::timeout(Duration::from_millis(200), paused.next(WAIT)).await {
        let _ = received.unwrap();
    }

    let (mut other, _) = connect(&gw, &format!("/v1/stream?voice={ESPEAK}")).await;
    let sent = other.send_text(MEDIUM_TEXT, true).await.unwrap();
    let utterance = read_utterance(&mut other).await;
    let first_audio = (utterance.frames[0].at - sent).as_secs_f64();
    let intervals: Vec<f64> = utterance
        .frames
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect();
    let p99 = tts_test_support::percentile(&intervals, 99.0).unwrap();
    eprintln!(
        "other session on the same worker: first audio {:.1} ms, interval p99 {:.1} ms",
        first_audio * 1000.0,
        p99 * 1000.0
    );
    assert!(completed(&utterance));
    assert!(
        first_audio < 0.5,
        "not held behind the paused session: {first_audio} s"
    );
    assert!(p99 < 0.06, "paced while the other is paused: p99 {p99} s");

    // The paused session sent nothing meanwhile, and plays to the end after RESUME.
    let quiet = tokio::time::timeout(Duration::from_millis(300), paused.next(WAIT)).await;
    assert!(quiet.is_err(), "a paused session receives nothing: {quiet:?}");
    paused.send_control("RESUME").await.unwrap();
    let rest = read_utterance(&mut paused).await;
    assert!(completed(&rest));
    let controls = scrape(&w.admin_base);
    assert_eq!(
        controls.get(
            "tts_worker_server_controls_total",
            &[("worker", "pause-w"), ("command", "pause")]
        ),
        Some(1.0),
        "the PAUSE reached the worker"
    );
}
