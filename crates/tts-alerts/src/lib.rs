//! A built-in alert engine, free of any TTS knowledge: rules over named signals, the alerts they raise,
//! and the notifiers that tell people.
//!
//! - [`rule`]: threshold rules (warning / critical / emergency levels, each with a trigger and a clear
//!   threshold, a direction and a `for`), anomaly rules and health-check rules.
//! - [`anomaly`]: an EWMA mean and variance per signal and scope, and a z-score.
//! - [`Engine`]: states pending → firing → resolved, cooldown and repeat per (rule, scope, level),
//!   escalation, acknowledgement and manual resolve, bounded history, thresholds changeable at run time.
//! - [`run`]: the evaluation tick, reading a [`SignalSource`] the host implements.
//! - [`notify`]: Alertmanager v2, a JSON webhook and the log, never blocking the engine.
//! - [`admin`]: the `/admin/alerts*` and `/admin/export` routes, as a router the host merges into its
//!   admin router.
//!
//! It does not know which signals exist or what they mean: the host names them, computes them and
//! supplies the default rules. All times come from `tokio::time::Instant`, so tests run on a paused clock.

pub mod admin;
pub mod anomaly;
mod engine;
mod metrics;
pub mod notify;
pub mod rule;
mod time;

use std::sync::Arc;
use std::time::Duration;

pub use engine::{
    Ack, AlertState, AlertView, Engine, EngineConfig, Escalation, Event, Links, Notification, RuleKind,
    Sample, ThresholdView, problems,
};
pub use metrics::{Metrics, SendOutcome};
pub use notify::{Dispatch, NotifierConfig};
pub use rule::{
    AnomalyParams, AnomalyRule, Direction, HealthRule, Level, LevelThreshold, Scope, ThresholdRule,
    Thresholds,
};
pub use time::rfc3339;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// Rules, thresholds or settings with problems; every problem is listed.
    #[error("invalid alert configuration: {}", .0.join(" "))]
    Invalid(Vec<String>),
    /// No active alert has this id.
    #[error("no active alert with id {0}")]
    NotActive(u64),
    /// An HTTP delivery failed.
    #[error("{0}")]
    Http(String),
}

/// Where the engine reads signal values: the host computes them from what it already keeps.
pub trait SignalSource: Send + Sync {
    /// Appends the current value of every signal and scope it knows to `out`. Called once per tick on
    /// the engine's task: cheap, never blocking.
    fn sample(&self, out: &mut Vec<Sample>);
}

/// Evaluates `engine` every `interval` until `shutdown` resolves.
pub async fn run(
    engine: Arc<Engine>,
    source: Arc<dyn SignalSource>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            at = tick.tick() => {
                samples.clear();
                source.sample(&mut samples);
                engine.evaluate(&samples, at);
            }
        }
    }
}
