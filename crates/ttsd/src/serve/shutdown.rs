//! Shutdown: the drain that lets open utterances finish after SIGTERM, and the signal wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tts_gateway::Gateway;
use tts_telemetry::{CheckResult, HealthCheck};

/// `/readiness` fails from the moment the server starts draining for shutdown, so a load balancer stops
/// sending it new sessions while the open ones finish.
#[derive(Default)]
pub(super) struct Draining(AtomicBool);

impl HealthCheck for Draining {
    fn name(&self) -> &str {
        "draining"
    }
    fn required_for_readiness(&self) -> bool {
        true
    }
    fn check(&self) -> CheckResult {
        if self.0.load(Ordering::Acquire) {
            CheckResult::fail("shutting down: open utterances finish, no new session is admitted")
        } else {
            CheckResult::pass("serving")
        }
    }
}

impl Draining {
    pub(super) fn start(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Waits until every session has played its open utterances and ended, at most `limit`; a second
/// SIGTERM or SIGINT cuts it short.
pub(super) async fn drain(gateway: &Gateway, limit: Duration) {
    tracing::info!(
        sessions = gateway.active_sessions(),
        drain_seconds = limit.as_secs(),
        "Draining: readiness fails, nothing new is admitted, open utterances finish."
    );
    let finished = async {
        while gateway.active_sessions() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = finished => tracing::info!("Drained: every session has ended."),
        () = tokio::time::sleep(limit) => tracing::warn!(
            sessions = gateway.active_sessions(),
            "Drain time is up; ending the sessions still open."
        ),
        () = wait_for_signal() => tracing::warn!("A second signal: ending sessions now."),
    }
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the server can still be killed; it just cannot drain.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
