//! One Wyoming connection: a reader task turns bytes into events; this task serves them and forwards
//! synthesis output, one select loop so that a client that goes away cancels its synthesis at once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tts_core::audio::{OUTPUT_SAMPLE_RATE, StreamResampler};
use tts_core::voices::VoiceInfo;

use super::codec::{self, Event, Limits, ReadError};
use crate::GatewayState;
use crate::metrics::{ApiOutcome, Transport};
use crate::session::{OwnedPermit, new_request_id};
use crate::utterance::{FirstAudioClock, Output, Utterance, UtteranceSpec};

/// Samples per `audio-chunk`, as wyoming-piper sends them.
const SAMPLES_PER_CHUNK: usize = 1024;
/// How long a closing connection keeps reading what the client still sends.
const DRAIN: Duration = Duration::from_secs(2);

/// The connection's writer could not write: the client is gone.
struct Gone;

/// A synthesis in progress on the connection.
struct Active {
    utterance: Utterance,
    voice: Arc<VoiceInfo>,
    /// Started by `synthesize-start`: audio is sent per chunk of text, then `synthesize-stopped`.
    streaming: bool,
    /// `synthesize-stop` has been read.
    stopping: bool,
    characters: usize,
    resampler: StreamResampler,
    buffered: Vec<i16>,
    /// Between `audio-start` and `audio-stop`.
    audio_open: bool,
    /// The utterance's first-audio clock, until its first `audio-chunk` is written.
    first_audio: Option<FirstAudioClock>,
    started: Instant,
    _permit: OwnedPermit,
}

struct Connection {
    state: Arc<GatewayState>,
    writer: OwnedWriteHalf,
    request_id: Arc<str>,
    span: tracing::Span,
    active: Option<Active>,
}

pub(super) async fn serve(stream: TcpStream, state: Arc<GatewayState>) {
    let request_id = new_request_id("wyoming");
    let span = tracing::info_span!(
        "wyoming",
        request_id = %request_id,
        "session.id" = %request_id,
        "tts.transport" = "wyoming",
    );
    let (read, writer) = stream.into_split();
    let limits = Limits {
        idle: Duration::from_secs(state.config.idle_timeout_seconds),
        body: Duration::from_secs(state.config.slow_client_timeout_seconds),
        max_length: state.config.max_message_bytes,
    };
    let (events_tx, mut events) = mpsc::channel(16);
    let mut reader = tokio::spawn(async move {
        let mut reader = BufReader::new(read);
        loop {
            match codec::read_event(&mut reader, limits).await {
                Ok(event) => {
                    if events_tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let framing = !matches!(error, ReadError::Closed | ReadError::Idle(_) | ReadError::Io(_));
                    let _ = events_tx.send(Err(error)).await;
                    if framing {
                        // Read what the client still sends until it closes: closing with unread bytes
                        // resets the connection, which can destroy the error event before it is read.
                        let mut sink = tokio::io::sink();
                        let _ = tokio::time::timeout(DRAIN, tokio::io::copy(&mut reader, &mut sink)).await;
                    }
                    return;
                }
            }
        }
    });
    let mut shutdown = state.shutdown.clone();
    let mut connection = Connection {
        state,
        writer,
        request_id,
        span,
        active: None,
    };
    let _ = connection.run(&mut events, &mut shutdown).await;
    // FIN after the last event, then let the reader finish draining (bounded) before the socket closes.
    let _ = tokio::time::timeout(DRAIN, connection.writer.shutdown()).await;
    let _ = tokio::time::timeout(DRAIN, &mut reader).await;
    reader.abort();
    if connection.active.take().is_some() {
        connection
            .state
            .metrics
            .api_request(Transport::Wyoming, ApiOutcome::Cancelled);
    }
}

