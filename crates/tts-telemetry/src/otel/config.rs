//! [`TracingConfig`]: where spans go, how many are kept, and the standard `OTEL_*` variables over it.

/// Service name reported in every span's resource.
pub const DEFAULT_SERVICE_NAME: &str = "ttsd";
/// Share of new traces that are recorded and exported.
pub const DEFAULT_SAMPLE_RATIO: f64 = 1.0;

/// Distributed tracing settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Unset: no spans leave the process and no
    /// OpenTelemetry code runs at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Share (0..1) of traces started here that are sampled; a request that arrives with a
    /// `traceparent` follows its caller's decision instead.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: DEFAULT_SAMPLE_RATIO,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
        }
    }
}

impl TracingConfig {
    /// Applies the standard OpenTelemetry variables found in `vars` (pass `std::env::vars()`):
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`, sets (and so turns on)
    /// export; `OTEL_SERVICE_NAME`; `OTEL_TRACES_SAMPLER` = `parentbased_traceidratio` (ratio from
    /// `OTEL_TRACES_SAMPLER_ARG`, default 1), `always_on` or `always_off`; `OTEL_SDK_DISABLED=true`
    /// turns export off. Empty values count as unset.
    ///
    /// Returns one message per variable it could not use; the others are applied regardless.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
        let mut problems = Vec::new();
        let (mut endpoint, mut traces_endpoint, mut sampler, mut sampler_arg) = (None, None, None, None);
        let mut disabled = false;
        for (key, value) in vars {
            let value = value.trim().to_owned();
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "OTEL_EXPORTER_OTLP_ENDPOINT" => endpoint = Some(value),
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => traces_endpoint = Some(value),
                "OTEL_SERVICE_NAME" => self.service_name = value,
                "OTEL_TRACES_SAMPLER" => sampler = Some(value),
                "OTEL_TRACES_SAMPLER_ARG" => sampler_arg = Some(value),
                "OTEL_SDK_DISABLED" => disabled = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if let Some(endpoint) = traces_endpoint.or(endpoint) {
            self.otlp_endpoint = Some(endpoint);
        }
        if disabled {
            self.otlp_endpoint = None;
        }
        match sampler.as_deref() {
            None => {}
            Some("always_on" | "parentbased_always_on") => self.sample_ratio = 1.0,
            Some("always_off" | "parentbased_always_off") => self.sample_ratio = 0.0,
            Some("parentbased_traceidratio" | "traceidratio") => {
                match sampler_arg.as_deref().map(str::parse::<f64>) {
                    None => self.sample_ratio = DEFAULT_SAMPLE_RATIO,
                    Some(Ok(ratio)) if (0.0..=1.0).contains(&ratio) => self.sample_ratio = ratio,
                    Some(_) => problems.push(format!(
                        "OTEL_TRACES_SAMPLER_ARG {:?} is not a ratio between 0 and 1",
                        sampler_arg.unwrap_or_default()
                    )),
                }
            }
            Some(other) => problems.push(format!(
                "OTEL_TRACES_SAMPLER {other:?} is not supported; use parentbased_traceidratio, \
                 always_on or always_off"
            )),
        }
        problems
    }

    /// Every problem with the settings, for the caller's report (empty when they are fine).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(endpoint) = &self.otlp_endpoint
            && !endpoint.starts_with("http://")
        {
            problems.push(format!(
                "tracing.otlp_endpoint {endpoint:?} must be an http:// URL (TLS is not built in)"
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            problems.push(format!(
                "tracing.sample_ratio {} must be between 0 and 1",
                self.sample_ratio
            ));
        }
        if self.service_name.trim().is_empty() {
            problems.push("tracing.service_name must not be empty".to_owned());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_export_nothing() {
        let config = TracingConfig::default();
        assert_eq!(config.otlp_endpoint, None);
        assert_eq!(config.sample_ratio, 1.0);
        assert_eq!(config.service_name, "ttsd");
        assert!(config.validate().is_empty());
        let parsed: TracingConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, config);
        assert!(serde_json::from_str::<TracingConfig>(r#"{"endpoint":"x"}"#).is_err());
    }

    #[test]
    fn standard_variables_turn_export_on_and_pick_the_sampler() {
        let mut config = TracingConfig::default();
        let problems = config.apply_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SERVICE_NAME", "ttsd-eu"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("PATH", "/usr/bin"),
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(config.service_name, "ttsd-eu");
        assert_eq!(config.sample_ratio, 0.25);

        // The traces-specific endpoint wins whatever the order.
        config.apply_env(env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ]));
        assert_eq!(config.otlp_endpoint.as_deref(), Some("http://traces:4317"));
        assert_eq!(config.sample_ratio, 0.0);

        config.apply_env(env(&[("OTEL_SDK_DISABLED", "true")]));
        assert_eq!(config.otlp_endpoint, None);
    }

    #[test]
    fn unusable_variables_are_reported_and_the_rest_applied() {
        let mut config = TracingConfig::default();
        let problems = config.apply_env(env(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "half"),
            ("OTEL_SERVICE_NAME", "kept"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        ]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(config.service_name, "kept");
        assert_eq!(config.sample_ratio, 1.0);
        assert_eq!(config.otlp_endpoint, None);

        let problems = config.apply_env(env(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]));
        assert!(problems[0].contains("jaeger_remote"), "{problems:?}");

        let bad = TracingConfig {
            otlp_endpoint: Some("https://collector:4317".into()),
            sample_ratio: 1.5,
            service_name: " ".into(),
        };
        assert_eq!(bad.validate().len(), 3);
    }
}
