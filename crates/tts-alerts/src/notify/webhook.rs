//! The generic webhook: every notification POSTed as `{"event": …, "alert": …}`, retried with backoff.

use std::time::Duration;

use tokio::sync::mpsc;

use super::NotifierConfig;
use super::http::Poster;
use crate::engine::Notification;
use crate::metrics::{Metrics, SendOutcome};

/// Attempts per notification (the first and the retries).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

pub(super) async fn run(
    url: String,
    mut rx: mpsc::Receiver<Notification>,
    config: NotifierConfig,
    metrics: Metrics,
) {
    let poster = Poster::new(config.request_timeout);
    while let Some(notification) = rx.recv().await {
        let body = match serde_json::to_vec(&notification) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(error = %error, "Encoding a webhook notification failed.");
                metrics.send("webhook", SendOutcome::Error);
                continue;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                metrics.send("webhook", SendOutcome::Retry);
            }
            match poster.post_json(&url, body.clone()).await {
                Ok(()) => {
                    metrics.send("webhook", SendOutcome::Ok);
                    break;
                }
                Err(error) => {
                    metrics.send("webhook", SendOutcome::Error);
                    tracing::warn!(error = %error, attempt, "Webhook notification failed.");
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
    }
}
