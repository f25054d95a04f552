//! A fixed pool of engine threads behind a bounded, first-audio-first, then earliest-deadline-first
//! scheduler.
//!
//! - [`schedule`]: first chunks of sessions with nothing left to play go first, in arrival order, because
//!   that is where first-audio latency is won; every other chunk follows by its deadline, when its
//!   session runs out of audio, so a session about to run dry goes before one with seconds buffered. Fairness
//!   across sessions comes from the caller keeping at most one chunk per session queued or in flight
//!   (the gateway's session does).
//! - Every job carries a [`CancelToken`]; a cancelled job is dropped by the scheduler before an engine
//!   sees it, and a running one stops at the engine's next PCM piece.
//! - A running job whose session has audio in hand pauses between two pieces when another chunk needs
//!   the thread more ([`Flow::Pause`], `schedule`), and is queued again to go on, on any thread, when its
//!   session needs it; its events and its audio are the same as if it had not paused.
//! - Engine output is resampled to 48 kHz on the engine thread and handed to the job's event callback
//!   piece by piece, as soon as it exists. The callback must not block (the gateway's is a channel send).
//! - Loaded engines are kept in a cache of idle instances per voice: at most one instance per thread per
//!   voice is ever loaded, since a thread uses one at a time.
//!
//! - Which voices keep loaded engines is bounded by [`ResidencyLimits`] ([`residency`]): a cap on resident
//!   voices and an idle TTL, a voice in use never unloaded.
//!
//! The pool does not frame, pace or know about sessions beyond the opaque ids it logs and the voice each
//! one holds until [`Pool::end_session`].

mod residency;
mod schedule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::audio::StreamResampler;
use crate::engine::{self, Engine, EngineError, EngineSettings, Flow, Rest};
use crate::voices::VoiceInfo;

use residency::Residency;
pub use residency::{ResidencyLimits, ResidencyStats};

/// Default number of jobs the scheduler holds before refusing new ones.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Text synthesised on every engine instance before its voice counts as warm.
pub const WARM_UP_TEXT: &str = "Warming up the voice, one moment.";

/// Pool sizing.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Engine threads; each runs one job at a time.
    pub threads: usize,
    /// Jobs queued (not yet running) before [`Pool::submit`] refuses with [`SubmitError::QueueFull`].
    pub queue_capacity: usize,
    pub engine: EngineSettings,
    /// Which voices keep loaded engines.
    pub residency: ResidencyLimits,
}

/// Bumped by STOP; every token taken before the bump reads as cancelled afterwards.
#[derive(Debug, Clone, Default)]
pub struct CancelSource(Arc<AtomicU64>);

impl CancelSource {
    pub fn new() -> Self {
        Self::default()
    }

    /// A token for work started now.
    pub fn token(&self) -> CancelToken {
        CancelToken {
            current: self.0.clone(),
            generation: self.0.load(Ordering::Acquire),
        }
    }

    /// A token for work that belongs to an earlier generation (already cancelled if a STOP came since).
    pub fn token_at(&self, generation: u64) -> CancelToken {
        CancelToken {
            current: self.0.clone(),
            generation,
        }
    }

