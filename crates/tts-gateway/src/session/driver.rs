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

use super::pacer::Pacer;
use super::reader::Inbound;
use super::replies::ReplyLimiter;
use super::utterances::{Caps, Finished, Utterance, Utterances};
use crate::GatewayState;
use crate::metrics::{DropReason, GatewayMetrics, MessageOut, Stage, Transport};
use crate::protocol::{
    ClientMessage, Command, Encoding, ErrorCode, Rejection, ServerMessage, SessionError, UtteranceEndReason,
    audio_binary, audio_json,
};

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
                front.underruns += 1;
                front.last_frame_at = None;
                self.state.metrics.underrun(&front.voice);
                self.pacer.restart();
                tracing::warn!(session_id = %self.session_id, utterance_id = front.id, "Audio underrun: synthesis fell behind the 20 ms clock.");
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
        let text_read_at = front.text_read_at;
        let utterance_id = front.id;
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
            }
        }
        if first && let Some(read_at) = text_read_at {
            {
                tracing::debug!(
                    session_id = %self.session_id,
                    utterance_id,
                    first_audio_ms = sent_at.duration_since(read_at).as_secs_f64() * 1000.0,
                    "First frame sent."
                );
            }
        }
        Ok(())
    }

    async fn on_inbound(&mut self, inbound: Inbound) -> Result<Option<EndReason>, Disconnected> {
        match inbound {
            Inbound::Closed => return Ok(Some(EndReason::ClientClosed)),
            Inbound::Abuse => return self.too_many_errors().await.map(Some),
            Inbound::Rejected(rejection) => self.reject(rejection).await?,
            Inbound::Message { message, read_at } => match message {
                ClientMessage::Text { text, is_final } => {
                    if let Err(error) = self.on_text(&text, is_final, read_at) {
                        self.reject(error.into()).await?;
                    }
                }
                ClientMessage::Control(command) => self.on_control(command, read_at).await?,
                ClientMessage::Config { voice } => {
                    if let Err(error) = self.on_config(&voice) {
                        self.reject(error.into()).await?;
                    }
                }
            },
        }
        Ok(None)
    }

    fn on_text(&mut self, text: &str, is_final: bool, read_at: Instant) -> Result<(), SessionError> {
        let open = self.utterances.is_open();
        if !open && self.state.draining() {
            return Err(SessionError::NoNewUtterance);
        }
        if text.trim().is_empty() && (!is_final || !open) {
            return Err(SessionError::EmptyText);
        }
        let caps = Caps {
            max_pending_chars: self.state.config.max_pending_chars,
            max_queued_utterances: self.state.config.max_queued_utterances,
        };
        let incoming = text.chars().count();
        self.utterances
            .room_for(incoming, self.segmenter.pending_chars(), &caps)?;
        if !open {
            self.utterances
                .push(self.cancel.generation(), self.voice.clone(), &self.span);
        }
        let chunks = self.segmenter.push(text, is_final);
        self.utterances.add_text(chunks, is_final, read_at);
        Ok(())
    }

    fn on_config(&mut self, voice: &str) -> Result<(), SessionError> {
        if self.utterances.is_open() {
            return Err(SessionError::VoiceChangeMidUtterance);
        }
        let info = self
            .state
            .catalog
            .get(voice)
            .map_err(SessionError::UnknownVoice)?;
        self.voice = Arc::new(info.clone());
        Ok(())
    }

    async fn on_control(&mut self, command: Command, read_at: Instant) -> Result<(), Disconnected> {
        // A short span per control message, so a trace shows when PAUSE/RESUME/STOP took effect and the
        // barge-in latency they achieved.
        let span = tracing::info_span!(
            parent: &self.span,
            "control",
            "tts.command" = command.as_str(),
            "tts.barge_in_ms" = tracing::field::Empty,
        );
        let trace_id = tts_telemetry::otel::is_sampled(&span)
            .then(|| tts_telemetry::trace_ids(&span).map(|(trace, _)| trace))
            .flatten();
        let result = self.apply_control(command, read_at, trace_id).await;
        if matches!(command, Command::Pause | Command::Stop) {
            span.record("tts.barge_in_ms", read_at.elapsed().as_secs_f64() * 1000.0);
        }
        result
    }

    async fn apply_control(
        &mut self,
        command: Command,
        read_at: Instant,
        trace_id: Option<String>,
    ) -> Result<(), Disconnected> {
        if self.utterances.is_empty() {
            return self.reject(SessionError::NothingPlaying(command).into()).await;
        }
        match command {
            Command::Pause if self.paused => {
                // Accepted with no further effect (docs/protocol.md); nothing was silenced, so it is no
                // barge-in: counting it would let a client pad the barge-in SLO with free fast samples.
                tracing::debug!(session_id = %self.session_id, "PAUSE while already paused.");
            }
            Command::Pause => {
                self.paused = true;
                self.state.pool.control(&self.session_id, command);
                if let Some(front) = self.utterances.front_mut() {
                    front.last_frame_at = None;
                }
                self.state
                    .metrics
                    .barge_in(command, read_at.elapsed(), trace_id.clone());
                self.state.metrics.control(command, read_at.elapsed());
                tracing::debug!(session_id = %self.session_id, latency_ms = read_at.elapsed().as_secs_f64() * 1000.0, "Paused.");
            }
            Command::Resume => {
                if !self.paused {
                    return self.reject(SessionError::NotPaused.into()).await;
                }
                self.paused = false;
                self.state.pool.control(&self.session_id, command);
                self.pacer.restart();
                self.state.metrics.control(command, read_at.elapsed());
            }
            Command::Stop => {
                self.cancel.cancel_all();
                self.state.pool.control(&self.session_id, command);
                self.segmenter.clear();
                // From here on no frame of these utterances can leave: that is where barge-in ends.
                let silenced = read_at.elapsed();
                self.state.metrics.barge_in(command, silenced, trace_id.clone());
                self.state.metrics.control(command, silenced);
                let stopped = self.utterances.stop();
                if let Some(voice) = &stopped.cancelled {
                    self.state.metrics.chunk_cancelled(voice);
                }
                self.paused = false;
                self.pacer.restart();
                self.state
                    .metrics
                    .frames_dropped(DropReason::Stop, stopped.frames);
                tracing::debug!(
                    session_id = %self.session_id,
                    latency_ms = read_at.elapsed().as_secs_f64() * 1000.0,
                    utterances = stopped.utterances.len(),
                    "Stopped."
                );
                for utterance in stopped.utterances {
                    self.state.metrics.utterance_ended(
                        &utterance.voice,
                        Transport::Ws,
                        UtteranceEndReason::Stopped,
                        None,
                        None,
                        Some(utterance.underruns),
                    );
                    self.send_utterance_end(&utterance, UtteranceEndReason::Stopped)
                        .await?;
                }
            }
        }
        Ok(())
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

    /// Answers a message the client should not have sent (malformed, or well-formed but ill-timed). Every
    /// one counts against `max_bad_messages` per `bad_message_window_seconds`, so a client cannot make
    /// the server send error replies without bound: past the limit the session ends (`too_many_errors`).
    async fn reject(&mut self, rejection: Rejection) -> Result<(), Disconnected> {
        let now = Instant::now();
        let window = Duration::from_secs(self.state.config.bad_message_window_seconds);
        while self
            .rejections
            .front()
            .is_some_and(|at| now.duration_since(*at) > window)
        {
            self.rejections.pop_front();
        }
        self.rejections.push_back(now);
        self.send_reply(rejection.code, &rejection.message).await
    }

    /// The session ends for its bad messages; the error saying so is sent whatever the reply bound.
    async fn too_many_errors(&mut self) -> Result<EndReason, Disconnected> {
        let error = SessionError::TooManyErrors;
        self.send_error_now(error.code(), &error.to_string()).await?;
        Ok(EndReason::TooManyErrors)
    }

    fn rejected_too_often(&self) -> bool {
        self.rejections.len() > self.state.config.max_bad_messages as usize
    }

    async fn send_error(&mut self, error: &SessionError) -> Result<(), Disconnected> {
        self.send_reply(error.code(), &error.to_string()).await
    }

    /// Sends an error reply unless the session is over `max_error_replies_per_second`; then it is only
    /// counted (`tts_errors_suppressed_total`).
    async fn send_reply(&mut self, code: ErrorCode, message: &str) -> Result<(), Disconnected> {
        if !self.replies.allow(Instant::now()) {
            self.state.metrics.error_suppressed(code);
            tracing::debug!(session_id = %self.session_id, code = code.as_str(), "Suppressed an error reply: over the session's error replies per second.");
            return Ok(());
        }
        self.send_error_now(code, message).await
    }

    async fn send_error_now(&mut self, code: ErrorCode, message: &str) -> Result<(), Disconnected> {
        tracing::info!(session_id = %self.session_id, code = code.as_str(), "Sent an error to the client.");
        self.send_json(&ServerMessage::Error { code, message }).await
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
