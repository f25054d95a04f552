//! Test helpers for ttsd: runners for the real `ttsd` binary and a real `redis-server`, a `/metrics`
//! parser, a loopback HTTP client, an in-process OTLP receiver and audio checks, plus the protocol client
//! of `tts-client` re-exported. Only tests use it: nothing here ships in the `ttsd` binary.

mod alertmanager;
mod http;
mod otlp;
mod prom;
mod promtool;
mod redis;
mod server;

pub use alertmanager::Alertmanager;
pub use http::{Response, http_get, http_request};
pub use otlp::{OtlpSink, ReceivedSpan};
pub use prom::{Sample, Scrape};
pub use promtool::promtool_check_metrics;
pub use redis::RedisServer;
pub use server::ServerProcess;
pub use tts_client::{ClientError, Event, Received, StreamClient, percentile};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_of_silence_and_full_scale() {
        assert_eq!(rms_dbfs(&[0; 100]), -120.0);
        let square: Vec<i16> = (0..100)
            .map(|i| if i % 2 == 0 { 32767 } else { -32767 })
            .collect();
        assert!(rms_dbfs(&square).abs() < 0.01);
    }
}
