//! Registration in Redis: `ttsd:worker:<name>` rewritten on every heartbeat with a TTL.
//!
//! The key expires on its own when the worker dies, so nothing has to clean up after a crash; on a clean
//! shutdown the worker deletes it so gateways stop routing to it at once. Redis being down never stops
//! the worker: it keeps serving and keeps trying, and registers again as soon as Redis answers.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, FromRedisValue, RedisError};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tts_proto::registry::{self, WorkerRecord};
use tts_telemetry::redis::{RedisCommand, RedisErrorReason, RedisMetrics, redact_url};

/// How often the record is rewritten.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a record outlives its worker's last heartbeat: several missed heartbeats, so one slow
/// write does not make the worker vanish.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// Longest wait for a connection or a reply; a heartbeat that takes longer counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Shutdown must not wait on an unreachable Redis: the key expires anyway.
const DEREGISTER_TIMEOUT: Duration = Duration::from_millis(500);
/// Guards the interval timer, which cannot tick every zero seconds.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);

/// Where and how often to register.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// `redis://[:password@]host:port[/db]`
    pub url: String,
    /// The worker's name: its key is `ttsd:worker:<name>`, and it overrides the record's `name`.
    pub name: String,
    pub heartbeat_interval: Duration,
    /// Expiry of each write, rounded up to whole seconds (Redis `EX`), at least one.
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The URL did not parse; `url` has its password redacted.
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("the worker name for Redis registration is empty")]
    EmptyName,
}

/// Validates the URL now (so `ttsd worker --redis bad` fails at startup with a clear error) and returns
/// the registration task. The task connects lazily, so a missing Redis never blocks startup; it runs
/// until `shutdown` turns true (or its sender is dropped), then deletes the key and returns.
///
/// `record` is called on every heartbeat so each write carries the worker's current load.
pub fn registration(
    config: RegistrationConfig,
    record: impl Fn() -> WorkerRecord + Send + Sync + 'static,
    metrics: RedisMetrics,
    shutdown: watch::Receiver<bool>,
) -> Result<impl Future<Output = ()> + Send + 'static, RegistryError> {
    let client = Client::open(config.url.as_str()).map_err(|error| RegistryError::InvalidUrl {
        url: redact_url(&config.url),
        reason: error.to_string(),
    })?;
    if config.name.is_empty() {
        return Err(RegistryError::EmptyName);
    }
    Ok(heartbeats(client, config, record, metrics, shutdown))
}

async fn heartbeats(
    client: Client,
    config: RegistrationConfig,
    record: impl Fn() -> WorkerRecord + Send + Sync + 'static,
    metrics: RedisMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = registry::key(&config.name);
    let ttl_seconds = ttl_seconds(config.ttl);
    let mut connection = match ConnectionManager::new_lazy_with_config(client, manager_config()) {
        Ok(connection) => connection,
        Err(error) => {
            tracing::error!(error = %error, key, "Cannot create the Redis client; this worker will not register.");
            shutdown_requested(&mut shutdown).await;
            return;
        }
    };
    let mut ticker = tokio::time::interval(config.heartbeat_interval.max(MIN_HEARTBEAT_INTERVAL));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut state = State::default();
    loop {
        tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => break,
            _ = ticker.tick() => {}
        }
        let mut current = record();
        current.name.clone_from(&config.name);
        current.ttl_seconds = ttl_seconds;
        current.heartbeat_unix_ms = unix_ms();
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(current.to_json()).arg("EX").arg(ttl_seconds);
        let write = timed::<()>(
            &mut connection,
            &metrics,
            RedisCommand::Set,
            &set,
            COMMAND_TIMEOUT,
        );
        let outcome = tokio::select! {
            biased;
            () = shutdown_requested(&mut shutdown) => break,
            outcome = write => outcome,
        };
        metrics.set_connected(outcome.is_ok());
        state.heartbeat(&key, ttl_seconds, outcome);
    }
    deregister(&mut connection, &metrics, &key).await;
    metrics.set_connected(false);
}

