//! Finished spans, and traces assembled from them at query time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::Value;

use super::query::{QueryError, TraceQuery};
use super::{Buffer, BufferStats, fields_bytes};
use crate::logging::timestamp::write_rfc3339;

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// The trace id: OpenTelemetry's when spans are exported, else the buffer's own.
    pub trace_id: u128,
    /// The span id, same origin.
    pub span_id: u64,
    /// The enclosing span in this process, if any (a remote parent is not shown).
    pub parent_span_id: Option<u64>,
    /// The span's name (`utterance`).
    pub name: &'static str,
    /// The module that made it.
    pub target: &'static str,
    /// The span's level.
    pub level: tracing::Level,
    /// When it was created, microseconds since the Unix epoch.
    pub start_unix_micros: u64,
    /// Created → closed (wall clock of the process's monotonic clock).
    pub duration: Duration,
    /// `session_id` of this span or the nearest enclosing span that has one.
    pub session_id: Option<String>,
    /// Its fields as last recorded, redacted like log fields.
    pub attributes: Vec<(&'static str, Value)>,
}

impl SpanRecord {
    fn end_unix_micros(&self) -> u64 {
        self.start_unix_micros + self.duration.as_micros() as u64
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.session_id.as_ref().map_or(0, String::len)
            + fields_bytes(&self.attributes)
    }
}

/// Formats microseconds since the epoch as RFC 3339 UTC.
pub(super) fn rfc3339(unix_micros: u64) -> String {
    let mut out = String::with_capacity(27);
    write_rfc3339(&mut out, UNIX_EPOCH + Duration::from_micros(unix_micros));
    out
}

/// A held span with its sequence number; serialises as one JSON object.
#[derive(Debug, Clone)]
pub struct HeldSpan {
    /// Order of recording in this process, from 1.
    pub seq: u64,
    /// The span.
    pub span: Arc<SpanRecord>,
}

impl Serialize for HeldSpan {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let span = &self.span;
        let mut map = serializer.serialize_map(Some(11))?;
        map.serialize_entry("seq", &self.seq)?;
        map.serialize_entry("trace_id", &format!("{:032x}", span.trace_id))?;
        map.serialize_entry("span_id", &format!("{:016x}", span.span_id))?;
        map.serialize_entry(
            "parent_span_id",
            &span.parent_span_id.map(|id| format!("{id:016x}")),
        )?;
        map.serialize_entry("name", span.name)?;
        map.serialize_entry("target", span.target)?;
        map.serialize_entry("level", span.level.as_str())?;
        map.serialize_entry("start", &rfc3339(span.start_unix_micros))?;
        map.serialize_entry("duration_ms", &(span.duration.as_secs_f64() * 1e3))?;
        map.serialize_entry("session_id", &span.session_id)?;
        map.serialize_entry("attributes", &Attributes(&span.attributes))?;
        map.end()
    }
}

/// Fields as a JSON object.
pub(super) struct Attributes<'a>(pub(super) &'a [(&'static str, Value)]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The held spans of one trace, oldest start first.
#[derive(Debug, Clone, Serialize)]
pub struct TraceView {
    /// 32 hex digits.
    pub trace_id: String,
    /// The first `session_id` among its spans.
    pub session_id: Option<String>,
    /// Earliest start among the held spans, RFC 3339.
    pub start: String,
    /// Earliest start → latest end among the held spans.
    pub duration_ms: f64,
    /// The held spans.
    pub spans: Vec<HeldSpan>,
}

impl TraceView {
    fn new(trace_id: u128, mut spans: Vec<HeldSpan>) -> Self {
        spans.sort_by_key(|held| (held.span.start_unix_micros, held.seq));
        let start = spans.iter().map(|h| h.span.start_unix_micros).min().unwrap_or(0);
        let end = spans
            .iter()
            .map(|h| h.span.end_unix_micros())
            .max()
            .unwrap_or(start);
        Self {
            trace_id: format!("{trace_id:032x}"),
            session_id: spans.iter().find_map(|h| h.span.session_id.clone()),
            start: rfc3339(start),
            duration_ms: (end - start) as f64 / 1e3,
            spans,
        }
    }
}

/// Recent finished spans, bounded; see the module docs of [`crate::recent`].
pub struct TraceBuffer {
    pub(super) buffer: Buffer<SpanRecord>,
}

impl TraceBuffer {
    pub(super) fn new(max_spans: usize, max_bytes: usize) -> Self {
        Self {
            buffer: Buffer::new(max_spans, max_bytes),
        }
    }

    /// Adds a finished span, evicting the oldest to stay within bounds.
    pub fn record(&self, span: SpanRecord) {
        let bytes = span.bytes();
        self.buffer.push(span, bytes);
    }

    /// How full the buffer is.
    pub fn stats(&self) -> BufferStats {
        self.buffer.stats()
    }

    /// The most recent traces with a span matching `query` (newest trace first), each with its matching
    /// spans.
    pub fn query(&self, query: &TraceQuery) -> Result<Vec<TraceView>, QueryError> {
        let filter = query.parse()?;
        let held = self.buffer.select(|entry| {
            let span = &entry.value;
            entry.seq > filter.after
                && filter.trace_id.is_none_or(|id| span.trace_id == id)
                && filter
                    .session_id
                    .as_deref()
                    .is_none_or(|id| span.session_id.as_deref() == Some(id))
                && filter
                    .since_unix_micros
                    .is_none_or(|since| span.end_unix_micros() >= since)
        });
        let mut by_trace: HashMap<u128, (u64, Vec<HeldSpan>)> = HashMap::new();
        for (seq, span) in held {
            let slot = by_trace.entry(span.trace_id).or_default();
            slot.0 = slot.0.max(seq);
            slot.1.push(HeldSpan { seq, span });
        }
        let mut traces: Vec<(u128, (u64, Vec<HeldSpan>))> = by_trace.into_iter().collect();
        traces.sort_by_key(|(_, (latest, _))| std::cmp::Reverse(*latest));
        traces.truncate(filter.limit);
        Ok(traces
            .into_iter()
            .map(|(trace_id, (_, spans))| TraceView::new(trace_id, spans))
            .collect())
    }
}
