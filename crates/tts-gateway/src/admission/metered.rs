//! A [`Synthesizer`] that reports each finished chunk's cost to [`EngineHeadroom`].

use std::sync::Arc;

use tts_core::pool::{Job, JobEvent, PoolStats, SubmitError};

use super::EngineHeadroom;
use crate::protocol::Command;
use crate::synth::Synthesizer;

/// Passes everything to the synthesizer it wraps; sees `Finished` events on their way to the session.
pub struct Metered {
    inner: Arc<dyn Synthesizer>,
    headroom: Arc<EngineHeadroom>,
}

impl Metered {
    pub(super) fn new(inner: Arc<dyn Synthesizer>, headroom: Arc<EngineHeadroom>) -> Self {
        Self { inner, headroom }
    }
}

impl Synthesizer for Metered {
    fn submit(&self, mut job: Job) -> Result<(), SubmitError> {
        let headroom = self.headroom.clone();
        let mut events = job.events;
        job.events = Box::new(move |event| {
            if let JobEvent::Finished(stats) = &event {
                headroom.observe(stats);
            }
            events(event);
        });
        self.inner.submit(job)
    }

    fn control(&self, session_id: &Arc<str>, command: Command) {
        self.inner.control(session_id, command);
    }

    fn end_session(&self, session_id: &Arc<str>) {
        self.inner.end_session(session_id);
    }

    fn stats(&self) -> PoolStats {
        self.inner.stats()
    }
}
