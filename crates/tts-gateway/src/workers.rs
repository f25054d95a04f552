//! Remote workers: the live view (a static list, or Redis discovery), health checks, routing, and each
//! session's synthesis over gRPC with failover ([`link`]).
//!
//! Runtime shape: one health task checks every worker each `health_interval`; with Redis, one discovery
//! task scans the registry and this module reconciles the view; each session placed on a worker has one
//! link task that owns its Synthesize stream. The session driver talks to all of it through
//! [`Synthesizer`], exactly as it talks to the in-process pool.

mod discovery;
mod health;
mod inbox;
mod link;
mod metrics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tts_core::pool::{Job, PoolStats, SubmitError};
use tts_proto::registry::WorkerRecord;
use tts_proto::v1::worker_client::WorkerClient;
use tts_telemetry::admin::{CheckResult, HealthCheck};
use tts_telemetry::redis::RedisMetrics;

use crate::protocol::Command;
use crate::synth::Synthesizer;
pub use discovery::{DEFAULT_DISCOVERY_INTERVAL, DiscoveryError};
use discovery::{DiscoveryConfig, DiscoveryMetrics, DiscoveryView};
use inbox::{Controlled, Inbox, Refused};
pub use metrics::RemoteMetrics;

pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// StartSession may load a voice on the worker; other unary RPCs are quick.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// An open chunk that hears nothing from its worker for this long is moved to another worker.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Jobs a session's link may have queued for its worker. A session keeps at most one chunk submitted, so
/// a link holds one live job at a time; the bound is there for a caller that breaks that rule.
pub const DEFAULT_LINK_INBOX_CAPACITY: usize = 4;

/// How a new session picks its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// Fewest sessions for its capacity, preferring workers that already have the voice resident.
    #[default]
    LeastLoaded,
    RoundRobin,
}

/// Where the workers are and how to use them.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// `host:port` of each static worker.
    pub addresses: Vec<String>,
    /// Discover workers from this Redis (`redis://…`) as well.
    pub redis_url: Option<String>,
    pub routing: Routing,
    pub health_interval: Duration,
    pub discovery_interval: Duration,
    pub start_timeout: Duration,
    pub rpc_timeout: Duration,
    pub stall_timeout: Duration,
    /// Jobs queued on one session's link before more are refused (`SubmitError::QueueFull`).
    pub link_inbox_capacity: usize,
    /// The shared worker token, sent as `authorization: Bearer <token>` on every call.
    pub token: Option<WorkerToken>,
    /// Dial workers over TLS (`https://`), trusting what this configuration trusts; `None`, plain HTTP/2.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The secret workers expect from gateways. Shows whether it is set, never its value.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerToken(String);

impl WorkerToken {
    pub fn new(token: String) -> Self {
        Self(token)
    }
}

impl std::fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerToken(<redacted>)")
    }
}

/// Adds the worker token to every call's metadata (health checks included).
#[derive(Clone, Default)]
struct CallToken(Option<MetadataValue<Ascii>>);

