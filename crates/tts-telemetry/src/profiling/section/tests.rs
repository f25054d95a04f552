use std::io::Read as _;

use flate2::read::GzDecoder;
use pprof::protos::Message as _;

use super::*;
use crate::profiling::TEST_SAMPLER;

fn config(dir: &Path, min_duration_ms: u64) -> ProfilingConfig {
    ProfilingConfig {
        enabled: true,
        output_dir: dir.to_owned(),
        min_duration_ms,
        ..ProfilingConfig::default()
    }
}

/// Keeps one core busy in a function the profile can name.
#[inline(never)]
fn section_test_spin(duration: Duration) {
    let started = Instant::now();
    let mut x = 1_u64;
    // Reading the clock runs in the vDSO, which the sampler skips: read it rarely.
    while started.elapsed() < duration {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn function_names(pprof_gz: &[u8]) -> Vec<String> {
    let mut protobuf = Vec::new();
    GzDecoder::new(pprof_gz).read_to_end(&mut protobuf).unwrap();
    let profile = pprof::protos::Profile::parse_from_bytes(&protobuf).unwrap();
    assert!(!profile.sample.is_empty(), "the profile has no samples");
    profile
        .function
        .iter()
        .map(|function| profile.string_table[usize::try_from(function.name).unwrap()].clone())
        .collect()
}

#[test]
fn only_sections_past_the_minimum_leave_profiles_and_short_ones_never_break_the_next() {
    let _serial = TEST_SAMPLER.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let profiler = SectionProfiler::new(&config(dir.path(), 100)).unwrap();

    for round in 0..2 {
        for _ in 0..40 {
            let _section = profiler.section("short");
            section_test_spin(Duration::from_millis(1));
        }
        drop(profiler.section("instant"));
        let long = profiler.section("long");
        section_test_spin(Duration::from_millis(150));
        drop(long);
        profiler.flush();
        let names = files(dir.path());
        assert_eq!(names.len(), 2 * (round + 1), "{names:?}");
    }

    let names = files(dir.path());
    assert!(names.iter().all(|name| name.starts_with("long_")), "{names:?}");
    assert_eq!(names.iter().filter(|name| name.ends_with(".pb.gz")).count(), 2);
    assert_eq!(names.iter().filter(|name| name.ends_with(".svg")).count(), 2);
    for name in names.iter().filter(|name| name.ends_with(".pb.gz")) {
        let bytes = fs::read(dir.path().join(name)).unwrap();
        let functions = function_names(&bytes);
        assert!(
            functions.iter().any(|f| f.contains("section_test_spin")),
            "{name}: {functions:?}"
        );
        let svg = fs::read_to_string(dir.path().join(name.replace(".pb.gz", ".svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("section_test_spin"),
            "{name}"
        );
    }
}

#[test]
fn a_section_that_finds_the_sampler_busy_is_timed_not_sampled() {
    let _serial = TEST_SAMPLER.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let profiler = SectionProfiler::new(&config(dir.path(), 0)).unwrap();

    let outer = profiler.section("outer");
    let inner = profiler.section("inner");
    assert!(inner.section.as_ref().unwrap().sampler.is_none());
    section_test_spin(Duration::from_millis(30));
    drop(inner);
    drop(outer);
    profiler.flush();
    let names = files(dir.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|name| name.starts_with("outer_")), "{names:?}");

    // Freed again: the next section samples.
    let next = profiler.section("next");
    assert!(next.section.as_ref().unwrap().sampler.is_some());
}

#[test]
fn disabled_or_cpu_off_profilers_write_nothing() {
    let _serial = TEST_SAMPLER.blocking_lock();
    let dir = tempfile::tempdir().unwrap();

    let disabled = SectionProfiler::new(&ProfilingConfig {
        enabled: false,
        ..config(&dir.path().join("disabled"), 0)
    })
    .unwrap();
    assert!(disabled.section("x").section.is_none());
    assert_eq!(disabled.output_dir(), None);

    let timed_only = SectionProfiler::new(&ProfilingConfig {
        cpu: false,
        ..config(&dir.path().join("cpu-off"), 0)
    })
    .unwrap();
    let section = timed_only.section("x");
    assert!(section.section.as_ref().unwrap().sampler.is_none());
    drop(section);
    timed_only.flush();
    assert!(files(dir.path()).is_empty(), "no directory is created");
}

#[test]
fn guards_can_cross_await_points() {
    fn assert_send<T: Send>() {}
    assert_send::<SectionGuard>();
}

#[test]
fn section_names_become_safe_file_names() {
    assert_eq!(file_safe("worker-0_synthesis"), "worker-0_synthesis");
    assert_eq!(file_safe("../etc/passwd x"), "___etc_passwd_x");
}
