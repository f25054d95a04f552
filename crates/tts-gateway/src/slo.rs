//! Service level objectives: the one place their thresholds and objectives live, and the counter the
//! gateway keeps of each SLI.
//!
//! Each SLO has an event (an utterance, a barge-in, a frame interval…) that is either good or bad against
//! a threshold from `[slo]`, and an objective: the share of events that must be good. The gateway counts
//! events in `tts_slo_events_total{slo, result}` (plus `engine` where the threshold depends on it), so
//! burn-rate rules divide two counters and never depend on a histogram bucket edge. `ttsd rules` renders
//! the Prometheus rules from the same `SloConfig`.

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tts_core::voices::EngineKind;

/// The SLOs ttsd counts, by their `slo` label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Slo {
    /// Utterances the server did not fail and sessions it did not refuse for overload.
    Availability,
    /// Synthesis chunks that did not fail in the engine (seed 001's error ratio).
    ErrorRate,
    /// Utterances whose first audio was within the engine's threshold.
    FirstAudio,
    /// STOP or PAUSE that silenced the utterance within the barge-in threshold.
    BargeIn,
    /// Mid-utterance frame intervals no later than the 20 ms clock plus the tolerance.
    FramePacing,
    /// Utterances that played without an underrun.
    Underruns,
}

impl Slo {
    pub const ALL: [Slo; 6] = [
        Slo::Availability,
        Slo::ErrorRate,
        Slo::FirstAudio,
        Slo::BargeIn,
        Slo::FramePacing,
        Slo::Underruns,
    ];

    /// The `slo` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Slo::Availability => "availability",
            Slo::ErrorRate => "error_rate",
            Slo::FirstAudio => "first_audio",
            Slo::BargeIn => "barge_in",
            Slo::FramePacing => "frame_pacing",
            Slo::Underruns => "underruns",
        }
    }

    /// Whether its events carry an `engine` label (the threshold or the cause depends on the engine).
    pub fn per_engine(self) -> bool {
        matches!(self, Slo::ErrorRate | Slo::FirstAudio | Slo::Underruns)
    }

    /// One sentence: what a bad event is.
    pub fn bad_event(self) -> &'static str {
        match self {
            Slo::Availability => "an utterance the server failed or a session refused as overloaded",
            Slo::ErrorRate => "a synthesis chunk that failed in the engine",
            Slo::FirstAudio => "an utterance whose first audio took longer than its engine's threshold",
            Slo::BargeIn => "a STOP or PAUSE that took longer than the barge-in threshold to silence audio",
            Slo::FramePacing => "a frame sent later than the 20 ms clock plus the tolerance",
            Slo::Underruns => "an utterance during which the client's cushion ran dry",
        }
    }
}

/// A first-audio threshold per engine class. Both engines ttsd ships run on the CPU (seed 003: p95 under
/// 0.5 s on a CPU, 0.3 s on a GPU).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSeconds {
    pub espeak: f64,
    pub piper: f64,
}

impl Default for EngineSeconds {
    fn default() -> Self {
        Self {
            espeak: DEFAULT_CPU_FIRST_AUDIO_SECONDS,
            piper: DEFAULT_CPU_FIRST_AUDIO_SECONDS,
        }
    }
}

impl EngineSeconds {
    pub fn get(&self, engine: EngineKind) -> f64 {
        match engine {
            EngineKind::Espeak => self.espeak,
            EngineKind::Piper => self.piper,
        }
    }
}

/// The share of events that must be good, per SLO (0 < objective < 1).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Objectives {
    pub availability: f64,
    pub error_rate: f64,
    pub first_audio: f64,
    pub barge_in: f64,
    pub frame_pacing: f64,
    pub underruns: f64,
}

impl Default for Objectives {
    fn default() -> Self {
        Self {
            availability: 0.995,
            error_rate: 0.995,
            first_audio: 0.95,
            barge_in: 0.95,
            frame_pacing: 0.95,
            underruns: 0.99,
        }
    }
}

