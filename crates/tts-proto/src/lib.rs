//! The worker gRPC contract will live here; today it holds trace-context propagation for gRPC metadata.
//!
//! The gateway calls [`inject_trace_context`] and [`inject_ids`] on each request it sends a worker; the
//! worker calls [`extract_trace_context`] (and parents its span on the result with
//! `tracing_opentelemetry::OpenTelemetrySpanExt::set_parent`) and [`extract_ids`], so one trace and the
//! same session and utterance ids span both processes. The trace context travels as W3C `traceparent`
//! and `tracestate` entries, the ids as `x-ttsd-session-id` and `x-ttsd-utterance-id`.
//!
//! It does not compile `.proto` files yet (no `protoc` is needed to build it), and depends on no other
//! ttsd crate.

mod propagation;

pub use propagation::{
    SESSION_ID_KEY, UTTERANCE_ID_KEY, extract_ids, extract_trace_context, inject_ids, inject_trace_context,
};
