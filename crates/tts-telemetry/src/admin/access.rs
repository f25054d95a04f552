//! Who may call the admin port's guarded routes, and how credentials are compared and counted.
//!
//! One rule covers the whole admin port ([`AdminAccess`]): when a token is configured every guarded
//! request must carry `Authorization: Bearer <token>` (401 otherwise, on loopback too); without a token
//! the guarded routes serve a loopback-only listener and answer 403 on any other. The guarded routes are
//! the mutating ones (`PUT /admin/log-level`, alert actions, model load and unload) and the profiles.
//!
//! [`AuthMetrics`] counts every check of every surface (`ws`, `http`, `admin`, `grpc`) by outcome;
//! [`constant_time_eq`] is the one comparison of secrets.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;

/// Where a credential was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthSurface {
    /// The public WebSocket upgrade.
    Ws,
    /// The public HTTP API (OpenAI-compatible routes).
    Http,
    /// The admin port's guarded routes.
    Admin,
    /// A worker's gRPC calls from gateways (the shared worker token).
    Grpc,
}

/// What a credential check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthOutcome {
    /// A valid credential.
    Ok,
    /// No credential (or, on the admin port, none configured for a non-loopback listener).
    Missing,
    /// A credential that matches no key.
    Invalid,
}

impl AuthSurface {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Http => "http",
            Self::Admin => "admin",
            Self::Grpc => "grpc",
        }
    }
}

impl AuthOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuthLabels {
    surface: &'static str,
    outcome: &'static str,
}

impl AuthLabels {
    fn new(surface: AuthSurface, outcome: AuthOutcome) -> Self {
        Self {
            surface: surface.as_str(),
            outcome: outcome.as_str(),
        }
    }
}

/// `tts_auth_requests_total{surface,outcome}`, every label pair registered at 0.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    requests: Family<AuthLabels, Counter>,
}

impl AuthMetrics {
    /// Registers the counter and creates each series at 0.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "tts_auth_requests",
            "Credential checks (API keys, admin token, worker token) by surface and outcome",
            metrics.requests.clone(),
        );
        for surface in [
            AuthSurface::Ws,
            AuthSurface::Http,
            AuthSurface::Admin,
            AuthSurface::Grpc,
        ] {
            for outcome in [AuthOutcome::Ok, AuthOutcome::Missing, AuthOutcome::Invalid] {
                let _ = metrics.requests.get_or_create(&AuthLabels::new(surface, outcome));
            }
        }
        metrics
    }

    /// Counts one check.
    pub fn record(&self, surface: AuthSurface, outcome: AuthOutcome) {
        self.requests
            .get_or_create(&AuthLabels::new(surface, outcome))
            .inc();
    }
}

/// Compares a presented secret with the expected one without stopping at the first difference: the
/// time taken depends on the presented length only, never on where the two differ or on the expected
/// length.
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len() || expected.is_empty());
    for (index, byte) in presented.iter().enumerate() {
        // Cycling through `expected` keeps the loop's work independent of its length.
        let want = expected.get(index % expected.len().max(1)).copied().unwrap_or(0);
        diff |= byte ^ want;
    }
    std::hint::black_box(diff) == 0
}

/// The bearer credential of a request: `Authorization: Bearer <token>`, if present.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The access rule of the admin port's guarded routes.
#[derive(Clone, Default)]
pub struct AdminAccess {
    /// The admin bearer token, when configured. Never logged.
    pub token: Option<String>,
    /// Whether the admin listener accepts loopback connections only.
    pub loopback_only: bool,
    metrics: Option<AuthMetrics>,
}

/// Shows whether a token is set, never the token.
impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("loopback_only", &self.loopback_only)
            .finish()
    }
}

/// Why a guarded admin request is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// A token is configured and the request carries none: 401.
    MissingToken,
    /// A token is configured and the request's does not match: 401.
    InvalidToken,
    /// No token is configured and the listener is not loopback-only: 403.
    NoTokenConfigured,
}

impl AdminRefusal {
    fn outcome(self) -> AuthOutcome {
        match self {
            Self::InvalidToken => AuthOutcome::Invalid,
            Self::MissingToken | Self::NoTokenConfigured => AuthOutcome::Missing,
        }
    }
}

const NEEDS_TOKEN: &str = "This admin route on a listener that is not loopback-only needs a token: set \
    server.admin_token_file (for profiles also PROFILE_TOKEN), or bind the admin listener to 127.0.0.1.";

impl IntoResponse for AdminRefusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::NoTokenConfigured => (StatusCode::FORBIDDEN, NEEDS_TOKEN),
            Self::MissingToken => (
                StatusCode::UNAUTHORIZED,
                "Missing admin token: this route needs Authorization: Bearer <admin token>.",
            ),
            Self::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "Invalid admin token: the Authorization: Bearer token does not match.",
            ),
        };
        let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl AdminAccess {
    /// A rule from its parts.
    pub fn new(token: Option<String>, loopback_only: bool) -> Self {
        Self {
            token,
            loopback_only,
            metrics: None,
        }
    }

    /// Rules for an admin listener bound to `admin`.
    pub fn for_listener(admin: SocketAddr, token: Option<String>) -> Self {
        Self::new(token, admin.ip().is_loopback())
    }

    /// Counts every check under `surface="admin"`.
    #[must_use]
    pub fn counted(mut self, metrics: &AuthMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Checks a guarded request (a mutation or a profile): a configured token is always required and
    /// compared in constant time; without one only a loopback-only listener serves.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), AdminRefusal> {
        let verdict = self.verdict(headers);
        if let Some(metrics) = &self.metrics {
            let outcome = verdict.err().map_or(AuthOutcome::Ok, AdminRefusal::outcome);
            metrics.record(AuthSurface::Admin, outcome);
        }
        verdict
    }

    fn verdict(&self, headers: &HeaderMap) -> Result<(), AdminRefusal> {
        let Some(token) = &self.token else {
            return if self.loopback_only {
                Ok(())
            } else {
                Err(AdminRefusal::NoTokenConfigured)
            };
        };
        match bearer(headers) {
            None => Err(AdminRefusal::MissingToken),
            Some(offered) if constant_time_eq(offered.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(AdminRefusal::InvalidToken),
        }
    }
}

/// Middleware guarding every route of a router with [`AdminAccess::authorize`]:
/// `router.route_layer(axum::middleware::from_fn_with_state(access, admin_guard))`.
pub async fn admin_guard(State(access): State<AdminAccess>, request: Request, next: Next) -> Response {
    match access.authorize(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}
