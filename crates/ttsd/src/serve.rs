//! `ttsd serve`: bind the admin server (not ready), start the engine pool and warm the default voice (or,
//! with remote workers, start routing to them), then serve the WebSocket API until SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tts_core::engine::init_onnx_runtime;
use tts_core::pool::{Pool, PoolConfig, ResidencyLimits};
use tts_core::voices::{EngineKind, VoiceCatalog, VoiceInfo};
use tts_gateway::workers::RemoteWorkers;
use tts_gateway::{Gateway, GatewayMetrics, Synthesizer};
use tts_telemetry::gpu::{GpuCheck, GpuCollector, Gpus};
use tts_telemetry::prometheus_client;
use tts_telemetry::{
    AdminState, CheckResult, HealthCheck, Heartbeat, LogHandle, StallDetectorConfig, StallMetrics,
};

use crate::config::Config;

mod alerting;
pub(crate) mod listener;
mod shutdown;

use self::alerting::{Slowed, alert_watch, slow_engine_route, watched_local, watched_remote};
use self::listener::{ConnectionMetrics, Listener, ListenerKind};
pub(crate) use self::shutdown::wait_for_signal;
use self::shutdown::{Draining, drain};

/// Flags `serve` and `worker` share.
#[derive(Debug, clap::Args)]
pub(crate) struct CommonArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Default voice, loaded and warmed before ready [default: en_US-joe-medium].
    #[arg(long)]
    voice: Option<String>,
    /// Directory of Piper voices.
    #[arg(long)]
    voices_dir: Option<PathBuf>,
    /// Engine threads (0 = one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Export traces over OTLP/gRPC to this endpoint, e.g. http://127.0.0.1:4317.
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Send alerts to this Alertmanager (base URL, e.g. http://127.0.0.1:9093; comma-separated for several).
    #[arg(long, value_delimiter = ',')]
    alertmanager_url: Vec<String>,
}

