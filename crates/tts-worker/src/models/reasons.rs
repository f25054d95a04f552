//! Why voices come and go; each is a bounded `reason` label.

/// Why a voice was loaded; the `reason` label of `tts_model_loads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadReason {
    /// Configured to load when the worker starts.
    Startup,
    /// Asked for ahead of use (a session announcing its voice).
    Preload,
    /// A chunk needed it.
    Demand,
    /// An operator asked (LoadModel, admin).
    Manual,
}

impl LoadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadReason::Startup => "startup",
            LoadReason::Preload => "preload",
            LoadReason::Demand => "demand",
            LoadReason::Manual => "manual",
        }
    }
}

/// Why a voice was unloaded; the `reason` label of `tts_model_unloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadReason {
    /// Idle past the TTL.
    Ttl,
    /// Evicted to make room under the resident cap.
    Lru,
    Manual,
}

impl UnloadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UnloadReason::Ttl => "ttl",
            UnloadReason::Lru => "lru",
            UnloadReason::Manual => "manual",
        }
    }
}
