//! Sliding-window statistics for `/metrics/summary`: quantiles and good/total ratios over the last few
//! minutes, in fixed memory.
//!
//! Prometheus histograms answer "what was p95 over the last 5 minutes" only through a query engine. A
//! human curling the admin port wants the answer directly, so these types keep a ring of time slots
//! (`window/ring.rs`) and merge the live ones on read. They are for summaries, not for export: export the
//! cumulative `prometheus_client` metrics and let Prometheus compute rates.

mod ring;

use std::time::{Duration, Instant};

use ring::{Ring, SlotData};

/// Smallest value with its own bucket; anything smaller (zero; negatives count as zero) lands in the first
/// bucket.
const LOW: f64 = 1e-6;
/// Largest value with its own bucket; anything larger (and +inf) lands in the last bucket.
const HIGH: f64 = 1e4;
/// Ratio between consecutive bucket bounds. A bucket's representative is its geometric midpoint, so the
/// relative error of a reported quantile is at most `sqrt(GAMMA) - 1`, just under 1%.
const GAMMA: f64 = 1.02;

fn bucket_count() -> usize {
    ((HIGH / LOW).ln() / GAMMA.ln()).ceil() as usize
}

fn bucket_index(value: f64, buckets: usize) -> usize {
    if value <= LOW {
        return 0;
    }
    let index = ((value / LOW).ln() / GAMMA.ln()).floor();
    // `as` saturates for huge and infinite values; `min` then clamps into the last bucket.
    (index as usize).min(buckets - 1)
}

fn bucket_value(index: usize) -> f64 {
    LOW * GAMMA.powf(index as f64 + 0.5)
}

/// Thread-safe sliding-window histogram with fixed memory, for quantiles over the last `window`.
///
/// The window is `slots` time slots, each a log-bucketed histogram with 2% wide buckets over
/// `[1e-6, 1e4]` (values outside are clamped into the end buckets, negatives count as 0, NaN is ignored), so a quantile is
/// within about 1% of the exact nearest-rank value, and exact at the window's minimum and maximum. Memory
/// is `slots * 1163 * 4` bytes whatever the number of samples. Slots older than the window are ignored on
/// read and recycled on write; the covered span is between `window - window/slots` and `window`.
#[derive(Debug)]
pub struct WindowedHistogram {
    ring: Ring<HistogramSlot>,
    buckets: usize,
}

#[derive(Debug)]
struct HistogramSlot {
    counts: Box<[u32]>,
    total: u64,
    min: f64,
    max: f64,
}

impl SlotData for HistogramSlot {
    fn reset(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
    }
}

impl WindowedHistogram {
    /// A histogram over the last `window`, split into `slots` slots (e.g. 5 minutes and 30 slots).
    pub fn new(window: Duration, slots: usize) -> Self {
        let buckets = bucket_count();
        let ring = Ring::new(window, slots, || HistogramSlot {
            counts: vec![0; buckets].into_boxed_slice(),
            total: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        });
        Self { ring, buckets }
    }

    /// Records `value` now. One uncontended lock and one logarithm.
    pub fn observe(&self, value: f64) {
        self.observe_at(value, Instant::now());
    }

    /// Records `value` as if observed at `now`.
    pub fn observe_at(&self, value: f64, now: Instant) {
        if value.is_nan() {
            return;
        }
        // Negative durations and sizes are nonsense; clamping keeps min/max (and so every answer) finite.
        let value = value.clamp(0.0, HIGH);
        let index = bucket_index(value, self.buckets);
        self.ring.write(now, |slot| {
            slot.counts[index] = slot.counts[index].saturating_add(1);
            slot.total += 1;
            slot.min = slot.min.min(value);
            slot.max = slot.max.max(value);
        });
    }

