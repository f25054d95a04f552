//! Measures the anomaly detector as ttsd runs it: on a sliding-window p95 of first audio (300 s window,
//! 30 slots, as `/metrics/summary` keeps it), sampled once a second, with the default parameters
//! (alpha 0.02, |z| >= 3.5, 200 warm-up points, 5 consecutive points, 5 ms stddev floor).
//!
//! The series is synthetic and deterministic: two utterances a second whose first audio is
//! 120 ms × a log-normal factor (sigma 0.25, a seeded xorshift generator), replayed on tokio's paused
//! clock. It prints the false positives over 10 steady minutes after warm-up and the detection delay of
//! a step (first audio +120 ms from one second on, as a slowed engine would add).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::time::Instant;
use tts_alerts::{
    AnomalyParams, AnomalyRule, Direction, Dispatch, Engine, EngineConfig, Escalation, Event, Level, Links,
    Metrics, Sample, Scope,
};
use tts_telemetry::window::WindowedHistogram;

/// xorshift64*, so the series is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.next_f64().max(f64::MIN_POSITIVE);
        let v = self.next_f64();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn engine() -> (Engine, tokio::sync::mpsc::Receiver<tts_alerts::Notification>) {
    let metrics = Metrics::default();
    let (dispatch, rx) = Dispatch::channel(4096, &metrics);
    let config = EngineConfig {
        threshold_rules: Vec::new(),
        anomaly_rules: vec![AnomalyRule {
            name: "FirstAudioAnomaly".into(),
            signal: "first_audio_p95_seconds".into(),
            scope_filter: Scope::new(),
            direction: Direction::HigherIsWorse,
            params: AnomalyParams {
                min_stddev: 0.005,
                ..AnomalyParams::default()
            },
            level: Level::Warning,
            summary: "First audio departs from its usual level.".into(),
            description: "{value}".into(),
        }],
        health_rules: Vec::new(),
        cooldown: Duration::from_secs(300),
        repeat_interval: Duration::from_secs(3600),
        escalation: Escalation::default(),
        history_capacity: 100,
        links: Links::default(),
    };
    (Engine::new(config, metrics, dispatch).unwrap(), rx)
}

/// Runs `seconds` of the series from `start` (seconds since the window's origin), adding `extra`
/// seconds to every first audio; returns the seconds (from `start`) at which alerts fired.
async fn replay(
    engine: &Engine,
    rx: &mut tokio::sync::mpsc::Receiver<tts_alerts::Notification>,
    window: &WindowedHistogram,
    rng: &mut Rng,
    origin: std::time::Instant,
    (start, seconds, extra): (u64, u64, f64),
) -> Vec<u64> {
    let mut fired = Vec::new();
    for second in start..start + seconds {
        let at = origin + Duration::from_secs(second);
        for _ in 0..2 {
            window.observe_at(0.120 * (0.25 * rng.normal()).exp() + extra, at);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        if let Some(p95) = window.quantile_at(0.95, at) {
            let sample = Sample::new("first_audio_p95_seconds", &[], p95);
            engine.evaluate(&[sample], Instant::now());
        }
        while let Ok(n) = rx.try_recv() {
            if n.event == Event::Firing {
                fired.push(second - start);
            }
        }
    }
    fired
}

#[tokio::test(start_paused = true)]
async fn false_positives_on_a_steady_run_and_delay_on_a_step() {
    let (engine, mut rx) = engine();
    let window = WindowedHistogram::new(Duration::from_secs(300), 30);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let origin = std::time::Instant::now();
    // Warm-up: the window fills (300 s) and the baseline learns (200 points) before judging.
    let warm = replay(&engine, &mut rx, &window, &mut rng, origin, (0, 300, 0.0)).await;
    let steady = replay(&engine, &mut rx, &window, &mut rng, origin, (300, 600, 0.0)).await;
    let step = replay(&engine, &mut rx, &window, &mut rng, origin, (900, 300, 0.120)).await;
    println!(
        "anomaly detector, synthetic first-audio p95 series: warm-up firings {}, \
         false positives in 600 steady s {}, step +120 ms detected after {:?} s",
        warm.len(),
        steady.len(),
        step.first()
    );
    assert!(warm.is_empty(), "fired during warm-up at {warm:?}");
    assert!(steady.is_empty(), "false positives at {steady:?}");
    let delay = *step.first().expect("the step is detected");
    assert!(delay < 120, "a doubled first audio took {delay} s to detect");
}
