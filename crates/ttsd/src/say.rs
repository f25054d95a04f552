//! `ttsd say`: synthesise text (or a text file) to a 48 kHz mono WAV file, chunk by chunk, with the same
//! segmentation, engines and resampler as the server.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use tts_core::audio::{OUTPUT_SAMPLE_RATE, StreamResampler, write_wav};
use tts_core::engine::{Flow, init_onnx_runtime, load};
use tts_core::text::{Segmenter, SegmenterConfig};
use tts_core::voices::{EngineKind, VoiceCatalog};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub(crate) struct SayArgs {
    /// Text to speak (or use --file).
    text: Option<String>,
    /// Read the text from this file; shows progress on stderr.
    #[arg(long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// Voice id (see `ttsd voices`) [default: the configured default voice].
    #[arg(long)]
    voice: Option<String>,
    /// Output WAV file.
    #[arg(short, long)]
    output: PathBuf,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory of Piper voices.
    #[arg(long)]
    voices_dir: Option<PathBuf>,
}

pub(crate) fn run(args: SayArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(dir) = args.voices_dir {
        config.engine.voices_dir = dir;
    }
    if std::env::var_os("TTSD_LOGGING__FILTER").is_none() {
        // A command-line tool reports through its own output; only problems are logged.
        config.logging.filter = "warn".into();
    }
    tts_telemetry::init_logging(config.logging.format, &config.logging.filter)?;
    let (text, progress) = match (&args.text, &args.file) {
        (Some(text), None) => (text.clone(), false),
        (None, Some(file)) => (
            std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?,
            true,
        ),
        _ => bail!("give the text as an argument or with --file"),
    };
    if text.trim().is_empty() {
        bail!("the text is empty");
    }
    let catalog = VoiceCatalog::discover(&config.engine.voices_dir)?;
    let voice_id = args.voice.unwrap_or(config.server.default_voice.clone());
    let voice = catalog.get(&voice_id)?.clone();
    if voice.engine == EngineKind::Piper {
        init_onnx_runtime(&config.engine.onnx_runtime_path)?;
    }
    let mut engine = load(&voice, &config.engine.settings())?;
    let mut resampler = StreamResampler::new(engine.sample_rate())?;
    let mut segmenter = Segmenter::new(SegmenterConfig {
        first_chunk_min_chars: config.gateway.first_chunk_min_chars,
        first_chunk_max_words: config.gateway.first_chunk_max_words,
        max_chunk_chars: config.gateway.max_chunk_chars,
    });
    let chunks = segmenter.push(&text, true);
    let mut samples = Vec::new();
    let started = std::time::Instant::now();
    for (index, chunk) in chunks.iter().enumerate() {
        let mut failed = None;
        engine.synthesize(
            &chunk.text,
            &mut |pcm| match resampler.process(pcm, &mut samples) {
                Ok(()) => Flow::Continue,
                Err(e) => {
                    failed = Some(e);
                    Flow::Stop
                }
            },
        )?;
        if let Some(error) = failed {
            return Err(error.into());
        }
        resampler.finish(&mut samples)?;
        if progress {
            draw_progress(index + 1, chunks.len());
        }
    }
    if progress {
        eprintln!();
    }
    let file = std::fs::File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    write_wav(std::io::BufWriter::new(file), &samples, OUTPUT_SAMPLE_RATE)?;
    let seconds = samples.len() as f64 / f64::from(OUTPUT_SAMPLE_RATE);
    eprintln!(
        "Wrote {} ({seconds:.2} s of audio, voice {}, {:.2}x real time).",
        args.output.display(),
        voice.id,
        seconds / started.elapsed().as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn draw_progress(done: usize, total: usize) {
    const WIDTH: usize = 40;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r[{}{}] {done}/{total} chunks",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled)
    );
    let _ = err.flush();
}
