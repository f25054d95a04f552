//! `ttsd worker`: the engine pool behind the `tts.v1.Worker` gRPC service, with a model manager, an admin
//! server (metrics with a `worker` label, probes, model admin) and, with `--redis`, a registration that
//! gateways discover.
//!
//! Startup: bind both servers, warm the default voice (readiness and gRPC health stay NOT_SERVING until
//! then), register, announce `ttsd ready: grpc=ADDR admin=URL`. SIGTERM: stop accepting sessions, let the
//! open ones finish for the grace period, deregister, stop.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tts_telemetry::gpu::GpuCheck;
use tts_telemetry::prometheus_client;
use tts_telemetry::redis::RedisMetrics;
use tts_telemetry::{AdminAccess, admin_guard};
use tts_telemetry::{AdminState, CheckResult, HealthCheck, Heartbeat, LogHandle};
use tts_worker::models::{LoadReason, ModelError, ModelManager, ModelMetrics, PoolLoader};
use tts_worker::registry::RegistrationConfig;
use tts_worker::{PoolCollector, WorkerMetrics, WorkerService, WorkerSettings};

use crate::config::Config;
use crate::serve::{
    CommonArgs, gpus, register_process_telemetry, run_process, spawn_pool_watchdog, start_pool,
    wait_for_signal,
};

#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Address of the gRPC server [default: 127.0.0.1:7001].
    #[arg(long)]
    listen: Option<String>,
    /// The worker's name in Redis and in metrics [default: worker-<port>].
    #[arg(long)]
    name: Option<String>,
    /// Register in this Redis, e.g. redis://127.0.0.1:6379.
    #[arg(long)]
    redis: Option<String>,
    /// Address of the admin server [default: 127.0.0.1:7081].
    #[arg(long)]
    admin_listen: Option<String>,
    /// The address to register for gateways to dial [default: the bound gRPC address].
    #[arg(long)]
    advertise: Option<String>,
    /// Maximum concurrent sessions.
    #[arg(long)]
    max_sessions: Option<u32>,
    #[command(flatten)]
    common: CommonArgs,
}

impl WorkerArgs {
    fn apply(&self, config: &mut Config) {
        self.common.apply(config);
        let worker = &mut config.worker;
        if let Some(listen) = &self.listen {
            worker.listen = listen.clone();
        }
        if let Some(admin) = &self.admin_listen {
            worker.admin_listen = admin.clone();
        }
        if let Some(name) = &self.name {
            worker.name = name.clone();
        }
        if let Some(url) = &self.redis {
            worker.redis_url = Some(url.clone());
        }
        if let Some(address) = &self.advertise {
            worker.advertise_address = address.clone();
        }
        if let Some(max) = self.max_sessions {
            worker.max_sessions = max;
        }
    }
}

pub(crate) fn run(args: WorkerArgs) -> anyhow::Result<()> {
    run_process(
        args.common.config.as_deref(),
        |config| args.apply(config),
        serve_worker,
    )
}

