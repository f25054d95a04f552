//! One gateway session's state on a worker: its own cancel generation, PAUSE flag and held chunks, and
//! the sender of its Synthesize response stream.
//!
//! PAUSE holds chunks that arrive (the one running finishes: it is bounded and the gateway buffers it);
//! RESUME submits what was held in order; STOP bumps the session's cancel generation (a running chunk stops
//! at the engine's next piece, queued ones are skipped by the pool) and answers every open chunk with
//! `cancelled`. None of it reads or writes another session's state.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Status;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tts_core::pool::{CancelSource, Job, JobEvent};
use tts_proto::v1::synthesize_response::Event;
use tts_proto::v1::{
    AudioPiece, ChunkCancelled, ChunkFailed, ChunkFinished, ChunkStarted, SynthesizeRequest,
    SynthesizeResponse,
};

use super::Inner;
use crate::metrics::ChunkOutcome;
use crate::models::{LoadReason, VoiceLease};

type Responder = mpsc::UnboundedSender<Result<SynthesizeResponse, Status>>;

pub(super) struct WorkerSession {
    id: Arc<str>,
    cancel: CancelSource,
    state: Mutex<SessionState>,
    /// Keeps the session's voice resident while the session lives.
    _lease: VoiceLease,
    inner: Weak<Inner>,
    span: tracing::Span,
}

#[derive(Default)]
struct SessionState {
    paused: bool,
    held: VecDeque<Held>,
    /// Chunks at the pool that have not reported their end.
    open: BTreeSet<u64>,
    responder: Option<Responder>,
    ended: bool,
}

struct Held {
    request: SynthesizeRequest,
    lease: VoiceLease,
    received: Instant,
}

impl WorkerSession {
    pub(super) fn new(id: String, lease: VoiceLease, inner: Arc<Inner>) -> Self {
        let span = tracing::info_span!("worker_session", session_id = %id);
        Self {
            id: id.into(),
            cancel: CancelSource::new(),
            state: Mutex::new(SessionState::default()),
            _lease: lease,
            inner: Arc::downgrade(&inner),
            span,
        }
    }

    /// Audio for this session goes to `responder` from now on (a new stream replaces an old one).
    pub(super) fn attach(&self, responder: Responder) {
        self.state().responder = Some(responder);
    }

    /// Takes one chunk from the Synthesize stream: holds it while paused, else submits it.
    pub(super) async fn receive(self: &Arc<Self>, request: SynthesizeRequest) {
        let received = Instant::now();
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        if request.text.trim().is_empty() {
            self.refuse(&request, "the chunk's text is empty");
            return;
        }
        if speed(&request).is_none() {
            let message = format!("speed {} is outside 0.25 to 4.0", request.speed);
            self.refuse(&request, &message);
            return;
        }
        let lease = match inner.models.acquire(&request.voice, LoadReason::Demand).await {
            Ok(lease) => lease,
            Err(error) => {
                self.refuse(&request, &error.to_string());
                return;
            }
        };
        let held = Held {
            request,
            lease,
            received,
        };
        let mut state = self.state();
        if state.ended {
            return;
        }
        if state.paused {
            state.held.push_back(held);
            return;
        }
        drop(state);
        self.submit(held, &inner);
    }

    pub(super) fn pause(&self) {
        self.state().paused = true;
    }

    pub(super) fn resume(self: &Arc<Self>) {
        let held: Vec<Held> = {
            let mut state = self.state();
            state.paused = false;
            state.held.drain(..).collect()
        };
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        for chunk in held {
            self.submit(chunk, &inner);
        }
    }

    /// Cancels everything the session has open or held; returns how many chunks that was.
    pub(super) fn stop(&self) -> u32 {
        self.cancel.cancel_all();
        let mut state = self.state();
        let held: Vec<u64> = state.held.drain(..).map(|h| h.request.chunk_id).collect();
        let open: Vec<u64> = std::mem::take(&mut state.open).into_iter().collect();
        let responder = state.responder.clone();
        drop(state);
        let inner = self.inner.upgrade();
        let mut cancelled = 0;
        for chunk_id in held.into_iter().chain(open) {
            cancelled += 1;
            if let Some(inner) = &inner {
                inner.metrics.chunk_ended(ChunkOutcome::cancelled);
            }
            if let Some(responder) = &responder {
                let _ = responder.send(Ok(response(chunk_id, Event::Cancelled(ChunkCancelled {}))));
            }
        }
        cancelled
    }

    /// Cancels the session's work and closes its stream.
    pub(super) fn end(&self) {
        self.cancel.cancel_all();
        let mut state = self.state();
        state.ended = true;
        state.held.clear();
        state.open.clear();
        state.responder = None;
    }

    fn refuse(&self, request: &SynthesizeRequest, message: &str) {
        if let Some(inner) = self.inner.upgrade() {
            inner.metrics.chunk_ended(ChunkOutcome::refused);
        }
        tracing::warn!(session_id = %self.id, chunk_id = request.chunk_id, error = message, "Chunk refused.");
        self.send(
            request.chunk_id,
            Event::Failed(ChunkFailed {
                message: message.to_owned(),
            }),
        );
    }

    fn send(&self, chunk_id: u64, event: Event) {
        if let Some(responder) = &self.state().responder {
            let _ = responder.send(Ok(response(chunk_id, event)));
        }
    }

