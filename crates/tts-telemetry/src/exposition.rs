//! Encoding a registry for scrapers: OpenMetrics text, or the Prometheus text format 0.0.4.
//!
//! Prometheus itself negotiates OpenMetrics; `curl`, older scrapers and `promtool check metrics` want
//! 0.0.4. The 0.0.4 output comes from `prometheus_client`'s own encoder (added upstream in 0.26), which
//! writes what a conversion of the OpenMetrics text would: no `# EOF` or `# UNIT` lines, counter families
//! named with their `_total` suffix in `# HELP`/`# TYPE`, info metrics as gauges, no exemplars and no
//! `_created` samples. Encoding it directly avoids a second pass over a large scrape.

use prometheus_client::registry::Registry;

/// Media type of OpenMetrics text 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Media type of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
    /// Prometheus text 0.0.4.
    PrometheusText,
}

/// Encoding failed; only a metric or collector whose own encoding fails can cause it.
#[derive(Debug, thiserror::Error)]
#[error("encoding the metrics registry failed")]
pub struct EncodeError(#[from] std::fmt::Error);

impl Exposition {
    /// OpenMetrics when the `Accept` header asks for it, Prometheus text otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::PrometheusText,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Self::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }
}

/// Encodes every metric and collector in `registry` in `format`.
pub fn encode(registry: &Registry, format: Exposition) -> Result<String, EncodeError> {
    let mut text = String::new();
    match format {
        Exposition::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, registry)?,
        Exposition::PrometheusText => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::exemplar::CounterWithExemplar;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Unit;

    use super::*;
    use crate::register_build_info;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Labels {
        model: String,
        outcome: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct TraceLabel {
        trace_id: String,
    }

    /// A counter, a counter with a unit and an exemplar, a gauge, a labelled histogram and an info metric.
    fn sample_registry() -> Registry {
        let mut registry = Registry::default();
        let requests: Counter = Counter::default();
        requests.inc_by(3);
        registry.register("app_requests", "Requests served", requests);
        let busy: CounterWithExemplar<TraceLabel, f64> = CounterWithExemplar::default();
        busy.inc_by(
            1.5,
            Some(TraceLabel {
                trace_id: "abc".into(),
            }),
            None,
        );
        registry.register_with_unit("app_busy", "Time spent busy", Unit::Seconds, busy);
        let sessions: Gauge = Gauge::default();
        sessions.set(2);
        registry.register("app_sessions", "Open sessions", sessions);
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new([0.1, 0.5, 1.0]));
        latency
            .get_or_create(&Labels {
                model: "a".into(),
                outcome: "ok".into(),
            })
            .observe(0.3);
        latency
            .get_or_create(&Labels {
                model: "b\"\\".into(),
                outcome: "error".into(),
            })
            .observe(2.0);
        registry.register("app_latency_seconds", "Latency", latency);
        register_build_info(
            &mut registry,
            "app_build",
            "Build of this binary",
            &[("version", "0.1.0")],
        );
        registry
    }

    #[test]
    fn prometheus_text_follows_the_0_0_4_rules() {
        let text = encode(&sample_registry(), Exposition::PrometheusText).unwrap();
        let expected = "\
# HELP app_requests_total Requests served.
# TYPE app_requests_total counter
app_requests_total 3
# HELP app_busy_seconds_total Time spent busy.
# TYPE app_busy_seconds_total counter
app_busy_seconds_total 1.5
# HELP app_sessions Open sessions.
# TYPE app_sessions gauge
app_sessions 2
# HELP app_latency_seconds Latency.
# TYPE app_latency_seconds histogram
";
        assert!(text.starts_with(expected), "{text}");
        for line in [
            "app_latency_seconds_bucket{model=\"a\",outcome=\"ok\",le=\"0.5\"} 1\n",
            "app_latency_seconds_bucket{model=\"b\\\"\\\\\",outcome=\"error\",le=\"+Inf\"} 1\n",
            "app_latency_seconds_sum{model=\"a\",outcome=\"ok\"} 0.3\n",
            "app_latency_seconds_count{model=\"a\",outcome=\"ok\"} 1\n",
            "# TYPE app_build_info gauge\n",
            "app_build_info{version=\"0.1.0\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        for absent in ["# EOF", "# UNIT", "_created", " # {", "trace_id"] {
            assert!(!text.contains(absent), "{absent:?} in:\n{text}");
        }
    }

    #[test]
    fn openmetrics_keeps_its_own_conventions() {
        let text = encode(&sample_registry(), Exposition::OpenMetrics).unwrap();
        assert!(text.contains("# TYPE app_requests counter\n"), "{text}");
        assert!(text.contains("# UNIT app_busy_seconds seconds\n"), "{text}");
        assert!(
            text.contains("app_busy_seconds_total 1.5 # {trace_id=\"abc\"} 1.5\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn negotiation_follows_the_accept_header() {
        let prometheus_accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        assert_eq!(
            Exposition::negotiate(Some(prometheus_accept)),
            Exposition::OpenMetrics
        );
        assert_eq!(
            Exposition::negotiate(Some("text/plain")),
            Exposition::PrometheusText
        );
        assert_eq!(Exposition::negotiate(None), Exposition::PrometheusText);
        assert_eq!(Exposition::OpenMetrics.content_type(), OPENMETRICS_CONTENT_TYPE);
        assert_eq!(
            Exposition::PrometheusText.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }
}
