//! What the driver does with what the reader hands it: text into utterances, voice changes, PAUSE, RESUME
//! and STOP, and the error replies for messages it rejects (bounded by `max_bad_messages` and
//! `max_error_replies_per_second`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::SinkExt;
use tokio::time::{Instant, timeout};

use super::super::reader::{Inbound, Violation};
use super::super::utterances::Caps;
use super::{Disconnected, Driver, EndReason};
use crate::metrics::{DropReason, Transport};
use crate::protocol::{
    ClientMessage, Command, ErrorCode, Rejection, ServerMessage, SessionError, UtteranceEndReason,
};

impl Driver {
    pub(super) async fn on_inbound(&mut self, inbound: Inbound) -> Result<Option<EndReason>, Disconnected> {
        match inbound {
            Inbound::Closed => return Ok(Some(EndReason::ClientClosed)),
            Inbound::Violation(violation) => return Err(self.close_for(violation).await),
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

    /// Closes the connection with the violation's close code: the socket can carry nothing else, so no
    /// `session_end` precedes it.
    async fn close_for(&mut self, violation: Violation) -> Disconnected {
        tracing::info!(
            session_id = %self.session_id,
            close_code = violation.code,
            reason = violation.reason,
            "Closing a session: the client broke the WebSocket protocol."
        );
        let frame = CloseFrame {
            code: violation.code,
            reason: violation.reason.into(),
        };
        let _ = timeout(
            Duration::from_secs(1),
            self.sink.send(Message::Close(Some(frame))),
        )
        .await;
        Disconnected(EndReason::ClientClosed)
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
            Command::Stop => self.stop(command, read_at, trace_id).await?,
        }
        Ok(())
    }

    /// STOP: every utterance of the session ends `stopped`, and whatever was synthesised for them is dropped.
    async fn stop(
        &mut self,
        command: Command,
        read_at: Instant,
        trace_id: Option<String>,
    ) -> Result<(), Disconnected> {
        self.cancel.cancel_all();
        self.state.pool.control(&self.session_id, command);
        self.segmenter.clear();
        // From here on no frame of these utterances can leave: that is where barge-in ends.
        let silenced = read_at.elapsed();
        self.state.metrics.barge_in(command, silenced, trace_id);
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
        Ok(())
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
    pub(super) async fn too_many_errors(&mut self) -> Result<EndReason, Disconnected> {
        let error = SessionError::TooManyErrors;
        self.send_error_now(error.code(), &error.to_string()).await?;
        Ok(EndReason::TooManyErrors)
    }

    pub(super) fn rejected_too_often(&self) -> bool {
        self.rejections.len() > self.state.config.max_bad_messages as usize
    }

    pub(super) async fn send_error(&mut self, error: &SessionError) -> Result<(), Disconnected> {
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
}
