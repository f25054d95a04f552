//! Process metrics read from `/proc/self` at scrape time, and the `*_build_info` metric.
//!
//! The names are the ones every Prometheus client library exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), so stock dashboards and alerts work unchanged. Nothing is
//! sampled between scrapes. On a system without `/proc` (or where a file is unreadable) the affected
//! metrics are simply absent from the scrape.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Clock ticks per second in `/proc/<pid>/stat`. Linux fixes `USER_HZ` at 100 in its user-space ABI on
/// every architecture Rust supports, whatever `CONFIG_HZ` the kernel was built with, so no `sysconf`.
const USER_HZ: f64 = 100.0;

/// Registers the collector of `process_*` metrics (CPU, memory, file descriptors, threads, start time).
pub fn register_process_metrics(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

/// Registers `<name>{labels} 1` as an info metric, e.g. `name = "tts_build"` with
/// `[("version", env!("CARGO_PKG_VERSION"))]` exports `tts_build_info{version="0.1.0"} 1`. A trailing
/// `_info` in `name` is accepted and not doubled.
pub fn register_build_info(registry: &mut Registry, name: &str, help: &str, labels: &[(&str, &str)]) {
    let name = name.strip_suffix("_info").unwrap_or(name);
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    registry.register(name, help, Info::new(labels));
}

#[derive(Debug)]
struct ProcessCollector;

/// What one scrape read; `None` where the source was unreadable.
#[derive(Debug, Default, PartialEq)]
struct ProcessSample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    threads: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl ProcessSample {
    fn read() -> Self {
        let mut sample = Self::default();
        if let Some(fields) = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| StatFields::parse(&stat))
        {
            sample.cpu_seconds = Some((fields.utime + fields.stime) as f64 / USER_HZ);
            sample.threads = Some(fields.num_threads);
            sample.start_time_seconds =
                boot_time_seconds().map(|boot| boot as f64 + fields.start_ticks as f64 / USER_HZ);
        }
        if let Ok(status) = fs::read_to_string("/proc/self/status") {
            sample.resident_bytes = status_kib(&status, "VmRSS:").map(|kib| kib * 1024);
            sample.virtual_bytes = status_kib(&status, "VmSize:").map(|kib| kib * 1024);
        }
        sample.open_fds = fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        sample.max_fds = fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| max_open_files(&limits));
        sample
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sample = ProcessSample::read();
        if let Some(seconds) = sample.cpu_seconds {
            let metric = ConstCounter::new(seconds);
            let help = "Total user and system CPU time spent in seconds.";
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                help,
                None,
                metric.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                sample.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                sample.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                sample.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                sample.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                sample.threads,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let metric = ConstGauge::new(value);
                metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
            }
        }
        if let Some(seconds) = sample.start_time_seconds {
            let metric = ConstGauge::new(seconds);
            let help = "Start time of the process since unix epoch in seconds.";
            metric.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                help,
                None,
                metric.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// The fields of `/proc/self/stat` this module needs.
#[derive(Debug, PartialEq)]
struct StatFields {
    utime: u64,
    stime: u64,
    num_threads: u64,
    start_ticks: u64,
}

impl StatFields {
    fn parse(stat: &str) -> Option<Self> {
        // The command name (field 2) is in parentheses and may itself contain spaces or ')'; the fields
        // after the last ')' start with field 3 (state).
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field n (1-based, proc(5)) is at index n - 3.
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            num_threads: field(20)?,
            start_ticks: field(22)?,
        })
    }
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    // "unlimited" has no number; report nothing rather than a made-up one.
    soft.parse().ok()
}

fn boot_time_seconds() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let stat = "1234 (tts d) worker) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 \
                    4200 1000000 500 18446744073709551615";
        let fields = StatFields::parse(stat).unwrap();
        assert_eq!(
            fields,
            StatFields {
                utime: 250,
                stime: 75,
                num_threads: 9,
                start_ticks: 4200
            }
        );
        assert_eq!(StatFields::parse("garbage"), None);
    }

    #[test]
    fn status_and_limits_parsing() {
        let status = "Name:\tttsd\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\nThreads:\t4\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(status, "VmSize:"), Some(123_456));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), None);
    }

    #[test]
    fn live_process_metrics_are_plausible() {
        let mut registry = Registry::default();
        register_process_metrics(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        if !std::path::Path::new("/proc/self/stat").exists() {
            assert!(!text.contains("process_"));
            return;
        }
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        };
        assert!(text.contains("# TYPE process_cpu_seconds counter"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_threads") >= 1.0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "start {start}, now {now}"
        );
    }

    #[test]
    fn build_info_is_an_info_metric_with_one_suffix() {
        let mut registry = Registry::default();
        register_build_info(
            &mut registry,
            "app_build_info",
            "Build of this binary",
            &[("version", "1.2.3")],
        );
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("# TYPE app_build info\n"), "{text}");
        assert!(text.contains("app_build_info{version=\"1.2.3\"} 1\n"), "{text}");
    }
}
