//! Admission: who may open a session (WebSocket), an HTTP speech request or a Wyoming synthesis.
//!
//! Two limits, checked in this order when something asks for a slot:
//! - **the count**, `gateway.max_sessions`: a hard ceiling on slots held at once;
//! - **engine headroom**, `gateway.admission_max_utilisation` (0 turns it off): the slot is refused when
//!   holding it would take the estimated engine utilisation past the limit.
//!
//! The estimate is deliberately simple. Every chunk that finishes tells what it cost: engine seconds per
//! second of audio (its real-time factor). [`EngineHeadroom`] keeps an average of that over roughly the last
//! [`RTF_SMOOTHING_AUDIO_SECONDS`] of audio, all voices together, weighted by audio. A session that speaks
//! without pause consumes one second of audio per second, so it keeps `rtf` engine threads busy; with `n`
//! slots held and `threads` engine threads (in process: the pool's; remote: the engine threads of the
//! usable workers, as they report them), utilisation is `n × rtf / threads`. A new slot is admitted while
//! `(n + 1) × rtf / threads ≤ limit`. This assumes every slot may speak at once, so a limit of 1.0 admits
//! what the engines can keep real time in the worst case; deployments whose sessions mostly listen can
//! overcommit with a limit above 1. Until the first chunk finishes there is no estimate and only the count
//! applies. The machine's speed is measured, not configured: on a slower or busier machine chunks take
//! longer, the estimate rises and fewer sessions are admitted.

mod metered;
mod metrics;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use prometheus_client::registry::Registry;
use tts_core::pool::JobStats;
use tts_telemetry::admin::{CheckResult, HealthCheck};

use crate::GatewayState;
use crate::synth::Synthesizer;
pub use metered::Metered;
use metrics::Metrics;
pub(crate) use metrics::RefusedBy;

/// Audio seconds over which the real-time factor is averaged: a chunk of `a` seconds moves the estimate
/// `1 − e^(−a / 30)` of the way to its own value.
pub(crate) const RTF_SMOOTHING_AUDIO_SECONDS: f64 = 30.0;
/// Chunks shorter than this say little about a voice's speed (fixed per-chunk costs dominate).
const MIN_SAMPLE_AUDIO_SECONDS: f64 = 0.05;

/// Counts held slots against `max_sessions`, and asks [`EngineHeadroom`] (when attached) about the rest.
#[derive(Debug)]
pub(crate) struct Admission {
    active: Arc<AtomicUsize>,
    max: usize,
    headroom: OnceLock<Arc<EngineHeadroom>>,
}

/// Holds one slot until dropped.
#[derive(Debug)]
pub(crate) struct Permit<'a>(&'a Admission);

impl Admission {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            active: Arc::new(AtomicUsize::new(0)),
            max,
            headroom: OnceLock::new(),
        }
    }

    /// Attaches the headroom estimate; later calls are ignored.
    pub(crate) fn set_headroom(&self, headroom: Arc<EngineHeadroom>) {
        headroom.attach(Arc::downgrade(&self.active));
        let _ = self.headroom.set(headroom);
    }

    /// A slot, or which limit refused it (counted in `tts_gateway_admission_refusals_total`).
    pub(crate) fn try_acquire(&self) -> Result<Permit<'_>, RefusedBy> {
        let mut current = self.active.load(Ordering::Relaxed);
        loop {
            if current >= self.max {
                return Err(self.refused(RefusedBy::MaxSessions));
            }
            match self
                .active
                .compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let permit = Permit(self);
        if let Some(headroom) = self.headroom.get()
            && !headroom.admits(current + 1)
        {
            drop(permit);
            return Err(self.refused(RefusedBy::EngineHeadroom));
        }
        Ok(permit)
    }

    fn refused(&self, by: RefusedBy) -> RefusedBy {
        if let Some(headroom) = self.headroom.get() {
            headroom.metrics.refused(by);
        }
        by
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The configured session limit, for refusal messages.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A slot held by an HTTP request or a Wyoming synthesis, which outlive any borrow of the state: the
/// same limits count WebSocket sessions and these together.
pub(crate) struct OwnedPermit(Arc<GatewayState>);

impl OwnedPermit {
    pub(crate) fn try_new(state: &Arc<GatewayState>) -> Option<Self> {
        if state.draining() {
            return None;
        }
        let permit = state.admission.try_acquire().ok()?;
        // The slot now belongs to this value; its Drop gives it back.
        std::mem::forget(permit);
        Some(Self(state.clone()))
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        self.0.admission.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The engine-headroom estimate and its limit (see the module documentation).
pub struct EngineHeadroom {
    /// `gateway.admission_max_utilisation`; 0 = only report, never refuse.
    limit: f64,
    /// Engine seconds per audio second, averaged; None until a chunk finished.
    rtf: Mutex<Option<f64>>,
    /// Held slots (the gateway's admission count), once attached.
    active: OnceLock<Weak<AtomicUsize>>,
    /// Where engine threads are counted, once [`EngineHeadroom::meter`] wrapped it.
    synthesizer: OnceLock<Weak<dyn Synthesizer>>,
    metrics: Metrics,
}

impl std::fmt::Debug for EngineHeadroom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHeadroom")
            .field("limit", &self.limit)
            .field("rtf", &self.real_time_factor())
            .finish_non_exhaustive()
    }
}

/// A snapshot of the estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Slots held now.
    pub sessions: usize,
    /// Engine threads wherever synthesis runs.
    pub threads: usize,
    /// Engine seconds per audio second, averaged; None until a chunk finished.
    pub real_time_factor: Option<f64>,
}

