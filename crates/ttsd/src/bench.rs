//! `ttsd bench`: opens N concurrent sessions against a server (or one it starts in-process on loopback),
//! sends a fixed set of sentences in a loop, and reports what a client measures with its own clock:
//! first audio (final text sent → first frame received), inter-frame arrival intervals and late frames,
//! barge-in (STOP sent → `utterance_end`, and frames received after STOP), delivery real-time factor,
//! underruns reported by the server, and errors. Every loop is bounded by `--duration-seconds`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;
use tts_client::{Event, StreamClient, percentile};

use crate::config::Config;

/// The sentences of `shared/context/peer-baselines.md`, so figures compare with Piper's own server.
const TEXTS: [&str; 4] = [
    "The quick brown fox jumps over the lazy dog.",
    "Please hold while I check the schedule for tomorrow morning.",
    "Observability means you can answer new questions without shipping new code.",
    "Our service turns short pieces of text into speech for phone menus and alerts. Each request carries a \
     voice name and the words to say, and the answer streams back as audio. When traffic rises, operators \
     watch the latency graphs and the queue depth before adding machines. Tonight the scheduled backup job \
     starts at eleven o'clock, so please keep all of your recorded messages brief, friendly and clear.",
];
const FRAME: Duration = Duration::from_millis(20);
/// STOP is sent after this many frames of a barge-in utterance.
const STOP_AFTER_FRAMES: u64 = 10;

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Server base URL, e.g. ws://127.0.0.1:8080; without it a server is started in-process on loopback.
    #[arg(long)]
    url: Option<String>,
    /// Voice to ask for [default: the server's default].
    #[arg(long)]
    voice: Option<String>,
    /// Concurrency levels to run, one after another.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 4, 16, 64])]
    sessions: Vec<usize>,
    /// Seconds each level runs (sessions finish their utterance in progress, then stop).
    #[arg(long, default_value_t = 20)]
    duration_seconds: u64,
    /// Seconds at the start of each level whose utterances are not counted (sessions ramping up).
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    /// Every Nth utterance of a session is interrupted with STOP (0: never).
    #[arg(long, default_value_t = 4)]
    barge_in_every: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Configuration file for the in-process server.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Engine threads for the in-process server.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, Default)]
struct Samples {
    first_audio_ms: Vec<f64>,
    interval_ms: Vec<f64>,
    late_frames: u64,
    frames: u64,
    barge_in_ms: Vec<f64>,
    frames_after_stop: Vec<f64>,
    delivery_rtf: Vec<f64>,
    underruns: u64,
    utterances: u64,
    errors: u64,
    audio_seconds: f64,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.first_audio_ms.extend(other.first_audio_ms);
        self.interval_ms.extend(other.interval_ms);
        self.late_frames += other.late_frames;
        self.frames += other.frames;
        self.barge_in_ms.extend(other.barge_in_ms);
        self.frames_after_stop.extend(other.frames_after_stop);
        self.delivery_rtf.extend(other.delivery_rtf);
        self.underruns += other.underruns;
        self.utterances += other.utterances;
        self.errors += other.errors;
        self.audio_seconds += other.audio_seconds;
    }
}

#[derive(Debug, Serialize)]
struct LevelReport {
    sessions: usize,
    utterances: u64,
    first_audio_ms: Percentiles,
    frame_interval_ms: Percentiles,
    late_frames: u64,
    frames: u64,
    barge_in_ms: Percentiles,
    max_frames_after_stop: Option<f64>,
    barge_ins: usize,
    delivery_rtf_p50: Option<f64>,
    underruns: u64,
    errors: u64,
    audio_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    n: usize,
}

