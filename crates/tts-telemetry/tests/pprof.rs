//! External truth for CPU profiles: Go's own `go tool pprof` must read what `/debug/pprof/profile` serves
//! and find the function that burned the CPU. Needs `go` on PATH (Debian: `golang-go`; `make test`
//! installs it).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use tts_telemetry::profiling::{self, ProfilingError};
use tts_telemetry::prometheus_client::registry::Registry;
use tts_telemetry::{AdminAccess, AdminState};

/// Burns CPU under a name the profile must show.
#[inline(never)]
fn ttsd_busy_loop_for_profile_test(stop: &AtomicBool) -> u64 {
    let mut x = 1_u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    x
}

fn go_tool_pprof_top(profile: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("cpu.pb.gz");
    std::fs::write(&path, profile).expect("the profile written to disk");
    let output = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&path)
        .env("PPROF_TMPDIR", dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "running `go tool pprof` failed ({error}): install Go, e.g. \
                 `apt-get install -y --no-install-recommends golang-go` (`make test` does)"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "go tool pprof failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_tool_pprof_reads_the_served_profile_and_names_the_busy_function() {
    let admin = tts_telemetry::router(AdminState {
        registry: Arc::new(Registry::default()),
        summary: Arc::new(|| serde_json::json!({})),
        checks: Vec::new(),
        heartbeats: Vec::new(),
        log: None,
        profiling: Some(AdminAccess::new(Some("t0ken".to_owned()), false)),
        access: AdminAccess::default(),
        started: Instant::now(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let busy = thread::Builder::new()
        .name("busy-loop".into())
        .spawn({
            let stop = stop.clone();
            move || ttsd_busy_loop_for_profile_test(&stop)
        })
        .unwrap();

    let request = Request::get("/debug/pprof/profile?seconds=2&frequency=99")
        .header(header::AUTHORIZATION, "Bearer t0ken")
        .body(Body::empty())
        .unwrap();
    let response = admin.oneshot(request).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let profile = to_bytes(response.into_body(), 64 << 20).await.unwrap();
    let top = go_tool_pprof_top(&profile);
    assert!(
        top.contains("ttsd_busy_loop_for_profile_test"),
        "`go tool pprof -top` does not name the busy function:\n{top}"
    );
    assert!(top.contains("Type: cpu"), "{top}");
    assert!(
        !top.contains("backtrace::backtrace::") && !top.contains("pprof::backtrace::"),
        "the sampler's own unwinder frames must not show:\n{top}"
    );
}

#[tokio::test]
async fn the_heap_is_unavailable_without_jemalloc() {
    // This test binary runs on the system allocator; the real `ttsd` binary runs on jemalloc.
    let error = profiling::heap_profile().await.unwrap_err();
    assert!(matches!(error, ProfilingError::HeapUnavailable(_)), "{error:?}");
}
