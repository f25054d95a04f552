//! Which voices keep loaded engines in the pool: at most `max_resident_voices` of them, and none idle for
//! longer than `idle_ttl`, by the worker's model-manager rules.
//!
//! - A voice becomes resident when a job (or a warm-up) first asks for it, and is loaded by the engine
//!   thread that runs the job.
//! - A voice is in use while a job for it is queued or running, or while a session whose latest job was
//!   for it is open (until [`super::Pool::end_session`]). A voice in use is never unloaded.
//! - A voice over the cap evicts the least recently used voice that is not in use and not pinned; when
//!   every resident voice is in use, the job is refused ([`super::SubmitError::VoicesInUse`]), so a
//!   client gets `OVERLOADED` rather than a wait of unknown length.
//! - Pinned voices (the server's default voice) are never unloaded; they count towards the cap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bounds on the voices whose engines stay loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResidencyLimits {
    /// Voices with loaded engines at once; None: no bound (a worker's model manager decides instead).
    pub max_resident_voices: Option<usize>,
    /// A voice not in use for this long is unloaded; None: never.
    pub idle_ttl: Option<Duration>,
}

impl ResidencyLimits {
    /// No cap and no TTL: voices stay until [`super::Pool::unload`].
    pub fn unbounded() -> Self {
        Self::default()
    }

    /// How often idle voices are looked for: a quarter of the TTL, between 50 ms and 10 s.
    pub(super) fn sweep_interval(&self) -> Duration {
        self.idle_ttl.map_or(Duration::from_secs(10), |ttl| {
            (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(10))
        })
    }
}

/// The pool's resident voices now and since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResidencyStats {
    /// Voices resident (loaded, or to be loaded by a queued job).
    pub resident: usize,
    /// Times a voice became resident.
    pub loads: u64,
    /// Voices unloaded because a new one needed the room.
    pub evicted_for_room: u64,
    /// Voices unloaded after `idle_ttl` without use.
    pub evicted_idle: u64,
    /// Jobs refused because every resident voice was in use.
    pub refused: u64,
}

/// Every resident voice was in use, so a new one could not be made resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AllInUse(pub(super) usize);

struct Voice {
    /// Jobs queued or running, and warm-ups in progress.
    jobs: usize,
    /// Open sessions whose latest job was for this voice.
    sessions: usize,
    last_used: Instant,
    pinned: bool,
}

impl Voice {
    fn may_go(&self) -> bool {
        self.jobs == 0 && self.sessions == 0 && !self.pinned
    }
}

/// The residency book; the pool keeps it under one lock.
pub(super) struct Residency {
    limits: ResidencyLimits,
    voices: HashMap<String, Voice>,
    /// Session id → the voice of its latest job.
    sessions: HashMap<Arc<str>, String>,
    stats: ResidencyStats,
    last_sweep: Instant,
}

impl Residency {
    pub(super) fn new(limits: ResidencyLimits) -> Self {
        Self {
            limits,
            voices: HashMap::new(),
            sessions: HashMap::new(),
            stats: ResidencyStats::default(),
            last_sweep: Instant::now(),
        }
    }

    pub(super) fn stats(&self) -> ResidencyStats {
        ResidencyStats {
            resident: self.voices.len(),
            ..self.stats
        }
    }

    /// Counts one more job (or warm-up) for `voice`, on behalf of `session` if given, making the voice
    /// resident if it was not. Returns the voice evicted to make room, if any.
    pub(super) fn admit(
        &mut self,
        voice: &str,
        session: Option<&Arc<str>>,
        now: Instant,
    ) -> Result<Option<String>, AllInUse> {
        let mut evicted = None;
        if !self.voices.contains_key(voice) {
            if let Some(cap) = self.limits.max_resident_voices
                && self.voices.len() >= cap
            {
                let victim = self
                    .voices
                    .iter()
                    .filter(|(_, v)| v.may_go())
                    .min_by_key(|(_, v)| v.last_used)
                    .map(|(id, _)| id.clone());
                let Some(victim) = victim else {
                    self.stats.refused += 1;
                    return Err(AllInUse(cap));
                };
                self.voices.remove(&victim);
                self.stats.evicted_for_room += 1;
                evicted = Some(victim);
            }
            self.stats.loads += 1;
            let fresh = Voice {
                jobs: 0,
                sessions: 0,
                last_used: now,
                pinned: false,
            };
            self.voices.insert(voice.to_owned(), fresh);
        }
        if let Some(session) = session {
            self.hold(session, voice);
        }
        if let Some(entry) = self.voices.get_mut(voice) {
            entry.jobs += 1;
            entry.last_used = now;
        }
        Ok(evicted)
    }

    /// Moves `session`'s hold to `voice`.
    fn hold(&mut self, session: &Arc<str>, voice: &str) {
        let previous = self.sessions.insert(session.clone(), voice.to_owned());
        if previous.as_deref() == Some(voice) {
            return;
        }
        if let Some(entry) = self.voices.get_mut(voice) {
            entry.sessions += 1;
        }
        if let Some(previous) = previous {
            self.release(&previous);
        }
    }