impl Percentiles {
    fn of(values: &[f64]) -> Self {
        Self {
            p50: percentile(values, 50.0),
            p95: percentile(values, 95.0),
            p99: percentile(values, 99.0),
            n: values.len(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    url: String,
    voice: Option<String>,
    duration_seconds: u64,
    levels: Vec<LevelReport>,
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(bench(args))
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let (base, _server) = match &args.url {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            let (url, server) = start_in_process(&args).await?;
            (url, Some(server))
        }
    };
    let mut url = format!("{base}/v1/stream");
    if let Some(voice) = &args.voice {
        url.push_str(&format!("?voice={voice}"));
    }
    let machine = machine_description();
    eprintln!("ttsd bench against {url} on {machine}");
    println!(
        "{:>4} | {:>5} | first audio ms p50/p95/p99 | interval ms p50/p99 | late | barge-in ms p50/p95 | after STOP | underruns | errors",
        "N", "utts"
    );
    let mut levels = Vec::new();
    for &sessions in &args.sessions {
        let samples = run_level(&url, sessions, &args).await;
        let report = summarise(sessions, samples);
        print_level(&report);
        levels.push(report);
    }
    let report = Report {
        machine,
        url,
        voice: args.voice.clone(),
        duration_seconds: args.duration_seconds,
        levels,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("Wrote {}", path.display());
    }
    Ok(())
}

async fn start_in_process(args: &BenchArgs) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(threads) = args.threads {
        config.engine.threads = threads;
    }
    config.gateway.max_sessions = config
        .gateway
        .max_sessions
        .max(args.sessions.iter().copied().max().unwrap_or(1));
    let voice = args.voice.clone().unwrap_or(config.server.default_voice.clone());
    config.server.default_voice = voice.clone();
    let engine_config = config.clone();
    let (catalog, pool) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (catalog, pool) = crate::serve::start_pool(&engine_config, engine_config.engine.residency())?;
        crate::serve::warm(&pool, catalog.get(&voice)?)?;
        Ok((catalog, pool))
    })
    .await??;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let mut registry = tts_telemetry::prometheus_client::registry::Registry::default();
    let metrics = std::sync::Arc::new(tts_gateway::GatewayMetrics::register(&mut registry, config.slo));
    let gateway = tts_gateway::Gateway::new(
        config.gateway.clone(),
        catalog,
        pool,
        &config.server.default_voice,
        rx,
        metrics,
        tts_gateway::ApiAuth::default(),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _keep_open = _tx;
        let _ = tts_gateway::run(listener, gateway, std::future::pending()).await;
    });
    Ok((format!("ws://{addr}"), handle))
}

async fn run_level(url: &str, sessions: usize, args: &BenchArgs) -> Samples {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration_seconds);
    let count_from = start + Duration::from_secs(args.warmup_seconds);
    let mut tasks = Vec::with_capacity(sessions);
    for index in 0..sessions {
        let url = url.to_owned();
        let every = args.barge_in_every;
        // Stagger the starts over the first second, as real traffic would arrive.
        let delay = Duration::from_millis((index as u64 * 1000) / sessions.max(1) as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            run_session(&url, index, every, deadline, count_from).await
        }));
    }
    let mut total = Samples::default();
    for task in tasks {
        match task.await {
            Ok(samples) => total.merge(samples),
            Err(_) => total.errors += 1,
        }
    }
    total
}

