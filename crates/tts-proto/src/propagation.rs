//! Trace context and correlation ids in gRPC metadata.
//!
//! The W3C propagator reads and writes through small adapters over [`MetadataMap`]; anything in the
//! metadata that does not parse is ignored, so a malformed header costs a broken trace, never a request.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Metadata key carrying the gateway's session id.
pub const SESSION_ID_KEY: &str = "x-ttsd-session-id";
/// Metadata key carrying the utterance number within the session.
pub const UTTERANCE_ID_KEY: &str = "x-ttsd-utterance-id";

/// Writes `span`'s trace context (`traceparent`, and `tracestate` when there is one) into `metadata`.
///
/// Writes nothing when the span has no OpenTelemetry context (tracing off, or the span disabled).
/// Reading the context starts the span's OpenTelemetry side, so set its parent before calling this.
pub fn inject_trace_context(span: &tracing::Span, metadata: &mut MetadataMap) {
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// Reads a W3C trace context from `metadata`; an empty context when it is missing or malformed.
///
/// The result does not depend on the caller's current context, so a bad header never makes a span a
/// child of whatever happens to be active.
pub fn extract_trace_context(metadata: &MetadataMap) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), &MetadataExtractor(metadata))
}

/// `span`'s trace context as map entries, for a message that carries it per item (each chunk on a
/// session's long-lived Synthesize stream belongs to its own utterance span).
pub fn trace_context_map(span: &tracing::Span) -> std::collections::HashMap<String, String> {
    let mut map = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut map);
    map.retain(|_, value| !value.is_empty());
    map
}

/// Reads a trace context written by [`trace_context_map`]; an empty context when missing or malformed.
pub fn trace_context_from_map(map: &std::collections::HashMap<String, String>) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), map)
}

/// Writes the session id and utterance number; a session id that is not valid metadata text is skipped.
pub fn inject_ids(metadata: &mut MetadataMap, session_id: &str, utterance_id: u64) {
    if let Ok(value) = MetadataValue::try_from(session_id) {
        metadata.insert(SESSION_ID_KEY, value);
    }
    metadata.insert(UTTERANCE_ID_KEY, MetadataValue::from(utterance_id));
}

/// Reads the session id and utterance number; each is `None` when missing or malformed.
pub fn extract_ids(metadata: &MetadataMap) -> (Option<String>, Option<u64>) {
    let text = |key| metadata.get(key).and_then(|value| value.to_str().ok());
    let session_id = text(SESSION_ID_KEY)
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let utterance_id = text(UTTERANCE_ID_KEY).and_then(|id| id.parse().ok());
    (session_id, utterance_id)
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing; leave it out rather than send an empty entry.
        if value.is_empty() {
            return;
        }
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// A subscriber with an OpenTelemetry layer and no exporter: spans get real ids, nothing is sent.
    fn traced() -> (tracing::Dispatch, SdkTracerProvider) {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        (tracing::Dispatch::new(subscriber), provider)
    }

    fn metadata(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (key, value) in pairs {
            metadata.insert(*key, MetadataValue::from_static(value));
        }
        metadata
    }

    #[test]
    fn a_traceparent_survives_a_round_trip_through_metadata() {
        let incoming = metadata(&[("traceparent", TRACEPARENT), ("tracestate", "ttsd=1")]);
        let parent = extract_trace_context(&incoming);
        let remote = parent.span().span_context().clone();
        assert!(remote.is_valid() && remote.is_remote() && remote.is_sampled());
        assert_eq!(remote.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(remote.trace_state().header(), "ttsd=1");

        let (dispatch, _provider) = traced();
        let mut outgoing = MetadataMap::new();
        let own_span_id = tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("worker.synthesize");
            span.set_parent(parent).unwrap();
            inject_trace_context(&span, &mut outgoing);
            span.context().span().span_context().span_id()
        });
        let traceparent = outgoing.get("traceparent").unwrap().to_str().unwrap();
        assert_eq!(
            traceparent,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{own_span_id}-01")
        );
        assert_eq!(outgoing.get("tracestate").unwrap(), "ttsd=1");
        let again = extract_trace_context(&outgoing);
        assert_eq!(again.span().span_context().span_id(), own_span_id);
    }

    #[test]
    fn ids_survive_a_round_trip() {
        let mut map = MetadataMap::new();
        inject_ids(&mut map, "s-7f3a", 12);
        assert_eq!(extract_ids(&map), (Some("s-7f3a".to_owned()), Some(12)));
        assert_eq!(extract_ids(&MetadataMap::new()), (None, None));
    }

    #[test]
    fn malformed_metadata_is_ignored() {
        for traceparent in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            let map = metadata(&[("traceparent", traceparent)]);
            let cx = extract_trace_context(&map);
            assert!(!cx.has_active_span(), "{traceparent:?}");
        }
        let map = metadata(&[(SESSION_ID_KEY, ""), (UTTERANCE_ID_KEY, "minus one")]);
        assert_eq!(extract_ids(&map), (None, None));

        let mut map = MetadataMap::new();
        inject_ids(&mut map, "line\nbreak", 3);
        assert_eq!(extract_ids(&map), (None, Some(3)));
    }

    #[test]
    fn nothing_is_injected_without_tracing() {
        let mut map = MetadataMap::new();
        inject_trace_context(&tracing::info_span!("untraced"), &mut map);
        assert!(map.is_empty());
    }
}
