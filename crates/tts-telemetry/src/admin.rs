//! The admin HTTP router: metrics, health, readiness, liveness, the live log level and profiles.
//!
//! Routes:
//!
//! | Method | Path | Answer |
//! |---|---|---|
//! | GET | `/metrics` | The registry. OpenMetrics text when `Accept` contains `application/openmetrics-text`, otherwise Prometheus text 0.0.4 (see [`crate::exposition`]). |
//! | GET | `/metrics/summary` | JSON from [`AdminState::summary`], with `uptime_seconds` added when absent. |
//! | GET | `/health`, `/healthz` | Every check and heartbeat: `{"status":"ok"\|"failing","checks":{name:{"ok","detail","required_for_readiness"}},"heartbeats":{name:{"alive","age_seconds","max_age_seconds"}}}`; 200 when all pass, else 503. |
//! | GET | `/readiness`, `/readyz` | 200 `{"ready":true,...}` when every readiness-required check passes; else 503 with the failing checks under `failing`. |
//! | GET | `/liveness`, `/livez` | 200 when every heartbeat is alive; else 503 naming each stale heartbeat and its age under `stale`. |
//! | GET | `/admin/log-level` | The current log filter, as text. |
//! | GET | `/admin/traces?trace_id=&session_id=&since=&after=&limit=` | Recent finished spans grouped by trace, newest trace first: `{"traces":[{"trace_id","session_id","start","duration_ms","spans":[…]}],"buffer":{…}}` (see [`crate::recent`]); 400 for a malformed filter, 501 without a [`LogHandle`]. |
//! | GET | `/admin/logs?level=&target=&session_id=&trace_id=&since=&after=&limit=` | Recent log records, oldest first, each shaped like a JSON log line plus `seq`: `{"logs":[…],"buffer":{…}}`. |
//! | PUT | `/admin/log-level` | Body: a filter (`debug`, `info,tts_gateway=debug`); guarded by [`AdminState::access`]. 200 with the new filter, 400 with the parse error, 501 when the process has no [`LogHandle`]. |
//! | GET | `/debug/pprof/profile?seconds=30&frequency=99` | Samples the CPU for `seconds` (1..=300, default 30) at `frequency` Hz (1..=250, default 99). 200 `application/octet-stream`, gzipped pprof (`cpu.pb.gz`); with `&format=flamegraph`, 200 `image/svg+xml`. 409 while another CPU profile or sampled section runs; 400 for bad parameters. |
//! | GET | `/dashboard`, `/dashboard/{asset}` | The live dashboard page and its embedded assets (see [`crate::dashboard`]). |
//! | GET | `/dashboard/events` | Server-sent events, one `snapshot` a second (summary, health, selected series); resumes after `Last-Event-ID`. |
//! | GET | `/dashboard/snapshot` | The current snapshot as one JSON object. |
//! | GET | `/debug/pprof/heap` | jemalloc's sampled live heap: 200 `application/octet-stream`, gzipped pprof (`heap.pb.gz`). 501 when the process has no jemalloc profiling or heap sampling is off. |
//!
//! The `/debug/pprof/*` routes answer 404 with how to enable them unless [`AdminState::profiling`] is
//! set. They and `PUT /admin/log-level` follow [`AdminAccess`]: a configured token is always required
//! (`Authorization: Bearer <token>`, else 401 naming the missing or invalid token); without one they
//! serve only a loopback admin listener and answer 403 otherwise. Fetch with
//! `curl -H "Authorization: Bearer $TOKEN" -o cpu.pb.gz 'http://ADMIN/debug/pprof/profile?seconds=30'`
//! and read with `go tool pprof -top cpu.pb.gz`.
//!
//! [`router_with`] adds routes of other components (the alert engine's) with their lines of help.
//! Anything else is a 404 whose body lists these routes. The router is a value: serve it on its own
//! listener (the admin port), never on the public one.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::dashboard;
use crate::exposition::{self, Exposition};
use crate::heartbeat::Heartbeat;
use crate::logging::LogHandle;
use crate::profiling::{self, DEFAULT_FREQUENCY_HZ, ProfilingError};

mod access;
mod readiness;
mod recent;

