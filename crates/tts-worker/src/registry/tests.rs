use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;
use tts_telemetry::logging::CapturedLogs;
use tts_test_support::RedisServer;

use super::*;

const HEARTBEAT: Duration = Duration::from_millis(100);
/// Generous bound for anything that should happen within a few heartbeats, on a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(10);

fn record() -> WorkerRecord {
    WorkerRecord {
        name: "ignored: the configured name wins".into(),
        address: "127.0.0.1:7001".into(),
        engines: vec!["espeak".into()],
        voices: vec!["espeak-en-us".into()],
        resident_voices: vec!["espeak-en-us".into()],
        max_sessions: 64,
        active_sessions: 0,
        engine_threads: 2,
        busy_threads: 0,
        queued_chunks: 0,
        ready: true,
        heartbeat_unix_ms: 0,
        ttl_seconds: 0,
        version: "0.1.0".into(),
    }
}

struct Running {
    task: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
    registry: Registry,
}

impl Running {
    fn start(url: &str, name: &str, record: impl Fn() -> WorkerRecord + Send + Sync + 'static) -> Self {
        let mut registry = Registry::default();
        let metrics = RedisMetrics::register(&mut registry);
        let (shutdown, receiver) = watch::channel(false);
        let config = RegistrationConfig {
            url: url.to_owned(),
            name: name.to_owned(),
            heartbeat_interval: HEARTBEAT,
            ttl: Duration::from_secs(3),
        };
        let task = tokio::spawn(registration(config, record, metrics, receiver).unwrap());
        Self {
            task,
            shutdown,
            registry,
        }
    }

    async fn stop(self) -> Registry {
        self.shutdown.send_replace(true);
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the task ends promptly on shutdown")
            .unwrap();
        self.registry
    }

    fn sample(&self, series: &str) -> f64 {
        sample(&self.registry, series)
    }
}