async fn run_session(
    url: &str,
    index: usize,
    barge_in_every: u64,
    deadline: Instant,
    count_from: Instant,
) -> Samples {
    let mut samples = Samples::default();
    let Ok(mut client) = StreamClient::connect(url).await else {
        samples.errors += 1;
        return samples;
    };
    let wait = Duration::from_secs(30);
    match client.next(wait).await {
        Ok(received) if matches!(received.event, Event::SessionStart { .. }) => {}
        _ => {
            samples.errors += 1;
            return samples;
        }
    }
    let mut utterance = 0u64;
    while Instant::now() < deadline {
        let text = TEXTS[(index + utterance as usize) % TEXTS.len()];
        let barge_in = barge_in_every > 0 && utterance % barge_in_every == barge_in_every - 1;
        utterance += 1;
        let Ok(sent_at) = client.send_text(text, true).await else {
            samples.errors += 1;
            break;
        };
        let counted = sent_at >= count_from;
        // When the audio received so far for this utterance has finished playing.
        let mut buffer_end: Option<Instant> = None;
        let mut previous: Option<Instant> = None;
        let mut frames = 0u64;
        let mut stop_at: Option<Instant> = None;
        let mut after_stop = 0u64;
        let mut local = Samples::default();
        loop {
            let Ok(received) = client.next(wait).await else {
                samples.errors += 1;
                return samples;
            };
            match received.event {
                Event::Audio { .. } => {
                    let at = received.at;
                    if frames == 0 {
                        local.first_audio_ms.push(ms(at - sent_at));
                    } else if let Some(previous) = previous {
                        local.interval_ms.push(ms(at - previous));
                    }
                    // A listener plays frames back to back from the first one on: a frame arriving after
                    // the audio before it has finished playing is late (the listener heard a gap).
                    match buffer_end {
                        Some(end) if at > end && frames > 0 => {
                            local.late_frames += 1;
                            buffer_end = Some(at + FRAME);
                        }
                        Some(end) if at <= end => buffer_end = Some(end + FRAME),
                        _ => buffer_end = Some(at + FRAME),
                    }
                    frames += 1;
                    local.frames += 1;
                    previous = Some(at);
                    if stop_at.is_some() {
                        after_stop += 1;
                    } else if barge_in && frames == STOP_AFTER_FRAMES {
                        match client.send_control("STOP").await {
                            Ok(at) => stop_at = Some(at),
                            Err(_) => {
                                samples.errors += 1;
                                return samples;
                            }
                        }
                    }
                }
                Event::UtteranceEnd {
                    reason, underruns, ..
                } => {
                    local.underruns += underruns;
                    local.utterances += 1;
                    let audio = frames as f64 * 0.02;
                    local.audio_seconds += audio;
                    if let Some(stop_at) = stop_at {
                        local.barge_in_ms.push(ms(received.at - stop_at));
                        local.frames_after_stop.push(after_stop as f64);
                    } else if reason == "completed" && audio > 0.0 {
                        local
                            .delivery_rtf
                            .push((received.at - sent_at).as_secs_f64() / audio);
                    }
                    break;
                }
                Event::Error { .. } => local.errors += 1,
                Event::SessionEnd { .. } | Event::Closed => {
                    samples.errors += 1;
                    return samples;
                }
                Event::SessionStart { .. } | Event::Other(_) => {}
            }
        }
        if counted {
            samples.merge(local);
        }
    }
    client.close().await;
    samples
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn summarise(sessions: usize, samples: Samples) -> LevelReport {
    LevelReport {
        sessions,
        utterances: samples.utterances,
        first_audio_ms: Percentiles::of(&samples.first_audio_ms),
        frame_interval_ms: Percentiles::of(&samples.interval_ms),
        late_frames: samples.late_frames,
        frames: samples.frames,
        barge_in_ms: Percentiles::of(&samples.barge_in_ms),
        max_frames_after_stop: samples.frames_after_stop.iter().copied().reduce(f64::max),
        barge_ins: samples.barge_in_ms.len(),
        delivery_rtf_p50: percentile(&samples.delivery_rtf, 50.0),
        underruns: samples.underruns,
        errors: samples.errors,
        audio_seconds: samples.audio_seconds,
    }
}

fn fmt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn print_level(r: &LevelReport) {
    println!(
        "{:>4} | {:>5} | {:>8} {:>8} {:>8} | {:>8} {:>8} | {:>4} | {:>8} {:>8} | {:>10} | {:>9} | {:>6}",
        r.sessions,
        r.utterances,
        fmt(r.first_audio_ms.p50),
        fmt(r.first_audio_ms.p95),
        fmt(r.first_audio_ms.p99),
        fmt(r.frame_interval_ms.p50),
        fmt(r.frame_interval_ms.p99),
        r.late_frames,
        fmt(r.barge_in_ms.p50),
        fmt(r.barge_in_ms.p95),
        fmt(r.max_frames_after_stop),
        r.underruns,
        r.errors
    );
}

/// CPU model and core count, so figures carry the machine they came from.
fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}
