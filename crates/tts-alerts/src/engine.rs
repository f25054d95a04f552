//! The engine: rules, the alerts they raise, and what the notifiers are told.
//!
//! [`Engine::evaluate`] takes one set of signal samples and `now`; everything else (the tick, the
//! notifiers) is around it. All state sits behind one mutex that only the evaluation tick and the admin
//! API take, never the audio path.

mod evaluate;
mod lifecycle;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use self::view::Alert;
pub use self::view::{Ack, AlertState, AlertView, Event, Links, Notification, RuleKind};
use crate::AlertError;
use crate::anomaly::Baseline;
use crate::metrics::Metrics;
use crate::notify::Dispatch;
use crate::rule::{AnomalyRule, HealthRule, Level, Scope, ThresholdRule, Thresholds};
use crate::time::Clock;

/// One value of one signal in one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub signal: String,
    pub scope: Scope,
    pub value: f64,
}

impl Sample {
    /// A sample of `signal` in the scope given by `labels`.
    pub fn new(signal: &str, labels: &[(&str, &str)], value: f64) -> Self {
        Self {
            signal: signal.to_owned(),
            scope: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        }
    }
}

/// Escalation of a warning to critical.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Escalation {
    /// A warning firing this long becomes critical.
    pub after: Option<Duration>,
    /// `(n, window)`: the n-th firing of one (rule, scope) within `window` fires as critical.
    pub repeated: Option<(u32, Duration)>,
}

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub threshold_rules: Vec<ThresholdRule>,
    pub anomaly_rules: Vec<AnomalyRule>,
    pub health_rules: Vec<HealthRule>,
    /// After a firing notification for a (rule, scope, level), another waits this long.
    pub cooldown: Duration,
    /// An unacknowledged firing alert is notified again after this long.
    pub repeat_interval: Duration,
    pub escalation: Escalation,
    /// Resolved alerts kept for `GET /admin/alerts`.
    pub history_capacity: usize,
    pub links: Links,
}

/// (rule name, scope).
pub(crate) type TrackKey = (String, Scope);

/// What the engine remembers per (rule, scope) beyond the alert itself.
#[derive(Debug, Default)]
pub(crate) struct Track {
    pub(crate) alert: Option<u64>,
    /// Resolved by hand: quiet until the condition clears once.
    pub(crate) muted: bool,
    pub(crate) baseline: Baseline,
    pub(crate) failures: u32,
    pub(crate) passes: u32,
    pub(crate) next_check: Option<Instant>,
    pub(crate) detail: String,
    pub(crate) firings: VecDeque<Instant>,
}

pub(crate) struct Inner {
    threshold_rules: Vec<ThresholdRule>,
    anomaly_rules: Vec<AnomalyRule>,
    health_rules: Vec<HealthRule>,
    pub(crate) tracks: HashMap<TrackKey, Track>,
    pub(crate) alerts: BTreeMap<u64, Alert>,
    pub(crate) history: VecDeque<Alert>,
    pub(crate) history_capacity: usize,
    pub(crate) last_notified: HashMap<(String, Scope, Level), Instant>,
    pub(crate) next_id: u64,
    pub(crate) cooldown: Duration,
    pub(crate) repeat: Duration,
    pub(crate) escalation: Escalation,
    pub(crate) clock: Clock,
    pub(crate) links: Links,
    pub(crate) metrics: Metrics,
    /// Notifications made during the current call, sent once the lock is released.
    pub(crate) outbox: Vec<Notification>,
}

/// The alert engine. Share it as `Arc<Engine>`.
pub struct Engine {
    inner: Mutex<Inner>,
    dispatch: Dispatch,
    metrics: Metrics,
    links: Links,
}