    /// The `q` quantile (0..=1, clamped) of the samples in the window; `None` when the window is empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantile_at(q, Instant::now())
    }

    /// [`Self::quantile`] for the window ending at `now`.
    pub fn quantile_at(&self, q: f64, now: Instant) -> Option<f64> {
        self.quantiles_at(&[q], now).map(|values| values[0])
    }

    /// Several quantiles from one pass over the window (cheaper than calling [`Self::quantile`] per value);
    /// `None` when the window is empty. The result has one value per entry of `qs`, in the same order.
    pub fn quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        self.quantiles_at(qs, Instant::now())
    }

    /// [`Self::quantiles`] for the window ending at `now`.
    pub fn quantiles_at(&self, qs: &[f64], now: Instant) -> Option<Vec<f64>> {
        let mut merged = vec![0u64; self.buckets];
        let (mut total, mut min, mut max) = (0u64, f64::INFINITY, f64::NEG_INFINITY);
        self.ring.read(now, |slot| {
            for (sum, count) in merged.iter_mut().zip(slot.counts.iter()) {
                *sum += u64::from(*count);
            }
            total += slot.total;
            min = min.min(slot.min);
            max = max.max(slot.max);
        });
        if total == 0 {
            return None;
        }
        let value_at = |q: f64| {
            let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
            // Nearest rank: the smallest value with at least q*n samples at or below it.
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            if rank == total {
                return max;
            }
            if rank == 1 {
                return min;
            }
            let mut seen = 0;
            let index = merged
                .iter()
                .position(|count| {
                    seen += count;
                    seen >= rank
                })
                .unwrap_or(self.buckets - 1);
            bucket_value(index).clamp(min, max)
        };
        Some(qs.iter().map(|q| value_at(*q)).collect())
    }

    /// Number of samples inside the window ending now.
    pub fn count(&self) -> u64 {
        self.count_at(Instant::now())
    }

    /// Number of samples inside the window ending at `now`.
    pub fn count_at(&self, now: Instant) -> u64 {
        let mut total = 0;
        self.ring.read(now, |slot| total += slot.total);
        total
    }
}

/// Sliding-window count of good and total events, for SLO compliance ratios over the last `window`.
#[derive(Debug)]
pub struct WindowedRatio {
    ring: Ring<RatioSlot>,
}

#[derive(Debug, Default)]
struct RatioSlot {
    good: u64,
    total: u64,
}

impl SlotData for RatioSlot {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

impl WindowedRatio {
    /// A ratio over the last `window`, split into `slots` slots.
    pub fn new(window: Duration, slots: usize) -> Self {
        Self {
            ring: Ring::new(window, slots, RatioSlot::default),
        }
    }

    /// Records one event now.
    pub fn record(&self, good: bool) {
        self.record_at(good, Instant::now());
    }

    /// Records one event as if it happened at `now`.
    pub fn record_at(&self, good: bool, now: Instant) {
        self.ring.write(now, |slot| {
            slot.good += u64::from(good);
            slot.total += 1;
        });
    }

    /// `good / total` in the window, `None` when there were no events.
    pub fn ratio(&self) -> Option<f64> {
        self.ratio_at(Instant::now())
    }

    /// [`Self::ratio`] for the window ending at `now`.
    pub fn ratio_at(&self, now: Instant) -> Option<f64> {
        let (good, total) = self.totals_at(now);
        (total > 0).then(|| good as f64 / total as f64)
    }

    /// `(good, total)` in the window ending now.
    pub fn totals(&self) -> (u64, u64) {
        self.totals_at(Instant::now())
    }