impl CommonArgs {
    pub(crate) fn apply(&self, config: &mut Config) {
        if let Some(voice) = &self.voice {
            config.server.default_voice = voice.clone();
        }
        if let Some(dir) = &self.voices_dir {
            config.engine.voices_dir = dir.clone();
        }
        if let Some(threads) = self.threads {
            config.engine.threads = threads;
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            config.tracing.otlp_endpoint = Some(endpoint.clone());
        }
        if !self.alertmanager_url.is_empty() {
            config.alerts.alertmanager_urls = self.alertmanager_url.clone();
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address of the WebSocket API [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
    /// Address of the admin server [default: 127.0.0.1:8081].
    #[arg(long)]
    admin_listen: Option<String>,
    /// Serve the Wyoming protocol (Home Assistant) on this address, e.g. 0.0.0.0:10200 [default: off].
    #[arg(long)]
    wyoming_listen: Option<String>,
    /// Maximum concurrent sessions.
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Serve CPU and heap profiles on the admin port (`/debug/pprof/profile`, `/debug/pprof/heap`).
    #[arg(long)]
    enable_profiling: bool,
    /// Synthesise on these remote workers (`host:port`, comma-separated) instead of in-process.
    #[arg(long, value_delimiter = ',')]
    workers: Vec<String>,
    /// Discover remote workers registered in this Redis, e.g. redis://127.0.0.1:6379.
    #[arg(long)]
    redis: Option<String>,
    /// Serve `POST /test/freeze-heartbeats` and `POST /test/slow-engine` (body: milliseconds added before
    /// every chunk reaches the engines) on the admin port, so tests can make liveness fail and measure how
    /// fast the alert engine notices a slowed engine. Off by default.
    #[arg(long, hide = true)]
    test_hooks: bool,
    #[command(flatten)]
    common: CommonArgs,
}

impl ServeArgs {
    fn apply(&self, config: &mut Config) {
        self.common.apply(config);
        if let Some(listen) = &self.listen {
            config.server.listen = listen.clone();
        }
        if let Some(admin) = &self.admin_listen {
            config.server.admin_listen = admin.clone();
        }
        if let Some(wyoming) = &self.wyoming_listen {
            config.server.wyoming_listen = Some(wyoming.clone());
        }
        if let Some(max) = self.max_sessions {
            config.gateway.max_sessions = max;
        }
        if self.enable_profiling {
            config.profiling.enabled = true;
        }
        if !self.workers.is_empty() {
            config.workers.addresses = self.workers.clone();
        }
        if let Some(url) = &self.redis {
            config.workers.redis_url = Some(url.clone());
        }
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let test_hooks = args.test_hooks;
    run_process(
        args.common.config.as_deref(),
        |config| args.apply(config),
        move |config, log| serve(config, log, test_hooks),
    )
}

/// What `serve` and `worker` share: load the configuration (file, `TTSD_*`, then the standard `OTEL_*` and
/// profiling variables, then the flags `apply` sets), start the runtime and logging, run `main`, and flush
/// spans while the runtime's workers still run.
pub(crate) fn run_process<F, Fut>(
    config_path: Option<&std::path::Path>,
    apply: impl FnOnce(&mut Config),
    main: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Config, LogHandle) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut config = Config::load(config_path, std::env::vars())?;
    let env_problems = config.tracing.apply_env(std::env::vars());
    config.profiling.apply_env(std::env::vars())?;
    apply(&mut config);
    if !env_problems.is_empty() {
        anyhow::bail!(
            "invalid OpenTelemetry environment:\n  - {}",
            env_problems.join("\n  - ")
        );
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ttsd-async")
        .build()
        .context("cannot start the async runtime")?;
    let (log, otel) = {
        // The OTLP exporter needs a runtime to start in.
        let _entered = runtime.enter();
        tts_telemetry::init_logging_with_tracing(
            config.logging.format,
            &config.logging.filter,
            &config.tracing,
        )?
    };
    let result = runtime.block_on(main(config, log));
    drop(otel);
    result
}

/// The catalog, and an engine pool that has not loaded any voice yet.
pub(crate) fn start_pool(
    config: &Config,
    residency: ResidencyLimits,
) -> anyhow::Result<(Arc<VoiceCatalog>, Arc<Pool>)> {
    let catalog = Arc::new(VoiceCatalog::discover(&config.engine.voices_dir)?);
    if catalog.iter().any(|v| v.engine == EngineKind::Piper)
        && let Err(error) = init_onnx_runtime(&config.engine.onnx_runtime_path)
    {
        tracing::warn!(error = %error, "Piper voices are unavailable.");
    }
    let pool = Arc::new(Pool::start(PoolConfig {
        threads: config.engine.thread_count(),
        queue_capacity: config.engine.queue_capacity,
        engine: config.engine.settings(),
        residency,
    })?);
    Ok((catalog, pool))
}

/// Loads `voice` on every engine thread's instance and synthesises a warm-up sentence with each.
pub(crate) fn warm(pool: &Pool, voice: &VoiceInfo) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    pool.warm(voice)
        .with_context(|| format!("cannot load and warm voice {}", voice.id))?;
    pool.pin(&voice.id);
    tracing::info!(voice = %voice.id, warm_ms = started.elapsed().as_millis() as u64, "Voice loaded and warmed.");
    Ok(())
}

/// `/readiness` fails until the default voice is warm.
struct VoiceWarm {
    voice: String,
    warm: AtomicBool,
}

impl HealthCheck for VoiceWarm {
    fn name(&self) -> &str {
        "default_voice"
    }
    fn required_for_readiness(&self) -> bool {
        true
    }
    fn check(&self) -> CheckResult {
        if self.warm.load(Ordering::Acquire) {
            CheckResult::pass(format!("{} loaded and warmed", self.voice))
        } else {
            CheckResult::fail(format!("{} is loading", self.voice))
        }
    }
}

/// `/readiness` fails while more chunks wait than the engine threads can start soon: a new session would
/// wait behind them for its first audio.
struct PoolHeadroom {
    pool: Arc<Pool>,
}

impl HealthCheck for PoolHeadroom {
    fn name(&self) -> &str {
        "engine_pool"
    }
    fn required_for_readiness(&self) -> bool {
        true
    }
    fn check(&self) -> CheckResult {
        let stats = self.pool.stats();
        let limit = stats.threads * 2;
        let detail = format!(
            "{} of {} threads busy, {} chunks queued (limit {limit})",
            stats.busy, stats.threads, stats.queued
        );
        if stats.queued < limit {
            CheckResult::pass(detail)
        } else {
            CheckResult::fail(detail)
        }
    }
}

/// Beats while engine threads make progress or have nothing to do; stops when a thread is stuck on a job.
pub(crate) fn spawn_pool_watchdog(pool: Arc<Pool>, heartbeat: Arc<Heartbeat>) {
    tokio::spawn(async move {
        let mut last = pool.progress();
        let mut interval = tokio::time::interval(Duration::from_millis(500));
        loop {
            interval.tick().await;
            let progress = pool.progress();
            let stats = pool.stats();
            if progress != last || (stats.busy == 0 && stats.queued == 0) {
                heartbeat.beat();
            }
            last = progress;
        }
    });
}

struct Telemetry {
    registry: Registry,
    metrics: Arc<GatewayMetrics>,
    heartbeats: Vec<Arc<Heartbeat>>,
}

/// Reads `server.api_keys_file`, if configured: one key per line, `#` comments. A missing, unreadable or
/// keyless file is an error naming it.
fn api_keys(path: Option<&std::path::Path>) -> anyhow::Result<Option<tts_gateway::ApiKeys>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read server.api_keys_file {}", path.display()))?;
    let keys = tts_gateway::ApiKeys::parse(&text);
    anyhow::ensure!(
        !keys.is_empty(),
        "server.api_keys_file {} holds no key (one per line; lines starting with # are comments)",
        path.display()
    );
    tracing::info!(keys = keys.len(), "API keys loaded; the public routes need one.");
    Ok(Some(keys))
}

fn build_telemetry(config: &Config, mut registry: Registry) -> Telemetry {
    let metrics = Arc::new(GatewayMetrics::register_with_level(
        &mut registry,
        config.slo,
        config.server.metrics,
    ));
    let runtime = register_process_telemetry(&mut registry);
    Telemetry {
        registry,
        metrics,
        heartbeats: vec![runtime],
    }
}

/// Process, build and GPU metrics and the async-runtime stall detector, shared by `serve` and `worker`;
/// returns the runtime's heartbeat.
pub(crate) fn register_process_telemetry(registry: &mut Registry) -> Arc<Heartbeat> {
    tts_telemetry::register_process_metrics(registry);
    tts_telemetry::register_build_info(
        registry,
        "tts_build",
        "ttsd build information",
        &[("version", env!("CARGO_PKG_VERSION"))],
    );
    GpuCollector::register(registry, gpus());
    let stall_metrics = StallMetrics::register(registry, "tts");
    let runtime = Heartbeat::new("async_runtime", Duration::from_secs(2));
    tts_telemetry::spawn_stall_detector(
        StallDetectorConfig {
            interval: Duration::from_millis(50),
            threshold: Duration::from_millis(20),
        },
        stall_metrics,
        runtime.clone(),
    );
    runtime
}

/// NVML is probed once per process.
pub(crate) fn gpus() -> Arc<Gpus> {
    static GPUS: std::sync::OnceLock<Arc<Gpus>> = std::sync::OnceLock::new();
    GPUS.get_or_init(|| Arc::new(Gpus::detect())).clone()
}

/// Where synthesis runs, with what `/readiness` and `/liveness` watch for it.
struct Backend {
    synthesizer: Arc<dyn Synthesizer>,
    pool: Option<Arc<Pool>>,
    checks: Vec<Arc<dyn HealthCheck>>,
    heartbeats: Vec<Arc<Heartbeat>>,
    /// Checks the alert engine watches: (alert name, scope, check, summary).
    watched: Vec<Watched>,
}

type Watched = (
    &'static str,
    tts_alerts::Scope,
    Arc<dyn HealthCheck>,
    &'static str,
);

/// In-process engine threads; the default voice is warmed later, once the admin server is up.
async fn local_backend(
    config: &Config,
    registry: &mut Registry,
) -> anyhow::Result<(Arc<VoiceCatalog>, Backend)> {
    let pool_config = config.clone();
    let (catalog, pool) = tokio::task::spawn_blocking(move || {
        let residency = pool_config.engine.residency();
        start_pool(&pool_config, residency)
    })
    .await??;
    tts_worker::PoolCollector::register(registry, pool.clone());
    let engines = Heartbeat::new("engine_pool", Duration::from_secs(30));
    spawn_pool_watchdog(pool.clone(), engines.clone());
    let watched = watched_local(&engines);
    let backend = Backend {
        synthesizer: pool.clone(),
        checks: vec![Arc::new(PoolHeadroom { pool: pool.clone() })],
        pool: Some(pool),
        heartbeats: vec![engines],
        watched,
    };
    Ok((catalog, backend))
}

/// Remote workers from `[workers]`, `--workers` or `--redis`. Voice ids are checked against this
/// machine's catalog, as they are for in-process synthesis.
fn remote_backend(
    config: &Config,
    registry: &mut Registry,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<VoiceCatalog>, Backend)> {
    let catalog = Arc::new(VoiceCatalog::discover(&config.engine.voices_dir)?);
    let mut remote_config = config.workers.remote_config();
    remote_config.token =
        crate::alerts::token_file("workers.token_file", config.workers.token_file.as_deref())?
            .map(tts_gateway::workers::WorkerToken::new);
    remote_config.tls = crate::tls::worker_client_tls(&config.workers)?;
    let remote = RemoteWorkers::start(remote_config, registry, shutdown)?;
    let watched = watched_remote(&remote);
    let backend = Backend {
        checks: remote.checks(),
        synthesizer: Arc::new(remote),
        pool: None,
        heartbeats: Vec::new(),
        watched,
    };
    Ok((catalog, backend))
}

/// The certificates of the public and admin listeners, when they speak TLS (read now, so a bad file
/// stops the start with an error naming it).
struct ListenerTls {
    public: Option<Arc<crate::tls::ReloadingCert>>,
    admin: Option<Arc<crate::tls::ReloadingCert>>,
}

impl ListenerTls {
    fn load(config: &Config) -> anyhow::Result<Self> {
        use crate::tls::ReloadingCert;
        let load = |kind, files: Option<crate::tls::TlsFiles>| {
            files
                .map(|files| ReloadingCert::load(kind, files))
                .transpose()
                .with_context(|| format!("cannot set up TLS for the {kind:?} listener"))
        };
        Ok(Self {
            public: load(ListenerKind::public, config.server.public_tls())?,
            admin: load(ListenerKind::admin, config.server.admin_tls())?,
        })
    }

    fn acceptor(
        cert: Option<&Arc<crate::tls::ReloadingCert>>,
    ) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
        Ok(cert.map(|cert| cert.acceptor()).transpose()?)
    }

    /// Reloads both on SIGHUP, counted in `tts_tls_reloads_total`.
    fn reload_on_sighup(&self, registry: &mut Registry) {
        let metrics = crate::tls::TlsMetrics::register(registry);
        let certs = [&self.public, &self.admin]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        crate::tls::reload_on_sighup(certs, metrics);
    }
}

async fn serve(config: Config, log: LogHandle, test_hooks: bool) -> anyhow::Result<()> {
    let tls = ListenerTls::load(&config)?;
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let admin = TcpListener::bind(&config.server.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.admin_listen))?;
    let admin_addr = admin.local_addr()?;
    let wyoming = match &config.server.wyoming_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (Wyoming)"))?,
        ),
        None => None,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut registry = Registry::default();
    // The recent-span and recent-log buffers behind /admin/traces and /admin/logs: their fill and losses.
    log.recent().register(&mut registry, "tts");
    let (catalog, mut backend) = if config.workers.remote() {
        remote_backend(&config, &mut registry, shutdown_rx.clone())?
    } else {
        local_backend(&config, &mut registry).await?
    };
    let slow_engine = Arc::new(AtomicU64::new(0));
    if test_hooks {
        backend.synthesizer = Arc::new(Slowed {
            inner: backend.synthesizer.clone(),
            delay_ms: slow_engine.clone(),
        });
    }
    // Learns what chunks cost from the synthesizer the gateway uses; admission and readiness read it.
    let headroom = tts_gateway::EngineHeadroom::new(config.gateway.admission_max_utilisation, &mut registry);
    backend.synthesizer = headroom.meter(backend.synthesizer.clone());
    let default_voice = catalog
        .get(&config.server.default_voice)
        .context("the default voice is not available (run scripts/fetch-assets.sh for Piper voices)")?
        .clone();

    let alert_metrics = config
        .alerts
        .enabled
        .then(|| tts_alerts::Metrics::register(&mut registry));
    tts_telemetry::profiling::install(&config.profiling).await?;
    let mut telemetry = build_telemetry(&config, registry);
    let auth_metrics = tts_telemetry::AuthMetrics::register(&mut telemetry.registry);
    let connection_metrics = ConnectionMetrics::register(&mut telemetry.registry);
    tls.reload_on_sighup(&mut telemetry.registry);
    let admin_token = crate::alerts::admin_token(config.server.admin_token_file.as_deref())?;
    let api_keys = api_keys(config.server.api_keys_file.as_deref())?;
    let admin_access =
        tts_telemetry::AdminAccess::for_listener(admin_addr, admin_token.clone()).counted(&auth_metrics);
    telemetry.heartbeats.extend(backend.heartbeats.iter().cloned());
    let warm_check = Arc::new(VoiceWarm {
        voice: default_voice.id.clone(),
        warm: AtomicBool::new(false),
    });
    let summary_metrics = telemetry.metrics.clone();
    let summary_synth = backend.synthesizer.clone();
    // Remote workers warm their own voices; their readiness is the `workers` check.
    let draining = Arc::new(Draining::default());
    let mut checks: Vec<Arc<dyn HealthCheck>> = vec![draining.clone()];
    if backend.pool.is_some() {
        checks.push(warm_check.clone());
    }
    checks.extend(backend.checks.iter().cloned());
    checks.push(headroom.check());
    checks.push(Arc::new(GpuCheck(gpus())));
    tts_telemetry::register_readiness(&mut telemetry.registry, checks.clone());
    let summary: Arc<dyn Fn() -> serde_json::Value + Send + Sync> =
        Arc::new(move || summary_metrics.summary(&summary_synth.stats()));
    let alert_routes = match alert_metrics {
        Some(metrics) => {
            let watch = alert_watch(&config, &telemetry.metrics, &backend, &warm_check);
            let site = crate::alerts::Site {
                admin: admin_addr,
                instance: listener.local_addr()?.to_string(),
                access: admin_access.clone(),
                summary: summary.clone(),
            };
            let routes = crate::alerts::start(&config.alerts, metrics, watch, site, shutdown_rx.clone())?;
            (routes, tts_alerts::admin::ROUTES)
        }
        None => (axum::Router::new(), ""),
    };
    let admin_state = AdminState {
        registry: Arc::new(telemetry.registry),
        summary,
        checks,
        heartbeats: telemetry.heartbeats.clone(),
        log: Some(log),
        started: std::time::Instant::now(),
        profiling: config.profiling.enabled.then(|| {
            let token = config.profiling.token.clone().or(admin_token);
            tts_telemetry::AdminAccess::for_listener(admin_addr, token).counted(&auth_metrics)
        }),
        access: admin_access,
    };
    let mut admin_router = tts_telemetry::router_with(admin_state, alert_routes.0, alert_routes.1);
    if test_hooks {
        let heartbeats = telemetry.heartbeats.clone();
        let slow = slow_engine.clone();
        admin_router = admin_router.route("/test/slow-engine", slow_engine_route(slow));
        admin_router = admin_router.route(
            "/test/freeze-heartbeats",
            axum::routing::post(move || {
                let heartbeats = heartbeats.clone();
                async move {
                    heartbeats.iter().for_each(|h| h.freeze());
                    "frozen\n"
                }
            }),
        );
    }
    let admin_scheme = if tls.admin.is_some() { "https" } else { "http" };
    // The admin server answers until the very end (readiness shows the drain); it is aborted then.
    let (_admin_stop, admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(listener::run(
        Listener {
            kind: ListenerKind::admin,
            tcp: admin,
            router: admin_router,
            tls: ListenerTls::acceptor(tls.admin.as_ref())?,
            limits: config.server.limits(),
            metrics: connection_metrics.clone(),
        },
        admin_stop_rx,
    ));
    // Announced before warm-up, so orchestrators and tests can watch /readiness turn from 503 to 200.
    println!("ttsd admin: {admin_scheme}://{admin_addr}");

    if let Some(pool) = backend.pool.clone() {
        let warm_voice = default_voice.clone();
        let section = tts_telemetry::profile_section("warm_up");
        tokio::task::spawn_blocking(move || warm(&pool, &warm_voice)).await??;
        drop(section);
        warm_check.warm.store(true, Ordering::Release);
    }

    let gateway = Gateway::new(
        config.gateway.clone(),
        catalog,
        backend.synthesizer.clone(),
        &config.server.default_voice,
        shutdown_rx,
        telemetry.metrics.clone(),
        tts_gateway::ApiAuth::new(api_keys, auth_metrics.clone()),
    )?
    .with_headroom(headroom);
    let addr = listener.local_addr()?;
    let wyoming_addr = wyoming.as_ref().map(TcpListener::local_addr).transpose()?;
    tracing::info!(listen = %addr, admin = %admin_addr, wyoming = ?wyoming_addr, voice = %gateway.default_voice().id, "Serving.");
    let wyoming_note = wyoming_addr
        .map(|a| format!(" wyoming=tcp://{a}"))
        .unwrap_or_default();
    let ws_scheme = if tls.public.is_some() { "wss" } else { "ws" };
    println!(
        "ttsd ready: stream={ws_scheme}://{addr}/v1/stream admin={admin_scheme}://{admin_addr}{wyoming_note}"
    );
    if let Some(wyoming) = wyoming {
        let mut stop = shutdown_tx.subscribe();
        tokio::spawn(tts_gateway::wyoming::run(wyoming, gateway.clone(), async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }));
    }

    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let server = tokio::spawn(listener::run(
        Listener {
            kind: ListenerKind::public,
            tcp: listener,
            router: gateway.router(),
            tls: ListenerTls::acceptor(tls.public.as_ref())?,
            limits: config.server.limits(),
            metrics: connection_metrics,
        },
        shutdown_tx.subscribe(),
    ));
    wait_for_signal().await;
    draining.start();
    gateway.drain();
    drain(&gateway, Duration::from_secs(config.server.drain_seconds)).await;
    tracing::info!(
        sessions = gateway.active_sessions(),
        "Shutting down: ending sessions."
    );
    let _ = shutdown_tx.send(true);
    match tokio::time::timeout(grace, server).await {
        Ok(joined) => joined?,
        Err(_) => tracing::warn!(
            grace_seconds = grace.as_secs(),
            "Sessions did not end within the grace period."
        ),
    }
    admin_task.abort();
    if let Some(pool) = backend.pool {
        tokio::task::spawn_blocking(move || pool.shutdown()).await?;
    }
    let _ = tokio::task::spawn_blocking(tts_telemetry::profiling::flush_section_profiles).await;
    tracing::info!("Stopped.");
    Ok(())
}
