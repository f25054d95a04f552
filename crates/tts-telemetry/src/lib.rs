//! Telemetry plumbing for ttsd, free of any TTS knowledge: the pieces every component uses to expose
//! metrics, logs and health, while the metrics themselves are defined by the crates that own them.
//!
//! - [`exposition`] encodes a `prometheus_client` registry as OpenMetrics or Prometheus text 0.0.4.
//! - [`window`] keeps sliding-window quantiles and ratios in fixed memory for `/metrics/summary`.
//! - [`process`] exports the standard `process_*` metrics from `/proc/self` and a `*_build_info` metric.
//! - [`logging`] installs the JSON/text `tracing` subscriber with span-field flattening, a reloadable
//!   filter and [`redact`]ion of personal data.
//! - [`otel`] exports `tracing` spans over OTLP when a collector is configured, and propagates W3C
//!   trace context.
//! - [`heartbeat`] and [`stall`] detect a wedged or stalling async runtime.
//! - [`gpu`] reads NVIDIA GPUs through NVML at scrape time, and says plainly when there are none.
//! - [`redis`] holds the metrics every Redis client in the process records its commands into.
//! - [`recent`] keeps bounded buffers of recently finished spans and log records, always on, behind
//!   `/admin/traces` and `/admin/logs`.
//! - [`profiling`] takes on-demand CPU (pprof-rs) and heap (jemalloc) profiles and profiles named code
//!   sections that run long.
//! - [`admin`] is the admin HTTP router: `/metrics`, `/metrics/summary`, `/health`, `/readiness`,
//!   `/liveness`, `/admin/log-level`, `/debug/pprof/profile`, `/debug/pprof/heap`, and the live
//!   [`dashboard`] at `/dashboard`.
//!
//! It does not build the registry (the binary does, once, and passes it down), does not define metric
//! names beyond the standard process, GPU and Redis-client ones (the dashboard only reads a fixed list of
//! the binary's), and does not serve HTTP itself: [`router`] is a value the binary mounts on the admin
//! listener.
//!
//! Wiring, as the binary does it:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! use tts_telemetry::prometheus_client::registry::Registry;
//! use tts_telemetry::{AdminState, Heartbeat, StallMetrics, WindowedHistogram};
//!
//! let mut registry = Registry::default();
//! tts_telemetry::register_process_metrics(&mut registry);
//! tts_telemetry::register_build_info(&mut registry, "app_build", "Build", &[("version", "0.1.0")]);
//! let stall_metrics = StallMetrics::register(&mut registry, "app");
//! let runtime = Heartbeat::new("runtime", Duration::from_secs(2));
//! let latency = Arc::new(WindowedHistogram::new(Duration::from_secs(300), 30));
//! latency.observe(0.120);
//!
//! let summary_latency = latency.clone();
//! let admin = tts_telemetry::router(AdminState {
//!     registry: Arc::new(registry),
//!     summary: Arc::new(move || serde_json::json!({ "p95_seconds": summary_latency.quantile(0.95) })),
//!     checks: Vec::new(),
//!     heartbeats: vec![runtime.clone()],
//!     log: None,
//!     profiling: None,
//!     access: tts_telemetry::AdminAccess::default(),
//!     started: Instant::now(),
//! });
//! // In an async context: `spawn_stall_detector(config, stall_metrics, runtime)`, then serve `admin`
//! // on the admin listener with `axum::serve`.
//! # drop((admin, stall_metrics));
//! ```

pub mod admin;
pub mod dashboard;
pub mod exposition;
pub mod gpu;
pub mod heartbeat;
pub mod logging;
pub mod otel;
pub mod process;
pub mod profiling;
pub mod recent;
pub mod redis;
pub mod stall;
pub mod window;

/// The client library, re-exported so every crate uses the same version.
pub use prometheus_client;

pub use admin::{
    AdminAccess, AdminRefusal, AdminState, AuthMetrics, AuthOutcome, AuthSurface, CheckResult, HealthCheck,
    admin_guard, bearer, constant_time_eq, register_readiness, router, router_with,
};
pub use exposition::{EncodeError, Exposition, encode};
pub use heartbeat::Heartbeat;
pub use logging::{
    LogFormat, LogHandle, LoggingError, build_subscriber, build_subscriber_with_tracing, init_logging,
    init_logging_with_tracing, redact,
};
pub use otel::{OtelGuard, TracingConfig, set_parent_from_traceparent, trace_ids};
pub use process::{register_build_info, register_process_metrics};
pub use profiling::{ProfilingConfig, ProfilingError, profile_section};
pub use recent::{Recent, RecentConfig};
pub use stall::{StallDetectorConfig, StallMetrics, spawn_stall_detector};
pub use window::{WindowedHistogram, WindowedRatio};
