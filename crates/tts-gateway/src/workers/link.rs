//! One session's link to its worker: StartSession, one Synthesize stream for the session's life, controls
//! in order, EndSession at the end; and failover.
//!
//! The session keeps at most one chunk submitted, so the link has at most one chunk open. When the
//! stream breaks (the worker died or its connection's keepalive failed) or an open chunk hears nothing
//! for `stall_timeout`, the worker is marked down and the open chunk goes to another worker; the audio
//! the session already got is skipped from the replacement's output (the same text, so the same audio up to
//! the engine's variation), so the listener hears a gap, not a repeat. With no worker left the chunk fails
//! with `WorkerUnavailable` and the session stays open.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Status, Streaming};
use tts_core::engine::EngineError;
use tts_core::pool::{Job, JobEvent, JobStats};
use tts_proto::v1::synthesize_response::Event;
use tts_proto::v1::{
    ControlRequest, EndSessionRequest, StartSessionRequest, SynthesizeRequest, SynthesizeResponse,
};

use super::inbox::{Inbox, Next};
use super::metrics::{FailoverReason, Method};
use super::{Shared, WorkerHandle};
use crate::protocol::Command;

/// An open Synthesize stream on one worker.
struct Conn {
    worker: Arc<WorkerHandle>,
    requests: mpsc::UnboundedSender<SynthesizeRequest>,
    responses: Streaming<SynthesizeResponse>,
}

/// The chunk the session has open.
struct Open {
    job: Job,
    request: SynthesizeRequest,
    sent_at: Instant,
    started: bool,
    first_audio_at: Option<Instant>,
    last_activity: Instant,
    /// Samples already handed to the session, skipped from a replacement worker's output.
    delivered: usize,
    skip: usize,
    /// Set by a failover until the replacement's first audio: when the gap started.
    gap_since: Option<Instant>,
    last_audio_at: Option<Instant>,
}

struct Link {
    shared: Arc<Shared>,
    session_id: Arc<str>,
    conn: Option<Conn>,
    open: Option<Open>,
    next_chunk_id: u64,
    /// The session is paused (no stall deadline then).
    paused: bool,
    /// What the current worker was last told: PAUSE (true) or RESUME (false); a new stream starts false.
    worker_paused: bool,
    /// Workers that failed the open chunk; not tried again for it (a new chunk starts with a clean slate,
    /// and routing skips workers that are still down anyway).
    failed: Vec<String>,
}

enum Wake {
    Message(Next),
    Response(Result<Option<SynthesizeResponse>, Status>),
    Stalled,
}

pub(super) async fn run(shared: Arc<Shared>, session_id: Arc<str>, inbox: Arc<Inbox>) {
    let mut link = Link {
        shared,
        session_id,
        conn: None,
        open: None,
        next_chunk_id: 1,
        paused: false,
        worker_paused: false,
        failed: Vec::new(),
    };
    loop {
        let stall_at = link.stall_deadline();
        let wake = tokio::select! {
            next = inbox.next() => Wake::Message(next),
            response = next_response(&mut link.conn) => Wake::Response(response),
            () = sleep_or_never(stall_at) => Wake::Stalled,
        };
        match wake {
            Wake::Message(Next::Job(job)) => link.start(job).await,
            Wake::Message(Next::Stop) => link.stop().await,
            Wake::Message(Next::Pause(paused)) => link.pause(paused).await,
            Wake::Message(Next::End) => break,
            Wake::Response(Ok(Some(response))) => link.on_response(response),
            // Only a worker that is shutting down closes a stream cleanly.
            Wake::Response(Ok(None)) => {
                link.failover(FailoverReason::draining, "the worker closed the stream")
                    .await
            }
            Wake::Response(Err(status)) => {
                let reason = if status.code() == tonic::Code::Unavailable {
                    FailoverReason::unavailable
                } else {
                    FailoverReason::stream_error
                };
                if let Some(conn) = &link.conn {
                    link.shared
                        .metrics
                        .rpc_error(&conn.worker.label, Method::synthesize, status.code());
                }
                link.failover(reason, status.message()).await;
            }
            Wake::Stalled => link.failover(FailoverReason::deadline, "no progress").await,
        }
    }
    inbox.close();
    link.close().await;
}

async fn next_response(conn: &mut Option<Conn>) -> Result<Option<SynthesizeResponse>, Status> {
    match conn {
        Some(conn) => conn.responses.message().await,
        None => std::future::pending().await,
    }
}

