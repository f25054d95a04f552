//! The model manager: which voices are resident, loaded once, warmed, and evicted when idle.
