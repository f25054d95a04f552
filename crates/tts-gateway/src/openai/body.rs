//! The body of a speech response: the utterance's audio, encoded as it arrives, and how the request ends
//! (completed, failed mid-stream, or dropped by hyper because the client went away: cancelled).

use std::sync::Arc;

use axum::body::Bytes;
use futures_util::stream::{self, Stream};
use tokio::time::Instant;
use tts_core::voices::VoiceInfo;

use super::encode::{self, Encoder};
use crate::GatewayState;
use crate::metrics::{ApiOutcome, Transport};
use crate::session::OwnedPermit;
use crate::utterance::{FirstAudioClock, Output, Utterance};

/// The response body's state: the utterance, the encoder, and what the request is counted as.
pub(super) struct SpeechBody {
    pub(super) state: Arc<GatewayState>,
    pub(super) utterance: Utterance,
    pub(super) encoder: Encoder,
    /// Outputs read before the response started.
    pub(super) pending: std::collections::VecDeque<Output>,
    pub(super) sse: bool,
    pub(super) voice: Arc<VoiceInfo>,
    pub(super) characters: usize,
    pub(super) read_at: Instant,
    pub(super) first_byte_at: Option<Instant>,
    pub(super) request_id: Arc<str>,
    pub(super) span: tracing::Span,
    /// Set when the body ends on its own; still `None` when dropped means the client went away.
    pub(super) outcome: Option<ApiOutcome>,
    pub(super) _permit: OwnedPermit,
}

/// One step of the body: bytes to send, or the end.
enum Step {
    Bytes(Bytes),
    Nothing,
    End,
}

impl SpeechBody {
    pub(super) fn into_stream(self) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        stream::unfold(Some(self), |body| async move {
            let mut body = body?;
            loop {
                match body.step().await {
                    Step::Bytes(bytes) => return Some((Ok(bytes), Some(body))),
                    Step::Nothing => {}
                    Step::End => return None,
                }
            }
        })
    }

    async fn step(&mut self) -> Step {
        let output = match self.pending.pop_front() {
            Some(output) => Some(output),
            None if self.outcome.is_some() => return Step::End,
            None => self.utterance.next().await,
        };
        match output {
            Some(Output::Audio { samples, first }) => match self.encoder.audio(&samples) {
                Ok(bytes) => self.send(bytes, first),
                Err(error) => self.fail(format!("cannot resample: {error}")),
            },
            Some(Output::ChunkEnd) => match self.encoder.end_of_chunk() {
                Ok(bytes) => self.send(bytes, None),
                Err(error) => self.fail(format!("cannot resample: {error}")),
            },
            Some(Output::Done(summary)) => {
                self.outcome = Some(ApiOutcome::Completed);
                // An utterance without audio still sends its header.
                let header = self.encoder.audio(&[]).unwrap_or_default();
                let header = if header.is_empty() {
                    Step::Nothing
                } else {
                    self.send(header, None)
                };
                let timings = self.finish(summary.finished_at, summary.chunks);
                match (self.sse, header) {
                    (true, Step::Bytes(header)) => {
                        let mut bytes = header.to_vec();
                        bytes.extend_from_slice(&encode::sse_done(self.characters, timings));
                        Step::Bytes(bytes.into())
                    }
                    (true, _) => Step::Bytes(encode::sse_done(self.characters, timings)),
                    (false, header) => header,
                }
            }
            Some(Output::Failed(failure)) => self.fail(failure.to_string()),
            None => self.fail("synthesis ended unexpectedly".into()),
        }
    }

    /// Wraps audio bytes for the stream format and closes the first-audio clock on the first bytes.
    fn send(&mut self, bytes: Bytes, first: Option<FirstAudioClock>) -> Step {
        if bytes.is_empty() {
            return Step::Nothing;
        }
        let now = Instant::now();
        if self.first_byte_at.is_none() {
            self.first_byte_at = Some(now);
        }
        if let Some(clock) = first {
            let total = clock.record(&self.state.metrics, &self.voice, Transport::Http, now);
            tracing::debug!(parent: &self.span, first_audio_ms = total.as_secs_f64() * 1000.0, "First audio sent.");
        }
        if self.sse {
            Step::Bytes(encode::sse_delta(&bytes))
        } else {
            Step::Bytes(bytes)
        }
    }

    /// Synthesis failed after the response started: SSE gets an error event; a raw body is cut short,
    /// which the client sees as an incomplete chunked response.
    fn fail(&mut self, message: String) -> Step {
        self.outcome = Some(ApiOutcome::Failed);
        self.state
            .metrics
            .api_request(Transport::Http, ApiOutcome::Failed);
        tracing::warn!(parent: &self.span, request_id = %self.request_id, error = %message, "Speech request failed mid-stream.");
        if self.sse {
            Step::Bytes(encode::sse_error(&message))
        } else {
            Step::End
        }
    }

    /// Counts and logs the completed request; returns ttsd's server-side timings for SSE clients.
    fn finish(&mut self, synthesis_done: Instant, chunks: usize) -> serde_json::Value {
        self.state
            .metrics
            .api_request(Transport::Http, ApiOutcome::Completed);
        let ms = |at: Instant| at.saturating_duration_since(self.read_at).as_secs_f64() * 1000.0;
        let first_byte_ms = self.first_byte_at.map(ms);
        let synthesis_done_ms = ms(synthesis_done);
        tracing::info!(
            parent: &self.span,
            request_id = %self.request_id,
            first_byte_ms,
            synthesis_done_ms,
            chunks,
            audio_seconds = self.encoder.seconds(),
            "Speech request finished."
        );
        serde_json::json!({
            "request_id": &*self.request_id,
            "first_byte_ms": first_byte_ms,
            "synthesis_done_ms": synthesis_done_ms,
            "chunks": chunks,
            "audio_seconds": self.encoder.seconds(),
        })
    }
}

impl Drop for SpeechBody {
    fn drop(&mut self) {
        if self.outcome.is_none() {
            self.state
                .metrics
                .api_request(Transport::Http, ApiOutcome::Cancelled);
        }
    }
}
