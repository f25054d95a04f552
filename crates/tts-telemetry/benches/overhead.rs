//! What telemetry costs on the hot path and at scrape time: counter and histogram updates, a labelled
//! series lookup, encoding a 10,000-series registry in both text formats, and the sliding-window
//! histogram. `scripts/bench_prometheus_client.py` measures the same operations in Python's
//! `prometheus_client` for comparison.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tts_telemetry::{Exposition, WindowedHistogram, encode};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TwoLabels {
    model: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeriesLabel {
    series: String,
}

fn buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 14)
}

fn updates(c: &mut Criterion) {
    let counter: Counter = Counter::default();
    c.bench_function("counter_inc", |b| b.iter(|| black_box(&counter).inc()));

    let histogram = Histogram::new(buckets());
    c.bench_function("histogram_observe", |b| {
        b.iter(|| black_box(&histogram).observe(black_box(0.042)))
    });

    let family = Family::<TwoLabels, Histogram>::new_with_constructor(|| Histogram::new(buckets()));
    let labels = TwoLabels {
        model: "en_US-lessac-medium".into(),
        outcome: "ok".into(),
    };
    family.get_or_create(&labels).observe(0.1);
    c.bench_function("family_get_or_create_observe", |b| {
        b.iter(|| family.get_or_create(black_box(&labels)).observe(black_box(0.042)))
    });

    let window = WindowedHistogram::new(Duration::from_secs(300), 30);
    c.bench_function("windowed_histogram_observe", |b| {
        b.iter(|| window.observe(black_box(0.042)))
    });
    // A full window: samples in all 30 slots, so a quantile merges every slot.
    let full = WindowedHistogram::new(Duration::from_secs(300), 30);
    let start = Instant::now();
    for i in 0..300_000u32 {
        full.observe_at(
            f64::from(i % 2000) * 1e-4,
            start + Duration::from_millis(u64::from(i)),
        );
    }
    let end = start + Duration::from_millis(299_999);
    c.bench_function("windowed_histogram_quantile_30_slots", |b| {
        b.iter(|| full.quantile_at(black_box(0.95), end))
    });
}

fn encoding(c: &mut Criterion) {
    let mut registry = Registry::default();
    let family = Family::<SeriesLabel, Counter>::default();
    for i in 0..10_000 {
        family
            .get_or_create(&SeriesLabel {
                series: format!("series-{i}"),
            })
            .inc_by(i);
    }
    registry.register("bench_events", "Events per series", family);

    let mut group = c.benchmark_group("encode_10k_counter_series");
    group.sample_size(20).measurement_time(Duration::from_secs(3));
    group.bench_function("openmetrics", |b| {
        b.iter(|| encode(&registry, Exposition::OpenMetrics))
    });
    group.bench_function("prometheus_text_0_0_4", |b| {
        b.iter(|| encode(&registry, Exposition::PrometheusText))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = updates, encoding }
criterion_main!(benches);
