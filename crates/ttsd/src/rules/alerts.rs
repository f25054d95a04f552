//! Operator alerts: every alert of the requirement documents on ttsd's metric names (docs/telemetry.md
//! maps them), plus runtime stalls, readiness, underruns and failovers. Latency thresholds come from
//! `[slo]`; the rest are constants here, stated in docs/alerting.md.

use tts_gateway::SloConfig;

use super::alert::{Alert, Severity};
use super::number;
use super::yaml::Group;

/// Error codes that are the server's fault (the others answer a client's mistake).
const SERVER_ERROR_CODES: &str = "SYNTHESIS_FAILED|WORKER_UNAVAILABLE|OVERLOADED|INTERNAL_ERROR";
/// Engine seconds per audio second above which a voice is close to falling behind real time.
const RTF_LIMIT: f64 = 0.8;
/// Share of failed synthesis chunks (seed 001).
const ERROR_RATIO_LIMIT: f64 = 0.05;
/// Server-side errors per WebSocket connection (seed 003's 10 %).
const SESSION_ERROR_RATIO_LIMIT: f64 = 0.1;
/// Underruns per utterance played.
const UNDERRUN_RATIO_LIMIT: f64 = 0.05;
/// Frames dropped because a client stopped reading, per 5 minutes (50 frames: one second of audio).
const BACKPRESSURE_DROPS_LIMIT: u64 = 50;
/// Engine queue fill (seed 004: 40 of 50).
const QUEUE_FILL_LIMIT: f64 = 0.8;
/// Sessions refused as overloaded per 5 minutes (seed 004's session queue depth of 10).
const REFUSALS_LIMIT: u64 = 10;
/// Busy share of engine-thread time (seed 001).
const POOL_BUSY_LIMIT: f64 = 0.95;
/// Stalls (ticks more than 20 ms late) per second: six a minute.
const STALLS_PER_SECOND_LIMIT: f64 = 0.1;
/// Failed worker RPCs per second (seed 004).
const RPC_ERRORS_PER_SECOND_LIMIT: f64 = 0.1;
/// Failed Redis commands per second (seed 003).
const REDIS_ERRORS_PER_SECOND_LIMIT: f64 = 0.05;
/// Mid-utterance failovers per 10 minutes.
const FAILOVERS_LIMIT: u64 = 3;

fn alert(name: &'static str, for_: &'static str, severity: Severity, expr: String) -> Alert {
    Alert {
        name,
        expr,
        for_,
        severity,
        labels: Vec::new(),
        summary: "",
        description: String::new(),
    }
}

