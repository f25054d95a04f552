//! ttsd's WebSocket front end.
//!
//! Routes on the public listener:
//! - `GET /v1/stream` (WebSocket): the streaming protocol in `docs/protocol.md`;
//! - `GET /` (WebSocket): the same session, speaking only the original protocol's messages
//!   (`session_start`, `audio`, `session_end`, `error`), for clients written against it;
//! - `GET /v1/voices`, `GET /v1/audio/voices`: the voices this server can speak with;
//! - `POST /v1/audio/speech`, `GET /v1/models`: the OpenAI-compatible speech API (`docs/http-api.md`).
//!
//! With API keys configured ([`ApiAuth`]) every route needs one (`docs/protocol.md`, "Authentication").
//!
//! [`wyoming::run`] serves the Wyoming protocol (`docs/wyoming.md`) on its own listener.
//!
//! Each session is two tasks: a reader that parses and checks messages, and a driver that segments text,
//! feeds the engine pool one chunk at a time, frames, paces at 20 ms and writes. The gateway does not run
//! engines (that is `tts_core::pool`) and does not serve metrics or probes (the admin server does).

mod admission;
pub mod alerting;
mod auth;
pub mod config;
mod metrics;
mod openai;
pub mod protocol;
mod session;
pub mod slo;
mod synth;
mod utterance;
pub mod workers;
pub mod wyoming;

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tts_core::voices::{VoiceCatalog, VoiceInfo};

pub use admission::{EngineHeadroom, Estimate, Metered};
pub use auth::{ApiAuth, ApiKeys};
pub use config::GatewayConfig;
pub use metrics::{EngineWindows, GatewayMetrics, MetricsLevel, Windows};
pub use protocol::{BINARY_HEADER_BYTES, Command, Encoding, ErrorCode};
pub use slo::SloConfig;
pub use synth::Synthesizer;

use admission::Admission;
use session::SessionRequest;

/// Everything sessions share.
pub struct GatewayState {
    config: GatewayConfig,
    catalog: Arc<VoiceCatalog>,
    pool: Arc<dyn Synthesizer>,
    default_voice: Arc<VoiceInfo>,
    admission: Admission,
    shutdown: watch::Receiver<bool>,
    /// True once the server drains ([`Gateway::drain`]): no new session or utterance is admitted, open
    /// utterances play to their end, and idle sessions end.
    drain: watch::Sender<bool>,
    metrics: Arc<GatewayMetrics>,
    auth: ApiAuth,
}

impl GatewayState {
    pub(crate) fn draining(&self) -> bool {
        *self.drain.borrow()
    }
}

/// The gateway, ready to be served.
#[derive(Clone)]
pub struct Gateway {
    state: Arc<GatewayState>,
}

/// Why the gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid gateway configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error(transparent)]
    UnknownVoice(#[from] tts_core::voices::UnknownVoice),
}

impl Gateway {
    /// `shutdown` flips to true when sessions should end (`session_end` with reason `server_shutdown`);
    /// `auth` says which API keys the public routes need (none by default).
    pub fn new(
        config: GatewayConfig,
        catalog: Arc<VoiceCatalog>,
        pool: Arc<dyn Synthesizer>,
        default_voice: &str,
        shutdown: watch::Receiver<bool>,
        metrics: Arc<GatewayMetrics>,
        auth: ApiAuth,
    ) -> Result<Self, GatewayError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(GatewayError::Config(problems));
        }
        let default_voice = Arc::new(catalog.get(default_voice)?.clone());
        let unknown: Vec<String> = config
            .openai_voices
            .iter()
            .filter(|(_, id)| catalog.get(id).is_err())
            .map(|(name, id)| format!("gateway.openai_voices.{name} names {id:?}, which is not installed"))
            .collect();
        if !unknown.is_empty() {
            return Err(GatewayError::Config(unknown));
        }
        Ok(Self {
            state: Arc::new(GatewayState {
                admission: Admission::new(config.max_sessions),
                config,
                catalog,
                pool,
                default_voice,
                shutdown,
                drain: watch::Sender::new(false),
                metrics,
                auth,
            }),
        })
    }

    /// Admits new sessions, requests and syntheses only while `headroom` says the engines can keep one
    /// more real time (`gateway.admission_max_utilisation`), besides `max_sessions`. Give it the
    /// synthesizer [`EngineHeadroom::meter`] returned, so that it learns what chunks cost.
    pub fn with_headroom(self, headroom: Arc<EngineHeadroom>) -> Self {
        self.state.admission.set_headroom(headroom);
        self
    }

    /// Sessions open right now (HTTP speech requests and Wyoming syntheses included).
    pub fn active_sessions(&self) -> usize {
        self.state.admission.active()
    }

    /// Starts draining for a graceful shutdown: new sessions, requests and utterances are refused (a
    /// WebSocket client gets `OVERLOADED` and `session_end` `server_shutdown`), utterances already open
    /// play to their end, and each session ends (`server_shutdown`) once it has nothing left to play.
    pub fn drain(&self) {
        self.state.drain.send_replace(true);
    }

    /// Whether [`Gateway::drain`] was called: readiness should fail from then on.
    pub fn is_draining(&self) -> bool {
        self.state.draining()
    }

    pub fn default_voice(&self) -> &VoiceInfo {
        &self.state.default_voice
    }

    /// The public router.
    pub fn router(&self) -> Router {
        // Only the WebSocket routes: the HTTP ones answer a refusal in OpenAI's error shape themselves.
        let websocket = Router::new()
            .route("/v1/stream", get(stream))
            .route("/", get(legacy_stream))
            .route_layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                auth::ws_guard,
            ));
        Router::new()
            .merge(websocket)
            .route("/v1/voices", get(voices))
            .route("/v1/audio/voices", get(voices))
            .route("/v1/audio/speech", post(openai::speech))
            .route("/v1/models", get(openai::models))
            .with_state(self.state.clone())
    }
}

