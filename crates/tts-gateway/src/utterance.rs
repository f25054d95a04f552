//! One utterance for a request/response surface (the OpenAI-compatible HTTP API, the Wyoming server):
//! text in, all at once or in pieces, and 48 kHz PCM out as the engine makes it.
//!
//! It goes through what a WebSocket session's utterance goes through: the session's segmenter settings,
//! one chunk at a time at the [`Synthesizer`](crate::Synthesizer) (so the pool's lanes stay fair across
//! sessions and requests alike), the same cancellation tokens, the same chunk, queue and utterance
//! metrics and spans. What it leaves out is what those clients do themselves: 20 ms framing and pacing.
//!
//! Dropping the [`Utterance`] handle (the client went away) cancels its work at once: the chunk at the
//! pool stops at the engine's next PCM piece, and a queued one is discarded before an engine sees it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tts_core::audio::FRAME_SAMPLES;
use tts_core::engine::EngineError;
use tts_core::pool::{CancelSource, Job, JobEvent, SubmitError};
use tts_core::text::{Chunk, Segmenter};
use tts_core::voices::VoiceInfo;

use crate::GatewayState;
use crate::metrics::{GatewayMetrics, Stage, Transport};
use crate::protocol::UtteranceEndReason;

/// What the utterance is for.
pub(crate) struct UtteranceSpec {
    pub(crate) voice: Arc<VoiceInfo>,
    pub(crate) transport: Transport,
    /// Carried into engine log lines and spans as the session id.
    pub(crate) request_id: Arc<str>,
    /// The request's span; the utterance's span is its child.
    pub(crate) parent: tracing::Span,
    /// Speaking rate, within `tts_core::engine::SPEED_RANGE` (1.0: the voice's own pace).
    pub(crate) speed: f32,
}

/// What the utterance hands back, in order: `Audio` and `ChunkEnd` any number of times, then `Done` or
/// `Failed`.
#[derive(Debug)]
pub(crate) enum Output {
    /// 48 kHz mono samples; the utterance's first piece carries its first-audio clock.
    Audio {
        samples: Vec<i16>,
        first: Option<FirstAudioClock>,
    },
    /// One chunk of text (a clause or sentence) is fully synthesised.
    ChunkEnd,
    /// Every chunk is synthesised; nothing more follows.
    Done(Summary),
    Failed(Failure),
}

/// Why synthesis stopped before the end.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Failure {
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Engine(String),
    #[error("the engine pool is shutting down")]
    ShuttingDown,
}

/// When synthesis of the whole utterance ended, for logs and server-side timings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) finished_at: Instant,
    pub(crate) chunks: usize,
}

/// The first-audio stage boundaries of the utterance's first chunk; the consumer closes the clock when
/// it hands the first audio to its connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FirstAudioClock {
    read_at: Instant,
    submitted: Instant,
    started: Instant,
    pcm: Instant,
}

impl FirstAudioClock {
    /// Records first audio and its four stages, ending at `sent_at`; returns the total.
    pub(crate) fn record(
        self,
        metrics: &GatewayMetrics,
        voice: &VoiceInfo,
        transport: Transport,
        sent_at: Instant,
    ) -> Duration {
        let submitted = self.submitted.max(self.read_at);
        let started = self.started.max(submitted);
        let pcm = self.pcm.max(started);
        let sent_at = sent_at.max(pcm);
        metrics.first_audio(
            None,
            voice,
            transport,
            [
                (Stage::Intake, submitted - self.read_at),
                (Stage::Queue, started - submitted),
                (Stage::Engine, pcm - started),
                (Stage::Delivery, sent_at - pcm),
            ],
        );
        sent_at - self.read_at
    }
}

/// Samples handed out but not yet taken by the consumer: synthesis of the next chunk waits while more
/// than `gateway.max_buffered_frames` worth are waiting, as it does for a WebSocket session.
#[derive(Debug, Default)]
struct Backlog {
    samples: AtomicUsize,
    taken: Notify,
}

struct TextIn {
    text: String,
    is_final: bool,
    read_at: Instant,
}

/// The consumer's handle. Dropping it cancels whatever is still to be synthesised.
pub(crate) struct Utterance {
    text: mpsc::UnboundedSender<TextIn>,
    output: mpsc::UnboundedReceiver<Output>,
    backlog: Arc<Backlog>,
    cancel: CancelSource,
}

