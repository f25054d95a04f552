use prometheus_client::encoding::text::encode;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;
use tts_telemetry::logging::CapturedLogs;
use tts_test_support::RedisServer;

use super::*;

const INTERVAL: Duration = Duration::from_millis(100);
/// Generous bound for anything that should happen within a few scans, on a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(10);

fn record(name: &str, heartbeat_unix_ms: u64) -> WorkerRecord {
    WorkerRecord {
        name: name.into(),
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
        heartbeat_unix_ms,
        ttl_seconds: 30,
        version: "0.1.0".into(),
    }
}

struct Running {
    task: JoinHandle<()>,
    view: watch::Receiver<DiscoveryView>,
    shutdown: watch::Sender<bool>,
    registry: Registry,
}

impl Running {
    fn start(url: &str) -> Self {
        let mut registry = Registry::default();
        let redis = RedisMetrics::register(&mut registry);
        let metrics = DiscoveryMetrics::register(&mut registry);
        let (view_tx, view) = watch::channel(DiscoveryView::default());
        let (shutdown, receiver) = watch::channel(false);
        let config = DiscoveryConfig {
            url: url.to_owned(),
            interval: INTERVAL,
            command_timeout: Duration::from_secs(1),
        };
        let task = tokio::spawn(discovery(config, redis, metrics, view_tx, receiver).unwrap());
        Self {
            task,
            view,
            shutdown,
            registry,
        }
    }

    /// Waits (at most `PATIENCE`) for a view published after this call that satisfies `done`.
    async fn wait_for(&mut self, what: &str, done: impl Fn(&DiscoveryView) -> bool) -> DiscoveryView {
        let deadline = Instant::now() + PATIENCE;
        self.view.mark_unchanged();
        loop {
            match tokio::time::timeout_at(deadline, self.view.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("no view where {what}; last: {:?}", *self.view.borrow()),
            }
            let view = self.view.borrow_and_update().clone();
            if done(&view) {
                return view;
            }
        }
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).unwrap();
        text
    }

    fn sample(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the task ends promptly on shutdown")
            .unwrap();
    }
}

fn names(view: &DiscoveryView) -> Vec<&str> {
    view.workers.iter().map(|w| w.name.as_str()).collect()
}

