//! The worker registration record: what a worker writes to Redis and a gateway discovers.
//!
//! Key `ttsd:worker:<name>`, value the JSON of [`WorkerRecord`], written with a TTL (`SET … EX`) and
//! rewritten on every heartbeat, so a worker that dies disappears when its TTL runs out. Gateways find
//! keys with `SCAN MATCH ttsd:worker:*` (never `KEYS`, which blocks Redis).

use serde::{Deserialize, Serialize};

/// Every registration key starts with this.
pub const KEY_PREFIX: &str = "ttsd:worker:";

/// The `SCAN MATCH` pattern for every registration.
pub const KEY_PATTERN: &str = "ttsd:worker:*";

/// The Redis key for worker `name`.
pub fn key(name: &str) -> String {
    format!("{KEY_PREFIX}{name}")
}

/// One worker's registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub name: String,
    /// `host:port` of its gRPC server, as gateways should dial it.
    pub address: String,
    pub engines: Vec<String>,
    pub voices: Vec<String>,
    pub resident_voices: Vec<String>,
    pub max_sessions: u32,
    pub active_sessions: u32,
    pub engine_threads: u32,
    pub busy_threads: u32,
    pub queued_chunks: u32,
    /// Whether its default voice is warm.
    pub ready: bool,
    /// Unix milliseconds when this record was written.
    pub heartbeat_unix_ms: u64,
    /// The TTL the record was written with.
    pub ttl_seconds: u64,
    pub version: String,
}

impl WorkerRecord {
    /// Parses a registration value; the error names what is wrong with it.
    pub fn from_json(value: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(value)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_the_trip_through_json_and_keys_match_the_scan_pattern() {
        let record = WorkerRecord {
            name: "w1".into(),
            address: "127.0.0.1:7001".into(),
            engines: vec!["espeak".into()],
            voices: vec!["espeak-en-us".into()],
            resident_voices: vec!["espeak-en-us".into()],
            max_sessions: 64,
            active_sessions: 3,
            engine_threads: 2,
            busy_threads: 1,
            queued_chunks: 0,
            ready: true,
            heartbeat_unix_ms: 1_700_000_000_000,
            ttl_seconds: 6,
            version: "0.1.0".into(),
        };
        assert_eq!(WorkerRecord::from_json(&record.to_json()).ok(), Some(record));
        assert!(key("w1").starts_with(KEY_PATTERN.trim_end_matches('*')));
        assert!(WorkerRecord::from_json("{\"name\":\"w1\"}").is_err());
    }
}
