//! Distributed tracing over OpenTelemetry: `tracing` spans exported to an OTLP/gRPC collector, W3C
//! trace-context propagation, and the ids that tie log lines and exemplars to traces.
//!
//! Tracing is opt-in. With no [`TracingConfig::otlp_endpoint`] the logging subscriber has no
//! OpenTelemetry layer at all, spans cost what they cost without it, and the helpers here answer
//! `false`/`None`. With one, [`crate::logging::init_logging_with_tracing`] adds a
//! `tracing_opentelemetry` layer whose finished spans go to a batch processor (a bounded queue drained
//! by its own thread, dropping when full, so export never blocks the caller), JSON log lines gain
//! `trace_id` and `span_id`, and the returned [`OtelGuard`] flushes what is queued on drop.
//!
//! The log filter also bounds which spans exist, so a span below the filter's level is neither
//! logged nor traced. The exporter speaks plain-text gRPC (no TLS is built in) and needs a Tokio
//! runtime: build it inside one.

mod config;

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{ExporterBuildError, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{Filtered, LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

pub use config::{DEFAULT_SAMPLE_RATIO, DEFAULT_SERVICE_NAME, TracingConfig};

/// Keeps the span exporter running; on drop, exports what is still queued and stops it.
///
/// Drop it after the last span has closed, with the Tokio runtime that built it still running, and
/// off the async executor (dropping blocks until the collector answers or the export times out).
#[derive(Debug)]
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl OtelGuard {
    /// Exports the spans finished so far, waiting for the collector; failures are logged.
    pub fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(error = %error, "Exporting finished spans failed.");
        }
    }

    pub(crate) fn tracer(&self) -> SdkTracer {
        self.provider.tracer(env!("CARGO_PKG_NAME"))
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        self.flush();
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(error = %error, "Stopping the span exporter failed.");
        }
    }
}

/// Starts the OTLP/gRPC exporter and the tracer provider for `endpoint`; needs a Tokio runtime.
pub(crate) fn start(config: &TracingConfig, endpoint: &str) -> Result<OtelGuard, ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    Ok(OtelGuard { provider })
}

/// Crates the exporter itself runs on: tracing their spans would export the exporter, in a loop.
pub(crate) const EXPORTER_TARGETS: [&str; 5] = ["h2", "hyper", "tonic", "tower", "opentelemetry"];

/// The subscriber layer turning `tracing` spans into OpenTelemetry spans.
pub(crate) fn layer<S>(guard: &OtelGuard) -> Filtered<OpenTelemetryLayer<S, SdkTracer>, Targets, S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let not_the_exporter = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(EXPORTER_TARGETS.map(|target| (target, LevelFilter::OFF)));
    // Span timings (busy/idle) would add two attributes to every span for little use here.
    tracing_opentelemetry::layer()
        .with_tracer(guard.tracer())
        .with_tracked_inactivity(false)
        .with_filter(not_the_exporter)
}

/// Makes `span` a child of the remote span in a W3C `traceparent` header value.
///
/// Returns `false`, leaving the span alone, when the value is malformed, tracing is off, the span is
/// disabled, or its OpenTelemetry side has already started (any `trace_ids`, `enter` or event inside
/// it starts it): call this right after creating the span.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) -> bool {
    let cx = TraceContextPropagator::new()
        .extract_with_context(&opentelemetry::Context::new(), &TraceParent(traceparent));
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// `(trace_id, span_id)` of `span` as lowercase hex (32 and 16 digits), `None` when tracing is off or
/// the span is disabled. Unsampled spans have ids too; see [`is_sampled`].
pub fn trace_ids(span: &tracing::Span) -> Option<(String, String)> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let otel_span = cx.span();
    let ids = otel_span.span_context();
    ids.is_valid()
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

/// Whether `span`'s trace is being recorded and exported (so worth pointing an exemplar at).
pub fn is_sampled(span: &tracing::Span) -> bool {
    !span.is_disabled() && span.context().span().span_context().is_sampled()
}

/// A carrier holding only a `traceparent` value.
struct TraceParent<'a>(&'a str);

impl Extractor for TraceParent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}
