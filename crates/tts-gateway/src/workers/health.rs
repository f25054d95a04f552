//! Checks every worker each `health_interval`: `grpc.health.v1` for up and ready, then GetCapabilities for
//! its load and resident voices. A worker marked down by a failed stream comes back when a check passes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tts_proto::v1::GetCapabilitiesRequest;

use super::metrics::{CheckOutcome, Method};
use super::{Shared, WorkerHandle, lock};

pub(super) async fn run(shared: Weak<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let interval = strong.config.health_interval;
        let checks: Vec<_> = strong
            .workers()
            .into_iter()
            .map(|worker| check(strong.clone(), worker))
            .collect();
        futures_util::future::join_all(checks).await;
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

async fn check(shared: Arc<Shared>, worker: Arc<WorkerHandle>) {
    let metrics = &shared.metrics;
    let limit = shared.config.rpc_timeout;
    let started = Instant::now();
    let request = HealthCheckRequest {
        service: tts_proto::v1::worker_server::SERVICE_NAME.to_owned(),
    };
    let outcome = timeout(limit, worker.health.clone().check(request)).await;
    metrics.rpc(&worker.label, Method::health_check, started.elapsed());
    let serving = match outcome {
        Ok(Ok(response)) => {
            metrics.health_check(&worker.label, CheckOutcome::ok);
            response.into_inner().status == ServingStatus::Serving as i32
        }
        Ok(Err(status)) => {
            metrics.health_check(&worker.label, CheckOutcome::failed);
            metrics.rpc_error(&worker.label, Method::health_check, status.code());
            set_up(&worker, false);
            worker.note_failure(&status);
            return;
        }
        Err(_) => {
            metrics.health_check(&worker.label, CheckOutcome::timeout);
            metrics.rpc_error(&worker.label, Method::health_check, tonic::Code::DeadlineExceeded);
            set_up(&worker, false);
            return;
        }
    };
    set_up(&worker, true);
    worker.ready.store(serving, Ordering::Release);
    let started = Instant::now();
    match timeout(
        limit,
        worker.client.clone().get_capabilities(GetCapabilitiesRequest {}),
    )
    .await
    {
        Ok(Ok(response)) => {
            metrics.rpc(&worker.label, Method::get_capabilities, started.elapsed());
            let caps = response.into_inner();
            let mut report = lock(&worker.report);
            report.max_sessions = caps.max_concurrent_sessions;
            report.active_sessions = caps.active_sessions;
            report.resident_voices = caps.resident_voices;
            report.engine_threads = caps.engine_threads;
            report.busy_threads = caps.busy_threads;
            report.queued_chunks = caps.queued_chunks;
        }
        Ok(Err(status)) => metrics.rpc_error(&worker.label, Method::get_capabilities, status.code()),
        Err(_) => metrics.rpc_error(
            &worker.label,
            Method::get_capabilities,
            tonic::Code::DeadlineExceeded,
        ),
    }
}

fn set_up(worker: &WorkerHandle, up: bool) {
    let was = worker.up.swap(up, Ordering::AcqRel);
    if was != up {
        if up {
            tracing::info!(worker = %worker.name, address = %worker.address, "Worker is up.");
        } else {
            tracing::warn!(worker = %worker.name, address = %worker.address, "Worker failed its health check.");
        }
    }
}
