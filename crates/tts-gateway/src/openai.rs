//! The OpenAI-compatible HTTP API (`docs/http-api.md`): `POST /v1/audio/speech`, `GET /v1/models`,
//! `GET /v1/audio/voices`.
//!
//! A speech request is one [`Utterance`] on the same synthesizer, limits and metrics as a WebSocket
//! session. Its response starts when the first audio exists (so a failure before that is still a proper
//! status code), and body bytes follow as the engine makes them, unpaced. A client that closes the
//! connection drops the body stream, which drops the utterance and cancels its synthesis.

mod body;
mod encode;
mod error;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;
use tts_core::voices::VoiceInfo;
use tts_telemetry::AuthSurface;

use crate::GatewayState;
use crate::metrics::Transport;
use crate::session::OwnedPermit;
use crate::utterance::{Output, Utterance, UtteranceSpec};
use body::SpeechBody;
use encode::{Encoder, Format, SUPPORTED_FORMATS};
pub(crate) use error::ApiError;

/// Model names accepted in `model`; all speak with the same engines.
pub(crate) const MODELS: [&str; 4] = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "ttsd"];
/// OpenAI's voice names; those not mapped in `gateway.openai_voices` speak with the default voice.
pub(crate) const OPENAI_VOICES: [&str; 13] = [
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin",
    "cedar",
];
/// OpenAI's `pcm` is 24 kHz; `sample_rate` picks another.
const DEFAULT_SAMPLE_RATE: u32 = 24_000;
const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 8_000..=48_000;

/// The request body. Unknown fields are ignored, as OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
struct SpeechRequest {
    model: String,
    input: String,
    voice: VoiceParam,
    response_format: Option<String>,
    speed: Option<f64>,
    /// Accepted and ignored: the engines have no style prompt.
    #[serde(rename = "instructions")]
    _instructions: Option<serde::de::IgnoredAny>,
    stream_format: Option<String>,
    /// ttsd extension: the output rate for `pcm` and `wav`.
    sample_rate: Option<u32>,
}

/// `"voice": "alloy"` or `"voice": {"id": "alloy"}` (OpenAI's custom-voice form).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum VoiceParam {
    Name(String),
    Object { id: String },
}

/// A checked request.
struct Speech {
    input: String,
    voice: Arc<VoiceInfo>,
    format: Format,
    sse: bool,
    rate: u32,
    speed: f32,
}

/// The one API-key check of the HTTP routes: `Authorization: Bearer <key>` when keys are configured;
/// [`ApiError::Unauthorized`] becomes a 401 in OpenAI's error shape.
pub(crate) fn authorize(state: &GatewayState, headers: &HeaderMap) -> Result<(), ApiError> {
    state
        .auth
        .check(AuthSurface::Http, headers, None)
        .map_err(|outcome| ApiError::Unauthorized(crate::auth::refusal_message(outcome).to_owned()))
}

pub(crate) async fn speech(
    State(state): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let read_at = Instant::now();
    let request_id = crate::session::new_request_id("http");
    let span = tracing::info_span!(
        "speech",
        request_id = %request_id,
        "session.id" = %request_id,
        "tts.transport" = "http",
    );
    if let Some(traceparent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        let _ = tts_telemetry::set_parent_from_traceparent(&span, traceparent);
    }
    let result = async {
        authorize(&state, &headers)?;
        let speech = parse(&state, &headers, body).await?;
        let permit = OwnedPermit::try_new(&state).ok_or_else(|| {
            ApiError::RateLimited(format!(
                "the server is at its limit of {} concurrent sessions and requests",
                state.config.max_sessions
            ))
        })?;
        start(&state, speech, permit, request_id.clone(), read_at, span.clone()).await
    }
    .await;
    match result {
        Ok(response) => response,
        Err(error) => {
            state.metrics.api_request(Transport::Http, error.outcome());
            let _entered = span.enter();
            let mut response = error.into_response();
            set_request_id(&mut response, &request_id);
            response
        }
    }
}

fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
}

/// Reads and checks the body: content type, size, JSON, and every field.
async fn parse(state: &GatewayState, headers: &HeaderMap, body: Body) -> Result<Speech, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("application/json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON (Content-Type: application/json), not {content_type:?}"
        )));
    }
    let limit = state.config.max_message_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLong {
            message: format!("the request body is over {limit} bytes"),
            param: None,
        })?;
    let request: SpeechRequest = serde_json::from_slice(&bytes).map_err(|e| ApiError::Invalid {
        message: format!("the body is not a valid speech request: {e}"),
        param: None,
        code: "invalid_json",
    })?;
    check(state, request)
}

fn check(state: &GatewayState, request: SpeechRequest) -> Result<Speech, ApiError> {
    if !MODELS.contains(&request.model.as_str()) {
        return Err(ApiError::invalid(
            "model",
            "model_not_found",
            format!("unknown model {:?}; models: {}", request.model, MODELS.join(", ")),
        ));
    }
    if request.input.trim().is_empty() {
        return Err(ApiError::invalid("input", "empty_input", "input is empty"));
    }
    let characters = request.input.chars().count();
    let limit = state.config.max_text_chars;
    if characters > limit {
        return Err(ApiError::TooLong {
            message: format!("input is {characters} characters; the limit is {limit}"),
            param: Some("input"),
        });
    }
    let name = match &request.voice {
        VoiceParam::Name(name) | VoiceParam::Object { id: name } => name.as_str(),
    };
    let voice = resolve_voice(state, name)?;
    let format_name = request.response_format.as_deref().unwrap_or("wav");
    let format = Format::parse(format_name).ok_or_else(|| {
        ApiError::invalid(
            "response_format",
            "unsupported_response_format",
            format!("response_format {format_name:?} is not supported; supported: {SUPPORTED_FORMATS}"),
        )
    })?;
    let sse = match request.stream_format.as_deref() {
        None | Some("audio") => false,
        Some("sse") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "stream_format",
                "invalid_value",
                format!("stream_format {other:?} is not supported; supported: audio, sse"),
            ));
        }
    };
    let speed = check_speed(request.speed)?;
    let rate = request.sample_rate.unwrap_or(DEFAULT_SAMPLE_RATE);
    if !SAMPLE_RATES.contains(&rate) {
        return Err(ApiError::invalid(
            "sample_rate",
            "invalid_value",
            format!("sample_rate {rate} is out of range (8000 to 48000 Hz)"),
        ));
    }
    Ok(Speech {
        input: request.input,
        voice,
        format,
        sse,
        rate,
        speed,
    })
}

