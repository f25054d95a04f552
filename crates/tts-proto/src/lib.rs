//! The worker gRPC contract, the worker registration record, and trace-context propagation for gRPC
//! metadata.
//!
//! - [`v1`] is generated from `proto/tts/v1/worker.proto` at build time (client and server stubs).
//! - [`registry`] is the JSON a worker writes to Redis under `ttsd:worker:<name>` and a gateway reads.
//! - The gateway calls [`inject_trace_context`] and [`inject_ids`] on each request it sends a worker; the
//!   worker calls [`extract_trace_context`] (and parents its span on the result with
//!   `tracing_opentelemetry::OpenTelemetrySpanExt::set_parent`) and [`extract_ids`], so one trace and the
//!   same session and utterance ids span both processes. The trace context travels as W3C `traceparent`
//!   and `tracestate` entries, the ids as `x-ttsd-session-id` and `x-ttsd-utterance-id`.
//!
//! It depends on no other ttsd crate and knows nothing of engines.

mod propagation;
pub mod registry;

pub use propagation::{
    SESSION_ID_KEY, UTTERANCE_ID_KEY, extract_ids, extract_trace_context, inject_ids, inject_trace_context,
    trace_context_from_map, trace_context_map,
};

/// Generated from `proto/tts/v1/worker.proto`.
#[allow(unreachable_pub, missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("tts.v1");
}
