//! One WebSocket session: admission, `session_start`, then a reader task and a driver task.

mod driver;
mod pacer;
mod reader;
mod replies;
mod utterances;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;
use tts_core::audio::{FRAME_MS, OUTPUT_SAMPLE_RATE};
use tts_core::pool::CancelSource;
use tts_core::voices::{UnknownVoice, VoiceInfo};

use crate::GatewayState;
pub(crate) use crate::admission::OwnedPermit;
use crate::admission::RefusedBy;
use crate::metrics::{Endpoint, MessageOut};
use crate::protocol::{Encoding, ServerMessage, SessionError};
use driver::{Driver, DriverParts};

/// Every `session_end` reason a session can end with, including those never sent (the client is gone).
pub(crate) const END_REASONS: [&str; 6] = [
    "client_closed",
    "idle_timeout",
    "max_duration",
    "too_many_errors",
    "slow_client",
    "server_shutdown",
];

/// How the client asked to be served.
pub(crate) struct SessionRequest {
    pub(crate) voice: Result<Arc<VoiceInfo>, UnknownVoice>,
    pub(crate) encoding: Encoding,
    /// Connected at `/`: speak only the original protocol's messages.
    pub(crate) legacy: bool,
    /// W3C `traceparent` to join the client's trace.
    pub(crate) traceparent: Option<String>,
}

static SESSION_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `ws-` and 12 hex digits, unpredictable enough that ids do not leak session counts.
fn new_session_id() -> Arc<str> {
    new_request_id("ws")
}

/// `<prefix>-` and 12 hex digits (`ws-…`, `http-…`, `wyoming-…`).
pub(crate) fn new_request_id(prefix: &str) -> Arc<str> {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(SESSION_COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{prefix}-{:012x}", hasher.finish() & 0xffff_ffff_ffff).into()
}

/// Why a session is refused before `session_start`.
struct Refusal {
    error: SessionError,
    /// The `session_end` reason the client reads.
    end_reason: &'static str,
    /// The `tts_sessions_refused_total` reason.
    counted_as: &'static str,
}

/// Refuses the session: an `error`, `session_end` and a close, each counted.
async fn refuse(
    sink: &mut SplitSink<WebSocket, Message>,
    state: &GatewayState,
    session_id: &str,
    refusal: Refusal,
) {
    let code = refusal.error.code();
    let error = ServerMessage::Error {
        code,
        message: &refusal.error.to_string(),
    }
    .to_json();
    let end = ServerMessage::SessionEnd {
        session_id,
        reason: refusal.end_reason,
    }
    .to_json();
    state.metrics.session_refused(refusal.counted_as);
    state.metrics.error_sent(code);
    state.metrics.message_sent(MessageOut::SessionEnd);
    let _ = sink.send(Message::Text(error.into())).await;
    let _ = sink.send(Message::Text(end.into())).await;
    let _ = sink.send(Message::Close(None)).await;
}

pub(crate) async fn run(socket: WebSocket, state: Arc<GatewayState>, request: SessionRequest) {
    let session_id = new_session_id();
    let endpoint = if request.legacy {
        Endpoint::Legacy
    } else {
        Endpoint::V1
    };
    state.metrics.connection(endpoint);
    let (mut sink, stream) = socket.split();
    if state.draining() {
        tracing::info!(session_id = %session_id, "Refused a session: the server is draining.");
        let refusal = Refusal {
            error: SessionError::ShuttingDown,
            end_reason: "server_shutdown",
            counted_as: "draining",
        };
        return refuse(&mut sink, &state, &session_id, refusal).await;
    }
    let _permit = match state.admission.try_acquire() {
        Ok(permit) => permit,
        Err(refused) => {
            let error = match refused {
                RefusedBy::MaxSessions => SessionError::AtSessionLimit(state.admission.max()),
                RefusedBy::EngineHeadroom => SessionError::NoEngineHeadroom,
            };
            tracing::warn!(session_id = %session_id, limit = refused.as_str(), "Refused a session: at an admission limit.");
            let refusal = Refusal {
                error,
                end_reason: "overloaded",
                counted_as: "overloaded",
            };
            return refuse(&mut sink, &state, &session_id, refusal).await;
        }
    };
    let voice = match request.voice {
        Ok(voice) => voice,
        Err(unknown) => {
            let refusal = Refusal {
                error: SessionError::UnknownVoice(unknown),
                end_reason: "unknown_voice",
                counted_as: "unknown_voice",
            };
            return refuse(&mut sink, &state, &session_id, refusal).await;
        }
    };
    let start = ServerMessage::SessionStart {
        session_id: &session_id,
        sample_rate: OUTPUT_SAMPLE_RATE,
        frame_ms: FRAME_MS,
        voice: &voice.id,
        encoding: request.encoding,
    }
    .to_json();
    if sink.send(Message::Text(start.into())).await.is_err() {
        return;
    }
    state.metrics.message_sent(MessageOut::SessionStart);
    let active = state.metrics.session_started(endpoint);
    let started = std::time::Instant::now();
    // The root of the session's trace (or a child of the client's, with `traceparent`). Its fields ride
    // along to every log line of the session, engine threads included.
    let span = tracing::info_span!(
        "session",
        session_id = %session_id,
        "session.id" = %session_id,
        "tts.voice" = %voice.id,
        "tts.endpoint" = if request.legacy { "legacy" } else { "v1" },
    );
    if let Some(traceparent) = &request.traceparent
        && !tts_telemetry::set_parent_from_traceparent(&span, traceparent)
    {
        tracing::debug!(session_id = %session_id, "Ignored a malformed traceparent.");
    }
    span.in_scope(|| tracing::info!(voice = %voice.id, legacy = request.legacy, "Session started."));
    let cancel = CancelSource::new();
    let (tx, rx) = mpsc::channel(64);
    let reader = tokio::spawn(
        reader::read_loop(
            stream,
            tx,
            cancel.clone(),
            state.config.clone(),
            state.metrics.clone(),
        )
        .instrument(span.clone()),
    );
    let driver = Driver::new(DriverParts {
        state: state.clone(),
        sink,
        inbound: rx,
        session_id: session_id.clone(),
        legacy: request.legacy,
        encoding: request.encoding,
        voice,
        cancel,
        span: span.clone(),
    });
    let reason = driver.run().instrument(span.clone()).await;
    reader.abort();
    drop(active);
    state.metrics.session_ended(reason.as_str(), started.elapsed());
    span.in_scope(|| tracing::info!(reason = reason.as_str(), "Session ended."));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_look_like_the_original_and_differ() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert!(a.starts_with("ws-") && a.len() == 15, "{a}");
    }
}
