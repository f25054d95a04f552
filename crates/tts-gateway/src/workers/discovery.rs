//! Worker discovery through the Redis registry.
