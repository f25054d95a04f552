//! Engine and pool metrics: per-chunk synthesis time and real-time factor, the pool's queue wait, chunks by
//! outcome, and characters synthesised.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tts_core::pool::JobStats;
use tts_core::voices::VoiceInfo;

use super::buckets::{LATENCY_BUCKETS, RTF_BUCKETS, SYNTHESIS_BUCKETS};
use super::labels::{Engine, EngineLabels, Lane, LaneLabels, TaskLabels, TaskOutcome, VoiceLabels};

/// What one synthesised chunk measured, for the SLO windows.
pub(super) struct ChunkTimes {
    pub(super) engine_seconds: f64,
    pub(super) real_time_factor: Option<f64>,
}

/// `tts_synthesis_chunk_seconds`, `tts_real_time_factor_ratio`, `tts_queue_wait_seconds`,
/// `tts_engine_tasks_total` and `tts_characters_synthesized_total`.
#[derive(Debug)]
pub(super) struct EngineMetrics {
    synthesis_chunk: Family<VoiceLabels, Histogram>,
    real_time_factor: Family<VoiceLabels, Histogram>,
    queue_wait: Family<LaneLabels, Histogram>,
    engine_tasks: Family<TaskLabels, Counter>,
    characters: Family<EngineLabels, Counter>,
    /// Totals for `/metrics/summary`, equal to sums over the labelled task counter.
    pub(super) synthesis_total: AtomicU64,
    pub(super) synthesis_errors: AtomicU64,
}

impl EngineMetrics {
    pub(super) fn register(r: &mut Registry) -> Self {
        let metrics = Self {
            synthesis_chunk: Family::new_with_constructor(|| Histogram::new(SYNTHESIS_BUCKETS)),
            real_time_factor: Family::new_with_constructor(|| Histogram::new(RTF_BUCKETS)),
            queue_wait: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            engine_tasks: Family::default(),
            characters: Family::default(),
            synthesis_total: AtomicU64::new(0),
            synthesis_errors: AtomicU64::new(0),
        };
        r.register_with_unit(
            "tts_synthesis_chunk",
            "Engine wall time for one chunk of text",
            Unit::Seconds,
            metrics.synthesis_chunk.clone(),
        );
        r.register(
            "tts_real_time_factor_ratio",
            "Engine seconds per second of audio produced, per chunk",
            metrics.real_time_factor.clone(),
        );
        r.register_with_unit(
            "tts_queue_wait",
            "Chunk submitted to the engine pool to an engine thread taking it, by lane",
            Unit::Seconds,
            metrics.queue_wait.clone(),
        );
        r.register(
            "tts_engine_tasks",
            "Chunks that reached an engine, by engine and outcome",
            metrics.engine_tasks.clone(),
        );
        r.register(
            "tts_characters_synthesized",
            "Characters of text handed to engines",
            metrics.characters.clone(),
        );
        metrics.init_series();
        metrics
    }

    fn init_series(&self) {
        for engine in [Engine::Espeak, Engine::Piper] {
            let _ = self.characters.get_or_create(&EngineLabels {
                engine: engine.clone(),
            });
            for outcome in [
                TaskOutcome::Completed,
                TaskOutcome::Cancelled,
                TaskOutcome::Failed,
            ] {
                let _ = self.engine_tasks.get_or_create(&TaskLabels {
                    engine: engine.clone(),
                    outcome,
                });
            }
        }
        for lane in [Lane::First, Lane::Later] {
            let _ = self.queue_wait.get_or_create(&LaneLabels { lane });
        }
    }

    pub(super) fn queue_wait(&self, first: bool, wait: Duration) {
        let lane = if first { Lane::First } else { Lane::Later };
        self.queue_wait
            .get_or_create(&LaneLabels { lane })
            .observe(wait.as_secs_f64());
    }

    pub(super) fn chunk_synthesized(
        &self,
        voice: &VoiceInfo,
        characters: usize,
        stats: &JobStats,
    ) -> ChunkTimes {
        let labels = VoiceLabels::of(voice);
        let engine_seconds = stats.engine_time.as_secs_f64();
        self.synthesis_chunk
            .get_or_create(&labels)
            .observe(engine_seconds);
        let real_time_factor = stats.real_time_factor();
        if let Some(rtf) = real_time_factor {
            self.real_time_factor.get_or_create(&labels).observe(rtf);
        }
        self.task(voice, TaskOutcome::Completed);
        self.synthesis_total.fetch_add(1, Ordering::Relaxed);
        self.characters
            .get_or_create(&EngineLabels {
                engine: voice.engine.into(),
            })
            .inc_by(characters as u64);
        ChunkTimes {
            engine_seconds,
            real_time_factor,
        }
    }

    pub(super) fn chunk_failed(&self, voice: &VoiceInfo) {
        self.task(voice, TaskOutcome::Failed);
        self.synthesis_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn chunk_cancelled(&self, voice: &VoiceInfo) {
        self.task(voice, TaskOutcome::Cancelled);
    }

    fn task(&self, voice: &VoiceInfo, outcome: TaskOutcome) {
        self.engine_tasks
            .get_or_create(&TaskLabels {
                engine: voice.engine.into(),
                outcome,
            })
            .inc();
    }
}