pub use access::{
    AdminAccess, AdminRefusal, AuthMetrics, AuthOutcome, AuthSurface, admin_guard, bearer, constant_time_eq,
};

pub use readiness::register_readiness;

const ROUTES: &str = "\
Admin routes:
  GET /metrics            Prometheus text 0.0.4, or OpenMetrics with Accept: application/openmetrics-text
  GET /metrics/summary    JSON summary
  GET /health  /healthz   all checks and heartbeats
  GET /readiness /readyz  readiness-required checks
  GET /liveness /livez    heartbeats
  GET /admin/log-level    current log filter
  PUT /admin/log-level    set the log filter (body: e.g. info,tts_gateway=debug)
  GET /admin/traces       recent spans by trace (?trace_id= &session_id= &since= &after= &limit=)
  GET /admin/logs         recent log records (?level= &target= &session_id= &trace_id= &since= &after= &limit=)
  GET /debug/pprof/profile?seconds=30[&frequency=99][&format=flamegraph]
                          CPU profile (gzipped pprof, or SVG), when profiling is enabled
  GET /debug/pprof/heap   heap profile (gzipped pprof), when profiling is enabled
  GET /dashboard          live dashboard (Overview, Metrics, Traces, Alerts, Logs), assets embedded
  GET /dashboard/events   server-sent events: one snapshot a second (resume with Last-Event-ID)
  GET /dashboard/snapshot the current snapshot, as JSON
";

/// The outcome of one health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Whether the check passed.
    pub ok: bool,
    /// A short, human-readable reason; never user data.
    pub detail: String,
}

impl CheckResult {
    /// A passing result.
    pub fn pass(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: detail.into(),
        }
    }

    /// A failing result.
    pub fn fail(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// A named health check, run on every `/health` and `/readiness` request. `check` runs on the async
/// executor, so it must be cheap and must not block: read state that something else keeps current.
pub trait HealthCheck: Send + Sync {
    /// The name the check is reported under.
    fn name(&self) -> &str;
    /// Whether `/readiness` fails when this check fails (dependencies and warm-up: yes; informational: no).
    fn required_for_readiness(&self) -> bool;
    /// Runs the check.
    fn check(&self) -> CheckResult;
}

/// Everything the admin routes read.
pub struct AdminState {
    /// The process's metrics, complete after startup.
    pub registry: Arc<Registry>,
    /// Builds the body of `/metrics/summary`.
    pub summary: Arc<dyn Fn() -> Value + Send + Sync>,
    /// Checks behind `/health` and `/readiness`.
    pub checks: Vec<Arc<dyn HealthCheck>>,
    /// Heartbeats behind `/liveness`: it fails if any is stale.
    pub heartbeats: Vec<Arc<Heartbeat>>,
    /// Controls the log filter; `None` disables `PUT /admin/log-level`.
    pub log: Option<LogHandle>,
    /// When the process started, for `uptime_seconds`.
    pub started: Instant,
    /// Who may fetch `/debug/pprof/*`; `None` disables those routes.
    pub profiling: Option<AdminAccess>,
    /// Who may call the mutating routes (`PUT /admin/log-level`).
    pub access: AdminAccess,
}

type Shared = State<Arc<AdminState>>;

/// `/debug/pprof/profile` without `seconds`: Go's default.
const DEFAULT_CPU_SECONDS: u64 = 30;

/// Builds the admin router over `state`.
pub fn router(state: AdminState) -> Router {
    router_with(state, Router::new(), "")
}

/// The admin router plus `extra` routes another component serves on the admin listener (the alert
/// engine's `/admin/alerts*`); `extra_help` is appended to the 404 route list.
pub fn router_with(state: AdminState, extra: Router, extra_help: &str) -> Router {
    let help = format!("{ROUTES}{extra_help}");
    let state = Arc::new(state);
    let dashboard = dashboard::router(state.clone());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/summary", get(summary))
        .route("/health", get(health))
        .route("/healthz", get(health))
        .route("/readiness", get(readiness))
        .route("/readyz", get(readiness))
        .route("/liveness", get(liveness))
        .route("/livez", get(liveness))
        .route("/admin/log-level", get(get_log_level).put(put_log_level))
        .route("/admin/traces", get(recent::traces))
        .route("/admin/logs", get(recent::logs))
        .route("/debug/pprof/profile", get(cpu_profile))
        .route("/debug/pprof/heap", get(heap_profile))
        .with_state(state)
        .merge(dashboard)
        .merge(extra)
        .fallback(move || {
            let help = help.clone();
            async move { (StatusCode::NOT_FOUND, help) }
        })
}

async fn metrics(State(state): Shared, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok());
    let format = Exposition::negotiate(accept);
    let registry = state.registry.clone();
    // Encoding a large registry takes milliseconds: keep it off the executor that paces audio.
    let encoded = tokio::task::spawn_blocking(move || exposition::encode(&registry, format)).await;
    match encoded {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Ok(Err(error)) => {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "Encoding /metrics failed."
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Encoding the metrics failed.\n",
            )
                .into_response()
        }
        Err(error) => {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "The /metrics encoder task failed."
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Encoding the metrics failed.\n",
            )
                .into_response()
        }
    }
}

