//! Metrics for Redis commands, shared by every Redis client in the process.
//!
//! The client code times each command and reports it here with the command's name and how it ended;
//! this module knows nothing of the Redis client library, so any client can use it. [`redact_url`] lets
//! those clients name a Redis URL in logs and errors without its password.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Command latencies on a healthy network: half a millisecond to a second (the command timeout).
const COMMAND_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// The Redis commands ttsd sends; the `command` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedisCommand {
    Get,
    Set,
    Del,
    Scan,
    Mget,
    Ping,
}

impl RedisCommand {
    /// The label value: the command's name in lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Set => "set",
            Self::Del => "del",
            Self::Scan => "scan",
            Self::Mget => "mget",
            Self::Ping => "ping",
        }
    }
}

impl EncodeLabelValue for RedisCommand {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Why a command failed; the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedisErrorReason {
    /// No reply within the command timeout.
    Timeout,
    /// No connection: refused, dropped, or not yet re-established.
    Connection,
    /// Redis replied, with an error or with something the client could not use.
    Response,
}

impl RedisErrorReason {
    /// The label value: the reason in lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Response => "response",
        }
    }
}

impl EncodeLabelValue for RedisErrorReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: RedisCommand,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    command: RedisCommand,
    reason: RedisErrorReason,
}

/// `tts_redis_command_seconds{command}`, `tts_redis_command_errors_total{command,reason}` and
/// `tts_redis_connections_active`.
///
/// Each value stands for one client: a clone starts disconnected and moves the shared connections gauge
/// only when its own state changes, so two connected clients read 2, and dropping a connected one takes
/// it off the gauge. Give every client its own clone.
#[derive(Debug)]
pub struct RedisMetrics {
    seconds: Family<CommandLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    connections: Gauge,
    /// This client's last reported state, so repeated reports do not move the gauge twice.
    connected: AtomicBool,
}

impl RedisMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let seconds =
            Family::<CommandLabels, Histogram>::new_with_constructor(|| Histogram::new(COMMAND_BUCKETS));
        let errors = Family::<ErrorLabels, Counter>::default();
        let connections = Gauge::default();
        registry.register(
            "tts_redis_command_seconds",
            "Redis commands that got a reply, client side: command sent to reply read",
            seconds.clone(),
        );
        registry.register(
            "tts_redis_command_errors",
            "Redis commands that failed: no reply in time, no connection, or an error reply",
            errors.clone(),
        );
        registry.register(
            "tts_redis_connections_active",
            "Redis clients whose last command succeeded",
            connections.clone(),
        );
        Self {
            seconds,
            errors,
            connections,
            connected: AtomicBool::new(false),
        }
    }

    /// Records one command, `elapsed` from sending it to its reply or failure. Only commands that got a
    /// reply (success or an error reply) enter the latency histogram: a refused connection is not a fast
    /// command, nor a timeout a measurement of Redis.
    pub fn command(&self, command: RedisCommand, elapsed: Duration, outcome: Result<(), RedisErrorReason>) {
        if matches!(outcome, Ok(()) | Err(RedisErrorReason::Response)) {
            self.seconds
                .get_or_create(&CommandLabels { command })
                .observe(elapsed.as_secs_f64());
        }
        if let Err(reason) = outcome {
            self.errors.get_or_create(&ErrorLabels { command, reason }).inc();
        }
    }

    /// Reports whether this client's last command reached Redis.
    pub fn set_connected(&self, connected: bool) {
        if self.connected.swap(connected, Ordering::Relaxed) != connected {
            if connected {
                self.connections.inc();
            } else {
                self.connections.dec();
            }
        }
    }
}

impl Clone for RedisMetrics {
    /// A new client's view: the same series, its own connection state (not connected).
    fn clone(&self) -> Self {
        Self {
            seconds: self.seconds.clone(),
            errors: self.errors.clone(),
            connections: self.connections.clone(),
            connected: AtomicBool::new(false),
        }
    }
}

impl Drop for RedisMetrics {
    fn drop(&mut self) {
        self.set_connected(false);
    }
}

