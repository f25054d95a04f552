//! The model manager's metrics (`tts_model_*` in `docs/telemetry.md`), with a method per thing that happens.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tts_core::voices::{EngineKind, VoiceInfo};

use super::{LoadFailureReason, LoadReason, UnloadReason};

/// A cold Piper model can take tens of seconds on a busy machine; espeak loads in milliseconds.
const LOAD_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0];
/// One warm-up sentence per engine thread: ~10 ms for espeak, up to seconds for Piper on a slow CPU.
const WARMUP_BUCKETS: [f64; 10] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    engine: &'static str,
}

/// A voice from the catalog: bounded by the voices installed, never free text.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VoiceLabels {
    engine: &'static str,
    voice: String,
}

impl VoiceLabels {
    fn of(voice: &VoiceInfo) -> Self {
        Self {
            engine: voice.engine.as_str(),
            voice: voice.id.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VoiceReasonLabels {
    engine: &'static str,
    voice: String,
    reason: &'static str,
}

impl VoiceReasonLabels {
    fn of(voice: &VoiceInfo, reason: &'static str) -> Self {
        Self {
            engine: voice.engine.as_str(),
            voice: voice.id.clone(),
            reason,
        }
    }
}

/// Everything the model manager measures. Clones share the same series.
#[derive(Debug, Clone)]
pub struct ModelMetrics {
    resident_voices: Family<EngineLabels, Gauge>,
    loads: Family<VoiceReasonLabels, Counter>,
    unloads: Family<VoiceReasonLabels, Counter>,
    load_seconds: Family<VoiceLabels, Histogram>,
    warmup_seconds: Family<VoiceLabels, Histogram>,
    load_failures: Family<VoiceReasonLabels, Counter>,
}

impl ModelMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            resident_voices: Family::default(),
            loads: Family::default(),
            unloads: Family::default(),
            load_seconds: Family::new_with_constructor(|| Histogram::new(LOAD_BUCKETS)),
            warmup_seconds: Family::new_with_constructor(|| Histogram::new(WARMUP_BUCKETS)),
            load_failures: Family::default(),
        };
        let r = registry;
        r.register(
            "tts_model_resident_voices",
            "Voices loaded and warmed on this worker, by engine",
            metrics.resident_voices.clone(),
        );
        r.register(
            "tts_model_loads",
            "Voice loads that finished with a usable, warmed voice, by reason",
            metrics.loads.clone(),
        );
        r.register(
            "tts_model_unloads",
            "Voices unloaded: idle past the TTL, evicted for the resident cap, or by request",
            metrics.unloads.clone(),
        );
        r.register_with_unit(
            "tts_model_load",
            "Parallel-load slot taken to the voice loaded, warm-up excluded",
            Unit::Seconds,
            metrics.load_seconds.clone(),
        );
        r.register_with_unit(
            "tts_model_warmup",
            "Warm-up sentence submitted to it synthesised on every new instance of the voice",
            Unit::Seconds,
            metrics.warmup_seconds.clone(),
        );
        r.register(
            "tts_model_load_failures",
            "Loads that gave no usable voice (a failed warm-up counts), by reason",
            metrics.load_failures.clone(),
        );
        metrics
    }

    pub(super) fn loaded(&self, voice: &VoiceInfo, reason: LoadReason, load: Duration, warmup: Duration) {
        self.loads
            .get_or_create(&VoiceReasonLabels::of(voice, reason.as_str()))
            .inc();
        // A voice's other series start at zero with its first load, so `increase()` sees its first unload
        // or failure (series for every catalogued voice up front would be hundreds of espeak languages).
        for unload in [UnloadReason::Ttl, UnloadReason::Lru, UnloadReason::Manual] {
            let _ = self
                .unloads
                .get_or_create(&VoiceReasonLabels::of(voice, unload.as_str()));
        }
        for failure in [
            LoadFailureReason::NotFound,
            LoadFailureReason::Invalid,
            LoadFailureReason::OutOfMemory,
            LoadFailureReason::Warmup,
            LoadFailureReason::Other,
        ] {
            let _ = self
                .load_failures
                .get_or_create(&VoiceReasonLabels::of(voice, failure.as_str()));
        }
        let labels = VoiceLabels::of(voice);
        self.load_seconds
            .get_or_create(&labels)
            .observe(load.as_secs_f64());
        self.warmup_seconds
            .get_or_create(&labels)
            .observe(warmup.as_secs_f64());
    }

    pub(super) fn load_failed(&self, voice: &VoiceInfo, reason: LoadFailureReason) {
        self.load_failures
            .get_or_create(&VoiceReasonLabels::of(voice, reason.as_str()))
            .inc();
    }

    pub(super) fn unloaded(&self, voice: &VoiceInfo, reason: UnloadReason) {
        self.unloads
            .get_or_create(&VoiceReasonLabels::of(voice, reason.as_str()))
            .inc();
    }

    pub(super) fn resident_voices(&self, engine: EngineKind, count: usize) {
        self.resident_voices
            .get_or_create(&EngineLabels {
                engine: engine.as_str(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}