async fn summary(State(state): Shared) -> Response {
    axum::Json(summary_body(&state)).into_response()
}

/// The body of `/metrics/summary`; the dashboard streams the same object.
pub(crate) fn summary_body(state: &AdminState) -> Value {
    let uptime = state.started.elapsed().as_secs_f64();
    match (state.summary)() {
        Value::Object(mut object) => {
            object.entry("uptime_seconds").or_insert(json!(uptime));
            Value::Object(object)
        }
        other => json!({ "summary": other, "uptime_seconds": uptime }),
    }
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn heartbeat_json(heartbeat: &Heartbeat) -> Value {
    json!({
        "alive": heartbeat.is_alive(),
        "age_seconds": heartbeat.age().as_secs_f64(),
        "max_age_seconds": heartbeat.max_age().as_secs_f64(),
    })
}

async fn health(State(state): Shared) -> Response {
    let (all_ok, body) = health_body(&state);
    (status(all_ok), axum::Json(body)).into_response()
}

/// The body of `/health` and whether every check and heartbeat passed; the dashboard streams the same.
pub(crate) fn health_body(state: &AdminState) -> (bool, Value) {
    let mut all_ok = true;
    let mut checks = Map::new();
    for check in &state.checks {
        let result = check.check();
        all_ok &= result.ok;
        checks.insert(
            check.name().to_owned(),
            json!({
                "ok": result.ok,
                "detail": result.detail,
                "required_for_readiness": check.required_for_readiness(),
            }),
        );
    }
    let mut heartbeats = Map::new();
    for heartbeat in &state.heartbeats {
        all_ok &= heartbeat.is_alive();
        heartbeats.insert(heartbeat.name().to_owned(), heartbeat_json(heartbeat));
    }
    let body = json!({
        "status": if all_ok { "ok" } else { "failing" },
        "checks": checks,
        "heartbeats": heartbeats,
    });
    (all_ok, body)
}

async fn readiness(State(state): Shared) -> Response {
    let mut checks = Map::new();
    let mut failing = Vec::new();
    for check in state.checks.iter().filter(|check| check.required_for_readiness()) {
        let result = check.check();
        if !result.ok {
            failing.push(check.name().to_owned());
        }
        checks.insert(
            check.name().to_owned(),
            json!({ "ok": result.ok, "detail": result.detail }),
        );
    }
    let ready = failing.is_empty();
    let mut body = json!({ "ready": ready, "checks": checks });
    if !ready {
        body["failing"] = json!(failing);
    }
    (status(ready), axum::Json(body)).into_response()
}

async fn liveness(State(state): Shared) -> Response {
    let mut heartbeats = Map::new();
    let mut stale = Vec::new();
    for heartbeat in &state.heartbeats {
        if !heartbeat.is_alive() {
            stale.push(json!({
                "name": heartbeat.name(),
                "age_seconds": heartbeat.age().as_secs_f64(),
                "max_age_seconds": heartbeat.max_age().as_secs_f64(),
            }));
        }
        heartbeats.insert(heartbeat.name().to_owned(), heartbeat_json(heartbeat));
    }
    let alive = stale.is_empty();
    let mut body = json!({ "alive": alive, "heartbeats": heartbeats });
    if !alive {
        body["stale"] = json!(stale);
    }
    (status(alive), axum::Json(body)).into_response()
}

const NO_LOG_HANDLE: &str = "Log level control is not configured in this process.\n";

async fn get_log_level(State(state): Shared) -> Response {
    match &state.log {
        Some(log) => format!("{}\n", log.current_filter()).into_response(),
        None => (StatusCode::NOT_IMPLEMENTED, NO_LOG_HANDLE).into_response(),
    }
}

async fn put_log_level(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    if let Err(refusal) = state.access.authorize(&headers) {
        return refusal.into_response();
    }
    let Some(log) = &state.log else {
        return (StatusCode::NOT_IMPLEMENTED, NO_LOG_HANDLE).into_response();
    };
    match log.set_filter(&body) {
        Ok(()) => {
            let filter = log.current_filter();
            tracing::info!(filter = %filter, "Log filter changed through the admin API.");
            format!("{filter}\n").into_response()
        }
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
        }
    }
}

