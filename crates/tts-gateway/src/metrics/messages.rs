//! Protocol messages in and out, and error messages by code: sent, and suppressed by the per-session bound
//! on error replies.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::labels::{CodeLabels, MessageIn, MessageInLabels, MessageOut, MessageOutLabels};
use crate::protocol::ErrorCode;

/// `tts_messages_received_total`, `tts_messages_sent_total`, `tts_errors_sent_total` and
/// `tts_errors_suppressed_total`.
#[derive(Debug)]
pub(super) struct MessageMetrics {
    received: Family<MessageInLabels, Counter>,
    sent: Family<MessageOutLabels, Counter>,
    /// `sent{type="audio"}`, looked up once: it is bumped for every frame, and a family lookup takes a lock
    /// and hashes the labels.
    audio_sent: Counter,
    errors_sent: Family<CodeLabels, Counter>,
    errors_suppressed: Family<CodeLabels, Counter>,
}

impl MessageMetrics {
    pub(super) fn register(r: &mut Registry) -> Self {
        let sent: Family<MessageOutLabels, Counter> = Family::default();
        let audio_sent = sent
            .get_or_create(&MessageOutLabels {
                r#type: MessageOut::Audio,
            })
            .clone();
        let metrics = Self {
            received: Family::default(),
            sent,
            audio_sent,
            errors_sent: Family::default(),
            errors_suppressed: Family::default(),
        };
        r.register(
            "tts_messages_received",
            "Client messages read, by type (invalid: rejected before it had one)",
            metrics.received.clone(),
        );
        r.register(
            "tts_messages_sent",
            "Server messages handed to the socket, by type",
            metrics.sent.clone(),
        );
        r.register(
            "tts_errors_sent",
            "error messages sent to clients, by code",
            metrics.errors_sent.clone(),
        );
        r.register(
            "tts_errors_suppressed",
            "error replies not sent because the session was over gateway.max_error_replies_per_second, by code",
            metrics.errors_suppressed.clone(),
        );
        metrics.init_series();
        metrics
    }

    fn init_series(&self) {
        for kind in [
            MessageIn::Text,
            MessageIn::Control,
            MessageIn::Config,
            MessageIn::Invalid,
        ] {
            let _ = self.received.get_or_create(&MessageInLabels { r#type: kind });
        }
        for kind in [
            MessageOut::SessionStart,
            MessageOut::Audio,
            MessageOut::UtteranceEnd,
            MessageOut::SessionEnd,
            MessageOut::Error,
        ] {
            let _ = self.sent.get_or_create(&MessageOutLabels { r#type: kind });
        }
        for code in ErrorCode::ALL {
            let _ = self
                .errors_sent
                .get_or_create(&CodeLabels { code: code.as_str() });
            let _ = self
                .errors_suppressed
                .get_or_create(&CodeLabels { code: code.as_str() });
        }
    }

    pub(super) fn received(&self, kind: MessageIn) {
        self.received
            .get_or_create(&MessageInLabels { r#type: kind })
            .inc();
    }

    pub(super) fn sent(&self, kind: MessageOut) {
        self.sent.get_or_create(&MessageOutLabels { r#type: kind }).inc();
    }

    pub(super) fn audio_sent(&self) {
        self.audio_sent.inc();
    }

    /// Counts the error by code and as a message sent.
    pub(super) fn error_sent(&self, code: ErrorCode) {
        self.errors_sent
            .get_or_create(&CodeLabels { code: code.as_str() })
            .inc();
        self.sent(MessageOut::Error);
    }

    pub(super) fn error_suppressed(&self, code: ErrorCode) {
        self.errors_suppressed
            .get_or_create(&CodeLabels { code: code.as_str() })
            .inc();
    }
}
