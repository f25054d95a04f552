//! The `ttsd` binary: a realtime streaming text-to-speech server.
//!
//! Subcommands: `serve` (the WebSocket API and the admin server), `worker` (synthesis for gateways over
//! gRPC), `say` (text to a WAV file), `voices`
//! (what the server can speak with), `bench` (a load generator that measures from the client's side) and
//! `rules` (the Prometheus rules rendered from the `[slo]` configuration).
//! This crate only wires the library crates together: configuration, logging, signals and the CLI.

mod alerts;
mod bench;
mod config;
mod rules;
mod say;
mod serve;
mod tls;
mod warm;
mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// jemalloc, so `/debug/pprof/heap` can answer: it samples allocations with their stacks.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol before `main`: heap profiling is armed (`prof:true`) but
/// not sampling (`prof_active:false`, so it costs nothing) until profiling is installed with
/// `memory = true`; then one sample per 512 KiB allocated on average (`lg_prof_sample:19`). Memory freed
/// after a burst of synthesis goes back to the system within a few seconds, even when the server then
/// sits idle: a background thread purges (`background_thread:true`), dirty pages are kept 5 s
/// (`dirty_decay_ms:5000`; jemalloc's default is 10 s and purges only when something allocates) and not
/// kept lazily at all (`muzzy_decay_ms:0`). ONNX Runtime's tensors (its arena is off) come from here, and
/// the decoder's are 10-20 MB each: large allocations stay in the normal arenas
/// (`oversize_threshold:0`) rather than a dedicated one that purges them at once, so steady synthesis
/// reuses pages instead of faulting them in and zeroing them for every window. Measured
/// (docs/performance.md): RSS after two 16-session Piper runs 336 MB with jemalloc's defaults, 273-288 MB
/// with these; CPU per second of audio sent at 20-22 sessions 0.090-0.093 s with a 1 s decay and the
/// dedicated arena, 0.086-0.087 s with these. Its memory is backed by transparent huge pages where the
/// kernel allows them (`thp:always,metadata_thp:always`; with the kernel's `madvise` mode only memory
/// that asks gets them): fewer TLB misses while the decoder streams its weights and tensors, about 2 %
/// less CPU per second of audio for about 30 MB more resident, which a Piper voice's shared weights pay
/// for. `MALLOC_CONF` in the environment overrides any of them (`thp:default` turns huge pages off).
// `export_name` is unsafe in edition 2024: the symbol could clash with another definition.
// SAFETY: nothing else in this binary defines `malloc_conf`, and jemalloc only reads it, as a
// `const char *` to a NUL-terminated string. A `&u8` is exactly one such pointer (a `&[u8]` would also
// carry a length), and the string it points into is 'static.
#[allow(unsafe_code)]
#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: &u8 =
    &b"prof:true,prof_active:false,lg_prof_sample:19,background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0,oversize_threshold:0,thp:always,metadata_thp:always\0"[0];

#[derive(Debug, Parser)]
#[command(name = "ttsd", version, about = "Realtime streaming text-to-speech server")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Serve the WebSocket API and the admin server.
    Serve(serve::ServeArgs),
    /// Serve synthesis to gateways over gRPC (`tts.v1.Worker`), optionally registered in Redis.
    Worker(worker::WorkerArgs),
    /// Synthesise text to a 48 kHz WAV file.
    Say(say::SayArgs),
    /// List the voices this server can speak with.
    Voices(VoicesArgs),
    /// Open concurrent sessions against a server and report latency and pacing from the client's side.
    Bench(bench::BenchArgs),
    /// Render the Prometheus SLO and alerting rules from the `[slo]` configuration (or check them).
    Rules(rules::RulesArgs),
}

#[derive(Debug, clap::Args)]
struct VoicesArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of Piper voices.
    #[arg(long)]
    voices_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Serve(args) => serve::run(args),
        Commands::Worker(args) => worker::run(args),
        Commands::Say(args) => say::run(args),
        Commands::Voices(args) => list_voices(args),
        Commands::Bench(args) => bench::run(args),
        Commands::Rules(args) => rules::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ttsd: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn list_voices(args: VoicesArgs) -> anyhow::Result<()> {
    let mut config = config::Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(dir) = args.voices_dir {
        config.engine.voices_dir = dir;
    }
    let catalog = tts_core::voices::VoiceCatalog::discover(&config.engine.voices_dir)?;
    if args.json {
        let voices: Vec<_> = catalog.iter().collect();
        println!("{}", serde_json::to_string_pretty(&voices)?);
        return Ok(());
    }
    println!(
        "{:<28} {:<8} {:<12} {:>11}",
        "VOICE", "ENGINE", "LANGUAGE", "SAMPLE_RATE"
    );
    for voice in catalog.iter() {
        println!(
            "{:<28} {:<8} {:<12} {:>11}",
            voice.id, voice.engine, voice.language, voice.sample_rate
        );
    }
    Ok(())
}