/// `url` with any password replaced by `***`, for logs and error messages. Works on strings that do not
/// parse as URLs too, since those are the ones that end up in error messages.
pub fn redact_url(url: &str) -> String {
    let mut redacted = url.to_owned();
    if let Some(scheme_end) = redacted.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = redacted[authority_start..]
            .find(['/', '?', '#'])
            .map_or(redacted.len(), |end| authority_start + end);
        if let Some(at) = redacted[authority_start..authority_end].rfind('@') {
            let userinfo = authority_start..authority_start + at;
            if let Some(colon) = redacted[userinfo.clone()].find(':') {
                redacted.replace_range(userinfo.start + colon + 1..userinfo.end, "***");
            }
        }
    }
    // `redis+unix:///path?pass=secret` carries the password in the query.
    if let Some(query_start) = redacted.find('?') {
        let mut query = String::new();
        for (i, pair) in redacted[query_start + 1..].split('&').enumerate() {
            if i > 0 {
                query.push('&');
            }
            match pair.split_once('=') {
                Some(("pass" | "password", _)) => {
                    query.push_str(&pair[..pair.find('=').map_or(0, |eq| eq + 1)]);
                    query.push_str("***");
                }
                _ => query.push_str(pair),
            }
        }
        redacted.replace_range(query_start + 1.., &query);
    }
    redacted
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn replies_are_timed_and_failures_counted_by_command_and_reason() {
        let mut registry = Registry::default();
        let metrics = RedisMetrics::register(&mut registry);
        metrics.command(RedisCommand::Set, Duration::from_micros(700), Ok(()));
        metrics.command(
            RedisCommand::Scan,
            Duration::from_millis(3),
            Err(RedisErrorReason::Response),
        );
        metrics.command(
            RedisCommand::Mget,
            Duration::from_secs(1),
            Err(RedisErrorReason::Timeout),
        );
        metrics.command(
            RedisCommand::Mget,
            Duration::ZERO,
            Err(RedisErrorReason::Connection),
        );
        let text = text(&registry);

        assert_eq!(
            sample(&text, "tts_redis_command_seconds_count{command=\"set\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "tts_redis_command_seconds_bucket{le=\"0.001\",command=\"set\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "tts_redis_command_seconds_count{command=\"scan\"}"),
            Some(1.0),
            "an error reply is still a reply"
        );
        assert_eq!(
            sample(&text, "tts_redis_command_seconds_count{command=\"mget\"}"),
            None,
            "no reply, no latency:\n{text}"
        );
        for (command, reason) in [("scan", "response"), ("mget", "timeout"), ("mget", "connection")] {
            let series =
                format!("tts_redis_command_errors_total{{command=\"{command}\",reason=\"{reason}\"}}");
            assert_eq!(sample(&text, &series), Some(1.0), "{series} in:\n{text}");
        }
        assert_eq!(
            sample(
                &text,
                "tts_redis_command_errors_total{command=\"set\",reason=\"timeout\"}"
            ),
            None
        );
    }

    #[test]
    fn each_client_counts_once_on_the_connections_gauge() {
        let mut registry = Registry::default();
        let first = RedisMetrics::register(&mut registry);
        let second = first.clone();
        let gauge = |registry: &Registry| sample(&text(registry), "tts_redis_connections_active");
        assert_eq!(gauge(&registry), Some(0.0));

        first.set_connected(true);
        first.set_connected(true);
        assert_eq!(gauge(&registry), Some(1.0), "a repeated report moves nothing");
        second.set_connected(true);
        assert_eq!(gauge(&registry), Some(2.0));
        first.set_connected(false);
        first.set_connected(false);
        assert_eq!(gauge(&registry), Some(1.0));
        drop(second);
        assert_eq!(
            gauge(&registry),
            Some(0.0),
            "a dropped client is no longer connected"
        );
        drop(first);
        assert_eq!(gauge(&registry), Some(0.0));
    }

    #[test]
    fn label_values_are_the_lower_case_names() {
        let commands = [
            RedisCommand::Get,
            RedisCommand::Set,
            RedisCommand::Del,
            RedisCommand::Scan,
            RedisCommand::Mget,
            RedisCommand::Ping,
        ];
        let names: Vec<_> = commands.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["get", "set", "del", "scan", "mget", "ping"]);
        let reasons = [
            RedisErrorReason::Timeout,
            RedisErrorReason::Connection,
            RedisErrorReason::Response,
        ];
        let names: Vec<_> = reasons.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["timeout", "connection", "response"]);
    }

    #[test]
    fn passwords_are_redacted_from_urls_parsed_or_not() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
            ("redis://user:s3cret@cache", "redis://user:***@cache"),
            ("redis://user@cache", "redis://user@cache"),
            ("redis://u:p@ss@cache/1?x=y", "redis://u:***@cache/1?x=y"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            ("not a url: p@ss", "not a url: p@ss"),
            ("", ""),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }
}
