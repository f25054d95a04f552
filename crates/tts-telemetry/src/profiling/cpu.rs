//! CPU profiles from `pprof`'s `SIGPROF` sampler: one sampler per process, shared by on-demand profiles and
//! section profiles through [`ProfilerSlot`].

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use pprof::protos::Message as _;
use pprof::{Frames, ProfilerGuard, ProfilerGuardBuilder, Report, UnresolvedReport};

use super::ProfilingError;

/// Longest on-demand CPU profile.
pub const MAX_SECONDS: u64 = 300;
/// Highest sampling rate. The kernel's `CONFIG_HZ` (often 250) caps `ITIMER_PROF`; asking for more only
/// pretends to be precise.
pub const MAX_FREQUENCY_HZ: i32 = 250;
/// Sampling rate when none is asked for: off the beat of 100 Hz timers, as Go and pprof-rs do.
pub const DEFAULT_FREQUENCY_HZ: i32 = 99;

/// Libraries the sampler must not unwind through: a `SIGPROF` landing inside the unwinder or libc's locks
/// can deadlock the sampled thread (pprof-rs's advice). The price: samples taken inside them are
/// dropped, so time in libc and the vDSO (`memcpy`, clock reads, system call stubs) is under-counted.
const BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

static SAMPLER_BUSY: AtomicBool = AtomicBool::new(false);

/// A finished CPU profile.
#[derive(Debug, Clone)]
pub struct CpuProfile {
    /// Gzipped pprof protobuf, for `go tool pprof`.
    pub pprof_gz: Vec<u8>,
    /// The same samples as an SVG flamegraph.
    pub flamegraph_svg: Vec<u8>,
}

/// The right to run the process's only `SIGPROF` sampler; released on drop.
#[derive(Debug)]
pub(crate) struct ProfilerSlot(());

impl ProfilerSlot {
    pub(crate) fn try_acquire() -> Option<Self> {
        SAMPLER_BUSY
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Self(()))
    }
}

impl Drop for ProfilerSlot {
    fn drop(&mut self) {
        SAMPLER_BUSY.store(false, Ordering::Release);
    }
}

/// A running sampler. Fields drop in order: the sampler stops before the slot frees.
pub(crate) struct Sampler {
    guard: ProfilerGuard<'static>,
    _slot: ProfilerSlot,
}

impl Sampler {
    /// Starts sampling every thread at `frequency` Hz.
    pub(crate) fn start(slot: ProfilerSlot, frequency: i32) -> Result<Self, ProfilingError> {
        // Finding the blocklisted libraries walks every loaded object: do it once.
        static BUILDER: OnceLock<ProfilerGuardBuilder> = OnceLock::new();
        let builder = BUILDER.get_or_init(|| ProfilerGuardBuilder::default().blocklist(&BLOCKLIST));
        let guard = builder
            .clone()
            .frequency(frequency.clamp(1, MAX_FREQUENCY_HZ))
            .build()?;
        Ok(Self { guard, _slot: slot })
    }

    /// Stops sampling and returns what was sampled, still unsymbolised (symbolising is the slow part, and
    /// belongs off the hot path).
    pub(crate) fn finish(self) -> Result<UnresolvedReport, ProfilingError> {
        Ok(self.guard.report().build_unresolved()?)
    }
}

/// Samples every thread for `seconds` (1..=300) at `frequency` Hz (1..=250) and returns the profile.
/// Only one sampler runs per process: while another profile or a sampled section runs, this returns
/// [`ProfilingError::Busy`]. Dropping the future stops the sampler.
pub async fn cpu_profile(seconds: u64, frequency: i32) -> Result<CpuProfile, ProfilingError> {
    let duration = Duration::from_secs(seconds.clamp(1, MAX_SECONDS));
    let frequency = frequency.clamp(1, MAX_FREQUENCY_HZ);
    let slot = ProfilerSlot::try_acquire().ok_or(ProfilingError::Busy)?;
    let sampler = Sampler::start(slot, frequency)?;
    tracing::info!(
        seconds = duration.as_secs(),
        frequency_hz = frequency,
        "Taking a CPU profile."
    );
    tokio::time::sleep(duration).await;
    let unresolved = sampler.finish()?;
    let profile = tokio::task::spawn_blocking(move || encode(&resolve(unresolved), "CPU profile"))
        .await
        .map_err(|error| ProfilingError::Task(error.to_string()))??;
    tracing::info!(pprof_bytes = profile.pprof_gz.len(), "CPU profile taken.");
    Ok(profile)
}

