//! The `tts.v1.Worker` gRPC service: sessions, their Synthesize streams, controls, and the model RPCs.
//!
//! Each gateway session has its own state here ([`session::WorkerSession`]): its cancel generation, its
//! PAUSE flag and the chunks it holds, so a control for one session never touches another. A chunk's
//! audio is sent back piece by piece as the engine produces it; nothing is buffered per utterance.
//! gRPC statuses are made in one place, [`ModelError`]'s and the request checks' `into_status` below.

mod auth;
mod session;

pub use auth::CallAuth;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tts_core::pool::Pool;
use tts_core::voices::VoiceCatalog;
use tts_proto::registry::WorkerRecord;
use tts_proto::v1::worker_server::{SERVICE_NAME, Worker, WorkerServer};
use tts_proto::v1::{
    Command, ControlRequest, ControlResponse, EndSessionRequest, EndSessionResponse, GetCapabilitiesRequest,
    GetCapabilitiesResponse, ListModelsRequest, ListModelsResponse, LoadModelRequest, LoadModelResponse,
    ModelInfo, StartSessionRequest, StartSessionResponse, SynthesizeRequest, SynthesizeResponse,
    UnloadModelRequest, UnloadModelResponse,
};

use crate::metrics::{ControlCommand, WorkerMetrics};
use crate::models::{LoadReason, ModelError, ModelManager};
use session::WorkerSession;

/// Sessions one worker accepts before StartSession answers RESOURCE_EXHAUSTED.
pub const DEFAULT_MAX_SESSIONS: u32 = 64;

/// Who the worker is and what it accepts.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub name: String,
    pub max_sessions: u32,
    /// Warmed at startup; readiness (and gRPC health) follow it.
    pub default_voice: String,
}

/// The service; cheap to clone.
#[derive(Clone)]
pub struct WorkerService {
    inner: Arc<Inner>,
}

struct Inner {
    settings: WorkerSettings,
    pool: Arc<Pool>,
    catalog: Arc<VoiceCatalog>,
    models: Arc<ModelManager>,
    sessions: Mutex<HashMap<String, Arc<WorkerSession>>>,
    metrics: WorkerMetrics,
    draining: AtomicBool,
}

