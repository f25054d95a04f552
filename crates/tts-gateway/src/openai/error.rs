//! The one place an HTTP API failure becomes a status code and OpenAI's error body,
//! `{"error": {"message", "type", "param", "code"}}`, and the outcome it is counted under.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::metrics::ApiOutcome;

/// Why a speech request was refused or failed before its audio started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A field is missing, malformed or out of range; `param` names it.
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<&'static str>,
        code: &'static str,
    },
    /// No or a wrong API key (only when keys are configured).
    #[error("{0}")]
    Unauthorized(String),
    /// The input or the body is over its limit.
    #[error("{message}")]
    TooLong {
        message: String,
        param: Option<&'static str>,
    },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// At the concurrent-request limit.
    #[error("{0}")]
    RateLimited(String),
    /// The synthesis queue is full or the server is shutting down.
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Engine(String),
}

#[derive(serde::Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(serde::Serialize)]
struct Detail<'a> {
    message: String,
    r#type: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    pub(crate) fn invalid(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            message: message.into(),
            param: Some(param),
            code,
        }
    }

    pub(crate) fn outcome(&self) -> ApiOutcome {
        match self {
            ApiError::Invalid { .. } => ApiOutcome::BadRequest,
            ApiError::Unauthorized(_) => ApiOutcome::Unauthorized,
            ApiError::TooLong { .. } => ApiOutcome::TooLong,
            ApiError::UnsupportedMediaType(_) => ApiOutcome::UnsupportedMediaType,
            ApiError::RateLimited(_) | ApiError::Overloaded(_) => ApiOutcome::Overloaded,
            ApiError::Engine(_) => ApiOutcome::Failed,
        }
    }

    /// Status, OpenAI error type, param and code.
    fn parts(&self) -> (StatusCode, &'static str, Option<&'static str>, &'static str) {
        match self {
            ApiError::Invalid { param, code, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", *param, code)
            }
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                "invalid_api_key",
            ),
            ApiError::TooLong { param, .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                *param,
                "input_too_long",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                None,
                "unsupported_media_type",
            ),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                None,
                "rate_limit_exceeded",
            ),
            ApiError::Overloaded(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                None,
                "overloaded",
            ),
            ApiError::Engine(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                "synthesis_failed",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, param, code) = self.parts();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), code, error = %self, "Speech request failed.");
        } else {
            tracing::info!(status = status.as_u16(), code, error = %self, "Speech request refused.");
        }
        let body = Body {
            error: Detail {
                message: self.to_string(),
                r#type: kind,
                param,
                code: Some(code),
            },
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_have_openais_shape_and_status() {
        let cases = [
            (
                ApiError::invalid("voice", "unknown_voice", "no such voice"),
                400,
                Some("voice"),
            ),
            (ApiError::Unauthorized("no key".into()), 401, None),
            (
                ApiError::TooLong {
                    message: "long".into(),
                    param: Some("input"),
                },
                413,
                Some("input"),
            ),
            (ApiError::UnsupportedMediaType("json only".into()), 415, None),
            (ApiError::RateLimited("busy".into()), 429, None),
            (ApiError::Overloaded("queue".into()), 503, None),
            (ApiError::Engine("boom".into()), 500, None),
        ];
        for (error, status, param) in cases {
            let message = error.to_string();
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let detail = &json["error"];
            assert_eq!(detail["message"], message.as_str());
            assert!(detail["type"].is_string() && detail["code"].is_string());
            assert_eq!(detail["param"].as_str(), param);
        }
    }
}
