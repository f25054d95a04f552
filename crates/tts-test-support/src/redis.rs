//! Starts a real `redis-server` on loopback for tests.
