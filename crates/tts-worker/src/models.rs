//! The model manager: which voices are resident on this worker, loaded once, warmed, and evicted when idle.
//!
//! - A voice is loaded on first use (or at startup, or on request) and counts as resident only once the
//!   loader has warmed it. Concurrent requests for a voice that is loading wait for that one load.
//! - Sessions and chunks hold a [`VoiceLease`] while they use a voice; a voice with a lease out is never
//!   unloaded, by the TTL, the cap or a manual request.
//! - Idle voices go after `idle_ttl`, but never before `min_residency`, so a voice loaded for one short
//!   session is not reloaded for the next one a minute later.
//! - At most `resident_cap` voices are resident or loading; a new one evicts the least recently used
//!   voice that may go, or is refused. At most `max_parallel_loads` loads run at once.
//!
//! It does not synthesise or know about sessions: the [`VoiceLoader`] does the engine work, and callers
//! decide what a lease is held for.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tts_core::voices::{EngineKind, UnknownVoice, VoiceCatalog, VoiceInfo};

mod error;
mod lease;
mod loader;
mod metrics;
mod reasons;
#[cfg(test)]
mod tests;

pub use error::ModelError;
pub use lease::VoiceLease;
pub use loader::{LoadFailure, LoadFailureReason, LoadTimings, PoolLoader, VoiceLoader};
pub use metrics::ModelMetrics;
pub use reasons::{LoadReason, UnloadReason};

/// Voices resident (or loading) at once.
pub const DEFAULT_RESIDENT_CAP: usize = 4;
/// A voice nobody has used for this long is unloaded.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(600);
/// A voice is never unloaded for idleness or evicted sooner than this after it was loaded.
pub const DEFAULT_MIN_RESIDENCY: Duration = Duration::from_secs(120);
/// Loads run one at a time by default: two loads compete for the same cores and memory bandwidth, and
/// the second voice is not ready any sooner.
pub const DEFAULT_MAX_PARALLEL_LOADS: usize = 1;
/// How often the sweeper looks for voices idle past the TTL.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Residency limits and timings.
#[derive(Debug, Clone)]
pub struct ModelManagerConfig {
    pub resident_cap: usize,
    pub idle_ttl: Duration,
    pub min_residency: Duration,
    /// Zero is taken as one.
    pub max_parallel_loads: usize,
    pub sweep_interval: Duration,
}

impl Default for ModelManagerConfig {
    fn default() -> Self {
        Self {
            resident_cap: DEFAULT_RESIDENT_CAP,
            idle_ttl: DEFAULT_IDLE_TTL,
            min_residency: DEFAULT_MIN_RESIDENCY,
            max_parallel_loads: DEFAULT_MAX_PARALLEL_LOADS,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }
}

/// What [`ModelManager::load`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOutcome {
    pub already_resident: bool,
    /// How long this call waited for the voice to become resident (zero when it already was).
    pub waited: Duration,
}

/// One catalog voice as the manager sees it now.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub voice: Arc<VoiceInfo>,
    pub resident: bool,
    /// Leases out now.
    pub in_use: u32,
    /// Since the load finished; None when not resident.
    pub resident_for: Option<Duration>,
    /// Since the last lease was released (or the load, if none was taken); zero while in use, None when
    /// not resident.
    pub idle_for: Option<Duration>,
}

/// Decides which voices are resident; see the module docs.
pub struct ModelManager {
    config: ModelManagerConfig,
    /// The catalog's voices, shared with leases and statuses instead of cloned for each.
    voices: BTreeMap<String, Arc<VoiceInfo>>,
    /// Engines that have at least one voice, so their resident gauge reads 0 rather than being absent.
    engines: Vec<EngineKind>,
    loader: Arc<dyn VoiceLoader>,
    metrics: ModelMetrics,
    load_slots: Semaphore,
    /// Never held across an await; the loader's `unload` runs under it (see [`ModelManager::unload_locked`]).
    slots: Mutex<HashMap<String, Slot>>,
}

enum Slot {
    /// Waiters subscribe; the load task sends the result once and removes the slot in the same lock.
    Loading(watch::Sender<Option<Result<(), LoadFailure>>>),
    Resident(Residency),
}

struct Residency {
    since: Instant,
    last_used: Instant,
    in_use: u32,
}