/// Timeouts on every connection attempt and reply, and no retry loop inside the client: the heartbeat
/// is the retry, and a command must fail within its timeout rather than wait on a reconnect backoff.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(0)
}

/// Deletes the key, best effort: a second try covers a connection that died while idle, and whatever
/// is left expires with its TTL.
async fn deregister(connection: &mut ConnectionManager, metrics: &RedisMetrics, key: &str) {
    let deadline = Instant::now() + DEREGISTER_TIMEOUT;
    let mut del = redis::cmd("DEL");
    del.arg(key);
    let mut outcome = timed::<u64>(connection, metrics, RedisCommand::Del, &del, DEREGISTER_TIMEOUT).await;
    if let Err(CommandError::Redis {
        reason: RedisErrorReason::Connection,
        ..
    }) = outcome
    {
        let left = deadline.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            outcome = timed::<u64>(connection, metrics, RedisCommand::Del, &del, left).await;
        }
    }
    match outcome {
        Ok(_) => tracing::info!(key, "Deregistered from Redis."),
        Err(error) => tracing::warn!(
            error = %error,
            key,
            "Could not deregister from Redis; the registration expires with its TTL."
        ),
    }
}

/// What the log has said so far, so an outage is reported once when it starts and once when it ends.
#[derive(Default)]
struct State {
    registered: bool,
    failing: bool,
}

impl State {
    fn heartbeat(&mut self, key: &str, ttl_seconds: u64, outcome: Result<(), CommandError>) {
        match outcome {
            Ok(()) => {
                if self.failing {
                    tracing::info!(key, "Redis registration recovered.");
                } else if !self.registered {
                    tracing::info!(key, ttl_seconds, "Registered in Redis.");
                }
                self.registered = true;
                self.failing = false;
            }
            Err(error) if self.failing => {
                tracing::debug!(error = %error, key, "Redis registration still failing.");
            }
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    key,
                    "Redis registration failed; retrying on every heartbeat."
                );
                self.failing = true;
            }
        }
    }
}

/// A command that did not succeed, with the reason it is counted under.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("no reply within {0:?}")]
    TimedOut(Duration),
    #[error("{source}")]
    Redis {
        reason: RedisErrorReason,
        source: RedisError,
    },
}

impl CommandError {
    fn reason(&self) -> RedisErrorReason {
        match self {
            Self::TimedOut(_) => RedisErrorReason::Timeout,
            Self::Redis { reason, .. } => *reason,
        }
    }
}

impl From<RedisError> for CommandError {
    fn from(source: RedisError) -> Self {
        let reason = if source.is_timeout() {
            RedisErrorReason::Timeout
        } else if source.is_io_error() {
            RedisErrorReason::Connection
        } else {
            RedisErrorReason::Response
        };
        Self::Redis { reason, source }
    }
}

/// Runs `cmd` within `timeout` and records it in `metrics`.
async fn timed<T: FromRedisValue>(
    connection: &mut ConnectionManager,
    metrics: &RedisMetrics,
    command: RedisCommand,
    cmd: &Cmd,
    timeout: Duration,
) -> Result<T, CommandError> {
    let started = Instant::now();
    let result = match tokio::time::timeout(timeout, cmd.query_async::<T>(connection)).await {
        Ok(reply) => reply.map_err(CommandError::from),
        Err(_) => Err(CommandError::TimedOut(timeout)),
    };
    let outcome = result.as_ref().map(|_| ()).map_err(CommandError::reason);
    metrics.command(command, started.elapsed(), outcome);
    result
}

/// Resolves once shutdown is requested; a dropped sender counts, since nobody is left to request it.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

fn ttl_seconds(ttl: Duration) -> u64 {
    ttl.as_secs_f64().ceil().max(1.0) as u64
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests;
