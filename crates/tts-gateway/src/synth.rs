//! Where a session's chunks are synthesised: the in-process engine pool, or remote workers
//! ([`crate::workers::RemoteWorkers`]). The session driver sees only this trait.

use std::sync::Arc;

use tts_core::pool::{Job, Pool, PoolStats, SubmitError};

use crate::protocol::Command;

/// A place to send chunks. `submit` never blocks; the job's events arrive through its callback.
pub trait Synthesizer: Send + Sync {
    /// Queues one chunk. The session keeps at most one chunk submitted at a time.
    fn submit(&self, job: Job) -> Result<(), SubmitError>;

    /// A PAUSE/RESUME/STOP the session has already applied on its side (STOP has bumped the session's
    /// cancel generation); a remote backend forwards it so the worker holds or drops the session's work.
    fn control(&self, _session_id: &Arc<str>, _command: Command) {}

    /// The session is over: release whatever the backend holds for it.
    fn end_session(&self, _session_id: &Arc<str>) {}

    /// Engine threads, their load and the queue, summed over wherever synthesis runs.
    fn stats(&self) -> PoolStats;
}

impl Synthesizer for Pool {
    fn submit(&self, job: Job) -> Result<(), SubmitError> {
        Pool::submit(self, job)
    }

    fn end_session(&self, session_id: &Arc<str>) {
        Pool::end_session(self, session_id);
    }

    fn stats(&self) -> PoolStats {
        Pool::stats(self)
    }
}