impl Connection {
    async fn run(
        &mut self,
        events: &mut mpsc::Receiver<Result<Event, ReadError>>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), Gone> {
        loop {
            let has_active = self.active.is_some();
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                event = events.recv() => match event {
                    Some(Ok(event)) => self.on_event(event).await?,
                    Some(Err(error)) => return self.on_read_error(error).await,
                    None => return Ok(()),
                },
                output = next_output(&mut self.active), if has_active => self.on_output(output).await?,
            }
        }
    }

    /// Framing errors end the connection: the stream can no longer be trusted to be in step.
    async fn on_read_error(&mut self, error: ReadError) -> Result<(), Gone> {
        match error {
            ReadError::Closed | ReadError::Idle(_) | ReadError::Io(_) => Ok(()),
            error => {
                let outcome = if error.is_too_long() {
                    ApiOutcome::TooLong
                } else {
                    ApiOutcome::BadRequest
                };
                self.state.metrics.api_request(Transport::Wyoming, outcome);
                tracing::info!(parent: &self.span, error = %error, "Closing a Wyoming connection on a framing error.");
                self.send_error("invalid_event", &error.to_string()).await
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Result<(), Gone> {
        match event.kind.as_str() {
            "describe" => {
                let info = super::info(&self.state);
                self.write("info", Some(&info), None).await
            }
            "ping" => {
                let data = Value::Object(event.data);
                self.write("pong", Some(&data), None).await
            }
            "synthesize" => {
                if self.active.as_ref().is_some_and(|a| a.streaming) {
                    // Sent for servers without streaming, after the streaming events: already served.
                    return Ok(());
                }
                let text = event.data.get("text").and_then(Value::as_str).unwrap_or("");
                self.start(event.data.get("voice"), false, Some(text)).await
            }
            "synthesize-start" => self.start(event.data.get("voice"), true, None).await,
            "synthesize-chunk" => {
                let text = event.data.get("text").and_then(Value::as_str).unwrap_or("");
                self.chunk(text).await
            }
            "synthesize-stop" => match self.active.as_mut().filter(|a| a.streaming && !a.stopping) {
                Some(active) => {
                    active.stopping = true;
                    active.utterance.push_text("", true, Instant::now());
                    Ok(())
                }
                None => {
                    self.refuse("invalid_event", "synthesize-stop without synthesize-start")
                        .await
                }
            },
            other => {
                let message = format!("unsupported event type {other:?}");
                self.send_error("unsupported_event", &message).await
            }
        }
    }

    async fn start(
        &mut self,
        voice: Option<&Value>,
        streaming: bool,
        text: Option<&str>,
    ) -> Result<(), Gone> {
        if self.active.is_some() {
            return self
                .refuse("busy", "a synthesis is already in progress on this connection")
                .await;
        }
        let voice = match super::pick_voice(&self.state, voice) {
            Ok(voice) => voice,
            Err(message) => return self.refuse("unknown_voice", &message).await,
        };
        let characters = match text.map(|t| self.check_text(t)).transpose() {
            Ok(characters) => characters.unwrap_or(0),
            Err((outcome, code, message)) => return self.reject(outcome, code, &message).await,
        };
        let Some(permit) = OwnedPermit::try_new(&self.state) else {
            let message = "the server is at its limit of concurrent sessions and requests";
            return self.reject(ApiOutcome::Overloaded, "overloaded", message).await;
        };
        // The voice's own rate, as wyoming-piper sends; 48 kHz for a rate the resampler does not take.
        let resampler = StreamResampler::between(OUTPUT_SAMPLE_RATE, voice.sample_rate)
            .or_else(|_| StreamResampler::between(OUTPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE));
        let Ok(resampler) = resampler else {
            return self.refuse("internal_error", "cannot build a resampler").await;
        };
        let utterance = Utterance::start(
            &self.state,
            UtteranceSpec {
                voice: voice.clone(),
                transport: Transport::Wyoming,
                request_id: self.request_id.clone(),
                parent: self.span.clone(),
                speed: 1.0,
            },
        );
        if let Some(text) = text {
            utterance.push_text(text, true, Instant::now());
        }
        tracing::info!(parent: &self.span, voice = %voice.id, streaming, characters, "Wyoming synthesis started.");
        self.active = Some(Active {
            utterance,
            voice,
            streaming,
            stopping: false,
            characters,
            resampler,
            buffered: Vec::new(),
            audio_open: false,
            first_audio: None,
            started: Instant::now(),
            _permit: permit,
        });
        Ok(())
    }

    /// A `synthesize` text's length in characters, or why it is refused.
    fn check_text(&self, text: &str) -> Result<usize, (ApiOutcome, &'static str, String)> {
        if text.trim().is_empty() {
            return Err((ApiOutcome::BadRequest, "empty_text", "text is empty".into()));
        }
        let characters = text.chars().count();
        let limit = self.state.config.max_text_chars;
        if characters > limit {
            let message = format!("text is {characters} characters; the limit is {limit}");
            return Err((ApiOutcome::TooLong, "text_too_long", message));
        }
        Ok(characters)
    }

    async fn chunk(&mut self, text: &str) -> Result<(), Gone> {
        let limit = self.state.config.max_pending_chars;
        let Some(active) = self.active.as_mut().filter(|a| a.streaming && !a.stopping) else {
            return self
                .refuse("invalid_event", "synthesize-chunk without synthesize-start")
                .await;
        };
        active.characters += text.chars().count();
        if active.characters > limit {
            self.active = None;
            let message = format!("the streamed text is over {limit} characters");
            return self.reject(ApiOutcome::TooLong, "text_too_long", &message).await;
        }
        active.utterance.push_text(text, false, Instant::now());
        Ok(())
    }

    async fn on_output(&mut self, output: Option<Output>) -> Result<(), Gone> {
        match output {
            Some(Output::Audio { samples, first }) => {
                let Some(active) = self.active.as_mut() else {
                    return Ok(());
                };
                let mut out = Vec::new();
                if active.resampler.process(&samples, &mut out).is_ok() {
                    active.buffered.extend(out);
                }
                if first.is_some() {
                    active.first_audio = first;
                }
                self.flush_audio(false).await
            }
            Some(Output::ChunkEnd) => {
                if let Some(active) = self.active.as_mut() {
                    let mut out = Vec::new();
                    if active.resampler.finish(&mut out).is_ok() {
                        active.buffered.extend(out);
                    }
                }
                self.flush_audio(true).await?;
                if self.active.as_ref().is_some_and(|a| a.streaming && a.audio_open) {
                    self.audio_stop().await?;
                }
                Ok(())
            }
            Some(Output::Done(_)) => self.finish().await,
            Some(Output::Failed(failure)) => {
                self.active = None;
                self.state
                    .metrics
                    .api_request(Transport::Wyoming, ApiOutcome::Failed);
                self.send_error("synthesis_failed", &failure.to_string()).await
            }
            None => {
                self.active = None;
                self.send_error("internal_error", "synthesis ended unexpectedly")
                    .await
            }
        }
    }

    /// Sends whole `audio-chunk`s (and, with `all`, the rest), opening the audio with `audio-start`, and
    /// closes the first-audio clock when the utterance's first chunk is written.
    async fn flush_audio(&mut self, all: bool) -> Result<(), Gone> {
        loop {
            let Some(active) = self.active.as_mut() else {
                return Ok(());
            };
            let take = if active.buffered.len() >= SAMPLES_PER_CHUNK {
                SAMPLES_PER_CHUNK
            } else if all && !active.buffered.is_empty() {
                active.buffered.len()
            } else {
                return Ok(());
            };
            let samples: Vec<i16> = active.buffered.drain(..take).collect();
            let format = audio_format(&active.resampler);
            if !active.audio_open {
                active.audio_open = true;
                self.write("audio-start", Some(&format), None).await?;
            }
            let payload: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
            let at = Instant::now();
            self.write("audio-chunk", Some(&format), Some(&payload)).await?;
            if let Some(active) = self.active.as_mut()
                && let Some(clock) = active.first_audio.take()
            {
                clock.record(&self.state.metrics, &active.voice, Transport::Wyoming, at);
            }
        }
    }

    async fn audio_stop(&mut self) -> Result<(), Gone> {
        if let Some(active) = self.active.as_mut() {
            active.audio_open = false;
        }
        self.write("audio-stop", None, None).await
    }

    /// Every chunk is synthesised: close the audio and, for a stream, say so.
    async fn finish(&mut self) -> Result<(), Gone> {
        self.flush_audio(true).await?;
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let format = audio_format(&active.resampler);
        if active.audio_open {
            self.write("audio-stop", None, None).await?;
        } else if !active.streaming {
            // Nothing to say (punctuation only): still a well-formed, empty audio stream.
            self.write("audio-start", Some(&format), None).await?;
            self.write("audio-stop", None, None).await?;
        }
        if active.streaming {
            self.write("synthesize-stopped", None, None).await?;
        }
        self.state
            .metrics
            .api_request(Transport::Wyoming, ApiOutcome::Completed);
        tracing::info!(
            parent: &self.span,
            characters = active.characters,
            elapsed_ms = active.started.elapsed().as_secs_f64() * 1000.0,
            "Wyoming synthesis finished."
        );
        Ok(())
    }

    /// A request refused as bad input: an `error` event; the connection goes on.
    async fn refuse(&mut self, code: &str, message: &str) -> Result<(), Gone> {
        self.reject(ApiOutcome::BadRequest, code, message).await
    }

    async fn reject(&mut self, outcome: ApiOutcome, code: &str, message: &str) -> Result<(), Gone> {
        self.state.metrics.api_request(Transport::Wyoming, outcome);
        self.send_error(code, message).await
    }

    async fn send_error(&mut self, code: &str, message: &str) -> Result<(), Gone> {
        tracing::info!(parent: &self.span, code, "Sent a Wyoming error event.");
        let data = json!({"text": message, "code": code});
        self.write("error", Some(&data), None).await
    }

    async fn write(&mut self, kind: &str, data: Option<&Value>, payload: Option<&[u8]>) -> Result<(), Gone> {
        let limit = Duration::from_secs(self.state.config.slow_client_timeout_seconds);
        match tokio::time::timeout(limit, codec::write_event(&mut self.writer, kind, data, payload)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }
}

/// `rate`, `width`, `channels` of the audio events: 16-bit mono at the resampler's output rate.
fn audio_format(resampler: &StreamResampler) -> Value {
    json!({"rate": resampler.output_rate(), "width": 2, "channels": 1})
}

/// The active synthesis's next output (only polled while there is one).
async fn next_output(active: &mut Option<Active>) -> Option<Output> {
    match active {
        Some(active) => active.utterance.next().await,
        None => std::future::pending().await,
    }
}
