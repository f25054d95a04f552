//! Lies from the remote side: Redis registrations that are not records, that claim another worker's
//! name, or that advertise a worker which answers garbage; a static worker address that answers garbage.
//! A real `redis-server`, a real worker process and a real gateway; the garbage is a TCP listener here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tts_test_support::{RedisServer, ServerProcess, StreamClient};

use crate::common::{ESPEAK, WAIT, root, temp_path};
use crate::harness::{self, Stand};
use crate::speaks;

const BIN: &str = env!("CARGO_BIN_EXE_ttsd");

fn fast_config() -> String {
    let path = temp_path("robustness-remote.toml");
    std::fs::write(
        &path,
        "[worker]\nheartbeat_interval_seconds = 0.2\n\n\
         [workers]\nhealth_interval_seconds = 0.2\ndiscovery_interval_seconds = 0.2\n",
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// `SET key value EX 60` over RESP, as any Redis client would write it.
async fn redis_set(redis: &RedisServer, key: &str, value: &str) {
    let mut stream = TcpStream::connect(("127.0.0.1", redis.port())).await.unwrap();
    let mut command = String::from("*5\r\n");
    for part in ["SET", key, value, "EX", "60"] {
        command.push_str(&format!("${}\r\n{part}\r\n", part.len()));
    }
    stream.write_all(command.as_bytes()).await.unwrap();
    let mut reply = [0u8; 5];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"+OK\r\n");
}

/// A "worker" that answers every connection with bytes that are not HTTP/2, then hangs up.
async fn garbage_worker() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.0 200 OK\r\n\r\n\xff\xfe garbage \x00\x01\x02")
                .await;
        }
    });
    address
}

fn record(name: &str, address: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    serde_json::json!({
        "name": name, "address": address, "engines": ["espeak"], "voices": [ESPEAK],
        "resident_voices": [ESPEAK], "max_sessions": 1000, "active_sessions": 0, "engine_threads": 64,
        "busy_threads": 0, "queued_chunks": 0, "ready": true, "heartbeat_unix_ms": now,
        "ttl_seconds": 60, "version": "9.9.9"
    })
    .to_string()
}

/// Polls the gateway's `/metrics` until `probe` holds.
async fn until_scrape(stand: &Stand, what: &str, probe: impl Fn(&tts_test_support::Scrape) -> bool) {
    let until = Instant::now() + WAIT;
    while !probe(&stand.scrape()) {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_records_that_lie_and_workers_that_answer_garbage_are_never_routed_to() {
    let turn = harness::turn().await;
    let redis = RedisServer::start().unwrap();
    let config = fast_config();
    let junk = garbage_worker().await;
    let worker = ServerProcess::start_worker(
        BIN,
        &root(),
        &[
            "--name",
            "honest",
            "--voice",
            ESPEAK,
            "--redis",
            &redis.url(),
            "--config",
            &config,
        ],
    )
    .unwrap();
    harness::prioritise(worker.pid());
    let stand = Stand::on(turn, || {
        let args = [
            "--voice",
            ESPEAK,
            "--redis",
            &redis.url(),
            "--workers",
            &junk,
            "--config",
            &config,
        ];
        crate::common::start(&args)
    });
    let up = |s: &tts_test_support::Scrape, worker: &str| s.get("tts_worker_up", &[("worker", worker)]);
    // Up (health) and its capabilities read (voices, room): only then can it take a session.
    until_scrape(
        &stand,
        "the honest worker is up and its capabilities known",
        |s| {
            up(s, "honest") == Some(1.0)
                && s.sum("tts_worker_sessions_max", &[("worker", "honest")]) > 0.0
                && s.get("tts_registry_workers_discovered", &[]) == Some(1.0)
        },
    )
    .await;
    crate::until_speaking(&stand.server, ESPEAK).await;
    stand
        .attack("lying registrations and garbage workers", async {
            let liar = garbage_worker().await;
            redis_set(&redis, "ttsd:worker:garbage", "{ this is not a worker record").await;
            redis_set(&redis, "ttsd:worker:binary", "\u{1}\u{2}\u{3}").await;
            redis_set(&redis, "ttsd:worker:impostor", &record("honest", &liar)).await;
            redis_set(&redis, "ttsd:worker:liar", &record("liar", &liar)).await;
            // The malformed ones are skipped with one WARN each; the liar is found, checked, and down.
            for key in [
                "ttsd:worker:garbage",
                "ttsd:worker:binary",
                "ttsd:worker:impostor",
            ] {
                stand
                    .wait_for_log(&["Skipping a malformed worker registration.", key])
                    .await;
            }
            until_scrape(&stand, "the liar is discovered and failing its checks", |s| {
                s.sum(
                    "tts_worker_health_checks_total",
                    &[("worker", "liar"), ("outcome", "failed")],
                ) >= 2.0
            })
            .await;
            // A worker that claims the most room is still never given a session: ten sessions in a row
            // are all served by the honest worker.
            for _ in 0..10 {
                let url = stand.server.url(&format!("/v1/stream?voice={ESPEAK}"));
                let mut client = StreamClient::connect(&url).await.unwrap();
                let _ = client.next(WAIT).await.unwrap();
                speaks(&mut client, "beside a lying registration").await;
                client.close().await;
            }
        })
        .await;
    let scrape = stand.scrape();
    assert_eq!(up(&scrape, "liar"), Some(0.0));
    assert_eq!(up(&scrape, "honest"), Some(1.0));
    assert_eq!(
        scrape.sum("tts_worker_failovers_total", &[]),
        0.0,
        "nothing was placed on a liar"
    );
    let static_junk = scrape.sum(
        "tts_worker_health_checks_total",
        &[("worker", junk.as_str()), ("outcome", "failed")],
    );
    assert!(
        static_junk >= 2.0,
        "the static garbage worker fails its checks: {static_junk}"
    );
    assert_eq!(
        scrape.get("tts_registry_workers_discovered", &[]),
        Some(2.0),
        "honest and liar"
    );
    let warned = stand.log_lines(&["Skipping a malformed worker registration."]);
    assert_eq!(
        warned.len(),
        3,
        "one WARN per malformed key, not one per scan: {warned:?}"
    );
}
