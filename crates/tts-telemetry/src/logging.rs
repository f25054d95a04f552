//! Structured logging: one global `tracing` subscriber writing JSON lines (production) or text (people),
//! with a filter that can be changed at runtime and redaction of personal data in every field value.
//!
//! A JSON line carries `timestamp` (RFC 3339, UTC), `level`, `target`, `message`, every event field at
//! top level, and the fields of all enclosing spans at top level too, so a `session_id` recorded on a
//! session's span appears on every line logged inside it, on any thread that enters it. Field values
//! pass through [`redact`] whatever the format. The filter uses `EnvFilter` syntax (`info`,
//! `info,tts_gateway=debug`) and can be swapped through [`LogHandle::set_filter`] (the admin router's
//! `PUT /admin/log-level`).
//!
//! [`init_logging_with_tracing`] also installs the OpenTelemetry layer of [`crate::otel`] when a
//! collector is configured; JSON lines logged inside a traced span then carry its `trace_id` and
//! `span_id`.

#[cfg(feature = "test-util")]
mod capture;
mod layer;
mod redact;
mod spans;
pub(crate) mod timestamp;

use std::sync::Arc;

use tracing_subscriber::filter::{EnvFilter, ParseError};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::{SubscriberInitExt as _, TryInitError};
use tracing_subscriber::{Registry, reload};

#[cfg(feature = "test-util")]
pub use capture::{CaptureGuard, CapturedLogs};
use layer::LineLayer;
pub use redact::redact;
use spans::SpanLayer;
pub use timestamp::rfc3339_millis;

use crate::otel::{self, OtelGuard, TracingConfig};
use crate::recent::{Recent, RecentConfig};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    Json,
    /// `timestamp LEVEL target: message key=value ...`, for people.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = LoggingError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            other => Err(LoggingError::UnknownFormat(other.to_owned())),
        }
    }
}

/// What can go wrong setting up or changing logging.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter string is not valid `EnvFilter` syntax.
    #[error("invalid log filter {filter:?}")]
    InvalidFilter {
        filter: String,
        #[source]
        source: ParseError,
    },
    /// A global subscriber was installed before [`init_logging`].
    #[error("a global log subscriber is already installed")]
    AlreadyInstalled(#[source] TryInitError),
    /// The subscriber the handle controls no longer exists.
    #[error("the log subscriber is gone")]
    SubscriberGone(#[source] reload::Error),
    /// Not `json` or `text`.
    #[error("unknown log format {0:?}, expected \"json\" or \"text\"")]
    UnknownFormat(String),
    /// The OTLP span exporter could not be built (a malformed or `https` endpoint).
    #[error("cannot export traces to {endpoint:?}")]
    TraceExport {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// Trace export was asked for outside a Tokio runtime.
    #[error("trace export must be set up inside a Tokio runtime")]
    NoRuntime,
}

/// Changes and reads the live log filter; cheap to clone.
#[derive(Clone)]
pub struct LogHandle {
    reload: reload::Handle<EnvFilter, Registry>,
    current: Arc<std::sync::Mutex<String>>,
    recent: Recent,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("filter", &self.current_filter())
            .finish()
    }
}

impl LogHandle {
    /// Replaces the filter, e.g. `debug` or `info,tts_gateway=debug`; the old one stays on error.
    pub fn set_filter(&self, filter: &str) -> Result<(), LoggingError> {
        let filter = filter.trim();
        let parsed = parse_filter(filter)?;
        self.reload.reload(parsed).map_err(LoggingError::SubscriberGone)?;
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = filter.to_owned();
        Ok(())
    }

    /// The buffers of recent spans and log records this subscriber fills.
    pub fn recent(&self) -> &Recent {
        &self.recent
    }

    /// The filter as last set.
    pub fn current_filter(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn parse_filter(filter: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|source| LoggingError::InvalidFilter {
            filter: filter.to_owned(),
            source,
        })
}

/// Installs the global subscriber writing to stderr (and routes `log` records into it).
pub fn init_logging(format: LogFormat, filter: &str) -> Result<LogHandle, LoggingError> {
    let (dispatch, handle) = build_subscriber(format, filter, std::io::stderr)?;
    dispatch.try_init().map_err(LoggingError::AlreadyInstalled)?;
    Ok(handle)
}

/// [`init_logging`], plus span export when `tracing` names a collector: then it must run inside a
/// Tokio runtime, and the returned guard must live until shutdown (dropping it flushes the spans).
pub fn init_logging_with_tracing(
    format: LogFormat,
    filter: &str,
    tracing: &TracingConfig,
) -> Result<(LogHandle, Option<OtelGuard>), LoggingError> {
    let (dispatch, handle, guard) = build_subscriber_with_tracing(format, filter, std::io::stderr, tracing)?;
    dispatch.try_init().map_err(LoggingError::AlreadyInstalled)?;
    Ok((handle, guard))
}

/// Builds the same subscriber as [`init_logging`] around any writer, without installing it: use it with
/// `tracing::dispatcher::with_default` (tests capture output this way).
pub fn build_subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Result<(tracing::Dispatch, LogHandle), LoggingError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let (dispatch, handle, _) = build(format, filter, writer, None, RecentConfig::default())?;
    Ok((dispatch, handle))
}

/// Builds the same subscriber as [`init_logging_with_tracing`] around any writer, without installing
/// it, so an in-process test can export to its own collector.
pub fn build_subscriber_with_tracing<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
    tracing: &TracingConfig,
) -> Result<(tracing::Dispatch, LogHandle, Option<OtelGuard>), LoggingError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let guard = match &tracing.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            tokio::runtime::Handle::try_current().map_err(|_| LoggingError::NoRuntime)?;
            let guard = otel::start(tracing, endpoint).map_err(|source| LoggingError::TraceExport {
                endpoint: endpoint.clone(),
                source,
            })?;
            Some(guard)
        }
    };
    build(format, filter, writer, guard, RecentConfig::default())
}

