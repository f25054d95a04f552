//! The per-session 20 ms clock.
//!
//! The first frame after a (re)start leaves at once; frame k after the anchor is due at
//! `anchor + max(0, k − lead) × 20 ms`, so the client holds `lead` frames of cushion and then receives one
//! frame per 20 ms. The clock re-anchors after an underrun (the engine fell behind and the client's
//! cushion ran dry), after a pause, and when a new utterance starts after the clock had run out.

use std::time::Duration;

use tokio::time::Instant;

pub(crate) const FRAME_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub(crate) struct Pacer {
    lead: u32,
    anchor: Option<Instant>,
    sent_since_anchor: u32,
}

impl Pacer {
    pub(crate) fn new(lead: u32) -> Self {
        Self {
            lead,
            anchor: None,
            sent_since_anchor: 0,
        }
    }

    /// When the next frame may leave; `None` means now (the clock is not running).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let anchor = self.anchor?;
        let ahead = self.sent_since_anchor.saturating_sub(self.lead);
        Some(anchor + FRAME_INTERVAL * ahead)
    }

    /// Records a frame handed to the socket at `now`.
    pub(crate) fn sent(&mut self, now: Instant) {
        if self.anchor.is_none() {
            self.anchor = Some(now);
            self.sent_since_anchor = 0;
        }
        self.sent_since_anchor += 1;
    }

    /// Stops the clock: the next frame leaves at once and anchors it again.
    pub(crate) fn restart(&mut self) {
        self.anchor = None;
        self.sent_since_anchor = 0;
    }

    /// The moment the client's cushion runs dry if no further frame is sent; None while stopped.
    pub(crate) fn cushion_deadline(&self) -> Option<Instant> {
        self.anchor
            .map(|anchor| anchor + FRAME_INTERVAL * self.sent_since_anchor)
    }

    /// True when the clock has run past the point where the client's cushion is empty, i.e. a frame
    /// arriving now would come after the listener ran out of audio.
    pub(crate) fn cushion_empty(&self, now: Instant) -> bool {
        match self.anchor {
            None => false,
            Some(anchor) => now >= anchor + FRAME_INTERVAL * self.sent_since_anchor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_frames_leave_at_once_then_one_per_20_ms() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(3);
        assert_eq!(pacer.next_due(), None);
        pacer.sent(t0);
        for _ in 0..3 {
            assert_eq!(pacer.next_due(), Some(t0));
            pacer.sent(t0);
        }
        assert_eq!(pacer.next_due(), Some(t0 + FRAME_INTERVAL));
        pacer.sent(t0 + FRAME_INTERVAL);
        assert_eq!(pacer.next_due(), Some(t0 + FRAME_INTERVAL * 2));
    }

    #[test]
    fn cushion_runs_out_after_the_audio_sent_has_played() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(2);
        for _ in 0..3 {
            pacer.sent(t0);
        }
        assert!(!pacer.cushion_empty(t0 + Duration::from_millis(59)));
        assert!(pacer.cushion_empty(t0 + Duration::from_millis(60)));
        pacer.restart();
        assert_eq!(pacer.next_due(), None);
        assert!(!pacer.cushion_empty(t0 + Duration::from_secs(10)));
    }
}