impl CallToken {
    fn new(token: Option<&WorkerToken>) -> Result<Self, RemoteError> {
        token
            .map(|token| {
                let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.0)
                    .parse()
                    .map_err(|_| RemoteError::Token)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()
            .map(Self)
    }
}

impl tonic::service::Interceptor for CallToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Intercepted = InterceptedService<Channel, CallToken>;

/// Why remote workers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("invalid worker address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("no workers: give worker addresses or a Redis URL")]
    NoWorkers,
    #[error("the worker token holds characters that cannot travel in gRPC metadata (use printable ASCII)")]
    Token,
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// Sessions' synthesis on remote workers.
pub struct RemoteWorkers {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    config: RemoteConfig,
    call_token: CallToken,
    workers: RwLock<Vec<Arc<WorkerHandle>>>,
    links: Mutex<HashMap<Arc<str>, Arc<Inbox>>>,
    metrics: RemoteMetrics,
    round_robin: AtomicUsize,
    discovery: Option<watch::Receiver<DiscoveryView>>,
}

/// One worker as this gateway sees it.
pub(crate) struct WorkerHandle {
    name: String,
    address: String,
    label: String,
    client: WorkerClient<Intercepted>,
    health: HealthClient<Intercepted>,
    /// The last health check passed and no stream to it has failed since.
    up: AtomicBool,
    /// It reports its default voice warm and is not draining.
    ready: AtomicBool,
    /// No longer in the view (its registration expired).
    gone: AtomicBool,
    /// Sessions this gateway placed on it.
    sessions: AtomicU32,
    report: Mutex<Report>,
    /// The last health-check failure logged, so a worker that keeps failing the same way (a TLS
    /// certificate it is not trusted for, say) is logged once, not every interval.
    last_failure: Mutex<Option<String>>,
}

/// What the worker last said about itself.
#[derive(Debug, Clone, Default)]
struct Report {
    max_sessions: u32,
    active_sessions: u32,
    resident_voices: Vec<String>,
    engine_threads: u32,
    busy_threads: u32,
    queued_chunks: u32,
}

impl RemoteWorkers {
    /// Builds the view from `config` and starts the health (and discovery) tasks; they stop when
    /// `shutdown` turns true.
    pub fn start(
        config: RemoteConfig,
        registry: &mut prometheus_client::registry::Registry,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, RemoteError> {
        if config.addresses.is_empty() && config.redis_url.is_none() {
            return Err(RemoteError::NoWorkers);
        }
        let metrics = RemoteMetrics::register(registry);
        let mut tasks: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
        let discovery = match &config.redis_url {
            Some(url) => {
                let (tx, rx) = watch::channel(DiscoveryView::default());
                let task = discovery::discovery(
                    DiscoveryConfig {
                        url: url.clone(),
                        interval: config.discovery_interval,
                        command_timeout: config.rpc_timeout,
                    },
                    RedisMetrics::register(registry),
                    DiscoveryMetrics::register(registry),
                    tx,
                    shutdown.clone(),
                )?;
                tasks.push(Box::pin(task));
                Some(rx)
            }
            None => None,
        };
        let call_token = CallToken::new(config.token.as_ref())?;
        let mut workers = Vec::new();
        for address in &config.addresses {
            workers.push(Arc::new(WorkerHandle::new(
                address,
                address,
                &metrics,
                &call_token,
                config.tls.as_ref(),
            )?));
        }
        let shared = Arc::new(Shared {
            call_token,
            config,
            workers: RwLock::new(workers),
            links: Mutex::new(HashMap::new()),
            metrics,
            round_robin: AtomicUsize::new(0),
            discovery,
        });
        registry.register_collector(Box::new(metrics::WorkersCollector {
            shared: Arc::downgrade(&shared),
        }));
        for task in tasks {
            tokio::spawn(task);
        }
        if let Some(view) = shared.discovery.clone() {
            tokio::spawn(reconcile(Arc::downgrade(&shared), view, shutdown.clone()));
        }
        tokio::spawn(health::run(Arc::downgrade(&shared), shutdown));
        Ok(Self { shared })
    }

    /// Readiness checks: at least one worker ready (required), and the registry's state (reported).
    pub fn checks(&self) -> Vec<Arc<dyn HealthCheck>> {
        let mut checks: Vec<Arc<dyn HealthCheck>> = vec![Arc::new(WorkersCheck {
            shared: self.shared.clone(),
        })];
        if let Some(view) = &self.shared.discovery {
            checks.push(Arc::new(RegistryCheck { view: view.clone() }));
        }
        checks
    }

    /// One check per statically configured worker (`address`, check): its last gRPC health check
    /// passed and no stream to it failed since. The alert engine watches these.
    pub fn worker_checks(&self) -> Vec<(String, Arc<dyn HealthCheck>)> {
        self.shared
            .config
            .addresses
            .iter()
            .map(|address| {
                let check: Arc<dyn HealthCheck> = Arc::new(WorkerUpCheck {
                    shared: self.shared.clone(),
                    address: address.clone(),
                });
                (address.clone(), check)
            })
            .collect()
    }
}

impl Synthesizer for RemoteWorkers {
    fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let session_id = job.session_id.clone();
        let metrics = &self.shared.metrics;
        let mut links = self.shared.links();
        let mut job = job;
        if let Some(inbox) = links.get(&session_id) {
            match inbox.push_job(job) {
                Ok(discarded) => {
                    metrics.chunks_discarded(discarded);
                    return Ok(());
                }
                Err(Refused::Full) => {
                    metrics.inbox_full();
                    tracing::warn!(session_id = %session_id, "A session's worker link has a full inbox; the chunk is refused.");
                    return Err(SubmitError::QueueFull(self.shared.config.link_inbox_capacity));
                }
                Err(Refused::Closed(returned)) => job = returned,
            }
        }
        let inbox = Inbox::new(self.shared.config.link_inbox_capacity);
        if inbox.push_job(job).is_err() {
            return Err(SubmitError::ShutDown);
        }
        links.insert(session_id.clone(), inbox.clone());
        drop(links);
        tokio::spawn(link::run(self.shared.clone(), session_id, inbox));
        Ok(())
    }

