//! One dashboard snapshot: `/metrics/summary`, `/health` and a fixed list of series from `/metrics`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::admin::{self, AdminState};
use crate::exposition::{self, EncodeError, Exposition};

/// The series a snapshot carries, by exact sample name (histograms by `_sum` and `_count`, from which
/// the page derives means over its window). Everything else in `/metrics` stays out, which keeps a
/// snapshot to a few kilobytes.
pub(crate) const SERIES: [&str; 33] = [
    "tts_sessions_active",
    "tts_sessions_started_total",
    "tts_utterances_total",
    "tts_queue_depth",
    "tts_queue_capacity",
    "tts_queue_wait_seconds_sum",
    "tts_queue_wait_seconds_count",
    "tts_pool_threads",
    "tts_pool_busy_threads",
    "tts_pool_busy_seconds_total",
    "tts_real_time_factor_ratio_sum",
    "tts_real_time_factor_ratio_count",
    "tts_underruns_total",
    "tts_frames_sent_total",
    "tts_barge_in_seconds_sum",
    "tts_barge_in_seconds_count",
    "tts_first_audio_seconds_sum",
    "tts_first_audio_seconds_count",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "tts_gpu_memory_used_bytes",
    "tts_gpu_memory_total_bytes",
    "tts_gpu_utilization_ratio",
    "tts_worker_up",
    "tts_worker_sessions_active",
    "tts_worker_sessions_max",
    "tts_worker_queue_depth",
    "tts_worker_server_sessions_active",
    "tts_worker_server_chunks_total",
    "tts_worker_server_first_audio_seconds_sum",
    "tts_worker_server_first_audio_seconds_count",
    "tts_model_resident_voices",
    "tts_runtime_stalls_total",
];

/// Builds the snapshot object (without `seq`, which the hub adds).
pub(crate) fn build(admin: &AdminState) -> Result<Map<String, Value>, EncodeError> {
    let text = exposition::encode(&admin.registry, Exposition::PrometheusText)?;
    let (_, health) = admin::health_body(admin);
    let time_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let mut body = Map::new();
    body.insert("time_unix_ms".to_owned(), time_unix_ms.into());
    body.insert("summary".to_owned(), admin::summary_body(admin));
    body.insert("health".to_owned(), health);
    body.insert("series".to_owned(), Value::Object(select_series(&text)));
    Ok(body)
}

/// `{name: [[{label: value}, sample], ...]}` for every sample in `text` whose name is in [`SERIES`].
pub(crate) fn select_series(text: &str) -> Map<String, Value> {
    let mut series = Map::new();
    for line in text.lines() {
        let Some((name, labels, value)) = parse_sample(line) else {
            continue;
        };
        if !SERIES.contains(&name) {
            continue;
        }
        let entry = series
            .entry(name.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(samples) = entry {
            samples.push(json!([labels, value]));
        }
    }
    series
}

/// Splits one Prometheus text 0.0.4 sample line into name, labels and value; `None` for comments,
/// blank lines and values that are not finite numbers.
fn parse_sample(line: &str) -> Option<(&str, Map<String, Value>, f64)> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (head, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (&line[..open], Some((&line[open + 1..close], &line[close + 1..])))
        }
        None => (line.split_whitespace().next()?, None),
    };
    let (labels, tail) = match rest {
        Some((inside, tail)) => (parse_labels(inside), tail),
        None => (Map::new(), &line[head.len()..]),
    };
    let value: f64 = tail.split_whitespace().next()?.parse().ok()?;
    value.is_finite().then_some((head, labels, value))
}

/// `a="x",b="y"` into an object; escaped quotes and backslashes are undone.
fn parse_labels(inside: &str) -> Map<String, Value> {
    let mut labels = Map::new();
    let mut rest = inside;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').trim();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = eq + 2 + at + 1;
                    break;
                }
                other => value.push(other),
            }
        }
        labels.insert(key.to_owned(), Value::String(value));
        rest = &rest[end.min(rest.len())..];
    }
    labels
}
