//! The live dashboard on the admin listener: one page with five tabs (Overview, Metrics, Traces,
//! Alerts, Logs), fed by server-sent events.
//!
//! | Method | Path | Answer |
//! |---|---|---|
//! | GET | `/dashboard` | The page (`text/html`). |
//! | GET | `/dashboard/app.js`, `/dashboard/app.css`, `/dashboard/charts.js`, `/dashboard/favicon.svg` | Its assets, embedded in the binary with `include_str!`. |
//! | GET | `/dashboard/events?backfill=N` | `text/event-stream`: one `snapshot` event a second, `id` = its sequence number. A reconnecting `EventSource` sends `Last-Event-ID` and gets every snapshot after it that the ring still holds; a fresh one gets the last `N` (at most [`RING_FRAMES`]) first. Keep-alive comments every 15 s. |
//! | GET | `/dashboard/snapshot` | One snapshot, built now, as JSON. |
//!
//! A snapshot is `{"seq", "time_unix_ms", "summary", "health", "series"}`: `summary` is exactly the body
//! of `/metrics/summary`, `health` exactly the body of `/health`, and `series` the current value of a
//! fixed list of families from `/metrics` (see [`snapshot`]), from which the page derives rates.
//!
//! Snapshots are taken by one sampler task that runs only while at least one page is connected, so a
//! closed dashboard costs nothing; the last [`RING_FRAMES`] snapshots (15 minutes) are kept for resume
//! and for the Metrics tab's window. The page reads alerts, traces and logs from their own admin routes
//! (`/admin/alerts`, `/admin/traces`, `/admin/logs`) and says so plainly when a build lacks one.
//! Nothing on the page loads from anywhere but the admin origin.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::admin::AdminState;

mod snapshot;

/// Snapshots kept for resume and for the page's chart window: 15 minutes at one a second.
pub const RING_FRAMES: usize = 900;

/// How often the sampler takes a snapshot while a page is connected.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// How often an idle event stream sends a keep-alive comment.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// An embedded file: path under `/dashboard/`, content type, body.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file the page needs; nothing else is ever requested.
const ASSETS: [Asset; 5] = [
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../assets/dashboard/index.html"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/dashboard/app.css"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/dashboard/charts.js"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/dashboard/app.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../assets/dashboard/favicon.svg"),
    },
];

/// One snapshot, serialised once and shared by every connected page.
#[derive(Debug)]
struct Frame {
    seq: u64,
    json: String,
}

/// The sampler's state and the ring of recent snapshots.
struct Hub {
    admin: Arc<AdminState>,
    tx: broadcast::Sender<Arc<Frame>>,
    inner: Mutex<HubInner>,
}

#[derive(Default)]
struct HubInner {
    ring: VecDeque<Arc<Frame>>,
    next_seq: u64,
    sampler_running: bool,
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Snapshots to replay to a fresh connection (no `Last-Event-ID`), for the chart window.
    backfill: Option<usize>,
}

/// The dashboard routes over the admin state.
pub(crate) fn router(admin: Arc<AdminState>) -> Router {
    let (tx, _) = broadcast::channel(64);
    let hub = Arc::new(Hub {
        admin,
        tx,
        inner: Mutex::new(HubInner {
            next_seq: 1,
            ..HubInner::default()
        }),
    });
    Router::new()
        .route("/dashboard", get(|| async { asset("") }))
        .route("/dashboard/", get(|| async { asset("") }))
        .route("/dashboard/events", get(events))
        .route("/dashboard/snapshot", get(snapshot_now))
        .route(
            "/dashboard/{name}",
            get(|axum::extract::Path(name): axum::extract::Path<String>| async move { asset(&name) }),
        )
        .with_state(hub)
}

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CONTENT_SECURITY_POLICY),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            asset.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "No such dashboard asset.\n").into_response(),
    }
}

/// The browser itself refuses any request that leaves the admin origin, and any framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
    script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

async fn snapshot_now(State(hub): State<Arc<Hub>>) -> Response {
    match hub.take_frame().await {
        Some(frame) => ([(header::CONTENT_TYPE, "application/json")], frame.json.clone()).into_response(),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Taking the snapshot failed; the server log has the detail.\n",
        )
            .into_response(),
    }
}

async fn events(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    // Subscribe before reading the ring, so no snapshot falls between the two.
    let rx = hub.tx.subscribe();
    let backlog = hub.backlog(last_event_id, query.backfill.unwrap_or(0));
    hub.clone().ensure_sampler();
    let after = backlog
        .last()
        .map(|frame| frame.seq)
        .or(last_event_id)
        .unwrap_or(0);
    let replay = stream::iter(backlog.into_iter().map(|frame| Ok(to_event(&frame))));
    let live = stream::unfold((rx, after), |(mut rx, mut after)| async move {
        loop {
            match rx.recv().await {
                Ok(frame) if frame.seq > after => {
                    after = frame.seq;
                    return Some((Ok(to_event(&frame)), (rx, after)));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(futures_util::StreamExt::chain(replay, live))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL))
}

fn to_event(frame: &Frame) -> Event {
    Event::default()
        .event("snapshot")
        .id(frame.seq.to_string())
        .data(frame.json.as_str())
}

// === impl Hub ===

impl Hub {
    /// Frames after `last_event_id` when resuming, else the newest `backfill` frames.
    fn backlog(&self, last_event_id: Option<u64>, backfill: usize) -> Vec<Arc<Frame>> {
        let inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match last_event_id {
            Some(last) => inner
                .ring
                .iter()
                .filter(|frame| frame.seq > last)
                .cloned()
                .collect(),
            None => {
                let skip = inner.ring.len().saturating_sub(backfill.min(RING_FRAMES));
                inner.ring.iter().skip(skip).cloned().collect()
            }
        }
    }

    /// Starts the sampler unless it runs; it stops by itself when the last page disconnects.
    fn ensure_sampler(self: Arc<Self>) {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if inner.sampler_running {
                return;
            }
            inner.sampler_running = true;
        }
        tokio::spawn(async move { self.sample_while_watched().await });
    }

    async fn sample_while_watched(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            {
                let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if self.tx.receiver_count() == 0 {
                    inner.sampler_running = false;
                    return;
                }
            }
            if let Some(frame) = self.take_frame().await {
                // No receiver left is not an error: the next tick stops the sampler.
                let _ = self.tx.send(frame);
            }
        }
    }

    /// Builds a snapshot off the async executor (encoding the registry takes milliseconds), numbers
    /// it and keeps it in the ring.
    async fn take_frame(&self) -> Option<Arc<Frame>> {
        let admin = self.admin.clone();
        let body = tokio::task::spawn_blocking(move || snapshot::build(&admin)).await;
        let mut body = match body {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => {
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "Building a dashboard snapshot failed."
                );
                return None;
            }
            Err(error) => {
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "The dashboard snapshot task failed."
                );
                return None;
            }
        };
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let seq = inner.next_seq;
        inner.next_seq += 1;
        body.insert("seq".to_owned(), seq.into());
        let frame = Arc::new(Frame {
            seq,
            json: serde_json::Value::Object(body).to_string(),
        });
        if inner.ring.len() == RING_FRAMES {
            inner.ring.pop_front();
        }
        inner.ring.push_back(frame.clone());
        Some(frame)
    }
}

#[cfg(test)]
mod tests;