/// Symbolises a report, dropping the sampler's own frames from each stack.
pub(crate) fn resolve(unresolved: UnresolvedReport) -> Report {
    let mut data = HashMap::new();
    for (frames, count) in unresolved.data {
        let mut frames = Frames::from(frames);
        // pprof-rs drops its signal handler and the signal trampoline, but not the unwinder it called,
        // which then tops every stack and takes all the "flat" time.
        let unwinder = frames
            .frames
            .iter()
            .take_while(|symbols| symbols.iter().all(is_unwinder))
            .count();
        frames.frames.drain(..unwinder);
        *data.entry(frames).or_insert(0) += count;
    }
    Report {
        data,
        timing: unresolved.timing,
    }
}

fn is_unwinder(symbol: &pprof::Symbol) -> bool {
    let name = symbol.name();
    name.starts_with("backtrace::") || name.starts_with("<pprof::backtrace::")
}

/// Encodes a report as gzipped pprof and as a flamegraph titled `title`.
pub(crate) fn encode(report: &Report, title: &str) -> Result<CpuProfile, ProfilingError> {
    let encode_error = |error: &dyn std::fmt::Display| ProfilingError::Encode(error.to_string());
    let protobuf = report
        .pprof()?
        .write_to_bytes()
        .map_err(|error| encode_error(&error))?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&protobuf).map_err(|error| encode_error(&error))?;
    let pprof_gz = gz.finish().map_err(|error| encode_error(&error))?;
    Ok(CpuProfile {
        pprof_gz,
        flamegraph_svg: flamegraph(report, title)?,
    })
}

fn flamegraph(report: &Report, title: &str) -> Result<Vec<u8>, ProfilingError> {
    let samples: isize = report.data.values().sum();
    let title = format!(
        "{title}: {samples} samples over {:.3} s at {} Hz",
        report.timing.duration.as_secs_f64(),
        report.timing.frequency
    );
    if report.data.is_empty() {
        // inferno refuses to draw nothing; an idle profile still deserves an answer that says so.
        return Ok(format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\">\
             <text x=\"10\" y=\"25\">{}: no CPU samples (the sampled threads were idle).</text></svg>\n",
            xml_escape(&title)
        )
        .into_bytes());
    }
    let mut options = pprof::flamegraph::Options::default();
    options.title = title;
    let mut svg = Vec::new();
    report.flamegraph_with_options(&mut svg, &mut options)?;
    Ok(svg)
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiling::TEST_SAMPLER;

    #[tokio::test]
    async fn a_second_concurrent_profile_is_busy() {
        let _serial = TEST_SAMPLER.lock().await;
        let (first, second) = tokio::join!(cpu_profile(1, 99), cpu_profile(1, 99));
        let first = first.unwrap();
        assert!(matches!(second, Err(ProfilingError::Busy)), "{second:?}");
        assert_eq!(&first.pprof_gz[..2], &[0x1f, 0x8b], "gzip magic");
        assert!(first.flamegraph_svg.starts_with(b"<"));
        // The slot is free again once the first finishes.
        assert!(ProfilerSlot::try_acquire().is_some());
    }

    #[tokio::test]
    async fn a_held_slot_makes_profiles_busy() {
        let _serial = TEST_SAMPLER.lock().await;
        let slot = ProfilerSlot::try_acquire().unwrap();
        assert!(matches!(cpu_profile(1, 99).await, Err(ProfilingError::Busy)));
        drop(slot);
        assert!(ProfilerSlot::try_acquire().is_some());
    }

    #[tokio::test]
    async fn an_idle_profile_still_draws_a_flamegraph() {
        let _serial = TEST_SAMPLER.lock().await;
        let sampler = Sampler::start(ProfilerSlot::try_acquire().unwrap(), 99).unwrap();
        let mut report = resolve(sampler.finish().unwrap());
        // Almost always empty already, unless other tests burned 10 ms of CPU in between.
        report.data.clear();
        let profile = encode(&report, "idle <test>").unwrap();
        let svg = String::from_utf8(profile.flamegraph_svg).unwrap();
        assert!(svg.contains("no CPU samples"), "{svg}");
        assert!(svg.contains("idle &lt;test&gt;"), "{svg}");
    }
}
