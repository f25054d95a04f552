//! GPU metrics from NVML, when a GPU and its driver are present.
//!
//! [`Gpus::detect`] loads NVML once at startup. A host without an NVIDIA driver (no `libnvidia-ml`) is
//! an ordinary CPU-only host, not a fault: detection never fails, the `/health` line says why there is
//! no GPU, and [`GpuCollector`] emits no series at all. With a GPU, the collector reads every device at
//! scrape time, so the `tts_gpu_*` gauges are never stale; a read that fails drops that one series
//! from the scrape, never the scrape.
//!
//! It does not pick devices for models or track which process uses a GPU: it only observes.

use std::sync::Arc;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::admin::{CheckResult, HealthCheck};

#[cfg(test)]
mod tests;

/// The GPUs NVML sees, found once at startup.
#[derive(Debug)]
pub struct Gpus {
    /// `None` when NVML could not be loaded; the reason is in `description`.
    nvml: Option<Nvml>,
    count: u32,
    /// Built once: device names and the driver version do not change while the process runs, and the
    /// health check runs on the async executor, where a call into the driver has no business.
    description: String,
}

/// Exports `tts_gpu_*` gauges, read from NVML at scrape time.
#[derive(Debug)]
pub struct GpuCollector {
    gpus: Arc<Gpus>,
}

/// The informational `gpu` health check: always passes, never holds back readiness (a CPU-only host
/// serves CPU engines), and reports [`Gpus::describe`].
#[derive(Debug)]
pub struct GpuCheck(pub Arc<Gpus>);

/// One device's raw NVML readings, in NVML's units; `None` where that read failed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GpuReading {
    /// The NVML device index, used as the `gpu` label.
    pub(crate) index: u32,
    pub(crate) memory_used_bytes: Option<u64>,
    pub(crate) memory_total_bytes: Option<u64>,
    /// NVML `utilization.gpu`: percent of the last sample period in which a kernel ran.
    pub(crate) utilization_percent: Option<u32>,
    pub(crate) temperature_celsius: Option<u32>,
    pub(crate) power_milliwatts: Option<u32>,
}

impl Gpus {
    /// Tries NVML once. Never fails: without NVML or without devices, the result counts no GPU and
    /// says why.
    pub fn detect() -> Self {
        let nvml = match Nvml::init() {
            Ok(nvml) => nvml,
            Err(error) => {
                let reason = init_failure(&error);
                tracing::info!(error = %reason, "No GPU metrics: NVML is not available.");
                return Self::unavailable(&reason);
            }
        };
        let count = match nvml.device_count() {
            Ok(count) => count,
            Err(error) => {
                tracing::info!(error = %error, "No GPU metrics: NVML could not count devices.");
                return Self::without_gpu(format!("NVML could not count devices ({error})"));
            }
        };
        let names: Vec<String> = (0..count).map(|index| device_name(&nvml, index)).collect();
        let driver = nvml.sys_driver_version().ok();
        let description = describe_devices(&names, driver.as_deref());
        tracing::info!(gpus = %description, "GPU detection finished.");
        Self {
            nvml: Some(nvml),
            count,
            description,
        }
    }

    /// No NVML, for `reason` (a short phrase such as the loader's error).
    pub(crate) fn unavailable(reason: &str) -> Self {
        Self::without_gpu(format!("NVML not available ({reason})"))
    }

    fn without_gpu(why: String) -> Self {
        Self {
            nvml: None,
            count: 0,
            description: format!("no GPU: {why}"),
        }
    }

    /// How many GPUs NVML reports; 0 without NVML.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// One line for `/health`, e.g. `1 GPU: NVIDIA H100 80GB HBM3 (driver 550.54)` or
    /// `no GPU: NVML not available (libnvidia-ml.so.1: cannot open shared object file: ...)`.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Reads every device now. A device NVML cannot hand out is left out; a failed read leaves its
    /// field `None`. Both are logged at DEBUG, since a scrape every few seconds would flood anything
    /// louder with the same message.
    fn read(&self) -> Vec<GpuReading> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let mut readings = Vec::with_capacity(self.count());
        for index in 0..self.count {
            let device = match nvml.device_by_index(index) {
                Ok(device) => device,
                Err(error) => {
                    tracing::debug!(gpu = index, error = %error, "GPU skipped: NVML has no handle for it.");
                    continue;
                }
            };
            let memory = logged(index, "memory", device.memory_info());
            readings.push(GpuReading {
                index,
                memory_used_bytes: memory.as_ref().map(|memory| memory.used),
                memory_total_bytes: memory.as_ref().map(|memory| memory.total),
                utilization_percent: logged(index, "utilization", device.utilization_rates())
                    .map(|utilization| utilization.gpu),
                temperature_celsius: logged(index, "temperature", device.temperature(TemperatureSensor::Gpu)),
                power_milliwatts: logged(index, "power", device.power_usage()),
            });
        }
        readings
    }
}

