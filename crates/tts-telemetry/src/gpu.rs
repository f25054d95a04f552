//! GPU metrics from NVML, when a GPU and its driver are present.
