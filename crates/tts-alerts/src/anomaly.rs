//! A rolling baseline per signal and scope: an exponentially weighted mean and variance, and a z-score.
//!
//! A point is anomalous when its z-score against the baseline is at or beyond the threshold on the bad
//! side. The first `min_points` points only teach the baseline. Anomalous points never teach it, so a
//! lasting shift keeps firing instead of becoming the new normal; a manual resolve resets the detector,
//! which then learns the new level from scratch.

use serde::Serialize;

use crate::rule::{AnomalyParams, Direction};

/// One detector's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Baseline {
    /// Points learnt.
    pub points: u64,
    pub mean: f64,
    pub variance: f64,
    /// The last point's z-score (0 while warming up).
    pub last_z: f64,
    /// Anomalous points in a row, up to the last one.
    pub anomalous_run: u32,
    /// Normal points in a row, up to the last one.
    pub normal_run: u32,
}

/// What one point did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Still learning.
    WarmingUp,
    Normal,
    Anomalous,
}

impl Baseline {
    /// Feeds `value`, returns whether it was anomalous. Anomalous points are not learnt.
    pub fn observe(&mut self, value: f64, params: &AnomalyParams, direction: Direction) -> Verdict {
        if !value.is_finite() {
            return Verdict::Normal;
        }
        if self.points < u64::from(params.min_points) {
            self.learn(value, params.alpha);
            self.last_z = 0.0;
            return Verdict::WarmingUp;
        }
        let stddev = self.variance.sqrt().max(params.min_stddev).max(f64::EPSILON);
        let z = (value - self.mean) / stddev;
        self.last_z = z;
        let bad = match direction {
            Direction::HigherIsWorse => z >= params.z_threshold,
            Direction::LowerIsWorse => -z >= params.z_threshold,
        };
        if bad {
            self.anomalous_run = self.anomalous_run.saturating_add(1);
            self.normal_run = 0;
            Verdict::Anomalous
        } else {
            self.learn(value, params.alpha);
            self.normal_run = self.normal_run.saturating_add(1);
            self.anomalous_run = 0;
            Verdict::Normal
        }
    }

    fn learn(&mut self, value: f64, alpha: f64) {
        if self.points == 0 {
            self.mean = value;
            self.variance = 0.0;
        } else {
            // West's incremental EWMA variance.
            let diff = value - self.mean;
            let increment = alpha * diff;
            self.mean += increment;
            self.variance = (1.0 - alpha) * (self.variance + diff * increment);
        }
        self.points += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> AnomalyParams {
        AnomalyParams {
            alpha: 0.05,
            z_threshold: 3.0,
            min_points: 50,
            consecutive: 3,
            min_stddev: 0.001,
        }
    }

    /// A deterministic wobble around 0.2 with amplitude 0.01.
    fn steady(i: u32) -> f64 {
        0.2 + 0.01 * (f64::from(i) * 0.7).sin()
    }

    #[test]
    fn warms_up_then_judges() {
        let mut baseline = Baseline::default();
        let p = params();
        for i in 0..50 {
            assert_eq!(
                baseline.observe(steady(i), &p, Direction::HigherIsWorse),
                Verdict::WarmingUp
            );
        }
        for i in 50..500 {
            assert_eq!(
                baseline.observe(steady(i), &p, Direction::HigherIsWorse),
                Verdict::Normal,
                "point {i}"
            );
        }
        assert!((baseline.mean - 0.2).abs() < 0.005, "{baseline:?}");
    }

    #[test]
    fn a_step_is_anomalous_and_not_learnt() {
        let mut baseline = Baseline::default();
        let p = params();
        for i in 0..200 {
            baseline.observe(steady(i), &p, Direction::HigherIsWorse);
        }
        let mean = baseline.mean;
        for run in 1..=100 {
            assert_eq!(
                baseline.observe(0.5, &p, Direction::HigherIsWorse),
                Verdict::Anomalous
            );
            assert_eq!(baseline.anomalous_run, run);
        }
        assert_eq!(baseline.mean, mean, "anomalous points must not move the baseline");
        // Downward departures do not count when higher is worse.
        assert_eq!(
            baseline.observe(0.0, &p, Direction::HigherIsWorse),
            Verdict::Normal
        );
        assert_eq!(baseline.anomalous_run, 0);
    }

    #[test]
    fn lower_is_worse_looks_down() {
        let mut baseline = Baseline::default();
        let p = params();
        for i in 0..100 {
            baseline.observe(steady(i), &p, Direction::LowerIsWorse);
        }
        assert_eq!(
            baseline.observe(0.0, &p, Direction::LowerIsWorse),
            Verdict::Anomalous
        );
        assert_eq!(
            baseline.observe(0.5, &p, Direction::LowerIsWorse),
            Verdict::Normal
        );
    }
}