impl Objectives {
    pub fn get(&self, slo: Slo) -> f64 {
        match slo {
            Slo::Availability => self.availability,
            Slo::ErrorRate => self.error_rate,
            Slo::FirstAudio => self.first_audio,
            Slo::BargeIn => self.barge_in,
            Slo::FramePacing => self.frame_pacing,
            Slo::Underruns => self.underruns,
        }
    }
}

pub const DEFAULT_CPU_FIRST_AUDIO_SECONDS: f64 = 0.5;
pub const DEFAULT_BARGE_IN_SECONDS: f64 = 0.05;
pub const DEFAULT_FRAME_INTERVAL_TARGET_SECONDS: f64 = 0.02;
pub const DEFAULT_FRAME_INTERVAL_TOLERANCE_SECONDS: f64 = 0.01;
pub const DEFAULT_WINDOW_SECONDS: u64 = 300;
pub const DEFAULT_ALERT_MIN_EVENTS: u64 = 20;

/// `[slo]`: thresholds, objectives and the burn-rate alerts' traffic guard.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloConfig {
    /// Barge-in (STOP or PAUSE read → audio stopped) above this is a bad barge-in event.
    pub barge_in_seconds: f64,
    /// The pacing clock: one frame every this many seconds.
    pub frame_interval_target_seconds: f64,
    /// A mid-utterance frame interval longer than target + tolerance is a bad pacing event.
    pub frame_interval_tolerance_seconds: f64,
    /// Window of the compliance ratios and of `/metrics/summary` percentiles.
    pub window_seconds: u64,
    /// Alerts on a ratio or a quantile (burn rates included) stay quiet while their window holds fewer
    /// events than this: one slow utterance in an idle hour is not a page.
    pub alert_min_events: u64,
    /// First audio above its engine's threshold is a bad first-audio event.
    pub first_audio_seconds: EngineSeconds,
    pub objectives: Objectives,
}

impl Default for SloConfig {
    fn default() -> Self {
        Self {
            barge_in_seconds: DEFAULT_BARGE_IN_SECONDS,
            frame_interval_target_seconds: DEFAULT_FRAME_INTERVAL_TARGET_SECONDS,
            frame_interval_tolerance_seconds: DEFAULT_FRAME_INTERVAL_TOLERANCE_SECONDS,
            window_seconds: DEFAULT_WINDOW_SECONDS,
            alert_min_events: DEFAULT_ALERT_MIN_EVENTS,
            first_audio_seconds: EngineSeconds::default(),
            objectives: Objectives::default(),
        }
    }
}

impl SloConfig {
    /// The longest frame interval that still counts as on time.
    pub fn frame_interval_limit_seconds(&self) -> f64 {
        self.frame_interval_target_seconds + self.frame_interval_tolerance_seconds
    }

    /// Every problem, each naming its field.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut positive = |name: &str, value: f64| {
            if !(value.is_finite() && value > 0.0) {
                problems.push(format!(
                    "slo.{name} must be a positive number of seconds, not {value}"
                ));
            }
        };
        positive("barge_in_seconds", self.barge_in_seconds);
        positive(
            "frame_interval_target_seconds",
            self.frame_interval_target_seconds,
        );
        positive(
            "frame_interval_tolerance_seconds",
            self.frame_interval_tolerance_seconds,
        );
        positive("first_audio_seconds.espeak", self.first_audio_seconds.espeak);
        positive("first_audio_seconds.piper", self.first_audio_seconds.piper);
        if self.window_seconds == 0 {
            problems.push("slo.window_seconds must be greater than 0".into());
        }
        for slo in Slo::ALL {
            let objective = self.objectives.get(slo);
            if !(objective > 0.0 && objective < 1.0) {
                problems.push(format!(
                    "slo.objectives.{} must be a ratio between 0 and 1 (exclusive), not {objective}",
                    slo.as_str()
                ));
            }
        }
        problems
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum SloResult {
    Good,
    Bad,
}

/// `{slo, engine?, result}`: `engine` only on the SLOs whose events depend on it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SloLabels {
    slo: Slo,
    engine: Option<EngineKind>,
    result: SloResult,
}