async fn sleep_or_never(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Link {
    /// An open chunk must hear from its worker (started, audio, end) within the stall timeout, unless the
    /// session is paused (the worker holds its chunks then). Queued counts too: a worker whose engines are
    /// stuck would otherwise hold the chunk forever.
    fn stall_deadline(&self) -> Option<Instant> {
        let open = self.open.as_ref()?;
        (!self.paused).then(|| open.last_activity + self.shared.config.stall_timeout)
    }

    async fn start(&mut self, job: Job) {
        // The session submits a new chunk only after the last one ended or was stopped.
        self.open = None;
        self.failed.clear();
        if job.cancel.is_cancelled() {
            self.shared.metrics.chunks_discarded(1);
            return;
        }
        let chunk_id = self.next_chunk_id;
        self.next_chunk_id += 1;
        let request = SynthesizeRequest {
            session_id: self.session_id.to_string(),
            utterance_id: job.utterance_id,
            chunk_id,
            voice: job.voice.id.clone(),
            text: job.text.clone(),
            first: job.first,
            trace_context: tts_proto::trace_context_map(&job.parent),
            speed: job.speed,
        };
        let now = Instant::now();
        self.open = Some(Open {
            job,
            request,
            sent_at: now,
            started: false,
            first_audio_at: None,
            last_activity: now,
            delivered: 0,
            skip: 0,
            gap_since: None,
            last_audio_at: None,
        });
        self.send_open(None).await;
    }

    /// Sends the open chunk on the current stream, or on a new one to the best worker left. `failover`
    /// names why an earlier worker was left, so the worker taking over is counted.
    async fn send_open(&mut self, failover: Option<FailoverReason>) {
        loop {
            let Some(open) = &mut self.open else {
                return;
            };
            open.sent_at = Instant::now();
            open.last_activity = open.sent_at;
            let request = open.request.clone();
            if let Some(conn) = &self.conn {
                if conn.requests.send(request).is_ok() {
                    return;
                }
                self.drop_conn(true);
                continue;
            }
            let voice = request.voice.clone();
            let Some(worker) = self.shared.pick(&voice, &self.failed) else {
                self.fail_open(EngineError::WorkerUnavailable(format!(
                    "no worker can take voice {voice} ({} failed on this chunk)",
                    self.failed.len()
                )));
                return;
            };
            let mut start_metadata = tonic::metadata::MetadataMap::new();
            tts_proto::inject_trace_context(&open.job.parent, &mut start_metadata);
            tts_proto::inject_ids(&mut start_metadata, &self.session_id, request.utterance_id);
            match connect(&self.shared, &self.session_id, &worker, request, start_metadata).await {
                Ok(conn) => {
                    if let Some(reason) = failover {
                        self.shared.metrics.failover(&worker.label, reason);
                        tracing::warn!(
                            session_id = %self.session_id,
                            worker = %worker.name,
                            "Synthesis moved to another worker."
                        );
                    }
                    self.conn = Some(conn);
                    self.worker_paused = false;
                    return;
                }
                Err(status) => {
                    tracing::warn!(
                        session_id = %self.session_id,
                        worker = %worker.name,
                        error = %status,
                        "Could not open a session on the worker."
                    );
                    worker.release_session();
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                    ) {
                        worker.mark_down();
                    }
                    self.failed.push(worker.name.clone());
                }
            }
        }
    }

    fn on_response(&mut self, response: SynthesizeResponse) {
        let Some(open) = self
            .open
            .as_mut()
            .filter(|o| o.request.chunk_id == response.chunk_id)
        else {
            return;
        };
        if open.job.cancel.is_cancelled() {
            self.open = None;
            return;
        }
        let now = Instant::now();
        open.last_activity = now;
        let worker = self.conn.as_ref().map(|c| c.worker.clone());
        let label = worker.as_ref().map_or("", |w| w.label.as_str());
        match response.event {
            Some(Event::Started(started)) => {
                match reported(started.queue_wait_seconds, "queue_wait_seconds") {
                    Ok(queue_wait) => {
                        open.started = true;
                        (open.job.events)(JobEvent::Started { queue_wait });
                    }
                    Err(reason) => self.fail_invalid(label, reason),
                }
            }
            Some(Event::Audio(piece)) => {
                if open.first_audio_at.is_none() {
                    open.first_audio_at = Some(now);
                    self.shared
                        .metrics
                        .rpc(label, Method::synthesize, now - open.sent_at);
                }
                let mut samples: Vec<i16> = piece
                    .pcm
                    .chunks_exact(2)
                    .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
                    .collect();
                let skipped = open.skip.min(samples.len());
                samples.drain(..skipped);
                open.skip -= skipped;
                if samples.is_empty() {
                    return;
                }
                if let Some(since) = open.gap_since.take() {
                    self.shared.metrics.failover_gap(now - since);
                }
                open.delivered += samples.len();
                open.last_audio_at = Some(now);
                (open.job.events)(JobEvent::Audio(samples));
            }
            Some(Event::Finished(finished)) => {
                let stats = match finished_stats(&finished) {
                    Ok(stats) => stats,
                    Err(reason) => return self.fail_invalid(label, reason),
                };
                self.shared.metrics.engine_busy(label, stats.engine_time);
                if let (Some(first), Some(worker_first)) =
                    (open.first_audio_at, finished.worker_first_audio_seconds)
                    && let Ok(worker_first) = reported(worker_first, "worker_first_audio_seconds")
                {
                    let hop = (first - open.sent_at).saturating_sub(worker_first);
                    self.shared.metrics.hop(label, hop);
                }
                if let Some(mut open) = self.open.take() {
                    (open.job.events)(JobEvent::Finished(stats));
                }
            }
            Some(Event::Failed(failed)) => {
                let name = worker.map_or_else(|| "?".to_owned(), |w| w.name.clone());
                let error = EngineError::Inference {
                    voice: open.request.voice.clone(),
                    reason: format!("worker {name}: {}", failed.message),
                };
                self.fail_open(error);
            }
            // Only a STOP or the session's end cancels on the worker, and both drop the open chunk here
            // first; a cancel for an open chunk means the worker ended the session on its own.
            Some(Event::Cancelled(_)) => {
                let error = EngineError::Inference {
                    voice: open.request.voice.clone(),
                    reason: "the worker cancelled the chunk".to_owned(),
                };
                self.fail_open(error);
            }
            None => {}
        }
    }

    /// The worker sent a value no real chunk can have: that chunk fails (its worker is not trusted with
    /// it), and nothing downstream ever sees the value.
    fn fail_invalid(&mut self, label: &str, reason: String) {
        tracing::warn!(worker = label, error = %reason, "A worker sent an invalid value; the chunk fails.");
        let voice = self
            .open
            .as_ref()
            .map(|open| open.request.voice.clone())
            .unwrap_or_default();
        self.fail_open(EngineError::Inference {
            voice,
            reason: format!("worker {label}: {reason}"),
        });
    }

    fn fail_open(&mut self, error: EngineError) {
        if let Some(mut open) = self.open.take()
            && !open.job.cancel.is_cancelled()
        {
            (open.job.events)(JobEvent::Failed(error));
        }
    }

    /// The stream to the current worker failed: mark it down and move the open chunk elsewhere.
    async fn failover(&mut self, reason: FailoverReason, detail: &str) {
        let Some(conn) = &self.conn else {
            return;
        };
        tracing::warn!(
            session_id = %self.session_id,
            worker = %conn.worker.name,
            reason = ?reason,
            error = detail,
            "Worker stream failed."
        );
        self.drop_conn(true);
        let Some(open) = &mut self.open else {
            return;
        };
        if open.job.cancel.is_cancelled() {
            self.open = None;
            return;
        }
        open.gap_since = Some(open.last_audio_at.unwrap_or_else(Instant::now));
        open.skip = open.delivered;
        open.started = false;
        open.first_audio_at = None;
        self.send_open(Some(reason)).await;
    }

    fn drop_conn(&mut self, failed: bool) {
        if let Some(conn) = self.conn.take() {
            conn.worker.release_session();
            if failed {
                conn.worker.mark_down();
                self.failed.push(conn.worker.name.clone());
            }
        }
    }

    /// Forwards a STOP and waits for it, so a chunk sent after it is never cancelled by it.
    async fn stop(&mut self) {
        self.open = None;
        self.send_control(Command::Stop).await;
    }

    /// The session's PAUSE/RESUME state, however many messages it stands for: one call when the worker was
    /// told otherwise.
    async fn pause(&mut self, paused: bool) {
        self.paused = paused;
        if !paused && let Some(open) = &mut self.open {
            open.last_activity = Instant::now();
        }
        if paused == self.worker_paused || self.conn.is_none() {
            return;
        }
        self.worker_paused = paused;
        let command = if paused { Command::Pause } else { Command::Resume };
        self.send_control(command).await;
    }

    async fn send_control(&mut self, command: Command) {
        let Some(conn) = &self.conn else {
            return;
        };
        let worker = conn.worker.clone();
        let proto_command = match command {
            Command::Pause => tts_proto::v1::Command::Pause,
            Command::Resume => tts_proto::v1::Command::Resume,
            Command::Stop => tts_proto::v1::Command::Stop,
        };
        let request = ControlRequest {
            session_id: self.session_id.to_string(),
            command: proto_command as i32,
        };
        let began = Instant::now();
        let result = timeout(
            self.shared.config.rpc_timeout,
            worker.client.clone().control(request),
        )
        .await;
        self.shared
            .metrics
            .rpc(&worker.label, Method::control, began.elapsed());
        if let Err(status) = flatten(result) {
            self.shared
                .metrics
                .rpc_error(&worker.label, Method::control, status.code());
            tracing::warn!(session_id = %self.session_id, worker = %worker.name, error = %status, "Control did not reach the worker.");
        }
    }

    /// The session ended: close the stream and end the session on the worker.
    async fn close(mut self) {
        self.open = None;
        let Some(conn) = self.conn.take() else {
            return;
        };
        drop(conn.requests);
        let worker = conn.worker;
        worker.release_session();
        let began = Instant::now();
        let request = EndSessionRequest {
            session_id: self.session_id.to_string(),
        };
        let result = timeout(
            self.shared.config.rpc_timeout,
            worker.client.clone().end_session(request),
        )
        .await;
        self.shared
            .metrics
            .rpc(&worker.label, Method::end_session, began.elapsed());
        if let Err(status) = flatten(result) {
            self.shared
                .metrics
                .rpc_error(&worker.label, Method::end_session, status.code());
        }
    }
}

