//! The SLO side of every observation: sliding windows (behind `/metrics/summary`, the compliance gauges and
//! the alert engine) and the good/bad event counter `tts_slo_events_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tts_core::voices::EngineKind;
use tts_telemetry::window::{WindowedHistogram, WindowedRatio};

use crate::slo::{Slo, SloConfig, SloEvents};

/// Sliding windows behind `/metrics/summary` and the compliance ratios.
#[derive(Debug)]
pub struct Windows {
    pub first_audio: WindowedHistogram,
    pub synthesis: WindowedHistogram,
    pub barge_in: WindowedHistogram,
    pub frame_interval: WindowedHistogram,
    pub real_time_factor: WindowedHistogram,
    pub first_audio_ok: WindowedRatio,
    pub barge_in_ok: WindowedRatio,
    pub jitter_ok: WindowedRatio,
    pub availability_ok: WindowedRatio,
    /// Per engine class (`EngineKind` order: espeak, piper), for the alert engine's per-engine signals.
    pub engines: [EngineWindows; 2],
    /// Underruns since start, all engines: the alert engine turns it into a rate.
    pub underruns: AtomicU64,
}

/// The windows the alert engine reads per engine class.
#[derive(Debug)]
pub struct EngineWindows {
    pub first_audio: WindowedHistogram,
    pub synthesis: WindowedHistogram,
    pub real_time_factor: WindowedHistogram,
}

impl Windows {
    /// The windows of `engine`'s class.
    pub fn engine(&self, engine: EngineKind) -> &EngineWindows {
        match engine {
            EngineKind::Espeak => &self.engines[0],
            EngineKind::Piper => &self.engines[1],
        }
    }

    fn new(window: Duration) -> Self {
        let slots = 30;
        Self {
            first_audio: WindowedHistogram::new(window, slots),
            synthesis: WindowedHistogram::new(window, slots),
            barge_in: WindowedHistogram::new(window, slots),
            frame_interval: WindowedHistogram::new(window, slots),
            real_time_factor: WindowedHistogram::new(window, slots),
            first_audio_ok: WindowedRatio::new(window, slots),
            barge_in_ok: WindowedRatio::new(window, slots),
            jitter_ok: WindowedRatio::new(window, slots),
            availability_ok: WindowedRatio::new(window, slots),
            engines: std::array::from_fn(|_| EngineWindows {
                first_audio: WindowedHistogram::new(window, slots),
                synthesis: WindowedHistogram::new(window, slots),
                real_time_factor: WindowedHistogram::new(window, slots),
            }),
            underruns: AtomicU64::new(0),
        }
    }
}

/// Judges each event against its SLO threshold and records it in the windows and in `tts_slo_events_total`.
#[derive(Debug)]
pub(super) struct SloSignals {
    pub(super) config: SloConfig,
    pub(super) windows: Arc<Windows>,
    pub(super) events: SloEvents,
}

impl SloSignals {
    /// Registers `tts_slo_events_total` and the compliance gauges.
    pub(super) fn register(registry: &mut Registry, config: SloConfig) -> Self {
        let windows = Arc::new(Windows::new(Duration::from_secs(config.window_seconds.max(1))));
        let events = SloEvents::register(registry);
        registry.register_collector(Box::new(SloCollector {
            windows: windows.clone(),
        }));
        Self {
            config,
            windows,
            events,
        }
    }

    pub(super) fn first_audio(&self, engine: EngineKind, seconds: f64) {
        self.windows.first_audio.observe(seconds);
        self.windows.engine(engine).first_audio.observe(seconds);
        let ok = seconds <= self.config.first_audio_seconds.get(engine);
        self.windows.first_audio_ok.record(ok);
        self.events.record(Slo::FirstAudio, engine, ok);
    }

    /// A chunk the engine synthesised: its times go in the windows; it is a good error-rate event.
    pub(super) fn chunk_synthesized(&self, engine: EngineKind, seconds: f64, rtf: Option<f64>) {
        self.windows.synthesis.observe(seconds);
        let engine_windows = self.windows.engine(engine);
        engine_windows.synthesis.observe(seconds);
        if let Some(rtf) = rtf {
            self.windows.real_time_factor.observe(rtf);
            engine_windows.real_time_factor.observe(rtf);
        }
        self.events.record(Slo::ErrorRate, engine, true);
    }

    pub(super) fn chunk_failed(&self, engine: EngineKind) {
        self.events.record(Slo::ErrorRate, engine, false);
    }

    /// An utterance ended: availability, and underruns when the transport paces audio.
    pub(super) fn utterance(&self, engine: EngineKind, available: bool, underruns: Option<u64>) {
        self.windows.availability_ok.record(available);
        self.events.record_unlabelled(Slo::Availability, available);
        if available && let Some(underruns) = underruns {
            self.events.record(Slo::Underruns, engine, underruns == 0);
        }
    }

    /// A session refused as overloaded: the server failing a request.
    pub(super) fn refused_overloaded(&self) {
        self.windows.availability_ok.record(false);
        self.events.record_unlabelled(Slo::Availability, false);
    }

    pub(super) fn barge_in(&self, seconds: f64) {
        self.windows.barge_in.observe(seconds);
        let ok = seconds <= self.config.barge_in_seconds;
        self.windows.barge_in_ok.record(ok);
        self.events.record_unlabelled(Slo::BargeIn, ok);
    }

    pub(super) fn frame_interval(&self, seconds: f64) {
        self.windows.frame_interval.observe(seconds);
        let ok = seconds <= self.config.frame_interval_limit_seconds();
        self.windows.jitter_ok.record(ok);
        self.events.record_unlabelled(Slo::FramePacing, ok);
    }

    pub(super) fn underrun(&self) {
        self.windows.underruns.fetch_add(1, Ordering::Relaxed);
    }
}

/// Compliance ratios over the SLO window, computed at scrape time; a ratio with no events in the window
/// is left out rather than reported as 1.
#[derive(Debug)]
struct SloCollector {
    windows: Arc<Windows>,
}

impl prometheus_client::collector::Collector for SloCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let w = &self.windows;
        let ratios = [
            (
                "tts_slo_first_audio_compliance_ratio",
                "Share of utterances within the first-audio SLO over the SLO window",
                &w.first_audio_ok,
            ),
            (
                "tts_slo_barge_in_compliance_ratio",
                "Share of STOP/PAUSE within the barge-in SLO over the SLO window",
                &w.barge_in_ok,
            ),
            (
                "tts_slo_jitter_compliance_ratio",
                "Share of frame intervals within the jitter SLO over the SLO window",
                &w.jitter_ok,
            ),
            (
                "tts_slo_availability_compliance_ratio",
                "Share of utterances not failed by the server over the SLO window",
                &w.availability_ok,
            ),
        ];
        for (name, help, ratio) in ratios {
            if let Some(value) = ratio.ratio() {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
            }
        }
        Ok(())
    }
}
