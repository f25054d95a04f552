//! Notifiers: Alertmanager v2, a generic JSON webhook, and the log.
//!
//! The engine never waits on a notifier. Event notifiers (webhook, log) read a bounded queue the engine
//! fills with `try_send`; a full queue drops the notification and counts it (`outcome="dropped"`).
//! Alertmanager instead mirrors the engine's state: the engine publishes the set of notified alerts
//! (firing, and resolved within the last 5 minutes) on a `watch` channel after every evaluation, and
//! the Alertmanager task keeps a bounded outbox in step with it, posting what changed at once and
//! everything again every resend interval.

mod alertmanager;
mod http;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::engine::{AlertView, Event, Notification};
use crate::metrics::{Metrics, SendOutcome};

pub use self::alertmanager::RESOLVED_RESEND;

/// Notifier settings.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Base URLs of Alertmanagers (`http://127.0.0.1:9093`); each gets `POST /api/v2/alerts`.
    pub alertmanager_urls: Vec<String>,
    /// Firing alerts are re-sent this often; `endsAt` is 4× this ahead.
    pub resend_interval: Duration,
    /// Alerts one Alertmanager outbox holds at most.
    pub outbox_capacity: usize,
    /// A URL that gets every notification as JSON `{"event", "alert"}`.
    pub webhook_url: Option<String>,
    /// Notifications the webhook and log queues hold.
    pub queue_capacity: usize,
    /// Whether notifications are logged.
    pub log: bool,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            alertmanager_urls: Vec::new(),
            resend_interval: Duration::from_secs(60),
            outbox_capacity: 1000,
            webhook_url: None,
            queue_capacity: 256,
            log: true,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The engine's side of the notifiers. Cheap to clone; sending never blocks.
#[derive(Debug, Clone, Default)]
pub struct Dispatch {
    queues: Vec<(&'static str, mpsc::Sender<Notification>)>,
    state: Option<Arc<watch::Sender<Arc<Vec<AlertView>>>>>,
    metrics: Metrics,
}

impl Dispatch {
    /// A dispatch that goes nowhere.
    pub fn none() -> Self {
        Self::default()
    }

    /// Starts the notifiers of `config` as tasks on the current runtime.
    pub fn start(config: &NotifierConfig, metrics: &Metrics) -> Self {
        let mut dispatch = Self {
            metrics: metrics.clone(),
            ..Self::default()
        };
        if config.log {
            let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
            tokio::spawn(log_task(rx, metrics.clone()));
            dispatch.queues.push(("log", tx));
        }
        if let Some(url) = &config.webhook_url {
            let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
            tokio::spawn(webhook::run(url.clone(), rx, config.clone(), metrics.clone()));
            dispatch.queues.push(("webhook", tx));
        }
        if !config.alertmanager_urls.is_empty() {
            let (tx, _) = watch::channel(Arc::new(Vec::new()));
            for url in &config.alertmanager_urls {
                let task = alertmanager::Task::new(url, config, metrics.clone());
                tokio::spawn(task.run(tx.subscribe()));
            }
            dispatch.state = Some(Arc::new(tx));
        }
        dispatch
    }

    /// A dispatch with one queue named `log` of `capacity`, for tests that read notifications.
    pub fn channel(capacity: usize, metrics: &Metrics) -> (Self, mpsc::Receiver<Notification>) {
        let (tx, rx) = mpsc::channel(capacity);
        let dispatch = Self {
            queues: vec![("log", tx)],
            state: None,
            metrics: metrics.clone(),
        };
        (dispatch, rx)
    }

    /// Hands `notification` to every event notifier; a full queue drops it and counts the drop.
    pub fn send(&self, notification: &Notification) {
        for (name, queue) in &self.queues {
            if queue.try_send(notification.clone()).is_err() {
                self.metrics.send(name, SendOutcome::Dropped);
            }
        }
    }

    /// Whether anyone mirrors the state (an Alertmanager is configured).
    pub fn wants_state(&self) -> bool {
        self.state.is_some()
    }

    /// Publishes the alerts Alertmanager should know of.
    pub fn publish(&self, alerts: Vec<AlertView>) {
        if let Some(state) = &self.state {
            state.send_replace(Arc::new(alerts));
        }
    }
}

async fn log_task(mut rx: mpsc::Receiver<Notification>, metrics: Metrics) {
    while let Some(n) = rx.recv().await {
        let a = &n.alert;
        match n.event {
            Event::Firing | Event::Repeat => tracing::warn!(
                id = a.id,
                rule = %a.rule,
                level = a.level.as_str(),
                scope = ?a.scope,
                value = a.value,
                repeat = n.event == Event::Repeat,
                description = %a.description,
                "Alert firing."
            ),
            Event::Resolved => tracing::info!(
                id = a.id,
                rule = %a.rule,
                level = a.level.as_str(),
                scope = ?a.scope,
                resolved_by = a.resolved_by.as_deref().unwrap_or(""),
                "Alert resolved."
            ),
        }
        metrics.send("log", SendOutcome::Ok);
    }
}
