//! `ttsd serve`: load voices, start the engine pool, warm the default voice, serve until SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tts_core::engine::init_onnx_runtime;
use tts_core::pool::{Pool, PoolConfig};
use tts_core::voices::{EngineKind, VoiceCatalog};
use tts_gateway::Gateway;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address of the WebSocket API [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
    /// Address of the admin server [default: 127.0.0.1:8081].
    #[arg(long)]
    admin_listen: Option<String>,
    /// Default voice [default: en_US-joe-medium].
    #[arg(long)]
    voice: Option<String>,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of Piper voices.
    #[arg(long)]
    voices_dir: Option<PathBuf>,
    /// Engine threads (0 = one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Maximum concurrent sessions.
    #[arg(long)]
    max_sessions: Option<usize>,
}

impl ServeArgs {
    fn apply(self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(admin) = self.admin_listen {
            config.server.admin_listen = admin;
        }
        if let Some(voice) = self.voice {
            config.server.default_voice = voice;
        }
        if let Some(dir) = self.voices_dir {
            config.engine.voices_dir = dir;
        }
        if let Some(threads) = self.threads {
            config.engine.threads = threads;
        }
        if let Some(max) = self.max_sessions {
            config.gateway.max_sessions = max;
        }
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    args.apply(&mut config);
    config.validate()?;
    crate::logging::init(&config.logging)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ttsd-async")
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

/// Builds the catalog and the pool, and warms `voice` on every engine thread.
pub(crate) fn start_engines(config: &Config, voice: &str) -> anyhow::Result<(Arc<VoiceCatalog>, Arc<Pool>)> {
    let catalog = Arc::new(VoiceCatalog::discover(&config.engine.voices_dir)?);
    if catalog.iter().any(|v| v.engine == EngineKind::Piper)
        && let Err(error) = init_onnx_runtime(&config.engine.onnx_runtime_path)
    {
        tracing::warn!(error = %error, "Piper voices are unavailable.");
    }
    let wanted = catalog
        .get(voice)
        .context("the default voice is not available (run scripts/fetch-assets.sh for Piper voices)")?
        .clone();
    let pool = Arc::new(Pool::start(PoolConfig {
        threads: config.engine.thread_count(),
        queue_capacity: config.engine.queue_capacity,
        engine: config.engine.settings(),
    })?);
    let started = std::time::Instant::now();
    pool.warm(&wanted)
        .with_context(|| format!("cannot load and warm voice {}", wanted.id))?;
    tracing::info!(voice = %wanted.id, warm_ms = started.elapsed().as_millis() as u64, "Voice loaded and warmed.");
    Ok((catalog, pool))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let admin = TcpListener::bind(&config.server.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.admin_listen))?;
    let admin_addr = admin.local_addr()?;
    let engine_config = config.clone();
    let voice = config.server.default_voice.clone();
    let (catalog, pool) =
        tokio::task::spawn_blocking(move || start_engines(&engine_config, &voice)).await??;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let gateway = Gateway::new(
        config.gateway.clone(),
        catalog,
        pool.clone(),
        &config.server.default_voice,
        shutdown_rx,
    )?;
    let addr = listener.local_addr()?;
    let admin_task = tokio::spawn(async move {
        let router = axum::Router::new().route("/liveness", axum::routing::get(|| async { "ok\n" }));
        axum::serve(admin, router).await
    });
    tracing::info!(listen = %addr, admin = %admin_addr, voice = %gateway.default_voice().id, "Serving.");
    println!("ttsd ready: stream=ws://{addr}/v1/stream admin=http://{admin_addr}");

    let mut signal_rx = shutdown_tx.subscribe();
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let server = tokio::spawn(tts_gateway::run(listener, gateway, async move {
        let _ = signal_rx.wait_for(|stop| *stop).await;
    }));
    wait_for_signal().await;
    tracing::info!("Shutting down: ending sessions.");
    let _ = shutdown_tx.send(true);
    match tokio::time::timeout(grace, server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!(
            grace_seconds = grace.as_secs(),
            "Sessions did not end within the grace period."
        ),
    }
    admin_task.abort();
    tokio::task::spawn_blocking(move || pool.shutdown()).await?;
    tracing::info!("Stopped.");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the server can still be killed; it just cannot drain.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
