//! A client for ttsd's WebSocket streaming protocol that keeps its own clocks: every message is stamped
//! with the instant it arrived, so latencies measured with it are what a real client sees. `ttsd bench`
//! measures with it and the end-to-end tests drive the server with it; it knows nothing of the server's
//! internals.

mod client;

pub use client::{ClientError, Event, Received, StreamClient};

/// Percentile by linear interpolation between closest ranks (numpy's default), `None` without data.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    let weight = rank - low as f64;
    Some(sorted[low] * (1.0 - weight) + sorted[high] * weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        let values = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&values, 50.0), Some(2.5));
        assert_eq!(percentile(&values, 100.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
