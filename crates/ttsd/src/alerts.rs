//! `[alerts]`: the built-in alert engine's configuration, and its start in `serve` and `worker`.
//!
//! The rules come from the components that own the signals (`tts_gateway::alerting`,
//! `tts_worker::alerting`); this file only adds configuration, health rules over the process's existing
//! health checks, the notifiers and the admin routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tts_alerts::{
    AnomalyParams, AnomalyRule, Dispatch, Engine, EngineConfig, Escalation, HealthRule, Level, Links,
    NotifierConfig, Scope, SignalSource, ThresholdRule, Thresholds,
};
use tts_telemetry::{CheckResult, HealthCheck, Heartbeat};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AlertsConfig {
    /// Run the alert engine in `serve` and `worker`.
    pub(crate) enabled: bool,
    /// How often rules are evaluated and signals sampled.
    pub(crate) evaluation_interval_seconds: f64,
    /// Alertmanager base URLs (`http://host:9093`); alerts go to `POST /api/v2/alerts` on each.
    pub(crate) alertmanager_urls: Vec<String>,
    /// Firing alerts are re-sent to Alertmanager this often; `endsAt` is 4× this ahead.
    pub(crate) resend_interval_seconds: f64,
    /// A URL that gets every notification as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) webhook_url: Option<String>,
    /// `runbook_url` is this plus `<AlertName>.md`.
    pub(crate) runbook_base_url: String,
    /// After a firing notification for a (rule, scope, level), the next waits this long.
    pub(crate) cooldown_seconds: f64,
    /// An unacknowledged firing alert is notified again after this long.
    pub(crate) repeat_interval_seconds: f64,
    /// A warning firing this long becomes critical; 0 turns this off.
    pub(crate) escalate_after_seconds: f64,
    /// The n-th firing of one alert within `escalate_window_seconds` fires as critical; 0 turns this off.
    pub(crate) escalate_firings: u32,
    pub(crate) escalate_window_seconds: f64,
    /// Resolved alerts kept for `/admin/alerts` and `/admin/export`.
    pub(crate) history_size: usize,
    /// Alerts an Alertmanager outbox holds at most while Alertmanager is unreachable.
    pub(crate) outbox_capacity: usize,
    /// Notifications the webhook and log queues hold before dropping (counted).
    pub(crate) queue_capacity: usize,
    /// How often each health check runs for the engine…
    pub(crate) health_interval_seconds: f64,
    /// …how many failures in a row fire its alert…
    pub(crate) health_failure_threshold: u32,
    /// …and how many passes in a row resolve it.
    pub(crate) health_recovery_threshold: u32,
    /// The anomaly detector (EWMA baseline and z-score).
    pub(crate) anomaly: AnomalyParams,
    /// Threshold overrides by rule name (see docs/alerting.md for the rules and their defaults).
    pub(crate) thresholds: BTreeMap<String, Thresholds>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            evaluation_interval_seconds: 1.0,
            alertmanager_urls: Vec::new(),
            resend_interval_seconds: 60.0,
            webhook_url: None,
            runbook_base_url: "docs/runbooks/".into(),
            cooldown_seconds: 300.0,
            repeat_interval_seconds: 3600.0,
            escalate_after_seconds: 1800.0,
            escalate_firings: 3,
            escalate_window_seconds: 3600.0,
            history_size: 200,
            outbox_capacity: 1000,
            queue_capacity: 256,
            health_interval_seconds: 10.0,
            health_failure_threshold: 3,
            health_recovery_threshold: 2,
            anomaly: AnomalyParams::default(),
            thresholds: BTreeMap::new(),
        }
    }
}

/// Every threshold rule of either role, for validating overrides.
fn all_rules() -> Vec<ThresholdRule> {
    let mut rules = tts_gateway::alerting::default_rules();
    rules.extend(tts_worker::alerting::default_rules());
    rules
}

