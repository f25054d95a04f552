//! Metrics for Redis commands, shared by every Redis client in the process.
