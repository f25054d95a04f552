//! A session's utterances in order, and the one chunk it may have at the engine pool.
//!
//! Every operation the driver performs per frame, per client message and per engine event is O(1)
//! amortised, whatever the number of queued utterances: the characters waiting and the frames buffered are
//! counters kept up to date as chunks and frames come and go; an utterance is found by id in O(1) because
//! ids are consecutive and utterances leave only from the front (or all at once on STOP); and the next
//! chunk to submit comes from a cursor that only moves forward, since only the newest utterance can still
//! receive text.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;
use tts_core::audio::{Frame, Framer};
use tts_core::text::Chunk;
use tts_core::voices::VoiceInfo;

use crate::protocol::SessionError;

/// One utterance: its chunks not yet submitted, its frames not yet sent, and the instants its metrics
/// are computed from.
pub(super) struct Utterance {
    pub(super) id: u64,
    pub(super) generation: u64,
    pub(super) voice: Arc<VoiceInfo>,
    /// Chunks not yet handed to the pool (counted in [`Utterances::pending_chars`]).
    chunks: VecDeque<Chunk>,
    /// `is_final` text has been received.
    pub(super) text_complete: bool,
    /// Every chunk is synthesised and the framer flushed: the frames queue holds the rest of the audio.
    pub(super) synth_done: bool,
    framer: Framer,
    /// Frames not yet sent (counted in [`Utterances::buffered_frames`]).
    frames: VecDeque<Frame>,
    pub(super) frames_sent: u64,
    /// When the text that gave this utterance its first chunk was read (first-audio clock start).
    pub(super) text_read_at: Option<Instant>,
    pub(super) underruns: u64,
    pub(super) failed: bool,
    /// First-audio stage boundaries, as the driver saw them for the utterance's first chunk.
    pub(super) first_submitted_at: Option<Instant>,
    pub(super) first_started_at: Option<Instant>,
    pub(super) first_pcm_at: Option<Instant>,
    /// The last chunk finished (end of synthesis for the utterance).
    pub(super) last_finished_at: Option<Instant>,
    /// The previous frame of this utterance handed to the socket, for the frame interval (cleared by PAUSE).
    pub(super) last_frame_at: Option<Instant>,
    /// Child of the session span; ends when the utterance is dropped.
    pub(super) span: tracing::Span,
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

    /// Chunks of its text not yet handed to the engine pool.
    pub(super) fn chunks_waiting(&self) -> usize {
        self.chunks.len()
    }