/// Every problem with `config`, each a sentence.
pub fn problems(config: &EngineConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for rule in &config.threshold_rules {
        problems.extend(rule.thresholds.problems(&rule.name, rule.direction));
        if !names.insert(rule.name.clone()) {
            problems.push(format!("Rule name {} is used twice.", rule.name));
        }
    }
    for rule in &config.anomaly_rules {
        problems.extend(rule.params.problems(&rule.name));
        if !names.insert(rule.name.clone()) {
            problems.push(format!("Rule name {} is used twice.", rule.name));
        }
    }
    for rule in &config.health_rules {
        if rule.failure_threshold == 0 || rule.recovery_threshold == 0 {
            problems.push(format!(
                "{}: failure_threshold and recovery_threshold must be >= 1.",
                rule.name
            ));
        }
        if rule.interval.is_zero() {
            problems.push(format!("{}: interval must be > 0.", rule.name));
        }
    }
    if config.repeat_interval < config.cooldown {
        problems.push(format!(
            "repeat_interval ({:?}) must be >= cooldown ({:?}).",
            config.repeat_interval, config.cooldown
        ));
    }
    if config.history_capacity == 0 {
        problems.push("history_capacity must be >= 1.".to_owned());
    }
    problems
}

impl Engine {
    /// Builds the engine; `dispatch` carries notifications to the notifiers. Fails listing every
    /// problem of `config`.
    pub fn new(config: EngineConfig, metrics: Metrics, dispatch: Dispatch) -> Result<Self, AlertError> {
        let found = problems(&config);
        if !found.is_empty() {
            return Err(AlertError::Invalid(found));
        }
        for rule in &config.threshold_rules {
            metrics.init_rule(&rule.name);
            for (level, _) in rule.thresholds.levels() {
                metrics.set_active(&rule.name, level.as_str(), 0);
            }
        }
        for rule in &config.anomaly_rules {
            metrics.init_rule(&rule.name);
            metrics.set_active(&rule.name, rule.level.as_str(), 0);
        }
        for rule in &config.health_rules {
            metrics.init_rule(&rule.name);
            metrics.set_active(&rule.name, rule.level.as_str(), 0);
        }
        let inner = Inner {
            threshold_rules: config.threshold_rules,
            anomaly_rules: config.anomaly_rules,
            health_rules: config.health_rules,
            tracks: HashMap::new(),
            alerts: BTreeMap::new(),
            history: VecDeque::new(),
            history_capacity: config.history_capacity,
            last_notified: HashMap::new(),
            next_id: 0,
            cooldown: config.cooldown,
            repeat: config.repeat_interval,
            escalation: config.escalation,
            clock: Clock::new(),
            links: config.links.clone(),
            metrics: metrics.clone(),
            outbox: Vec::new(),
        };
        Ok(Self {
            inner: Mutex::new(inner),
            dispatch,
            metrics,
            links: config.links,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Where alert links point.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Evaluates every rule against `samples` (and runs the health checks that are due) at `now`.
    /// A threshold or anomaly track with no sample this time counts as clear (no data, no alert).
    pub fn evaluate(&self, samples: &[Sample], now: Instant) {
        let (sent, state) = {
            let mut inner = self.lock();
            inner.evaluate(samples, now);
            inner.update_gauges();
            let state = self.dispatch.wants_state().then(|| inner.published(now));
            (std::mem::take(&mut inner.outbox), state)
        };
        for notification in sent {
            self.dispatch.send(&notification);
        }
        if let Some(state) = state {
            self.dispatch.publish(state);
        }
    }

    /// Acknowledges an active alert.
    pub fn ack(&self, id: u64, who: &str, why: &str) -> Result<AlertView, AlertError> {
        let mut inner = self.lock();
        let at = inner.clock.rfc3339(Instant::now());
        let links = inner.links.clone();
        let clock = inner.clock;
        let alert = inner.alerts.get_mut(&id).ok_or(AlertError::NotActive(id))?;
        alert.ack = Some(Ack {
            who: who.to_owned(),
            why: why.to_owned(),
            at,
        });
        tracing::info!(id, rule = %alert.rule, who, why, "Alert acknowledged.");
        Ok(alert.view(&clock, &links))
    }

    /// Resolves an active alert by hand. Its (rule, scope) stays quiet until the condition clears.
    pub fn resolve(&self, id: u64, who: &str) -> Result<AlertView, AlertError> {
        let sent = {
            let mut inner = self.lock();
            if !inner.alerts.contains_key(&id) {
                return Err(AlertError::NotActive(id));
            }
            inner.resolve(id, Instant::now(), format!("manual:{who}"));
            inner.update_gauges();
            let view = inner
                .history
                .back()
                .map(|alert| alert.view(&inner.clock, &inner.links));
            tracing::info!(id, who, "Alert resolved by hand.");
            let state = self
                .dispatch
                .wants_state()
                .then(|| inner.published(Instant::now()));
            (std::mem::take(&mut inner.outbox), view, state)
        };
        for notification in &sent.0 {
            self.dispatch.send(notification);
        }
        if let Some(state) = sent.2 {
            self.dispatch.publish(state);
        }
        sent.1.ok_or(AlertError::NotActive(id))
    }

    /// Whether `id` names an alert, active or in the history.
    pub fn known(&self, id: u64) -> bool {
        let inner = self.lock();
        inner.alerts.contains_key(&id) || inner.history.iter().any(|alert| alert.id == id)
    }

    /// Active alerts (pending and firing), oldest first.
    pub fn active(&self) -> Vec<AlertView> {
        let inner = self.lock();
        inner
            .alerts
            .values()
            .map(|alert| alert.view(&inner.clock, &inner.links))
            .collect()
    }

    /// Resolved alerts, oldest first (bounded by `history_capacity`).
    pub fn history(&self) -> Vec<AlertView> {
        let inner = self.lock();
        inner
            .history
            .iter()
            .map(|alert| alert.view(&inner.clock, &inner.links))
            .collect()
    }

    /// The threshold rules' current thresholds, by rule name.
    pub fn thresholds(&self) -> BTreeMap<String, ThresholdView> {
        let inner = self.lock();
        inner
            .threshold_rules
            .iter()
            .map(|rule| {
                (
                    rule.name.clone(),
                    ThresholdView {
                        signal: rule.signal.clone(),
                        scope_filter: rule.scope_filter.clone(),
                        direction: rule.direction,
                        thresholds: rule.thresholds.clone(),
                    },
                )
            })
            .collect()
    }

    /// Replaces the thresholds of the named rules, all or none: every problem (unknown rule, bad level)
    /// is listed in the error.
    pub fn set_thresholds(&self, updates: &BTreeMap<String, Thresholds>) -> Result<(), AlertError> {
        let mut inner = self.lock();
        let mut found = Vec::new();
        for (name, thresholds) in updates {
            match inner.threshold_rules.iter().find(|rule| &rule.name == name) {
                Some(rule) => found.extend(thresholds.problems(name, rule.direction)),
                None => found.push(format!("{name}: no such threshold rule.")),
            }
        }
        if !found.is_empty() {
            return Err(AlertError::Invalid(found));
        }
        for rule in &mut inner.threshold_rules {
            if let Some(thresholds) = updates.get(&rule.name) {
                rule.thresholds = thresholds.clone();
                tracing::info!(rule = %rule.name, "Alert thresholds changed.");
            }
        }
        Ok(())
    }

    /// The anomaly baselines, for the export.
    pub fn baselines(&self) -> Value {
        let inner = self.lock();
        let mut out = Vec::new();
        for rule in &inner.anomaly_rules {
            for ((name, scope), track) in &inner.tracks {
                if name == &rule.name {
                    out.push(json!({
                        "rule": name,
                        "signal": rule.signal,
                        "scope": scope,
                        "baseline": track.baseline,
                        "stddev": track.baseline.variance.sqrt(),
                    }));
                }
            }
        }
        Value::Array(out)
    }
}

/// A threshold rule as `GET /admin/alerts/thresholds` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdView {
    pub signal: String,
    pub scope_filter: Scope,
    pub direction: crate::rule::Direction,
    #[serde(flatten)]
    pub thresholds: Thresholds,
}

#[cfg(test)]
pub(crate) mod tests;
