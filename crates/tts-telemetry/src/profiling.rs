//! On-demand CPU and heap profiling, and profiles of named code sections.
//!
//! - [`cpu_profile`] samples every thread for N seconds with pprof-rs and returns gzipped pprof plus an
//!   SVG flamegraph; the admin router serves it at `/debug/pprof/profile`.
//! - [`heap_profile`] dumps jemalloc's sampled live heap as gzipped pprof (`/debug/pprof/heap`). It needs
//!   the binary to run on `tikv-jemallocator` with `malloc_conf` set to `prof:true,prof_active:false`;
//!   sampling starts when [`install`] sees `memory = true`.
//! - [`profile_section`] samples the CPU while a guard lives and writes `<name>_<unix_ms>.pb.gz` and
//!   `.svg` into `output_dir` when the section took at least `min_duration_ms`. Shorter ones leave
//!   nothing. [`timed`] only times a closure into a histogram.
//!
//! The process has one CPU sampler (`SIGPROF` is process-wide): an on-demand profile that finds it taken
//! fails with [`ProfilingError::Busy`]; a section that finds it taken is timed but not sampled.
//!
//! With profiling off (the default), [`profile_section`] costs one atomic load and nothing samples. With
//! it on, each section start and stop costs a few system calls (a timer, a signal handler, a temporary
//! file inside pprof-rs); symbolising and writing happen on a `profile-writer` thread.
//!
//! It does not decide who may fetch profiles (the admin router does, from
//! [`AdminAccess`](crate::admin::AdminAccess)) and does not read the environment by itself: the
//! binary calls [`ProfilingConfig::apply_env`].

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

mod config;
mod cpu;
mod heap;
mod section;

pub use config::{DEFAULT_MIN_DURATION_MS, DEFAULT_OUTPUT_DIR, InvalidEnvVar, ProfilingConfig};
pub use cpu::{CpuProfile, DEFAULT_FREQUENCY_HZ, MAX_FREQUENCY_HZ, MAX_SECONDS, cpu_profile};
pub use heap::{activate_heap_profiling, heap_profile};
pub use section::{SectionGuard, SectionProfiler};

#[cfg(test)]
pub(crate) use cpu::ProfilerSlot;

static INSTALLED: OnceLock<SectionProfiler> = OnceLock::new();

/// Serialises the tests that need the process's one CPU sampler.
#[cfg(test)]
pub(crate) static TEST_SAMPLER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What went wrong while profiling.
#[derive(Debug, thiserror::Error)]
pub enum ProfilingError {
    /// Another CPU profile or a sampled section holds the process's one sampler.
    #[error("a CPU profile is already being taken; only one runs at a time")]
    Busy,
    /// This process cannot take heap profiles; the message says why and what to change.
    #[error("{0}")]
    HeapUnavailable(&'static str),
    /// jemalloc refused to activate or to dump.
    #[error("jemalloc heap profiling failed: {0}")]
    Heap(String),
    /// pprof-rs could not start or read the sampler.
    #[error("the CPU sampler failed")]
    Sampler(#[from] pprof::Error),
    /// The profile could not be encoded as pprof or as a flamegraph.
    #[error("encoding the profile failed: {0}")]
    Encode(String),
    /// Creating the output directory or writing a profile failed.
    #[error("profiling I/O on {path} failed")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `ENABLE_PROFILING` and friends held values that cannot be used; every one is listed.
    #[error("invalid profiling environment: {}", join(.0))]
    InvalidEnv(Vec<InvalidEnvVar>),
    /// [`install`] was called twice.
    #[error("profiling is already installed in this process")]
    AlreadyInstalled,
    /// A background task panicked or was cancelled.
    #[error("the profiling task failed: {0}")]
    Task(String),
}

fn join(invalid: &[InvalidEnvVar]) -> String {
    invalid
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Installs `config` for the whole process: [`profile_section`] follows it from now on, and with
/// `enabled` and `memory` set, jemalloc heap sampling starts. Does nothing when profiling is disabled.
/// Call it once, early, from within the runtime.
pub async fn install(config: &ProfilingConfig) -> Result<(), ProfilingError> {
    if !config.enabled {
        return Ok(());
    }
    let profiler = SectionProfiler::new(config)?;
    INSTALLED
        .set(profiler)
        .map_err(|_| ProfilingError::AlreadyInstalled)?;
    if config.memory {
        activate_heap_profiling().await?;
    }
    tracing::info!(
        output_dir = %config.output_dir.display(),
        cpu = config.cpu,
        memory = config.memory,
        min_duration_ms = config.min_duration_ms,
        "Profiling enabled."
    );
    Ok(())
}

/// Starts a section under the installed configuration; see [`SectionProfiler::section`]. Without
/// [`install`], or with profiling disabled, the guard does nothing.
///
/// ```
/// let _section = tts_telemetry::profiling::profile_section("synthesis");
/// // ... the work; the profile is kept if it took at least `min_duration_ms`.
/// ```
pub fn profile_section(name: &'static str) -> SectionGuard {
    INSTALLED.get().map_or_else(
        || SectionProfiler::default().section(name),
        |profiler| profiler.section(name),
    )
}

/// Blocks until every ended section has been written: call it at shutdown, off the async executor.
pub fn flush_section_profiles() {
    if let Some(profiler) = INSTALLED.get() {
        profiler.flush();
    }
}

/// Runs `f`, records how long it took in `histogram` (seconds) and logs it at DEBUG with `section` and
/// `duration_ms`.
pub fn timed<T>(name: &'static str, histogram: &Histogram, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    let elapsed = started.elapsed();
    histogram.observe(elapsed.as_secs_f64());
    tracing::debug!(
        section = name,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "Section timed."
    );
    value
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::histogram::exponential_buckets;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn timed_observes_the_duration_and_returns_the_value() {
        let histogram = Histogram::new(exponential_buckets(0.001, 2.0, 12));
        let mut registry = Registry::default();
        registry.register("demo_section_seconds", "Demo", histogram.clone());

        let value = timed("demo", &histogram, || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            42
        });

        assert_eq!(value, 42);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("demo_section_seconds_count 1"), "{text}");
        let sum: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix("demo_section_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(sum >= 0.005, "{sum}");
    }

    #[test]
    fn without_install_sections_do_nothing() {
        let _section = profile_section("never_written");
        flush_section_profiles();
    }
}
