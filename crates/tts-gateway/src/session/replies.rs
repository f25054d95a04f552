//! The bound on a session's error replies: at most `gateway.max_error_replies_per_second` in any one
//! second. A client that provokes more gets no reply for the extra ones (they are counted in
//! `tts_errors_suppressed_total`), and each still counts against `max_bad_messages`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);

/// When the session's last error replies went out, at most `limit` of them.
#[derive(Debug)]
pub(super) struct ReplyLimiter {
    sent: VecDeque<Instant>,
    limit: usize,
}

impl ReplyLimiter {
    pub(super) fn new(per_second: u32) -> Self {
        let limit = usize::try_from(per_second).unwrap_or(usize::MAX).max(1);
        Self {
            sent: VecDeque::with_capacity(limit.min(64)),
            limit,
        }
    }

    /// Whether a reply may go out at `now`; if so it is counted as sent.
    pub(super) fn allow(&mut self, now: Instant) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= WINDOW)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.limit {
            return false;
        }
        self.sent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_goes_out_in_any_one_second() {
        let start = Instant::now();
        let mut limiter = ReplyLimiter::new(3);
        let allowed: Vec<bool> = (0..10)
            .map(|i| limiter.allow(start + Duration::from_millis(i * 10)))
            .collect();
        assert_eq!(allowed.iter().filter(|a| **a).count(), 3);
        assert!(allowed[..3].iter().all(|a| *a), "the first three go out");
        // A second after the first reply, one more slot is free; not before.
        assert!(!limiter.allow(start + Duration::from_millis(999)));
        assert!(limiter.allow(start + Duration::from_millis(1000)));
        assert!(!limiter.allow(start + Duration::from_millis(1005)));
    }

    #[test]
    fn a_steady_trickle_under_the_limit_is_never_suppressed() {
        let start = Instant::now();
        let mut limiter = ReplyLimiter::new(2);
        for i in 0..100 {
            assert!(limiter.allow(start + Duration::from_millis(i * 500)), "reply {i}");
        }
    }
}
