//! Rules: what is watched, at which levels, and how a level is entered and left.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tts_telemetry::admin::HealthCheck;

/// Labels that say which instance of a signal a value belongs to (`{voice="en_US-amy"}`). Empty for a
/// process-wide signal.
pub type Scope = BTreeMap<String, String>;

/// How bad an alert is. Ordered: `Warning < Critical < Emergency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Warning,
    Critical,
    Emergency,
}

impl Level {
    /// Every level, least severe first.
    pub const ALL: [Level; 3] = [Level::Warning, Level::Critical, Level::Emergency];

    /// The name used in JSON, labels and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Emergency => "emergency",
        }
    }

    /// Alertmanager's `severity` (info|warning|critical): emergency travels as critical plus `priority="P0"`.
    pub fn severity(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical | Self::Emergency => "critical",
        }
    }
}

/// Which way of a threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Latency, queue depth: bigger is worse.
    HigherIsWorse,
    /// Success rate: smaller is worse.
    LowerIsWorse,
}

impl Direction {
    /// Whether `value` is at or beyond `limit` on the bad side.
    pub fn breaches(self, value: f64, limit: f64) -> bool {
        match self {
            Self::HigherIsWorse => value >= limit,
            Self::LowerIsWorse => value <= limit,
        }
    }

    /// Whether `value` is strictly on the good side of `limit`.
    pub fn clears(self, value: f64, limit: f64) -> bool {
        !self.breaches(value, limit)
    }
}

/// One level of a threshold rule: entered when the value reaches `trigger`, left when it is back past
/// `clear` (hysteresis: `clear` lies on the good side of `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelThreshold {
    pub trigger: f64,
    pub clear: f64,
}

/// The changeable part of a threshold rule: levels and `for`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<LevelThreshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<LevelThreshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<LevelThreshold>,
    /// How long the value must stay bad before the alert fires.
    #[serde(default)]
    pub for_seconds: f64,
}

impl Thresholds {
    /// The configured levels, least severe first.
    pub fn levels(&self) -> impl Iterator<Item = (Level, LevelThreshold)> + '_ {
        Level::ALL
            .into_iter()
            .zip([self.warning, self.critical, self.emergency])
            .filter_map(|(level, threshold)| threshold.map(|t| (level, t)))
    }

    /// Every problem with these thresholds for a rule named `rule`, each a sentence naming the field.
    pub fn problems(&self, rule: &str, direction: Direction) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.for_seconds.is_finite() || self.for_seconds < 0.0 {
            problems.push(format!(
                "{rule}.for_seconds must be a finite number >= 0 (got {}).",
                self.for_seconds
            ));
        }
        if self.levels().next().is_none() {
            problems.push(format!(
                "{rule} needs at least one of warning, critical, emergency."
            ));
        }
        let mut previous: Option<(Level, f64)> = None;
        for (level, t) in self.levels() {
            let name = format!("{rule}.{}", level.as_str());
            if !t.trigger.is_finite() || !t.clear.is_finite() {
                problems.push(format!("{name}: trigger and clear must be finite numbers."));
                continue;
            }
            if direction.breaches(t.clear, t.trigger) && t.clear != t.trigger {
                let side = match direction {
                    Direction::HigherIsWorse => "<=",
                    Direction::LowerIsWorse => ">=",
                };
                problems.push(format!(
                    "{name}: clear ({}) must be {side} trigger ({}), on the good side.",
                    t.clear, t.trigger
                ));
            }
            if let Some((lower, trigger)) = previous
                && direction.breaches(trigger, t.trigger)
                && trigger != t.trigger
            {
                problems.push(format!(
                    "{name}: trigger ({}) must be worse than {}'s trigger ({trigger}).",
                    t.trigger,
                    lower.as_str()
                ));
            }
            previous = Some((level, t.trigger));
        }
        problems
    }
}

/// A threshold rule over one signal.
#[derive(Debug, Clone)]
pub struct ThresholdRule {
    /// The alert's name, CamelCase (`HighFirstAudioLatency`).
    pub name: String,
    /// The signal it reads.
    pub signal: String,
    /// Only scopes that contain every one of these labels (empty: all scopes of the signal).
    pub scope_filter: Scope,
    pub direction: Direction,
    pub thresholds: Thresholds,
    /// One sentence, no template.
    pub summary: String,
    /// What the value means; `{value}` and `{scope}` are replaced.
    pub description: String,
}

