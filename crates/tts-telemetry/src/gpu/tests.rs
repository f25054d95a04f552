use std::ffi::OsStr;

use super::*;
use crate::exposition::{Exposition, encode};

/// Encodes fixed readings through the same path as [`GpuCollector`], without NVML.
#[derive(Debug)]
struct Synthetic(Vec<GpuReading>);

impl Collector for Synthetic {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        encode_readings(encoder, &self.0)
    }
}

/// An H100-like device at index 0 and a second one whose power read failed.
fn readings() -> Vec<GpuReading> {
    vec![
        GpuReading {
            index: 0,
            memory_used_bytes: Some(12_884_901_888),
            memory_total_bytes: Some(85_520_809_984),
            utilization_percent: Some(42),
            temperature_celsius: Some(61),
            power_milliwatts: Some(287_500),
        },
        GpuReading {
            index: 1,
            memory_used_bytes: Some(0),
            memory_total_bytes: Some(85_520_809_984),
            utilization_percent: Some(100),
            temperature_celsius: Some(35),
            power_milliwatts: None,
        },
    ]
}

fn scrape(collector: Box<dyn Collector>, format: Exposition) -> String {
    let mut registry = Registry::default();
    registry.register_collector(collector);
    encode(&registry, format).expect("encodes")
}

/// The value of `name{gpu="<gpu>"}`, if the scrape has that sample.
fn sample(text: &str, name: &str, gpu: u32) -> Option<f64> {
    let prefix = format!("{name}{{gpu=\"{gpu}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.parse().expect("a number"))
}

#[test]
fn detect_never_fails_and_its_line_matches_the_count() {
    let gpus = Gpus::detect();
    let line = gpus.describe();
    match gpus.count() {
        // This is the branch a host without libnvidia-ml takes, CI included.
        0 => assert!(line.starts_with("no GPU: "), "{line}"),
        1 => assert!(line.starts_with("1 GPU: "), "{line}"),
        count => assert!(line.starts_with(&format!("{count} GPUs: ")), "{line}"),
    }
}

#[test]
fn a_missing_library_reads_as_no_gpu_in_the_loaders_words() {
    let error = Nvml::builder()
        .lib_path(OsStr::new("/nonexistent/libnvidia-ml.so.1"))
        .init()
        .expect_err("no library at that path");
    let reason = init_failure(&error);
    assert!(reason.contains("/nonexistent/libnvidia-ml.so.1"), "{reason}");
    assert!(!reason.contains("libloading"), "{reason}");
    let gpus = Gpus::unavailable(&reason);
    assert_eq!(gpus.count(), 0);
    assert_eq!(gpus.describe(), format!("no GPU: NVML not available ({reason})"));
}

#[test]
fn describe_names_every_device_and_the_driver() {
    let h100 = "NVIDIA H100 80GB HBM3".to_owned();
    assert_eq!(
        describe_devices(std::slice::from_ref(&h100), Some("550.54")),
        "1 GPU: NVIDIA H100 80GB HBM3 (driver 550.54)"
    );
    assert_eq!(
        describe_devices(&[h100.clone(), h100], None),
        "2 GPUs: NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3 (driver unknown)"
    );
    assert_eq!(
        describe_devices(&[], Some("550.54")),
        "no GPU: NVML found no devices (driver 550.54)"
    );
}

#[test]
fn without_a_gpu_the_collector_emits_no_series() {
    for gpus in [Gpus::detect(), Gpus::unavailable("test")] {
        if gpus.count() > 0 {
            continue;
        }
        let gpus = Arc::new(gpus);
        for format in [Exposition::OpenMetrics, Exposition::PrometheusText] {
            let mut registry = Registry::default();
            GpuCollector::register(&mut registry, gpus.clone());
            let text = encode(&registry, format).expect("encodes");
            assert!(!text.contains("tts_gpu_"), "{text}");
        }
    }
}

#[test]
fn readings_encode_five_gauge_families_in_base_units() {
    let text = scrape(Box::new(Synthetic(readings())), Exposition::OpenMetrics);
    for (name, unit) in [
        ("tts_gpu_memory_used_bytes", Some("bytes")),
        ("tts_gpu_memory_total_bytes", Some("bytes")),
        ("tts_gpu_utilization_ratio", None),
        ("tts_gpu_temperature_celsius", Some("celsius")),
        ("tts_gpu_power_watts", Some("watts")),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} gauge\n")),
            "{name}:\n{text}"
        );
        if let Some(unit) = unit {
            assert!(
                text.contains(&format!("# UNIT {name} {unit}\n")),
                "{name}:\n{text}"
            );
        }
    }
    let expected = [
        ("tts_gpu_memory_used_bytes", 0, 12_884_901_888.0),
        ("tts_gpu_memory_total_bytes", 0, 85_520_809_984.0),
        ("tts_gpu_utilization_ratio", 0, 0.42),
        ("tts_gpu_temperature_celsius", 0, 61.0),
        ("tts_gpu_power_watts", 0, 287.5),
        ("tts_gpu_memory_used_bytes", 1, 0.0),
        ("tts_gpu_utilization_ratio", 1, 1.0),
        ("tts_gpu_temperature_celsius", 1, 35.0),
    ];
    for (name, gpu, value) in expected {
        assert_eq!(sample(&text, name, gpu), Some(value), "{name} gpu {gpu}:\n{text}");
    }
}

#[test]
fn a_failed_read_drops_only_that_series() {
    let text = scrape(Box::new(Synthetic(readings())), Exposition::PrometheusText);
    assert_eq!(sample(&text, "tts_gpu_power_watts", 0), Some(287.5));
    assert_eq!(sample(&text, "tts_gpu_power_watts", 1), None, "{text}");
    assert_eq!(sample(&text, "tts_gpu_temperature_celsius", 1), Some(35.0));

    // No device with a power reading: the family goes, descriptor and all.
    let unpowered: Vec<GpuReading> = readings()
        .into_iter()
        .map(|reading| GpuReading {
            power_milliwatts: None,
            ..reading
        })
        .collect();
    let text = scrape(Box::new(Synthetic(unpowered)), Exposition::OpenMetrics);
    assert!(!text.contains("tts_gpu_power"), "{text}");
    assert!(
        text.contains("# TYPE tts_gpu_temperature_celsius gauge"),
        "{text}"
    );
}

#[test]
fn the_gpu_check_passes_and_never_holds_back_readiness() {
    let gpus = Arc::new(Gpus::unavailable(
        "libnvidia-ml.so.1: cannot open shared object file",
    ));
    let check = GpuCheck(gpus.clone());
    assert_eq!(check.name(), "gpu");
    assert!(!check.required_for_readiness());
    assert_eq!(check.check(), CheckResult::pass(gpus.describe()));
}

#[test]
fn promtool_accepts_a_synthetic_gpu_scrape() {
    let text = scrape(Box::new(Synthetic(readings())), Exposition::PrometheusText);
    if let Err(findings) = tts_test_support::promtool_check_metrics(&text) {
        panic!("promtool: {findings}\ninput:\n{text}");
    }
}
