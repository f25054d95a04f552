//! The subscriber layer that records every closed span into the recent-trace buffer
//! ([`crate::recent::TraceBuffer`]), with or without OpenTelemetry.
//!
//! With OpenTelemetry on, the ids are read from its layer when the span closes, so the buffer holds the ids
//! the collector receives; this layer must then sit *inside* the OpenTelemetry layer (closer to the
//! registry), because a layered subscriber closes inner layers first and the OpenTelemetry layer removes
//! its data on close. With it off, ids are made here: a random trace id per root span, inherited by its
//! descendants, and a random span id per span.

use std::cell::Cell;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::TraceContextExt as _;
use serde_json::Value;
use tracing::dispatcher::WeakDispatch;
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::layer::record_fields;
use crate::otel::EXPORTER_TARGETS;
use crate::recent::{SpanRecord, TraceBuffer};

pub(super) struct SpanLayer {
    buffer: Arc<TraceBuffer>,
    /// Present when an OpenTelemetry layer shares the subscriber; filled once the dispatcher exists.
    dispatch: Option<OnceLock<WeakDispatch>>,
}

/// What a span carries from creation to close.
pub(super) struct Pending {
    /// This layer's own ids (used when OpenTelemetry is off).
    pub(super) trace_id: u128,
    pub(super) span_id: u64,
    parent_span_id: Option<u64>,
    session_id: Option<String>,
    start_unix_micros: u64,
    started: Instant,
    fields: Vec<(&'static str, Value)>,
}

impl SpanLayer {
    pub(super) fn new(buffer: Arc<TraceBuffer>, otel: bool) -> Self {
        Self {
            buffer,
            dispatch: otel.then(OnceLock::new),
        }
    }
}

/// OpenTelemetry's (trace id, span id) of span `id`, when its layer knows the span.
pub(super) fn otel_ids(dispatch: &Option<OnceLock<WeakDispatch>>, id: &Id) -> Option<(u128, u64)> {
    let dispatch = dispatch.as_ref()?.get()?.upgrade()?;
    let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
    let span = cx.span();
    let ids = span.span_context();
    ids.is_valid().then(|| {
        (
            u128::from_be_bytes(ids.trace_id().to_bytes()),
            u64::from_be_bytes(ids.span_id().to_bytes()),
        )
    })
}

fn session_id_of(fields: &[(&'static str, Value)]) -> Option<String> {
    fields
        .iter()
        .find(|(name, _)| *name == "session_id")
        .and_then(|(_, value)| value.as_str().map(str::to_owned))
}

impl<S> tracing_subscriber::Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        if let Some(slot) = &self.dispatch {
            let _ = slot.set(subscriber.downgrade());
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let target = attrs.metadata().target();
        if EXPORTER_TARGETS.iter().any(|t| target.starts_with(t)) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let inherited = span.parent().and_then(|parent| {
            let extensions = parent.extensions();
            let pending = extensions.get::<Pending>()?;
            Some((pending.trace_id, pending.span_id, pending.session_id.clone()))
        });
        let (trace_id, parent_span_id, inherited_session) = match inherited {
            Some((trace_id, span_id, session)) => (trace_id, Some(span_id), session),
            None => (random_trace_id(), None, None),
        };
        let mut fields = Vec::new();
        record_fields(attrs, &mut fields);
        let session_id = session_id_of(&fields).or(inherited_session);
        let start_unix_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        span.extensions_mut().insert(Pending {
            trace_id,
            span_id: random_span_id(),
            parent_span_id,
            session_id,
            start_unix_micros,
            started: Instant::now(),
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(pending) = extensions.get_mut::<Pending>() {
            record_fields(values, &mut pending.fields);
            if let Some(session_id) = session_id_of(&pending.fields) {
                pending.session_id = Some(session_id);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        // Taken out first: the OpenTelemetry lookups below lock this span's extensions themselves.
        let Some(pending) = span.extensions_mut().remove::<Pending>() else {
            return;
        };
        let duration = pending.started.elapsed();
        let (trace_id, span_id, parent_span_id) = match otel_ids(&self.dispatch, &id) {
            Some((trace_id, span_id)) => {
                let parent = span
                    .parent()
                    .and_then(|parent| otel_ids(&self.dispatch, &parent.id()))
                    .map(|(_, parent_id)| parent_id);
                (trace_id, span_id, parent)
            }
            None => (pending.trace_id, pending.span_id, pending.parent_span_id),
        };
        let metadata = span.metadata();
        self.buffer.record(SpanRecord {
            trace_id,
            span_id,
            parent_span_id,
            name: metadata.name(),
            target: metadata.target(),
            level: *metadata.level(),
            start_unix_micros: pending.start_unix_micros,
            duration,
            session_id: pending.session_id,
            attributes: pending.fields,
        });
    }
}

thread_local! {
    static RANDOM: Cell<u64> = Cell::new(seed());
}

/// A per-thread seed from the standard library's randomly keyed hasher.
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() | 1
}

/// xorshift64*: ids need to be unique and unguessable enough to not collide, not cryptographic.
fn random_u64() -> u64 {
    RANDOM.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn random_span_id() -> u64 {
    random_u64().max(1)
}

fn random_trace_id() -> u128 {
    ((u128::from(random_u64()) << 64) | u128::from(random_u64())).max(1)
}