pub(crate) fn build<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
    otel: Option<OtelGuard>,
    bounds: RecentConfig,
) -> Result<(tracing::Dispatch, LogHandle, Option<OtelGuard>), LoggingError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = filter.trim();
    let (filter_layer, reload) = reload::Layer::new(parse_filter(filter)?);
    let recent = Recent::new(bounds);
    let traces = recent.traces_arc();
    let lines = recent.logs_arc();
    let handle = LogHandle {
        reload,
        current: Arc::new(std::sync::Mutex::new(filter.to_owned())),
        recent,
    };
    let base = Registry::default().with(filter_layer);
    // Two subscriber types rather than an `Option` layer: with tracing off, no OpenTelemetry code is
    // on the path of any span or event. The span recorder sits inside the OpenTelemetry layer so that it
    // closes first, while the OpenTelemetry ids can still be read.
    let dispatch = match &otel {
        None => tracing::Dispatch::new(
            base.with(SpanLayer::new(traces, false))
                .with(LineLayer::new(format, writer, false, lines)),
        ),
        Some(guard) => tracing::Dispatch::new(
            base.with(SpanLayer::new(traces, true))
                .with(otel::layer(guard))
                .with(LineLayer::new(format, writer, true, lines)),
        ),
    };
    Ok((dispatch, handle, otel))
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use serde_json::Value;

    use super::*;

    /// A `MakeWriter` appending to a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        fn json_lines(&self) -> Vec<Value> {
            self.text()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    #[test]
    fn json_lines_flatten_event_and_span_fields_across_threads() {
        let captured = Captured::default();
        let (dispatch, _handle) = build_subscriber(LogFormat::Json, "info", captured.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            let session = tracing::info_span!("session", session_id = "s-42", model = tracing::field::Empty);
            session.record("model", "lessac");
            let _entered = session.enter();
            let request = tracing::info_span!("request", request = 7_u64);
            request.in_scope(|| tracing::info!(frames = 3, rtf = 0.25, "Synthesised {} frames.", 3));
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    tracing::dispatcher::with_default(&dispatch, || {
                        let _entered = session.enter();
                        tracing::warn!(level = "shadowed", "From another thread.");
                    });
                });
            });
            tracing::debug!("Filtered out.");
        });
        let lines = captured.json_lines();
        assert_eq!(lines.len(), 2, "{}", captured.text());

        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["target"], module_path!());
        assert_eq!(first["message"], "Synthesised 3 frames.");
        assert_eq!(first["session_id"], "s-42");
        assert_eq!(first["model"], "lessac");
        assert_eq!(first["request"], 7);
        assert_eq!(first["frames"], 3);
        assert_eq!(first["rtf"], 0.25);
        let timestamp = first["timestamp"].as_str().unwrap();
        assert!(timestamp.len() == 27 && timestamp.ends_with('Z'), "{timestamp}");

        let second = &lines[1];
        assert_eq!(second["level"], "WARN");
        assert_eq!(second["message"], "From another thread.");
        assert_eq!(second["session_id"], "s-42");
        assert_eq!(second["field.level"], "shadowed");
        assert!(second.get("request").is_none());
    }

    #[test]
    fn every_field_value_is_redacted() {
        let captured = Captured::default();
        let (dispatch, _handle) = build_subscriber(LogFormat::Json, "info", captured.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("s", voice = "/opt/voices/en.onnx");
            let _entered = span.enter();
            let error = io::Error::other("cannot open /v/de.onnx.json");
            tracing::info!(user = ?"jane@example.com", error = &error as &dyn std::error::Error, "Call 555-123-4567.");
        });
        let line = &captured.json_lines()[0];
        assert_eq!(line["message"], "Call [phone].");
        assert_eq!(line["voice"], "[voice-path]");
        assert_eq!(line["user"], "\"[email]\"");
        assert_eq!(line["error"], "cannot open [voice-path]");
    }

    #[test]
    fn text_lines_are_readable_and_redacted() {
        let captured = Captured::default();
        let (dispatch, _handle) = build_subscriber(LogFormat::Text, "debug", captured.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("session", session_id = "abc");
            span.in_scope(|| tracing::debug!(note = "two words", ssn = "123-45-6789", "Hello."));
        });
        let text = captured.text();
        let rest = text.split_once(' ').unwrap().1;
        assert_eq!(
            rest,
            format!(
                "DEBUG {}: Hello. session_id=abc note=\"two words\" ssn=[ssn]\n",
                module_path!()
            )
        );
    }

    #[test]
    fn the_filter_can_be_changed_at_runtime() {
        let captured = Captured::default();
        let (dispatch, handle) = build_subscriber(LogFormat::Json, "warn", captured.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("Dropped.");
            handle.set_filter(" info,some_crate=debug ").unwrap();
            tracing::info!("Kept.");
            let error = handle.set_filter("info,x=loud").unwrap_err();
            assert!(matches!(error, LoggingError::InvalidFilter { .. }), "{error}");
            tracing::info!("Still kept.");
        });
        assert_eq!(handle.current_filter(), "info,some_crate=debug");
        let messages: Vec<Value> = captured
            .json_lines()
            .into_iter()
            .map(|line| line["message"].clone())
            .collect();
        assert_eq!(messages, ["Kept.", "Still kept."]);
        assert!(build_subscriber(LogFormat::Json, "=[", captured).is_err());
    }

    #[test]
    fn formats_parse_from_config_strings() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!(
            serde_json::from_str::<LogFormat>("\"text\"").unwrap(),
            LogFormat::Text
        );
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