/// StartSession, then the Synthesize stream with `first` already queued on it (the worker reads the first
/// chunk before it answers the call). A free function: the open chunk's job is not `Sync`, so nothing that
/// holds it may be borrowed across these awaits.
async fn connect(
    shared: &Arc<Shared>,
    session_id: &Arc<str>,
    worker: &Arc<WorkerHandle>,
    first: SynthesizeRequest,
    start_metadata: tonic::metadata::MetadataMap,
) -> Result<Conn, Status> {
    let metrics = &shared.metrics;
    let mut client = worker.client.clone();
    let mut start = Request::new(StartSessionRequest {
        session_id: session_id.to_string(),
        voice: first.voice.clone(),
    });
    *start.metadata_mut() = start_metadata;
    let began = Instant::now();
    let result = flatten(timeout(shared.config.start_timeout, client.start_session(start)).await);
    metrics.rpc(&worker.label, Method::start_session, began.elapsed());
    if let Err(status) = &result {
        metrics.rpc_error(&worker.label, Method::start_session, status.code());
    }
    result?;
    let (requests, inbox) = mpsc::unbounded_channel();
    let _ = requests.send(first);
    let mut call = Request::new(UnboundedReceiverStream::new(inbox));
    tts_proto::inject_ids(call.metadata_mut(), session_id, 0);
    let opened = flatten(timeout(shared.config.rpc_timeout, client.synthesize(call)).await);
    let responses = opened.inspect_err(|status| {
        metrics.rpc_error(&worker.label, Method::synthesize, status.code());
    })?;
    Ok(Conn {
        worker: worker.clone(),
        requests,
        responses: responses.into_inner(),
    })
}