async fn connect(server: &RedisServer) -> MultiplexedConnection {
    let client = Client::open(server.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// `SET key value PX ttl_ms`, as a worker would write it (in milliseconds, to expire within a test).
async fn set(connection: &mut MultiplexedConnection, key: &str, value: &str, ttl_ms: u64) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("PX")
        .arg(ttl_ms)
        .exec_async(connection)
        .await
        .unwrap();
}

async fn register(connection: &mut MultiplexedConnection, record: &WorkerRecord, ttl_ms: u64) {
    let key = tts_proto::registry::key(&record.name);
    set(connection, &key, &record.to_json(), ttl_ms).await;
}

#[tokio::test]
async fn registered_workers_are_discovered_sorted_with_their_heartbeat_age() {
    let server = RedisServer::start().unwrap();
    let mut writer = connect(&server).await;
    let two_seconds_ago = unix_ms() - 2000;
    register(&mut writer, &record("w-b", two_seconds_ago), 30_000).await;
    register(&mut writer, &record("w-a", unix_ms()), 30_000).await;
    // Not a registration: outside the pattern.
    set(&mut writer, "ttsd:other:w-c", "{}", 30_000).await;

    let mut running = Running::start(&server.url());
    let view = running.wait_for("two workers", |v| v.workers.len() == 2).await;
    assert_eq!(names(&view), ["w-a", "w-b"]);
    assert_eq!(view.workers[1], record("w-b", two_seconds_ago));
    assert!(view.redis_ok);
    assert!(view.last_success.is_some());
    assert_eq!(view.last_error, None);

    assert_eq!(running.sample("tts_registry_workers_discovered"), Some(2.0));
    // Against the test's own clock: written 2 s before the scan, read within the patience after it.
    let age = running
        .sample("tts_registry_heartbeat_age_seconds{worker=\"w-b\"}")
        .unwrap();
    let upper = unix_ms().saturating_sub(two_seconds_ago) as f64 / 1000.0;
    assert!((2.0..=upper).contains(&age), "age {age}, at most {upper}");
    assert!(running.sample("tts_redis_command_seconds_count{command=\"scan\"}") >= Some(1.0));
    assert!(running.sample("tts_redis_command_seconds_count{command=\"mget\"}") >= Some(1.0));
    assert_eq!(running.sample("tts_redis_connections_active"), Some(1.0));
    running.stop().await;
}

#[tokio::test]
async fn an_expired_registration_leaves_the_view_and_its_series_goes() {
    let server = RedisServer::start().unwrap();
    let mut writer = connect(&server).await;
    let mut running = Running::start(&server.url());
    register(&mut writer, &record("short", unix_ms()), 1500).await;
    register(&mut writer, &record("long", unix_ms()), 30_000).await;

    running.wait_for("both workers", |v| v.workers.len() == 2).await;
    assert!(running.metrics().contains("worker=\"short\""));
    let view = running
        .wait_for("the short one expired", |v| v.workers.len() == 1)
        .await;
    assert_eq!(names(&view), ["long"]);
    assert_eq!(running.sample("tts_registry_workers_discovered"), Some(1.0));
    let text = running.metrics();
    assert!(!text.contains("worker=\"short\""), "{text}");
    assert!(text.contains("worker=\"long\""), "{text}");
    running.stop().await;
}

#[tokio::test]
async fn malformed_registrations_are_skipped() {
    let server = RedisServer::start().unwrap();
    let mut writer = connect(&server).await;
    register(&mut writer, &record("good", unix_ms()), 30_000).await;
    set(&mut writer, "ttsd:worker:garbage", "not json", 30_000).await;
    set(
        &mut writer,
        "ttsd:worker:partial",
        "{\"name\":\"partial\"}",
        30_000,
    )
    .await;
    let impostor = record("good", unix_ms()).to_json();
    set(&mut writer, "ttsd:worker:impostor", &impostor, 30_000).await;
    redis::cmd("SET")
        .arg("ttsd:worker:binary")
        .arg(&[0xff_u8, 0xfe][..])
        .exec_async(&mut writer)
        .await
        .unwrap();

    let (logs, _guard) = CapturedLogs::capture();
    let mut running = Running::start(&server.url());
    let view = running.wait_for("three scans", |v| v.scans >= 3).await;
    assert_eq!(names(&view), ["good"]);
    assert_eq!(
        logs.count("WARN", "Skipping a malformed worker registration."),
        4,
        "once per bad key, not once per scan"
    );
    assert!(view.redis_ok, "bad values are not a Redis failure");
    assert_eq!(running.sample("tts_registry_workers_discovered"), Some(1.0));
    running.stop().await;
}

#[tokio::test]
async fn an_outage_keeps_the_last_workers_and_discovery_recovers_after_restart() {
    let mut server = RedisServer::start().unwrap();
    let mut writer = connect(&server).await;
    register(&mut writer, &record("w1", unix_ms()), 30_000).await;
    let (logs, _guard) = CapturedLogs::capture();
    let mut running = Running::start(&server.url());
    running.wait_for("w1", |v| v.workers.len() == 1).await;

    server.stop();
    running.wait_for("Redis down", |v| !v.redis_ok).await;
    let view = running
        .wait_for("three failed scans", |v| !v.redis_ok && v.scans >= 3)
        .await;
    assert_eq!(names(&view), ["w1"], "the last known workers stay");
    let error = view.last_error.unwrap();
    assert!(
        error.starts_with("scan: ") || error.starts_with("mget: "),
        "{error}"
    );
    assert!(view.last_success.is_some());
    assert!(!running.task.is_finished());
    assert_eq!(running.sample("tts_registry_workers_discovered"), Some(1.0));
    assert_eq!(running.sample("tts_redis_connections_active"), Some(0.0));
    let errors = running.metrics();
    assert!(
        errors.contains("tts_redis_command_errors_total{command=\"scan\",reason=\"connection\"}"),
        "{errors}"
    );

    // The restarted server is empty until a worker registers again.
    server.restart().unwrap();
    let mut writer = connect(&server).await;
    register(&mut writer, &record("w2", unix_ms()), 30_000).await;
    let view = running
        .wait_for("recovered with w2", |v| {
            v.redis_ok && v.workers.len() == 1 && v.workers[0].name == "w2"
        })
        .await;
    assert_eq!(view.last_error, None);
    assert_eq!(running.sample("tts_redis_connections_active"), Some(1.0));
    running.stop().await;
    let failed = "Redis discovery failed; keeping the last known workers.";
    assert_eq!(logs.count("WARN", failed), 1, "once per outage");
    assert_eq!(logs.count("INFO", "Redis discovery recovered."), 1);
}

#[tokio::test]
async fn a_failure_reason_never_carries_the_password() {
    // The server has no password, so authenticating with one fails on every connection attempt.
    let server = RedisServer::start().unwrap();
    let url = format!("redis://:s3cret-pass@127.0.0.1:{}", server.port());
    let mut running = Running::start(&url);
    let view = running
        .wait_for("a failed scan", |v| !v.redis_ok && v.scans >= 1)
        .await;
    let error = view.last_error.unwrap();
    assert!(!error.contains("s3cret"), "{error}");
    assert!(!error.is_empty());
    running.stop().await;
}

#[tokio::test]
async fn a_missing_redis_does_not_block_and_shutdown_is_prompt() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut running = Running::start(&format!("redis://127.0.0.1:{port}"));
    let view = running.wait_for("a failed scan", |v| v.scans >= 2).await;
    assert!(!view.redis_ok);
    assert!(view.workers.is_empty());
    assert_eq!(view.last_success, None);
    let stopping = Instant::now();
    running.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_invalid_url_is_rejected_at_once_without_its_password() {
    let mut registry = Registry::default();
    let redis = RedisMetrics::register(&mut registry);
    let metrics = DiscoveryMetrics::register(&mut registry);
    let (view, _) = watch::channel(DiscoveryView::default());
    let (_shutdown, receiver) = watch::channel(false);
    let config = DiscoveryConfig {
        url: "http://user:s3cret@cache:6379".into(),
        interval: DEFAULT_DISCOVERY_INTERVAL,
        command_timeout: Duration::from_secs(1),
    };
    let error = discovery(config, redis, metrics, view, receiver)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with("invalid Redis URL http://user:***@cache:6379: "),
        "{error}"
    );
}

