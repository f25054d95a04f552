//! The interfaces users already have clients for, driven by those clients: the official `openai` Python
//! package against `POST /v1/audio/speech`, and the `wyoming` package against `--wyoming-listen`, over
//! real sockets to the real binary. The Python clients live in `.cache/test-venv`
//! (`scripts/install-deps.sh test`); the scripts they run are in `tests/py/`.
#![allow(clippy::unwrap_used)]

#[path = "support/common.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tts_test_support::{Event, Scrape, ServerProcess, http_get};

const SHORT: &str = "The weather today is mild, with a light breeze from the west.";
const STREAMED: &str = "Good evening. The kitchen lights are now off, and the front door is locked. \
    The alarm will be armed in five minutes. Sleep well.";

/// The test venv's Python; its absence fails the test with what to run (nothing is skipped silently).
fn python() -> PathBuf {
    let python = root().join(".cache/test-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh test to create the test venv with the openai and \
         wyoming clients",
        python.display()
    );
    python
}

/// Runs `tests/py/<script>` with `args` and parses the JSON it prints.
fn run_py(script: &str, args: &[&str]) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let output = Command::new(python()).arg(&path).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

async fn run_py_async(script: &'static str, args: Vec<String>) -> Value {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_py(script, &args)
    })
    .await
    .unwrap()
}

fn http_base(server: &ServerProcess) -> String {
    format!("{}/v1", server.ws_base.replacen("ws://", "http://", 1))
}

fn wyoming_host_port(server: &ServerProcess) -> (String, String) {
    let (host, port) = server.wyoming_addr.rsplit_once(':').unwrap();
    (host.to_owned(), port.to_owned())
}

fn scrape(server: &ServerProcess) -> Scrape {
    Scrape::parse(&http_get(&server.admin_base, "/metrics").unwrap().body).unwrap()
}

