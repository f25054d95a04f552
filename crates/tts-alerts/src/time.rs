//! Wall-clock time for the outside world, derived from the engine's monotonic (and, in tests, paused) clock.

use std::time::SystemTime;

use tokio::time::Instant;

/// Maps engine instants to wall-clock times: `wall(i) = wall_at_start + (i - instant_at_start)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    instant: Instant,
    wall: SystemTime,
}

impl Clock {
    /// Anchors the two clocks now.
    pub(crate) fn new() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of `at`.
    pub(crate) fn wall(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.wall + after,
            None => self.wall - self.instant.duration_since(at),
        }
    }

    /// RFC 3339 text of `at`.
    pub(crate) fn rfc3339(&self, at: Instant) -> String {
        rfc3339(self.wall(at))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// `2026-11-29T16:05:03.123Z`, what Alertmanager expects.
pub fn rfc3339(at: SystemTime) -> String {
    tts_telemetry::logging::rfc3339_millis(at)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }
}