impl Utterance {
    /// Starts the utterance's task; text follows through [`push_text`](Self::push_text).
    pub(crate) fn start(state: &Arc<GatewayState>, spec: UtteranceSpec) -> Self {
        let (text_tx, text_rx) = mpsc::unbounded_channel();
        let (output_tx, output_rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        let cancel = CancelSource::new();
        let runner = Runner::new(state.clone(), spec, cancel.clone(), backlog.clone());
        tokio::spawn(runner.run(text_rx, output_tx));
        Self {
            text: text_tx,
            output: output_rx,
            backlog,
            cancel,
        }
    }

    /// Adds text read at `read_at`; `is_final` closes the utterance's text.
    pub(crate) fn push_text(&self, text: &str, is_final: bool, read_at: Instant) {
        let _ = self.text.send(TextIn {
            text: text.to_owned(),
            is_final,
            read_at,
        });
    }

    /// The next output; `None` only if the task ended without `Done` or `Failed` (it panicked).
    pub(crate) async fn next(&mut self) -> Option<Output> {
        let output = self.output.recv().await?;
        if let Output::Audio { samples, .. } = &output {
            self.backlog.samples.fetch_sub(samples.len(), Ordering::AcqRel);
            self.backlog.taken.notify_one();
        }
        Some(output)
    }
}

impl Drop for Utterance {
    fn drop(&mut self) {
        self.cancel.cancel_all();
    }
}

struct EngineMessage {
    first: bool,
    characters: usize,
    event: JobEvent,
}

/// The utterance's task: segments text, keeps one chunk at the synthesizer, forwards its audio.
struct Runner {
    state: Arc<GatewayState>,
    voice: Arc<VoiceInfo>,
    transport: Transport,
    request_id: Arc<str>,
    speed: f32,
    span: tracing::Span,
    cancel: CancelSource,
    backlog: Arc<Backlog>,
    segmenter: Segmenter,
    chunks: std::collections::VecDeque<Chunk>,
    text_complete: bool,
    in_flight: bool,
    chunks_done: usize,
    read_at: Option<Instant>,
    submitted: Option<Instant>,
    started: Option<Instant>,
    first_sent: bool,
    engine_tx: mpsc::UnboundedSender<EngineMessage>,
    engine_rx: mpsc::UnboundedReceiver<EngineMessage>,
}

/// How the task ended, for the utterance metrics.
enum End {
    Done(Summary),
    Failed(Failure),
    Cancelled,
}

impl Runner {
    fn new(
        state: Arc<GatewayState>,
        spec: UtteranceSpec,
        cancel: CancelSource,
        backlog: Arc<Backlog>,
    ) -> Self {
        let segmenter = Segmenter::new(state.config.segmenter());
        let span = tracing::info_span!(
            parent: &spec.parent,
            "utterance",
            "tts.engine" = spec.voice.engine.as_str(),
            "tts.voice" = %spec.voice.id,
            "tts.transport" = spec.transport.as_str(),
            "tts.outcome" = tracing::field::Empty,
        );
        let (engine_tx, engine_rx) = mpsc::unbounded_channel();
        Self {
            state,
            voice: spec.voice,
            transport: spec.transport,
            request_id: spec.request_id,
            speed: spec.speed,
            span,
            cancel,
            backlog,
            segmenter,
            chunks: Default::default(),
            text_complete: false,
            in_flight: false,
            chunks_done: 0,
            read_at: None,
            submitted: None,
            started: None,
            first_sent: false,
            engine_tx,
            engine_rx,
        }
    }

    async fn run(
        mut self,
        mut text_rx: mpsc::UnboundedReceiver<TextIn>,
        output: mpsc::UnboundedSender<Output>,
    ) {
        let started = Instant::now();
        let end = self.serve(&mut text_rx, &output).await;
        self.state.pool.end_session(&self.request_id);
        let metrics = &self.state.metrics;
        let (reason, outcome) = match &end {
            End::Done(_) => (UtteranceEndReason::Completed, "completed"),
            End::Failed(_) => (UtteranceEndReason::Failed, "failed"),
            End::Cancelled => (UtteranceEndReason::Stopped, "cancelled"),
        };
        let synthesis = match &end {
            End::Done(summary) => self.submitted.map(|s| summary.finished_at - s),
            _ => None,
        };
        metrics.utterance_ended(&self.voice, self.transport, reason, synthesis, None, None);
        self.span.record("tts.outcome", outcome);
        match end {
            End::Done(summary) => {
                let _ = output.send(Output::Done(summary));
            }
            End::Failed(failure) => {
                let _ = output.send(Output::Failed(failure));
            }
            End::Cancelled => {
                tracing::info!(
                    parent: &self.span,
                    request_id = %self.request_id,
                    transport = self.transport.as_str(),
                    after_ms = started.elapsed().as_secs_f64() * 1000.0,
                    chunks_done = self.chunks_done,
                    chunks_left = self.chunks.len() + usize::from(self.in_flight),
                    "Client went away; synthesis cancelled."
                );
            }
        }
    }

