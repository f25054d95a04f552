//! The driver half of a session: owns the socket's write half, the segmenter, the session's utterances,
//! the one chunk it may have at the engine pool, the frame buffer and the pacer.
//!
//! One task does all of it so that ordering is simple: messages from the reader, engine events and the
//! frame clock are served by one biased `select!`, reader first, so a PAUSE or STOP read while frames are
//! waiting is acted on before the next frame leaves. Before each frame the driver also checks the cancel
//! generation the reader bumps on STOP, so no frame of a stopped utterance leaves after the STOP was read,
//! except one already being written.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tts_core::pool::{CancelSource, Job, JobEvent};
use tts_core::text::Segmenter;
use tts_core::voices::VoiceInfo;

mod inbound;

use super::pacer::Pacer;
use super::reader::Inbound;
use super::replies::ReplyLimiter;
use super::utterances::{Finished, Utterance, Utterances};
use crate::GatewayState;
use crate::metrics::{DropReason, GatewayMetrics, MessageOut, Stage, Transport};
use crate::protocol::{Encoding, ServerMessage, SessionError, UtteranceEndReason, audio_binary, audio_json};

/// Why a session ended, as sent in `session_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    ClientClosed,
    IdleTimeout,
    MaxDuration,
    TooManyErrors,
    SlowClient,
    ServerShutdown,
}

impl EndReason {
    /// One of `session::END_REASONS`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientClosed => "client_closed",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::MaxDuration => "max_duration",
            EndReason::TooManyErrors => "too_many_errors",
            EndReason::SlowClient => "slow_client",
            EndReason::ServerShutdown => "server_shutdown",
        }
    }
}

/// The socket went away or stopped taking data; nothing more can be sent.
#[derive(Debug)]
pub(crate) struct Disconnected(pub(crate) EndReason);

struct EngineMessage {
    generation: u64,
    utterance_id: u64,
    event: JobEvent,
}

pub(crate) struct Driver {
    state: Arc<GatewayState>,
    sink: SplitSink<WebSocket, Message>,
    inbound: mpsc::Receiver<Inbound>,
    shutdown: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
    /// When this session's recent rejected messages arrived (bounded by `max_bad_messages`).
    rejections: VecDeque<Instant>,
    /// Error replies sent in the last second (bounded by `max_error_replies_per_second`).
    replies: ReplyLimiter,
    session_id: Arc<str>,
    span: tracing::Span,
    legacy: bool,
    encoding: Encoding,
    voice: Arc<VoiceInfo>,
    segmenter: Segmenter,
    /// The utterances, their chunks and frames, and the one chunk at the pool.
    utterances: Utterances,
    cancel: CancelSource,
    engine_tx: mpsc::UnboundedSender<EngineMessage>,
    engine_rx: mpsc::UnboundedReceiver<EngineMessage>,
    pacer: Pacer,
    sequence: u64,
    paused: bool,
    last_inbound: Instant,
    started: Instant,
}

/// What the driver starts from.
pub(crate) struct DriverParts {
    pub(crate) state: Arc<GatewayState>,
    pub(crate) sink: SplitSink<WebSocket, Message>,
    pub(crate) inbound: mpsc::Receiver<Inbound>,
    pub(crate) session_id: Arc<str>,
    pub(crate) legacy: bool,
    pub(crate) encoding: Encoding,
    pub(crate) voice: Arc<VoiceInfo>,
    pub(crate) cancel: CancelSource,
    pub(crate) span: tracing::Span,
}

