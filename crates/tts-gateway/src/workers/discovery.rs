//! Worker discovery through the Redis registry.
//!
//! Every interval the gateway lists the registrations with `SCAN` (never `KEYS`, which blocks Redis for
//! everyone), reads them with `MGET`, and publishes the live workers on a `watch` channel. Redis being
//! down is not the workers being down: the last known workers stay in the view, marked stale with
//! `redis_ok = false`, until Redis answers again.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, FromRedisValue, RedisError};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tts_proto::registry::{KEY_PATTERN, KEY_PREFIX, WorkerRecord};
use tts_telemetry::redis::{RedisCommand, RedisErrorReason, RedisMetrics, redact_url};

/// How often the registry is scanned: well under the registration TTL, so a new worker is routable
/// within a second and a dead one leaves the view soon after its key expires.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Keys Redis examines per `SCAN` call: small pages keep each call short for other clients.
const SCAN_COUNT: u64 = 100;
/// Keys per `MGET`, for the same reason.
const MGET_BATCH: usize = 100;
/// A scan that has not come back to cursor 0 after this many pages is cut short (a million keys).
const MAX_SCAN_PAGES: usize = 10_000;
/// Guards the interval timer, which cannot tick every zero seconds.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Distinct `worker` label values on the heartbeat age gauge; the rest share [`OVERFLOW_WORKER`].
const MAX_LABELLED_WORKERS: usize = 64;
const OVERFLOW_WORKER: &str = "other";
/// `last_error` is for a status page, not a log: a line is enough.
const MAX_ERROR_CHARS: usize = 200;

/// Where the registry lives and how often to read it.
#[derive(Debug, Clone)]
pub(crate) struct DiscoveryConfig {
    /// `redis://[:password@]host:port[/db]`
    pub(crate) url: String,
    pub(crate) interval: Duration,
    /// Longest wait for a connection or one command's reply.
    pub(crate) command_timeout: Duration,
}

/// What the gateway knows about its workers, republished after every scan.
#[derive(Debug, Clone, Default)]
pub(crate) struct DiscoveryView {
    /// Live registrations, sorted by name; kept from the last good scan while Redis fails.
    pub(crate) workers: Vec<WorkerRecord>,
    /// Whether the last scan reached Redis.
    pub(crate) redis_ok: bool,
    /// When a scan last succeeded.
    pub(crate) last_success: Option<std::time::Instant>,
    /// Why the last scan failed, in a line with no secrets; `None` after a good scan.
    pub(crate) last_error: Option<String>,
    /// Scans finished, good or failed: a waiter can tell a fresh view from the one it already saw.
    pub(crate) scans: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The URL did not parse; `url` has its password redacted.
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

/// `tts_registry_workers_discovered` and `tts_registry_heartbeat_age_seconds{worker}`.
#[derive(Clone)]
pub(crate) struct DiscoveryMetrics {
    discovered: Gauge,
    heartbeat_age: Family<WorkerLabels, Gauge<f64, AtomicU64>>,
    /// Workers that have a series of their own, so each keeps its label while it stays registered.
    labelled: Arc<Mutex<BTreeSet<String>>>,
}

impl DiscoveryMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let discovered = Gauge::default();
        let heartbeat_age = Family::<WorkerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "tts_registry_workers_discovered",
            "Workers with a live registration at the last discovery scan",
            discovered.clone(),
        );
        registry.register(
            "tts_registry_heartbeat_age_seconds",
            "Scan time minus the worker's last heartbeat; workers past the first 64 share worker=\"other\", \
             which shows the oldest of them",
            heartbeat_age.clone(),
        );
        Self {
            discovered,
            heartbeat_age,
            labelled: Arc::default(),
        }
    }

    /// Records a good scan that found `workers` at `now_unix_ms`; the series of workers no longer
    /// registered are removed rather than left at their last age.
    fn scanned(&self, workers: &[WorkerRecord], now_unix_ms: u64) {
        self.discovered.set(workers.len() as i64);
        let mut labelled = self.labelled.lock().unwrap_or_else(PoisonError::into_inner);
        let present: HashSet<&str> = workers.iter().map(|w| w.name.as_str()).collect();
        labelled.retain(|name| {
            let keep = present.contains(name.as_str());
            if !keep {
                self.heartbeat_age.remove(&WorkerLabels { worker: name.clone() });
            }
            keep
        });
        let mut oldest_overflow: Option<f64> = None;
        for worker in workers {
            let age = now_unix_ms.saturating_sub(worker.heartbeat_unix_ms) as f64 / 1000.0;
            if labelled.contains(&worker.name) || labelled.len() < MAX_LABELLED_WORKERS {
                labelled.insert(worker.name.clone());
                self.heartbeat_age
                    .get_or_create(&WorkerLabels {
                        worker: worker.name.clone(),
                    })
                    .set(age);
            } else {
                oldest_overflow = Some(oldest_overflow.map_or(age, |oldest| oldest.max(age)));
            }
        }
        let overflow = WorkerLabels {
            worker: OVERFLOW_WORKER.to_owned(),
        };
        match oldest_overflow {
            Some(age) => {
                self.heartbeat_age.get_or_create(&overflow).set(age);
            }
            None => {
                self.heartbeat_age.remove(&overflow);
            }
        }
    }
}

