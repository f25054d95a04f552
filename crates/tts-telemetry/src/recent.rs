//! Bounded in-process buffers of what the process did lately: finished spans ([`TraceBuffer`]) and log
//! records ([`LogBuffer`]), for the admin routes `/admin/traces` and `/admin/logs` and for anything else in
//! the process that wants to show or export them.
//!
//! Both are always on, whether or not spans are exported over OTLP: [`crate::logging`] feeds them from the
//! same subscriber that writes the log lines, so a span or log line exists here exactly when the log
//! filter lets it exist. A span carries the trace id that OTLP export gives it when export is on, and an id
//! of the buffer's own making (same shape, random) when it is off.
//!
//! Bounds ([`RecentConfig`]): each buffer holds at most a number of records and an estimate of their heap
//! bytes, and evicts the oldest to admit a new one; a record larger than the whole byte bound is refused.
//! Evictions and refusals are counted ([`Recent::register`]). Recording takes one short mutex hold (a
//! push onto a ring); queries copy out shared pointers under the lock and serialise outside it.
//!
//! What it does not do: keep anything across restarts, sample, or aggregate. A span is recorded when it
//! closes, so an open session span appears only after the session ends; its finished children appear at
//! once.

mod logs;
mod query;
mod ring;
mod traces;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

pub use logs::{HeldLog, LogBuffer, LogRecord};
pub use query::{DEFAULT_LOG_LIMIT, DEFAULT_TRACE_LIMIT, LogQuery, MAX_LIMIT, QueryError, TraceQuery};
pub use traces::{HeldSpan, SpanRecord, TraceBuffer, TraceView};

use ring::{Entry, Ring};

/// Finished spans held by default.
pub const DEFAULT_MAX_SPANS: usize = 20_000;
/// Estimated bytes of finished spans held by default.
pub const DEFAULT_MAX_SPAN_BYTES: usize = 16 << 20;
/// Log records held by default.
pub const DEFAULT_MAX_LOGS: usize = 10_000;
/// Estimated bytes of log records held by default.
pub const DEFAULT_MAX_LOG_BYTES: usize = 8 << 20;

/// The bounds of both buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentConfig {
    /// Finished spans held at most.
    pub max_spans: usize,
    /// Estimated heap bytes of finished spans held at most.
    pub max_span_bytes: usize,
    /// Log records held at most.
    pub max_logs: usize,
    /// Estimated heap bytes of log records held at most.
    pub max_log_bytes: usize,
}

impl Default for RecentConfig {
    fn default() -> Self {
        Self {
            max_spans: DEFAULT_MAX_SPANS,
            max_span_bytes: DEFAULT_MAX_SPAN_BYTES,
            max_logs: DEFAULT_MAX_LOGS,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }
}

/// Both buffers; cheap to clone.
#[derive(Clone)]
pub struct Recent {
    traces: Arc<TraceBuffer>,
    logs: Arc<LogBuffer>,
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent")
            .field("traces", &self.traces.stats())
            .field("logs", &self.logs.stats())
            .finish()
    }
}

impl Recent {
    /// Empty buffers with these bounds.
    pub fn new(config: RecentConfig) -> Self {
        Self {
            traces: Arc::new(TraceBuffer::new(config.max_spans, config.max_span_bytes)),
            logs: Arc::new(LogBuffer::new(config.max_logs, config.max_log_bytes)),
        }
    }

    /// Recent finished spans.
    pub fn traces(&self) -> &TraceBuffer {
        &self.traces
    }

    /// Recent log records.
    pub fn logs(&self) -> &LogBuffer {
        &self.logs
    }

    pub(crate) fn traces_arc(&self) -> Arc<TraceBuffer> {
        self.traces.clone()
    }

    pub(crate) fn logs_arc(&self) -> Arc<LogBuffer> {
        self.logs.clone()
    }

    /// Registers, per buffer (`buffer="spans"|"logs"`), `<prefix>_recent_buffer_records` and `_bytes`
    /// (held now), `_max_records` and `_max_bytes` (the bounds), `_evicted_records_total` (oldest records
    /// removed to admit new ones) and `_rejected_records_total` (records larger than the byte bound), all
    /// read at scrape time.
    pub fn register(&self, registry: &mut Registry, prefix: &str) {
        registry.register_collector(Box::new(RecentCollector {
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}_")
            },
            recent: self.clone(),
        }));
    }
}

