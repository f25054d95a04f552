//! The subscriber layer that writes one line per event, JSON or text, with span fields flattened in.
//!
//! The stock `fmt` JSON formatter nests span fields under `spans`/`span` objects; log pipelines filter on
//! top-level keys (`session_id`), so this layer keeps each span's fields in the span's extensions and
//! merges those of every enclosing span (root first, inner spans winning) under the event's own fields.
//! Because span data lives in the registry, a span entered on another thread still contributes.
//!
//! When an OpenTelemetry layer shares the subscriber, JSON lines also get the `trace_id` and `span_id`
//! of the event's innermost span, read through the dispatcher this layer was registered with.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::LogFormat;
use super::redact::redact;
use super::spans::{Pending, otel_ids};
use super::timestamp::write_rfc3339;
use crate::recent::{LogBuffer, LogRecord};

/// Keys a JSON line may start with; a field with one of these names is written as `field.<name>`.
const RESERVED: [&str; 6] = ["timestamp", "level", "target", "message", "trace_id", "span_id"];

pub(super) struct LineLayer<W> {
    format: LogFormat,
    writer: W,
    /// Present when lines carry trace ids; filled with the subscriber's dispatcher once it exists. Weak,
    /// because the dispatcher owns this layer.
    dispatch: Option<OnceLock<WeakDispatch>>,
    /// Every record also goes here, structured.
    recent: Arc<LogBuffer>,
}

impl<W> LineLayer<W> {
    pub(super) fn new(format: LogFormat, writer: W, trace_ids: bool, recent: Arc<LogBuffer>) -> Self {
        Self {
            format,
            writer,
            dispatch: trace_ids.then(OnceLock::new),
            recent,
        }
    }
}

/// Records `values` into `fields` (redacted), as log lines and span records see them.
pub(super) fn record_fields(values: &impl RecordFields, fields: &mut Vec<(&'static str, Value)>) {
    values.record(&mut FieldVisitor {
        fields,
        message: None,
    });
}

/// A span's recorded fields, kept in its extensions, already redacted.
#[derive(Default)]
struct SpanFields(Vec<(&'static str, Value)>);

fn upsert(fields: &mut Vec<(&'static str, Value)>, name: &'static str, value: Value) {
    match fields.iter_mut().find(|(existing, _)| *existing == name) {
        Some(slot) => slot.1 = value,
        None => fields.push((name, value)),
    }
}

/// Collects field values; the `message` field goes to `message` when that is given.
struct FieldVisitor<'a> {
    fields: &'a mut Vec<(&'static str, Value)>,
    message: Option<&'a mut Option<String>>,
}

impl FieldVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message"
            && let (Some(message), Value::String(text)) = (self.message.as_deref_mut(), &value)
        {
            *message = Some(text.clone());
            return;
        }
        upsert(self.fields, field.name(), value);
    }

    fn put_text(&mut self, field: &Field, text: String) {
        let text = match redact(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(redacted) => redacted,
        };
        self.put(field, Value::String(text));
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        match serde_json::Number::from_f64(value) {
            Some(number) => self.put(field, Value::Number(number)),
            None => self.put(field, Value::String(value.to_string())),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put_text(field, value.to_owned());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.put_text(field, text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put_text(field, format!("{value:?}"));
    }
}

impl<S, W> tracing_subscriber::Layer<S> for LineLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        if let Some(slot) = &self.dispatch {
            // A layer belongs to one subscriber, so this runs once; a second call changes nothing.
            let _ = slot.set(subscriber.downgrade());
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut FieldVisitor {
            fields: &mut fields.0,
            message: None,
        });
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut FieldVisitor {
                fields: &mut fields.0,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    for (name, value) in &span_fields.0 {
                        upsert(&mut fields, name, value.clone());
                    }
                }
            }
        }
        let mut message = None;
        event.record(&mut FieldVisitor {
            fields: &mut fields,
            message: Some(&mut message),
        });
        // Looked up with no extensions borrowed: the OpenTelemetry layer takes its own locks.
        let trace_ids = ctx.event_span(event).and_then(|span| match &self.dispatch {
            Some(_) => otel_ids(&self.dispatch, &span.id()),
            None => span
                .extensions()
                .get::<Pending>()
                .map(|pending| (pending.trace_id, pending.span_id)),
        });
        let now = SystemTime::now();
        let line = Line {
            event,
            now,
            message: message.as_deref().unwrap_or(""),
            // Written lines carry trace ids only when spans are exported, where they lead somewhere.
            trace_ids: trace_ids.filter(|_| self.dispatch.is_some()),
            fields: &fields,
        };
        let text = match self.format {
            LogFormat::Json => line.json(),
            LogFormat::Text => line.text(),
        };
        // Nowhere to report a failing log sink; dropping the line is the only option.
        let _ = self
            .writer
            .make_writer_for(event.metadata())
            .write_all(text.as_bytes());
        let metadata = event.metadata();
        self.recent.record(LogRecord {
            unix_micros: now.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64,
            level: *metadata.level(),
            target: metadata.target(),
            message: message.unwrap_or_default(),
            trace: trace_ids,
            fields,
        });
    }
}

struct Line<'a> {
    event: &'a Event<'a>,
    now: SystemTime,
    message: &'a str,
    trace_ids: Option<(u128, u64)>,
    fields: &'a [(&'static str, Value)],
}

impl Line<'_> {
    fn json(&self) -> String {
        let metadata = self.event.metadata();
        let mut out = String::with_capacity(256);
        out.push_str("{\"timestamp\":\"");
        write_rfc3339(&mut out, self.now);
        let _ = write!(out, "\",\"level\":\"{}\",\"target\":", metadata.level());
        push_json_string(&mut out, metadata.target());
        out.push_str(",\"message\":");
        push_json_string(&mut out, self.message);
        if let Some((trace_id, span_id)) = self.trace_ids {
            // Hex digits only: nothing to escape.
            let _ = write!(
                out,
                ",\"trace_id\":\"{trace_id:032x}\",\"span_id\":\"{span_id:016x}\""
            );
        }
        for (name, value) in self.fields {
            out.push(',');
            if RESERVED.contains(name) {
                push_json_string(&mut out, &format!("field.{name}"));
            } else {
                push_json_string(&mut out, name);
            }
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push_str("}\n");
        out
    }

    fn text(&self) -> String {
        let metadata = self.event.metadata();
        let mut out = String::with_capacity(128);
        write_rfc3339(&mut out, self.now);
        let _ = write!(
            out,
            " {:>5} {}: {}",
            metadata.level(),
            metadata.target(),
            self.message
        );
        for (name, value) in self.fields {
            let _ = match value {
                Value::String(text) if text.is_empty() || text.contains([' ', '"', '=', '\n']) => {
                    write!(out, " {name}={text:?}")
                }
                Value::String(text) => write!(out, " {name}={text}"),
                other => write!(out, " {name}={other}"),
            };
        }
        out.push('\n');
        out
    }
}

fn push_json_string(out: &mut String, text: &str) {
    // Serializing a str into JSON cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}