trait Describe {
    fn says(self, summary: &'static str, description: String) -> Alert;
}

impl Describe for Alert {
    fn says(mut self, summary: &'static str, description: String) -> Alert {
        self.summary = summary;
        self.description = description;
        self
    }
}

/// All operator alert groups.
pub(crate) fn groups(config: &SloConfig) -> Vec<Group> {
    [
        ("ttsd-listener", listener(config)),
        ("ttsd-synthesis", synthesis(config)),
        ("ttsd-workers", workers()),
        ("ttsd-process", process()),
    ]
    .into_iter()
    .map(|(name, alerts)| Group {
        name: name.into(),
        rules: alerts.into_iter().map(Alert::into_rule).collect(),
    })
    .collect()
}

/// What a listener hears: first audio, barge-in, pacing, underruns, dropped frames.
fn listener(config: &SloConfig) -> Vec<Alert> {
    let min = config.alert_min_events;
    let mut alerts = Vec::new();
    for (engine, limit) in [
        ("espeak", config.first_audio_seconds.espeak),
        ("piper", config.first_audio_seconds.piper),
    ] {
        let mut a = alert("HighFirstAudioLatency", "5m", Severity::Warning, format!(
            "histogram_quantile(0.95, sum by (engine, le) (rate(tts_first_audio_seconds_bucket{{engine=\"{engine}\"}}[5m]))) > {limit}\nand on (engine)\nsum by (engine) (increase(tts_first_audio_seconds_count{{engine=\"{engine}\"}}[5m])) >= {min}",
            limit = number(limit),
        )).says(
            "First audio is slower than its threshold for the 95th percentile.",
            format!("p95 first audio of {{{{ $labels.engine }}}} voices is {{{{ $value | humanizeDuration }}}} over the last 5 minutes, above the {} s threshold (slo.first_audio_seconds.{engine}).", number(limit)),
        );
        a.labels.push(("engine", engine.into()));
        a.labels.push(("slo", "first_audio".into()));
        alerts.push(a);
    }
    let barge_in = number(config.barge_in_seconds);
    alerts.push(alert("HighBargeInLatency", "5m", Severity::Warning, format!(
        "histogram_quantile(0.95, sum by (le) (rate(tts_barge_in_seconds_bucket[5m]))) > {barge_in}\nand\nsum(increase(tts_barge_in_seconds_count[5m])) >= {min}"
    )).says(
        "STOP and PAUSE take too long to silence audio.",
        format!("p95 barge-in (STOP or PAUSE read to the last frame sent) is {{{{ $value | humanizeDuration }}}} over the last 5 minutes, above the {barge_in} s threshold (slo.barge_in_seconds)."),
    ));
    let pacing = number(config.frame_interval_limit_seconds());
    alerts.push(alert("HighFrameJitter", "5m", Severity::Warning, format!(
        "histogram_quantile(0.95, sum by (le) (rate(tts_frame_interval_seconds_bucket[5m]))) > {pacing}\nand\nsum(increase(tts_frame_interval_seconds_count[5m])) >= {min}"
    )).says(
        "Audio frames leave later than the 20 ms clock allows.",
        format!("p95 interval between consecutive frames is {{{{ $value | humanizeDuration }}}} over the last 5 minutes, above {pacing} s (slo.frame_interval_target_seconds + slo.frame_interval_tolerance_seconds)."),
    ));
    let played = "sum(increase(tts_utterances_total{outcome!=\"failed\"}[5m]))";
    alerts.push(alert("HighUnderrunRate", "5m", Severity::Warning, format!(
        "sum(increase(tts_underruns_total[5m])) / {played} > {limit}\nand\n{played} >= {min}",
        limit = number(UNDERRUN_RATIO_LIMIT),
    )).says(
        "Listeners hear gaps because synthesis falls behind playback.",
        format!("{{{{ printf \"%.3g\" $value }}}} underruns per utterance played over the last 5 minutes (limit {}).", number(UNDERRUN_RATIO_LIMIT)),
    ));
    alerts.push(alert("FramesDropping", "1m", Severity::Warning, format!(
        "sum(increase(tts_frames_dropped_total{{reason=\"backpressure\"}}[5m])) >= {BACKPRESSURE_DROPS_LIMIT}"
    )).says(
        "Synthesised audio frames are dropped because clients stopped reading.",
        "{{ $value | humanize }} frames were dropped for backpressure over the last 5 minutes (slow clients, ended slow_client).".into(),
    ));
    alerts
}

/// Engines, the queue in front of them and the errors they return.
fn synthesis(config: &SloConfig) -> Vec<Alert> {
    let min = config.alert_min_events;
    let answered = "sum by (engine) (rate(tts_engine_tasks_total{outcome=~\"completed|failed\"}[5m]))";
    let connections = "sum(increase(tts_websocket_connections_total[5m]))";
    vec![
        alert("HighFrameQueue", "30s", Severity::Warning, format!(
            "tts_queue_depth / tts_queue_capacity > {}", number(QUEUE_FILL_LIMIT)
        )).says(
            "The engine queue is close to full, so new chunks will be refused.",
            "The engine queue on {{ $labels.instance }} is {{ $value | humanizePercentage }} full; at 100 % chunks fail with OVERLOADED.".into(),
        ),
        alert("HighRTF", "2m", Severity::Warning, format!(
            "sum by (engine) (rate(tts_real_time_factor_ratio_sum[5m])) / sum by (engine) (rate(tts_real_time_factor_ratio_count[5m])) > {limit}\nand on (engine)\nsum by (engine) (increase(tts_real_time_factor_ratio_count[5m])) >= {min}",
            limit = number(RTF_LIMIT),
        )).says(
            "Synthesis is close to real time, so playback is about to fall behind.",
            format!("Mean real-time factor of {{{{ $labels.engine }}}} is {{{{ printf \"%.3g\" $value }}}} engine seconds per audio second over the last 5 minutes (limit {}).", number(RTF_LIMIT)),
        ),
        alert("HighErrorRate", "2m", Severity::Critical, format!(
            "sum by (engine) (rate(tts_engine_tasks_total{{outcome=\"failed\"}}[5m])) / {answered} > {limit}\nand on (engine)\nsum by (engine) (increase(tts_engine_tasks_total{{outcome=~\"completed|failed\"}}[5m])) >= {min}",
            limit = number(ERROR_RATIO_LIMIT),
        )).says(
            "Synthesis chunks fail in the engine.",
            format!("{{{{ $value | humanizePercentage }}}} of {{{{ $labels.engine }}}} chunks failed over the last 5 minutes (limit {}).", number(ERROR_RATIO_LIMIT * 100.0) + " %"),
        ),
        alert("HighSessionErrorRate", "3m", Severity::Warning, format!(
            "sum(increase(tts_errors_sent_total{{code=~\"{SERVER_ERROR_CODES}\"}}[5m])) / {connections} > {limit}\nand\n{connections} >= {min}",
            limit = number(SESSION_ERROR_RATIO_LIMIT),
        )).says(
            "Clients receive server-side errors.",
            format!("{{{{ printf \"%.3g\" $value }}}} server-side errors ({}) per WebSocket connection over the last 5 minutes (limit {}).", SERVER_ERROR_CODES.replace('|', ", "), number(SESSION_ERROR_RATIO_LIMIT)),
        ),
        alert("SessionQueueBackup", "2m", Severity::Warning, format!(
            "sum(increase(tts_sessions_refused_total{{reason=\"overloaded\"}}[5m])) > {REFUSALS_LIMIT}"
        )).says(
            "Sessions are refused because the server is at its session limit.",
            "{{ $value | humanize }} sessions were refused as overloaded over the last 5 minutes (gateway.max_sessions reached).".into(),
        ),
        alert("WorkerPoolSaturated", "5m", Severity::Warning, format!(
            "sum by (instance) (rate(tts_pool_busy_seconds_total[5m])) / sum by (instance) (tts_pool_threads) > {}", number(POOL_BUSY_LIMIT)
        )).says(
            "Every engine thread is busy nearly all the time.",
            "Engine threads on {{ $labels.instance }} were busy {{ $value | humanizePercentage }} of the last 5 minutes.".into(),
        ),
    ]
}

/// Remote workers, their models and the Redis registry.
fn workers() -> Vec<Alert> {
    vec![
        alert("WorkerUnavailable", "1m", Severity::Critical, "tts_worker_up == 0".into()).says(
            "A synthesis worker fails its health checks.",
            "Worker {{ $labels.worker }} is down in the view of gateway {{ $labels.instance }} (tts_worker_up = {{ $value }}).".into(),
        ),
        alert("NoActiveWorker", "1m", Severity::Emergency, "sum by (instance) (tts_worker_up) == 0".into()).says(
            "A gateway has no healthy synthesis worker at all.",
            "Gateway {{ $labels.instance }} sees {{ $value }} healthy workers: every session on it fails with WORKER_UNAVAILABLE.".into(),
        ),
        alert("WorkerRPCErrors", "2m", Severity::Warning, format!(
            "sum by (instance, worker) (rate(tts_worker_rpc_errors_total[5m])) > {}", number(RPC_ERRORS_PER_SECOND_LIMIT)
        )).says(
            "RPCs from a gateway to a worker fail.",
            "{{ printf \"%.3g\" $value }} failed RPCs per second to worker {{ $labels.worker }} over the last 5 minutes.".into(),
        ),
        alert("WorkerFailovers", "1m", Severity::Warning, format!(
            "sum(increase(tts_worker_failovers_total[10m])) > {FAILOVERS_LIMIT}"
        )).says(
            "Utterances move between workers mid-stream.",
            "{{ $value | humanize }} synthesis streams failed over to another worker in the last 10 minutes; listeners may hear a gap.".into(),
        ),
        alert("ModelLoadFailures", "2m", Severity::Critical,
            "sum by (instance, engine, voice, reason) (increase(tts_model_load_failures_total[5m])) > 0".into(),
        ).says(
            "A worker failed to load a voice.",
            "{{ $value | humanize }} loads of voice {{ $labels.voice }} ({{ $labels.engine }}) failed with reason {{ $labels.reason }} over the last 5 minutes.".into(),
        ),
        alert("RedisConnectionErrors", "2m", Severity::Warning, format!(
            "sum by (instance) (rate(tts_redis_command_errors_total[5m])) > {}", number(REDIS_ERRORS_PER_SECOND_LIMIT)
        )).says(
            "Commands to the Redis registry fail.",
            "{{ printf \"%.3g\" $value }} Redis commands per second failed on {{ $labels.instance }} over the last 5 minutes.".into(),
        ),
    ]
}

/// The process itself: scraped, ready, scheduling on time, GPU memory.
fn process() -> Vec<Alert> {
    let gpu = "tts_gpu_memory_used_bytes / tts_gpu_memory_total_bytes";
    let mut high = alert("HighGPUMemory", "5m", Severity::Warning, format!("{gpu} > 0.9")).says(
        "GPU memory is nearly full.",
        "GPU {{ $labels.gpu }} on {{ $labels.instance }} has {{ $value | humanizePercentage }} of its memory in use.".into(),
    );
    high.labels.push(("family", "gpu_memory".into()));
    let mut exhausted = alert("GPUMemoryExhaustion", "2m", Severity::Critical, format!("{gpu} > 0.95")).says(
        "GPU memory is exhausted, so voice loads will fail.",
        "GPU {{ $labels.gpu }} on {{ $labels.instance }} has {{ $value | humanizePercentage }} of its memory in use.".into(),
    );
    exhausted.labels.push(("family", "gpu_memory".into()));
    vec![
        alert("TtsdTargetDown", "1m", Severity::Critical, "up{job=~\"ttsd-gateway|ttsd-worker\"} == 0".into()).says(
            "Prometheus cannot scrape a ttsd process.",
            "{{ $labels.job }} target {{ $labels.instance }} has not answered a scrape for a minute (up = {{ $value }}).".into(),
        ),
        alert("ReadinessFailing", "5m", Severity::Critical, "tts_ready == 0".into()).says(
            "A ttsd process reports not ready.",
            "{{ $labels.instance }} has answered 503 on /readiness for 5 minutes (tts_ready = {{ $value }}); load balancers send it nothing.".into(),
        ),
        alert("RuntimeStalls", "5m", Severity::Warning, format!(
            "rate(tts_runtime_stalls_total[5m]) > {}", number(STALLS_PER_SECOND_LIMIT)
        )).says(
            "The async runtime wakes late, which delays audio frames.",
            "{{ $labels.instance }} had {{ printf \"%.3g\" $value }} scheduling stalls (ticks more than 20 ms late) per second over the last 5 minutes.".into(),
        ),
        high,
        exhausted,
    ]
}
