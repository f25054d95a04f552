//! Tests for the resampler: exact lengths, split invariance, frequency, level and timing against
//! ideal sines, aliasing near Nyquist, and reuse.

use std::f64::consts::PI;

use proptest::prelude::*;

use super::*;

const COMMON_RATES: [u32; 5] = [16_000, 22_050, 24_000, 44_100, 48_000];

fn resample(rate: u32, input: &[i16], splits: &[usize]) -> Vec<i16> {
    let mut r = StreamResampler::new(rate).unwrap();
    let mut out = Vec::new();
    let mut rest = input;
    for &at in splits {
        let (head, tail) = rest.split_at(at.min(rest.len()));
        r.process(head, &mut out).unwrap();
        rest = tail;
    }
    r.process(rest, &mut out).unwrap();
    r.finish(&mut out).unwrap();
    out
}

fn expected_len(rate: u32, n: usize) -> usize {
    (n as f64 * 48_000.0 / f64::from(rate)).round() as usize
}

/// `n` samples of `amp * sin(2π f t)` sampled at `rate`.
fn sine(rate: u32, freq: f64, amp: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| (amp * 32768.0 * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16)
        .collect()
}

/// Least-squares fit of a tone at `freq`: (amplitude in full-scale units, residual energy over tone
/// energy in dB). The window is long enough that sin and cos are near-orthogonal.
fn fit_tone(x: &[i16], rate: u32, freq: f64) -> (f64, f64) {
    let w = 2.0 * PI * freq / f64::from(rate);
    let (mut s, mut c) = (0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        s += f64::from(v) * (w * i as f64).sin();
        c += f64::from(v) * (w * i as f64).cos();
    }
    let (a, b) = (2.0 * s / x.len() as f64, 2.0 * c / x.len() as f64);
    let residual: f64 = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let fit = a * (w * i as f64).sin() + b * (w * i as f64).cos();
            (f64::from(v) - fit).powi(2)
        })
        .sum();
    let tone = (a * a + b * b) / 2.0 * x.len() as f64;
    ((a * a + b * b).sqrt() / 32768.0, 10.0 * (residual / tone).log10())
}