impl Driver {
    pub(crate) fn new(parts: DriverParts) -> Self {
        let config = &parts.state.config;
        let segmenter = Segmenter::new(config.segmenter());
        let (engine_tx, engine_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        Self {
            shutdown: parts.state.shutdown.clone(),
            drain: parts.state.drain.subscribe(),
            rejections: VecDeque::new(),
            replies: ReplyLimiter::new(config.max_error_replies_per_second),
            pacer: Pacer::new(config.pacing_lead_frames),
            state: parts.state,
            sink: parts.sink,
            inbound: parts.inbound,
            session_id: parts.session_id,
            span: parts.span,
            legacy: parts.legacy,
            encoding: parts.encoding,
            voice: parts.voice,
            segmenter,
            utterances: Utterances::new(),
            cancel: parts.cancel,
            engine_tx,
            engine_rx,
            sequence: 0,
            paused: false,
            last_inbound: now,
            started: now,
        }
    }

    /// Runs the session to its end and says why it ended.
    pub(crate) async fn run(mut self) -> EndReason {
        let reason = match self.serve().await {
            Ok(reason) => {
                let session_id = self.session_id.clone();
                let end = ServerMessage::SessionEnd {
                    session_id: &session_id,
                    reason: reason.as_str(),
                };
                let _ = self.send_json(&end).await;
                let _ = timeout(Duration::from_secs(1), self.sink.send(Message::Close(None))).await;
                reason
            }
            Err(Disconnected(reason)) => reason,
        };
        // Whatever is still queued for this session is dropped before an engine sees it.
        self.cancel.cancel_all();
        self.state.pool.end_session(&self.session_id);
        let buffered = self.utterances.buffered_frames();
        let drop_reason = if reason == EndReason::SlowClient {
            DropReason::Backpressure
        } else {
            DropReason::SessionEnd
        };
        self.state.metrics.frames_dropped(drop_reason, buffered);
        self.count_cancelled_chunk();
        reason
    }

    async fn serve(&mut self) -> Result<EndReason, Disconnected> {
        let config = self.state.config.clone();
        let idle = Duration::from_secs(config.idle_timeout_seconds);
        let max_end = self.started + Duration::from_secs(config.max_session_seconds);
        loop {
            self.submit_next().await?;
            self.finish_utterances().await?;
            if self.rejected_too_often() {
                return self.too_many_errors().await;
            }
            let draining = *self.drain.borrow_and_update();
            if draining && self.utterances.is_empty() {
                return Ok(EndReason::ServerShutdown);
            }
            let wake = self.next_wake();
            if wake.is_some_and(|at| at <= Instant::now()) {
                // A frame is due now. Control messages still go first (a PAUSE or STOP already read must
                // hold it back), but engine output must not: a fast engine keeps its channel busy for the
                // whole utterance, and draining it first would hold the first frame until synthesis ends.
                match self.inbound.try_recv() {
                    Ok(inbound) => {
                        self.last_inbound = Instant::now();
                        if let Some(reason) = self.on_inbound(inbound).await? {
                            return Ok(reason);
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return Ok(EndReason::ClientClosed),
                    Err(mpsc::error::TryRecvError::Empty) => self.on_clock().await?,
                }
                continue;
            }
            let idle_at = self.last_inbound + idle;
            tokio::select! {
                biased;
                inbound = self.inbound.recv() => {
                    let Some(inbound) = inbound else { return Ok(EndReason::ClientClosed) };
                    self.last_inbound = Instant::now();
                    if let Some(reason) = self.on_inbound(inbound).await? {
                        return Ok(reason);
                    }
                }
                _ = sleep_until(wake.unwrap_or(max_end)), if wake.is_some() => self.on_clock().await?,
                Some(message) = self.engine_rx.recv() => self.on_engine(message).await?,
                _ = sleep_until(idle_at) => {
                    if self.utterances.is_empty() {
                        return Ok(EndReason::IdleTimeout);
                    }
                    self.last_inbound = Instant::now();
                }
                _ = sleep_until(max_end) => return Ok(EndReason::MaxDuration),
                _ = self.shutdown.changed() => return Ok(EndReason::ServerShutdown),
                _ = self.drain.changed(), if !draining => {}
            }
        }
    }

    /// When the clock next needs attention: a frame due, or the moment the client's cushion runs dry.
    fn next_wake(&self) -> Option<Instant> {
        if self.paused {
            return None;
        }
        let front = self.utterances.front()?;
        if front.has_frames() {
            if front.frames_sent == 0 {
                // An utterance's first frame leaves at once (on_clock restarts the clock for it).
                return Some(Instant::now());
            }
            return Some(self.pacer.next_due().unwrap_or_else(Instant::now));
        }
        if front.frames_sent > 0 && !front.synth_done {
            // Waiting on synthesis mid-utterance: wake when the listener would run out of audio.
            return self.pacer.cushion_deadline();
        }
        None
    }

    async fn on_clock(&mut self) -> Result<(), Disconnected> {
        let now = Instant::now();
        let generation = self.cancel.generation();
        let Some(front) = self.utterances.front_mut() else {
            return Ok(());
        };
        if front.generation != generation {
            // A STOP has been read and is on its way from the reader: send nothing more.
            return Ok(());
        }
        if !front.has_frames() {
            if self.pacer.cushion_empty(now) && !front.synth_done {
                self.underrun();
            }
            return Ok(());
        }
        if front.frames_sent == 0 {
            // The first frame of every utterance leaves at once and starts a fresh clock: first audio is
            // never held back behind the previous utterance's cushion (the client's buffer then briefly
            // holds at most twice the lead). Not an underrun.
            self.pacer.restart();
        }
        if self.pacer.next_due().is_some_and(|due| due > now) {
            return Ok(());
        }
        let previous_frame_at = front.last_frame_at;
        let first = front.frames_sent == 0;
        let Some(frame) = self.utterances.pop_frame() else {
            return Ok(());
        };
        self.sequence += 1;
        let message = match self.encoding {
            Encoding::Base64 => Message::Text(audio_json(&frame, self.sequence).into()),
            Encoding::Binary => Message::Binary(audio_binary(&frame, self.sequence)),
        };
        // Stamped as the frame is handed to the socket, not after the write returns: a busy executor may run
        // this task again only after the client already has the frame, and the clocks must stay inside the
        // client's.
        let sent_at = Instant::now();
        self.send(message).await?;
        self.pacer.sent(sent_at);
        self.state.metrics.frame_sent(tts_core::audio::FRAME_BYTES);
        if let Some(previous) = previous_frame_at {
            self.state
                .metrics
                .frame_interval(sent_at.duration_since(previous));
        }
        if let Some(front) = self.utterances.front_mut() {
            front.last_frame_at = Some(sent_at);
            if first {
                record_first_audio(&self.state.metrics, front, sent_at);
                if let Some(read_at) = front.text_read_at {
                    tracing::debug!(
                        session_id = %self.session_id,
                        utterance_id = front.id,
                        first_audio_ms = sent_at.duration_since(read_at).as_secs_f64() * 1000.0,
                        "First frame sent."
                    );
                }
            }
        }
        Ok(())
    }

    /// The playing utterance ran out of audio mid-way: synthesis fell behind the clock.
    fn underrun(&mut self) {
        let Some(front) = self.utterances.front_mut() else {
            return;
        };
        front.underruns += 1;
        front.last_frame_at = None;
        self.state.metrics.underrun(&front.voice);
        self.pacer.restart();
        tracing::warn!(
            session_id = %self.session_id,
            utterance_id = front.id,
            played_ms = front.frames_sent * 20,
            chunks_waiting = front.chunks_waiting(),
            "Audio underrun: synthesis fell behind the 20 ms clock."
        );
    }

    async fn on_engine(&mut self, message: EngineMessage) -> Result<(), Disconnected> {
        let EngineMessage {
            generation,
            utterance_id,
            event,
        } = message;
        let now = Instant::now();
        match event {
            JobEvent::Started { queue_wait } => {
                if let Some(first) = self.utterances.started(utterance_id, generation, now) {
                    self.state.metrics.queue_wait(first, queue_wait);
                }
            }
            JobEvent::Audio(samples) => self.utterances.audio(utterance_id, generation, &samples, now),
            JobEvent::Finished(stats) => {
                if let Some(Finished {
                    voice,
                    characters: Some(characters),
                }) = self.utterances.finished(utterance_id, generation, now)
                {
                    self.state.metrics.chunk_synthesized(&voice, characters, &stats);
                }
            }
            JobEvent::Failed(error) => {
                let Some(voice) = self.utterances.failed(utterance_id, generation) else {
                    return Ok(());
                };
                tracing::warn!(session_id = %self.session_id, utterance_id, error = %error, "Synthesis failed.");
                self.state.metrics.chunk_failed(&voice);
                let error = SessionError::Synthesis {
                    voice: voice.id.clone(),
                    error,
                };
                self.send_error(&error).await?;
            }
        }
        Ok(())
    }

    /// Counts the chunk at the pool as cancelled by the engine when an engine had started it, and forgets it.
    fn count_cancelled_chunk(&mut self) {
        if let Some(voice) = self.utterances.take_cancelled() {
            self.state.metrics.chunk_cancelled(&voice);
        }
    }

    /// Hands the next chunk to the pool when the session has none there and room for more audio.
    async fn submit_next(&mut self) -> Result<(), Disconnected> {
        if self.utterances.has_in_flight()
            || self.utterances.buffered_frames() >= self.state.config.max_buffered_frames
        {
            return Ok(());
        }
        let Some(mut next) = self.utterances.next_chunk(Instant::now()) else {
            return Ok(());
        };
        self.utterances.submitted(&next);
        let tx = self.engine_tx.clone();
        let (generation, utterance_id) = (next.generation, next.utterance_id);
        let job = Job {
            voice: next.voice.clone(),
            text: std::mem::take(&mut next.chunk.text),
            first: next.chunk.first,
            cancel: self.cancel.token_at(generation),
            session_id: self.session_id.clone(),
            utterance_id,
            speed: 1.0,
            parent: next.span.clone(),
            events: Box::new(move |event| {
                let _ = tx.send(EngineMessage {
                    generation,
                    utterance_id,
                    event,
                });
            }),
        };
        match self.state.pool.submit(job) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.utterances.refused(utterance_id, generation);
                self.send_error(&SessionError::Submit(error)).await
            }
        }
    }

    /// Sends `utterance_end` for every finished utterance at the front.
    async fn finish_utterances(&mut self) -> Result<(), Disconnected> {
        while let Some(utterance) = self.utterances.pop_finished() {
            let reason = if utterance.failed {
                UtteranceEndReason::Failed
            } else {
                UtteranceEndReason::Completed
            };
            let synthesis = utterance
                .first_submitted_at
                .zip(utterance.last_finished_at)
                .map(|(s, f)| f.duration_since(s));
            let end_to_end = (reason == UtteranceEndReason::Completed)
                .then(|| {
                    utterance
                        .text_read_at
                        .zip(utterance.last_frame_at)
                        .map(|(r, l)| l.duration_since(r))
                })
                .flatten();
            self.state.metrics.utterance_ended(
                &utterance.voice,
                Transport::Ws,
                reason,
                synthesis,
                end_to_end,
                Some(utterance.underruns),
            );
            self.send_utterance_end(&utterance, reason).await?;
        }
        Ok(())
    }

    async fn send_utterance_end(
        &mut self,
        utterance: &Utterance,
        reason: UtteranceEndReason,
    ) -> Result<(), Disconnected> {
        utterance.span.record("tts.frames", utterance.frames_sent);
        utterance.span.record("tts.outcome", reason.as_str());
        if reason == UtteranceEndReason::Failed {
            utterance.span.record("otel.status_code", "ERROR");
        }
        if self.legacy {
            return Ok(());
        }
        self.send_json(&ServerMessage::UtteranceEnd {
            utterance_id: utterance.id,
            frames: utterance.frames_sent,
            reason,
            underruns: utterance.underruns,
        })
        .await
    }

    async fn send_json(&mut self, message: &ServerMessage<'_>) -> Result<(), Disconnected> {
        self.send(Message::Text(message.to_json().into())).await?;
        match message {
            ServerMessage::Error { code, .. } => self.state.metrics.error_sent(*code),
            ServerMessage::UtteranceEnd { .. } => self.state.metrics.message_sent(MessageOut::UtteranceEnd),
            ServerMessage::SessionEnd { .. } => self.state.metrics.message_sent(MessageOut::SessionEnd),
            ServerMessage::SessionStart { .. } => self.state.metrics.message_sent(MessageOut::SessionStart),
        }
        Ok(())
    }

    async fn send(&mut self, message: Message) -> Result<(), Disconnected> {
        let limit = Duration::from_secs(self.state.config.slow_client_timeout_seconds);
        match timeout(limit, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Disconnected(EndReason::ClientClosed)),
            Err(_) => Err(Disconnected(EndReason::SlowClient)),
        }
    }
}