impl WorkerService {
    pub fn new(
        settings: WorkerSettings,
        pool: Arc<Pool>,
        catalog: Arc<VoiceCatalog>,
        models: Arc<ModelManager>,
        metrics: WorkerMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                pool,
                catalog,
                models,
                sessions: Mutex::new(HashMap::new()),
                metrics,
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Whether the default voice is resident (and so warm).
    pub fn is_ready(&self) -> bool {
        self.inner.models.is_resident(&self.inner.settings.default_voice)
    }

    pub fn active_sessions(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// New sessions are refused from now on; running ones go on until they end.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Ends every session (cancelling its work); used when the drain grace runs out.
    pub fn end_all_sessions(&self) {
        let sessions: Vec<_> = lock(&self.inner.sessions).drain().map(|(_, s)| s).collect();
        for session in sessions {
            session.end();
            self.inner.metrics.session_ended();
        }
    }

    /// What GetCapabilities answers, also the basis of the Redis registration.
    pub fn capabilities(&self) -> GetCapabilitiesResponse {
        let inner = &self.inner;
        let stats = inner.pool.stats();
        let mut engines: Vec<String> = inner
            .catalog
            .iter()
            .map(|v| v.engine.as_str().to_owned())
            .collect();
        engines.sort();
        engines.dedup();
        GetCapabilitiesResponse {
            worker: inner.settings.name.clone(),
            engines,
            voices: inner.catalog.iter().map(|v| v.id.clone()).collect(),
            resident_voices: inner.models.resident(),
            max_concurrent_sessions: inner.settings.max_sessions,
            active_sessions: u32::try_from(self.active_sessions()).unwrap_or(u32::MAX),
            engine_threads: saturating_u32(stats.threads),
            busy_threads: saturating_u32(stats.busy),
            queued_chunks: saturating_u32(stats.queued),
            sample_rate: tts_core::audio::OUTPUT_SAMPLE_RATE,
            ready: self.is_ready(),
        }
    }

    /// The registration record for `address` (what gateways should dial).
    pub fn record(&self, address: &str) -> WorkerRecord {
        let caps = self.capabilities();
        WorkerRecord {
            name: caps.worker,
            address: address.to_owned(),
            engines: caps.engines,
            voices: caps.voices,
            resident_voices: caps.resident_voices,
            max_sessions: caps.max_concurrent_sessions,
            active_sessions: caps.active_sessions,
            engine_threads: caps.engine_threads,
            busy_threads: caps.busy_threads,
            queued_chunks: caps.queued_chunks,
            ready: caps.ready && !self.inner.draining.load(Ordering::Acquire),
            heartbeat_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ttl_seconds: 0,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Serves the worker service and `grpc.health.v1` on `listener` until `shutdown` turns true. Health
    /// reports SERVING for the service and overall once the default voice is resident, NOT_SERVING while
    /// draining.
    ///
    /// Every call, health checks included, first passes `auth` (the shared worker token, when set). With
    /// `tls`, the port speaks only TLS (HTTP/2 over rustls).
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        auth: CallAuth,
        tls: Option<tonic::transport::ServerTlsConfig>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), tonic::transport::Error> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let watcher = self.clone();
        let mut health_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut serving = None;
            loop {
                let now = watcher.is_ready() && !watcher.inner.draining.load(Ordering::Acquire);
                if serving != Some(now) {
                    let status = if now {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    reporter.set_service_status("", status).await;
                    reporter.set_service_status(SERVICE_NAME, status).await;
                    serving = Some(now);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = health_shutdown.changed() => {}
                }
                if *health_shutdown.borrow() {
                    break;
                }
            }
        });
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        builder
            .layer(tonic::service::InterceptorLayer::new(move |request| {
                auth.check(request)
            }))
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(2)))
            .http2_keepalive_timeout(Some(Duration::from_secs(3)))
            .add_service(health)
            .add_service(WorkerServer::new(self))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                },
            )
            .await
    }

    fn session(&self, session_id: &str) -> Result<Arc<WorkerSession>, Status> {
        if session_id.is_empty() {
            return Err(Status::invalid_argument("session_id is empty"));
        }
        lock(&self.inner.sessions)
            .get(session_id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no session {session_id} on this worker")))
    }

    fn remove_session(&self, session_id: &str) -> bool {
        let removed = lock(&self.inner.sessions).remove(session_id);
        match removed {
            Some(session) => {
                session.end();
                self.inner.metrics.session_ended();
                true
            }
            None => false,
        }
    }
}