fn flatten<T>(
    result: Result<Result<tonic::Response<T>, Status>, tokio::time::error::Elapsed>,
) -> Result<tonic::Response<T>, Status> {
    match result {
        Ok(inner) => inner,
        Err(_) => Err(Status::deadline_exceeded("the worker did not answer in time")),
    }
}

/// The longest duration a worker may report for one chunk; anything longer is a lie or a bug.
const MAX_REPORTED_SECONDS: f64 = 3600.0;

/// A duration a worker reported, checked: non-finite, negative and absurd values are errors, never a
/// panic in `Duration::from_secs_f64` and never a sample in a histogram.
fn reported(seconds: f64, field: &str) -> Result<Duration, String> {
    if seconds.is_finite() && (0.0..=MAX_REPORTED_SECONDS).contains(&seconds) {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(format!(
            "{field} = {seconds} is not a duration between 0 and {MAX_REPORTED_SECONDS} seconds"
        ))
    }
}

fn finished_stats(finished: &tts_proto::v1::ChunkFinished) -> Result<JobStats, String> {
    Ok(JobStats {
        queue_wait: reported(finished.queue_wait_seconds, "queue_wait_seconds")?,
        engine_first_pcm: finished
            .engine_first_pcm_seconds
            .map(|s| reported(s, "engine_first_pcm_seconds"))
            .transpose()?,
        engine_time: reported(finished.engine_seconds, "engine_seconds")?,
        audio_seconds: reported(finished.audio_seconds, "audio_seconds")?.as_secs_f64(),
    })
}

#[cfg(test)]
mod value_tests {
    use super::*;

    #[test]
    fn values_no_chunk_can_have_are_errors_that_name_the_field() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
            let error = reported(bad, "engine_seconds").unwrap_err();
            assert!(error.starts_with("engine_seconds = "), "{error}");
        }
        assert_eq!(reported(0.25, "x"), Ok(Duration::from_millis(250)));
        let finished = tts_proto::v1::ChunkFinished {
            engine_seconds: f64::INFINITY,
            ..Default::default()
        };
        assert!(finished_stats(&finished).unwrap_err().contains("engine_seconds"));
    }
}
