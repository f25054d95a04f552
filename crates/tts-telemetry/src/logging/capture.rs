//! Test support (feature `test-util`): capture the production JSON log lines a piece of code writes.

use std::sync::{Arc, Mutex};

use super::{LogFormat, build_subscriber};

/// Log lines written while its guard lives, as JSON (the production format), on the current thread (a
/// current-thread tokio runtime's tasks log here too).
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

/// Keeps the capture on; drop it to stop.
pub struct CaptureGuard {
    _default: tracing::dispatcher::DefaultGuard,
    _bystander: tracing::Dispatch,
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Starts capturing at `info` on this thread.
    pub fn capture() -> (Self, CaptureGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let (dispatch, _) = build_subscriber(LogFormat::Json, "info", move || writer.clone())
            .unwrap_or_else(|error| panic!("the log subscriber builds: {error}"));
        // With a single dispatcher registered, `tracing` decides whether a log statement is wanted from the
        // dispatcher of whichever thread reaches it first, and caches that: a parallel test without a
        // subscriber would switch our statements off. A second one makes it ask every dispatcher.
        let bystander = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let guard = CaptureGuard {
            _default: tracing::dispatcher::set_default(&dispatch),
            _bystander: bystander,
        };
        (logs, guard)
    }

    /// Lines at `level` (e.g. `"WARN"`) whose message is `message`.
    pub fn count(&self, level: &str, message: &str) -> usize {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["level"] == level && line["message"] == message)
            .count()
    }
}