type SynthesizeStream = Pin<Box<dyn Stream<Item = Result<SynthesizeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn start_session(
        &self,
        request: Request<StartSessionRequest>,
    ) -> Result<Response<StartSessionResponse>, Status> {
        let request = request.into_inner();
        if request.session_id.is_empty() {
            return Err(Status::invalid_argument("session_id is empty"));
        }
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(Status::unavailable("the worker is draining"));
        }
        let max = self.inner.settings.max_sessions as usize;
        if self.active_sessions() >= max {
            return Err(Status::resource_exhausted(format!(
                "the worker is at its session limit ({max})"
            )));
        }
        let was_resident = self.inner.models.is_resident(&request.voice);
        let started = tokio::time::Instant::now();
        let lease = self
            .inner
            .models
            .acquire(&request.voice, LoadReason::Demand)
            .await
            .map_err(into_status)?;
        let load_seconds = started.elapsed().as_secs_f64();
        let session = Arc::new(WorkerSession::new(
            request.session_id.clone(),
            lease,
            self.inner.clone(),
        ));
        let previous = lock(&self.inner.sessions).insert(request.session_id, session);
        match previous {
            // A restarted gateway stream reusing an id replaces the old state.
            Some(old) => old.end(),
            None => self.inner.metrics.session_started(),
        }
        Ok(Response::new(StartSessionResponse {
            loaded: !was_resident,
            load_seconds: if was_resident { 0.0 } else { load_seconds },
        }))
    }

    async fn end_session(
        &self,
        request: Request<EndSessionRequest>,
    ) -> Result<Response<EndSessionResponse>, Status> {
        let request = request.into_inner();
        if request.session_id.is_empty() {
            return Err(Status::invalid_argument("session_id is empty"));
        }
        Ok(Response::new(EndSessionResponse {
            existed: self.remove_session(&request.session_id),
        }))
    }

    type SynthesizeStream = SynthesizeStream;

    async fn synthesize(
        &self,
        request: Request<Streaming<SynthesizeRequest>>,
    ) -> Result<Response<Self::SynthesizeStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the Synthesize stream ended before its first chunk"))?;
        let session = self.session(&first.session_id)?;
        let (tx, rx) = mpsc::unbounded_channel();
        session.attach(tx.clone());
        let service = self.clone();
        tokio::spawn(async move {
            let session_id = first.session_id.clone();
            let mut next = Some(first);
            while let Some(chunk) = next {
                if chunk.session_id != session_id {
                    let _ = tx.send(Err(Status::invalid_argument(format!(
                        "chunk for session {} on the stream of session {session_id}",
                        chunk.session_id
                    ))));
                    break;
                }
                session.receive(chunk).await;
                next = match inbound.message().await {
                    Ok(next) => next,
                    Err(status) => {
                        tracing::debug!(session_id = %session_id, error = %status, "Synthesize stream broke.");
                        None
                    }
                };
            }
            // The gateway's side of the stream is gone: nobody will hear this session's audio.
            service.remove_session(&session_id);
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn control(&self, request: Request<ControlRequest>) -> Result<Response<ControlResponse>, Status> {
        let request = request.into_inner();
        let session = self.session(&request.session_id)?;
        let command = Command::try_from(request.command)
            .map_err(|_| Status::invalid_argument(format!("unknown command {}", request.command)))?;
        let cancelled_chunks = match command {
            Command::Unspecified => {
                return Err(Status::invalid_argument(
                    "command is unspecified: send COMMAND_PAUSE, COMMAND_RESUME or COMMAND_STOP",
                ));
            }
            Command::Pause => {
                session.pause();
                self.inner.metrics.control(ControlCommand::pause);
                0
            }
            Command::Resume => {
                session.resume();
                self.inner.metrics.control(ControlCommand::resume);
                0
            }
            Command::Stop => {
                self.inner.metrics.control(ControlCommand::stop);
                session.stop()
            }
        };
        Ok(Response::new(ControlResponse { cancelled_chunks }))
    }

    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let models = self
            .inner
            .models
            .list()
            .into_iter()
            .map(|status| ModelInfo {
                voice: status.voice.id.clone(),
                engine: status.voice.engine.as_str().to_owned(),
                language: status.voice.language.clone(),
                resident: status.resident,
                in_use: status.in_use,
                resident_seconds: status.resident_for.map(|d| d.as_secs_f64()),
                idle_seconds: status.idle_for.map(|d| d.as_secs_f64()),
            })
            .collect();
        Ok(Response::new(ListModelsResponse { models }))
    }

    async fn load_model(
        &self,
        request: Request<LoadModelRequest>,
    ) -> Result<Response<LoadModelResponse>, Status> {
        let voice = request.into_inner().voice;
        let outcome = self
            .inner
            .models
            .load(&voice, LoadReason::Manual)
            .await
            .map_err(into_status)?;
        Ok(Response::new(LoadModelResponse {
            already_resident: outcome.already_resident,
            load_seconds: outcome.waited.as_secs_f64(),
        }))
    }

    async fn unload_model(
        &self,
        request: Request<UnloadModelRequest>,
    ) -> Result<Response<UnloadModelResponse>, Status> {
        let voice = request.into_inner().voice;
        self.inner.models.unload(&voice).map_err(into_status)?;
        Ok(Response::new(UnloadModelResponse {}))
    }

    async fn get_capabilities(
        &self,
        _request: Request<GetCapabilitiesRequest>,
    ) -> Result<Response<GetCapabilitiesResponse>, Status> {
        Ok(Response::new(self.capabilities()))
    }
}

/// The one place a model-manager error becomes a gRPC status.
fn into_status(error: ModelError) -> Status {
    match &error {
        ModelError::UnknownVoice(_) => Status::not_found(error.to_string()),
        ModelError::InUse { .. } => Status::failed_precondition(error.to_string()),
        ModelError::CapReached { .. } => Status::resource_exhausted(error.to_string()),
        ModelError::LoadFailed { .. } => {
            tracing::warn!(error = %error, "Voice load failed.");
            Status::internal(error.to_string())
        }
    }
}

fn saturating_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
