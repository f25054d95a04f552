//! The worker's own metrics: engine pool gauges read at scrape time, and what its gRPC surface served.
//! Model-manager metrics live with the manager (`models`), Redis metrics in `tts_telemetry::redis`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tts_core::pool::Pool;

/// Chunk received from the gateway → first audio piece sent back: 1 ms (espeak) to 10 s (Piper, queued).
const FIRST_AUDIO_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 10.0,
];

/// How a chunk on a Synthesize stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ChunkOutcome {
    finished,
    failed,
    cancelled,
    refused,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: ChunkOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum ControlCommand {
    pause,
    resume,
    stop,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    command: ControlCommand,
}

/// What the worker's gRPC service did.
#[derive(Clone)]
pub struct WorkerMetrics {
    sessions: Gauge,
    chunks: Family<OutcomeLabels, Counter>,
    first_audio: Histogram,
    controls: Family<CommandLabels, Counter>,
}

impl WorkerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            sessions: Gauge::default(),
            chunks: Family::default(),
            first_audio: Histogram::new(FIRST_AUDIO_BUCKETS),
            controls: Family::default(),
        };
        registry.register(
            "tts_worker_server_sessions_active",
            "Gateway sessions started on this worker and not yet ended",
            metrics.sessions.clone(),
        );
        registry.register(
            "tts_worker_server_chunks",
            "Text chunks received on Synthesize streams, by how they ended",
            metrics.chunks.clone(),
        );
        registry.register_with_unit(
            "tts_worker_server_first_audio",
            "Chunk received from the gateway to its first audio piece sent back",
            Unit::Seconds,
            metrics.first_audio.clone(),
        );
        registry.register(
            "tts_worker_server_controls",
            "PAUSE/RESUME/STOP applied to a session on this worker",
            metrics.controls.clone(),
        );
        for outcome in [
            ChunkOutcome::finished,
            ChunkOutcome::failed,
            ChunkOutcome::cancelled,
            ChunkOutcome::refused,
        ] {
            let _ = metrics.chunks.get_or_create(&OutcomeLabels { outcome });
        }
        for command in [
            ControlCommand::pause,
            ControlCommand::resume,
            ControlCommand::stop,
        ] {
            let _ = metrics.controls.get_or_create(&CommandLabels { command });
        }
        metrics
    }

    pub(crate) fn session_started(&self) {
        self.sessions.inc();
    }

    pub(crate) fn session_ended(&self) {
        self.sessions.dec();
    }

    pub(crate) fn chunk_ended(&self, outcome: ChunkOutcome) {
        self.chunks.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(crate) fn first_audio(&self, elapsed: Duration) {
        self.first_audio.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn control(&self, command: ControlCommand) {
        self.controls.get_or_create(&CommandLabels { command }).inc();
    }
}

/// Engine pool and queue gauges, read from the pool at scrape time so they are never stale. Registered by
/// `ttsd serve` for its in-process pool and by `ttsd worker` for its own.
#[derive(Debug)]
pub struct PoolCollector {
    pool: Arc<Pool>,
}

impl PoolCollector {
    pub fn register(registry: &mut Registry, pool: Arc<Pool>) {
        registry.register_collector(Box::new(Self { pool }));
    }
}

impl prometheus_client::collector::Collector for PoolCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let stats = self.pool.stats();
        let gauges: [(&str, &str, i64); 4] = [
            (
                "tts_pool_threads",
                "Engine threads in the pool",
                stats.threads as i64,
            ),
            (
                "tts_pool_busy_threads",
                "Engine threads running a chunk now",
                stats.busy as i64,
            ),
            (
                "tts_queue_depth",
                "Chunks waiting for an engine thread now",
                stats.queued as i64,
            ),
            (
                "tts_queue_capacity",
                "Chunks the queue holds before refusing with OVERLOADED",
                stats.queue_capacity as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let ratio = ConstGauge::new(stats.busy as f64 / stats.threads.max(1) as f64);
        ratio.encode(encoder.encode_descriptor(
            "tts_pool_utilization_ratio",
            "Busy engine threads over all engine threads, now (rate(tts_pool_busy_seconds_total) / threads over time)",
            None,
            ratio.metric_type(),
        )?)?;
        let busy = ConstCounter::new(stats.busy_seconds);
        busy.encode(encoder.encode_descriptor(
            "tts_pool_busy_seconds",
            "Seconds engine threads spent on chunks, summed over threads",
            None,
            busy.metric_type(),
        )?)?;
        encode_decoder_modes(&mut encoder)?;
        let discarded = ConstCounter::new(stats.discarded);
        discarded.encode(encoder.encode_descriptor(
            "tts_queue_discarded",
            "Chunks dropped from the queue because their session stopped them before an engine took them",
            None,
            discarded.metric_type(),
        )?)?;
        let panics = ConstCounter::new(stats.panics);
        panics.encode(encoder.encode_descriptor(
            "tts_engine_panics",
            "Chunks whose engine panicked: each failed with SYNTHESIS_FAILED and the engine thread lived on",
            None,
            panics.metric_type(),
        )?)?;
        encode_residency(&mut encoder, self.pool.residency())
    }
}

/// The pool's resident voices: the in-process bound (`engine.max_resident_voices`, `voice_idle_ttl_seconds`).
/// A worker's pool is unbounded (its model manager decides), so there only the gauge and loads move.
fn encode_residency(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    stats: tts_core::pool::ResidencyStats,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    let resident = ConstGauge::new(stats.resident as i64);
    resident.encode(encoder.encode_descriptor(
        "tts_pool_resident_voices",
        "Voices with loaded engines in the pool now (or about to be loaded by a queued chunk)",
        None,
        resident.metric_type(),
    )?)?;
    let loads = ConstCounter::new(stats.loads);
    loads.encode(encoder.encode_descriptor(
        "tts_pool_voice_loads",
        "Times a voice became resident in the pool",
        None,
        loads.metric_type(),
    )?)?;
    let lru = ConstCounter::new(stats.evicted_for_room);
    let mut family = encoder.encode_descriptor(
        "tts_pool_voice_evictions",
        "Voices unloaded from the pool: lru = to make room under the cap, ttl = idle past the TTL",
        None,
        lru.metric_type(),
    )?;
    lru.encode(family.encode_family(&[("reason", "lru")])?)?;
    ConstCounter::new(stats.evicted_idle).encode(family.encode_family(&[("reason", "ttl")])?)?;
    let refused = ConstCounter::new(stats.refused);
    refused.encode(encoder.encode_descriptor(
        "tts_pool_voice_refusals",
        "Chunks refused with OVERLOADED because their voice was not resident and every resident voice was in use",
        None,
        refused.metric_type(),
    )?)?;
    Ok(())
}

/// `tts_engine_decoder_mode{voice, mode}` = 1 for every Piper voice loaded so far: `streaming` when its
/// decoder runs in windows, `whole` when its graph could not be split (the WARN at its load says why).
fn encode_decoder_modes(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::gauge::ConstGauge;
    let one = ConstGauge::new(1i64);
    let mut family = encoder.encode_descriptor(
        "tts_engine_decoder_mode",
        "Piper voices loaded, by how their decoder runs (1 per voice)",
        None,
        one.metric_type(),
    )?;
    for (voice, mode) in tts_core::engine::piper_decoder_modes() {
        let labels = [("voice", voice.as_str()), ("mode", mode.as_str())];
        one.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