const PROFILING_DISABLED: &str = "Profiling is disabled in this process. Restart it with \
    ENABLE_PROFILING=true (or `enabled = true` in the profiling configuration) to serve /debug/pprof/*.\n";
/// Query of `/debug/pprof/profile`; the names are Go's.
#[derive(Debug, Deserialize)]
struct CpuProfileQuery {
    seconds: Option<u64>,
    frequency: Option<i32>,
    format: Option<String>,
}

/// Checks [`AdminState::profiling`] against the request: the refusal, if any (404 when profiling is
/// off, else the admin rule's).
fn authorize(access: Option<&AdminAccess>, headers: &HeaderMap) -> Option<Response> {
    let Some(access) = access else {
        return Some((StatusCode::NOT_FOUND, PROFILING_DISABLED).into_response());
    };
    access.authorize(headers).err().map(IntoResponse::into_response)
}

fn pprof_response(bytes: Vec<u8>, file_name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// The one place a [`ProfilingError`] becomes an HTTP answer.
fn profiling_error(error: &ProfilingError) -> Response {
    match error {
        ProfilingError::Busy => (
            StatusCode::CONFLICT,
            "A CPU profile is already being taken (only one runs at a time); try again when it ends.\n",
        )
            .into_response(),
        ProfilingError::HeapUnavailable(why) => {
            (StatusCode::NOT_IMPLEMENTED, format!("{why}\n")).into_response()
        }
        _ => {
            tracing::error!(
                error = error as &dyn std::error::Error,
                "Taking a profile failed."
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Taking the profile failed; the server log has the detail.\n",
            )
                .into_response()
        }
    }
}

async fn cpu_profile(
    State(state): Shared,
    headers: HeaderMap,
    Query(query): Query<CpuProfileQuery>,
) -> Response {
    if let Some(refusal) = authorize(state.profiling.as_ref(), &headers) {
        return refusal;
    }
    let flamegraph = match query.format.as_deref() {
        None | Some("pprof" | "proto") => false,
        Some("flamegraph" | "svg") => true,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("Unknown format {other:?}: use pprof (the default) or flamegraph.\n"),
            )
                .into_response();
        }
    };
    let seconds = query.seconds.unwrap_or(DEFAULT_CPU_SECONDS);
    let frequency = query.frequency.unwrap_or(DEFAULT_FREQUENCY_HZ);
    match profiling::cpu_profile(seconds, frequency).await {
        Ok(profile) if flamegraph => {
            ([(header::CONTENT_TYPE, "image/svg+xml")], profile.flamegraph_svg).into_response()
        }
        Ok(profile) => pprof_response(profile.pprof_gz, "cpu.pb.gz"),
        Err(error) => profiling_error(&error),
    }
}

async fn heap_profile(State(state): Shared, headers: HeaderMap) -> Response {
    if let Some(refusal) = authorize(state.profiling.as_ref(), &headers) {
        return refusal;
    }
    match profiling::heap_profile().await {
        Ok(bytes) => pprof_response(bytes, "heap.pb.gz"),
        Err(error) => profiling_error(&error),
    }
}

#[cfg(test)]
mod tests;
