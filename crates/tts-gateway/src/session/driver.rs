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
use tts_core::audio::{Frame, Framer};
use tts_core::engine::EngineError;
use tts_core::pool::{CancelSource, Job, JobEvent, SubmitError};
use tts_core::text::{Chunk, Segmenter};
use tts_core::voices::VoiceInfo;

use super::pacer::Pacer;
use super::reader::Inbound;
use crate::GatewayState;
use crate::metrics::{DropReason, GatewayMetrics, MessageOut, Stage, Transport};
use crate::protocol::{
    ClientMessage, Command, Encoding, ErrorCode, Rejection, ServerMessage, UtteranceEndReason, audio_binary,
    audio_json,
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

struct Utterance {
    id: u64,
    generation: u64,
    voice: Arc<VoiceInfo>,
    /// Chunks not yet handed to the pool.
    chunks: VecDeque<Chunk>,
    /// `is_final` text has been received.
    text_complete: bool,
    /// Every chunk is synthesised and the framer flushed: the frames queue holds the rest of the audio.
    synth_done: bool,
    framer: Framer,
    frames: VecDeque<Frame>,
    frames_sent: u64,
    /// When the text that gave this utterance its first chunk was read (first-audio clock start).
    text_read_at: Option<Instant>,
    underruns: u64,
    failed: bool,
    /// First-audio stage boundaries, as the driver saw them for the utterance's first chunk.
    first_submitted_at: Option<Instant>,
    first_started_at: Option<Instant>,
    first_pcm_at: Option<Instant>,
    /// The last chunk finished (end of synthesis for the utterance).
    last_finished_at: Option<Instant>,
    /// The previous frame of this utterance handed to the socket, for the frame interval (cleared by PAUSE).
    last_frame_at: Option<Instant>,
    /// Child of the session span; ends when the utterance is dropped.
    span: tracing::Span,
}

impl Utterance {
    fn new(id: u64, generation: u64, voice: Arc<VoiceInfo>, session: &tracing::Span) -> Self {
        let span = tracing::info_span!(
            parent: session,
            "utterance",
            utterance_id = id,
            "tts.engine" = voice.engine.as_str(),
            "tts.voice" = %voice.id,
            "tts.first_audio_ms" = tracing::field::Empty,
            "tts.frames" = tracing::field::Empty,
                        "tts.outcome" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
        );
        Self {
            span,
            id,
            generation,
            voice,
            chunks: VecDeque::new(),
            text_complete: false,
            synth_done: false,
            framer: Framer::new(),
            frames: VecDeque::new(),
            frames_sent: 0,
            text_read_at: None,
            underruns: 0,
            failed: false,
            first_submitted_at: None,
            first_started_at: None,
            first_pcm_at: None,
            last_finished_at: None,
            last_frame_at: None,
        }
    }
}

/// The one chunk a session may have at the pool.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    utterance_id: u64,
    characters: usize,
    first: bool,
    /// An engine thread took the chunk (its `Started` event was seen): only then does a STOP count it as
    /// an engine task cancelled; before that the scheduler discards it (`tts_queue_discarded_total`).
    started: bool,
}

