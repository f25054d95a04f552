//! The alert engine's view of `serve`: the gateway's signals and rules plus the backend's health checks,
//! and the `--test-hooks` engine slow-down used to measure detection delay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tts_gateway::{GatewayMetrics, Synthesizer};
use tts_telemetry::HealthCheck;

use super::{Backend, VoiceWarm, Watched};
use crate::config::Config;

/// Test hook (`--test-hooks` only): delays every chunk before it reaches the engines, as a slowed engine
/// would, so first audio and chunk latency rise by `delay_ms`.
pub(super) struct Slowed {
    pub(super) inner: Arc<dyn Synthesizer>,
    pub(super) delay_ms: Arc<AtomicU64>,
}

impl Synthesizer for Slowed {
    fn submit(&self, job: tts_core::pool::Job) -> Result<(), tts_core::pool::SubmitError> {
        let ms = self.delay_ms.load(Ordering::Relaxed);
        if ms == 0 {
            return self.inner.submit(job);
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if let Err(error) = inner.submit(job) {
                tracing::warn!(error = %error, "A slowed chunk was refused.");
            }
        });
        Ok(())
    }

    fn control(&self, session_id: &Arc<str>, command: tts_gateway::Command) {
        self.inner.control(session_id, command);
    }

    fn end_session(&self, session_id: &Arc<str>) {
        self.inner.end_session(session_id);
    }

    fn stats(&self) -> tts_core::pool::PoolStats {
        self.inner.stats()
    }
}

/// The gateway's signals and rules, and the backend's health checks, for the alert engine.
pub(super) fn alert_watch(
    config: &Config,
    metrics: &Arc<GatewayMetrics>,
    backend: &Backend,
    warm: &Arc<VoiceWarm>,
) -> crate::alerts::Watch {
    let alerts = &config.alerts;
    let mut health_rules: Vec<tts_alerts::HealthRule> = backend
        .watched
        .iter()
        .map(|(name, scope, check, summary)| alerts.health_rule(name, scope.clone(), check.clone(), summary))
        .collect();
    if backend.pool.is_some() {
        let scope = tts_alerts::Scope::from([("voice".to_owned(), warm.voice.clone())]);
        let check: Arc<dyn HealthCheck> = warm.clone();
        health_rules.push(alerts.health_rule(
            "DefaultVoiceNotWarm",
            scope,
            check,
            "The default voice is not loaded and warm.",
        ));
    }
    crate::alerts::Watch {
        rules: tts_gateway::alerting::default_rules(),
        anomaly_rules: tts_gateway::alerting::default_anomaly_rules(alerts.anomaly),
        health_rules,
        source: Arc::new(tts_gateway::alerting::GatewaySignals::new(
            metrics.clone(),
            backend.synthesizer.clone(),
        )),
    }
}

/// The remote backend's checks the alert engine watches: each configured worker, any worker, Redis.
pub(super) fn watched_remote(remote: &tts_gateway::workers::RemoteWorkers) -> Vec<Watched> {
    let mut watched: Vec<Watched> = Vec::new();
    for (address, check) in remote.worker_checks() {
        let scope = tts_alerts::Scope::from([("worker".to_owned(), address)]);
        watched.push((
            "WorkerUnavailable",
            scope,
            check,
            "A remote worker fails its gRPC health check.",
        ));
    }
    for check in remote.checks() {
        let (name, summary) = match check.name() {
            "workers" => ("NoActiveWorker", "No remote worker can take a session."),
            "redis" => ("RedisUnreachable", "The worker registry in Redis is unreachable."),
            _ => continue,
        };
        watched.push((name, tts_alerts::Scope::new(), check, summary));
    }
    watched
}

/// `POST /test/slow-engine` (body: milliseconds; 0 turns it off).
pub(super) fn slow_engine_route(slow: Arc<AtomicU64>) -> axum::routing::MethodRouter {
    axum::routing::post(move |body: String| {
        let slow = slow.clone();
        async move {
            match body.trim().parse::<u64>() {
                Ok(ms) => {
                    slow.store(ms, Ordering::Relaxed);
                    (axum::http::StatusCode::OK, format!("slowed by {ms} ms\n"))
                }
                Err(_) => (
                    axum::http::StatusCode::BAD_REQUEST,
                    "body: milliseconds\n".to_owned(),
                ),
            }
        }
    })
}