impl GpuCollector {
    /// Adds the collector to `registry`; it emits nothing while `gpus` counts no GPU.
    pub fn register(registry: &mut Registry, gpus: Arc<Gpus>) {
        registry.register_collector(Box::new(Self { gpus }));
    }
}

impl Collector for GpuCollector {
    // The admin router encodes on a blocking thread, so the NVML calls here stay off the executor.
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        encode_readings(encoder, &self.gpus.read())
    }
}

impl HealthCheck for GpuCheck {
    fn name(&self) -> &str {
        "gpu"
    }

    fn required_for_readiness(&self) -> bool {
        false
    }

    fn check(&self) -> CheckResult {
        CheckResult::pass(self.0.describe())
    }
}

/// Encodes the five `tts_gpu_*` families, converting NVML's units to the base units of
/// `docs/telemetry.md`. A family no device has a value for is left out whole, not sent empty.
pub(crate) fn encode_readings(
    mut encoder: DescriptorEncoder<'_>,
    readings: &[GpuReading],
) -> Result<(), std::fmt::Error> {
    let bytes = Unit::Bytes;
    let celsius = Unit::Celsius;
    let watts = Unit::Other("watts".to_owned());
    encode_family(
        &mut encoder,
        ("tts_gpu_memory_used", Some(&bytes)),
        "GPU memory in use (NVML), read at scrape time",
        samples(readings, |r| r.memory_used_bytes),
    )?;
    encode_family(
        &mut encoder,
        ("tts_gpu_memory_total", Some(&bytes)),
        "GPU memory installed (NVML)",
        samples(readings, |r| r.memory_total_bytes),
    )?;
    encode_family(
        &mut encoder,
        ("tts_gpu_utilization_ratio", None),
        "Share of NVML's last sample period in which a kernel ran on the GPU, 0..1",
        samples(readings, |r| {
            r.utilization_percent.map(|percent| f64::from(percent) / 100.0)
        }),
    )?;
    encode_family(
        &mut encoder,
        ("tts_gpu_temperature", Some(&celsius)),
        "GPU core temperature (NVML)",
        samples(readings, |r| r.temperature_celsius),
    )?;
    encode_family(
        &mut encoder,
        ("tts_gpu_power", Some(&watts)),
        "GPU power draw (NVML)",
        samples(readings, |r| {
            r.power_milliwatts
                .map(|milliwatts| f64::from(milliwatts) / 1000.0)
        }),
    )
}

/// `(device index, value)` for every reading that has the value.
fn samples<N>(readings: &[GpuReading], value: impl Fn(&GpuReading) -> Option<N>) -> Vec<(u32, N)> {
    readings
        .iter()
        .filter_map(|reading| value(reading).map(|v| (reading.index, v)))
        .collect()
}

/// One gauge family with a `gpu` label per sample, nothing at all when `samples` is empty. The name
/// comes without its unit, which the encoder appends (and states in OpenMetrics' `# UNIT`).
fn encode_family<N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, unit): (&str, Option<&Unit>),
    help: &str,
    samples: Vec<(u32, N)>,
) -> Result<(), std::fmt::Error> {
    if samples.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (index, value) in samples {
        let labels = [("gpu", index.to_string())];
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// `1 GPU: NAME (driver VERSION)`, `2 GPUs: NAME, NAME (driver VERSION)`, or why none was found.
fn describe_devices(names: &[String], driver: Option<&str>) -> String {
    let driver = driver.unwrap_or("unknown");
    match names.len() {
        0 => format!("no GPU: NVML found no devices (driver {driver})"),
        1 => format!("1 GPU: {} (driver {driver})", names.join(", ")),
        count => format!("{count} GPUs: {} (driver {driver})", names.join(", ")),
    }
}

/// The loader's own message when the library is missing ("libnvidia-ml.so.1: cannot open shared object
/// file: ..."), which says more to an operator than the wrapper's prefix around it.
fn init_failure(error: &NvmlError) -> String {
    match error {
        NvmlError::LibloadingError(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

fn device_name(nvml: &Nvml, index: u32) -> String {
    match nvml.device_by_index(index).and_then(|device| device.name()) {
        Ok(name) => name,
        Err(error) => {
            tracing::debug!(gpu = index, error = %error, "GPU name unreadable.");
            format!("GPU {index} (name unreadable)")
        }
    }
}

/// The value of one NVML read, or `None` with a DEBUG line naming the device and what failed.
fn logged<T>(index: u32, what: &'static str, read: Result<T, NvmlError>) -> Option<T> {
    read.inspect_err(|error| tracing::debug!(gpu = index, read = what, error = %error, "GPU read failed."))
        .ok()
}
