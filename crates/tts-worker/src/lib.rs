//! The ttsd worker: serves `tts.v1.Worker` over gRPC on top of the engine pool.

pub mod models;
pub mod registry;
