//! What the built-in alert engine watches on a gateway: signals computed from the sliding windows the
//! gateway already keeps for `/metrics/summary`, and the default rules over them (seed 002's table
//! translated to our engines, plus first audio, barge-in, underruns and RTF).
//!
//! Signals (all per evaluation tick; a window with no data gives no sample, and no data clears an alert):
//!
//! | signal | scope | value |
//! |---|---|---|
//! | `first_audio_p95_seconds` | engine | p95 of first audio over the SLO window |
//! | `chunk_synthesis_p95_seconds` | engine | p95 of engine wall time per chunk |
//! | `rtf_p95_ratio` | engine | p95 of the real-time factor |
//! | `barge_in_p95_seconds` | — | p95 of STOP/PAUSE → audio stopped |
//! | `underruns_per_minute` | — | underruns over the last minute of ticks |
//! | `utterance_success_ratio` | — | utterances not failed ÷ all, over the SLO window |
//! | `pool_queue_depth` | — | chunks waiting for an engine now |

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tts_alerts::{
    AnomalyParams, AnomalyRule, Direction, Level, LevelThreshold, Sample, Scope, SignalSource, ThresholdRule,
    Thresholds,
};
use tts_core::voices::EngineKind;

use crate::{GatewayMetrics, Synthesizer};

/// Underrun totals kept for the per-minute rate.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The gateway's signals for the alert engine.
pub struct GatewaySignals {
    metrics: Arc<GatewayMetrics>,
    synthesizer: Arc<dyn Synthesizer>,
    underruns: Mutex<VecDeque<(Instant, u64)>>,
}

impl GatewaySignals {
    pub fn new(metrics: Arc<GatewayMetrics>, synthesizer: Arc<dyn Synthesizer>) -> Self {
        Self {
            metrics,
            synthesizer,
            underruns: Mutex::new(VecDeque::new()),
        }
    }

    fn underruns_per_minute(&self, now: Instant) -> Option<f64> {
        let total = self.metrics.windows.underruns.load(Ordering::Relaxed);
        let mut history = self.underruns.lock().unwrap_or_else(|p| p.into_inner());
        history.push_back((now, total));
        while history
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            history.pop_front();
        }
        let (first_at, first) = *history.front()?;
        let elapsed = now.duration_since(first_at).as_secs_f64();
        (elapsed >= 1.0).then(|| (total - first) as f64 * 60.0 / elapsed)
    }
}

impl SignalSource for GatewaySignals {
    fn sample(&self, out: &mut Vec<Sample>) {
        let w = &self.metrics.windows;
        for engine in [EngineKind::Espeak, EngineKind::Piper] {
            let e = w.engine(engine);
            let labels = [("engine", engine.as_str())];
            for (signal, window) in [
                ("first_audio_p95_seconds", &e.first_audio),
                ("chunk_synthesis_p95_seconds", &e.synthesis),
                ("rtf_p95_ratio", &e.real_time_factor),
            ] {
                if let Some(value) = window.quantile(0.95) {
                    out.push(Sample::new(signal, &labels, value));
                }
            }
        }
        if let Some(value) = w.barge_in.quantile(0.95) {
            out.push(Sample::new("barge_in_p95_seconds", &[], value));
        }
        if let Some(value) = self.underruns_per_minute(Instant::now()) {
            out.push(Sample::new("underruns_per_minute", &[], value));
        }
        if let Some(value) = w.availability_ok.ratio() {
            out.push(Sample::new("utterance_success_ratio", &[], value));
        }
        let queued = self.synthesizer.stats().queued as f64;
        out.push(Sample::new("pool_queue_depth", &[], queued));
    }
}

fn levels(w: (f64, f64), c: (f64, f64), e: (f64, f64), for_seconds: f64) -> Thresholds {
    let level = |(trigger, clear)| Some(LevelThreshold { trigger, clear });
    Thresholds {
        warning: level(w),
        critical: level(c),
        emergency: level(e),
        for_seconds,
    }
}

fn engine_scope(engine: EngineKind) -> Scope {
    Scope::from([("engine".to_owned(), engine.as_str().to_owned())])
}

struct Spec {
    name: &'static str,
    signal: &'static str,
    scope_filter: Scope,
    direction: Direction,
    thresholds: Thresholds,
    summary: &'static str,
    description: &'static str,
}

impl From<Spec> for ThresholdRule {
    fn from(spec: Spec) -> Self {
        ThresholdRule {
            name: spec.name.into(),
            signal: spec.signal.into(),
            scope_filter: spec.scope_filter,
            direction: spec.direction,
            thresholds: spec.thresholds,
            summary: spec.summary.into(),
            description: spec.description.into(),
        }
    }
}