    fn submit(self: &Arc<Self>, held: Held, inner: &Arc<Inner>) {
        let Held {
            request,
            lease,
            received,
        } = held;
        let chunk_id = request.chunk_id;
        let Some(responder) = ({
            let mut state = self.state();
            state.open.insert(chunk_id);
            state.responder.clone()
        }) else {
            return;
        };
        let span = tracing::info_span!(
            parent: &self.span,
            "worker_chunk",
            session_id = %self.id,
            utterance_id = request.utterance_id,
            chunk_id,
        );
        let _ = span.set_parent(tts_proto::trace_context_from_map(&request.trace_context));
        let voice = lease.voice().clone();
        let cancel = self.cancel.token();
        // Checked when the chunk was received.
        let speed = speed(&request).unwrap_or(1.0);
        let mut events = ChunkEvents {
            chunk_id,
            received,
            first_audio: None,
            responder,
            session: Arc::downgrade(self),
            _lease: lease,
        };
        let job = Job {
            voice,
            text: request.text,
            first: request.first,
            cancel,
            session_id: self.id.clone(),
            utterance_id: request.utterance_id,
            speed,
            parent: span,
            events: Box::new(move |event| events.on(event)),
        };
        if let Err(error) = inner.pool.submit(job) {
            self.close(chunk_id, ChunkOutcome::refused);
            self.send(
                chunk_id,
                Event::Failed(ChunkFailed {
                    message: error.to_string(),
                }),
            );
        }
    }

    /// Marks a chunk ended; false when STOP already answered it (nothing more may be sent for it).
    fn close(&self, chunk_id: u64, outcome: ChunkOutcome) -> bool {
        let was_open = self.state().open.remove(&chunk_id);
        if was_open && let Some(inner) = self.inner.upgrade() {
            inner.metrics.chunk_ended(outcome);
        }
        was_open
    }

    fn state(&self) -> MutexGuard<'_, SessionState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Turns one chunk's pool events into stream messages, on the engine thread (sends never block).
struct ChunkEvents {
    chunk_id: u64,
    received: Instant,
    first_audio: Option<f64>,
    responder: Responder,
    session: Weak<WorkerSession>,
    /// Keeps the chunk's voice resident until the pool drops the job.
    _lease: VoiceLease,
}

impl ChunkEvents {
    fn on(&mut self, event: JobEvent) {
        let event = match event {
            JobEvent::Started { queue_wait } => Event::Started(ChunkStarted {
                queue_wait_seconds: queue_wait.as_secs_f64(),
            }),
            JobEvent::Audio(samples) => {
                if self.first_audio.is_none() {
                    let elapsed = self.received.elapsed();
                    self.first_audio = Some(elapsed.as_secs_f64());
                    if let Some(inner) = self.session.upgrade().and_then(|s| s.inner.upgrade()) {
                        inner.metrics.first_audio(elapsed);
                    }
                }
                let mut pcm = Vec::with_capacity(samples.len() * 2);
                for sample in samples {
                    pcm.extend_from_slice(&sample.to_le_bytes());
                }
                Event::Audio(AudioPiece {
                    pcm,
                    sample_rate: tts_core::audio::OUTPUT_SAMPLE_RATE,
                })
            }
            JobEvent::Finished(stats) => {
                if !self.close(ChunkOutcome::finished) {
                    return;
                }
                Event::Finished(ChunkFinished {
                    queue_wait_seconds: stats.queue_wait.as_secs_f64(),
                    engine_first_pcm_seconds: stats.engine_first_pcm.map(|d| d.as_secs_f64()),
                    engine_seconds: stats.engine_time.as_secs_f64(),
                    audio_seconds: stats.audio_seconds,
                    worker_first_audio_seconds: self.first_audio,
                })
            }
            JobEvent::Failed(error) => {
                if !self.close(ChunkOutcome::failed) {
                    return;
                }
                Event::Failed(ChunkFailed {
                    message: error.to_string(),
                })
            }
        };
        let _ = self.responder.send(Ok(response(self.chunk_id, event)));
    }

    fn close(&self, outcome: ChunkOutcome) -> bool {
        self.session
            .upgrade()
            .is_some_and(|session| session.close(self.chunk_id, outcome))
    }
}

fn response(chunk_id: u64, event: Event) -> SynthesizeResponse {
    SynthesizeResponse {
        chunk_id,
        event: Some(event),
    }
}

/// The chunk's speaking rate: 0 (a gateway that does not send one) is 1.0; anything outside
/// [`tts_core::engine::SPEED_RANGE`], or not a number, is `None`.
fn speed(request: &SynthesizeRequest) -> Option<f32> {
    match request.speed {
        0.0 => Some(1.0),
        speed if tts_core::engine::SPEED_RANGE.contains(&speed) => Some(speed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_speed_is_one_when_absent_and_refused_outside_the_range() {
        let with = |speed| SynthesizeRequest {
            speed,
            ..Default::default()
        };
        assert_eq!(speed(&with(0.0)), Some(1.0), "gateways that send none");
        assert_eq!(speed(&with(2.0)), Some(2.0));
        for bad in [0.1, 5.0, f32::NAN, f32::INFINITY, -1.0] {
            assert_eq!(speed(&with(bad)), None, "{bad}");
        }
    }
}