impl Estimate {
    /// Engine utilisation if `sessions` slots all speak at once: `sessions × rtf / threads`.
    pub fn utilisation(&self, sessions: usize) -> Option<f64> {
        let rtf = self.real_time_factor?;
        (self.threads > 0).then(|| sessions as f64 * rtf / self.threads as f64)
    }
}

impl EngineHeadroom {
    /// `limit` is `gateway.admission_max_utilisation` (0 = off); the gauges and the refusal counter go to
    /// `registry`.
    pub fn new(limit: f64, registry: &mut Registry) -> Arc<Self> {
        let headroom = Arc::new(Self {
            limit,
            rtf: Mutex::new(None),
            active: OnceLock::new(),
            synthesizer: OnceLock::new(),
            metrics: Metrics::register(registry),
        });
        metrics::register_collector(registry, Arc::downgrade(&headroom));
        headroom
    }

    /// Wraps `inner` so that every finished chunk updates the estimate; hand the result to the gateway.
    pub fn meter(self: &Arc<Self>, inner: Arc<dyn Synthesizer>) -> Arc<dyn Synthesizer> {
        let _ = self.synthesizer.set(Arc::downgrade(&inner));
        Arc::new(Metered::new(inner, self.clone()))
    }

    /// The `/readiness` check: fails while one more session would be refused for lack of headroom.
    pub fn check(self: &Arc<Self>) -> Arc<dyn HealthCheck> {
        Arc::new(HeadroomCheck(self.clone()))
    }

    fn attach(&self, active: Weak<AtomicUsize>) {
        let _ = self.active.set(active);
    }

    /// Takes one finished chunk's cost into the average.
    pub(crate) fn observe(&self, stats: &JobStats) {
        if stats.audio_seconds < MIN_SAMPLE_AUDIO_SECONDS {
            return;
        }
        let sample = stats.engine_time.as_secs_f64() / stats.audio_seconds;
        if !sample.is_finite() || sample < 0.0 {
            return;
        }
        let weight = 1.0 - (-stats.audio_seconds / RTF_SMOOTHING_AUDIO_SECONDS).exp();
        let mut rtf = self.rtf.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *rtf = Some(match *rtf {
            Some(current) => current + weight * (sample - current),
            None => sample,
        });
    }

    pub fn real_time_factor(&self) -> Option<f64> {
        *self.rtf.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configured limit (0 = off).
    pub fn limit(&self) -> f64 {
        self.limit
    }

    pub fn estimate(&self) -> Estimate {
        let sessions = self
            .active
            .get()
            .and_then(Weak::upgrade)
            .map_or(0, |active| active.load(Ordering::Relaxed));
        let threads = self
            .synthesizer
            .get()
            .and_then(Weak::upgrade)
            .map_or(0, |synth| synth.stats().threads);
        Estimate {
            sessions,
            threads,
            real_time_factor: self.real_time_factor(),
        }
    }

    /// Whether `sessions` slots (the new one included) fit under the limit. No limit, no estimate yet, or
    /// no engine threads known (no worker up: the backend refuses the work itself) all admit.
    fn admits(&self, sessions: usize) -> bool {
        if self.limit <= 0.0 {
            return true;
        }
        self.estimate()
            .utilisation(sessions)
            .is_none_or(|utilisation| utilisation <= self.limit)
    }
}

/// `/readiness` fails at the limit, so a load balancer sends new sessions elsewhere before they are
/// refused here.
struct HeadroomCheck(Arc<EngineHeadroom>);

impl HealthCheck for HeadroomCheck {
    fn name(&self) -> &str {
        "engine_headroom"
    }

    fn required_for_readiness(&self) -> bool {
        self.0.limit > 0.0
    }

    fn check(&self) -> CheckResult {
        let estimate = self.0.estimate();
        let limit = self.0.limit;
        let Some(now) = estimate.utilisation(estimate.sessions) else {
            return CheckResult::pass(format!(
                "{} sessions; no engine cost measured yet (limit {limit})",
                estimate.sessions
            ));
        };
        let next = estimate.utilisation(estimate.sessions + 1).unwrap_or(now);
        let detail = format!(
            "{} sessions x real-time factor {:.3} / {} engine threads = utilisation {now:.2}; one more: {next:.2} (limit {limit})",
            estimate.sessions,
            estimate.real_time_factor.unwrap_or_default(),
            estimate.threads,
        );
        if limit > 0.0 && next > limit {
            CheckResult::fail(format!("at the limit: {detail}"))
        } else {
            CheckResult::pass(detail)
        }
    }
}

#[cfg(test)]
mod tests;