impl Residency {
    /// Not in use and resident long enough that unloading it will not cause a reload soon after a load.
    fn may_go(&self, now: Instant, min_residency: Duration) -> bool {
        self.in_use == 0 && now.duration_since(self.since) >= min_residency
    }
}

/// What a caller does after looking at a voice's slot.
enum Claim {
    Resident,
    Wait(watch::Receiver<Option<Result<(), LoadFailure>>>),
}

impl ModelManager {
    pub fn new(
        config: ModelManagerConfig,
        catalog: Arc<VoiceCatalog>,
        loader: Arc<dyn VoiceLoader>,
        metrics: ModelMetrics,
    ) -> Arc<Self> {
        let voices: BTreeMap<String, Arc<VoiceInfo>> = catalog
            .iter()
            .map(|voice| (voice.id.clone(), Arc::new(voice.clone())))
            .collect();
        let mut engines: Vec<EngineKind> = Vec::new();
        for voice in voices.values() {
            if !engines.contains(&voice.engine) {
                engines.push(voice.engine);
            }
        }
        let manager = Self {
            load_slots: Semaphore::new(config.max_parallel_loads.max(1)),
            config,
            voices,
            engines,
            loader,
            metrics,
            slots: Mutex::new(HashMap::new()),
        };
        manager.publish_resident(&manager.lock());
        Arc::new(manager)
    }

    /// Makes the voice resident (loading it if needed, single-flight) and holds it until the lease drops.
    pub async fn acquire(
        self: &Arc<Self>,
        voice_id: &str,
        reason: LoadReason,
    ) -> Result<VoiceLease, ModelError> {
        let (voice, _) = self.make_resident(voice_id, reason, true).await?;
        Ok(VoiceLease {
            manager: self.clone(),
            voice,
        })
    }

    /// Makes the voice resident without holding it.
    pub async fn load(
        self: &Arc<Self>,
        voice_id: &str,
        reason: LoadReason,
    ) -> Result<LoadOutcome, ModelError> {
        let started = Instant::now();
        let (_, already_resident) = self.make_resident(voice_id, reason, false).await?;
        Ok(LoadOutcome {
            already_resident,
            waited: if already_resident {
                Duration::ZERO
            } else {
                started.elapsed()
            },
        })
    }

    /// Manual unload; refuses a voice in use or loading. A voice that is not resident is already unloaded.
    pub fn unload(&self, voice_id: &str) -> Result<(), ModelError> {
        let voice = self.voice(voice_id)?;
        let mut slots = self.lock();
        let in_use = |users: u32| ModelError::InUse {
            voice: voice.id.clone(),
            users,
        };
        match slots.get(voice_id) {
            None => return Ok(()),
            // The load's waiters are about to use it.
            Some(Slot::Loading(done)) => {
                return Err(in_use(u32::try_from(done.receiver_count()).unwrap_or(u32::MAX)));
            }
            Some(Slot::Resident(residency)) if residency.in_use > 0 => {
                return Err(in_use(residency.in_use));
            }
            Some(Slot::Resident(_)) => {}
        }
        self.unload_locked(&mut slots, &voice, UnloadReason::Manual);
        self.publish_resident(&slots);
        Ok(())
    }

    /// Unloads voices idle past the TTL (only those resident at least min_residency and not in use).
    /// Returns what it unloaded, sorted.
    pub fn sweep(&self) -> Vec<String> {
        let now = Instant::now();
        let mut slots = self.lock();
        let mut expired: Vec<String> = slots
            .iter()
            .filter(|(_, slot)| match slot {
                Slot::Resident(residency) => {
                    residency.may_go(now, self.config.min_residency)
                        && now.duration_since(residency.last_used) >= self.config.idle_ttl
                }
                Slot::Loading(_) => false,
            })
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        for id in &expired {
            if let Some(voice) = self.voices.get(id).cloned() {
                self.unload_locked(&mut slots, &voice, UnloadReason::Ttl);
            }
        }
        if !expired.is_empty() {
            self.publish_resident(&slots);
        }
        expired
    }

