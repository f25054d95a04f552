//! One evaluation: each rule's condition per scope, from samples, baselines and health checks; then the
//! gauges and the set Alertmanager mirrors.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::lifecycle::Condition;
use super::{AlertState, AlertView, Inner, RuleKind, Sample, TrackKey};
use crate::anomaly::Verdict;
use crate::notify::RESOLVED_RESEND;
use crate::rule::{AnomalyRule, Level, ThresholdRule, matches};

impl Inner {
    pub(super) fn evaluate(&mut self, samples: &[Sample], now: Instant) {
        let mut seen = BTreeSet::new();
        let rules = std::mem::take(&mut self.threshold_rules);
        for rule in &rules {
            for sample in samples
                .iter()
                .filter(|s| s.signal == rule.signal && matches(&rule.scope_filter, &s.scope))
            {
                let key = (rule.name.clone(), sample.scope.clone());
                let current = self.firing_level(&key);
                let condition = Condition {
                    kind: RuleKind::Threshold,
                    target: threshold_target(rule, sample.value, current),
                    value: sample.value,
                    for_: Duration::from_secs_f64(rule.thresholds.for_seconds),
                    summary: &rule.summary,
                    description: &rule.description,
                };
                self.step(&key, &condition, now);
                seen.insert(key);
            }
        }
        self.threshold_rules = rules;
        let rules = std::mem::take(&mut self.anomaly_rules);
        for rule in &rules {
            for sample in samples
                .iter()
                .filter(|s| s.signal == rule.signal && matches(&rule.scope_filter, &s.scope))
            {
                let key = (rule.name.clone(), sample.scope.clone());
                let target = self.anomaly_target(rule, &key, sample.value);
                let condition = Condition {
                    kind: RuleKind::Anomaly,
                    target,
                    value: sample.value,
                    for_: Duration::ZERO,
                    summary: &rule.summary,
                    description: &rule.description,
                };
                self.step(&key, &condition, now);
                seen.insert(key);
            }
        }
        self.anomaly_rules = rules;
        self.clear_unseen(&seen, now);
        self.check_health(now);
    }

    /// Tracks of signal rules with an alert but no sample this time: no data clears them.
    fn clear_unseen(&mut self, seen: &BTreeSet<TrackKey>, now: Instant) {
        let health: BTreeSet<&str> = self.health_rules.iter().map(|r| r.name.as_str()).collect();
        let stale: Vec<TrackKey> = self
            .tracks
            .iter()
            .filter(|(key, track)| {
                (track.alert.is_some() || track.muted)
                    && !seen.contains(*key)
                    && !health.contains(key.0.as_str())
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            let condition = Condition {
                kind: RuleKind::Threshold,
                target: None,
                value: f64::NAN,
                for_: Duration::ZERO,
                summary: "",
                description: "",
            };
            self.step(&key, &condition, now);
        }
    }

    fn firing_level(&self, key: &TrackKey) -> Option<Level> {
        let id = self.tracks.get(key)?.alert?;
        let alert = self.alerts.get(&id)?;
        (alert.state == AlertState::Firing).then_some(alert.value_level)
    }

    fn anomaly_target(&mut self, rule: &AnomalyRule, key: &TrackKey, value: f64) -> Option<Level> {
        let track = self.tracks.entry(key.clone()).or_default();
        let verdict = track.baseline.observe(value, &rule.params, rule.direction);
        let active = track.alert.is_some();
        let held = if active {
            verdict == Verdict::Anomalous || track.baseline.normal_run < rule.params.consecutive
        } else {
            track.baseline.anomalous_run >= rule.params.consecutive
        };
        held.then_some(rule.level)
    }

    fn check_health(&mut self, now: Instant) {
        let rules = std::mem::take(&mut self.health_rules);
        for rule in &rules {
            let key = (rule.name.clone(), rule.scope.clone());
            let track = self.tracks.entry(key.clone()).or_default();
            if track.next_check.is_some_and(|at| now < at) {
                continue;
            }
            track.next_check = Some(now + rule.interval);
            let result = rule.check.check();
            if result.ok {
                track.passes = track.passes.saturating_add(1);
                track.failures = 0;
            } else {
                track.failures = track.failures.saturating_add(1);
                track.passes = 0;
            }
            track.detail = result.detail;
            let held = if track.alert.is_some() {
                track.passes < rule.recovery_threshold
            } else {
                track.failures >= rule.failure_threshold
            };
            let description = format!(
                "Health check {} {}: {}",
                rule.check.name(),
                if result.ok { "passes" } else { "fails" },
                track.detail
            );
            let condition = Condition {
                kind: RuleKind::Health,
                target: held.then_some(rule.level),
                value: f64::from(track.failures),
                for_: Duration::ZERO,
                summary: &rule.summary,
                description: &description,
            };
            self.step(&key, &condition, now);
        }
        self.health_rules = rules;
    }

    /// What Alertmanager should know: notified alerts firing now, and those resolved within
    /// [`RESOLVED_RESEND`].
    pub(super) fn published(&self, now: Instant) -> Vec<AlertView> {
        let firing = self
            .alerts
            .values()
            .filter(|a| a.notified && a.state == AlertState::Firing);
        let resolved = self.history.iter().filter(|a| {
            a.notified
                && a.resolved_at
                    .is_some_and(|at| now.duration_since(at) < RESOLVED_RESEND)
        });
        firing
            .chain(resolved)
            .map(|a| a.view(&self.clock, &self.links))
            .collect()
    }

    pub(super) fn update_gauges(&self) {
        let mut counts: BTreeMap<(&str, Level), i64> = BTreeMap::new();
        for rule in &self.threshold_rules {
            for (level, _) in rule.thresholds.levels() {
                counts.insert((rule.name.as_str(), level), 0);
            }
        }
        for alert in self.alerts.values() {
            if alert.state == AlertState::Firing {
                *counts.entry((alert.rule.as_str(), alert.level)).or_default() += 1;
            }
        }
        for rule in &self.anomaly_rules {
            counts.entry((rule.name.as_str(), rule.level)).or_default();
        }
        for rule in &self.health_rules {
            counts.entry((rule.name.as_str(), rule.level)).or_default();
        }
        for ((rule, level), count) in counts {
            self.metrics.set_active(rule, level.as_str(), count);
        }
    }
}

/// The level `value` justifies for `rule`, given the level it is firing at now (hysteresis: a level held
/// now is kept until the value passes its clear threshold).
pub(crate) fn threshold_target(rule: &ThresholdRule, value: f64, current: Option<Level>) -> Option<Level> {
    if !value.is_finite() {
        return None;
    }
    let direction = rule.direction;
    rule.thresholds
        .levels()
        .filter(|(level, t)| {
            direction.breaches(value, t.trigger)
                || (current.is_some_and(|c| *level <= c) && direction.breaches(value, t.clear))
        })
        .map(|(level, _)| level)
        .max()
}