    fn release(&mut self, voice: &str) {
        if let Some(entry) = self.voices.get_mut(voice) {
            entry.sessions = entry.sessions.saturating_sub(1);
            entry.last_used = Instant::now();
        }
    }

    /// A job (or warm-up) admitted for `voice` ended, ran or not.
    pub(super) fn job_done(&mut self, voice: &str) {
        if let Some(entry) = self.voices.get_mut(voice) {
            entry.jobs = entry.jobs.saturating_sub(1);
            entry.last_used = Instant::now();
        }
    }

    /// The session is over: its voice is no longer held by it.
    pub(super) fn end_session(&mut self, session: &str) {
        if let Some(voice) = self.sessions.remove(session) {
            self.release(&voice);
        }
    }

    /// Keeps `voice` resident for good (it still counts towards the cap).
    pub(super) fn pin(&mut self, voice: &str) {
        let entry = self.voices.entry(voice.to_owned()).or_insert_with(|| Voice {
            jobs: 0,
            sessions: 0,
            last_used: Instant::now(),
            pinned: false,
        });
        entry.pinned = true;
    }

    /// Forgets `voice` (unloaded by hand): it is resident again at its next job.
    pub(super) fn forget(&mut self, voice: &str) {
        self.voices.remove(voice);
    }

    /// Removes and returns the voices idle past the TTL, at most once per sweep interval.
    pub(super) fn sweep(&mut self, now: Instant) -> Vec<String> {
        let Some(ttl) = self.limits.idle_ttl else {
            return Vec::new();
        };
        if now.duration_since(self.last_sweep) < self.limits.sweep_interval() {
            return Vec::new();
        }
        self.last_sweep = now;
        let expired: Vec<String> = self
            .voices
            .iter()
            .filter(|(_, v)| v.may_go() && now.duration_since(v.last_used) >= ttl)
            .map(|(id, _)| id.clone())
            .collect();
        for voice in &expired {
            self.voices.remove(voice);
        }
        self.stats.evicted_idle += expired.len() as u64;
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(cap: usize) -> Residency {
        Residency::new(ResidencyLimits {
            max_resident_voices: Some(cap),
            idle_ttl: None,
        })
    }

    #[test]
    fn the_least_recently_used_idle_voice_makes_room() {
        let mut book = capped(2);
        let t0 = Instant::now();
        let s: Arc<str> = "s".into();
        assert_eq!(book.admit("a", None, t0), Ok(None));
        assert_eq!(book.admit("b", None, t0 + Duration::from_secs(1)), Ok(None));
        book.job_done("a");
        book.job_done("b");
        // `a` used again after `b`, so `b` is the least recently used.
        book.admit("a", Some(&s), Instant::now() + Duration::from_secs(5))
            .unwrap();
        book.job_done("a");
        let evicted = book.admit("c", None, Instant::now() + Duration::from_secs(6));
        assert_eq!(evicted, Ok(Some("b".to_owned())));
        assert_eq!(book.stats().resident, 2);
        assert_eq!(book.stats().evicted_for_room, 1);
    }

    #[test]
    fn a_voice_held_by_a_session_or_a_job_stays_and_a_new_one_is_refused() {
        let mut book = capped(2);
        let now = Instant::now();
        let (s1, s2): (Arc<str>, Arc<str>) = ("s1".into(), "s2".into());
        book.admit("a", Some(&s1), now).unwrap();
        book.job_done("a");
        book.admit("b", None, now).unwrap();
        assert_eq!(book.admit("c", Some(&s2), now), Err(AllInUse(2)));
        assert_eq!(book.stats().refused, 1);
        // `s1` moves to `b`: `a` is free to go.
        book.admit("b", Some(&s1), now).unwrap();
        assert_eq!(book.admit("c", Some(&s2), now), Ok(Some("a".to_owned())));
        book.end_session("s1");
        book.job_done("b");
        book.job_done("b");
        book.job_done("c");
        book.end_session("s2");
        book.pin("c");
        assert_eq!(book.admit("d", None, now), Ok(Some("b".to_owned())));
        assert_eq!(
            book.admit("e", None, now),
            Err(AllInUse(2)),
            "c is pinned, d busy"
        );
    }

    #[test]
    fn idle_voices_go_after_the_ttl_and_busy_or_pinned_ones_stay() {
        let mut book = Residency::new(ResidencyLimits {
            max_resident_voices: None,
            idle_ttl: Some(Duration::from_secs(60)),
        });
        let now = Instant::now();
        let s: Arc<str> = "s".into();
        for voice in ["idle", "held", "pinned", "busy"] {
            book.admit(voice, None, now).unwrap();
        }
        for voice in ["idle", "held", "pinned"] {
            book.job_done(voice);
        }
        book.admit("held", Some(&s), now).unwrap();
        book.job_done("held");
        book.pin("pinned");
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(book.sweep(later), vec!["idle".to_owned()]);
        assert_eq!(book.stats().resident, 3);
        assert_eq!(book.stats().evicted_idle, 1);
    }
}
