//! The alert routes of the admin listener, as a router the host merges into its admin router.
//!
//! | Method | Path | Answer |
//! |---|---|---|
//! | GET | `/admin/alerts` | `{"active":[…],"history":[…]}`: pending and firing alerts, then resolved ones, oldest first. |
//! | POST | `/admin/alerts/{id}/ack` | Body `{"who":"…","why":"…"}`. 200 with the alert; 404 unknown id; 409 already resolved; 400 bad body. |
//! | POST | `/admin/alerts/{id}/resolve` | Optional body `{"who":"…"}`. 200 with the resolved alert; 404; 409. |
//! | GET | `/admin/alerts/thresholds` | Every threshold rule: signal, scope filter, direction, levels, `for_seconds`. |
//! | PUT | `/admin/alerts/thresholds` | Body `{"Rule":{"warning":{"trigger":…,"clear":…},…,"for_seconds":…},…}`: replaces those rules' thresholds, all or none; 400 lists every problem. |
//! | GET | `/admin/export` | One JSON document: alerts, history, thresholds, baselines, and the host's sections. |
//!
//! POST and PUT follow the admin port's rule ([`tts_telemetry::AdminAccess`]): a configured token is
//! always required (`Authorization: Bearer <token>`; 401 naming the missing or invalid token); without
//! one they serve only a loopback-only listener and answer 403 on any other.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{AlertError, Engine, Thresholds};

/// Lines for the admin router's 404 help text.
pub const ROUTES: &str = "\
  GET  /admin/alerts      active alerts and recent history (JSON)
  POST /admin/alerts/{id}/ack      acknowledge (body: {\"who\":..,\"why\":..})
  POST /admin/alerts/{id}/resolve  resolve by hand
  GET  /admin/alerts/thresholds    threshold rules
  PUT  /admin/alerts/thresholds    replace thresholds (JSON; every problem listed)
  GET  /admin/export      alerts, history, thresholds, baselines and metrics as one JSON document
";

/// Builds one section of `/admin/export`.
pub type Section = Arc<dyn Fn() -> Value + Send + Sync>;

/// Who may call the mutating routes: the admin port's one rule.
use tts_telemetry::AdminAccess;

struct AppState {
    engine: Arc<Engine>,
    access: AdminAccess,
    sections: Vec<(String, Section)>,
}

type Shared = State<Arc<AppState>>;

/// The routes, over `engine`; `sections` are added to `/admin/export` under their names.
pub fn router(engine: Arc<Engine>, access: AdminAccess, sections: Vec<(String, Section)>) -> Router {
    let state = Arc::new(AppState {
        engine,
        access,
        sections,
    });
    Router::new()
        .route("/admin/alerts", get(list))
        .route("/admin/alerts/thresholds", get(thresholds).put(put_thresholds))
        .route("/admin/alerts/{id}/ack", post(ack))
        .route("/admin/alerts/{id}/resolve", post(resolve))
        .route("/admin/export", get(export))
        .with_state(state)
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn alerts_json(engine: &Engine) -> Value {
    json!({
        "active": engine.active(),
        "history": engine.history(),
    })
}

async fn list(State(state): Shared) -> Response {
    axum::Json(alerts_json(&state.engine)).into_response()
}

async fn thresholds(State(state): Shared) -> Response {
    axum::Json(state.engine.thresholds()).into_response()
}

async fn put_thresholds(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    if let Err(refusal) = state.access.authorize(&headers) {
        return refusal.into_response();
    }
    let updates: BTreeMap<String, Thresholds> = match serde_json::from_str(&body) {
        Ok(updates) => updates,
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("The body is not a thresholds document: {error}."),
            );
        }
    };
    match state.engine.set_thresholds(&updates) {
        Ok(()) => axum::Json(state.engine.thresholds()).into_response(),
        Err(AlertError::Invalid(problems)) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "Invalid thresholds; nothing was changed.", "problems": problems })),
        )
            .into_response(),
        Err(error) => problem(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    who: String,
    why: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    #[serde(default)]
    who: Option<String>,
}

/// 404 for an unknown id, 409 for one already resolved.
fn not_active(engine: &Engine, id: &str) -> Response {
    match id.parse::<u64>() {
        Ok(id) if engine.known(id) => {
            problem(StatusCode::CONFLICT, format!("Alert {id} is already resolved."))
        }
        _ => problem(StatusCode::NOT_FOUND, format!("No alert with id {id}.")),
    }
}

async fn ack(State(state): Shared, Path(id): Path<String>, headers: HeaderMap, body: String) -> Response {
    if let Err(refusal) = state.access.authorize(&headers) {
        return refusal.into_response();
    }
    let body: AckBody = match serde_json::from_str(&body) {
        Ok(body) => body,
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("The body must be {{\"who\":\"…\",\"why\":\"…\"}}: {error}."),
            );
        }
    };
    if body.who.trim().is_empty() {
        return problem(StatusCode::BAD_REQUEST, "`who` must not be empty.");
    }
    let Ok(numeric) = id.parse::<u64>() else {
        return not_active(&state.engine, &id);
    };
    match state.engine.ack(numeric, &body.who, &body.why) {
        Ok(view) => axum::Json(view).into_response(),
        Err(_) => not_active(&state.engine, &id),
    }
}

async fn resolve(State(state): Shared, Path(id): Path<String>, headers: HeaderMap, body: String) -> Response {
    if let Err(refusal) = state.access.authorize(&headers) {
        return refusal.into_response();
    }
    let body: ResolveBody = if body.trim().is_empty() {
        ResolveBody::default()
    } else {
        match serde_json::from_str(&body) {
            Ok(body) => body,
            Err(error) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    format!("The body must be empty or {{\"who\":\"…\"}}: {error}."),
                );
            }
        }
    };
    let Ok(numeric) = id.parse::<u64>() else {
        return not_active(&state.engine, &id);
    };
    let who = body.who.unwrap_or_else(|| "admin-api".to_owned());
    match state.engine.resolve(numeric, &who) {
        Ok(view) => axum::Json(view).into_response(),
        Err(_) => not_active(&state.engine, &id),
    }
}

async fn export(State(state): Shared) -> Response {
    let mut document = Map::new();
    document.insert(
        "generated_at".into(),
        json!(crate::rfc3339(std::time::SystemTime::now())),
    );
    document.insert("alerts".into(), alerts_json(&state.engine));
    document.insert("thresholds".into(), json!(state.engine.thresholds()));
    document.insert("baselines".into(), state.engine.baselines());
    for (name, section) in &state.sections {
        document.insert(name.clone(), section());
    }
    axum::Json(Value::Object(document)).into_response()
}

#[cfg(test)]
mod tests;
