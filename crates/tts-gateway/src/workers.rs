//! Remote workers: the live view, routing, and synthesis over gRPC with failover.

mod discovery;