    /// `(good, total)` in the window ending at `now`.
    pub fn totals_at(&self, now: Instant) -> (u64, u64) {
        let (mut good, mut total) = (0, 0);
        self.ring.read(now, |slot| {
            good += slot.good;
            total += slot.total;
        });
        (good, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic test data without a rand dependency.
    struct Rng(u64);

    impl Rng {
        fn next_f64(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let u1 = self.next_f64().max(f64::MIN_POSITIVE);
            let u2 = self.next_f64();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }

    fn exact(sorted: &[f64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn assert_quantiles_close(samples: Vec<f64>) {
        let histogram = WindowedHistogram::new(Duration::from_secs(300), 30);
        let now = Instant::now();
        for value in &samples {
            histogram.observe_at(*value, now);
        }
        let mut sorted = samples;
        sorted.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let got = histogram.quantile_at(q, now).unwrap();
            let want = exact(&sorted, q);
            let error = (got - want).abs() / want;
            assert!(
                error <= 0.02,
                "q={q}: got {got}, exact {want}, relative error {error}"
            );
        }
        assert_eq!(histogram.count_at(now), sorted.len() as u64);
    }

    #[test]
    fn uniform_quantiles_are_within_two_percent() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        assert_quantiles_close((0..50_000).map(|_| 0.001 + rng.next_f64() * 2.0).collect());
    }

    #[test]
    fn log_normal_quantiles_are_within_two_percent() {
        let mut rng = Rng(42);
        // Latency-like: median 150 ms, long right tail.
        assert_quantiles_close(
            (0..50_000)
                .map(|_| (0.15f64.ln() + 0.8 * rng.normal()).exp())
                .collect(),
        );
    }

    #[test]
    fn empty_window_has_no_quantile() {
        let histogram = WindowedHistogram::new(Duration::from_secs(60), 6);
        assert_eq!(histogram.quantile(0.5), None);
        assert_eq!(histogram.quantiles(&[0.5, 0.99]), None);
        assert_eq!(histogram.count(), 0);
    }

    #[test]
    fn extreme_values_are_clamped_and_never_leak_inf_or_nan() {
        let histogram = WindowedHistogram::new(Duration::from_secs(60), 6);
        let now = Instant::now();
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -5.0, 1e9] {
            histogram.observe_at(value, now);
        }
        assert_eq!(histogram.count_at(now), 5, "NaN is ignored");
        for q in [0.0, 0.5, 1.0, f64::NAN, -1.0, 2.0] {
            assert!(histogram.quantile_at(q, now).unwrap().is_finite());
        }
        assert_eq!(histogram.quantile_at(1.0, now), Some(HIGH));
        assert_eq!(histogram.quantile_at(0.0, now), Some(0.0));
    }

    #[test]
    fn all_zero_samples_report_zero() {
        let histogram = WindowedHistogram::new(Duration::from_secs(60), 6);
        let now = Instant::now();
        histogram.observe_at(0.0, now);
        histogram.observe_at(0.0, now);
        assert_eq!(histogram.quantile_at(0.5, now), Some(0.0));
    }

    #[test]
    fn old_slots_expire() {
        let histogram = WindowedHistogram::new(Duration::from_secs(60), 6);
        let start = Instant::now();
        for _ in 0..100 {
            histogram.observe_at(5.0, start);
        }
        histogram.observe_at(0.5, start + Duration::from_secs(30));
        assert_eq!(histogram.count_at(start + Duration::from_secs(30)), 101);
        let median = histogram
            .quantile_at(0.5, start + Duration::from_secs(30))
            .unwrap();
        assert!((median - 5.0).abs() <= 0.05, "{median}");

        // 70 s later the first slot is out of the window; the 30 s sample is still in.
        let later = start + Duration::from_secs(70);
        assert_eq!(histogram.count_at(later), 1);
        assert_eq!(histogram.quantile_at(0.5, later), Some(0.5));
        assert_eq!(histogram.quantile_at(0.5, start + Duration::from_secs(200)), None);

        // Writing into a recycled slot starts it from zero.
        histogram.observe_at(2.0, start + Duration::from_secs(300));
        assert_eq!(histogram.count_at(start + Duration::from_secs(300)), 1);
    }

    #[test]
    fn late_samples_for_a_recycled_slot_are_dropped() {
        let histogram = WindowedHistogram::new(Duration::from_secs(60), 6);
        let start = Instant::now();
        histogram.observe_at(1.0, start + Duration::from_secs(60));
        histogram.observe_at(9.0, start);
        assert_eq!(histogram.count_at(start + Duration::from_secs(60)), 1);
    }

    #[test]
    fn memory_is_fixed_whatever_the_number_of_samples() {
        let histogram = WindowedHistogram::new(Duration::from_secs(10), 5);
        let storage = |histogram: &WindowedHistogram| {
            let mut lengths = Vec::new();
            histogram
                .ring
                .for_each_slot(|slot| lengths.push(slot.counts.len()));
            lengths
        };
        let before = storage(&histogram);
        assert_eq!(before, vec![bucket_count(); 5]);
        assert_eq!(histogram.ring.len(), 5);
        let start = Instant::now();
        for i in 0..200_000u32 {
            let at = start + Duration::from_millis(u64::from(i) / 4);
            histogram.observe_at(f64::from(i % 1000) * 1e-3, at);
        }
        assert_eq!(storage(&histogram), before);
    }

    #[test]
    fn ratio_counts_good_and_total_in_the_window() {
        let ratio = WindowedRatio::new(Duration::from_secs(60), 6);
        let start = Instant::now();
        assert_eq!(ratio.ratio_at(start), None);
        for i in 0..10 {
            ratio.record_at(i < 9, start);
        }
        assert_eq!(ratio.totals_at(start), (9, 10));
        assert_eq!(ratio.ratio_at(start), Some(0.9));
        ratio.record_at(false, start + Duration::from_secs(45));
        assert_eq!(ratio.totals_at(start + Duration::from_secs(45)), (9, 11));
        assert_eq!(ratio.totals_at(start + Duration::from_secs(75)), (0, 1));
        assert_eq!(ratio.ratio_at(start + Duration::from_secs(75)), Some(0.0));
        assert_eq!(ratio.ratio_at(start + Duration::from_secs(500)), None);
        let fresh = WindowedRatio::new(Duration::from_secs(60), 6);
        fresh.record(true);
        fresh.record(false);
        assert_eq!(fresh.totals(), (1, 2));
        assert_eq!(fresh.ratio(), Some(0.5));
    }
}
