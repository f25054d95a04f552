//! The admin HTTP router: metrics, health, readiness, liveness and the live log level.
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
//! | PUT | `/admin/log-level` | Body: a filter (`debug`, `info,tts_gateway=debug`). 200 with the new filter, 400 with the parse error, 501 when the process has no [`LogHandle`]. |
//!
//! Anything else is a 404 whose body lists these routes. The router is a value: serve it on its own
//! listener (the admin port), never on the public one.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};

use crate::exposition::{self, Exposition};
use crate::heartbeat::Heartbeat;
use crate::logging::LogHandle;

const ROUTES: &str = "\
Admin routes:
  GET /metrics            Prometheus text 0.0.4, or OpenMetrics with Accept: application/openmetrics-text
  GET /metrics/summary    JSON summary
  GET /health  /healthz   all checks and heartbeats
  GET /readiness /readyz  readiness-required checks
  GET /liveness /livez    heartbeats
  GET /admin/log-level    current log filter
  PUT /admin/log-level    set the log filter (body: e.g. info,tts_gateway=debug)
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
}

type Shared = State<Arc<AdminState>>;

/// Builds the admin router over `state`.
pub fn router(state: AdminState) -> Router {
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
        .fallback(|| async { (StatusCode::NOT_FOUND, ROUTES) })
        .with_state(Arc::new(state))
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
    let uptime = state.started.elapsed().as_secs_f64();
    let body = match (state.summary)() {
        Value::Object(mut object) => {
            object.entry("uptime_seconds").or_insert(json!(uptime));
            Value::Object(object)
        }
        other => json!({ "summary": other, "uptime_seconds": uptime }),
    };
    axum::Json(body).into_response()
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
    (status(all_ok), axum::Json(body)).into_response()
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

async fn put_log_level(State(state): Shared, body: String) -> Response {
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

#[cfg(test)]
mod tests;