/// Validates the URL now, so a bad one fails startup with a clear error, and returns the discovery
/// task. The task connects lazily, so a missing Redis never blocks startup; it runs until `shutdown`
/// turns true (or its sender is dropped).
pub(crate) fn discovery(
    config: DiscoveryConfig,
    redis: RedisMetrics,
    metrics: DiscoveryMetrics,
    view: watch::Sender<DiscoveryView>,
    shutdown: watch::Receiver<bool>,
) -> Result<impl Future<Output = ()> + Send + 'static, DiscoveryError> {
    let client = Client::open(config.url.as_str()).map_err(|error| DiscoveryError::InvalidUrl {
        url: redact_url(&config.url),
        reason: error.to_string(),
    })?;
    Ok(scans(client, config, redis, metrics, view, shutdown))
}

async fn scans(
    client: Client,
    config: DiscoveryConfig,
    redis: RedisMetrics,
    metrics: DiscoveryMetrics,
    view: watch::Sender<DiscoveryView>,
    mut shutdown: watch::Receiver<bool>,
) {
    let password = client
        .get_connection_info()
        .redis_settings()
        .password()
        .map(str::to_owned);
    let connection = match ConnectionManager::new_lazy_with_config(client, manager_config(&config)) {
        Ok(connection) => connection,
        Err(error) => {
            tracing::error!(error = %error, "Cannot create the Redis client; no workers will be discovered.");
            shutdown_requested(&mut shutdown).await;
            return;
        }
    };
    let mut scanner = Scanner {
        connection,
        metrics: redis,
        command_timeout: config.command_timeout,
        warned: HashSet::new(),
    };
    let mut publisher = Publisher {
        metrics,
        view,
        password,
        failing: false,
    };
    let mut ticker = tokio::time::interval(config.interval.max(MIN_INTERVAL));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => break,
            _ = ticker.tick() => {}
        }
        let outcome = tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => break,
            outcome = scanner.scan() => outcome,
        };
        scanner.metrics.set_connected(outcome.is_ok());
        publisher.publish(outcome);
    }
    scanner.metrics.set_connected(false);
}

/// Timeouts on every connection attempt and reply, and no retry loop inside the client: the next scan
/// is the retry, and a command must fail within its timeout rather than wait on a reconnect backoff.
fn manager_config(config: &DiscoveryConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.command_timeout))
        .set_response_timeout(Some(config.command_timeout))
        .set_number_of_retries(0)
}

struct Scanner {
    connection: ConnectionManager,
    metrics: RedisMetrics,
    command_timeout: Duration,
    /// Keys whose malformed value has been logged, so a bad key warns once rather than every scan.
    warned: HashSet<String>,
}

impl Scanner {
    /// One discovery round: the parseable registrations, sorted by name.
    async fn scan(&mut self) -> Result<Vec<WorkerRecord>, CommandError> {
        let keys = self.keys().await?;
        let mut workers = Vec::with_capacity(keys.len());
        for batch in keys.chunks(MGET_BATCH) {
            let mut mget = redis::cmd("MGET");
            mget.arg(batch);
            // Bytes, not strings: one value that is not UTF-8 must not fail the whole batch.
            let values: Vec<Option<Vec<u8>>> = self.timed(RedisCommand::Mget, &mget).await?;
            // A key that expired between SCAN and MGET reads as nil: the worker just left.
            for (key, value) in batch.iter().zip(values) {
                let Some(value) = value else { continue };
                match parse(key, &value) {
                    Ok(record) => {
                        self.warned.remove(key);
                        workers.push(record);
                    }
                    Err(error) => {
                        if self.warned.insert(key.clone()) {
                            tracing::warn!(key, error = %error, "Skipping a malformed worker registration.");
                        }
                    }
                }
            }
        }
        // A key that comes back malformed after it went away is news again.
        self.warned.retain(|key| keys.binary_search(key).is_ok());
        workers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(workers)
    }