/// An anomaly rule: fires when a signal moves away from its own rolling baseline.
#[derive(Debug, Clone)]
pub struct AnomalyRule {
    pub name: String,
    pub signal: String,
    pub scope_filter: Scope,
    /// Which departures count: `HigherIsWorse` only upward ones.
    pub direction: Direction,
    pub params: AnomalyParams,
    pub level: Level,
    pub summary: String,
    pub description: String,
}

/// The detector's parameters (see [`crate::anomaly`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyParams {
    /// EWMA weight of a new point, 0 < alpha < 1.
    pub alpha: f64,
    /// |z| at or above which a point is anomalous.
    pub z_threshold: f64,
    /// Points learnt before any point can be anomalous.
    pub min_points: u32,
    /// Consecutive anomalous points that fire the alert; as many normal points resolve it.
    pub consecutive: u32,
    /// Floor of the standard deviation, in the signal's unit, so a flat baseline does not make every
    /// wobble infinitely anomalous.
    pub min_stddev: f64,
}

impl Default for AnomalyParams {
    fn default() -> Self {
        Self {
            alpha: 0.02,
            z_threshold: 3.5,
            min_points: 200,
            consecutive: 5,
            min_stddev: 0.0,
        }
    }
}

impl AnomalyParams {
    /// Every problem, each a sentence naming the field under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            problems.push(format!("{prefix}.alpha must be in (0, 1) (got {}).", self.alpha));
        }
        if !(self.z_threshold.is_finite() && self.z_threshold > 0.0) {
            problems.push(format!(
                "{prefix}.z_threshold must be > 0 (got {}).",
                self.z_threshold
            ));
        }
        if self.min_points < 2 {
            problems.push(format!(
                "{prefix}.min_points must be >= 2 (got {}).",
                self.min_points
            ));
        }
        if self.consecutive == 0 {
            problems.push(format!("{prefix}.consecutive must be >= 1."));
        }
        if !(self.min_stddev.is_finite() && self.min_stddev >= 0.0) {
            problems.push(format!(
                "{prefix}.min_stddev must be >= 0 (got {}).",
                self.min_stddev
            ));
        }
        problems
    }
}

/// A health check watched by the engine: it runs every `interval`, fires after `failure_threshold`
/// consecutive failures and recovers after `recovery_threshold` consecutive passes.
#[derive(Clone)]
pub struct HealthRule {
    pub name: String,
    pub scope: Scope,
    pub check: Arc<dyn HealthCheck>,
    pub interval: Duration,
    pub failure_threshold: u32,
    pub recovery_threshold: u32,
    pub level: Level,
    pub summary: String,
}

impl std::fmt::Debug for HealthRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthRule")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("check", &self.check.name())
            .field("interval", &self.interval)
            .field("failure_threshold", &self.failure_threshold)
            .field("recovery_threshold", &self.recovery_threshold)
            .finish()
    }
}

/// Whether `scope` has every label of `filter`.
pub(crate) fn matches(filter: &Scope, scope: &Scope) -> bool {
    filter.iter().all(|(k, v)| scope.get(k) == Some(v))
}

/// `{voice="a",engine="b"}`.
pub(crate) fn scope_text(scope: &Scope) -> String {
    let inner: Vec<String> = scope.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(trigger: f64, clear: f64) -> Option<LevelThreshold> {
        Some(LevelThreshold { trigger, clear })
    }

    #[test]
    fn thresholds_list_every_problem_at_once() {
        let bad = Thresholds {
            warning: t(1.0, 2.0),
            critical: t(0.5, 0.4),
            emergency: t(f64::NAN, 1.0),
            for_seconds: -1.0,
        };
        let problems = bad.problems("R", Direction::HigherIsWorse);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("R.for_seconds"));
        assert!(problems[1].contains("R.warning: clear"));
        assert!(problems[2].contains("R.critical: trigger"));
        assert!(problems[3].contains("R.emergency"));
    }

    #[test]
    fn lower_is_worse_orders_the_other_way() {
        let good = Thresholds {
            warning: t(0.95, 0.97),
            critical: t(0.90, 0.92),
            emergency: t(0.80, 0.82),
            for_seconds: 0.0,
        };
        assert!(good.problems("S", Direction::LowerIsWorse).is_empty());
        assert_eq!(good.problems("S", Direction::HigherIsWorse).len(), 5);
    }
}