/// How full a buffer is, and what it lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BufferStats {
    /// Records held now.
    pub records: usize,
    /// Estimated heap bytes held now.
    pub bytes: usize,
    /// Bound on records.
    pub max_records: usize,
    /// Bound on estimated bytes.
    pub max_bytes: usize,
    /// Oldest records removed to admit new ones, since start.
    pub evicted_records: u64,
    /// Records refused because each alone was larger than `max_bytes`, since start.
    pub rejected_records: u64,
}

/// What a buffer lost since start.
#[derive(Default)]
struct Losses {
    evicted: AtomicU64,
    rejected: AtomicU64,
}

/// Encodes both buffers' stats as six families, one sample per buffer.
#[derive(Debug)]
struct RecentCollector {
    prefix: String,
    recent: Recent,
}

type Family = (&'static str, &'static str, MetricType, fn(&BufferStats) -> u64);

const FAMILIES: [Family; 6] = [
    (
        "recent_buffer_records",
        "Records held by the in-process buffer of recent spans or log records",
        MetricType::Gauge,
        |s| s.records as u64,
    ),
    (
        "recent_buffer_bytes",
        "Estimated heap bytes held by the buffer",
        MetricType::Gauge,
        |s| s.bytes as u64,
    ),
    (
        "recent_buffer_max_records",
        "Bound on records held by the buffer",
        MetricType::Gauge,
        |s| s.max_records as u64,
    ),
    (
        "recent_buffer_max_bytes",
        "Bound on estimated heap bytes held by the buffer",
        MetricType::Gauge,
        |s| s.max_bytes as u64,
    ),
    (
        "recent_buffer_evicted_records",
        "Oldest records removed from the buffer to admit new ones",
        MetricType::Counter,
        |s| s.evicted_records,
    ),
    (
        "recent_buffer_rejected_records",
        "Records refused because each alone was larger than the byte bound",
        MetricType::Counter,
        |s| s.rejected_records,
    ),
];

impl Collector for RecentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = [
            ("spans", self.recent.traces.stats()),
            ("logs", self.recent.logs.stats()),
        ];
        for (name, help, kind, value) in FAMILIES {
            let full_name = format!("{}{name}", self.prefix);
            let mut family = encoder.encode_descriptor(&full_name, help, None, kind)?;
            for (buffer, stats) in &stats {
                let labels = [("buffer", *buffer)];
                let sample = family.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value(stats)).encode(sample)?,
                    _ => ConstGauge::new(value(stats) as i64).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

/// A ring behind a mutex, with its metrics.
struct Buffer<T> {
    ring: Mutex<Ring<T>>,
    losses: Losses,
    max_records: usize,
    max_bytes: usize,
}

impl<T> Buffer<T> {
    fn new(max_records: usize, max_bytes: usize) -> Self {
        Self {
            ring: Mutex::new(Ring::new(max_records, max_bytes)),
            losses: Losses::default(),
            max_records,
            max_bytes,
        }
    }

    fn push(&self, value: T, bytes: usize) {
        let pushed = self
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value, bytes);
        if pushed.rejected {
            self.losses.rejected.fetch_add(1, Ordering::Relaxed);
        }
        if pushed.evicted > 0 {
            self.losses.evicted.fetch_add(pushed.evicted, Ordering::Relaxed);
        }
    }

    /// `(seq, record)` of every held record `keep` accepts, oldest first.
    fn select(&self, mut keep: impl FnMut(&Entry<T>) -> bool) -> Vec<(u64, Arc<T>)> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter()
            .filter(|entry| keep(entry))
            .map(|entry| (entry.seq, entry.value.clone()))
            .collect()
    }

    fn stats(&self) -> BufferStats {
        let (records, bytes) = {
            let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            (ring.len(), ring.bytes())
        };
        BufferStats {
            records,
            bytes,
            max_records: self.max_records,
            max_bytes: self.max_bytes,
            evicted_records: self.losses.evicted.load(Ordering::Relaxed),
            rejected_records: self.losses.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Estimated heap bytes of a JSON value (strings and containers; scalars live inline).
pub(crate) fn value_bytes(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(|v| 32 + value_bytes(v)).sum(),
        Value::Object(map) => map.iter().map(|(k, v)| 64 + k.len() + value_bytes(v)).sum(),
        _ => 0,
    }
}

/// Estimated heap bytes of recorded fields.
pub(crate) fn fields_bytes(fields: &[(&'static str, serde_json::Value)]) -> usize {
    fields
        .iter()
        .map(|(_, value)| std::mem::size_of::<(&str, serde_json::Value)>() + value_bytes(value))
        .sum()
}

#[cfg(test)]
mod tests;
