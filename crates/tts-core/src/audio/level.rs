//! Signal level in dBFS, for logs, tests and silence checks.
//!
//! It does not weight frequencies (no A-weighting, no LUFS): a plain RMS is enough to tell speech
//! from silence and to catch gain mistakes.

/// What [`rms_dbfs`] reports for silence, standing in for minus infinity so callers can compare and
/// print it without special cases.
const SILENCE_DBFS: f64 = -120.0;

/// Root-mean-square level of `samples` in dBFS, where an RMS of 32768 is 0 dB; silence, an empty
/// slice and anything quieter than -120 dB all give -120.0.
pub fn rms_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return SILENCE_DBFS;
    }
    // f64 sums are exact up to 2^53 / 2^30 = 8M full-scale samples and within 1e-9 dB well beyond.
    let sum_sq: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum_sq / samples.len() as f64).sqrt() / 32768.0;
    if rms == 0.0 {
        return SILENCE_DBFS;
    }
    (20.0 * rms.log10()).max(SILENCE_DBFS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_scale_square_is_zero_db() {
        let square: Vec<i16> = (0..4800)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        assert!(rms_dbfs(&square).abs() < 0.001, "{}", rms_dbfs(&square));
    }

    #[test]
    fn half_scale_sine_is_minus_nine_db() {
        let sine: Vec<i16> = (0..48_000)
            .map(|i| (16384.0 * (2.0 * std::f64::consts::PI * 1000.0 * f64::from(i) / 48_000.0).sin()) as i16)
            .collect();
        // -6.02 dB for half amplitude, -3.01 dB for a sine's crest factor.
        assert!((rms_dbfs(&sine) + 9.03).abs() < 0.01, "{}", rms_dbfs(&sine));
    }

    #[test]
    fn silence_is_floor() {
        assert_eq!(rms_dbfs(&[]), -120.0);
        assert_eq!(rms_dbfs(&[0; 960]), -120.0);
        // One LSB in a long buffer is below the floor and must not go under it.
        let mut nearly = vec![0i16; 10_000_000];
        nearly[0] = 1;
        assert_eq!(rms_dbfs(&nearly), -120.0);
    }
}