/// OpenAI's range, 0.25 to 4.0 (1.0 when absent); the engine speaks at that rate (Piper scales its
/// phoneme durations, espeak-ng its words per minute, within 80..=450).
fn check_speed(speed: Option<f64>) -> Result<f32, ApiError> {
    let Some(speed) = speed else { return Ok(1.0) };
    let speed = speed as f32;
    if !tts_core::engine::SPEED_RANGE.contains(&speed) {
        return Err(ApiError::invalid(
            "speed",
            "invalid_value",
            format!("speed {speed} is out of range (0.25 to 4.0)"),
        ));
    }
    Ok(speed)
}

/// A mapped OpenAI name, then a voice id, then an unmapped OpenAI name (the default voice).
fn resolve_voice(state: &GatewayState, name: &str) -> Result<Arc<VoiceInfo>, ApiError> {
    if let Some(id) = state.config.openai_voices.get(name)
        && let Ok(voice) = state.catalog.get(id)
    {
        return Ok(Arc::new(voice.clone()));
    }
    match state.catalog.get(name) {
        Ok(voice) => Ok(Arc::new(voice.clone())),
        Err(_) if OPENAI_VOICES.contains(&name) => Ok(state.default_voice.clone()),
        Err(unknown) => Err(ApiError::invalid("voice", "unknown_voice", unknown.to_string())),
    }
}

/// Starts synthesis and waits for the first audio, so that a failure before it is a status code.
async fn start(
    state: &Arc<GatewayState>,
    speech: Speech,
    permit: OwnedPermit,
    request_id: Arc<str>,
    read_at: Instant,
    span: tracing::Span,
) -> Result<Response, ApiError> {
    let mut utterance = Utterance::start(
        state,
        UtteranceSpec {
            voice: speech.voice.clone(),
            transport: Transport::Http,
            request_id: request_id.clone(),
            parent: span.clone(),
            speed: speech.speed,
        },
    );
    utterance.push_text(&speech.input, true, read_at);
    let encoder = Encoder::new(speech.format, speech.rate)
        .map_err(|e| ApiError::Engine(format!("cannot resample to {} Hz: {e}", speech.rate)))?;
    let pending = until_first_audio(&mut utterance).await?;
    let content_type = if speech.sse {
        "text/event-stream"
    } else {
        speech.format.content_type()
    };
    span.in_scope(|| {
        tracing::info!(
            voice = %speech.voice.id,
            format = ?speech.format,
            sse = speech.sse,
            rate = speech.rate,
            characters = speech.input.chars().count(),
            "Speech request started."
        );
    });
    let body = SpeechBody {
        state: state.clone(),
        utterance,
        encoder,
        pending: pending.into(),
        sse: speech.sse,
        voice: speech.voice,
        characters: speech.input.chars().count(),
        read_at,
        first_byte_at: None,
        request_id: request_id.clone(),
        span,
        outcome: None,
        _permit: permit,
    };
    let mut response = Response::new(Body::from_stream(body.into_stream()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set_request_id(&mut response, &request_id);
    Ok(response)
}

/// Reads outputs up to the first audio (or the end, for text without any), so that a failure before it
/// is still a status code.
async fn until_first_audio(utterance: &mut Utterance) -> Result<Vec<Output>, ApiError> {
    let mut pending = Vec::new();
    loop {
        match utterance.next().await {
            Some(output @ Output::Audio { .. }) => {
                pending.push(output);
                return Ok(pending);
            }
            Some(Output::Failed(failure)) => {
                return Err(match failure {
                    crate::utterance::Failure::Engine(message) => ApiError::Engine(message),
                    other => ApiError::Overloaded(other.to_string()),
                });
            }
            // A chunk with no audio (punctuation only) or no audio at all: the body is just the header.
            Some(other @ (Output::ChunkEnd | Output::Done(_))) => {
                let done = matches!(other, Output::Done(_));
                pending.push(other);
                if done {
                    return Ok(pending);
                }
            }
            None => return Err(ApiError::Engine("synthesis ended unexpectedly".into())),
        }
    }
}

#[derive(serde::Serialize)]
struct Model {
    id: &'static str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

pub(crate) async fn models(State(state): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    if let Err(error) = authorize(&state, &headers) {
        return error.into_response();
    }
    let data: Vec<Model> = MODELS
        .iter()
        .map(|id| Model {
            id,
            object: "model",
            created: 0,
            owned_by: "ttsd",
        })
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// OpenAI voice names and the installed voice each speaks with.
pub(crate) fn voice_aliases(state: &GatewayState) -> std::collections::BTreeMap<String, String> {
    OPENAI_VOICES
        .iter()
        .map(|name| (name.to_string(), state.default_voice.id.clone()))
        .chain(state.config.openai_voices.clone())
        .collect()
}