    /// Cancels every token handed out so far.
    pub fn cancel_all(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    pub fn generation(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Whether the work it was handed with is still wanted.
#[derive(Debug, Clone)]
pub struct CancelToken {
    current: Arc<AtomicU64>,
    generation: u64,
}

impl CancelToken {
    pub fn is_cancelled(&self) -> bool {
        self.current.load(Ordering::Acquire) != self.generation
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What a job reports, in order: `Started`, any number of `Audio`, then `Finished` or `Failed`.
/// A job cancelled before or while running reports nothing more after the cancellation is seen.
#[derive(Debug)]
pub enum JobEvent {
    /// An engine thread took the job.
    Started {
        queue_wait: Duration,
    },
    /// 48 kHz mono samples, in order.
    Audio(Vec<i16>),
    Finished(JobStats),
    Failed(EngineError),
}

/// Timings of one finished job, for the real-time factor and the first-audio breakdown.
#[derive(Debug, Clone)]
pub struct JobStats {
    pub queue_wait: Duration,
    /// Engine start to the first PCM piece back (None when the chunk produced no audio).
    pub engine_first_pcm: Option<Duration>,
    /// Engine wall time for the whole chunk.
    pub engine_time: Duration,
    /// Seconds of audio produced.
    pub audio_seconds: f64,
}

impl JobStats {
    /// Engine wall time per second of audio (lower is faster; 1.0 is exactly real time).
    pub fn real_time_factor(&self) -> Option<f64> {
        (self.audio_seconds > 0.0).then(|| self.engine_time.as_secs_f64() / self.audio_seconds)
    }
}

/// One chunk of text to synthesise.
pub struct Job {
    pub voice: Arc<VoiceInfo>,
    pub text: String,
    /// The first chunk of its utterance: goes first when its session has nothing left to play, and only
    /// first chunks may use spare cores.
    pub first: bool,
    pub cancel: CancelToken,
    /// Carried into the engine thread's log span, so its lines name the session.
    pub session_id: Arc<str>,
    pub utterance_id: u64,
    /// Speaking rate, within [`crate::engine::SPEED_RANGE`]; 1.0 is the voice's own pace.
    pub speed: f32,
    /// The span the job's `synthesize` span is a child of (the utterance's), across the thread hop.
    pub parent: tracing::Span,
    /// Receives the job's events on the engine thread; must not block.
    pub events: Box<dyn FnMut(JobEvent) + Send>,
}

/// How long [`Pool::warm_timed`] spent on each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmTimings {
    /// Loading the engine instances that were not loaded yet (zero when all were).
    pub load: Duration,
    /// Synthesising [`WARM_UP_TEXT`] on every instance.
    pub warmup: Duration,
}

/// Which phase of warming a voice failed.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error(transparent)]
    Load(EngineError),
    #[error("warm-up failed: {0}")]
    WarmUp(EngineError),
}

impl WarmError {
    pub fn into_engine_error(self) -> EngineError {
        match self {
            WarmError::Load(error) | WarmError::WarmUp(error) => error,
        }
    }
}

/// Why a job was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the synthesis queue is full ({0} jobs)")]
    QueueFull(usize),
    #[error("the engine pool is shutting down")]
    ShutDown,
    /// The voice is not resident and every one of the (at most this many) resident voices is in use.
    #[error("all {0} resident voices are in use; another voice cannot be loaded now")]
    VoicesInUse(usize),
}

/// A snapshot of the pool's load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStats {
    pub threads: usize,
    pub busy: usize,
    pub queued: usize,
    pub queue_capacity: usize,
    /// Jobs dropped by the scheduler because they were cancelled before an engine took them.
    pub discarded: u64,
    /// Seconds engine threads have spent on jobs since the pool started, summed over threads.
    pub busy_seconds: f64,
    /// Jobs whose engine panicked (each failed with [`EngineError::Panicked`]; the thread lived on).
    pub panics: u64,
}

struct Queued {
    job: Job,
    enqueued: Instant,
    /// Set when the job ran before and paused.
    paused: Option<Box<Resumable>>,
}

/// A job paused between two pieces of its audio, queued again to go on when its session needs it.
struct Resumable {
    rest: Rest,
    /// The job's resampler, holding the filter state of the audio so far.
    resampler: StreamResampler,
    so_far: Progress,
    span: tracing::Span,
}

/// A job's totals over its runs.
#[derive(Debug, Clone, Copy)]
struct Progress {
    queue_wait: Duration,
    engine_first_pcm: Option<Duration>,
    engine_time: Duration,
    /// Samples made, at the engine's rate.
    samples: usize,
    pauses: u32,
}

/// How one run of a job ended.
enum Ran {
    Finished(JobStats, u32),
    Paused(Box<Resumable>),
}

/// The audio one run of a job made: when its first piece came and how many seconds, for the session's
/// playback estimate.
struct RunAudio {
    first: Option<Instant>,
    seconds: f64,
}

struct Shared {
    lanes: Mutex<schedule::Queue>,
    ready: Condvar,
    busy: AtomicUsize,
    busy_nanos: AtomicU64,
    discarded: AtomicU64,
    panics: AtomicU64,
    idle_engines: Mutex<HashMap<String, Vec<Box<dyn Engine>>>>,
    /// Locked after `lanes` and before `idle_engines` when held together.
    residency: Mutex<Residency>,
    config: PoolConfig,
    /// Bumped by every engine thread each time it finishes or skips a job; the liveness check reads it.
    progress: AtomicU64,
}

/// The engine threads and their scheduler.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Starts `config.threads` engine threads.
    pub fn start(config: PoolConfig) -> std::io::Result<Self> {
        let threads = config.threads.max(1);
        let shared = Arc::new(Shared {
            lanes: Mutex::new(schedule::Queue::default()),
            ready: Condvar::new(),
            busy: AtomicUsize::new(0),
            busy_nanos: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            idle_engines: Mutex::new(HashMap::new()),
            residency: Mutex::new(Residency::new(config.residency)),
            config,
            progress: AtomicU64::new(0),
        });
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let shared = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("ttsd-engine-{index}"))
                    .spawn(move || engine_thread(&shared))?,
            );
        }
        Ok(Self {
            shared,
            threads: Mutex::new(handles),
        })
    }

    /// Queues a job; never blocks.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let mut lanes = lock(&self.shared.lanes);
        if lanes.closed {
            return Err(SubmitError::ShutDown);
        }
        if lanes.len() >= self.shared.config.queue_capacity {
            return Err(SubmitError::QueueFull(self.shared.config.queue_capacity));
        }
        let evicted = lock(&self.shared.residency)
            .admit(&job.voice.id, Some(&job.session_id), Instant::now())
            .map_err(|residency::AllInUse(cap)| SubmitError::VoicesInUse(cap))?;
        let evicted = evicted.map(|voice| self.shared.evict(&voice, "room"));
        let now = Instant::now();
        let queued = Queued {
            job,
            enqueued: now,
            paused: None,
        };
        lanes.push(queued);
        drop(lanes);
        drop(evicted);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// The session (or HTTP request) is over: the voice of its latest job is no longer held by it.
    pub fn end_session(&self, session_id: &str) {
        lock(&self.shared.lanes).forget(session_id);
        lock(&self.shared.residency).end_session(session_id);
    }

    /// Keeps `voice_id` resident whatever the cap and TTL (the server's default voice).
    pub fn pin(&self, voice_id: &str) {
        lock(&self.shared.residency).pin(voice_id);
    }

    /// Resident voices now, and loads and evictions since start.
    pub fn residency(&self) -> ResidencyStats {
        lock(&self.shared.residency).stats()
    }

    /// Loads `voice` on as many engine instances as there are threads and synthesises a warm-up sentence
    /// with each, so the first real request pays no load or first-inference cost. Blocking.
    pub fn warm(&self, voice: &VoiceInfo) -> Result<(), EngineError> {
        self.warm_timed(voice)
            .map(drop)
            .map_err(WarmError::into_engine_error)
    }

    /// [`Pool::warm`], timing the two phases apart and saying which one failed: the model manager reports
    /// load and warm-up as separate metrics, and a failed warm-up as its own failure reason.
    pub fn warm_timed(&self, voice: &VoiceInfo) -> Result<WarmTimings, WarmError> {
        let evicted = lock(&self.shared.residency)
            .admit(&voice.id, None, Instant::now())
            .map_err(|residency::AllInUse(cap)| {
                WarmError::Load(EngineError::Load {
                    voice: voice.id.clone(),
                    path: voice.model_path.clone().unwrap_or_default(),
                    reason: SubmitError::VoicesInUse(cap).to_string(),
                })
            })?;
        drop(evicted.map(|victim| self.shared.evict(&victim, "room")));
        let outcome = self.warm_engines(voice);
        lock(&self.shared.residency).job_done(&voice.id);
        outcome
    }

    fn warm_engines(&self, voice: &VoiceInfo) -> Result<WarmTimings, WarmError> {
        let threads = self.shared.config.threads.max(1);
        let mut warmed = Vec::with_capacity(threads);
        let existing = lock(&self.shared.idle_engines)
            .remove(&voice.id)
            .unwrap_or_default();
        warmed.extend(existing);
        let load_started = Instant::now();
        while warmed.len() < threads {
            warmed.push(engine::load(voice, &self.shared.config.engine).map_err(WarmError::Load)?);
        }
        let load = load_started.elapsed();
        let warmup_started = Instant::now();
        for engine in &mut warmed {
            let mut samples = 0usize;
            engine.set_speed(1.0);
            engine
                .synthesize(WARM_UP_TEXT, &mut |pcm| {
                    samples += pcm.len();
                    Flow::Continue
                })
                .map_err(WarmError::WarmUp)?;
            if samples == 0 {
                return Err(WarmError::WarmUp(EngineError::Inference {
                    voice: voice.id.clone(),
                    reason: "warm-up produced no audio".into(),
                }));
            }
        }
        let warmup = warmup_started.elapsed();
        lock(&self.shared.idle_engines).insert(voice.id.clone(), warmed);
        Ok(WarmTimings { load, warmup })
    }

    /// Drops every idle loaded instance of `voice_id` and returns how many there were. Instances running a
    /// job go back to the cache when it ends, so callers unload only voices no job is using (the worker's
    /// model manager holds a reference for every job).
    pub fn unload(&self, voice_id: &str) -> usize {
        lock(&self.shared.residency).forget(voice_id);
        let dropped = lock(&self.shared.idle_engines).remove(voice_id);
        engine::drop_quiet_sessions(voice_id);
        dropped.map_or(0, |engines| engines.len())
    }

    /// Voices with at least one idle loaded instance, sorted.
    pub fn loaded_voices(&self) -> Vec<String> {
        let idle = lock(&self.shared.idle_engines);
        let mut voices: Vec<String> = idle
            .iter()
            .filter(|(_, engines)| !engines.is_empty())
            .map(|(voice, _)| voice.clone())
            .collect();
        voices.sort();
        voices
    }

    pub fn stats(&self) -> PoolStats {
        let queued = lock(&self.shared.lanes).len();
        PoolStats {
            threads: self.shared.config.threads.max(1),
            busy: self.shared.busy.load(Ordering::Relaxed),
            queued,
            queue_capacity: self.shared.config.queue_capacity,
            discarded: self.shared.discarded.load(Ordering::Relaxed),
            busy_seconds: self.shared.busy_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            panics: self.shared.panics.load(Ordering::Relaxed),
        }
    }

    /// A counter that moves whenever an engine thread completes or skips a job.
    pub fn progress(&self) -> u64 {
        self.shared.progress.load(Ordering::Relaxed)
    }

    /// Stops taking jobs, drops the queued ones and joins the threads once their current job ends.
    pub fn shutdown(&self) {
        lock(&self.shared.lanes).closed = true;
        self.shared.ready.notify_all();
        let handles = std::mem::take(&mut *lock(&self.threads));
        for handle in handles {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    /// Takes every idle engine of `voice` and its process-wide sessions out of the pool; the caller drops
    /// the engines outside its locks. No job uses the voice (the residency book said so).
    #[must_use]
    fn evict(&self, voice: &str, why: &'static str) -> Vec<Box<dyn Engine>> {
        let engines = lock(&self.idle_engines).remove(voice).unwrap_or_default();
        engine::drop_quiet_sessions(voice);
        tracing::info!(
            voice,
            reason = why,
            instances = engines.len(),
            "Unloaded a resident voice."
        );
        engines
    }

    /// Unloads the voices idle past the TTL (at most once per sweep interval).
    fn sweep(&self) {
        let expired = lock(&self.residency).sweep(Instant::now());
        for voice in expired {
            drop(self.evict(&voice, "idle_ttl"));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic on an engine thread must not take the scheduler down with it.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Blocks until a job is ready; None once the pool is closed. Sweeps idle voices while it waits. The
/// resampler of a paused job that was cancelled goes to this thread's `resamplers`.
fn next_job(shared: &Shared, resamplers: &mut HashMap<u32, StreamResampler>) -> Option<Queued> {
    let sweep_every = shared.config.residency.sweep_interval();
    let mut lanes = lock(&shared.lanes);
    loop {
        if lanes.closed {
            return None;
        }
        match lanes.pop() {
            Some(queued) if queued.job.cancel.is_cancelled() => {
                lock(&shared.residency).job_done(&queued.job.voice.id);
                if let Some(paused) = queued.paused {
                    keep_resampler(resamplers, paused.resampler);
                }
                shared.discarded.fetch_add(1, Ordering::Relaxed);
                shared.progress.fetch_add(1, Ordering::Relaxed);
            }
            Some(queued) => return Some(queued),
            None => {
                let (guard, waited) = shared
                    .ready
                    .wait_timeout(lanes, sweep_every)
                    .unwrap_or_else(|p| p.into_inner());
                lanes = guard;
                if waited.timed_out() {
                    drop(lanes);
                    shared.sweep();
                    lanes = lock(&shared.lanes);
                }
            }
        }
    }
}

fn engine_thread(shared: &Shared) {
    let mut resamplers: HashMap<u32, StreamResampler> = HashMap::new();
    while let Some(queued) = next_job(shared, &mut resamplers) {
        shared.busy.fetch_add(1, Ordering::Relaxed);
        let busy_since = Instant::now();
        let queue_wait = queued.enqueued.elapsed();
        let Queued { mut job, paused, .. } = queued;
        let span = match &paused {
            Some(paused) => paused.span.clone(),
            None => tracing::info_span!(
                parent: &job.parent,
                "synthesize",
                "tts.engine" = job.voice.engine.as_str(),
                "tts.voice" = %job.voice.id,
                "tts.characters" = job.text.chars().count(),
                "tts.first_chunk" = job.first,
                "tts.queue_wait_ms" = queue_wait.as_secs_f64() * 1000.0,
                "tts.audio_seconds" = tracing::field::Empty,
                "tts.real_time_factor" = tracing::field::Empty,
                "tts.pauses" = tracing::field::Empty,
                "otel.status_code" = tracing::field::Empty,
                "otel.status_message" = tracing::field::Empty,
            ),
        };
        let _entered = span.enter();
        if paused.is_none() {
            (job.events)(JobEvent::Started { queue_wait });
        }
        let outcome = run_job_isolated(shared, &mut job, queue_wait, &mut resamplers, paused);
        match outcome {
            Ok((Ran::Paused(mut resumable), audio)) => {
                played(shared, &job, &audio);
                resumable.span = span.clone();
                let mut lanes = lock(&shared.lanes);
                if lanes.closed {
                    drop(lanes);
                    lock(&shared.residency).job_done(&job.voice.id);
                } else {
                    lanes.push(Queued {
                        job,
                        enqueued: Instant::now(),
                        paused: Some(resumable),
                    });
                    drop(lanes);
                    shared.ready.notify_one();
                }
            }
            Ok((Ran::Finished(stats, pauses), audio)) => {
                lock(&shared.residency).job_done(&job.voice.id);
                played(shared, &job, &audio);
                span.record("tts.audio_seconds", stats.audio_seconds);
                span.record("tts.pauses", pauses);
                if let Some(rtf) = stats.real_time_factor() {
                    span.record("tts.real_time_factor", rtf);
                }
                (job.events)(JobEvent::Finished(stats))
            }
            Err(EngineError::Cancelled) => {
                lock(&shared.residency).job_done(&job.voice.id);
                tracing::debug!("Synthesis cancelled.");
            }
            Err(error) => {
                lock(&shared.residency).job_done(&job.voice.id);
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_message", error.to_string().as_str());
                tracing::warn!(error = %error, "Synthesis failed.");
                (job.events)(JobEvent::Failed(error));
            }
        }
        let busy = u64::try_from(busy_since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        shared.busy_nanos.fetch_add(busy, Ordering::Relaxed);
        shared.busy.fetch_sub(1, Ordering::Relaxed);
        shared.progress.fetch_add(1, Ordering::Relaxed);
        drop(_entered);
        shared.sweep();
    }
}

/// The session of `job` plays `audio` after what it had.
fn played(shared: &Shared, job: &Job, audio: &RunAudio) {
    if let Some(first) = audio.first {
        lock(&shared.lanes).played(&job.session_id, job.cancel.generation(), first, audio.seconds);
    }
}

/// Runs the job (or the rest of a paused one), turning a panic in the engine (or in its sink) into a
/// failed chunk: the engine instance it had taken is dropped rather than reused, the thread's resamplers
/// are rebuilt, and the thread goes on serving the queue, so one bad chunk never silences the sessions
/// behind it.
fn run_job_isolated(
    shared: &Shared,
    job: &mut Job,
    queue_wait: Duration,
    resamplers: &mut HashMap<u32, StreamResampler>,
    paused: Option<Box<Resumable>>,
) -> Result<(Ran, RunAudio), EngineError> {
    let run = std::panic::AssertUnwindSafe(|| run_job(shared, job, queue_wait, resamplers, paused));
    std::panic::catch_unwind(run).unwrap_or_else(|payload| {
        shared.panics.fetch_add(1, Ordering::Relaxed);
        resamplers.clear();
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text panic payload".to_owned());
        tracing::error!(voice = %job.voice.id, error = %message, "An engine panicked; its chunk failed and the engine thread goes on.");
        Err(EngineError::Panicked {
            voice: job.voice.id.clone(),
            message,
        })
    })
}

fn take_engine(shared: &Shared, voice: &VoiceInfo) -> Result<Box<dyn Engine>, EngineError> {
    if let Some(engine) = lock(&shared.idle_engines).get_mut(&voice.id).and_then(Vec::pop) {
        return Ok(engine);
    }
    tracing::info!(voice = %voice.id, "Loading voice on demand.");
    engine::load(voice, &shared.config.engine)
}

/// Resets `resampler` (dropping what a cancelled chunk left in it) and keeps it for the thread's next job.
fn keep_resampler(resamplers: &mut HashMap<u32, StreamResampler>, mut resampler: StreamResampler) {
    if resampler.finish(&mut Vec::new()).is_ok() {
        resamplers.entry(resampler.input_rate()).or_insert(resampler);
    }
}

fn resampler_error(err: impl std::fmt::Display) -> EngineError {
    EngineError::Espeak(format!("resampler: {err}"))
}

/// One run of `job`: from its start, or from where it paused. Pauses (between two pieces, once this run
/// has handed on audio) when the scheduler says another chunk needs the thread more.
fn run_job(
    shared: &Shared,
    job: &mut Job,
    queue_wait: Duration,
    resamplers: &mut HashMap<u32, StreamResampler>,
    paused: Option<Box<Resumable>>,
) -> Result<(Ran, RunAudio), EngineError> {
    let mut engine = take_engine(shared, &job.voice)?;
    let rate = engine.sample_rate();
    let (rest, mut resampler, mut progress) = match paused.map(|paused| *paused) {
        Some(Resumable {
            rest,
            resampler,
            so_far,
            ..
        }) => (Some(rest), resampler, so_far),
        None => {
            let resampler = match resamplers.remove(&rate) {
                Some(resampler) => resampler,
                None => StreamResampler::new(rate).map_err(resampler_error)?,
            };
            let progress = Progress {
                queue_wait,
                engine_first_pcm: None,
                engine_time: Duration::ZERO,
                samples: 0,
                pauses: 0,
            };
            (None, resampler, progress)
        }
    };
    let inference = tracing::info_span!("inference", "tts.engine" = job.voice.engine.as_str());
    let _inference = inference.enter();
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let mut samples = 0usize;
    let cancel = job.cancel.clone();
    let (session, generation) = (job.session_id.clone(), cancel.generation());
    let events = &mut job.events;
    let mut resample_error = None;
    let mut sink = |pcm: &[i16]| {
        if cancel.is_cancelled() {
            return Flow::Stop;
        }
        if pcm.is_empty() {
            // Asked before costly work: go on, or give the thread to a chunk that needs it more.
            let seconds = samples as f64 / f64::from(rate);
            let pause = first.is_some_and(|first| {
                lock(&shared.lanes).should_pause(&session, generation, first, seconds, Instant::now())
            });
            return if pause { Flow::Pause } else { Flow::Continue };
        }
        let now = Instant::now();
        first.get_or_insert(now);
        progress
            .engine_first_pcm
            .get_or_insert_with(|| now.duration_since(started));
        samples += pcm.len();
        let mut out = Vec::with_capacity(pcm.len() * 3);
        if let Err(err) = resampler.process(pcm, &mut out) {
            resample_error = Some(err);
            return Flow::Stop;
        }
        if !out.is_empty() {
            events(JobEvent::Audio(out));
        }
        Flow::Continue
    };
    let result = match rest {
        Some(rest) => engine.resume(rest, &mut sink),
        None => {
            // Busy counts this thread too: quiet means nobody else is synthesising.
            engine.set_quiet(job.first && shared.busy.load(Ordering::Relaxed) <= 1);
            engine.set_speed(job.speed);
            engine.set_first_chunk(job.first);
            engine.synthesize(&job.text, &mut sink)
        }
    };
    let rest = engine.take_rest();
    progress.engine_time += started.elapsed();
    drop(_inference);
    lock(&shared.idle_engines)
        .entry(job.voice.id.clone())
        .or_default()
        .push(engine);
    if let Some(err) = resample_error {
        return Err(resampler_error(err));
    }
    if let Err(error) = result {
        keep_resampler(resamplers, resampler);
        return Err(error);
    }
    if cancel.is_cancelled() {
        keep_resampler(resamplers, resampler);
        return Err(EngineError::Cancelled);
    }
    progress.samples += samples;
    let audio = RunAudio {
        first,
        seconds: samples as f64 / f64::from(rate),
    };
    if let Some(rest) = rest {
        progress.pauses += 1;
        let resumable = Resumable {
            rest,
            resampler,
            so_far: progress,
            span: tracing::Span::none(),
        };
        return Ok((Ran::Paused(Box::new(resumable)), audio));
    }
    let mut tail = Vec::new();
    resampler.finish(&mut tail).map_err(resampler_error)?;
    resamplers.entry(rate).or_insert(resampler);
    if !tail.is_empty() {
        (job.events)(JobEvent::Audio(tail));
    }
    let stats = JobStats {
        queue_wait: progress.queue_wait,
        engine_first_pcm: progress.engine_first_pcm,
        engine_time: progress.engine_time,
        audio_seconds: progress.samples as f64 / f64::from(rate),
    };
    Ok((Ran::Finished(stats, progress.pauses), audio))
}

#[cfg(test)]
mod tests;
