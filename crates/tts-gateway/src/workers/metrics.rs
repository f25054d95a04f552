//! The gateway's view of its remote workers: RPC latency and errors, health checks, failovers, the gRPC
//! hop, and per-worker gauges read from the live view at scrape time (so a worker that left has no
//! stale series). The `worker` label is bounded: past [`MAX_LABELLED_WORKERS`] names, `other`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::Shared;

/// Distinct worker names that get their own label value.
pub(crate) const MAX_LABELLED_WORKERS: usize = 64;

const RPC_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];
const GAP_BUCKETS: [f64; 10] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0];
/// The hop is transport only: tens of microseconds on loopback, milliseconds across a network.
const HOP_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Method {
    start_session,
    end_session,
    synthesize,
    control,
    get_capabilities,
    health_check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum FailoverReason {
    unavailable,
    deadline,
    stream_error,
    draining,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum CheckOutcome {
    ok,
    failed,
    timeout,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RpcLabels {
    worker: String,
    method: Method,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RpcErrorLabels {
    worker: String,
    method: Method,
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CheckLabels {
    worker: String,
    outcome: CheckOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailoverLabels {
    worker: String,
    reason: FailoverReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

/// Counters and histograms; the gauges come from [`WorkersCollector`].
#[derive(Clone)]
pub struct RemoteMetrics {
    rpc: Family<RpcLabels, Histogram>,
    rpc_errors: Family<RpcErrorLabels, Counter>,
    checks: Family<CheckLabels, Counter>,
    failovers: Family<FailoverLabels, Counter>,
    failover_gap: Histogram,
    hop: Family<WorkerLabels, Histogram>,
    engine_busy: Family<WorkerLabels, Counter<f64, AtomicU64>>,
    discarded: Counter,
    inbox_full: Counter,
    coalesced: Counter,
    /// Sum of `engine_busy` over workers, in nanoseconds, for [`RemoteMetrics::totals`].
    busy_nanos: Arc<AtomicU64>,
    labelled: Arc<Mutex<HashSet<String>>>,
}

impl RemoteMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            rpc: Family::new_with_constructor(|| Histogram::new(RPC_BUCKETS)),
            rpc_errors: Family::default(),
            checks: Family::default(),
            failovers: Family::default(),
            failover_gap: Histogram::new(GAP_BUCKETS),
            hop: Family::new_with_constructor(|| Histogram::new(HOP_BUCKETS)),
            engine_busy: Family::default(),
            discarded: Counter::default(),
            inbox_full: Counter::default(),
            coalesced: Counter::default(),
            busy_nanos: Arc::default(),
            labelled: Arc::default(),
        };
        registry.register_with_unit(
            "tts_worker_rpc",
            "Worker RPCs from this gateway: request sent to response (unary); synthesize: chunk sent to first audio back",
            Unit::Seconds,
            metrics.rpc.clone(),
        );
        registry.register(
            "tts_worker_rpc_errors",
            "Worker RPCs that ended in a non-OK gRPC status, by code",
            metrics.rpc_errors.clone(),
        );
        registry.register(
            "tts_worker_health_checks",
            "grpc.health.v1 checks this gateway ran against each worker",
            metrics.checks.clone(),
        );
        registry.register(
            "tts_worker_failovers",
            "Synthesis moved to another worker mid-utterance, by the worker taking over and why",
            metrics.failovers.clone(),
        );
        registry.register_with_unit(
            "tts_worker_failover_gap",
            "Last audio from the failed worker (or the failure, if none came) to first audio from its replacement",
            Unit::Seconds,
            metrics.failover_gap.clone(),
        );
        registry.register_with_unit(
            "tts_worker_hop",
            "Per chunk: chunk sent to first audio received at the gateway, minus the worker's own chunk received to first audio sent",
            Unit::Seconds,
            metrics.hop.clone(),
        );
        metrics.register_link(registry);
        metrics
    }

    fn register_link(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "tts_worker_engine_busy",
            "Engine seconds each worker reported for this gateway's finished chunks",
            Unit::Seconds,
            self.engine_busy.clone(),
        );
        registry.register(
            "tts_worker_chunks_discarded",
            "Chunks this gateway dropped before sending them to a worker, because the session had stopped them",
            self.discarded.clone(),
        );
        registry.register(
            "tts_worker_link_inbox_full",
            "Chunks refused because a session's worker link already had workers.link_inbox_capacity jobs queued (the utterance fails with OVERLOADED)",
            self.inbox_full.clone(),
        );
        registry.register(
            "tts_worker_link_controls_coalesced",
            "PAUSE, RESUME and STOP messages merged into one not yet sent to the worker instead of costing a Control call each",
            self.coalesced.clone(),
        );
    }

    pub(crate) fn engine_busy(&self, worker: &str, engine_time: Duration) {
        let labels = WorkerLabels {
            worker: worker.to_owned(),
        };
        self.engine_busy
            .get_or_create(&labels)
            .inc_by(engine_time.as_secs_f64());
        let nanos = u64::try_from(engine_time.as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn chunks_discarded(&self, count: usize) {
        if count > 0 {
            self.discarded.inc_by(count as u64);
        }
    }

    pub(crate) fn inbox_full(&self) {
        self.inbox_full.inc();
    }

    pub(crate) fn control_coalesced(&self) {
        self.coalesced.inc();
    }

    /// Chunks discarded and engine busy seconds so far, over all workers.
    pub(crate) fn totals(&self) -> (u64, f64) {
        (
            self.discarded.get(),
            self.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }

    /// The label value for a worker name: the name, until too many distinct names were seen.
    pub(crate) fn label(&self, name: &str) -> String {
        let mut labelled = self
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if labelled.contains(name) {
            return name.to_owned();
        }
        if labelled.len() < MAX_LABELLED_WORKERS {
            labelled.insert(name.to_owned());
            return name.to_owned();
        }
        "other".to_owned()
    }

    pub(crate) fn rpc(&self, worker: &str, method: Method, elapsed: Duration) {
        let labels = RpcLabels {
            worker: worker.to_owned(),
            method,
        };
        self.rpc.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    pub(crate) fn rpc_error(&self, worker: &str, method: Method, code: tonic::Code) {
        let labels = RpcErrorLabels {
            worker: worker.to_owned(),
            method,
            code: code_label(code),
        };
        self.rpc_errors.get_or_create(&labels).inc();
    }

    pub(crate) fn health_check(&self, worker: &str, outcome: CheckOutcome) {
        let labels = CheckLabels {
            worker: worker.to_owned(),
            outcome,
        };
        self.checks.get_or_create(&labels).inc();
    }

    pub(crate) fn failover(&self, worker: &str, reason: FailoverReason) {
        let labels = FailoverLabels {
            worker: worker.to_owned(),
            reason,
        };
        self.failovers.get_or_create(&labels).inc();
    }

    /// Series of a newly known worker, at zero.
    pub(crate) fn worker_known(&self, worker: &str) {
        let _ = self.engine_busy.get_or_create(&WorkerLabels {
            worker: worker.to_owned(),
        });
        for reason in [
            FailoverReason::unavailable,
            FailoverReason::deadline,
            FailoverReason::stream_error,
            FailoverReason::draining,
        ] {
            let _ = self.failovers.get_or_create(&FailoverLabels {
                worker: worker.to_owned(),
                reason,
            });
        }
    }

    pub(crate) fn failover_gap(&self, gap: Duration) {
        self.failover_gap.observe(gap.as_secs_f64());
    }

    pub(crate) fn hop(&self, worker: &str, hop: Duration) {
        let labels = WorkerLabels {
            worker: worker.to_owned(),
        };
        self.hop.get_or_create(&labels).observe(hop.as_secs_f64());
    }
}

/// gRPC status codes as label values (a closed set of 17).
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Per-worker gauges from the live view, at scrape time.
#[derive(Debug)]
pub(crate) struct WorkersCollector {
    pub(crate) shared: Weak<Shared>,
}

impl prometheus_client::collector::Collector for WorkersCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        let rows: Vec<(String, [f64; 5])> = shared
            .workers()
            .iter()
            .map(|w| (w.label.clone(), w.gauges()))
            .collect();
        let families: [(&str, &str); 5] = [
            (
                "tts_worker_up",
                "1 when the worker's last health check passed and no stream to it has failed since, else 0",
            ),
            (
                "tts_worker_sessions_active",
                "Sessions this gateway has placed on the worker and not yet ended",
            ),
            (
                "tts_worker_sessions_max",
                "Sessions the worker accepts (max_concurrent_sessions it reports)",
            ),
            (
                "tts_worker_load_ratio",
                "Sessions active over sessions max, 0..1: what least-loaded routing compares",
            ),
            (
                "tts_worker_queue_depth",
                "Chunks waiting at the worker's engine pool, from its last capabilities report",
            ),
        ];
        for (index, (name, help)) in families.iter().enumerate() {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
            for (worker, values) in &rows {
                let labels = WorkerLabels {
                    worker: worker.clone(),
                };
                let gauge = ConstGauge::new(values[index]);
                gauge.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