/// The gateway's default threshold rules.
pub fn default_rules() -> Vec<ThresholdRule> {
    use Direction::{HigherIsWorse as Up, LowerIsWorse as Down};
    let specs = [
        Spec {
            name: "HighFirstAudioLatency",
            signal: "first_audio_p95_seconds",
            scope_filter: Scope::new(),
            direction: Up,
            // Seed 003: p95 < 500 ms on CPU.
            thresholds: levels((0.5, 0.4), (1.0, 0.8), (2.0, 1.6), 30.0),
            summary: "First audio is slow.",
            description: "First-audio p95 is {value} s for {scope} (SLO: 0.5 s on CPU).",
        },
        Spec {
            name: "SlowSynthesisEspeak",
            signal: "chunk_synthesis_p95_seconds",
            scope_filter: engine_scope(EngineKind::Espeak),
            direction: Up,
            // Seed 002's classical engine (pyttsx3): 2 / 5 / 10 s.
            thresholds: levels((2.0, 1.5), (5.0, 4.0), (10.0, 8.0), 30.0),
            summary: "eSpeak chunk synthesis is slow.",
            description: "Chunk synthesis p95 is {value} s for {scope}.",
        },
        Spec {
            name: "SlowSynthesisPiper",
            signal: "chunk_synthesis_p95_seconds",
            scope_filter: engine_scope(EngineKind::Piper),
            direction: Up,
            // Seed 002's neural engine (Coqui): 5 / 15 / 30 s.
            thresholds: levels((5.0, 4.0), (15.0, 12.0), (30.0, 24.0), 30.0),
            summary: "Piper chunk synthesis is slow.",
            description: "Chunk synthesis p95 is {value} s for {scope}.",
        },
        Spec {
            name: "HighRTF",
            signal: "rtf_p95_ratio",
            scope_filter: Scope::new(),
            direction: Up,
            thresholds: levels((0.5, 0.4), (0.8, 0.7), (1.0, 0.9), 60.0),
            summary: "Synthesis is close to slower than real time.",
            description: "Real-time factor p95 is {value} for {scope}; above 1 audio cannot keep up.",
        },
        Spec {
            name: "HighBargeInLatency",
            signal: "barge_in_p95_seconds",
            scope_filter: Scope::new(),
            direction: Up,
            // Seed 003: p95 < 50 ms.
            thresholds: levels((0.05, 0.04), (0.1, 0.08), (0.25, 0.2), 30.0),
            summary: "Barge-in is slow.",
            description: "Barge-in p95 is {value} s (SLO: 50 ms).",
        },
        Spec {
            name: "HighUnderrunRate",
            signal: "underruns_per_minute",
            scope_filter: Scope::new(),
            direction: Up,
            thresholds: levels((1.0, 0.5), (5.0, 3.0), (20.0, 10.0), 60.0),
            summary: "Listeners hear gaps: synthesis falls behind the 20 ms clock.",
            description: "{value} underruns per minute.",
        },
        Spec {
            name: "LowUtteranceSuccessRate",
            signal: "utterance_success_ratio",
            scope_filter: Scope::new(),
            direction: Down,
            // Seed 002: success rate 95 / 90 / 80 %.
            thresholds: levels((0.95, 0.97), (0.90, 0.92), (0.80, 0.82), 60.0),
            summary: "Utterances are failing.",
            description: "Utterance success ratio is {value} over the SLO window.",
        },
        Spec {
            name: "SessionQueueBackup",
            signal: "pool_queue_depth",
            scope_filter: Scope::new(),
            direction: Up,
            // Seed 002: queue size 10 / 25 / 50.
            thresholds: levels((10.0, 8.0), (25.0, 20.0), (50.0, 40.0), 30.0),
            summary: "Chunks are queueing for the engines.",
            description: "{value} chunks wait for an engine.",
        },
    ];
    specs.into_iter().map(ThresholdRule::from).collect()
}

/// The gateway's default anomaly rules: first audio, RTF and underruns against their own baselines.
pub fn default_anomaly_rules(params: AnomalyParams) -> Vec<AnomalyRule> {
    let rule = |name: &str, signal: &str, min_stddev: f64, summary: &str| AnomalyRule {
        name: name.into(),
        signal: signal.into(),
        scope_filter: Scope::new(),
        direction: Direction::HigherIsWorse,
        params: AnomalyParams {
            min_stddev: params.min_stddev.max(min_stddev),
            ..params
        },
        level: Level::Warning,
        summary: summary.into(),
        description: "{value} for {scope} departs from its baseline.".into(),
    };
    vec![
        rule(
            "FirstAudioAnomaly",
            "first_audio_p95_seconds",
            0.005,
            "First audio departs from its usual level.",
        ),
        rule(
            "RTFAnomaly",
            "rtf_p95_ratio",
            0.005,
            "The real-time factor departs from its usual level.",
        ),
        rule(
            "UnderrunAnomaly",
            "underruns_per_minute",
            1.0,
            "Underruns depart from their usual rate.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rules_are_valid() {
        let config = tts_alerts::EngineConfig {
            threshold_rules: default_rules(),
            anomaly_rules: default_anomaly_rules(AnomalyParams::default()),
            health_rules: Vec::new(),
            cooldown: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(3600),
            escalation: tts_alerts::Escalation::default(),
            history_capacity: 10,
            links: tts_alerts::Links::default(),
        };
        assert_eq!(tts_alerts::problems(&config), Vec::<String>::new());
    }
}
