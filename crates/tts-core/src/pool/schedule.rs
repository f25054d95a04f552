//! The queue: first audio first, then earliest deadline first, where a chunk's deadline is when its
//! session runs out of audio.
//!
//! A session that is already playing has slack: the audio synthesised for it so far lasts until some
//! moment, and its next chunk is needed only then. A session with nothing left to play needs its chunk
//! now. Each job's deadline is the later of its submit time and its session's playback end, estimated
//! from the audio the pool has produced for the session (played in real time from its first piece); a
//! STOP (a new cancel generation) clears the estimate.
//!
//! Two lanes. The first lane holds first chunks of sessions with nothing left to play (a listener waiting
//! for first audio), in arrival order. The second holds every other chunk, earliest deadline first: a
//! session about to run dry goes before one with seconds buffered, and the first chunk of an utterance
//! queued behind one that is still playing waits its turn there. Pure earliest-deadline-first across both
//! lanes was measured worse under overload: a playing session was served only once it had run dry, so
//! every chunk boundary underran (docs/performance.md).
//!
//! The first lane yields to a playing session about to run dry: when the second lane's earliest deadline
//! is within [`GUARD`], that chunk goes first, so under heavy load new utterances wait a little longer
//! for first audio rather than playing ones falling silent mid-sentence.
//!
//! A running chunk yields too, between two pieces of its audio ([`Queue::should_pause`]): once its session
//! has more than [`GUARD`] of audio in hand while a listener waits for first audio or another session
//! runs dry within [`GUARD`], it pauses and goes back into the second lane by its new deadline. A long
//! chunk then no longer holds a thread while others need it, and the rest of a chunk is decoded only when
//! its session is about to need it, so what a barge-in throws away under load is mostly never made.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Queued;

/// A playing session's chunk goes before waiting listeners' first chunks once its session has this
/// little audio left: time for the first part and a first window on a busy machine.
const GUARD: Duration = Duration::from_millis(800);

/// Sessions whose audio ran out this long ago are forgotten (their next chunk is due at once anyway).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// When a session's synthesised audio runs out, for the cancel generation it was produced in.
#[derive(Debug, Clone, Copy)]
struct Playback {
    end: Instant,
    generation: u64,
}

/// The two lanes, each ordered by (deadline, arrival).
#[derive(Default)]
pub(super) struct Queue {
    /// First chunks of sessions with nothing left to play.
    waiting: BTreeMap<(Instant, u64), Queued>,
    /// Every other chunk.
    playing: BTreeMap<(Instant, u64), Queued>,
    next_seq: u64,
    playback: HashMap<Arc<str>, Playback>,
    /// When `playback` was last pruned (None: never).
    pruned: Option<Instant>,
    pub(super) closed: bool,
}

impl Queue {
    pub(super) fn len(&self) -> usize {
        self.waiting.len() + self.playing.len()
    }

    /// When `queued`'s session runs out of audio (its submit time when it has none left).
    fn deadline(&self, queued: &Queued) -> Instant {
        let job = &queued.job;
        match self.playback.get(&job.session_id) {
            Some(p) if p.generation == job.cancel.generation() => p.end.max(queued.enqueued),
            _ => queued.enqueued,
        }
    }

    pub(super) fn push(&mut self, queued: Queued) {
        let deadline = self.deadline(&queued);
        let waiting_for_first_audio =
            queued.paused.is_none() && queued.job.first && deadline == queued.enqueued;
        let key = (deadline, self.next_seq);
        self.next_seq += 1;
        if waiting_for_first_audio {
            self.waiting.insert(key, queued);
        } else {
            self.playing.insert(key, queued);
        }
    }

    pub(super) fn pop(&mut self) -> Option<Queued> {
        self.pop_at(Instant::now())
    }

    /// The next job at `now`: the second lane's earliest when its session runs dry within [`GUARD`],
    /// else the first lane's oldest, else the second lane's earliest.
    pub(super) fn pop_at(&mut self, now: Instant) -> Option<Queued> {
        let playing_due = self
            .playing
            .first_key_value()
            .is_some_and(|((deadline, _), _)| *deadline <= now + GUARD);
        if playing_due || self.waiting.is_empty() {
            self.playing.pop_first()
        } else {
            self.waiting.pop_first()
        }
        .map(|(_, queued)| queued)
    }

    /// A job of `session` in cancel generation `generation` produced `seconds` of audio, the first of it
    /// at `first_audio`: the session plays it after what it already had.
    pub(super) fn played(&mut self, session: &Arc<str>, generation: u64, first_audio: Instant, seconds: f64) {
        let end = self.end_after(session, generation, first_audio, seconds);
        self.playback
            .insert(session.clone(), Playback { end, generation });
        self.prune(first_audio);
    }

    /// When `session` runs out of audio once it has also played `seconds` made from `first_audio` on.
    fn end_after(&self, session: &str, generation: u64, first_audio: Instant, seconds: f64) -> Instant {
        let start = match self.playback.get(session) {
            Some(p) if p.generation == generation => p.end.max(first_audio),
            _ => first_audio,
        };
        start + Duration::from_secs_f64(seconds.max(0.0))
    }

    /// Whether a running chunk of `session` that has made `seconds` of audio from `first_audio` on should
    /// pause at `now` and give its thread to a queued chunk: its session has more than [`GUARD`] of audio
    /// in hand, and a listener is waiting for first audio or a playing session runs dry within [`GUARD`].
    pub(super) fn should_pause(
        &self,
        session: &str,
        generation: u64,
        first_audio: Instant,
        seconds: f64,
        now: Instant,
    ) -> bool {
        if self.end_after(session, generation, first_audio, seconds) <= now + GUARD {
            return false;
        }
        !self.waiting.is_empty()
            || self
                .playing
                .first_key_value()
                .is_some_and(|((deadline, _), _)| *deadline <= now + GUARD)
    }

    /// Forgets sessions whose audio ran out long ago (at most every quarter of [`FORGET_AFTER`]), so the
    /// map stays about as small as the sessions that are playing, whether or not their end is reported.
    fn prune(&mut self, now: Instant) {
        if self
            .pruned
            .is_some_and(|at| now.saturating_duration_since(at) < FORGET_AFTER / 4)
        {
            return;
        }
        self.pruned = Some(now);
        self.playback
            .retain(|_, p| now.saturating_duration_since(p.end) < FORGET_AFTER);
    }

    pub(super) fn forget(&mut self, session: &str) {
        self.playback.remove(session);
    }
}
