//! Liveness heartbeats: a component beats while it makes progress, and `/liveness` fails once the last
//! beat is older than the heartbeat's `max_age`.
//!
//! A heartbeat answers "is this loop still turning", which a health check that merely runs cannot: a
//! wedged executor still answers HTTP if another thread serves it, but its heartbeat goes stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A named liveness heartbeat, shared through `Arc`; beating and reading are lock-free.
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    max_age: Duration,
    origin: Instant,
    /// Nanoseconds from `origin` to the last beat.
    last_beat_nanos: AtomicU64,
    frozen: AtomicBool,
}

impl Heartbeat {
    /// A heartbeat that has just beaten once.
    pub fn new(name: &'static str, max_age: Duration) -> Arc<Self> {
        Arc::new(Self {
            name,
            max_age,
            origin: Instant::now(),
            last_beat_nanos: AtomicU64::new(0),
            frozen: AtomicBool::new(false),
        })
    }

    fn nanos_since_origin(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records progress now (ignored after [`Self::freeze`]).
    pub fn beat(&self) {
        if self.frozen.load(Ordering::Relaxed) {
            return;
        }
        self.last_beat_nanos
            .fetch_max(self.nanos_since_origin(), Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = self.last_beat_nanos.load(Ordering::Relaxed);
        Duration::from_nanos(self.nanos_since_origin().saturating_sub(last))
    }

    /// Whether the last beat is at most `max_age` old.
    pub fn is_alive(&self) -> bool {
        self.age() <= self.max_age
    }

    /// The age past which the heartbeat counts as dead.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The name `/liveness` and `/health` report it under.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Test hook: stop accepting beats, as a wedged component would.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_keep_it_alive_and_freezing_lets_it_age() {
        let heartbeat = Heartbeat::new("loop", Duration::from_millis(50));
        assert_eq!(heartbeat.name(), "loop");
        assert!(heartbeat.is_alive());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!heartbeat.is_alive());
        heartbeat.beat();
        assert!(heartbeat.is_alive());
        assert!(heartbeat.age() < Duration::from_millis(50));
        heartbeat.freeze();
        std::thread::sleep(Duration::from_millis(80));
        heartbeat.beat();
        assert!(!heartbeat.is_alive());
        assert!(heartbeat.age() >= Duration::from_millis(80));
    }
}