fn sample(registry: &Registry, series: &str) -> f64 {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn connect(server: &RedisServer) -> MultiplexedConnection {
    let client = Client::open(server.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

async fn get(connection: &mut MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(connection).await.unwrap()
}

/// Polls `GET key` until it has a value, for at most `PATIENCE`.
async fn wait_for_value(server: &RedisServer, key: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(Ok(mut connection)) = tokio::time::timeout(
            Duration::from_secs(1),
            Client::open(server.url())
                .unwrap()
                .get_multiplexed_async_connection(),
        )
        .await
            && let Some(value) = get(&mut connection, key).await
        {
            return value;
        }
        assert!(Instant::now() < deadline, "{key} never appeared");
        tokio::time::sleep(HEARTBEAT / 2).await;
    }
}

#[tokio::test]
async fn the_record_is_written_with_a_ttl_refreshed_and_deleted_on_shutdown() {
    let server = RedisServer::start().unwrap();
    let sessions = Arc::new(AtomicU32::new(0));
    let load = sessions.clone();
    let running = Running::start(&server.url(), "w1", move || WorkerRecord {
        active_sessions: load.load(Ordering::Relaxed),
        ..record()
    });
    let before = unix_ms();
    let written = WorkerRecord::from_json(&wait_for_value(&server, "ttsd:worker:w1").await).unwrap();
    assert_eq!(
        written,
        WorkerRecord {
            name: "w1".into(),
            ttl_seconds: 3,
            heartbeat_unix_ms: written.heartbeat_unix_ms,
            ..record()
        }
    );
    assert!(written.heartbeat_unix_ms + 1000 >= before && written.heartbeat_unix_ms <= unix_ms());
    let mut connection = connect(&server).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg("ttsd:worker:w1")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((1..=3).contains(&ttl), "TTL {ttl}");

    // Every heartbeat asks for the current record.
    sessions.store(5, Ordering::Relaxed);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = get(&mut connection, "ttsd:worker:w1").await.unwrap();
        if WorkerRecord::from_json(&value).unwrap().active_sessions == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the record was not refreshed");
        tokio::time::sleep(HEARTBEAT / 2).await;
    }
    assert_eq!(running.sample("tts_redis_connections_active"), 1.0);

    let registry = running.stop().await;
    assert_eq!(get(&mut connection, "ttsd:worker:w1").await, None);
    assert!(sample(&registry, "tts_redis_command_seconds_count{command=\"set\"}") >= 2.0);
    assert_eq!(
        sample(&registry, "tts_redis_command_seconds_count{command=\"del\"}"),
        1.0
    );
    assert_eq!(sample(&registry, "tts_redis_connections_active"), 0.0);
}

#[tokio::test]
async fn an_outage_does_not_end_the_task_and_it_registers_again_after_restart() {
    let (logs, _guard) = CapturedLogs::capture();
    let mut server = RedisServer::start().unwrap();
    let running = Running::start(&server.url(), "w2", record);
    wait_for_value(&server, "ttsd:worker:w2").await;

    server.stop();
    let deadline = Instant::now() + PATIENCE;
    while running.sample("tts_redis_command_errors_total{command=\"set\",reason=\"connection\"}") < 3.0 {
        assert!(Instant::now() < deadline, "heartbeats stopped failing?");
        tokio::time::sleep(HEARTBEAT).await;
    }
    assert!(!running.task.is_finished());
    assert_eq!(running.sample("tts_redis_connections_active"), 0.0);

    // The restarted server is empty: the worker must write its record again on its own.
    server.restart().unwrap();
    let restarted = Instant::now();
    wait_for_value(&server, "ttsd:worker:w2").await;
    assert!(
        restarted.elapsed() < Duration::from_secs(3),
        "re-registered after {:?}",
        restarted.elapsed()
    );
    let deadline = Instant::now() + PATIENCE;
    while running.sample("tts_redis_connections_active") != 1.0 {
        assert!(Instant::now() < deadline, "never reported connected again");
        tokio::time::sleep(HEARTBEAT / 2).await;
    }
    running.stop().await;
    let mut connection = connect(&server).await;
    assert_eq!(get(&mut connection, "ttsd:worker:w2").await, None);
    assert_eq!(logs.count("INFO", "Registered in Redis."), 1);
    let failed = "Redis registration failed; retrying on every heartbeat.";
    assert_eq!(
        logs.count("WARN", failed),
        1,
        "once per outage, not per heartbeat"
    );
    assert_eq!(logs.count("INFO", "Redis registration recovered."), 1);
    assert_eq!(logs.count("INFO", "Deregistered from Redis."), 1);
}

#[tokio::test]
async fn a_missing_redis_blocks_neither_startup_nor_shutdown() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let running = Running::start(&format!("redis://127.0.0.1:{port}"), "w3", record);
    let deadline = Instant::now() + PATIENCE;
    while running.sample("tts_redis_command_errors_total{command=\"set\",reason=\"connection\"}") < 2.0 {
        assert!(Instant::now() < deadline, "no failed heartbeats counted");
        tokio::time::sleep(HEARTBEAT).await;
    }
    let stopping = Instant::now();
    let registry = running.stop().await;
    assert!(stopping.elapsed() <= DEREGISTER_TIMEOUT + Duration::from_secs(1));
    assert_eq!(
        sample(&registry, "tts_redis_command_seconds_count{command=\"set\"}"),
        0.0,
        "refused connections are not latencies"
    );
}

#[test]
fn an_invalid_url_is_rejected_at_once_and_named_without_its_password() {
    let mut registry = Registry::default();
    let metrics = RedisMetrics::register(&mut registry);
    let (_shutdown, receiver) = watch::channel(false);
    let config = |url: &str| RegistrationConfig {
        url: url.to_owned(),
        name: "w4".into(),
        heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
        ttl: DEFAULT_TTL,
    };

    let error = registration(config("bad"), record, metrics.clone(), receiver.clone())
        .err()
        .unwrap();
    assert!(matches!(error, RegistryError::InvalidUrl { .. }));
    let message = error.to_string();
    assert!(message.starts_with("invalid Redis URL bad: "), "{message}");

    let error = registration(
        config("http://admin:s3cret@cache:6379"),
        record,
        metrics.clone(),
        receiver.clone(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("http://admin:***@cache:6379"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");

    let empty = RegistrationConfig {
        name: String::new(),
        ..config("redis://127.0.0.1:6379")
    };
    assert!(matches!(
        registration(empty, record, metrics, receiver).err(),
        Some(RegistryError::EmptyName)
    ));
}

#[test]
fn ttls_round_up_to_whole_seconds() {
    assert_eq!(ttl_seconds(Duration::from_secs(5)), 5);
    assert_eq!(ttl_seconds(Duration::from_millis(4500)), 5);
    assert_eq!(ttl_seconds(Duration::ZERO), 1);
}