#[test]
fn heartbeat_ages_are_labelled_for_at_most_64_workers_and_the_rest_share_other() {
    let mut registry = Registry::default();
    let metrics = DiscoveryMetrics::register(&mut registry);
    let now = 1_700_000_100_000;
    // w00 … w69; w69's heartbeat is the oldest, 69 s before the scan.
    let workers: Vec<_> = (0..70)
        .map(|i| record(&format!("w{i:02}"), now - i * 1000))
        .collect();
    metrics.scanned(&workers, now);
    let text = |registry: &Registry| {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text
    };
    let series = |text: &str| {
        text.lines()
            .filter(|line| line.starts_with("tts_registry_heartbeat_age_seconds{"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let all = text(&registry);
    let lines = series(&all);
    assert_eq!(lines.len(), 65, "{all}");
    assert!(
        all.contains("tts_registry_heartbeat_age_seconds{worker=\"w00\"} 0.0"),
        "{all}"
    );
    assert!(
        all.contains("tts_registry_heartbeat_age_seconds{worker=\"w63\"} 63.0"),
        "{all}"
    );
    assert!(!all.contains("worker=\"w64\""), "{all}");
    assert!(
        all.contains("tts_registry_heartbeat_age_seconds{worker=\"other\"} 69.0"),
        "{all}"
    );
    assert!(all.contains("tts_registry_workers_discovered 70"), "{all}");

    // w00 leaves: its slot goes to a newcomer, while the others keep theirs.
    metrics.scanned(&workers[1..65], now);
    let all = text(&registry);
    assert_eq!(series(&all).len(), 64, "{all}");
    assert!(!all.contains("worker=\"w00\""), "{all}");
    assert!(all.contains("worker=\"w64\""), "{all}");
    assert!(
        !all.contains("{worker=\"other\"}"),
        "no overflow, no series: {all}"
    );

    metrics.scanned(&[], now);
    let all = text(&registry);
    assert!(series(&all).is_empty(), "{all}");
    assert!(all.contains("tts_registry_workers_discovered 0"), "{all}");
}

#[test]
fn failure_reasons_are_one_short_line() {
    let long = CommandError::TimedOut {
        command: "scan",
        timeout: Duration::from_secs(1),
    };
    assert_eq!(short_reason(&long, None), "scan: no reply within 1s");
    assert_eq!(short_reason(&long, Some("scan")), "***: no reply within 1s");
    let source = RedisError::from(std::io::Error::other("x".repeat(500)));
    let failed = CommandError::failed(RedisCommand::Mget, source);
    assert_eq!(failed.reason(), RedisErrorReason::Connection);
    let reason = short_reason(&failed, None);
    assert_eq!(reason.chars().count(), MAX_ERROR_CHARS + 1);
    assert!(reason.starts_with("mget: xxx") && reason.ends_with('…'));
}