impl EncodeLabelSet for SloLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("slo", self.slo.as_str()).encode(encoder.encode_label())?;
        if let Some(engine) = self.engine {
            ("engine", engine.as_str()).encode(encoder.encode_label())?;
        }
        let result = match self.result {
            SloResult::Good => "good",
            SloResult::Bad => "bad",
        };
        ("result", result).encode(encoder.encode_label())
    }
}

/// `tts_slo_events_total`, every series created at zero.
#[derive(Debug, Clone)]
pub(crate) struct SloEvents {
    events: Family<SloLabels, Counter>,
}

impl SloEvents {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let events = Family::<SloLabels, Counter>::default();
        registry.register(
            "tts_slo_events",
            "SLI events judged against the [slo] thresholds, by SLO and result (good or bad)",
            events.clone(),
        );
        let this = Self { events };
        for slo in Slo::ALL {
            for result in [SloResult::Good, SloResult::Bad] {
                if slo.per_engine() {
                    for engine in [EngineKind::Espeak, EngineKind::Piper] {
                        let _ = this.events.get_or_create(&SloLabels {
                            slo,
                            engine: Some(engine),
                            result,
                        });
                    }
                } else {
                    let _ = this.events.get_or_create(&SloLabels {
                        slo,
                        engine: None,
                        result,
                    });
                }
            }
        }
        this
    }

    /// Counts one event; `engine` is ignored for SLOs that are not per engine.
    pub(crate) fn record(&self, slo: Slo, engine: EngineKind, good: bool) {
        let labels = SloLabels {
            slo,
            engine: slo.per_engine().then_some(engine),
            result: if good { SloResult::Good } else { SloResult::Bad },
        };
        self.events.get_or_create(&labels).inc();
    }

    /// Like `record`, for SLOs whose events have no engine.
    pub(crate) fn record_unlabelled(&self, slo: Slo, good: bool) {
        self.record(slo, EngineKind::Espeak, good);
    }

    /// Bad events of `slo` since start, all engines.
    pub(crate) fn bad(&self, slo: Slo) -> u64 {
        let engines: &[Option<EngineKind>] = if slo.per_engine() {
            &[Some(EngineKind::Espeak), Some(EngineKind::Piper)]
        } else {
            &[None]
        };
        engines
            .iter()
            .map(|engine| {
                self.events
                    .get_or_create(&SloLabels {
                        slo,
                        engine: *engine,
                        result: SloResult::Bad,
                    })
                    .get()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_at_zero_before_any_event() {
        let mut registry = Registry::default();
        let events = SloEvents::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("tts_slo_events_total{"))
            .count();
        // Three per-engine SLOs × 2 engines × 2 results + three others × 2 results.
        assert_eq!(series, 18, "{text}");
        assert!(text.contains(r#"tts_slo_events_total{slo="first_audio",engine="piper",result="bad"} 0"#));
        assert!(text.contains(r#"tts_slo_events_total{slo="barge_in",result="good"} 0"#));
        events.record(Slo::FirstAudio, EngineKind::Piper, false);
        events.record_unlabelled(Slo::BargeIn, false);
        assert_eq!(events.bad(Slo::FirstAudio), 1);
        assert_eq!(events.bad(Slo::BargeIn), 1);
        assert_eq!(events.bad(Slo::Availability), 0);
    }

    #[test]
    fn validation_lists_every_problem() {
        let mut config = SloConfig {
            barge_in_seconds: 0.0,
            ..SloConfig::default()
        };
        config.first_audio_seconds.piper = -1.0;
        config.objectives.availability = 1.0;
        config.objectives.underruns = f64::NAN;
        let problems = config.validate();
        assert_eq!(problems.len(), 4, "{problems:?}");
        let all = problems.join("\n");
        for name in [
            "barge_in_seconds",
            "first_audio_seconds.piper",
            "objectives.availability",
            "objectives.underruns",
        ] {
            assert!(all.contains(name), "{name} missing from {all}");
        }
    }
}