    /// Every registration key, sorted, each once (`SCAN` may return a key twice).
    async fn keys(&mut self) -> Result<Vec<String>, CommandError> {
        let mut keys = BTreeSet::new();
        let mut cursor = 0_u64;
        for _ in 0..MAX_SCAN_PAGES {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(KEY_PATTERN)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, page): (u64, Vec<Vec<u8>>) = self.timed(RedisCommand::Scan, &scan).await?;
            keys.extend(page.into_iter().filter_map(|key| String::from_utf8(key).ok()));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(keys.into_iter().collect())
    }

    /// Runs `cmd` within the command timeout and records it.
    async fn timed<T: FromRedisValue>(
        &mut self,
        command: RedisCommand,
        cmd: &Cmd,
    ) -> Result<T, CommandError> {
        let started = Instant::now();
        let reply = tokio::time::timeout(self.command_timeout, cmd.query_async::<T>(&mut self.connection));
        let result = match reply.await {
            Ok(reply) => reply.map_err(|source| CommandError::failed(command, source)),
            Err(_) => Err(CommandError::TimedOut {
                command: command.as_str(),
                timeout: self.command_timeout,
            }),
        };
        let outcome = result.as_ref().map(|_| ()).map_err(CommandError::reason);
        self.metrics.command(command, started.elapsed(), outcome);
        result
    }
}

/// Turns each scan's outcome into a view, metrics, and a log line when Redis goes away or comes back.
struct Publisher {
    metrics: DiscoveryMetrics,
    view: watch::Sender<DiscoveryView>,
    /// Blanked out of error messages.
    password: Option<String>,
    /// Whether the last scan failed, so an outage is logged once when it starts and once when it ends.
    failing: bool,
}

impl Publisher {
    fn publish(&mut self, outcome: Result<Vec<WorkerRecord>, CommandError>) {
        match outcome {
            Ok(workers) => {
                if self.failing {
                    tracing::info!(workers = workers.len(), "Redis discovery recovered.");
                }
                self.failing = false;
                self.metrics.scanned(&workers, unix_ms());
                self.view.send_modify(|view| {
                    view.workers = workers;
                    view.redis_ok = true;
                    view.last_success = Some(std::time::Instant::now());
                    view.last_error = None;
                    view.scans += 1;
                });
            }
            Err(error) => {
                let reason = short_reason(&error, self.password.as_deref());
                if self.failing {
                    tracing::debug!(error = %reason, "Redis discovery still failing.");
                } else {
                    tracing::warn!(
                        error = %reason,
                        "Redis discovery failed; keeping the last known workers."
                    );
                }
                self.failing = true;
                // The workers stay: Redis being unreachable says nothing about them.
                self.view.send_modify(|view| {
                    view.redis_ok = false;
                    view.last_error = Some(reason);
                    view.scans += 1;
                });
            }
        }
    }
}

/// A command that did not succeed, with the reason it is counted under.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("{command}: no reply within {timeout:?}")]
    TimedOut {
        command: &'static str,
        timeout: Duration,
    },
    #[error("{command}: {source}")]
    Failed {
        command: &'static str,
        reason: RedisErrorReason,
        source: RedisError,
    },
}

impl CommandError {
    fn failed(command: RedisCommand, source: RedisError) -> Self {
        let reason = if source.is_timeout() {
            RedisErrorReason::Timeout
        } else if source.is_io_error() {
            RedisErrorReason::Connection
        } else {
            RedisErrorReason::Response
        };
        Self::Failed {
            command: command.as_str(),
            reason,
            source,
        }
    }

    fn reason(&self) -> RedisErrorReason {
        match self {
            Self::TimedOut { .. } => RedisErrorReason::Timeout,
            Self::Failed { reason, .. } => *reason,
        }
    }
}

/// Why a registration value was skipped.
#[derive(Debug, thiserror::Error)]
enum MalformedRecord {
    #[error("not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    #[error("not a worker record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("names worker {name:?}, not the one in its key")]
    NameMismatch { name: String },
}

/// A registration value, which must name the same worker as its key: two keys claiming one worker
/// would otherwise route to it twice.
fn parse(key: &str, value: &[u8]) -> Result<WorkerRecord, MalformedRecord> {
    let record = WorkerRecord::from_json(std::str::from_utf8(value)?)?;
    if key.strip_prefix(KEY_PREFIX) != Some(record.name.as_str()) {
        return Err(MalformedRecord::NameMismatch { name: record.name });
    }
    Ok(record)
}

/// The error in one line for `last_error`: cut short, and with the password blanked in case the client
/// library ever echoes it.
fn short_reason(error: &CommandError, password: Option<&str>) -> String {
    let mut reason = error.to_string();
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        reason = reason.replace(password, "***");
    }
    match reason.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &reason[..cut]),
        None => reason,
    }
}

/// Resolves once shutdown is requested; a dropped sender counts, since nobody is left to request it.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests;
