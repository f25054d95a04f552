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
//! The first lane yields to playing sessions that would otherwise run dry: a playing session's chunk
//! goes first when its session's audio runs out within [`GUARD`], and, once more chunks are queued than
//! there are engine threads (the machine is behind), within [`GUARD`] plus the time the queue takes to
//! drain (the estimated engine time of every queued chunk, both lanes, over the engine threads). On a
//! quiet machine the rule is [`GUARD`] alone, so a new listener's first chunk goes straight in. Near
//! capacity new utterances wait longer for first audio while playing ones keep playing: at 23-24
//! sessions on two cores a fixed 800 ms guard let 13-33 underruns through in 40 s, this rule none, at
//! the price of a first-audio p95 of 3-4.5 s (docs/performance.md). Costs are estimated per voice from
//! finished chunks (engine seconds per character, a weighted mean); until a voice has finished a chunk
//! its chunks count as zero.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Queued;

/// A playing session's chunk goes before waiting listeners' first chunks once its session has this
/// little audio left beyond the time the queue takes to drain: time for the first part and a first
/// window on a busy machine.
const GUARD: Duration = Duration::from_millis(800);

/// Weight of the newest finished chunk in a voice's cost estimate.
const COST_WEIGHT: f64 = 0.1;

/// Sessions whose audio ran out this long ago are forgotten (their next chunk is due at once anyway).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// When a session's synthesised audio runs out, for the cancel generation it was produced in.
#[derive(Debug, Clone, Copy)]
struct Playback {
    end: Instant,
    generation: u64,
}

/// The two lanes, each ordered by (deadline, arrival).
pub(super) struct Queue {
    /// First chunks of sessions with nothing left to play.
    waiting: BTreeMap<(Instant, u64), Queued>,
    /// Every other chunk.
    playing: BTreeMap<(Instant, u64), Queued>,
    next_seq: u64,
    playback: HashMap<Arc<str>, Playback>,
    /// When `playback` was last pruned (None: never).
    pruned: Option<Instant>,
    /// Voice id → engine seconds per character of its finished chunks (weighted mean).
    cost: HashMap<String, f64>,
    /// Chunks that run at once: the engine threads, at most the machine's cores.
    parallelism: u32,
    pub(super) closed: bool,
}

impl Queue {
    /// An empty queue for `parallelism` chunks at once.
    pub(super) fn new(parallelism: usize) -> Self {
        Self {
            waiting: BTreeMap::new(),
            playing: BTreeMap::new(),
            next_seq: 0,
            playback: HashMap::new(),
            pruned: None,
            cost: HashMap::new(),
            parallelism: u32::try_from(parallelism.max(1)).unwrap_or(u32::MAX),
            closed: false,
        }
    }

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
        let waiting_for_first_audio = queued.job.first && deadline == queued.enqueued;
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

    /// The next job at `now`: the second lane's earliest when its session runs dry within [`GUARD`] (plus
    /// the queue's drain time when the machine is behind: [`Queue::playing_at_risk`]), else the first
    /// lane's oldest, else the second lane's earliest.
    pub(super) fn pop_at(&mut self, now: Instant) -> Option<Queued> {
        if self.playing_at_risk(now) || self.waiting.is_empty() {
            self.playing.pop_first()
        } else {
            self.waiting.pop_first()
        }
        .map(|(_, queued)| queued)
    }

    /// Whether the second lane's earliest chunk is due within [`GUARD`], plus, when more chunks are queued
    /// than there are engine threads, the estimated engine time of every queued chunk spread over the
    /// threads (module docs).
    fn playing_at_risk(&self, now: Instant) -> bool {
        let behind = self.len() > self.parallelism as usize;
        let backlog: Duration = if behind {
            self.waiting
                .values()
                .chain(self.playing.values())
                .map(|queued| self.estimate(queued))
                .sum()
        } else {
            Duration::ZERO
        };
        self.playing
            .first_key_value()
            .is_some_and(|((deadline, _), _)| *deadline <= now + GUARD + backlog / self.parallelism)
    }

    /// The engine time `queued` is expected to take (zero before its voice has finished a chunk).
    fn estimate(&self, queued: &Queued) -> Duration {
        let per_char = self.cost.get(&queued.job.voice.id).copied().unwrap_or(0.0);
        Duration::try_from_secs_f64(per_char * queued.chars as f64).unwrap_or(Duration::ZERO)
    }

    /// A chunk of `voice` with `chars` characters took `engine_time`: updates the voice's cost.
    pub(super) fn finished(&mut self, voice: &str, chars: usize, engine_time: Duration) {
        if chars == 0 {
            return;
        }
        let sample = engine_time.as_secs_f64() / chars as f64;
        match self.cost.get_mut(voice) {
            Some(cost) => *cost += COST_WEIGHT * (sample - *cost),
            None => {
                self.cost.insert(voice.to_owned(), sample);
            }
        }
    }

    /// A job of `session` in cancel generation `generation` produced `seconds` of audio, the first of it
    /// at `first_audio`: the session plays it after what it already had.
    pub(super) fn played(&mut self, session: &Arc<str>, generation: u64, first_audio: Instant, seconds: f64) {
        let length = Duration::from_secs_f64(seconds.max(0.0));
        let entry = self.playback.entry(session.clone()).or_insert(Playback {
            end: first_audio,
            generation,
        });
        if entry.generation != generation {
            *entry = Playback {
                end: first_audio,
                generation,
            };
        }
        entry.end = entry.end.max(first_audio) + length;
        self.prune(first_audio);
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
