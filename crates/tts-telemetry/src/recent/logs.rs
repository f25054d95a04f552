//! Recent log records, the same structured values the JSON log lines are written from.

use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::Value;

use super::query::{LogQuery, QueryError, target_matches};
use super::traces::rfc3339;
use super::{Buffer, BufferStats, fields_bytes};

/// Keys a record starts with; a field of the same name is shown as `field.<name>`, as in the JSON lines.
const RESERVED: [&str; 7] = [
    "seq",
    "timestamp",
    "level",
    "target",
    "message",
    "trace_id",
    "span_id",
];

/// One log record.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// When it was logged, microseconds since the Unix epoch.
    pub unix_micros: u64,
    /// Its level.
    pub level: tracing::Level,
    /// The module that logged it.
    pub target: &'static str,
    /// The message, redacted.
    pub message: String,
    /// Trace and span id of the innermost enclosing span, if any.
    pub trace: Option<(u128, u64)>,
    /// The event's fields and those of every enclosing span, flattened and redacted.
    pub fields: Vec<(&'static str, Value)>,
}

impl LogRecord {
    /// Its `session_id` field, when it has a text one.
    pub fn session_id(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| *name == "session_id")
            .and_then(|(_, value)| value.as_str())
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.message.len() + fields_bytes(&self.fields)
    }
}

/// A held record with its sequence number; serialises like a JSON log line, plus `seq`.
#[derive(Debug, Clone)]
pub struct HeldLog {
    /// Order of recording in this process, from 1.
    pub seq: u64,
    /// The record.
    pub record: Arc<LogRecord>,
}

impl Serialize for HeldLog {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = &self.record;
        let mut map = serializer.serialize_map(Some(7 + record.fields.len()))?;
        map.serialize_entry("seq", &self.seq)?;
        map.serialize_entry("timestamp", &rfc3339(record.unix_micros))?;
        map.serialize_entry("level", record.level.as_str())?;
        map.serialize_entry("target", record.target)?;
        map.serialize_entry("message", &record.message)?;
        if let Some((trace_id, span_id)) = record.trace {
            map.serialize_entry("trace_id", &format!("{trace_id:032x}"))?;
            map.serialize_entry("span_id", &format!("{span_id:016x}"))?;
        }
        for (name, value) in &record.fields {
            if RESERVED.contains(name) {
                map.serialize_entry(&format!("field.{name}"), value)?;
            } else {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

/// Recent log records, bounded; see the module docs of [`crate::recent`].
pub struct LogBuffer {
    pub(super) buffer: Buffer<LogRecord>,
}

impl LogBuffer {
    pub(super) fn new(max_records: usize, max_bytes: usize) -> Self {
        Self {
            buffer: Buffer::new(max_records, max_bytes),
        }
    }

    /// Adds a record, evicting the oldest to stay within bounds.
    pub fn record(&self, record: LogRecord) {
        let bytes = record.bytes();
        self.buffer.push(record, bytes);
    }

    /// How full the buffer is.
    pub fn stats(&self) -> BufferStats {
        self.buffer.stats()
    }

    /// The most recent records matching `query`, oldest first.
    pub fn query(&self, query: &LogQuery) -> Result<Vec<HeldLog>, QueryError> {
        let (filter, level) = query.parse()?;
        let target = query.target.as_deref();
        let held = self.buffer.select(|entry| {
            let record = &entry.value;
            entry.seq > filter.after
                && level.is_none_or(|level| record.level <= level)
                && target.is_none_or(|prefix| target_matches(record.target, prefix))
                && filter
                    .trace_id
                    .is_none_or(|id| record.trace.is_some_and(|(trace, _)| trace == id))
                && filter
                    .session_id
                    .as_deref()
                    .is_none_or(|id| record.session_id() == Some(id))
                && filter
                    .since_unix_micros
                    .is_none_or(|since| record.unix_micros >= since)
        });
        let skip = held.len().saturating_sub(filter.limit);
        Ok(held
            .into_iter()
            .skip(skip)
            .map(|(seq, record)| HeldLog { seq, record })
            .collect())
    }
}