/// Serves `gateway` on `listener` until `shutdown` resolves, then waits for open connections to end.
pub async fn run(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Frames are small writes 20 ms apart: without TCP_NODELAY, Nagle's algorithm holds each one until the
    // previous is acknowledged, and the client's delayed ACK turns that into 40 ms stalls.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(error = %error, "Cannot set TCP_NODELAY; frames may be delayed.");
        }
    });
    axum::serve(listener, gateway.router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// The upgrade's query. `token` (an API key) is read by [`auth::ws_guard`], never here, so it cannot end
/// up in a log line.
#[derive(Debug, Deserialize)]
struct StreamParams {
    voice: Option<String>,
    encoding: Option<String>,
    /// W3C trace context, for clients that cannot set headers on the upgrade request.
    traceparent: Option<String>,
}

async fn stream(
    ws: WebSocketUpgrade,
    State(state): State<Arc<GatewayState>>,
    Query(params): Query<StreamParams>,
    headers: axum::http::HeaderMap,
) -> Response {
    upgrade(ws, state, with_header_traceparent(params, &headers), false)
}

/// The `traceparent` header wins over the query parameter.
fn with_header_traceparent(mut params: StreamParams, headers: &axum::http::HeaderMap) -> StreamParams {
    if let Some(value) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        params.traceparent = Some(value.to_owned());
    }
    params
}

async fn legacy_stream(
    ws: WebSocketUpgrade,
    State(state): State<Arc<GatewayState>>,
    Query(params): Query<StreamParams>,
    headers: axum::http::HeaderMap,
) -> Response {
    upgrade(ws, state, with_header_traceparent(params, &headers), true)
}

fn upgrade(ws: WebSocketUpgrade, state: Arc<GatewayState>, params: StreamParams, legacy: bool) -> Response {
    let encoding = match params.encoding.as_deref() {
        None | Some("base64") => Encoding::Base64,
        Some("binary") => Encoding::Binary,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("encoding must be base64 or binary, not {other:?}\n"),
            )
                .into_response();
        }
    };
    let voice = match params.voice.as_deref() {
        None => Ok(state.default_voice.clone()),
        Some(id) => state.catalog.get(id).map(|v| Arc::new(v.clone())),
    };
    // Messages past our own limit are still read, so the client gets MESSAGE_TOO_LARGE and can go on;
    // only messages far past it are cut off by the WebSocket layer.
    let hard_limit = state.config.max_message_bytes.saturating_mul(8);
    ws.max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            session::run(
                socket,
                state,
                SessionRequest {
                    voice,
                    encoding,
                    legacy,
                    traceparent: params.traceparent,
                },
            )
        })
}

#[derive(serde::Serialize)]
struct VoiceList<'a> {
    default: &'a str,
    voices: Vec<&'a VoiceInfo>,
    /// OpenAI voice names and the voice each speaks with.
    aliases: std::collections::BTreeMap<String, String>,
}

async fn voices(State(state): State<Arc<GatewayState>>, headers: axum::http::HeaderMap) -> Response {
    if let Err(error) = openai::authorize(&state, &headers) {
        return error.into_response();
    }
    Json(VoiceList {
        default: &state.default_voice.id,
        voices: state.catalog.iter().collect(),
        aliases: openai::voice_aliases(&state),
    })
    .into_response()
}
