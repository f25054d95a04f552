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
//! POST and PUT need `Authorization: Bearer <token>` unless the admin listener is loopback-only:
//! 401 for a missing or wrong token, 403 when no token is configured on a non-loopback listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
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

/// Who may call the mutating routes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The admin bearer token, when configured.
    pub token: Option<String>,
    /// Whether the admin listener accepts loopback connections only; then no token is needed.
    pub loopback_only: bool,
}

/// Shows whether a token is set, never the token.
impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("loopback_only", &self.loopback_only)
            .finish()
    }
}

impl Access {
    /// Rules for an admin listener bound to `admin`.
    pub fn for_listener(admin: SocketAddr, token: Option<String>) -> Self {
        Self {
            token,
            loopback_only: admin.ip().is_loopback(),
        }
    }
}

struct AppState {
    engine: Arc<Engine>,
    access: Access,
    sections: Vec<(String, Section)>,
}

type Shared = State<Arc<AppState>>;

/// The routes, over `engine`; `sections` are added to `/admin/export` under their names.
pub fn router(engine: Arc<Engine>, access: Access, sections: Vec<(String, Section)>) -> Router {
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

/// Why a mutating request is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NeedsToken,
    Unauthorized,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::NeedsToken => problem(
                StatusCode::FORBIDDEN,
                "Changing alerts on an admin listener that is not loopback-only needs a token: set \
                 server.admin_token_file, or bind the admin listener to 127.0.0.1.",
            ),
            Self::Unauthorized => {
                let mut response = problem(
                    StatusCode::UNAUTHORIZED,
                    "This route needs Authorization: Bearer <admin token>.",
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                response
            }
        }
    }
}

fn authorize(access: &Access, headers: &HeaderMap) -> Result<(), Refusal> {
    if access.loopback_only {
        return Ok(());
    }
    let token = access.token.as_ref().ok_or(Refusal::NeedsToken)?;
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match offered {
        Some(offered) if constant_time_eq(offered.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(Refusal::Unauthorized),
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
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
    if let Err(refusal) = authorize(&state.access, &headers) {
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
    if let Err(refusal) = authorize(&state.access, &headers) {
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
    if let Err(refusal) = authorize(&state.access, &headers) {
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
