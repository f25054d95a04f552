//! The alert engine's view of `serve`: the gateway's signals and rules plus the backend's health checks,
//! and the `--test-hooks` engine slow-down used to measure detection delay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tts_gateway::{GatewayMetrics, Synthesizer};
use tts_telemetry::{HealthCheck, Heartbeat};

use super::{Backend, VoiceWarm, Watched};
use crate::alerts::AlertsConfig;
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
    let health_rules = health_rules(alerts, &backend.watched, backend.pool.is_some().then_some(warm));
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

/// Health rules over the backend's watched checks, plus the default voice's warmth when synthesis runs
/// in-process (`warm`).
fn health_rules(
    alerts: &AlertsConfig,
    watched: &[Watched],
    warm: Option<&Arc<VoiceWarm>>,
) -> Vec<tts_alerts::HealthRule> {
    let mut rules: Vec<tts_alerts::HealthRule> = watched
        .iter()
        .map(|(name, scope, check, summary)| alerts.health_rule(name, scope.clone(), check.clone(), summary))
        .collect();
    if let Some(warm) = warm {
        let scope = tts_alerts::Scope::from([("voice".to_owned(), warm.voice.clone())]);
        let check: Arc<dyn HealthCheck> = warm.clone();
        rules.push(alerts.health_rule(
            "DefaultVoiceNotWarm",
            scope,
            check,
            "The default voice is not loaded and warm.",
        ));
    }
    rules
}

/// The in-process backend's check the alert engine watches: the engine pool's heartbeat.
pub(super) fn watched_local(engines: &Arc<Heartbeat>) -> Vec<Watched> {
    vec![(
        "EnginePoolStalled",
        tts_alerts::Scope::new(),
        Arc::new(crate::alerts::HeartbeatCheck(engines.clone())),
        "The engine pool makes no progress.",
    )]
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// Every rule name the alert engine can emit: the gateway's and the worker's threshold and anomaly
    /// rules, and the health rules `serve` builds (in-process, and over static workers plus Redis) and
    /// `worker` builds, each from the functions the processes call.
    async fn engine_rule_names() -> BTreeSet<String> {
        let alerts = AlertsConfig::default();
        let mut names: BTreeSet<String> = tts_gateway::alerting::default_rules()
            .into_iter()
            .chain(tts_worker::alerting::default_rules())
            .map(|rule| rule.name)
            .collect();
        names.extend(
            tts_gateway::alerting::default_anomaly_rules(alerts.anomaly)
                .into_iter()
                .map(|rule| rule.name),
        );
        let engines = Heartbeat::new("engine_pool", Duration::from_secs(30));
        let warm = Arc::new(VoiceWarm {
            voice: "en_US-test".into(),
            warm: AtomicBool::new(false),
        });
        let mut config = Config::default();
        config.workers.addresses = vec!["127.0.0.1:1".into()];
        config.workers.redis_url = Some("redis://127.0.0.1:1".into());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let mut registry = tts_telemetry::prometheus_client::registry::Registry::default();
        let remote = tts_gateway::workers::RemoteWorkers::start(
            config.workers.remote_config(),
            &mut registry,
            shutdown,
        )
        .unwrap();
        let mut watched = watched_local(&engines);
        watched.extend(watched_remote(&remote));
        let serve_rules = health_rules(&alerts, &watched, Some(&warm));
        let check: Arc<dyn HealthCheck> = warm.clone();
        let worker_rules = crate::worker::health_rules(&alerts, &engines, check);
        stop.send(true).unwrap();
        names.extend(serve_rules.into_iter().chain(worker_rules).map(|rule| rule.name));
        names
    }

    /// `runbook_url` is `docs/runbooks/<AlertName>.md` for the engine's alerts as for Prometheus's: every
    /// name either can emit has its runbook with the three sections, and no runbook belongs to no alert.
    #[tokio::test]
    async fn every_engine_rule_has_a_runbook() {
        let engine = engine_rule_names().await;
        assert!(engine.len() >= 18, "{engine:?}");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/runbooks");
        let missing: Vec<&String> = engine
            .iter()
            .filter(|name| !dir.join(format!("{name}.md")).is_file())
            .collect();
        assert!(
            missing.is_empty(),
            "rules without docs/runbooks/<name>.md: {missing:?}"
        );
        for name in &engine {
            let runbook = std::fs::read_to_string(dir.join(format!("{name}.md"))).unwrap();
            assert!(
                runbook.starts_with(&format!("# {name}\n")),
                "{name}: runbook title"
            );
            for section in [
                "## What it means",
                "## First three things to check",
                "## Mitigate",
                "\n3. ",
                "/admin/alerts",
            ] {
                assert!(runbook.contains(section), "{name}: runbook lacks {section:?}");
            }
        }
        let mut alerts = crate::rules::alert_names(&tts_gateway::SloConfig::default());
        alerts.extend(engine);
        let orphans: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|file| file.strip_suffix(".md").map(str::to_owned))
            .filter(|name| !alerts.contains(name))
            .collect();
        assert!(orphans.is_empty(), "runbooks of no alert: {orphans:?}");
    }
}
