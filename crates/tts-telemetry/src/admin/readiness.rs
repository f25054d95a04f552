//! `tts_ready`: what `/readiness` would answer, as a gauge, so Prometheus can alert on a process that
//! stays unready without probing it itself.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::HealthCheck;

/// Registers `tts_ready`: 1 when every readiness-required check passes at scrape time, else 0.
pub fn register_readiness(registry: &mut Registry, checks: Vec<Arc<dyn HealthCheck>>) {
    registry.register_collector(Box::new(ReadinessCollector { checks }));
}

/// The checks `/readiness` runs; evaluated again at each scrape (checks are cheap reads of kept state).
struct ReadinessCollector {
    checks: Vec<Arc<dyn HealthCheck>>,
}

impl std::fmt::Debug for ReadinessCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCollector")
            .field("checks", &self.checks.len())
            .finish()
    }
}

impl Collector for ReadinessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let ready = self
            .checks
            .iter()
            .filter(|check| check.required_for_readiness())
            .all(|check| check.check().ok);
        let gauge = ConstGauge::new(i64::from(ready));
        gauge.encode(encoder.encode_descriptor(
            "tts_ready",
            "1 when /readiness answers 200 (every readiness-required check passes), else 0",
            None,
            gauge.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CheckResult;

    struct Fixed(bool);

    impl HealthCheck for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn required_for_readiness(&self) -> bool {
            true
        }
        fn check(&self) -> CheckResult {
            CheckResult {
                ok: self.0,
                detail: String::new(),
            }
        }
    }

    fn scrape(checks: Vec<Arc<dyn HealthCheck>>) -> String {
        let mut registry = Registry::default();
        register_readiness(&mut registry, checks);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn ready_only_when_every_required_check_passes() {
        assert!(scrape(vec![Arc::new(Fixed(true))]).contains("\ntts_ready 1\n"));
        assert!(scrape(vec![Arc::new(Fixed(true)), Arc::new(Fixed(false))]).contains("\ntts_ready 0\n"));
    }
}
