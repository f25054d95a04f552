//! The shared worker token: gateways send `authorization: Bearer <token>` on every call; a worker with a
//! token configured refuses any call without it (`UNAUTHENTICATED`), health checks included.

use std::sync::Arc;

use tonic::{Request, Status};
use tts_telemetry::{AuthMetrics, AuthOutcome, AuthSurface, constant_time_eq};

/// Who may call this worker. Shows whether a token is set, never the token.
#[derive(Clone, Default)]
pub struct CallAuth {
    token: Option<Arc<str>>,
    metrics: AuthMetrics,
}

impl std::fmt::Debug for CallAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl CallAuth {
    /// Requires `token` (when `Some`) on every call, counting each check under `surface="grpc"`.
    pub fn new(token: Option<String>, metrics: AuthMetrics) -> Self {
        Self {
            token: token.map(Arc::from),
            metrics,
        }
    }

    /// The interceptor: passes the call on, or refuses it with `UNAUTHENTICATED`.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let offered = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let outcome = match offered {
            None => AuthOutcome::Missing,
            Some(offered) if constant_time_eq(offered.as_bytes(), token.as_bytes()) => AuthOutcome::Ok,
            Some(_) => AuthOutcome::Invalid,
        };
        self.metrics.record(AuthSurface::Grpc, outcome);
        match outcome {
            AuthOutcome::Ok => Ok(request),
            AuthOutcome::Missing => Err(Status::unauthenticated(
                "missing worker token: this worker needs authorization: Bearer <token> (workers.token_file on the gateway)",
            )),
            AuthOutcome::Invalid => Err(Status::unauthenticated(
                "invalid worker token: it does not match this worker's worker.token_file",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(bearer: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(token) = bearer {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    }

    #[test]
    fn a_configured_token_is_required_and_compared() {
        let auth = CallAuth::new(Some("w-token".into()), AuthMetrics::default());
        assert_eq!(
            auth.check(call(None)).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            auth.check(call(Some("w-toke"))).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(auth.check(call(Some("w-token"))).is_ok());
        assert!(!format!("{auth:?}").contains("w-token"));
        let open = CallAuth::default();
        assert!(open.check(call(None)).is_ok());
    }
}
