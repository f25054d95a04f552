//! Runtime stall detection: a task sleeps a fixed interval in a loop and measures how late it wakes.
//!
//! Lateness is the time between the deadline a sleep asked for and the moment the task ran again. On a
//! healthy runtime it is the timer's granularity (about a millisecond); a blocking call on a worker
//! thread or a starved executor shows up directly as lateness, which is what paces audio badly. Every
//! wake also beats a [`Heartbeat`], so a runtime wedged for good fails `/liveness`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::heartbeat::Heartbeat;

/// Bucket bounds of the lateness histogram, seconds: 100 µs to 5 s.
const STALL_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How often the detector wakes and how late a wake must be to count as a stall.
#[derive(Debug, Clone, Copy)]
pub struct StallDetectorConfig {
    /// Sleep between wakes, e.g. 50 ms.
    pub interval: Duration,
    /// Lateness above which a wake counts as a stall and is logged, e.g. 20 ms.
    pub threshold: Duration,
}

/// The detector's metrics: `<prefix>_runtime_stall_seconds` (histogram of every wake's lateness) and
/// `<prefix>_runtime_stalls_total` (wakes later than the threshold).
#[derive(Debug, Clone)]
pub struct StallMetrics {
    lateness: Histogram,
    stalls: Counter,
}

impl StallMetrics {
    /// Registers both metrics; `prefix` is e.g. `"tts"` (empty for none).
    pub fn register(registry: &mut Registry, prefix: &str) -> Self {
        let name = |base: &str| {
            if prefix.is_empty() {
                base.to_owned()
            } else {
                format!("{prefix}_{base}")
            }
        };
        let lateness = Histogram::new(STALL_BUCKETS);
        let stalls = Counter::default();
        registry.register(
            name("runtime_stall_seconds"),
            "How late the async runtime woke a task sleeping on a timer, from the timer's deadline to the \
             task running again",
            lateness.clone(),
        );
        registry.register(
            name("runtime_stalls"),
            "Timer wakes later than the stall threshold",
            stalls.clone(),
        );
        Self { lateness, stalls }
    }

    fn wake(&self, lateness: Duration, threshold: Duration) {
        self.lateness.observe(lateness.as_secs_f64());
        if lateness > threshold {
            self.stalls.inc();
            tracing::warn!(
                lateness_ms = lateness.as_secs_f64() * 1e3,
                threshold_ms = threshold.as_secs_f64() * 1e3,
                "Async runtime stalled: a timer woke late."
            );
        }
    }
}

/// Spawns the detector on the current tokio runtime (panics outside one, like `tokio::spawn`). It runs
/// until the handle is aborted or the runtime shuts down.
pub fn spawn_stall_detector(
    config: StallDetectorConfig,
    metrics: StallMetrics,
    heartbeat: Arc<Heartbeat>,
) -> JoinHandle<()> {
    let interval = config.interval.max(Duration::from_millis(1));
    tokio::spawn(async move {
        loop {
            let deadline = Instant::now() + interval;
            tokio::time::sleep_until(deadline).await;
            metrics.wake(
                Instant::now().saturating_duration_since(deadline),
                config.threshold,
            );
            heartbeat.beat();
        }
    })
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn sample(registry: &Registry, name: &str) -> f64 {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    }

    #[test]
    fn a_blocked_runtime_is_counted_as_a_stall_and_beats_resume() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut registry = Registry::default();
        let metrics = StallMetrics::register(&mut registry, "test");
        let heartbeat = Heartbeat::new("runtime", Duration::from_secs(5));
        let config = StallDetectorConfig {
            interval: Duration::from_millis(5),
            threshold: Duration::from_millis(50),
        };
        runtime.block_on(async {
            let handle = spawn_stall_detector(config, metrics, heartbeat.clone());
            tokio::time::sleep(Duration::from_millis(30)).await;
            // Block the only worker thread: the detector's next wake is late by about this much.
            std::thread::sleep(Duration::from_millis(150));
            tokio::time::sleep(Duration::from_millis(30)).await;
            handle.abort();
        });
        assert!(sample(&registry, "test_runtime_stalls_total") >= 1.0);
        assert!(sample(&registry, "test_runtime_stall_seconds_count") >= 3.0);
        assert!(sample(&registry, "test_runtime_stall_seconds_sum") >= 0.09);
        assert!(heartbeat.age() < Duration::from_secs(5));
    }
}