    /// Frames synthesised and not yet sent.
    pub(super) fn has_frames(&self) -> bool {
        !self.frames.is_empty()
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

/// The next chunk to hand to the pool, with what the job needs from its utterance.
pub(super) struct NextChunk {
    pub(super) chunk: Chunk,
    pub(super) utterance_id: u64,
    pub(super) generation: u64,
    pub(super) voice: Arc<VoiceInfo>,
    pub(super) span: tracing::Span,
    characters: usize,
}

/// What a STOP took away: every utterance (oldest first), the frames they still held, and the voice of the
/// chunk an engine was working on, if one had started.
pub(super) struct Stopped {
    pub(super) utterances: Vec<Utterance>,
    pub(super) frames: usize,
    pub(super) cancelled: Option<Arc<VoiceInfo>>,
}

/// A chunk the engine finished: the voice and how many characters it had (when it was the one in flight).
pub(super) struct Finished {
    pub(super) voice: Arc<VoiceInfo>,
    pub(super) characters: Option<usize>,
}

/// A session's limits on what may wait (`gateway.max_pending_chars`, `gateway.max_queued_utterances`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Caps {
    pub(super) max_pending_chars: usize,
    pub(super) max_queued_utterances: usize,
}

/// A count of utterances looked at, kept in test builds only.
#[derive(Debug, Default)]
struct Visits(#[cfg(test)] u64);

impl Visits {
    #[cfg(test)]
    fn add(&mut self, n: u64) {
        self.0 += n;
    }

    #[cfg(not(test))]
    fn add(&mut self, _n: u64) {}
}

/// The session's utterances, oldest first.
pub(super) struct Utterances {
    queue: VecDeque<Utterance>,
    next_id: u64,
    /// The utterance whose chunk is at the pool, if any: at most one per session, which keeps the
    /// session's order and makes the pool's FIFO lanes round-robin across sessions.
    in_flight: Option<InFlight>,
    /// Id of the oldest utterance that may still have chunks to submit.
    cursor: u64,
    /// Characters in chunks not yet handed to the pool, over all utterances.
    pending_chars: usize,
    /// Frames not yet sent, over all utterances.
    buffered_frames: usize,
    /// Utterances looked at so far: lets tests bound the work per event.
    visits: Visits,
}

impl Utterances {
    pub(super) fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            next_id: 1,
            in_flight: None,
            cursor: 1,
            pending_chars: 0,
            buffered_frames: 0,
            visits: Visits::default(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(super) fn front(&self) -> Option<&Utterance> {
        self.queue.front()
    }

    /// The playing utterance, for the clock's bookkeeping; its frames go through [`Self::pop_frame`].
    pub(super) fn front_mut(&mut self) -> Option<&mut Utterance> {
        self.queue.front_mut()
    }

    /// The newest utterance still takes text (no `is_final` yet).
    pub(super) fn is_open(&self) -> bool {
        self.queue.back().is_some_and(|u| !u.text_complete)
    }

    /// Frames synthesised and not yet sent.
    pub(super) fn buffered_frames(&self) -> usize {
        self.buffered_frames
    }

    /// A chunk of this session is at the pool.
    pub(super) fn has_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether `incoming` more characters fit, with `segmenter_pending` characters still in the segmenter:
    /// characters waiting are capped, and so are utterances when the text would open a new one.
    pub(super) fn room_for(
        &self,
        incoming: usize,
        segmenter_pending: usize,
        caps: &Caps,
    ) -> Result<(), SessionError> {
        let pending = self.pending_chars + segmenter_pending;
        if pending + incoming > caps.max_pending_chars {
            return Err(SessionError::TooManyCharacters {
                pending,
                limit: caps.max_pending_chars,
            });
        }
        if !self.is_open() && self.queue.len() >= caps.max_queued_utterances {
            return Err(SessionError::TooManyUtterances {
                limit: caps.max_queued_utterances,
            });
        }
        Ok(())
    }

    /// Starts a new utterance at the back and returns its id.
    pub(super) fn push(&mut self, generation: u64, voice: Arc<VoiceInfo>, session: &tracing::Span) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queue
            .push_back(Utterance::new(id, generation, voice, session));
        id
    }

    /// Adds text's chunks to the newest utterance; `is_final` completes it.
    pub(super) fn add_text(&mut self, chunks: Vec<Chunk>, is_final: bool, read_at: Instant) {
        let in_flight = self.in_flight;
        let Some(utterance) = self.queue.back_mut() else {
            return;
        };
        if !chunks.is_empty() && utterance.text_read_at.is_none() {
            utterance.text_read_at = Some(read_at);
        }
        self.pending_chars += chunks.iter().map(|c| c.text.chars().count()).sum::<usize>();
        utterance.chunks.extend(chunks);
        if is_final {
            utterance.text_complete = true;
            utterance.text_read_at.get_or_insert(read_at);
            self.buffered_frames += settle(utterance, in_flight);
        }
    }

    /// Takes the next chunk to submit, oldest utterance first; `None` while one is at the pool.
    pub(super) fn next_chunk(&mut self, now: Instant) -> Option<NextChunk> {
        if self.in_flight.is_some() {
            return None;
        }
        let front_id = self.queue.front()?.id;
        self.cursor = self.cursor.max(front_id);
        loop {
            let index = usize::try_from(self.cursor - front_id).ok()?;
            let utterance = self.queue.get_mut(index)?;
            self.visits.add(1);
            if let Some(chunk) = utterance.chunks.pop_front() {
                let characters = chunk.text.chars().count();
                self.pending_chars -= characters;
                if chunk.first {
                    utterance.first_submitted_at.get_or_insert(now);
                }
                return Some(NextChunk {
                    chunk,
                    utterance_id: utterance.id,
                    generation: utterance.generation,
                    voice: utterance.voice.clone(),
                    span: utterance.span.clone(),
                    characters,
                });
            }
            if !utterance.text_complete {
                // The newest utterance: more text may come.
                return None;
            }
            self.cursor += 1;
        }
    }

    /// The chunk from [`Self::next_chunk`] goes to the pool: it is the session's one chunk in flight.
    pub(super) fn submitted(&mut self, next: &NextChunk) {
        self.in_flight = Some(InFlight {
            utterance_id: next.utterance_id,
            characters: next.characters,
            first: next.chunk.first,
            started: false,
        });
    }

    /// The pool refused the chunk: it is not in flight, and its utterance fails with its other chunks.
    pub(super) fn refused(&mut self, utterance_id: u64, generation: u64) {
        self.in_flight = None;
        let _ = self.fail(utterance_id, generation);
    }

    /// An engine thread took the chunk; returns whether it was an utterance's first chunk, or `None` when
    /// the utterance is gone (stopped).
    pub(super) fn started(&mut self, utterance_id: u64, generation: u64, now: Instant) -> Option<bool> {
        let first = self
            .in_flight
            .is_some_and(|f| f.utterance_id == utterance_id && f.first);
        let utterance = self.get_mut(utterance_id, generation)?;
        if first {
            utterance.first_started_at.get_or_insert(now);
        }
        if let Some(current) = self.in_flight.as_mut().filter(|f| f.utterance_id == utterance_id) {
            current.started = true;
        }
        Some(first)
    }

    /// PCM from the engine, cut into frames.
    pub(super) fn audio(&mut self, utterance_id: u64, generation: u64, samples: &[i16], now: Instant) {
        let Some(utterance) = self.get_mut(utterance_id, generation) else {
            return;
        };
        if utterance.first_started_at.is_some() {
            utterance.first_pcm_at.get_or_insert(now);
        }
        let mut frames = Vec::new();
        utterance.framer.push(samples, &mut frames);
        let added = frames.len();
        utterance.frames.extend(frames);
        self.buffered_frames += added;
    }

    /// The chunk at the pool finished; `None` when its utterance is gone.
    pub(super) fn finished(&mut self, utterance_id: u64, generation: u64, now: Instant) -> Option<Finished> {
        let characters = self
            .in_flight
            .filter(|f| f.utterance_id == utterance_id)
            .map(|f| f.characters);
        let utterance = self.get_mut(utterance_id, generation)?;
        utterance.last_finished_at = Some(now);
        let voice = utterance.voice.clone();
        let flushed = settle(utterance, None);
        self.buffered_frames += flushed;
        self.in_flight = None;
        Some(Finished { voice, characters })
    }

    /// The chunk at the pool failed: the utterance fails and its remaining chunks are dropped. Returns its
    /// voice, or `None` when the utterance is gone.
    pub(super) fn failed(&mut self, utterance_id: u64, generation: u64) -> Option<Arc<VoiceInfo>> {
        let voice = self.fail(utterance_id, generation)?;
        self.in_flight = None;
        Some(voice)
    }

    fn fail(&mut self, utterance_id: u64, generation: u64) -> Option<Arc<VoiceInfo>> {
        let utterance = self.get_mut(utterance_id, generation)?;
        let dropped: usize = utterance.chunks.drain(..).map(|c| c.text.chars().count()).sum();
        utterance.failed = true;
        let voice = utterance.voice.clone();
        let flushed = settle(utterance, None);
        self.pending_chars -= dropped;
        self.buffered_frames += flushed;
        Some(voice)
    }

    /// The playing utterance's next frame.
    pub(super) fn pop_frame(&mut self) -> Option<Frame> {
        let front = self.queue.front_mut()?;
        let frame = front.frames.pop_front()?;
        front.frames_sent += 1;
        self.buffered_frames -= 1;
        Some(frame)
    }

    /// Removes the front utterance when all of its audio has been sent.
    pub(super) fn pop_finished(&mut self) -> Option<Utterance> {
        let front = self.queue.front()?;
        self.visits.add(1);
        if !(front.synth_done && front.frames.is_empty()) {
            return None;
        }
        // Synthesised to the end, so no chunk of it is left in `pending_chars`.
        self.queue.pop_front()
    }

    /// STOP: every utterance goes.
    pub(super) fn stop(&mut self) -> Stopped {
        let cancelled = self.take_cancelled();
        let utterances: Vec<Utterance> = self.queue.drain(..).collect();
        self.visits.add(utterances.len() as u64);
        let frames = self.buffered_frames;
        self.buffered_frames = 0;
        self.pending_chars = 0;
        self.cursor = self.next_id;
        Stopped {
            utterances,
            frames,
            cancelled,
        }
    }

    /// Forgets the chunk at the pool; returns its voice when an engine had started it (an engine task
    /// cancelled), `None` when it had not (the scheduler discards it) or there was none.
    pub(super) fn take_cancelled(&mut self) -> Option<Arc<VoiceInfo>> {
        let in_flight = self.in_flight.take().filter(|f| f.started)?;
        let index = self.index(in_flight.utterance_id)?;
        self.queue.get(index).map(|u| u.voice.clone())
    }

    /// Where utterance `id` is: ids are consecutive from the front.
    fn index(&self, id: u64) -> Option<usize> {
        let front_id = self.queue.front()?.id;
        let index = usize::try_from(id.checked_sub(front_id)?).ok()?;
        (index < self.queue.len()).then_some(index)
    }

    fn get_mut(&mut self, id: u64, generation: u64) -> Option<&mut Utterance> {
        let index = self.index(id)?;
        self.visits.add(1);
        self.queue.get_mut(index).filter(|u| u.generation == generation)
    }
}

/// Marks an utterance fully synthesised once its text is complete and nothing is left to synthesise,
/// flushing the framer's zero-padded last frame. Returns the frames it added (0 or 1).
fn settle(utterance: &mut Utterance, in_flight: Option<InFlight>) -> usize {
    if utterance.synth_done || !utterance.text_complete || !utterance.chunks.is_empty() {
        return 0;
    }
    if in_flight.is_some_and(|f| f.utterance_id == utterance.id) {
        return 0;
    }
    utterance.synth_done = true;
    match utterance.framer.finish() {
        Some(last) => {
            utterance.frames.push_back(last);
            1
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests;
