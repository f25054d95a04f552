//! What the built-in alert engine watches on a worker: the engine pool's queue (seed 002's queue size
//! 10 / 25 / 50). The worker's health rules (engine pool alive, default voice resident) are its existing
//! health checks, wired by the binary.

use std::sync::Arc;

use tts_alerts::{Direction, LevelThreshold, Sample, Scope, SignalSource, ThresholdRule, Thresholds};
use tts_core::pool::Pool;

/// `pool_queue_depth`: chunks waiting for an engine thread now.
pub struct WorkerSignals {
    pool: Arc<Pool>,
}

impl WorkerSignals {
    pub fn new(pool: Arc<Pool>) -> Self {
        Self { pool }
    }
}

impl SignalSource for WorkerSignals {
    fn sample(&self, out: &mut Vec<Sample>) {
        out.push(Sample::new(
            "pool_queue_depth",
            &[],
            self.pool.stats().queued as f64,
        ));
    }
}

/// The worker's default threshold rules.
pub fn default_rules() -> Vec<ThresholdRule> {
    let level = |trigger, clear| Some(LevelThreshold { trigger, clear });
    vec![ThresholdRule {
        name: "WorkerQueueBackup".into(),
        signal: "pool_queue_depth".into(),
        scope_filter: Scope::new(),
        direction: Direction::HigherIsWorse,
        thresholds: Thresholds {
            warning: level(10.0, 8.0),
            critical: level(25.0, 20.0),
            emergency: level(50.0, 40.0),
            for_seconds: 30.0,
        },
        summary: "Chunks are queueing for this worker's engines.".into(),
        description: "{value} chunks wait for an engine on this worker.".into(),
    }]
}
