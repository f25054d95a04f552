//! `/metrics/summary`: the JSON an operator curls first, computed from the SLO windows and totals.

use std::sync::atomic::Ordering::Relaxed;

use tts_core::pool::PoolStats;
use tts_telemetry::window::WindowedHistogram;

use super::GatewayMetrics;
use crate::slo::Slo;

impl GatewayMetrics {
    /// The body of `/metrics/summary`: seed 000's keys plus first audio, jitter, real-time factor and SLO
    /// compliance. Percentiles are over the sliding window (`slo.window_seconds`), `null` without data.
    pub fn summary(&self, pool: &PoolStats) -> serde_json::Value {
        let w = &self.slo.windows;
        let ms = |h: &WindowedHistogram, q: f64| h.quantile(q).map(|v| round(v * 1000.0, 3));
        let violations: u64 = Slo::ALL.iter().map(|slo| self.slo.events.bad(*slo)).sum();
        let per_slo: serde_json::Map<String, serde_json::Value> = Slo::ALL
            .iter()
            .map(|slo| (slo.as_str().to_owned(), self.slo.events.bad(*slo).into()))
            .collect();
        let threads = pool.threads.max(1);
        let compliance = [
            (
                "first_audio",
                w.first_audio_ok.ratio(),
                self.slo.config.objectives.first_audio,
            ),
            (
                "barge_in",
                w.barge_in_ok.ratio(),
                self.slo.config.objectives.barge_in,
            ),
            (
                "frame_pacing",
                w.jitter_ok.ratio(),
                self.slo.config.objectives.frame_pacing,
            ),
            (
                "availability",
                w.availability_ok.ratio(),
                self.slo.config.objectives.availability,
            ),
        ];
        // Degraded while any SLO's share of good events over the window is below its objective: what an
        // operator curling the summary needs to know first, not a constant "ok".
        let breached: Vec<&str> = compliance
            .iter()
            .filter(|(_, ratio, objective)| ratio.is_some_and(|r| r < *objective))
            .map(|(name, _, _)| *name)
            .collect();
        let compliance: serde_json::Map<String, serde_json::Value> = compliance
            .iter()
            .map(|(name, ratio, _)| ((*name).to_owned(), (*ratio).into()))
            .collect();
        serde_json::json!({
            "status": if breached.is_empty() { "ok" } else { "degraded" },
            "slo_breached": breached,
            "window_seconds": self.slo.config.window_seconds,
            "synthesis_total": self.engine.synthesis_total.load(Relaxed),
            "synthesis_errors": self.engine.synthesis_errors.load(Relaxed),
            "synthesis_latency_p50_ms": ms(&w.synthesis, 0.5),
            "synthesis_latency_p95_ms": ms(&w.synthesis, 0.95),
            "synthesis_latency_p99_ms": ms(&w.synthesis, 0.99),
            "workers_active": pool.busy,
            "workers_idle": threads.saturating_sub(pool.busy),
            "worker_utilization_percent": round(pool.busy as f64 * 100.0 / threads as f64, 1),
            "queue_depth": pool.queued,
            "sessions_active": self.sessions.active.get(),
            "session_barge_in_p95_ms": ms(&w.barge_in, 0.95),
            "sla_violations": violations,
            "slo_violations": per_slo,
            "first_audio_p50_ms": ms(&w.first_audio, 0.5),
            "first_audio_p95_ms": ms(&w.first_audio, 0.95),
            "first_audio_p99_ms": ms(&w.first_audio, 0.99),
            "frame_interval_p95_ms": ms(&w.frame_interval, 0.95),
            "real_time_factor_p50": w.real_time_factor.quantile(0.5).map(|v| round(v, 5)),
            "slo": self.slo_lines(),
            "slo_compliance": compliance,
        })
    }

    /// The configured SLO thresholds, in the summary's milliseconds (the dashboard draws them as lines),
    /// and the objectives its error-budget figures are computed against.
    fn slo_lines(&self) -> serde_json::Value {
        let first_audio = &self.slo.config.first_audio_seconds;
        let frame_interval =
            self.slo.config.frame_interval_target_seconds + self.slo.config.frame_interval_tolerance_seconds;
        serde_json::json!({
            "first_audio_ms": {
                "espeak": round(first_audio.espeak * 1000.0, 3),
                "piper": round(first_audio.piper * 1000.0, 3),
            },
            "barge_in_ms": round(self.slo.config.barge_in_seconds * 1000.0, 3),
            "frame_interval_ms": round(frame_interval * 1000.0, 3),
            "objectives": self.slo.config.objectives,
        })
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::protocol::Command;
    use crate::slo::SloConfig;

    fn pool() -> PoolStats {
        PoolStats {
            threads: 2,
            busy: 0,
            queued: 0,
            queue_capacity: 16,
            discarded: 0,
            busy_seconds: 0.0,
            panics: 0,
        }
    }

    #[test]
    fn the_summary_status_is_degraded_exactly_while_an_slo_is_below_its_objective() {
        let metrics = GatewayMetrics::register(&mut Registry::default(), SloConfig::default());
        assert_eq!(
            metrics.summary(&pool())["status"],
            "ok",
            "no events, nothing breached"
        );
        for _ in 0..19 {
            metrics.barge_in(Command::Stop, Duration::from_millis(5), None);
        }
        let summary = metrics.summary(&pool());
        assert_eq!(
            summary["status"], "ok",
            "19 of 19 barge-ins within 50 ms: {summary}"
        );
        // 19 good and 2 bad is 90.5 %, below the 95 % objective.
        metrics.barge_in(Command::Stop, Duration::from_secs(1), None);
        metrics.barge_in(Command::Pause, Duration::from_secs(1), None);
        let summary = metrics.summary(&pool());
        assert_eq!(summary["status"], "degraded", "{summary}");
        assert_eq!(summary["slo_breached"], serde_json::json!(["barge_in"]));
        assert_eq!(summary["slo"]["objectives"]["barge_in"], 0.95);
    }
}
