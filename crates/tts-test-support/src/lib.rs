//! Test and benchmark helpers for ttsd: a WebSocket client that stamps every message with its own
//! arrival clock, runners for the real `ttsd` binary and a real `redis-server`, and audio checks. Used by
//! end-to-end tests and by `ttsd bench`; it never touches server internals, so what it measures is what a
//! real client sees.

mod alertmanager;
mod client;
mod http;
mod otlp;
mod prom;
mod promtool;
mod redis;
mod server;

pub use alertmanager::Alertmanager;
pub use client::{ClientError, Event, Received, StreamClient};
pub use http::{Response, http_get, http_request};
pub use otlp::{OtlpSink, ReceivedSpan};
pub use prom::{Sample, Scrape};
pub use promtool::promtool_check_metrics;
pub use redis::RedisServer;
pub use server::ServerProcess;

/// Root-mean-square level of 16-bit samples in dBFS (-120 for silence).
pub fn rms_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return -120.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / samples.len() as f64).sqrt();
    if rms < 1e-9 {
        -120.0
    } else {
        (20.0 * (rms / 32768.0).log10()).max(-120.0)
    }
}

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

    #[test]
    fn rms_of_silence_and_full_scale() {
        assert_eq!(rms_dbfs(&[0; 100]), -120.0);
        let square: Vec<i16> = (0..100)
            .map(|i| if i % 2 == 0 { 32767 } else { -32767 })
            .collect();
        assert!(rms_dbfs(&square).abs() < 0.01);
    }
}
