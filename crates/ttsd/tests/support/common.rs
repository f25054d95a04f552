//! Shared helpers for the end-to-end tests: start the real binary, run utterances, read WAV files.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use tokio::time::Instant;
use tts_test_support::{Event, Received, ServerProcess, StreamClient};

pub const ESPEAK: &str = "espeak-en-us";
pub const PIPER: &str = "en_US-joe-medium";
pub const WAIT: Duration = Duration::from_secs(20);
pub const MEDIUM_TEXT: &str = "Please hold while I check the schedule, it will only take a moment.";
pub const LONG_TEXT: &str = "This is a longer piece of text for testing. It has several sentences, and some \
    clauses too. The server should pace it in real time, twenty milliseconds per frame. Nothing should be lost \
    or repeated along the way.";

/// The repository root, where `.cache/` holds the Piper voice and ONNX Runtime.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn start(extra: &[&str]) -> ServerProcess {
    ServerProcess::start(env!("CARGO_BIN_EXE_ttsd"), &root(), extra).expect("ttsd serve starts")
}

/// A Piper server with sampling noise off, so the same text always gives the same bytes: audio can be
/// compared exactly across sessions and runs (espeak-ng's pitch flutter carries over between calls).
pub fn start_repeatable_piper() -> ServerProcess {
    let config = temp_path("repeatable-piper.toml");
    std::fs::write(&config, "[engine]\npiper_noise_scale = 0.0\n").unwrap();
    start(&["--voice", PIPER, "--config", config.to_str().unwrap()])
}

pub fn start_espeak(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--voice", ESPEAK];
    args.extend_from_slice(extra);
    start(&args)
}

/// Connects and reads `session_start`.
pub async fn connect(server: &ServerProcess, path: &str) -> (StreamClient, Event) {
    let mut client = StreamClient::connect(&server.url(path)).await.expect("connects");
    let start = client.next(WAIT).await.expect("session_start arrives").event;
    assert!(
        matches!(start, Event::SessionStart { .. }),
        "first message is session_start: {start:?}"
    );
    (client, start)
}

/// One frame as the client saw it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub sequence: u64,
    pub pcm: Vec<u8>,
    pub at: Instant,
}

/// Everything received until (and including) the next `utterance_end`, or an error/close.
#[derive(Debug, Default)]
pub struct Utterance {
    pub frames: Vec<Frame>,
    pub end: Option<Event>,
    pub others: Vec<Received>,
}

impl Utterance {
    pub fn samples(&self) -> Vec<i16> {
        self.frames
            .iter()
            .flat_map(|f| f.pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])))
            .collect()
    }

    pub fn seconds(&self) -> f64 {
        self.frames.len() as f64 * 0.02
    }
}

pub async fn read_utterance(client: &mut StreamClient) -> Utterance {
    let mut utterance = Utterance::default();
    loop {
        let received = client.next(WAIT).await.expect("server keeps talking");
        match received.event {
            Event::Audio { sequence, pcm } => utterance.frames.push(Frame {
                sequence,
                pcm,
                at: received.at,
            }),
            Event::UtteranceEnd { .. } | Event::Closed | Event::SessionEnd { .. } => {
                utterance.end = Some(received.event);
                return utterance;
            }
            _ => utterance.others.push(received),
        }
    }
}

/// Asserts the universal frame properties: 1920 bytes each, sequences contiguous from `first_sequence`.
pub fn assert_frames_well_formed(frames: &[Frame], first_sequence: u64) {
    for (index, frame) in frames.iter().enumerate() {
        assert_eq!(
            frame.pcm.len(),
            1920,
            "frame {} is {} bytes",
            frame.sequence,
            frame.pcm.len()
        );
        assert_eq!(
            frame.sequence,
            first_sequence + index as u64,
            "sequence gap at frame index {index}"
        );
    }
}

/// Seconds of audio in a 16-bit mono WAV file.
pub fn wav_seconds(path: &std::path::Path) -> f64 {
    let bytes = std::fs::read(path).expect("wav exists");
    assert_eq!(&bytes[..4], b"RIFF");
    let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let data = u32::from_le_bytes(bytes[40..44].try_into().unwrap());
    f64::from(data) / 2.0 / f64::from(rate)
}

pub fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ttsd-test-{}-{name}", std::process::id()))
}

/// Rows of the metric catalogue tables in docs/telemetry.md: (name, status column).
pub fn catalogue_rows() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("docs/telemetry.md")).unwrap();
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let status = cells
                .last()
                .filter(|c| !c.is_empty())
                .or(cells.get(cells.len().saturating_sub(2)))?;
            (name.starts_with("tts_") || name.starts_with("process_"))
                .then(|| (name.to_owned(), (*status).to_owned()))
        })
        .collect()
}
