//! API keys for the public listener: checked on the WebSocket upgrade (before it happens) and on the
//! HTTP API, compared in constant time, never logged, counted by outcome.
//!
//! Off when no keys are configured. When on, a WebSocket upgrade needs `Authorization: Bearer <key>` or
//! `?token=<key>` (401 with a JSON body and no upgrade otherwise), and the HTTP routes need the bearer
//! header (401 in OpenAI's error shape, see [`crate::openai`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tts_telemetry::{AuthMetrics, AuthOutcome, AuthSurface, bearer, constant_time_eq};

use crate::GatewayState;

/// The accepted API keys. Shows how many, never which.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<String>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.keys.len())
            .finish()
    }
}

impl ApiKeys {
    /// Keys from a file's text: one per line, surrounding blanks trimmed; empty lines and lines starting
    /// with `#` are skipped.
    pub fn parse(text: &str) -> Self {
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
            .collect();
        Self { keys }
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `presented` is one of the keys: each key is compared in constant time, and every key is
    /// compared, so neither where a key differs nor which key matched shows in the time taken.
    pub fn accepts(&self, presented: &str) -> bool {
        self.keys.iter().fold(false, |found, key| {
            found | constant_time_eq(presented.as_bytes(), key.as_bytes())
        })
    }
}

/// The public listener's credential rule and its counter.
#[derive(Clone, Debug, Default)]
pub struct ApiAuth {
    /// `None`: no keys configured, every request is allowed (and not counted).
    keys: Option<ApiKeys>,
    metrics: AuthMetrics,
}

impl ApiAuth {
    /// Requires one of `keys` (when `Some`), counting each check in `metrics`.
    pub fn new(keys: Option<ApiKeys>, metrics: AuthMetrics) -> Self {
        Self { keys, metrics }
    }

    /// Checks a request's credential: the bearer header, else (for the WebSocket) the `token` query
    /// parameter. `Ok` when keys are off.
    pub(crate) fn check(
        &self,
        surface: AuthSurface,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<(), AuthOutcome> {
        let Some(keys) = &self.keys else {
            return Ok(());
        };
        let outcome = match bearer(headers).or(query_token) {
            None => AuthOutcome::Missing,
            Some(presented) if keys.accepts(presented) => AuthOutcome::Ok,
            Some(_) => AuthOutcome::Invalid,
        };
        self.metrics.record(surface, outcome);
        match outcome {
            AuthOutcome::Ok => Ok(()),
            refused => Err(refused),
        }
    }
}

/// What a refusal says; never the key.
pub(crate) fn refusal_message(outcome: AuthOutcome) -> &'static str {
    match outcome {
        AuthOutcome::Invalid => "Invalid API key: the key presented is not accepted.",
        _ => "Missing API key: send Authorization: Bearer <key> (or ?token=<key> on the WebSocket upgrade).",
    }
}

/// The value of the `token` query parameter, percent-decoding not needed for keys made of URL-safe
/// characters; a key with others must travel in the header.
fn query_token(request: &Request) -> Option<String> {
    let query = request.uri().query()?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .map(|(_, value)| value.to_owned())
}

/// Middleware on the WebSocket routes: the check runs before the upgrade is even parsed, so a refused
/// client gets a plain 401 and no session starts.
pub(crate) async fn ws_guard(
    State(state): State<Arc<GatewayState>>,
    request: Request,
    next: Next,
) -> Response {
    let token = query_token(&request);
    match state
        .auth
        .check(AuthSurface::Ws, request.headers(), token.as_deref())
    {
        Ok(()) => next.run(request).await,
        Err(outcome) => {
            let body = json!({
                "type": "error",
                "code": "UNAUTHORIZED",
                "message": refusal_message(outcome),
            });
            let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file_skips_comments_and_blanks_and_accepts_only_listed_keys() {
        let keys = ApiKeys::parse("# production\n  key-one  \n\n#key-two\nkey-three\n");
        assert_eq!(keys.len(), 2);
        assert!(keys.accepts("key-one"));
        assert!(keys.accepts("key-three"));
        for refused in [
            "key-two",
            "#key-two",
            "key-on",
            "key-one ",
            "",
            "key-threekey-one",
        ] {
            assert!(!keys.accepts(refused), "{refused:?}");
        }
        assert!(!format!("{keys:?}").contains("key-one"));
    }

    #[test]
    fn checks_are_counted_by_outcome_and_skipped_without_keys() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = AuthMetrics::register(&mut registry);
        let auth = ApiAuth::new(Some(ApiKeys::parse("k1\n")), metrics.clone());
        let mut headers = HeaderMap::new();
        assert_eq!(
            auth.check(AuthSurface::Ws, &headers, None),
            Err(AuthOutcome::Missing)
        );
        assert_eq!(
            auth.check(AuthSurface::Ws, &headers, Some("k2")),
            Err(AuthOutcome::Invalid)
        );
        assert_eq!(auth.check(AuthSurface::Ws, &headers, Some("k1")), Ok(()));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k1"));
        assert_eq!(auth.check(AuthSurface::Http, &headers, None), Ok(()));
        let off = ApiAuth::new(None, metrics);
        assert_eq!(off.check(AuthSurface::Http, &HeaderMap::new(), None), Ok(()));
        let text = tts_telemetry::encode(&registry, tts_telemetry::Exposition::PrometheusText).unwrap();
        for (surface, outcome, count) in [
            ("ws", "missing", 1),
            ("ws", "invalid", 1),
            ("ws", "ok", 1),
            ("http", "ok", 1),
            ("http", "missing", 0),
        ] {
            let line =
                format!("tts_auth_requests_total{{surface=\"{surface}\",outcome=\"{outcome}\"}} {count}\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
    }
}
