//! Section profiles: sample the CPU while a named stretch of code runs, and keep the profile only when the
//! stretch took long enough to be worth reading.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use pprof::UnresolvedReport;

use super::ProfilingError;
use super::config::ProfilingConfig;
use super::cpu::{self, DEFAULT_FREQUENCY_HZ, ProfilerSlot, Sampler};

/// Finished sections waiting to be written. When the writer falls this far behind, new ones are dropped:
/// the sections being profiled must never wait for the disk.
const WRITE_QUEUE: usize = 8;

/// Hands out [`SectionGuard`]s according to one [`ProfilingConfig`]. The process-wide one is installed by
/// [`install`](super::install) and used by [`profile_section`](super::profile_section); tests build
/// their own.
#[derive(Clone, Default)]
pub struct SectionProfiler {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    output_dir: PathBuf,
    min_duration: Duration,
    sample: bool,
    writer: SyncSender<Job>,
}

enum Job {
    Write(Box<Finished>),
    Flush(SyncSender<()>),
}

struct Finished {
    name: &'static str,
    elapsed: Duration,
    report: UnresolvedReport,
}

/// One running section; it ends when the guard drops. Holding it across `.await` is fine.
#[must_use = "a section ends when its guard is dropped"]
pub struct SectionGuard {
    section: Option<Section>,
}

struct Section {
    name: &'static str,
    started: Instant,
    sampler: Option<Sampler>,
    shared: Arc<Shared>,
}

impl SectionProfiler {
    /// A profiler for `config`. When profiling is enabled with `cpu`, creates `output_dir` and starts the
    /// thread that writes profiles.
    pub fn new(config: &ProfilingConfig) -> Result<Self, ProfilingError> {
        if !config.enabled {
            return Ok(Self::default());
        }
        let (writer, jobs) = mpsc::sync_channel(WRITE_QUEUE);
        if config.cpu {
            fs::create_dir_all(&config.output_dir).map_err(|source| ProfilingError::Io {
                path: config.output_dir.clone(),
                source,
            })?;
            let output_dir = config.output_dir.clone();
            thread::Builder::new()
                .name("profile-writer".into())
                .spawn(move || write_jobs(&output_dir, jobs))
                .map_err(|source| ProfilingError::Io {
                    path: config.output_dir.clone(),
                    source,
                })?;
        }
        Ok(Self {
            shared: Some(Arc::new(Shared {
                output_dir: config.output_dir.clone(),
                min_duration: Duration::from_millis(config.min_duration_ms),
                sample: config.cpu,
                writer,
            })),
        })
    }

    /// Starts a section. While the process's one CPU sampler is free, the section takes it; otherwise (an
    /// on-demand profile or another section is running) the section is only timed. Either way the
    /// sampler covers the whole process, so work on other threads during the section shows up too, under
    /// its thread's name.
    pub fn section(&self, name: &'static str) -> SectionGuard {
        let Some(shared) = &self.shared else {
            return SectionGuard { section: None };
        };
        let sampler = shared
            .sample
            .then(ProfilerSlot::try_acquire)
            .flatten()
            .and_then(|slot| match Sampler::start(slot, DEFAULT_FREQUENCY_HZ) {
                Ok(sampler) => Some(sampler),
                Err(error) => {
                    tracing::warn!(
                        section = name,
                        error = &error as &dyn std::error::Error,
                        "Starting the section profiler failed; the section is only timed."
                    );
                    None
                }
            });
        SectionGuard {
            section: Some(Section {
                name,
                started: Instant::now(),
                sampler,
                shared: shared.clone(),
            }),
        }
    }

    /// Blocks until every section that has ended has been written. For shutdown and tests; never call it
    /// on an async executor thread.
    pub fn flush(&self) {
        let Some(shared) = &self.shared else { return };
        let (done, wait) = mpsc::sync_channel(1);
        if shared.sample && shared.writer.send(Job::Flush(done)).is_ok() {
            // An error means the writer is gone, and with it anything left to wait for.
            let _ = wait.recv();
        }
    }

    /// Where section profiles are written, when sections are profiled at all.
    pub fn output_dir(&self) -> Option<&Path> {
        self.shared
            .as_ref()
            .filter(|shared| shared.sample)
            .map(|shared| shared.output_dir.as_path())
    }
}

impl Drop for SectionGuard {
    fn drop(&mut self) {
        if let Some(section) = self.section.take() {
            section.end();
        }
    }
}

impl Section {
    fn end(self) {
        let elapsed = self.started.elapsed();
        let sampled = self.sampler.is_some();
        tracing::debug!(
            section = self.name,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            sampled,
            "Section ended."
        );
        let Some(sampler) = self.sampler else { return };
        if elapsed < self.shared.min_duration {
            // Dropping the sampler stops it and frees the slot, so the next section starts clean.
            return;
        }
        let report = match sampler.finish() {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(
                    section = self.name,
                    error = &error as &dyn std::error::Error,
                    "Collecting a section profile failed."
                );
                return;
            }
        };
        let finished = Box::new(Finished {
            name: self.name,
            elapsed,
            report,
        });
        if let Err(TrySendError::Full(_)) = self.shared.writer.try_send(Job::Write(finished)) {
            tracing::warn!(
                section = self.name,
                "The profile writer is behind; a section profile was dropped."
            );
        }
    }
}

fn write_jobs(output_dir: &Path, jobs: Receiver<Job>) {
    for job in jobs {
        match job {
            Job::Write(finished) => {
                let name = finished.name;
                if let Err(error) = write_profile(output_dir, *finished) {
                    tracing::warn!(
                        section = name,
                        error = &error as &dyn std::error::Error,
                        "Writing a section profile failed."
                    );
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn write_profile(output_dir: &Path, finished: Finished) -> Result<(), ProfilingError> {
    let started_ms = finished
        .report
        .timing
        .start_time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let title = format!(
        "{} ({:.0} ms)",
        finished.name,
        finished.elapsed.as_secs_f64() * 1000.0
    );
    let profile = cpu::encode(&cpu::resolve(finished.report), &title)?;
    let stem = format!("{}_{started_ms}", file_safe(finished.name));
    let pprof = output_dir.join(format!("{stem}.pb.gz"));
    let svg = output_dir.join(format!("{stem}.svg"));
    write_whole(&pprof, &profile.pprof_gz)?;
    write_whole(&svg, &profile.flamegraph_svg)?;
    tracing::debug!(
        section = finished.name,
        duration_ms = finished.elapsed.as_secs_f64() * 1000.0,
        pprof = %pprof.display(),
        flamegraph = %svg.display(),
        "Section profile written."
    );
    Ok(())
}

/// Writes through a temporary name, so whoever watches the directory never reads half a profile.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), ProfilingError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    fs::write(&partial, bytes)
        .and_then(|()| fs::rename(&partial, path))
        .map_err(|source| ProfilingError::Io {
            path: path.to_owned(),
            source,
        })
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
