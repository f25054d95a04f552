//! The Alertmanager v2 client: `POST /api/v2/alerts` with a bounded outbox mirrored from the engine.
//!
//! Each alert is identified by its label set. A new or changed alert is posted at once; every alert is
//! posted again every resend interval: a firing one with `endsAt = now + 4 × resend interval` (so
//! Alertmanager ends it by itself if ttsd dies), a resolved one with `endsAt` = its resolve time, for
//! [`RESOLVED_RESEND`] after it resolved. A failed post is retried with exponential backoff (from
//! 500 ms up to the resend interval). The outbox holds at most `outbox_capacity` alerts; past that the
//! oldest resolved ones, then the oldest firing ones, are dropped and counted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::NotifierConfig;
use super::http::Poster;
use crate::engine::{AlertState, AlertView};
use crate::metrics::{Metrics, SendOutcome};
use crate::time::rfc3339;

/// How long a resolved alert is re-sent.
pub const RESOLVED_RESEND: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const NAME: &str = "alertmanager";

#[derive(Debug)]
struct Entry {
    view: AlertView,
    /// RFC 3339 end for a resolved alert.
    ends_at: Option<String>,
    resolved_since: Option<Instant>,
    due: bool,
    last_sent: Option<Instant>,
}

pub(super) struct Task {
    url: String,
    poster: Poster,
    resend: Duration,
    capacity: usize,
    metrics: Metrics,
    entries: BTreeMap<String, Entry>,
    backoff: Duration,
    retry_at: Option<Instant>,
    failing: bool,
}

impl Task {
    pub(super) fn new(base: &str, config: &NotifierConfig, metrics: Metrics) -> Self {
        Self {
            url: format!("{}/api/v2/alerts", base.trim_end_matches('/')),
            poster: Poster::new(config.request_timeout),
            resend: config.resend_interval,
            capacity: config.outbox_capacity.max(1),
            metrics,
            entries: BTreeMap::new(),
            backoff: FIRST_BACKOFF,
            retry_at: None,
            failing: false,
        }
    }

    pub(super) async fn run(mut self, mut state: watch::Receiver<Arc<Vec<AlertView>>>) {
        loop {
            let wake = self.next_wake();
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let alerts = state.borrow_and_update().clone();
                    self.sync(&alerts, Instant::now());
                }
                () = sleep_until(wake) => {}
            }
            self.flush(Instant::now()).await;
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        self.entries
            .values()
            .filter_map(|e| e.last_sent.map(|at| at + self.resend))
            .min()
    }

    /// Brings the outbox in line with the engine's published set.
    fn sync(&mut self, alerts: &[AlertView], now: Instant) {
        let mut present = BTreeSet::new();
        for view in alerts {
            let key = label_key(view);
            present.insert(key.clone());
            let resolved = view.state == AlertState::Resolved;
            match self.entries.get_mut(&key) {
                Some(entry) => {
                    if resolved && entry.ends_at.is_none() {
                        entry.ends_at = Some(end_of(view));
                        entry.resolved_since = Some(now);
                        entry.due = true;
                    }
                    entry.view = view.clone();
                }
                None if resolved => {}
                None => {
                    self.entries.insert(
                        key,
                        Entry {
                            view: view.clone(),
                            ends_at: None,
                            resolved_since: None,
                            due: true,
                            last_sent: None,
                        },
                    );
                }
            }
        }
        for (key, entry) in &mut self.entries {
            if !present.contains(key) && entry.ends_at.is_none() {
                // Gone without a resolve (a level change: new labels): end it now.
                entry.ends_at = Some(rfc3339(SystemTime::now()));
                entry.resolved_since = Some(now);
                entry.due = true;
            }
        }
        self.trim(now);
    }

    /// Forgets resolved alerts sent for long enough, and keeps the outbox within its capacity.
    fn trim(&mut self, now: Instant) {
        self.entries.retain(|_, e| {
            e.resolved_since
                .is_none_or(|since| now.duration_since(since) < RESOLVED_RESEND || e.due)
        });
        while self.entries.len() > self.capacity {
            let victim = self
                .entries
                .iter()
                .min_by_key(|(_, e)| (e.ends_at.is_none(), e.view.id))
                .map(|(key, _)| key.clone());
            let Some(victim) = victim else { break };
            self.entries.remove(&victim);
            self.metrics.send(NAME, SendOutcome::Dropped);
        }
        self.metrics.outbox(NAME, self.entries.len());
    }

    async fn flush(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        let resend = self.resend;
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.due || e.last_sent.is_none_or(|at| now.duration_since(at) >= resend))
            .map(|(key, _)| key.clone())
            .collect();
        if due.is_empty() {
            self.retry_at = None;
            return;
        }
        let ends_firing = rfc3339(SystemTime::now() + 4 * self.resend);
        let body: Vec<_> = due
            .iter()
            .filter_map(|key| self.entries.get(key))
            .map(|e| payload(&e.view, e.ends_at.as_deref().unwrap_or(&ends_firing)))
            .collect();
        if self.failing {
            self.metrics.send(NAME, SendOutcome::Retry);
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        match self.poster.post_json(&self.url, bytes).await {
            Ok(()) => {
                self.metrics.send(NAME, SendOutcome::Ok);
                let sent_at = Instant::now();
                for key in &due {
                    if let Some(entry) = self.entries.get_mut(key) {
                        entry.due = false;
                        entry.last_sent = Some(sent_at);
                    }
                }
                if self.failing {
                    tracing::info!(url = %self.url, "Alertmanager reachable again.");
                }
                self.failing = false;
                self.backoff = FIRST_BACKOFF;
                self.retry_at = None;
                self.trim(sent_at);
            }
            Err(error) => {
                self.metrics.send(NAME, SendOutcome::Error);
                if !self.failing {
                    tracing::warn!(error = %error, "Posting alerts to Alertmanager failed; retrying with backoff.");
                }
                self.failing = true;
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(self.resend.max(FIRST_BACKOFF));
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The identity of an alert in Alertmanager: its labels.
fn label_key(view: &AlertView) -> String {
    serde_json::to_string(&view.labels).unwrap_or_default()
}

fn end_of(view: &AlertView) -> String {
    view.resolved_at
        .clone()
        .unwrap_or_else(|| rfc3339(SystemTime::now()))
}

/// One element of the `POST /api/v2/alerts` array.
fn payload(view: &AlertView, ends_at: &str) -> serde_json::Value {
    json!({
        "labels": view.labels,
        "annotations": view.annotations,
        "startsAt": view.firing_since.as_deref().unwrap_or(&view.pending_since),
        "endsAt": ends_at,
        "generatorURL": view.generator_url,
    })
}