/// Records first audio as four consecutive stages measured by the driver's own clock.
fn record_first_audio(metrics: &GatewayMetrics, utterance: &Utterance, sent_at: Instant) {
    let (Some(read), Some(submitted), Some(started), Some(pcm)) = (
        utterance.text_read_at,
        utterance.first_submitted_at,
        utterance.first_started_at,
        utterance.first_pcm_at,
    ) else {
        return;
    };
    // Clamp so every stage is non-negative even if two instants tie; the sum is still sent_at − read.
    let submitted = submitted.max(read);
    let started = started.max(submitted);
    let pcm = pcm.max(started);
    let sent_at = sent_at.max(pcm);
    utterance
        .span
        .record("tts.first_audio_ms", (sent_at - read).as_secs_f64() * 1000.0);
    let trace_id = tts_telemetry::otel::is_sampled(&utterance.span)
        .then(|| tts_telemetry::trace_ids(&utterance.span).map(|(trace, _)| trace))
        .flatten();
    metrics.first_audio(
        trace_id,
        &utterance.voice,
        Transport::Ws,
        [
            (Stage::Intake, submitted - read),
            (Stage::Queue, started - submitted),
            (Stage::Engine, pcm - started),
            (Stage::Delivery, sent_at - pcm),
        ],
    );
}
