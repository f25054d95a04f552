//! Histogram bucket edges, chosen around the targets each histogram is read against.

/// Latencies a listener notices: 5 ms to 5 s, dense where the targets are (20 ms espeak, 150–300 ms Piper).
pub(super) const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0,
];
/// Control and barge-in: sub-millisecond to a quarter second (the SLO is 50 ms).
pub(super) const CONTROL_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25,
];
/// Frame send intervals cluster at 20 ms; lead frames leave at ~0, stalls show past 30 ms.
pub(super) const INTERVAL_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.015, 0.018, 0.019, 0.02, 0.021, 0.022, 0.025, 0.03, 0.04, 0.06, 0.1,
];
/// Engine work per chunk: 1 ms (espeak) to 10 s (a long Piper chunk on a busy machine).
pub(super) const SYNTHESIS_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 10.0,
];
/// Real-time factor (engine seconds per audio second): espeak ~0.001, Piper 0.02–0.2, > 1 cannot keep up.
pub(super) const RTF_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
];
/// Session lifetimes: a second to the one-hour cap.
pub(super) const SESSION_BUCKETS: [f64; 10] =
    [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];
/// Text-to-last-frame latencies: 50 ms to a minute (long utterances play in real time).
pub(super) const END_TO_END_BUCKETS: [f64; 12] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0];
