//! The ttsd worker: serves `tts.v1.Worker` (and `grpc.health.v1`) over gRPC on top of the engine pool, so a
//! gateway on another process or machine can run its sessions' synthesis here.
//!
//! - [`WorkerService`]: per-session state, the streaming Synthesize RPC, PAUSE/RESUME/STOP, model RPCs.
//! - [`models`]: which voices are resident: loaded once, warmed, reference-counted, evicted when idle.
//! - [`registry`]: the worker's registration in Redis, refreshed by heartbeat.
//! - [`alerting`]: the signals and default rules the built-in alert engine watches on a worker.
//!
//! It does not frame, pace or speak WebSocket (the gateway does), and never depends on the gateway.

pub mod alerting;
pub mod metrics;
pub mod models;
pub mod registry;
mod server;

pub use metrics::{PoolCollector, WorkerMetrics};
pub use server::{CallAuth, DEFAULT_MAX_SESSIONS, WorkerService, WorkerSettings};