async fn serve_worker(config: Config, log: LogHandle) -> anyhow::Result<()> {
    let settings = &config.worker;
    let listener = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let admin = TcpListener::bind(&settings.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.admin_listen))?;
    let grpc_addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let name = if settings.name.is_empty() {
        format!("worker-{}", grpc_addr.port())
    } else {
        settings.name.clone()
    };
    let advertise = if settings.advertise_address.is_empty() {
        grpc_addr.to_string()
    } else {
        settings.advertise_address.clone()
    };

    let pool_config = config.clone();
    // The model manager bounds the worker's resident voices, not the pool.
    let unbounded = tts_core::pool::ResidencyLimits::unbounded();
    let (catalog, pool) = tokio::task::spawn_blocking(move || start_pool(&pool_config, unbounded)).await??;
    catalog
        .get(&config.server.default_voice)
        .context("the default voice is not available (run scripts/fetch-assets.sh for Piper voices)")?;

    let mut root = Registry::default();
    let runtime_beat = register_process_telemetry(&mut root);
    // Every worker series carries `worker="<name>"`: one value per process, so the label stays bounded.
    let registry = root.sub_registry_with_label(("worker".into(), name.clone().into()));
    PoolCollector::register(registry, pool.clone());
    let worker_metrics = WorkerMetrics::register(registry);
    let models = ModelManager::new(
        settings.models(),
        catalog.clone(),
        Arc::new(PoolLoader::new(pool.clone())),
        ModelMetrics::register(registry),
    );
    let redis_metrics = RedisMetrics::register(registry);
    log.recent().register(registry, "tts");
    let alert_metrics = config
        .alerts
        .enabled
        .then(|| tts_alerts::Metrics::register(registry));
    let service = WorkerService::new(
        WorkerSettings {
            name: name.clone(),
            max_sessions: settings.max_sessions,
            default_voice: config.server.default_voice.clone(),
        },
        pool.clone(),
        catalog,
        models.clone(),
        worker_metrics,
    );

    let engines = Heartbeat::new("engine_pool", Duration::from_secs(30));
    spawn_pool_watchdog(pool.clone(), engines.clone());
    let summary_service = service.clone();
    let summary: Arc<dyn Fn() -> serde_json::Value + Send + Sync> =
        Arc::new(move || serde_json::to_value(summary(&summary_service)).unwrap_or_default());
    let resident: Arc<dyn HealthCheck> = Arc::new(DefaultVoiceResident {
        service: service.clone(),
        voice: config.server.default_voice.clone(),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let auth_metrics = tts_telemetry::AuthMetrics::register(&mut root);
    let admin_token = crate::alerts::admin_token(config.server.admin_token_file.as_deref())?;
    let admin_access = AdminAccess::for_listener(admin_addr, admin_token).counted(&auth_metrics);
    let alert_routes = match alert_metrics {
        Some(metrics) => {
            let alerts = &config.alerts;
            let watch = crate::alerts::Watch {
                rules: tts_worker::alerting::default_rules(),
                anomaly_rules: Vec::new(),
                health_rules: health_rules(alerts, &engines, resident.clone()),
                source: Arc::new(tts_worker::alerting::WorkerSignals::new(pool.clone())),
            };
            let site = crate::alerts::Site {
                admin: admin_addr,
                instance: advertise.clone(),
                access: admin_access.clone(),
                summary: summary.clone(),
            };
            let routes = crate::alerts::start(alerts, metrics, watch, site, shutdown_rx.clone())?;
            (routes, tts_alerts::admin::ROUTES)
        }
        None => (Router::new(), ""),
    };
    let checks: Vec<Arc<dyn HealthCheck>> = vec![resident, Arc::new(GpuCheck(gpus()))];
    tts_telemetry::register_readiness(&mut root, checks.clone());
    let admin_state = AdminState {
        registry: Arc::new(root),
        summary,
        checks,
        heartbeats: vec![runtime_beat, engines],
        log: Some(log),
        started: std::time::Instant::now(),
        profiling: None,
        access: admin_access.clone(),
    };
    let admin_router = tts_telemetry::router_with(admin_state, alert_routes.0, alert_routes.1)
        .merge(model_admin(models.clone(), admin_access));
    let admin_task = tokio::spawn(async move { axum::serve(admin, admin_router).await });
    println!("ttsd admin: http://{admin_addr}");

    let worker_token = crate::alerts::token_file("worker.token_file", settings.token_file.as_deref())?;
    let call_auth = tts_worker::CallAuth::new(worker_token, auth_metrics.clone());
    let grpc_tls = crate::tls::worker_server_tls(settings)?;
    let grpc_scheme = if grpc_tls.is_some() { "TLS" } else { "plaintext" };
    let grpc = tokio::spawn(
        service
            .clone()
            .run(listener, call_auth, grpc_tls, shutdown_rx.clone()),
    );
    let warm_started = std::time::Instant::now();
    models
        .load(&config.server.default_voice, LoadReason::Startup)
        .await
        .with_context(|| format!("cannot load and warm voice {}", config.server.default_voice))?;
    tracing::info!(
        voice = %config.server.default_voice,
        warm_ms = warm_started.elapsed().as_millis() as u64,
        "Default voice loaded and warmed."
    );
    let sweeper = models.spawn_sweeper(shutdown_rx.clone());
    let registration = match &settings.redis_url {
        Some(url) => {
            let record_service = service.clone();
            let record_address = advertise.clone();
            let task = tts_worker::registry::registration(
                RegistrationConfig {
                    url: url.clone(),
                    name: name.clone(),
                    heartbeat_interval: Duration::from_secs_f64(settings.heartbeat_interval_seconds),
                    ttl: Duration::from_secs_f64(settings.registration_ttl_seconds),
                },
                move || record_service.record(&record_address),
                redis_metrics,
                shutdown_rx.clone(),
            )?;
            Some(tokio::spawn(task))
        }
        None => None,
    };
    tracing::info!(worker = %name, listen = %grpc_addr, advertise = %advertise, admin = %admin_addr, transport = grpc_scheme, "Worker serving.");
    println!("ttsd ready: grpc={grpc_addr} admin=http://{admin_addr}");

    wait_for_signal().await;
    tracing::info!("Draining: no new sessions.");
    service.drain();
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let until = tokio::time::Instant::now() + grace;
    while service.active_sessions() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service.end_all_sessions();
    let _ = shutdown_tx.send(true);
    if let Some(registration) = registration {
        let _ = tokio::time::timeout(Duration::from_secs(2), registration).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), grpc).await;
    sweeper.abort();
    admin_task.abort();
    tokio::task::spawn_blocking(move || pool.shutdown()).await?;
    tracing::info!("Stopped.");
    Ok(())
}