fn start_with(config: &str, extra: &[&str]) -> ServerProcess {
    let path = temp_path(&format!(
        "apis-{}.toml",
        extra.join("-").replace(['/', ':', '.'], "_")
    ));
    std::fs::write(&path, config).unwrap();
    let mut args = vec![
        "--config",
        path.to_str().unwrap(),
        "--wyoming-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    start(&args)
}

/// Log lines (JSON) collected so far that carry `message` and `request_id`, waiting up to `WAIT`.
fn wait_for_log(server: &ServerProcess, seen: &mut Vec<String>, message: &str, request_id: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        seen.extend(server.logs());
        let found = seen
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == message && l["request_id"] == request_id);
        if let Some(line) = found {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line {message:?} for {request_id}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 48 kHz samples of `text` as a WebSocket session receives them (frames are padded to 20 ms).
async fn websocket_samples(server: &ServerProcess, text: &str) -> usize {
    let (mut client, _) = connect(server, &format!("/v1/stream?voice={PIPER}")).await;
    client.send_text(text, true).await.unwrap();
    let utterance = read_utterance(&mut client).await;
    assert!(matches!(utterance.end, Some(Event::UtteranceEnd { .. })));
    utterance.samples().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_and_wyoming_clients_get_audio_that_matches_the_text() {
    let server = start_with("[engine]\npiper_noise_scale = 0.0\n", &["--voice", PIPER]);
    let reference = websocket_samples(&server, SHORT).await;
    let got = run_py_async(
        "openai_speech.py",
        vec![http_base(&server), "alloy".into(), SHORT.into(), STREAMED.into()],
    )
    .await;

    // WAV: a streamed header (lengths unknown, as OpenAI's), 24 kHz 16-bit mono, then the same PCM.
    let wav = &got["wav"];
    assert_eq!(
        (&wav["riff"], &wav["wave"], &wav["fmt"], &wav["data"]),
        (
            &Value::from("RIFF"),
            &Value::from("WAVE"),
            &Value::from("fmt "),
            &Value::from("data")
        )
    );
    assert_eq!(
        (wav["tag"].as_u64(), wav["channels"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (wav["rate"].as_u64(), wav["bits"].as_u64()),
        (Some(24_000), Some(16))
    );
    assert_eq!(wav["byte_rate"].as_u64(), Some(48_000));
    assert_eq!(wav["data_size"].as_u64(), Some(u64::from(u32::MAX)));
    let pcm_bytes = got["pcm_bytes"].as_u64().unwrap() as usize;
    assert_eq!(
        wav["payload_bytes"].as_u64().unwrap() as usize,
        pcm_bytes,
        "WAV and PCM carry the same audio"
    );
    // speed: the engine speaks faster or slower (Piper scales phoneme durations), not a resampled copy.
    let ratio = |key: &str| got[key].as_u64().unwrap() as f64 / pcm_bytes as f64;
    let (fast, slow) = (ratio("pcm_fast_bytes"), ratio("pcm_slow_bytes"));
    assert!(
        (0.35..0.65).contains(&fast),
        "speed 2.0 gives {fast:.2} of the audio"
    );
    assert!(
        (1.6..2.4).contains(&slow),
        "speed 0.5 gives {slow:.2} of the audio"
    );

    // Length: the same speech as the WebSocket session's, at 24 kHz (and 16 kHz with sample_rate); the
    // session pads its last frame to 20 ms (960 samples).
    let at_48k = |samples: usize, rate: usize| samples * 48_000 / rate;
    let pcm24 = at_48k(pcm_bytes / 2, 24_000);
    assert!(
        pcm24 <= reference && reference - pcm24 < 960 + 8,
        "pcm {pcm24} vs websocket {reference}"
    );
    let pcm16 = at_48k(got["pcm16k_bytes"].as_u64().unwrap() as usize / 2, 16_000);
    assert!(
        pcm16 <= reference && reference - pcm16 < 960 + 8,
        "16 kHz pcm {pcm16} vs {reference}"
    );
    let seconds = reference as f64 / 48_000.0;
    assert!((2.0..8.0).contains(&seconds), "{SHORT:?} spoken in {seconds} s");

    // Streamed: several pieces, and by the server's own clock the first body bytes left before the
    // synthesis of the utterance had finished.
    let stream = &got["stream"];
    assert_eq!(stream["content_type"], "audio/pcm");
    assert!(stream["pieces"].as_u64().unwrap() >= 2, "{stream}");
    let request_id = stream["request_id"].as_str().unwrap();
    let mut logs = Vec::new();
    let finished = wait_for_log(&server, &mut logs, "Speech request finished.", request_id);
    let first_byte = finished["first_byte_ms"].as_f64().unwrap();
    let synthesis_done = finished["synthesis_done_ms"].as_f64().unwrap();
    assert!(finished["chunks"].as_u64().unwrap() >= 2, "{finished}");
    assert!(
        first_byte < synthesis_done,
        "first byte at {first_byte} ms, synthesis done at {synthesis_done} ms"
    );

    // SSE: the same audio in speech.audio.delta events, then speech.audio.done with the same timings.
    let sse = &got["sse"];
    assert!(sse["deltas"].as_u64().unwrap() >= 2, "{sse}");
    assert_eq!(
        sse["bytes"], stream["bytes"],
        "SSE and the raw stream carry the same audio"
    );
    let done = &sse["done"];
    assert_eq!(done["type"], "speech.audio.done");
    assert!(done["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(
        done["ttsd"]["first_byte_ms"].as_f64().unwrap() < done["ttsd"]["synthesis_done_ms"].as_f64().unwrap()
    );

    // Wyoming: info lists the voices; audio at the voice's native rate, 16-bit mono.
    let (host, port) = wyoming_host_port(&server);
    let wy = run_py_async("wyoming_client.py", vec![host, port, PIPER.into(), SHORT.into()]).await;
    assert_eq!(wy["info"]["streaming"], true);
    let voices = wy["info"]["voices"].as_array().unwrap();
    let joe = voices
        .iter()
        .find(|v| v["name"] == PIPER)
        .expect("info lists the Piper voice");
    assert_eq!(joe["languages"], serde_json::json!(["en_US"]));
    assert!(voices.iter().any(|v| v["name"] == ESPEAK));
    let synth = &wy["synthesize"];
    assert_eq!(
        synth["order"],
        serde_json::json!(["audio-start", "audio-chunk", "audio-stop"])
    );
    assert_eq!(synth["formats"], serde_json::json!([[22_050, 2, 1]]));
    let wy_samples = at_48k(synth["audio_bytes"].as_u64().unwrap() as usize / 2, 22_050);
    let gap = reference as i64 - wy_samples as i64;
    assert!(
        (-8..960 + 8).contains(&gap),
        "wyoming {wy_samples} vs websocket {reference}"
    );
    // Streaming: audio per piece of text as it completes, then synthesize-stopped.
    let streaming = &wy["streaming"];
    let order: Vec<&str> = streaming["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(order.first(), Some(&"audio-start"), "{order:?}");
    assert_eq!(
        &order[order.len() - 2..],
        ["audio-stop", "synthesize-stopped"],
        "{order:?}"
    );
    let streamed = streaming["audio_bytes"].as_u64().unwrap() as f64;
    let whole = synth["audio_bytes"].as_u64().unwrap() as f64;
    assert!(
        (streamed / whole - 1.0).abs() < 0.25,
        "streamed {streamed} bytes vs {whole}"
    );
    assert_eq!(wy["unknown_voice"]["type"], "error");
    assert_eq!(wy["unknown_voice"]["data"]["code"], "unknown_voice");

    // The same metrics as WebSocket sessions, by transport.
    let scrape = scrape(&server);
    let first_audio = |transport| scrape.sum("tts_first_audio_seconds_count", &[("transport", transport)]);
    assert_eq!(first_audio("ws"), 1.0);
    assert_eq!(
        first_audio("http"),
        7.0,
        "wav, pcm, 16 kHz pcm, speed 2 and 0.5, streamed, sse"
    );
    assert_eq!(first_audio("wyoming"), 2.0);
    let completed = |transport| {
        scrape.sum(
            "tts_api_requests_total",
            &[("transport", transport), ("outcome", "completed")],
        )
    };
    assert_eq!((completed("http"), completed("wyoming")), (7.0, 2.0));
    assert_eq!(
        scrape.sum(
            "tts_api_requests_total",
            &[("transport", "wyoming"), ("outcome", "bad_request")]
        ),
        1.0
    );
}

/// Interval between consecutive frames, p99, after the lead frames.
fn interval_p99(frames: &[Frame]) -> Duration {
    let mut intervals: Vec<Duration> = frames
        .windows(2)
        .skip(4)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect();
    intervals.sort();
    intervals[(intervals.len() * 99 / 100).min(intervals.len() - 1)]
}

/// A WebSocket session speaking `LONG_TEXT` twice, one frame stream; returns its frames.
async fn bystander(mut client: tts_test_support::StreamClient) -> Vec<Frame> {
    client
        .send_text(&format!("{LONG_TEXT} {LONG_TEXT}"), true)
        .await
        .unwrap();
    let utterance = read_utterance(&mut client).await;
    let Some(Event::UtteranceEnd { reason, .. }) = &utterance.end else {
        panic!("{:?}", utterance.end)
    };
    assert_eq!(reason, "completed");
    utterance.frames
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_documented_error_and_costs_a_bystander_nothing() {
    let config = "[gateway]\nslow_client_timeout_seconds = 2\nmax_text_chars = 2000\n";
    let server = start_with(config, &["--voice", ESPEAK]);
    let (host, port) = wyoming_host_port(&server);

    // Undisturbed pacing first.
    let (client, start) = connect(&server, "/v1/stream").await;
    let Event::SessionStart { .. } = start else {
        unreachable!()
    };
    let calm = bystander(client).await;
    let (client, _) = connect(&server, "/v1/stream").await;
    let watched = tokio::spawn(bystander(client));

    let base = http_base(&server);
    let long: String = std::iter::repeat_n(LONG_TEXT, 8).collect::<Vec<_>>().join(" ");
    let errors = run_py_async(
        "openai_errors.py",
        vec![base.clone(), ESPEAK.into(), "2000".into()],
    );
    let disconnect = run_py_async("openai_disconnect.py", vec![base, ESPEAK.into(), long]);
    let lying = run_py_async("wyoming_lying.py", vec![host, port]);
    let (errors, disconnect, lying) = tokio::join!(errors, disconnect, lying);
    let busy = watched.await.unwrap();

    // Each bad request: its status, OpenAI's error shape, and the field it names.
    let expect = |case: &str, status: u64, param: Option<&str>, code: &str| {
        let got = &errors[case];
        assert_eq!(got["status"].as_u64(), Some(status), "{case}: {got}");
        let error = &got["body"]["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: {got}"
        );
        assert!(error["type"].is_string(), "{case}: {got}");
        assert_eq!(error["param"].as_str(), param, "{case}: {got}");
        assert_eq!(error["code"].as_str(), Some(code), "{case}: {got}");
        error["message"].as_str().unwrap().to_owned()
    };
    expect("empty_input", 400, Some("input"), "empty_input");
    expect("oversize_input", 413, Some("input"), "input_too_long");
    assert!(expect("unknown_voice", 400, Some("voice"), "unknown_voice").contains("no-such-voice"));
    let format = expect(
        "unknown_format",
        400,
        Some("response_format"),
        "unsupported_response_format",
    );
    assert!(format.contains("mp3") && format.contains("wav, pcm"), "{format}");
    expect("speed_out_of_range", 400, Some("speed"), "invalid_value");
    expect("speed_too_slow", 400, Some("speed"), "invalid_value");
    expect("unknown_model", 400, Some("model"), "model_not_found");
    expect("wrong_content_type", 415, None, "unsupported_media_type");
    expect("malformed_json", 400, None, "invalid_json");
    expect("missing_input", 400, None, "invalid_json");

    // The client that hung up: its synthesis was cancelled with text still to go, and nothing more
    // reached an engine for it afterwards.
    let request_id = disconnect["request_id"].as_str().unwrap();
    assert!(disconnect["bytes"].as_u64().unwrap() > 0);
    let mut logs = Vec::new();
    let cancelled = wait_for_log(
        &server,
        &mut logs,
        "Client went away; synthesis cancelled.",
        request_id,
    );
    assert!(cancelled["chunks_left"].as_u64().unwrap() > 0, "{cancelled}");
    let before = scrape(&server).sum("tts_characters_synthesized_total", &[("engine", "espeak")]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let scrape_after = scrape(&server);
    assert_eq!(
        scrape_after.sum("tts_characters_synthesized_total", &[("engine", "espeak")]),
        before
    );
    assert_eq!(
        scrape_after.sum(
            "tts_api_requests_total",
            &[("transport", "http"), ("outcome", "cancelled")]
        ),
        1.0
    );

    // Wyoming events that lie about their framing: an error event, then the connection closes.
    for case in [
        "oversize_payload_length",
        "short_payload",
        "garbage_header",
        "oversize_header",
    ] {
        let got = &lying[case];
        assert_eq!(got["type"], "error", "{case}: {got}");
        assert_eq!(got["data"]["code"], "invalid_event", "{case}: {got}");
        assert_eq!(got["closed"], true, "{case}: {got}");
    }
    assert!(
        lying["short_payload"]["data"]["text"]
            .as_str()
            .unwrap()
            .contains("did not arrive")
    );
    assert_eq!(
        scrape_after.sum(
            "tts_api_requests_total",
            &[("transport", "wyoming"), ("outcome", "too_long")]
        ),
        2.0
    );

    // The bystander: every frame, in order, paced as when nothing else happened.
    assert_frames_well_formed(&busy, busy[0].sequence);
    // espeak-ng's pitch flutter carries over between calls, so the same text is about, not exactly, as long.
    let ratio = busy.len() as f64 / calm.len() as f64;
    assert!(
        (0.9..1.1).contains(&ratio),
        "{} frames vs {} undisturbed",
        busy.len(),
        calm.len()
    );
    let (calm_p99, busy_p99) = (interval_p99(&calm), interval_p99(&busy));
    let bound = (calm_p99 * 2).max(calm_p99 + Duration::from_millis(50));
    assert!(
        busy_p99 <= bound,
        "interval p99 {busy_p99:?} with bad clients vs {calm_p99:?} without"
    );
}