    async fn serve(
        &mut self,
        text_rx: &mut mpsc::UnboundedReceiver<TextIn>,
        output: &mpsc::UnboundedSender<Output>,
    ) -> End {
        let backlog_limit = self.state.config.max_buffered_frames * FRAME_SAMPLES;
        loop {
            if !self.in_flight
                && self.backlog.samples.load(Ordering::Acquire) < backlog_limit
                && let Err(failure) = self.submit_next()
            {
                return End::Failed(failure);
            }
            if self.text_complete && self.chunks.is_empty() && !self.in_flight {
                return End::Done(Summary {
                    finished_at: Instant::now(),
                    chunks: self.chunks_done,
                });
            }
            tokio::select! {
                biased;
                _ = output.closed() => return self.cancelled(),
                text = text_rx.recv(), if !self.text_complete => match text {
                    Some(text) => self.on_text(text),
                    // The consumer is gone before finishing the text.
                    None => return self.cancelled(),
                },
                Some(message) = self.engine_rx.recv() => {
                    if let Some(end) = self.on_engine(message, output) {
                        return end;
                    }
                }
                _ = self.backlog.taken.notified() => {}
            }
        }
    }

    fn cancelled(&mut self) -> End {
        self.cancel.cancel_all();
        if self.in_flight {
            self.state.metrics.chunk_cancelled(&self.voice);
        }
        End::Cancelled
    }

    fn on_text(&mut self, text: TextIn) {
        let chunks = self.segmenter.push(&text.text, text.is_final);
        if !chunks.is_empty() || text.is_final {
            self.read_at.get_or_insert(text.read_at);
        }
        self.chunks.extend(chunks);
        self.text_complete |= text.is_final;
    }

    fn on_engine(&mut self, message: EngineMessage, output: &mpsc::UnboundedSender<Output>) -> Option<End> {
        let metrics = &self.state.metrics;
        match message.event {
            JobEvent::Started { queue_wait } => {
                metrics.queue_wait(message.first, queue_wait);
                if message.first {
                    self.started.get_or_insert_with(Instant::now);
                }
            }
            JobEvent::Audio(samples) => {
                let first = match (self.first_sent, self.read_at, self.submitted, self.started) {
                    (false, Some(read_at), Some(submitted), Some(started)) => {
                        self.first_sent = true;
                        Some(FirstAudioClock {
                            read_at,
                            submitted,
                            started,
                            pcm: Instant::now(),
                        })
                    }
                    _ => None,
                };
                self.backlog.samples.fetch_add(samples.len(), Ordering::AcqRel);
                let _ = output.send(Output::Audio { samples, first });
            }
            JobEvent::Finished(stats) => {
                metrics.chunk_synthesized(&self.voice, message.characters, &stats);
                self.in_flight = false;
                self.chunks_done += 1;
                let _ = output.send(Output::ChunkEnd);
            }
            JobEvent::Failed(error) => {
                metrics.chunk_failed(&self.voice);
                self.in_flight = false;
                tracing::warn!(parent: &self.span, request_id = %self.request_id, error = %error, "Synthesis failed.");
                let message = match error {
                    EngineError::WorkerUnavailable(_) => error.to_string(),
                    _ => format!("synthesis failed for voice {}: {error}", self.voice.id),
                };
                return Some(End::Failed(Failure::Engine(message)));
            }
        }
        None
    }

    fn submit_next(&mut self) -> Result<(), Failure> {
        let Some(chunk) = self.chunks.pop_front() else {
            return Ok(());
        };
        let first = chunk.first && self.submitted.is_none();
        if first {
            self.submitted = Some(Instant::now());
        }
        let characters = chunk.text.chars().count();
        let tx = self.engine_tx.clone();
        let job = Job {
            voice: self.voice.clone(),
            text: chunk.text,
            first,
            cancel: self.cancel.token(),
            session_id: self.request_id.clone(),
            utterance_id: 1,
            speed: self.speed,
            parent: self.span.clone(),
            events: Box::new(move |event| {
                let _ = tx.send(EngineMessage {
                    first,
                    characters,
                    event,
                });
            }),
        };
        match self.state.pool.submit(job) {
            Ok(()) => {
                self.in_flight = true;
                Ok(())
            }
            Err(SubmitError::QueueFull(_)) => Err(Failure::Overloaded(
                "the synthesis queue is full; try again shortly".into(),
            )),
            Err(SubmitError::VoicesInUse(_)) => Err(Failure::Overloaded(
                "every resident voice is in use; try again shortly".into(),
            )),
            Err(SubmitError::ShutDown) => Err(Failure::ShuttingDown),
        }
    }
}
