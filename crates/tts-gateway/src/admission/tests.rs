use std::time::Duration;

use tts_core::pool::{Job, PoolStats, SubmitError};

use super::*;

/// A backend with a fixed number of engine threads that never runs anything.
struct Threads(usize);

impl Synthesizer for Threads {
    fn submit(&self, _job: Job) -> Result<(), SubmitError> {
        Err(SubmitError::ShutDown)
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            threads: self.0,
            busy: 0,
            queued: 0,
            queue_capacity: 16,
            discarded: 0,
            busy_seconds: 0.0,
            panics: 0,
        }
    }
}

fn chunk(engine_seconds: f64, audio_seconds: f64) -> JobStats {
    JobStats {
        queue_wait: Duration::ZERO,
        engine_first_pcm: None,
        engine_time: Duration::from_secs_f64(engine_seconds),
        audio_seconds,
    }
}

/// An admission of `max` slots with headroom `limit` over `threads` engine threads.
fn admission(
    max: usize,
    limit: f64,
    threads: usize,
) -> (Admission, Arc<EngineHeadroom>, Arc<dyn Synthesizer>) {
    let headroom = EngineHeadroom::new(limit, &mut Registry::default());
    let synthesizer = headroom.meter(Arc::new(Threads(threads)));
    let admission = Admission::new(max);
    admission.set_headroom(headroom.clone());
    (admission, headroom, synthesizer)
}

#[test]
fn the_count_refuses_past_max_sessions_and_frees_on_drop() {
    let admission = Admission::new(2);
    let a = admission.try_acquire().unwrap();
    let _b = admission.try_acquire().unwrap();
    assert_eq!(admission.try_acquire().unwrap_err(), RefusedBy::MaxSessions);
    drop(a);
    assert_eq!(admission.active(), 1);
    assert!(admission.try_acquire().is_ok());
}

#[test]
fn the_cost_is_an_audio_weighted_average_that_follows_the_engine() {
    let headroom = EngineHeadroom::new(0.9, &mut Registry::default());
    assert_eq!(headroom.real_time_factor(), None);
    headroom.observe(&chunk(0.2, 2.0));
    assert_eq!(headroom.real_time_factor(), Some(0.1), "the first chunk sets it");
    // Too short to say anything, or nonsense: ignored.
    headroom.observe(&chunk(1.0, 0.01));
    assert_eq!(headroom.real_time_factor(), Some(0.1));
    // A slower engine pulls it up, step by step: 3 s of audio at RTF 0.4 moves it 1 - e^(-0.1) = 9.5 %.
    headroom.observe(&chunk(1.2, 3.0));
    let after = headroom.real_time_factor().unwrap();
    let expected = 0.1 + (1.0 - (-0.1f64).exp()) * 0.3;
    assert!((after - expected).abs() < 1e-9, "{after} vs {expected}");
    for _ in 0..200 {
        headroom.observe(&chunk(1.2, 3.0));
    }
    assert!((headroom.real_time_factor().unwrap() - 0.4).abs() < 1e-3);
}

#[test]
fn sessions_are_admitted_while_all_of_them_speaking_fits_under_the_limit() {
    // Two engine threads, each session costs 0.25 of a thread, limit 0.9: 7 × 0.25 / 2 = 0.875 fits,
    // the 8th (1.0) does not.
    let (admission, headroom, _synthesizer) = admission(100, 0.9, 2);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            admission
                .try_acquire()
                .expect("no estimate yet: only the count applies"),
        );
    }
    headroom.observe(&chunk(0.5, 2.0));
    while let Ok(permit) = admission.try_acquire() {
        held.push(permit);
        assert!(held.len() <= 7, "admitted past the headroom");
    }
    assert_eq!(held.len(), 7);
    assert_eq!(admission.try_acquire().unwrap_err(), RefusedBy::EngineHeadroom);
    assert_eq!(admission.active(), 7, "a refused slot is given back");
    let check = headroom.check();
    let result = check.check();
    assert!(
        !result.ok && result.detail.starts_with("at the limit"),
        "{result:?}"
    );
    held.pop();
    assert!(check.check().ok, "one slot free again");
    assert!(admission.try_acquire().is_ok());
}

#[test]
fn no_limit_or_no_engine_threads_leave_only_the_count() {
    let (off, headroom, _s) = admission(3, 0.0, 1);
    headroom.observe(&chunk(10.0, 1.0));
    let held: Vec<_> = (0..3).map(|_| off.try_acquire().unwrap()).collect();
    assert_eq!(off.try_acquire().unwrap_err(), RefusedBy::MaxSessions);
    assert!(!headroom.check().required_for_readiness());
    drop(held);

    let (no_workers, headroom, _s) = admission(3, 0.9, 0);
    headroom.observe(&chunk(10.0, 1.0));
    assert!(no_workers.try_acquire().is_ok());
}

#[test]
fn the_gauges_and_refusals_are_exported() {
    let mut registry = Registry::default();
    let headroom = EngineHeadroom::new(0.5, &mut registry);
    let _synthesizer = headroom.meter(Arc::new(Threads(1)));
    let admission = Admission::new(10);
    admission.set_headroom(headroom.clone());
    headroom.observe(&chunk(0.25, 1.0));
    let _a = admission.try_acquire().unwrap();
    let _b = admission.try_acquire().unwrap();
    assert_eq!(admission.try_acquire().unwrap_err(), RefusedBy::EngineHeadroom);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "tts_gateway_admission_refusals_total{limit=\"engine_headroom\"} 1",
        "tts_gateway_admission_refusals_total{limit=\"max_sessions\"} 0",
        "tts_gateway_admission_limit_ratio 0.5",
        "tts_gateway_admission_session_cost_ratio 0.25",
        "tts_gateway_admission_utilisation_ratio 0.5",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}