/// Power of `x` at `freq` (Goertzel).
fn goertzel(x: &[i16], rate: u32, freq: f64) -> f64 {
    let coeff = 2.0 * (2.0 * PI * freq / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

#[test]
fn rejects_unsupported_rates() {
    for rate in [0, 7_999, 192_001, u32::MAX] {
        assert!(matches!(StreamResampler::new(rate), Err(AudioError::UnsupportedRate(r)) if r == rate));
    }
    for rate in [8_000, 192_000] {
        assert_eq!(StreamResampler::new(rate).unwrap().input_rate(), rate);
    }
}

#[test]
fn is_send_for_engine_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<StreamResampler>();
}

#[test]
fn passthrough_at_48k() {
    let input: Vec<i16> = (0..5000).map(|i| (i * 13 % 65536 - 32768) as i16).collect();
    let mut r = StreamResampler::new(48_000).unwrap();
    let mut out = Vec::new();
    r.process(&input, &mut out).unwrap();
    assert_eq!(out, input, "passthrough must not delay or filter");
    r.finish(&mut out).unwrap();
    assert_eq!(out, input);
}

#[test]
fn alignment_for_common_rates() {
    // Values follow from rubato's timing; see `Alignment::find`.
    let find = |rate: u32| {
        let (num, den) = reduced_ratio(rate, OUTPUT_SAMPLE_RATE);
        Alignment::find(48_000.0 / f64::from(rate), num as usize, 2 * den as usize + 2)
    };
    assert_eq!(reduced_ratio(22_050, OUTPUT_SAMPLE_RATE), (320, 147));
    assert_eq!(
        find(22_050),
        Alignment {
            lead_zeros: 16,
            skip: 36
        }
    );
    assert_eq!(
        find(16_000),
        Alignment {
            lead_zeros: 0,
            skip: 1
        }
    );
    assert_eq!(
        find(24_000),
        Alignment {
            lead_zeros: 0,
            skip: 0
        }
    );
    assert_eq!(
        find(96_000),
        Alignment {
            lead_zeros: 2,
            skip: 0
        }
    );
}

#[test]
fn impulse_lands_on_its_output_instant() {
    // (rate, input index) pairs where index * 48000 / rate is an integer, including index 0:
    // the first input sample must come out as the first output sample.
    let cases = [
        (8_000, 10),
        (11_025, 147),
        (16_000, 50),
        (22_050, 0),
        (22_050, 147),
        (22_050, 1470),
    ];
    let more = [
        (24_000, 1),
        (32_000, 2),
        (44_100, 147),
        (96_000, 100),
        (192_000, 4),
        (44_100, 0),
    ];
    for (rate, at) in cases.into_iter().chain(more) {
        let mut input = vec![0i16; 2_000];
        input[at] = 16_000;
        let out = resample(rate, &input, &[]);
        let peak = (0..out.len()).max_by_key(|&i| out[i]).unwrap();
        assert_eq!(peak, at * 48_000 / rate as usize, "rate {rate}, impulse at {at}");
    }
}

#[test]
fn sine_440_keeps_frequency_level_and_timing() {
    let input = sine(22_050, 440.0, 0.5, 22_050);
    let out = resample(22_050, &input, &[1_072, 2_144]);
    assert_eq!(out.len(), 48_000);
    let ideal = sine(48_000, 440.0, 0.5, out.len());

    // Frequency: all the energy at 440 Hz.
    let ratio_db = 10.0 * (goertzel(&out, 48_000, 440.0) / goertzel(&out, 48_000, 1_000.0)).log10();
    assert!(ratio_db > 60.0, "440 Hz vs 1 kHz: {ratio_db:.1} dB");
    // Level: within 0.1 dB (the brief allows 1 dB; the passband is much flatter).
    let (amp, _) = fit_tone(&out, 48_000, 440.0);
    let level_db = 20.0 * (amp / 0.5).log10();
    assert!(level_db.abs() < 0.1, "level {level_db:.3} dB");
    // Timing: best cross-correlation lag with the ideal 48 kHz sine is 0.
    let xcorr = |lag: i64| -> f64 {
        (500..out.len() - 500)
            .map(|i| f64::from(out[i]) * f64::from(ideal[(i as i64 + lag) as usize]))
            .sum()
    };
    let best = (-5..=5).max_by(|&a, &b| xcorr(a).total_cmp(&xcorr(b))).unwrap();
    assert_eq!(best, 0);
}

/// Worst sample error against the ideal 48 kHz sine, away from the ringing at the start and end.
fn worst_error_vs_ideal_sine(rate: u32) -> i32 {
    // 300 Hz fits under every supported Nyquist; comparing sample by sample against the ideal
    // sine checks level and sub-sample timing at once.
    let input = sine(rate, 300.0, 0.5, rate as usize / 2);
    let out = resample(rate, &input, &[777]);
    assert_eq!(out.len(), expected_len(rate, input.len()), "rate {rate}");
    let ideal = sine(48_000, 300.0, 0.5, out.len());
    (480..out.len() - 480)
        .map(|i| (i32::from(out[i]) - i32::from(ideal[i])).abs())
        .max()
        .unwrap()
}

#[test]
fn standard_rates_match_an_ideal_sine_exactly() {
    for rate in [
        8_000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 96_000, 192_000,
    ] {
        let worst = worst_error_vs_ideal_sine(rate);
        assert!(worst <= 2, "rate {rate}: worst error {worst} LSB");
    }
}

#[test]
fn odd_rates_match_an_ideal_sine_within_half_a_sample() {
    // Rates without a small rational ratio align only to the nearest output sample's fraction
    // that leading zeros can reach; half a sample at 300 Hz is 2π·300·0.5/48000 × 16384 = 322 LSB.
    for rate in [8_001, 23_456, 47_999] {
        let worst = worst_error_vs_ideal_sine(rate);
        assert!(worst <= 322, "rate {rate}: worst error {worst} LSB");
    }
}

#[test]
fn tone_near_nyquist_is_not_aliased() {
    // 10 kHz at 22,050 Hz: its first image sits at 12,050 Hz, which the filter must remove.
    let input = sine(22_050, 10_000.0, 0.5, 11_025);
    let out = resample(22_050, &input, &[]);
    let interior = &out[960..out.len() - 960];
    let (amp, residual_db) = fit_tone(interior, 48_000, 10_000.0);
    assert!(20.0 * (amp / 0.5).log10() > -3.0, "10 kHz lost: amplitude {amp}");
    assert!(residual_db < -60.0, "everything but 10 kHz: {residual_db:.1} dB");
    let image_db =
        10.0 * (goertzel(interior, 48_000, 12_050.0) / goertzel(interior, 48_000, 10_000.0)).log10();
    assert!(image_db < -60.0, "image at 12,050 Hz: {image_db:.1} dB");
}

#[test]
fn reusable_after_finish() {
    let input = sine(22_050, 440.0, 0.3, 5_000);
    let mut r = StreamResampler::new(22_050).unwrap();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    r.process(&input, &mut first).unwrap();
    r.finish(&mut first).unwrap();
    r.process(&input, &mut second).unwrap();
    r.finish(&mut second).unwrap();
    assert_eq!(first, second);
    let mut empty = Vec::new();
    r.finish(&mut empty).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn full_scale_square_clamps_instead_of_wrapping() {
    // Gibbs overshoot on a full-scale square exceeds i16; wrapping would flip the sign.
    let input: Vec<i16> = (0..4_410)
        .map(|i| if (i / 50) % 2 == 0 { i16::MAX } else { i16::MIN })
        .collect();
    let out = resample(22_050, &input, &[]);
    assert!(out.contains(&i16::MAX) && out.contains(&i16::MIN));
    for (i, &s) in out.iter().enumerate().skip(10).take(out.len() - 20) {
        // Mid-plateau samples (more than 10 output samples from an edge) keep their sign.
        let t = i as f64 * 22_050.0 / 48_000.0;
        let edge_distance = (t / 50.0 - (t / 50.0).round()).abs() * 50.0 * 48_000.0 / 22_050.0;
        if edge_distance > 10.0 {
            assert_eq!(s > 0, (t as usize / 50).is_multiple_of(2), "sample {i} = {s}");
        }
    }
    assert_eq!(to_i16(1.5), i16::MAX);
    assert_eq!(to_i16(-1.5), i16::MIN);
    assert_eq!(to_i16(0.6 / 32768.0), 1);
    assert_eq!(to_i16(-0.4 / 32768.0), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn output_length_is_exact(
        rate in prop::sample::select(COMMON_RATES.to_vec()),
        len in 0usize..6_000,
        splits in prop::collection::vec(0usize..3_000, 0..5),
    ) {
        let input = vec![1_000i16; len];
        prop_assert_eq!(resample(rate, &input, &splits).len(), expected_len(rate, len));
    }

    #[test]
    fn splitting_does_not_change_output(
        rate in prop::sample::select(COMMON_RATES.to_vec()),
        input in prop::collection::vec(any::<i16>(), 0..4_000),
        splits in prop::collection::vec(0usize..1_500, 1..8),
    ) {
        let whole = resample(rate, &input, &[]);
        let pieces = resample(rate, &input, &splits);
        prop_assert_eq!(whole.len(), pieces.len());
        for (a, b) in whole.iter().zip(&pieces) {
            prop_assert!((i32::from(*a) - i32::from(*b)).abs() <= 1);
        }
    }
}

#[test]
fn downsamples_from_48k_with_exact_length_timing_and_no_alias() {
    for rate in [8_000, 16_000, 22_050, 24_000] {
        let mut r = StreamResampler::between(48_000, rate).unwrap();
        // 300 Hz to check level and timing; 15 kHz, above every output Nyquist here, must be removed.
        let tone = sine(48_000, 300.0, 0.4, 24_000);
        let high = sine(48_000, 15_000.0, 0.4, 24_000);
        let input: Vec<i16> = tone
            .iter()
            .zip(&high)
            .map(|(a, b)| a.saturating_add(*b))
            .collect();
        let mut out = Vec::new();
        r.process(&input[..5_000], &mut out).unwrap();
        r.process(&input[5_000..], &mut out).unwrap();
        r.finish(&mut out).unwrap();
        assert_eq!(out.len(), rate as usize / 2, "rate {rate}");
        let ideal = sine(rate, 300.0, 0.4, out.len());
        let margin = rate as usize / 50;
        let worst = (margin..out.len() - margin)
            .map(|i| (i32::from(out[i]) - i32::from(ideal[i])).abs())
            .max()
            .unwrap();
        assert!(worst <= 40, "rate {rate}: worst error {worst} LSB");
    }
}
