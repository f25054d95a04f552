//! Heap profiles from jemalloc's allocation sampler, through `jemalloc_pprof`.
//!
//! They need the binary to use `tikv-jemallocator` (with its `profiling` feature) as the global allocator
//! and to export `malloc_conf` with `prof:true,prof_active:false`: profiling compiled in and armed, but
//! not sampling until [`activate_heap_profiling`] turns it on.

use std::sync::Arc;

use jemalloc_pprof::JemallocProfCtl;
use tokio::sync::Mutex;

use super::ProfilingError;

const NOT_JEMALLOC: &str = "Heap profiling needs jemalloc as the global allocator with `prof:true` in \
    its malloc_conf; this process does not run with it.";
const NOT_ACTIVE: &str = "jemalloc heap sampling is off: start the process with PROFILE_MEMORY=true \
    (profiling.memory = true) to turn it on.";

fn prof_ctl() -> Result<&'static Arc<Mutex<JemallocProfCtl>>, ProfilingError> {
    jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or(ProfilingError::HeapUnavailable(NOT_JEMALLOC))
}

/// Starts jemalloc's allocation sampling (about one sample per 512 KiB allocated, as `lg_prof_sample`
/// in `malloc_conf` says). Samples cover allocations from this moment on.
pub async fn activate_heap_profiling() -> Result<(), ProfilingError> {
    let mut ctl = prof_ctl()?.lock().await;
    if !ctl.activated() {
        ctl.activate()
            .map_err(|error| ProfilingError::Heap(error.to_string()))?;
        tracing::info!("Heap profiling activated.");
    }
    Ok(())
}

/// Dumps the live heap (sampled allocations not yet freed) as a gzipped pprof profile.
pub async fn heap_profile() -> Result<Vec<u8>, ProfilingError> {
    let ctl = prof_ctl()?.clone().lock_owned().await;
    if !ctl.activated() {
        return Err(ProfilingError::HeapUnavailable(NOT_ACTIVE));
    }
    // jemalloc writes the dump to a temporary file and the parser reads it back: blocking I/O.
    tokio::task::spawn_blocking(move || {
        let mut ctl = ctl;
        ctl.dump_pprof()
            .map_err(|error| ProfilingError::Heap(format!("{error:#}")))
    })
    .await
    .map_err(|error| ProfilingError::Task(error.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_jemalloc_the_heap_is_unavailable_and_says_why() {
        let error = heap_profile().await.unwrap_err();
        assert!(matches!(error, ProfilingError::HeapUnavailable(_)), "{error:?}");
        assert!(error.to_string().contains("jemalloc"), "{error}");
        assert!(matches!(
            activate_heap_profiling().await,
            Err(ProfilingError::HeapUnavailable(_))
        ));
    }
}
