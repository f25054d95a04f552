//! The life of one (rule, scope): pending → firing → resolved, with `for`, levels, escalation, cooldown,
//! repeat and acknowledgement. Every function takes `now`, so tests drive it on a paused clock.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::view::{Alert, AlertState, Event, RuleKind, describe};
use super::{Inner, TrackKey};
use crate::rule::Level;

/// What a rule says about one scope at one evaluation.
pub(crate) struct Condition<'a> {
    pub(crate) kind: RuleKind,
    /// The level the value justifies; `None` when the condition does not hold.
    pub(crate) target: Option<Level>,
    pub(crate) value: f64,
    pub(crate) for_: std::time::Duration,
    pub(crate) summary: &'a str,
    pub(crate) description: &'a str,
}

impl Inner {
    /// Applies one evaluation of `key`'s condition.
    pub(crate) fn step(&mut self, key: &TrackKey, condition: &Condition<'_>, now: Instant) {
        let track = self.tracks.entry(key.clone()).or_default();
        if track.muted {
            if condition.target.is_none() {
                track.muted = false;
            }
            return;
        }
        let Some(level) = condition.target else {
            if let Some(id) = track.alert {
                self.clear(id, now);
            }
            return;
        };
        let id = match track.alert {
            Some(id) => id,
            None => self.open(key, condition, level, now),
        };
        let Some(alert) = self.alerts.get_mut(&id) else {
            return;
        };
        alert.value = condition.value;
        alert.value_level = level;
        alert.description = describe(condition.description, condition.value, &key.1);
        if alert.state == AlertState::Pending {
            if now.duration_since(alert.pending_since) >= condition.for_ {
                self.fire(id, now);
            }
        } else {
            self.update_firing(id, now);
        }
    }

    fn open(&mut self, key: &TrackKey, condition: &Condition<'_>, level: Level, now: Instant) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.alerts.insert(
            id,
            Alert {
                id,
                rule: key.0.clone(),
                kind: condition.kind,
                scope: key.1.clone(),
                level,
                value_level: level,
                state: AlertState::Pending,
                value: condition.value,
                summary: condition.summary.to_owned(),
                description: describe(condition.description, condition.value, &key.1),
                pending_since: now,
                firing_since: None,
                resolved_at: None,
                ack: None,
                escalated: false,
                notified: false,
                owed: false,
                last_sent: None,
                resolved_by: None,
            },
        );
        if let Some(track) = self.tracks.get_mut(key) {
            track.alert = Some(id);
        }
        self.metrics.transition(&key.0, "pending");
        id
    }

    /// The condition no longer holds: a pending alert is dropped, a firing one resolves.
    fn clear(&mut self, id: u64, now: Instant) {
        let Some(alert) = self.alerts.get(&id) else {
            return;
        };
        if alert.state == AlertState::Pending {
            let key = (alert.rule.clone(), alert.scope.clone());
            self.alerts.remove(&id);
            if let Some(track) = self.tracks.get_mut(&key) {
                track.alert = None;
            }
            self.metrics.transition(&key.0, "inactive");
        } else {
            self.resolve(id, now, "condition".to_owned());
        }
    }

    fn fire(&mut self, id: u64, now: Instant) {
        let escalation = self.escalation;
        let Some(alert) = self.alerts.get_mut(&id) else {
            return;
        };
        alert.state = AlertState::Firing;
        alert.firing_since = Some(now);
        let key = (alert.rule.clone(), alert.scope.clone());
        self.metrics.transition(&key.0, "firing");
        let track = self.tracks.entry(key).or_default();
        if let Some((count, window)) = escalation.repeated {
            record_firing(&mut track.firings, now, window);
            if track.firings.len() >= count as usize && alert.level == Level::Warning {
                alert.level = Level::Critical;
                alert.escalated = true;
                self.metrics.transition(&alert.rule, "escalated");
            }
        }
        self.announce(id, Event::Firing, now);
    }

    fn update_firing(&mut self, id: u64, now: Instant) {
        let (cooldown, repeat) = (self.cooldown, self.repeat);
        let escalate_after = self.escalation.after;
        let Some(alert) = self.alerts.get_mut(&id) else {
            return;
        };
        let firing_for = alert
            .firing_since
            .map_or(std::time::Duration::ZERO, |since| now.duration_since(since));
        if let Some(after) = escalate_after
            && !alert.escalated
            && alert.value_level == Level::Warning
            && firing_for >= after
        {
            alert.escalated = true;
            self.metrics.transition(&alert.rule, "escalated");
        }
        let floor = if alert.escalated {
            Level::Critical
        } else {
            Level::Warning
        };
        let level = alert.value_level.max(floor);
        if level != alert.level {
            alert.level = level;
            self.announce(id, Event::Firing, now);
            return;
        }
        let key = (alert.rule.clone(), alert.scope.clone(), alert.level);
        let since_notified = self.last_notified.get(&key).map(|at| now.duration_since(*at));
        if alert.owed && since_notified.is_none_or(|d| d >= cooldown) {
            self.announce(id, Event::Firing, now);
        } else if alert.notified
            && alert.ack.is_none()
            && alert.last_sent.is_some_and(|at| now.duration_since(at) >= repeat)
        {
            self.announce(id, Event::Repeat, now);
        }
    }

    /// Sends `event` for `id` unless a cooldown on its (rule, scope, level) holds it back.
    fn announce(&mut self, id: u64, event: Event, now: Instant) {
        let cooldown = self.cooldown;
        let Some(alert) = self.alerts.get_mut(&id) else {
            return;
        };
        let key = (alert.rule.clone(), alert.scope.clone(), alert.level);
        if event == Event::Firing
            && let Some(at) = self.last_notified.get(&key)
            && now.duration_since(*at) < cooldown
        {
            alert.owed = true;
            self.metrics.decision("cooldown");
            return;
        }
        alert.owed = false;
        alert.notified = true;
        alert.last_sent = Some(now);
        self.last_notified.insert(key, now);
        self.metrics.decision("sent");
        let view = alert.view(&self.clock, &self.links);
        self.outbox.push(super::Notification { event, alert: view });
    }

    /// Ends `id`: by its condition, or by hand (`manual:<who>`).
    pub(crate) fn resolve(&mut self, id: u64, now: Instant, by: String) {
        let Some(mut alert) = self.alerts.remove(&id) else {
            return;
        };
        let manual = by != "condition";
        alert.state = AlertState::Resolved;
        alert.resolved_at = Some(now);
        alert.resolved_by = Some(by);
        alert.owed = false;
        self.metrics.transition(&alert.rule, "resolved");
        if alert.notified {
            self.metrics.decision("sent");
            let view = alert.view(&self.clock, &self.links);
            self.outbox.push(super::Notification {
                event: Event::Resolved,
                alert: view,
            });
        }
        let key = (alert.rule.clone(), alert.scope.clone());
        if let Some(track) = self.tracks.get_mut(&key) {
            track.alert = None;
            if manual {
                track.muted = true;
                track.baseline = Default::default();
            }
        }
        if self.history.len() >= self.history_capacity {
            self.history.pop_front();
        }
        self.history.push_back(alert);
    }
}

/// Remembers a firing at `now` and forgets those older than `window`.
fn record_firing(firings: &mut VecDeque<Instant>, now: Instant, window: std::time::Duration) {
    firings.push_back(now);
    while firings.front().is_some_and(|at| now.duration_since(*at) > window) {
        firings.pop_front();
    }
    // Bounded: only the last `count` matter, and `count` is small; cap hard anyway.
    while firings.len() > 1024 {
        firings.pop_front();
    }
}