impl AlertsConfig {
    /// Every problem, each naming its field.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("evaluation_interval_seconds", self.evaluation_interval_seconds),
            ("resend_interval_seconds", self.resend_interval_seconds),
            ("health_interval_seconds", self.health_interval_seconds),
            ("escalate_window_seconds", self.escalate_window_seconds),
        ] {
            if !(value.is_finite() && value > 0.0) {
                problems.push(format!("alerts.{name} must be a positive number of seconds"));
            }
        }
        for (name, value) in [
            ("cooldown_seconds", self.cooldown_seconds),
            ("repeat_interval_seconds", self.repeat_interval_seconds),
            ("escalate_after_seconds", self.escalate_after_seconds),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                problems.push(format!("alerts.{name} must be 0 or more seconds"));
            }
        }
        if self.repeat_interval_seconds < self.cooldown_seconds {
            problems.push("alerts.repeat_interval_seconds must be >= alerts.cooldown_seconds".into());
        }
        for (name, value) in [
            ("history_size", self.history_size),
            ("outbox_capacity", self.outbox_capacity),
            ("queue_capacity", self.queue_capacity),
            ("health_failure_threshold", self.health_failure_threshold as usize),
            (
                "health_recovery_threshold",
                self.health_recovery_threshold as usize,
            ),
        ] {
            if value == 0 {
                problems.push(format!("alerts.{name} must be greater than 0"));
            }
        }
        let urls = self.alertmanager_urls.iter().map(|u| ("alertmanager_urls", u));
        for (name, url) in urls.chain(self.webhook_url.iter().map(|u| ("webhook_url", u))) {
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                problems.push(format!(
                    "alerts.{name} entry {url:?} must be an http:// URL (TLS is not supported; use a local relay)"
                ));
            }
        }
        problems.extend(
            self.anomaly
                .problems("alerts.anomaly")
                .into_iter()
                .map(|p| p.trim_end_matches('.').to_owned()),
        );
        let rules = all_rules();
        for (name, thresholds) in &self.thresholds {
            match rules.iter().find(|rule| &rule.name == name) {
                Some(rule) => problems.extend(
                    thresholds
                        .problems(&format!("alerts.thresholds.{name}"), rule.direction)
                        .into_iter()
                        .map(|p| p.trim_end_matches('.').to_owned()),
                ),
                None => problems.push(format!(
                    "alerts.thresholds.{name} names no rule (known: {})",
                    rules
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        problems
    }

    fn seconds(value: f64) -> Duration {
        Duration::from_secs_f64(value.max(0.0))
    }

    fn notifiers(&self) -> NotifierConfig {
        NotifierConfig {
            alertmanager_urls: self.alertmanager_urls.clone(),
            resend_interval: Self::seconds(self.resend_interval_seconds),
            outbox_capacity: self.outbox_capacity,
            webhook_url: self.webhook_url.clone(),
            queue_capacity: self.queue_capacity,
            log: true,
            request_timeout: Duration::from_secs(10),
        }
    }

    /// A health rule over `check`, with this config's interval and thresholds.
    pub(crate) fn health_rule(
        &self,
        name: &str,
        scope: Scope,
        check: Arc<dyn HealthCheck>,
        summary: &str,
    ) -> HealthRule {
        HealthRule {
            name: name.into(),
            scope,
            check,
            interval: Self::seconds(self.health_interval_seconds),
            failure_threshold: self.health_failure_threshold,
            recovery_threshold: self.health_recovery_threshold,
            level: Level::Critical,
            summary: summary.into(),
        }
    }
}

/// What one process (serve or worker) watches.
pub(crate) struct Watch {
    pub(crate) rules: Vec<ThresholdRule>,
    pub(crate) anomaly_rules: Vec<AnomalyRule>,
    pub(crate) health_rules: Vec<HealthRule>,
    pub(crate) source: Arc<dyn SignalSource>,
}

/// Where the engine's links point and who may change it.
pub(crate) struct Site {
    pub(crate) admin: SocketAddr,
    pub(crate) instance: String,
    pub(crate) access: tts_telemetry::AdminAccess,
    pub(crate) summary: Arc<dyn Fn() -> Value + Send + Sync>,
}

/// Starts the engine and its tick; returns the admin routes to merge.
pub(crate) fn start(
    config: &AlertsConfig,
    metrics: tts_alerts::Metrics,
    watch: Watch,
    site: Site,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<axum::Router> {
    let mut rules = watch.rules;
    for rule in &mut rules {
        if let Some(thresholds) = config.thresholds.get(&rule.name) {
            rule.thresholds = thresholds.clone();
        }
    }
    let dispatch = Dispatch::start(&config.notifiers(), &metrics);
    let seconds = AlertsConfig::seconds;
    let engine = Engine::new(
        EngineConfig {
            threshold_rules: rules,
            anomaly_rules: watch.anomaly_rules,
            health_rules: watch.health_rules,
            cooldown: seconds(config.cooldown_seconds),
            repeat_interval: seconds(config.repeat_interval_seconds),
            escalation: Escalation {
                after: (config.escalate_after_seconds > 0.0).then(|| seconds(config.escalate_after_seconds)),
                repeated: (config.escalate_firings > 0)
                    .then(|| (config.escalate_firings, seconds(config.escalate_window_seconds))),
            },
            history_capacity: config.history_size,
            links: Links {
                service: "ttsd".into(),
                instance: site.instance,
                runbook_base: config.runbook_base_url.clone(),
                admin_url: format!("http://{}", site.admin),
            },
        },
        metrics,
        dispatch,
    )
    .context("invalid alert rules")?;
    let engine = Arc::new(engine);
    tokio::spawn(tts_alerts::run(
        engine.clone(),
        watch.source,
        seconds(config.evaluation_interval_seconds),
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        },
    ));
    let access = site.access;
    let summary = site.summary;
    let sections: Vec<(String, tts_alerts::admin::Section)> =
        vec![("metrics".into(), Arc::new(move || summary()))];
    tracing::info!(
        alertmanagers = config.alertmanager_urls.len(),
        webhook = config.webhook_url.is_some(),
        "Alert engine started."
    );
    Ok(tts_alerts::admin::router(engine, access, sections))
}

/// A heartbeat as a health check: fails while the heartbeat is stale.
pub(crate) struct HeartbeatCheck(pub(crate) Arc<Heartbeat>);

impl HealthCheck for HeartbeatCheck {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn required_for_readiness(&self) -> bool {
        false
    }
    fn check(&self) -> CheckResult {
        let age = self.0.age().as_secs_f64();
        if self.0.is_alive() {
            CheckResult::pass(format!("beat {age:.1} s ago"))
        } else {
            CheckResult::fail(format!("no beat for {age:.1} s"))
        }
    }
}

/// Reads the admin token file, if configured: its content, trimmed.
pub(crate) fn admin_token(path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    token_file("server.admin_token_file", path)
}

/// Reads a token file, if configured: its content, trimmed; unreadable or empty is an error naming
/// `field` and the path.
pub(crate) fn token_file(field: &str, path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {field} {}", path.display()))?;
    let token = text.trim().to_owned();
    anyhow::ensure!(!token.is_empty(), "{field} {} is empty", path.display());
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_listed_at_once() {
        let text = r#"
            evaluation_interval_seconds = 0
            alertmanager_urls = ["https://am:9093", "http://ok:9093"]
            cooldown_seconds = 600
            repeat_interval_seconds = 60
            history_size = 0
            [anomaly]
            z_threshold = -1
            [thresholds.HighFirstAudioLatency]
            warning = { trigger = 0.5, clear = 0.9 }
            [thresholds.NoSuchRule]
            warning = { trigger = 1, clear = 0 }
        "#;
        let config: AlertsConfig = toml::from_str(text).unwrap();
        let problems = config.problems();
        for needle in [
            "alerts.evaluation_interval_seconds",
            "https://am:9093",
            "repeat_interval_seconds must be >=",
            "alerts.history_size",
            "alerts.anomaly.z_threshold",
            "alerts.thresholds.HighFirstAudioLatency.warning: clear",
            "alerts.thresholds.NoSuchRule names no rule",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle} missing from {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(AlertsConfig::default().problems().is_empty());
    }
}