    /// Sweeps every `sweep_interval` until `shutdown` reads true (or its sender is gone).
    pub fn spawn_sweeper(
        self: &Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let manager = self.clone();
        // tokio's interval panics on a zero period.
        let period = self.config.sweep_interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !*shutdown.borrow_and_update() {
                tokio::select! {
                    _ = ticks.tick() => {
                        manager.sweep();
                    }
                    changed = shutdown.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    }

    /// Every catalog voice, sorted by id.
    pub fn list(&self) -> Vec<ModelStatus> {
        let now = Instant::now();
        let slots = self.lock();
        self.voices
            .values()
            .map(|voice| match slots.get(&voice.id) {
                Some(Slot::Resident(residency)) => ModelStatus {
                    voice: voice.clone(),
                    resident: true,
                    in_use: residency.in_use,
                    resident_for: Some(now.duration_since(residency.since)),
                    idle_for: Some(if residency.in_use > 0 {
                        Duration::ZERO
                    } else {
                        now.duration_since(residency.last_used)
                    }),
                },
                Some(Slot::Loading(_)) | None => ModelStatus {
                    voice: voice.clone(),
                    resident: false,
                    in_use: 0,
                    resident_for: None,
                    idle_for: None,
                },
            })
            .collect()
    }

    /// Resident voice ids, sorted.
    pub fn resident(&self) -> Vec<String> {
        let slots = self.lock();
        let mut ids: Vec<String> = slots
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Resident(_)))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn is_resident(&self, voice_id: &str) -> bool {
        matches!(self.lock().get(voice_id), Some(Slot::Resident(_)))
    }

    fn voice(&self, voice_id: &str) -> Result<Arc<VoiceInfo>, ModelError> {
        self.voices.get(voice_id).cloned().ok_or_else(|| {
            ModelError::UnknownVoice(UnknownVoice {
                requested: voice_id.to_owned(),
                available: self.voices.keys().cloned().collect(),
            })
        })
    }

    /// Returns once the voice is resident (and, with `hold`, its in-use count taken), and whether it
    /// already was.
    async fn make_resident(
        self: &Arc<Self>,
        voice_id: &str,
        reason: LoadReason,
        hold: bool,
    ) -> Result<(Arc<VoiceInfo>, bool), ModelError> {
        let voice = self.voice(voice_id)?;
        let mut already_resident = true;
        // A voice can be unloaded between its load finishing and a waiter claiming it (only with a zero
        // minimum residency); the waiter then goes round again.
        loop {
            let mut done = match self.claim(&voice, reason, hold)? {
                Claim::Resident => return Ok((voice, already_resident)),
                Claim::Wait(done) => done,
            };
            already_resident = false;
            let result = match done.wait_for(Option::is_some).await {
                Ok(result) => result.clone(),
                Err(_) => Some(Err(LoadFailure::new(
                    LoadFailureReason::Other,
                    "the load was abandoned before it finished",
                ))),
            };
            if let Some(Err(failure)) = result {
                return Err(ModelError::load_failed(&voice, failure));
            }
        }
    }

    /// Takes the resident voice, joins its load, or starts one (evicting for the cap first).
    fn claim(
        self: &Arc<Self>,
        voice: &Arc<VoiceInfo>,
        reason: LoadReason,
        hold: bool,
    ) -> Result<Claim, ModelError> {
        let mut slots = self.lock();
        match slots.get_mut(&voice.id) {
            Some(Slot::Resident(residency)) => {
                if hold {
                    residency.in_use += 1;
                }
                return Ok(Claim::Resident);
            }
            Some(Slot::Loading(done)) => return Ok(Claim::Wait(done.subscribe())),
            None => {}
        }
        if slots.len() >= self.config.resident_cap {
            let now = Instant::now();
            let victim = slots
                .iter()
                .filter_map(|(id, slot)| match slot {
                    Slot::Resident(residency) if residency.may_go(now, self.config.min_residency) => {
                        Some((residency.last_used, id))
                    }
                    _ => None,
                })
                .min()
                .and_then(|(_, id)| self.voices.get(id).cloned());
            let Some(victim) = victim else {
                return Err(ModelError::CapReached {
                    cap: self.config.resident_cap,
                });
            };
            self.unload_locked(&mut slots, &victim, UnloadReason::Lru);
            self.publish_resident(&slots);
        }
        let (done, waiting) = watch::channel(None);
        slots.insert(voice.id.clone(), Slot::Loading(done));
        drop(slots);
        // The load runs on its own task so that a caller giving up does not abandon the other waiters.
        tokio::spawn(self.clone().run_load(voice.clone(), reason));
        Ok(Claim::Wait(waiting))
    }

    async fn run_load(self: Arc<Self>, voice: Arc<VoiceInfo>, reason: LoadReason) {
        let mut abandoned = AbandonedLoad {
            manager: &self,
            voice_id: &voice.id,
            armed: true,
        };
        // The semaphore is never closed, so the permit always comes.
        let _permit = self.load_slots.acquire().await;
        let started = Instant::now();
        let result = self.loader.load(voice.clone()).await;
        let elapsed = started.elapsed();
        abandoned.armed = false;
        let mut slots = self.lock();
        let done = match slots.remove(&voice.id) {
            Some(Slot::Loading(done)) => done,
            // Only this task removes a loading slot; nothing to report to if it is gone.
            _ => return,
        };
        let result = match result {
            Ok(timings) => {
                let now = Instant::now();
                slots.insert(
                    voice.id.clone(),
                    Slot::Resident(Residency {
                        since: now,
                        last_used: now,
                        in_use: 0,
                    }),
                );
                self.publish_resident(&slots);
                // The clock starts at the permit, so time spent waiting for a blocking thread counts as
                // load; the loader's own warm-up figure is what is taken out of it.
                let load = elapsed.saturating_sub(timings.warmup);
                self.metrics.loaded(&voice, reason, load, timings.warmup);
                tracing::info!(
                    voice = %voice.id,
                    reason = reason.as_str(),
                    seconds = elapsed.as_secs_f64(),
                    load_seconds = load.as_secs_f64(),
                    warmup_seconds = timings.warmup.as_secs_f64(),
                    "Voice loaded."
                );
                Ok(())
            }
            Err(failure) => {
                self.metrics.load_failed(&voice, failure.reason);
                tracing::warn!(
                    voice = %voice.id,
                    reason = reason.as_str(),
                    failure = failure.reason.as_str(),
                    seconds = elapsed.as_secs_f64(),
                    error = %failure.message,
                    "Voice failed to load."
                );
                Err(failure)
            }
        };
        done.send_replace(Some(result));
    }

    /// Removes a resident voice and drops its engines. The engines go under the same lock that removes the
    /// slot, so a reload of the same voice that starts right after cannot have its fresh instances dropped
    /// by this unload.
    fn unload_locked(&self, slots: &mut HashMap<String, Slot>, voice: &VoiceInfo, reason: UnloadReason) {
        let Some(Slot::Resident(residency)) = slots.remove(&voice.id) else {
            return;
        };
        self.loader.unload(voice);
        self.metrics.unloaded(voice, reason);
        tracing::info!(
            voice = %voice.id,
            reason = reason.as_str(),
            seconds = residency.since.elapsed().as_secs_f64(),
            "Voice unloaded."
        );
    }

    fn publish_resident(&self, slots: &HashMap<String, Slot>) {
        for &engine in &self.engines {
            let count = slots
                .iter()
                .filter(|(id, slot)| {
                    matches!(slot, Slot::Resident(_))
                        && self.voices.get(*id).is_some_and(|voice| voice.engine == engine)
                })
                .count();
            self.metrics.resident_voices(engine, count);
        }
    }

    pub(super) fn release(&self, voice_id: &str) {
        if let Some(Slot::Resident(residency)) = self.lock().get_mut(voice_id) {
            residency.in_use = residency.in_use.saturating_sub(1);
            residency.last_used = Instant::now();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // The state is consistent between statements; a panic elsewhere must not wedge every session.
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for ModelManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelManager")
            .field("config", &self.config)
            .field("resident", &self.resident())
            .finish_non_exhaustive()
    }
}

/// Clears the loading slot if the load task is dropped before it finishes (the runtime shutting down, or
/// a loader that panicked), so waiters get an error instead of waiting for ever and a later call retries.
struct AbandonedLoad<'a> {
    manager: &'a ModelManager,
    voice_id: &'a str,
    armed: bool,
}

impl Drop for AbandonedLoad<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut slots = self.manager.lock();
            if matches!(slots.get(self.voice_id), Some(Slot::Loading(_))) {
                slots.remove(self.voice_id);
            }
        }
    }
}
