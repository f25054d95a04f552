//! `tts_gateway_admission_*`: the refusal counter and, at scrape time, the estimate's gauges.

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::EngineHeadroom;

/// Which admission limit refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RefusedBy {
    /// `gateway.max_sessions` slots were held.
    MaxSessions,
    /// One more slot would take the engine utilisation estimate past `gateway.admission_max_utilisation`.
    EngineHeadroom,
}

impl RefusedBy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RefusedBy::MaxSessions => "max_sessions",
            RefusedBy::EngineHeadroom => "engine_headroom",
        }
    }
}

impl EncodeLabelValue for RefusedBy {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    limit: RefusedBy,
}

#[derive(Debug, Clone)]
pub(super) struct Metrics {
    refusals: Family<RefusalLabels, Counter>,
}

impl Metrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            refusals: Family::default(),
        };
        for limit in [RefusedBy::MaxSessions, RefusedBy::EngineHeadroom] {
            let _ = metrics.refusals.get_or_create(&RefusalLabels { limit });
        }
        registry.register(
            "tts_gateway_admission_refusals",
            "Sessions, HTTP speech requests and Wyoming syntheses refused at admission, by the limit that refused them",
            metrics.refusals.clone(),
        );
        metrics
    }

    pub(super) fn refused(&self, limit: RefusedBy) {
        self.refusals.get_or_create(&RefusalLabels { limit }).inc();
    }
}

/// The estimate's gauges, read at scrape time.
#[derive(Debug)]
struct EstimateCollector(Weak<EngineHeadroom>);

pub(super) fn register_collector(registry: &mut Registry, headroom: Weak<EngineHeadroom>) {
    registry.register_collector(Box::new(EstimateCollector(headroom)));
}

impl Collector for EstimateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(headroom) = self.0.upgrade() else {
            return Ok(());
        };
        let estimate = headroom.estimate();
        let gauges = [
            (
                "tts_gateway_admission_limit_ratio",
                "gateway.admission_max_utilisation: the engine utilisation past which new sessions are refused (0 = off)",
                Some(headroom.limit()),
            ),
            (
                "tts_gateway_admission_session_cost_ratio",
                "Engine seconds per second of audio, averaged over recent chunks of every voice: the engine threads one speaking session keeps busy (absent until a chunk finished)",
                estimate.real_time_factor,
            ),
            (
                "tts_gateway_admission_utilisation_ratio",
                "Sessions held x session cost / engine threads: engine utilisation if every admitted session spoke at once (absent until a chunk finished)",
                estimate.utilisation(estimate.sessions),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
            }
        }
        Ok(())
    }
}
