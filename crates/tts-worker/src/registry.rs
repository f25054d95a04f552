//! Registration in Redis: `ttsd:worker:<name>` rewritten on every heartbeat with a TTL.