    fn control(&self, session_id: &Arc<str>, command: Command) {
        let Some(inbox) = self.shared.links().get(session_id).cloned() else {
            return;
        };
        let (controlled, discarded) = inbox.control(command);
        self.shared.metrics.chunks_discarded(discarded);
        if controlled == Controlled::Coalesced {
            self.shared.metrics.control_coalesced();
        }
    }

    fn end_session(&self, session_id: &Arc<str>) {
        if let Some(inbox) = self.shared.links().remove(session_id) {
            inbox.end();
        }
    }

    /// Engine threads, their load and the queue as the usable workers last reported them; discarded chunks
    /// and busy seconds as this gateway counted them (chunks it dropped before they reached a worker, and
    /// the engine seconds workers reported for this gateway's finished chunks). Engine panics are counted
    /// by each worker (`tts_pool_engine_panics_total` on its own `/metrics`), not here.
    fn stats(&self) -> PoolStats {
        let (discarded, busy_seconds) = self.shared.metrics.totals();
        let mut stats = PoolStats {
            threads: 0,
            busy: 0,
            queued: 0,
            queue_capacity: 0,
            discarded,
            busy_seconds,
            panics: 0,
        };
        for worker in self.shared.workers().iter().filter(|w| w.usable()) {
            let report = worker.report();
            stats.threads += report.engine_threads as usize;
            stats.busy += report.busy_threads as usize;
            stats.queued += report.queued_chunks as usize;
        }
        stats
    }
}

impl Shared {
    fn workers(&self) -> Vec<Arc<WorkerHandle>> {
        self.workers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn links(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Inbox>>> {
        lock(&self.links)
    }

    /// The worker a session (or a failed-over chunk) should go to, skipping `exclude`; its session count
    /// is taken at once so that sessions placed together spread.
    fn pick(&self, voice: &str, exclude: &[String]) -> Option<Arc<WorkerHandle>> {
        let candidates: Vec<Arc<WorkerHandle>> = self
            .workers()
            .into_iter()
            .filter(|w| w.usable() && !exclude.contains(&w.name) && w.has_room())
            .collect();
        let chosen = match self.config.routing {
            Routing::RoundRobin => {
                if candidates.is_empty() {
                    None
                } else {
                    let index = self.round_robin.fetch_add(1, Ordering::Relaxed) % candidates.len();
                    candidates.get(index).cloned()
                }
            }
            Routing::LeastLoaded => candidates
                .iter()
                .min_by(|a, b| {
                    let key = |w: &WorkerHandle| (!w.has_resident(voice), w.load_ratio());
                    let (ra, la) = key(a);
                    let (rb, lb) = key(b);
                    ra.cmp(&rb)
                        .then(la.total_cmp(&lb))
                        .then_with(|| a.name.cmp(&b.name))
                })
                .cloned(),
        }?;
        chosen.sessions.fetch_add(1, Ordering::AcqRel);
        Some(chosen)
    }
}

impl WorkerHandle {
    /// Logs a failed health check with its whole cause chain (e.g. `invalid peer certificate:
    /// UnknownIssuer`) when it differs from the last one logged.
    fn note_failure(&self, status: &tonic::Status) {
        let mut text = status.message().to_owned();
        let mut source = std::error::Error::source(status);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        let mut last = lock(&self.last_failure);
        if last.as_deref() != Some(text.as_str()) {
            tracing::warn!(worker = %self.name, address = %self.address, error = %text, "Worker health check failed.");
            *last = Some(text);
        }
    }

    fn new(
        name: &str,
        address: &str,
        metrics: &RemoteMetrics,
        token: &CallToken,
        tls: Option<&tonic::transport::ClientTlsConfig>,
    ) -> Result<Self, RemoteError> {
        let bad_address = |error: tonic::transport::Error| RemoteError::Address {
            address: address.to_owned(),
            reason: error.to_string(),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}")).map_err(bad_address)?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(bad_address)?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            // A worker that stops answering (hung, or its machine gone) fails its streams within ~3 s
            // even when no chunk is running.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        let label = metrics.label(name);
        metrics.worker_known(&label);
        Ok(Self {
            name: name.to_owned(),
            address: address.to_owned(),
            label,
            client: WorkerClient::with_interceptor(channel.clone(), token.clone()),
            health: HealthClient::with_interceptor(channel, token.clone()),
            up: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            sessions: AtomicU32::new(0),
            report: Mutex::new(Report::default()),
            last_failure: Mutex::new(None),
        })
    }

    fn usable(&self) -> bool {
        self.up.load(Ordering::Acquire)
            && self.ready.load(Ordering::Acquire)
            && !self.gone.load(Ordering::Acquire)
    }

    fn report(&self) -> Report {
        lock(&self.report).clone()
    }

    fn has_room(&self) -> bool {
        let max = self.report().max_sessions;
        max == 0 || self.sessions.load(Ordering::Acquire) < max
    }

    fn has_resident(&self, voice: &str) -> bool {
        lock(&self.report).resident_voices.iter().any(|v| v == voice)
    }

    /// This gateway's sessions there, or what the worker reports when other gateways use it too.
    fn active(&self) -> u32 {
        let report = self.report();
        self.sessions.load(Ordering::Acquire).max(report.active_sessions)
    }

    fn load_ratio(&self) -> f64 {
        let max = self.report().max_sessions.max(1);
        f64::from(self.active()) / f64::from(max)
    }

    fn release_session(&self) {
        let _ = self
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    fn mark_down(&self) {
        self.up.store(false, Ordering::Release);
    }

    /// up, sessions active, sessions max, load ratio, queue depth.
    fn gauges(&self) -> [f64; 5] {
        let report = self.report();
        [
            if self.up.load(Ordering::Acquire) { 1.0 } else { 0.0 },
            f64::from(self.sessions.load(Ordering::Acquire)),
            f64::from(report.max_sessions),
            self.load_ratio(),
            f64::from(report.queued_chunks),
        ]
    }

    fn apply_record(&self, record: &WorkerRecord) {
        let mut report = lock(&self.report);
        report.max_sessions = record.max_sessions;
        report.active_sessions = record.active_sessions;
        report.resident_voices = record.resident_voices.clone();
        report.engine_threads = record.engine_threads;
        report.busy_threads = record.busy_threads;
        report.queued_chunks = record.queued_chunks;
    }
}

/// Keeps the worker list in step with the registry. Redis being down leaves the last view in place.
async fn reconcile(
    shared: std::sync::Weak<Shared>,
    mut view: watch::Receiver<DiscoveryView>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = view.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let records = view.borrow_and_update().workers.clone();
        let mut workers = shared
            .workers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for worker in workers.iter() {
            let present = records
                .iter()
                .any(|r| r.name == worker.name && r.address == worker.address);
            let static_worker = shared.config.addresses.contains(&worker.address);
            worker.gone.store(!present && !static_worker, Ordering::Release);
        }
        for record in &records {
            match workers
                .iter()
                .find(|w| w.name == record.name && w.address == record.address)
            {
                Some(worker) => worker.apply_record(record),
                None => match WorkerHandle::new(
                    &record.name,
                    &record.address,
                    &shared.metrics,
                    &shared.call_token,
                    shared.config.tls.as_ref(),
                ) {
                    Ok(worker) => {
                        worker.apply_record(record);
                        tracing::info!(worker = %record.name, address = %record.address, "Worker discovered.");
                        workers.push(Arc::new(worker));
                    }
                    Err(error) => {
                        tracing::warn!(worker = %record.name, error = %error, "Worker registration has a bad address.");
                    }
                },
            }
        }
        // Forget workers that left and carry no sessions of ours.
        workers.retain(|w| !w.gone.load(Ordering::Acquire) || w.sessions.load(Ordering::Acquire) > 0);
    }
}

/// `/readiness`: at least one worker can take a session.
struct WorkersCheck {
    shared: Arc<Shared>,
}

impl HealthCheck for WorkersCheck {
    fn name(&self) -> &str {
        "workers"
    }

    fn required_for_readiness(&self) -> bool {
        true
    }

    fn check(&self) -> CheckResult {
        let workers = self.shared.workers();
        let ready: Vec<&str> = workers
            .iter()
            .filter(|w| w.usable())
            .map(|w| w.name.as_str())
            .collect();
        let detail = format!(
            "{} of {} workers ready: [{}]",
            ready.len(),
            workers.len(),
            ready.join(", ")
        );
        if ready.is_empty() {
            CheckResult::fail(detail)
        } else {
            CheckResult::pass(detail)
        }
    }
}

/// One worker's gRPC health, as the gateway last saw it.
struct WorkerUpCheck {
    shared: Arc<Shared>,
    address: String,
}

impl HealthCheck for WorkerUpCheck {
    fn name(&self) -> &str {
        "worker_grpc_health"
    }

    fn required_for_readiness(&self) -> bool {
        false
    }

    fn check(&self) -> CheckResult {
        let workers = self.shared.workers();
        match workers.iter().find(|w| w.address == self.address) {
            Some(w) if w.up.load(Ordering::Acquire) => {
                CheckResult::pass(format!("{} is serving", self.address))
            }
            Some(_) => CheckResult::fail(format!("{} is not serving", self.address)),
            None => CheckResult::fail(format!("{} is not known", self.address)),
        }
    }
}

/// Reports the registry's reachability; not required, since routing goes on from the last view.
struct RegistryCheck {
    view: watch::Receiver<DiscoveryView>,
}

impl HealthCheck for RegistryCheck {
    fn name(&self) -> &str {
        "redis"
    }

    fn required_for_readiness(&self) -> bool {
        false
    }

    fn check(&self) -> CheckResult {
        let view = self.view.borrow();
        let age = view
            .last_success
            .map(|at| format!("{:.1} s ago", at.elapsed().as_secs_f64()))
            .unwrap_or_else(|| "never".to_owned());
        if view.redis_ok {
            CheckResult::pass(format!(
                "{} workers registered; last scan {age}",
                view.workers.len()
            ))
        } else {
            CheckResult::fail(format!(
                "unreachable ({}); routing on the last view of {} workers from {age}",
                view.last_error.as_deref().unwrap_or("no scan yet"),
                view.workers.len()
            ))
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