pub(crate) struct Driver {
    state: Arc<GatewayState>,
    sink: SplitSink<WebSocket, Message>,
    inbound: mpsc::Receiver<Inbound>,
    shutdown: watch::Receiver<bool>,
    drain: watch::Receiver<bool>,
    /// When this session's recent rejected messages arrived (bounded by `max_bad_messages`).
    rejections: VecDeque<Instant>,
    session_id: Arc<str>,
    span: tracing::Span,
    legacy: bool,
    encoding: Encoding,
    voice: Arc<VoiceInfo>,
    segmenter: Segmenter,
    utterances: VecDeque<Utterance>,
    next_utterance_id: u64,
    /// The utterance whose chunk is at the pool, if any: at most one per session, which keeps the
    /// session's order and makes the pool's FIFO lanes round-robin across sessions.
    in_flight: Option<InFlight>,
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
            utterances: VecDeque::new(),
            next_utterance_id: 1,
            in_flight: None,
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
        let buffered: usize = self.utterances.iter().map(|u| u.frames.len()).sum();
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
        if !front.frames.is_empty() {
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
        if front.frames.is_empty() {
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
        let Some(frame) = front.frames.pop_front() else {
            return Ok(());
        };
        front.frames_sent += 1;
        let first = front.frames_sent == 1;
        let text_read_at = front.text_read_at;
        let utterance_id = front.id;
        let previous_frame_at = front.last_frame_at;
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
                    if let Err(rejection) = self.on_text(&text, is_final, read_at) {
                        self.reject(rejection).await?;
                    }
                }
                ClientMessage::Control(command) => self.on_control(command, read_at).await?,
                ClientMessage::Config { voice } => {
                    if let Err(rejection) = self.on_config(&voice) {
                        self.reject(rejection).await?;
                    }
                }
            },
        }
        Ok(None)
    }

    fn pending_chars(&self) -> usize {
        let chunked: usize = self
            .utterances
            .iter()
            .flat_map(|u| u.chunks.iter())
            .map(|c| c.text.chars().count())
            .sum();
        chunked + self.segmenter.pending_chars()
    }

    fn on_text(&mut self, text: &str, is_final: bool, read_at: Instant) -> Result<(), Rejection> {
        let open = self.utterances.back().is_some_and(|u| !u.text_complete);
        if !open && self.state.draining() {
            return Err(Rejection::new(
                ErrorCode::Overloaded,
                "the server is shutting down: utterances already open finish, no new one starts",
            ));
        }
        if text.trim().is_empty() && (!is_final || !open) {
            return Err(Rejection::new(ErrorCode::InvalidMessage, "text is empty"));
        }
        let incoming = text.chars().count();
        let limit = self.state.config.max_pending_chars;
        if self.pending_chars() + incoming > limit {
            return Err(Rejection::new(
                ErrorCode::TextTooLong,
                format!(
                    "the session already has {} characters waiting; the limit is {limit}",
                    self.pending_chars()
                ),
            ));
        }
        let queued_limit = self.state.config.max_queued_utterances;
        if !open && self.utterances.len() >= queued_limit {
            return Err(Rejection::new(
                ErrorCode::TextTooLong,
                format!(
                    "the session already has {queued_limit} utterances waiting or playing; the limit is {queued_limit}"
                ),
            ));
        }
        if !open {
            let id = self.next_utterance_id;
            self.next_utterance_id += 1;
            self.utterances.push_back(Utterance::new(
                id,
                self.cancel.generation(),
                self.voice.clone(),
                &self.span,
            ));
        }
        let chunks = self.segmenter.push(text, is_final);
        let in_flight = self.in_flight;
        let Some(utterance) = self.utterances.back_mut() else {
            return Ok(());
        };
        if !chunks.is_empty() && utterance.text_read_at.is_none() {
            utterance.text_read_at = Some(read_at);
        }
        utterance.chunks.extend(chunks);
        if is_final {
            utterance.text_complete = true;
            if utterance.text_read_at.is_none() {
                utterance.text_read_at = Some(read_at);
            }
            settle(utterance, in_flight);
        }
        Ok(())
    }

    fn on_config(&mut self, voice: &str) -> Result<(), Rejection> {
        if self.utterances.back().is_some_and(|u| !u.text_complete) {
            return Err(Rejection::new(
                ErrorCode::InvalidMessage,
                "the voice can change only between utterances (after a final text)",
            ));
        }
        let info = self
            .state
            .catalog
            .get(voice)
            .map_err(|unknown| Rejection::new(ErrorCode::UnknownVoice, unknown.to_string()))?;
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
            let message = format!("{} received while nothing is playing or queued", command.as_str());
            return self
                .reject(Rejection::new(ErrorCode::InvalidMessage, message))
                .await;
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
                    return self
                        .reject(Rejection::new(
                            ErrorCode::InvalidMessage,
                            "RESUME received while not paused",
                        ))
                        .await;
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
                self.count_cancelled_chunk();
                self.paused = false;
                self.pacer.restart();
                let stopped: Vec<Utterance> = self.utterances.drain(..).collect();
                let dropped: usize = stopped.iter().map(|u| u.frames.len()).sum();
                self.state.metrics.frames_dropped(DropReason::Stop, dropped);
                tracing::debug!(
                    session_id = %self.session_id,
                    latency_ms = read_at.elapsed().as_secs_f64() * 1000.0,
                    utterances = stopped.len(),
                    "Stopped."
                );
                for utterance in stopped {
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
        let in_flight = self.in_flight.filter(|f| f.utterance_id == utterance_id);
        let metrics = self.state.metrics.clone();
        let Some(utterance) = self
            .utterances
            .iter_mut()
            .find(|u| u.id == utterance_id && u.generation == generation)
        else {
            return Ok(());
        };
        match event {
            JobEvent::Started { queue_wait } => {
                if let Some(current) = self.in_flight.as_mut().filter(|f| f.utterance_id == utterance_id) {
                    current.started = true;
                }
                let first = in_flight.is_some_and(|f| f.first);
                metrics.queue_wait(first, queue_wait);
                if first {
                    utterance.first_started_at.get_or_insert(now);
                }
            }
            JobEvent::Audio(samples) => {
                if utterance.first_started_at.is_some() {
                    utterance.first_pcm_at.get_or_insert(now);
                }
                let mut frames = Vec::new();
                utterance.framer.push(&samples, &mut frames);
                utterance.frames.extend(frames);
            }
            JobEvent::Finished(stats) => {
                if let Some(in_flight) = in_flight {
                    metrics.chunk_synthesized(&utterance.voice, in_flight.characters, &stats);
                }
                utterance.last_finished_at = Some(now);
                self.in_flight = None;
                settle(utterance, None);
            }
            JobEvent::Failed(error) => {
                tracing::warn!(session_id = %self.session_id, utterance_id, error = %error, "Synthesis failed.");
                metrics.chunk_failed(&utterance.voice);
                utterance.chunks.clear();
                utterance.failed = true;
                self.in_flight = None;
                settle(utterance, None);
                let (code, message) = match error {
                    EngineError::WorkerUnavailable(_) => (ErrorCode::WorkerUnavailable, error.to_string()),
                    _ => (
                        ErrorCode::SynthesisFailed,
                        format!("synthesis failed for voice {}: {error}", utterance.voice.id),
                    ),
                };
                self.send_error(code, &message).await?;
            }
        }
        Ok(())
    }

    /// Counts the chunk at the pool as cancelled by the engine when an engine had started it, and forgets it.
    fn count_cancelled_chunk(&mut self) {
        if let Some(in_flight) = self.in_flight.take().filter(|f| f.started)
            && let Some(u) = self.utterances.iter().find(|u| u.id == in_flight.utterance_id)
        {
            self.state.metrics.chunk_cancelled(&u.voice);
        }
    }

    /// Hands the next chunk to the pool when the session has none there and room for more audio.
    async fn submit_next(&mut self) -> Result<(), Disconnected> {
        if self.in_flight.is_some() {
            return Ok(());
        }
        let buffered: usize = self.utterances.iter().map(|u| u.frames.len()).sum();
        if buffered >= self.state.config.max_buffered_frames {
            return Ok(());
        }
        let Some(utterance) = self.utterances.iter_mut().find(|u| !u.chunks.is_empty()) else {
            return Ok(());
        };
        let Some(chunk) = utterance.chunks.pop_front() else {
            return Ok(());
        };
        let in_flight = InFlight {
            utterance_id: utterance.id,
            characters: chunk.text.chars().count(),
            first: chunk.first,
            started: false,
        };
        if chunk.first {
            utterance.first_submitted_at.get_or_insert_with(Instant::now);
        }
        let tx = self.engine_tx.clone();
        let (generation, utterance_id) = (utterance.generation, utterance.id);
        let job = Job {
            voice: utterance.voice.clone(),
            text: chunk.text,
            first: chunk.first,
            cancel: self.cancel.token_at(generation),
            session_id: self.session_id.clone(),
            utterance_id,
            speed: 1.0,
            parent: utterance.span.clone(),
            events: Box::new(move |event| {
                let _ = tx.send(EngineMessage {
                    generation,
                    utterance_id,
                    event,
                });
            }),
        };
        match self.state.pool.submit(job) {
            Ok(()) => {
                self.in_flight = Some(in_flight);
                Ok(())
            }
            Err(error) => {
                utterance.chunks.clear();
                utterance.failed = true;
                settle(utterance, None);
                let code = match error {
                    SubmitError::QueueFull(_) | SubmitError::VoicesInUse(_) => ErrorCode::Overloaded,
                    SubmitError::ShutDown => ErrorCode::InternalError,
                };
                self.send_error(code, &error.to_string()).await
            }
        }
    }

    /// Sends `utterance_end` for every finished utterance at the front.
    async fn finish_utterances(&mut self) -> Result<(), Disconnected> {
        while self
            .utterances
            .front()
            .is_some_and(|u| u.synth_done && u.frames.is_empty())
        {
            let Some(utterance) = self.utterances.pop_front() else {
                break;
            };
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
        self.send_error(rejection.code, &rejection.message).await
    }

    async fn too_many_errors(&mut self) -> Result<EndReason, Disconnected> {
        self.send_error(
            ErrorCode::InvalidMessage,
            "too many invalid or ill-timed messages; closing the session",
        )
        .await?;
        Ok(EndReason::TooManyErrors)
    }

    fn rejected_too_often(&self) -> bool {
        self.rejections.len() > self.state.config.max_bad_messages as usize
    }

    async fn send_error(&mut self, code: ErrorCode, message: &str) -> Result<(), Disconnected> {
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

/// Marks an utterance fully synthesised once its text is complete and nothing is left to synthesise,
/// flushing the framer's zero-padded last frame.
fn settle(utterance: &mut Utterance, in_flight: Option<InFlight>) {
    if utterance.synth_done || !utterance.text_complete || !utterance.chunks.is_empty() {
        return;
    }
    if in_flight.is_some_and(|f| f.utterance_id == utterance.id) {
        return;
    }
    if let Some(last) = utterance.framer.finish() {
        utterance.frames.push_back(last);
    }
    utterance.synth_done = true;
}