#[derive(serde::Serialize)]
struct WorkerSummary {
    worker: String,
    ready: bool,
    active_sessions: u32,
    max_sessions: u32,
    resident_voices: Vec<String>,
    engine_threads: u32,
    busy_threads: u32,
    queued_chunks: u32,
}

fn summary(service: &WorkerService) -> WorkerSummary {
    let caps = service.capabilities();
    WorkerSummary {
        worker: caps.worker,
        ready: caps.ready,
        active_sessions: caps.active_sessions,
        max_sessions: caps.max_concurrent_sessions,
        resident_voices: caps.resident_voices,
        engine_threads: caps.engine_threads,
        busy_threads: caps.busy_threads,
        queued_chunks: caps.queued_chunks,
    }
}

/// `/readiness` follows the default voice: resident means loaded and warmed.
struct DefaultVoiceResident {
    service: WorkerService,
    voice: String,
}

impl HealthCheck for DefaultVoiceResident {
    fn name(&self) -> &str {
        "default_voice"
    }
    fn required_for_readiness(&self) -> bool {
        true
    }
    fn check(&self) -> CheckResult {
        if self.service.is_ready() {
            CheckResult::pass(format!("{} resident and warm", self.voice))
        } else {
            CheckResult::fail(format!("{} is not resident (loading, or evicted)", self.voice))
        }
    }
}

/// `GET /admin/models`, `POST /admin/models/{voice}/load`, `POST /admin/models/{voice}/unload`.
/// The model routes; load and unload follow the admin port's rule ([`AdminAccess`]), the list is open.
fn model_admin(models: Arc<ModelManager>, access: AdminAccess) -> Router {
    let guarded = Router::new()
        .route("/admin/models/{voice}/load", post(load_model))
        .route("/admin/models/{voice}/unload", post(unload_model))
        .route_layer(axum::middleware::from_fn_with_state(access, admin_guard));
    Router::new()
        .route("/admin/models", get(list_models))
        .merge(guarded)
        .with_state(models)
}

async fn list_models(State(models): State<Arc<ModelManager>>) -> impl IntoResponse {
    let rows: Vec<serde_json::Value> = models
        .list()
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "voice": m.voice.id,
                "engine": m.voice.engine.as_str(),
                "resident": m.resident,
                "in_use": m.in_use,
                "resident_seconds": m.resident_for.map(|d| d.as_secs_f64()),
                "idle_seconds": m.idle_for.map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    Json(serde_json::json!({ "models": rows }))
}

async fn load_model(State(models): State<Arc<ModelManager>>, Path(voice): Path<String>) -> impl IntoResponse {
    match models.load(&voice, LoadReason::Manual).await {
        Ok(outcome) => (
            StatusCode::OK,
            Json(serde_json::json!({
                "voice": voice,
                "already_resident": outcome.already_resident,
                "seconds": outcome.waited.as_secs_f64(),
            })),
        ),
        Err(error) => model_error(&error),
    }
}

async fn unload_model(
    State(models): State<Arc<ModelManager>>,
    Path(voice): Path<String>,
) -> impl IntoResponse {
    match models.unload(&voice) {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({ "voice": voice, "unloaded": true })),
        ),
        Err(error) => model_error(&error),
    }
}

/// The one place a model-manager error becomes an HTTP status.
fn model_error(error: &ModelError) -> (StatusCode, Json<serde_json::Value>) {
    let status = match error {
        ModelError::UnknownVoice(_) => StatusCode::NOT_FOUND,
        ModelError::InUse { .. } | ModelError::CapReached { .. } => StatusCode::CONFLICT,
        ModelError::LoadFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(serde_json::json!({ "error": error.to_string() })))
}

/// The worker's health rules: its engine pool makes progress, its default voice is resident.
pub(crate) fn health_rules(
    alerts: &crate::alerts::AlertsConfig,
    engines: &Arc<Heartbeat>,
    resident: Arc<dyn HealthCheck>,
) -> Vec<tts_alerts::HealthRule> {
    vec![
        alerts.health_rule(
            "EnginePoolStalled",
            tts_alerts::Scope::new(),
            Arc::new(crate::alerts::HeartbeatCheck(engines.clone())),
            "The worker's engine pool makes no progress.",
        ),
        alerts.health_rule(
            "DefaultVoiceNotResident",
            tts_alerts::Scope::new(),
            resident,
            "The worker's default voice is not resident.",
        ),
    ]
}

#[cfg(test)]
mod tests;
