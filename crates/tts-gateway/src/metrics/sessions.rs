//! Session and connection lifecycle, and utterances by outcome.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::Transport;
use super::buckets::SESSION_BUCKETS;
use super::labels::{Endpoint, EndpointLabels, Outcome, OutcomeLabels, ReasonLabels};

/// The reasons a connection can be refused a session (`tts_sessions_refused_total{reason}`).
const REFUSAL_REASONS: [&str; 3] = ["overloaded", "unknown_voice", "draining"];

/// `tts_sessions_{started,ended,refused}_total`, `tts_sessions_active`, `tts_session_duration_seconds`,
/// `tts_websocket_connections_total` and `tts_utterances_total`.
#[derive(Debug)]
pub(super) struct SessionMetrics {
    started: Family<EndpointLabels, Counter>,
    ended: Family<ReasonLabels, Counter>,
    pub(super) active: Gauge,
    refused: Family<ReasonLabels, Counter>,
    duration: Histogram,
    connections: Family<EndpointLabels, Counter>,
    utterances: Family<OutcomeLabels, Counter>,
}

/// Holds one session in `tts_sessions_active`.
#[derive(Debug)]
pub(crate) struct ActiveSession(Gauge);

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl SessionMetrics {
    pub(super) fn register(r: &mut Registry) -> Self {
        let metrics = Self {
            started: Family::default(),
            ended: Family::default(),
            active: Gauge::default(),
            refused: Family::default(),
            duration: Histogram::new(SESSION_BUCKETS),
            connections: Family::default(),
            utterances: Family::default(),
        };
        r.register(
            "tts_sessions_started",
            "Sessions that received session_start, by endpoint",
            metrics.started.clone(),
        );
        r.register(
            "tts_sessions_ended",
            "Sessions ended, by reason",
            metrics.ended.clone(),
        );
        r.register("tts_sessions_active", "Sessions open now", metrics.active.clone());
        r.register(
            "tts_sessions_refused",
            "Connections refused a session, by reason",
            metrics.refused.clone(),
        );
        r.register_with_unit(
            "tts_session_duration",
            "session_start to the session's end",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        r.register(
            "tts_websocket_connections",
            "WebSocket upgrades accepted, by endpoint",
            metrics.connections.clone(),
        );
        r.register(
            "tts_utterances",
            "Utterances ended, by outcome",
            metrics.utterances.clone(),
        );
        metrics.init_series();
        metrics
    }

    fn init_series(&self) {
        for endpoint in [Endpoint::V1, Endpoint::Legacy] {
            let _ = self.connections.get_or_create(&EndpointLabels { endpoint });
            let _ = self.started.get_or_create(&EndpointLabels { endpoint });
        }
        for reason in crate::session::END_REASONS {
            let _ = self.ended.get_or_create(&ReasonLabels { reason });
        }
        for reason in REFUSAL_REASONS {
            let _ = self.refused.get_or_create(&ReasonLabels { reason });
        }
        for outcome in [Outcome::Completed, Outcome::Stopped, Outcome::Failed] {
            for transport in Transport::ALL {
                let _ = self
                    .utterances
                    .get_or_create(&OutcomeLabels { outcome, transport });
            }
        }
    }

    pub(super) fn connection(&self, endpoint: Endpoint) {
        self.connections.get_or_create(&EndpointLabels { endpoint }).inc();
    }

    pub(super) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(super) fn started(&self, endpoint: Endpoint) -> ActiveSession {
        self.started.get_or_create(&EndpointLabels { endpoint }).inc();
        self.active.inc();
        ActiveSession(self.active.clone())
    }

    pub(super) fn ended(&self, reason: &'static str, lifetime: Duration) {
        self.ended.get_or_create(&ReasonLabels { reason }).inc();
        self.duration.observe(lifetime.as_secs_f64());
    }

    pub(super) fn utterance(&self, outcome: Outcome, transport: Transport) {
        self.utterances
            .get_or_create(&OutcomeLabels { outcome, transport })
            .inc();
    }
}
