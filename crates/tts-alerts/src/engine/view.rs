//! Alerts as the engine keeps them, and as the outside world sees them (JSON, notifications).

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Instant;

use crate::rule::{Level, Scope, scope_text};
use crate::time::Clock;

/// What kind of rule raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Threshold,
    Anomaly,
    Health,
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds but not yet for the rule's `for`.
    Pending,
    Firing,
    Resolved,
}

/// An acknowledgement: someone is on it. It ends with the alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ack {
    pub who: String,
    pub why: String,
    /// RFC 3339.
    pub at: String,
}

/// One alert, from pending to resolved.
#[derive(Debug, Clone)]
pub(crate) struct Alert {
    pub(crate) id: u64,
    pub(crate) rule: String,
    pub(crate) kind: RuleKind,
    pub(crate) scope: Scope,
    /// The level notified: the value's level, or higher after escalation.
    pub(crate) level: Level,
    /// The level the value alone justifies (hysteresis works on this one).
    pub(crate) value_level: Level,
    pub(crate) state: AlertState,
    pub(crate) value: f64,
    pub(crate) summary: String,
    pub(crate) description: String,
    pub(crate) pending_since: Instant,
    pub(crate) firing_since: Option<Instant>,
    pub(crate) resolved_at: Option<Instant>,
    pub(crate) ack: Option<Ack>,
    pub(crate) escalated: bool,
    /// Whether the notifiers have heard of it (a resolve is sent only then).
    pub(crate) notified: bool,
    /// A firing notification is owed, held back by cooldown.
    pub(crate) owed: bool,
    pub(crate) last_sent: Option<Instant>,
    pub(crate) resolved_by: Option<String>,
}

/// What the notifiers are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The alert fired, or changed level.
    Firing,
    /// Still firing and unacknowledged after the repeat interval.
    Repeat,
    /// It ended (for a health check: it recovered).
    Resolved,
}

/// One notification: an event and the alert as it stands.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub event: Event,
    pub alert: AlertView,
}

/// An alert as JSON and notifiers see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertView {
    pub id: u64,
    pub rule: String,
    pub kind: RuleKind,
    pub scope: Scope,
    pub level: Level,
    pub state: AlertState,
    pub value: f64,
    pub escalated: bool,
    pub summary: String,
    pub description: String,
    /// RFC 3339: when the condition was first seen.
    pub pending_since: String,
    pub firing_since: Option<String>,
    pub resolved_at: Option<String>,
    pub ack: Option<Ack>,
    /// `manual:<who>` or `condition` once resolved.
    pub resolved_by: Option<String>,
    /// The labels sent to Alertmanager.
    pub labels: BTreeMap<String, String>,
    /// The annotations sent to Alertmanager.
    pub annotations: BTreeMap<String, String>,
    pub generator_url: String,
}

/// Where links in alerts point.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// `service` label.
    pub service: String,
    /// `instance` label.
    pub instance: String,
    /// Prefix of `runbook_url`: `docs/runbooks/` or `https://…/runbooks/`.
    pub runbook_base: String,
    /// Base of `generatorURL`: `http://<admin address>`.
    pub admin_url: String,
}

impl Alert {
    pub(crate) fn view(&self, clock: &Clock, links: &Links) -> AlertView {
        let mut labels = self.scope.clone();
        labels.insert("alertname".into(), self.rule.clone());
        labels.insert("severity".into(), self.level.severity().into());
        if self.level == Level::Emergency {
            labels.insert("priority".into(), "P0".into());
        }
        labels.insert("service".into(), links.service.clone());
        labels.insert("instance".into(), links.instance.clone());
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".into(), self.summary.clone());
        annotations.insert("description".into(), self.description.clone());
        annotations.insert(
            "runbook_url".into(),
            format!("{}{}.md", links.runbook_base, self.rule),
        );
        AlertView {
            id: self.id,
            rule: self.rule.clone(),
            kind: self.kind,
            scope: self.scope.clone(),
            level: self.level,
            state: self.state,
            value: self.value,
            escalated: self.escalated,
            summary: self.summary.clone(),
            description: self.description.clone(),
            pending_since: clock.rfc3339(self.pending_since),
            firing_since: self.firing_since.map(|at| clock.rfc3339(at)),
            resolved_at: self.resolved_at.map(|at| clock.rfc3339(at)),
            ack: self.ack.clone(),
            resolved_by: self.resolved_by.clone(),
            labels,
            annotations,
            generator_url: format!("{}/dashboard#alerts/{}", links.admin_url, self.id),
        }
    }
}

/// Fills `{value}` and `{scope}` in a description template.
pub(crate) fn describe(template: &str, value: f64, scope: &Scope) -> String {
    template
        .replace("{value}", &format!("{value:.4}"))
        .replace("{scope}", &scope_text(scope))
}
