//! The engine's own metrics: alert state, transitions, notification decisions and notifier outcomes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of `tts_alerts_active`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActiveLabels {
    rule: String,
    level: &'static str,
}

/// Labels of `tts_alerts_transitions_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransitionLabels {
    rule: String,
    to: &'static str,
}

/// Labels of `tts_alerts_notifications_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
}

/// Labels of `tts_alerts_notifier_sends_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SendLabels {
    notifier: &'static str,
    outcome: &'static str,
}

/// Labels of `tts_alerts_outbox_alerts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NotifierLabels {
    notifier: &'static str,
}

/// What became of one notifier send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Delivered (2xx, or logged).
    Ok,
    /// A delivery attempt failed; it will be retried.
    Retry,
    /// A delivery failed for good (retries exhausted, or a 4xx).
    Error,
    /// The notifier's queue or outbox was full; the notification was dropped.
    Dropped,
}

impl SendOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Retry => "retry",
            Self::Error => "error",
            Self::Dropped => "dropped",
        }
    }
}

/// Every notifier name that can appear as a label.
pub(crate) const NOTIFIERS: [&str; 3] = ["alertmanager", "webhook", "log"];

/// The engine's metrics; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    active: Family<ActiveLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    sends: Family<SendLabels, Counter>,
    outbox: Family<NotifierLabels, Gauge>,
}

impl Metrics {
    /// Registers every metric in `registry`, with each notifier outcome and decision present at 0.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "tts_alerts_active",
            "Alerts firing now, by rule and level",
            metrics.active.clone(),
        );
        registry.register(
            "tts_alerts_transitions",
            "Alert state changes, by rule and the state entered",
            metrics.transitions.clone(),
        );
        registry.register(
            "tts_alerts_notifications",
            "Notification decisions: sent to the notifiers, or held back by cooldown",
            metrics.decisions.clone(),
        );
        registry.register(
            "tts_alerts_notifier_sends",
            "Notifier deliveries, by notifier and outcome",
            metrics.sends.clone(),
        );
        registry.register(
            "tts_alerts_outbox_alerts",
            "Alerts an outbox holds for delivery now (bounded)",
            metrics.outbox.clone(),
        );
        for outcome in ["sent", "cooldown"] {
            metrics.decisions.get_or_create(&DecisionLabels { outcome }).get();
        }
        for notifier in NOTIFIERS {
            for outcome in [
                SendOutcome::Ok,
                SendOutcome::Retry,
                SendOutcome::Error,
                SendOutcome::Dropped,
            ] {
                metrics
                    .sends
                    .get_or_create(&SendLabels {
                        notifier,
                        outcome: outcome.as_str(),
                    })
                    .get();
            }
        }
        metrics
            .outbox
            .get_or_create(&NotifierLabels {
                notifier: "alertmanager",
            })
            .set(0);
        metrics
    }

    pub(crate) fn set_active(&self, rule: &str, level: &'static str, count: i64) {
        self.active
            .get_or_create(&ActiveLabels {
                rule: rule.to_owned(),
                level,
            })
            .set(count);
    }

    /// Makes every transition series of `rule` exist at 0.
    pub(crate) fn init_rule(&self, rule: &str) {
        for to in ["pending", "inactive", "firing", "resolved", "escalated"] {
            self.transitions
                .get_or_create(&TransitionLabels {
                    rule: rule.to_owned(),
                    to,
                })
                .get();
        }
    }

    pub(crate) fn transition(&self, rule: &str, to: &'static str) {
        self.transitions
            .get_or_create(&TransitionLabels {
                rule: rule.to_owned(),
                to,
            })
            .inc();
    }

    pub(crate) fn decision(&self, outcome: &'static str) {
        self.decisions.get_or_create(&DecisionLabels { outcome }).inc();
    }

    /// Counts one notifier outcome.
    pub fn send(&self, notifier: &'static str, outcome: SendOutcome) {
        self.sends
            .get_or_create(&SendLabels {
                notifier,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(crate) fn outbox(&self, notifier: &'static str, depth: usize) {
        self.outbox
            .get_or_create(&NotifierLabels { notifier })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Alerts the notifier's outbox holds now.
    pub fn outbox_depth(&self, notifier: &'static str) -> i64 {
        self.outbox.get_or_create(&NotifierLabels { notifier }).get()
    }

    /// The count of one notifier outcome (for tests and the export).
    pub fn sends(&self, notifier: &'static str, outcome: SendOutcome) -> u64 {
        self.sends
            .get_or_create(&SendLabels {
                notifier,
                outcome: outcome.as_str(),
            })
            .get()
    }
}
