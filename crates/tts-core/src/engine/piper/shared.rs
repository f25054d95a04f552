//! One copy of a voice's weights for all of its ONNX Runtime sessions.
//!
//! Every engine thread runs its own sessions of a voice (a session runs one chunk at a time), and the
//! quiet sessions are one more set. Built from the model the usual way, each session keeps its own copy
//! of the weights as ONNX Runtime's optimiser leaves them (constants folded, convolution weights
//! reordered for the blocked layout): about 60 MB per set for en_US-joe-medium, most of a voice's
//! memory. Instead each part of a voice is optimised once ([`Weights::optimise`]): ONNX Runtime saves
//! the optimised graph with its large initializers in a separate weights file, those are read into
//! tensors the voice holds, and every session of the voice is built from the optimised graph with no
//! further optimisation and those tensors as its initializers ([`Weights::session`]). ONNX Runtime
//! runs a caller's initializer from the caller's memory (`AddInitializer`), so the weights exist once.
//!
//! ONNX Runtime loads such a graph from a file only, and checks that the weights file it names exists.
//! Each session is built from a scratch directory holding the graph and an **empty** weights file,
//! removed once the session exists: every large initializer is supplied, so the file is never read,
//! and if one were not, reading it would fail the load (the engine then builds the session the usual
//! way, with a WARN) rather than run with weights of zero.
//!
//! The optimised graph is specific to this machine (its blocked layout follows the CPU's vector
//! width); it lives in memory only, for the life of the process. Measured on en_US-joe-medium
//! (docs/performance.md): the same samples bit for bit, and about 60 MB less per set of sessions.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ort::logging::LogLevel;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, PrimitiveTensorElementType, Tensor};

use super::blocked;
use super::engine::{SessionOptions, builder};
use super::onnx::{
    ENTRY_KEY, ENTRY_VALUE, EXTERNAL, FLOAT, GRAPH_INITIALIZER, INT32, INT64, MODEL_GRAPH,
    TENSOR_DATA_LOCATION, TENSOR_DATA_TYPE, TENSOR_DIMS, TENSOR_EXTERNAL_DATA, TENSOR_NAME,
};
use super::split::single;
use super::wire::{self, Field};

/// The optimised graph's file name in a scratch directory.
const GRAPH_FILE: &str = "part.onnx";
/// The file the optimised graph's large initializers are saved in, and named by.
const WEIGHTS_FILE: &str = "weights.bin";
/// Initializers at least this large go to [`WEIGHTS_FILE`]; smaller ones (shapes, axes, pads, which
/// shape inference reads, and the smallest biases) stay in the graph.
const EXTERNAL_MIN_BYTES: usize = 4096;

/// A part of a voice as ONNX Runtime optimises it on this machine, with its large initializers held
/// once for every session built from it.
pub(super) struct Weights {
    /// The optimised graph; its large initializers name [`WEIGHTS_FILE`].
    graph: Vec<u8>,
    initializers: Vec<(String, Arc<DynValue>)>,
    /// The initializers' size.
    bytes: usize,
    /// Reorders between layouts [`blocked::keep_blocked`] took out of the graph.
    reorders_removed: usize,
}

impl Weights {
    /// Optimises `part` (a ModelProto) with every ONNX Runtime optimisation and reads its large
    /// initializers; with `blocked_layout`, also keeps its tensors in the blocked layout where the optimised
    /// graph would reorder them for element-wise operators ([`blocked`]). The error says why the
    /// part's sessions cannot share the weights.
    pub(super) fn optimise(part: &[u8], blocked_layout: bool) -> Result<Self, String> {
        let scratch = Scratch::new()?;
        let graph_path = scratch.0.join(GRAPH_FILE);
        let optimiser = SessionOptions {
            threads: 1,
            arena: false,
            prepacked: None,
            shared: None,
            blocked: false,
        };
        // ONNX Runtime warns that a graph optimised for the blocked layout is specific to this machine,
        // which is what it is meant for here.
        let session = builder(&optimiser)
            .and_then(|b| b.with_log_level(LogLevel::Error).map_err(Into::into))
            .and_then(|b| b.with_optimized_model_path(&graph_path).map_err(Into::into))
            .and_then(|b| {
                b.with_config_entry(
                    "session.optimized_model_external_initializers_file_name",
                    WEIGHTS_FILE,
                )
                .map_err(Into::into)
            })
            .and_then(|b| {
                b.with_config_entry(
                    "session.optimized_model_external_initializers_min_size_in_bytes",
                    EXTERNAL_MIN_BYTES.to_string(),
                )
                .map_err(Into::into)
            })
            .and_then(|mut b| b.commit_from_memory(part))
            .map_err(|e| format!("optimising: {e}"))?;
        drop(session);
        let graph = fs::read(&graph_path).map_err(|e| format!("reading the optimised graph: {e}"))?;
        let weights = match fs::read(scratch.0.join(WEIGHTS_FILE)) {
            Ok(weights) => weights,
            // No initializer was large enough to be saved apart.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("reading the optimised weights: {e}")),
        };
        let (graph, reorders_removed) = match blocked_layout.then(blocked::block_floats).flatten() {
            Some(block) => match blocked::keep_blocked(&graph, block) {
                Ok(rewritten) => rewritten,
                Err(reason) => {
                    tracing::debug!(
                        reason = reason.as_str(),
                        "Piper voice part keeps ONNX Runtime's reorders."
                    );
                    (graph, 0)
                }
            },
            None => (graph, 0),
        };
        let initializers = external_initializers(&graph, &weights)?;
        Ok(Self {
            graph,
            initializers,
            bytes: weights.len(),
            reorders_removed,
        })
    }

    /// The size of the weights every session of the part shares.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many reorders between layouts the part no longer runs ([`blocked`]).
    pub(super) fn reorders_removed(&self) -> usize {
        self.reorders_removed
    }

    /// A session of the optimised part built with `options`, holding no copy of the large weights.
    pub(super) fn session(&self, options: &SessionOptions) -> Result<Session, String> {
        let scratch = Scratch::new()?;
        let graph_path = scratch.0.join(GRAPH_FILE);
        fs::write(&graph_path, &self.graph).map_err(|e| format!("writing the optimised graph: {e}"))?;
        fs::write(scratch.0.join(WEIGHTS_FILE), []).map_err(|e| format!("writing the weights file: {e}"))?;
        let mut builder = builder(options)
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::Disable)
                    .map_err(Into::into)
            })
            .map_err(|e| e.to_string())?;
        for (name, value) in &self.initializers {
            builder = builder
                .with_initializer(name, value.clone())
                .map_err(|e| format!("initializer {name}: {e}"))?;
        }
        builder.commit_from_file(&graph_path).map_err(|e| e.to_string())
    }

    /// The optimised graph.
    #[cfg(test)]
    pub(super) fn graph(&self) -> &[u8] {
        &self.graph
    }

    /// The initializers every session of the part shares.
    #[cfg(test)]
    pub(super) fn initializer_names(&self) -> Vec<&str> {
        self.initializers.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// The same part with `name`'s initializer no longer supplied (a test of what the empty weights
    /// file does then).
    #[cfg(test)]
    pub(super) fn without(&self, name: &str) -> Self {
        Self {
            graph: self.graph.clone(),
            initializers: self
                .initializers
                .iter()
                .filter(|(n, _)| n != name)
                .cloned()
                .collect(),
            bytes: self.bytes,
            reorders_removed: self.reorders_removed,
        }
    }
}

/// The initializers of `graph` (a ModelProto) saved in [`WEIGHTS_FILE`], as tensors read from `weights`.
fn external_initializers(graph: &[u8], weights: &[u8]) -> Result<Vec<(String, Arc<DynValue>)>, String> {
    let model = wire::fields(graph)?;
    let graph = wire::fields(single(&model, MODEL_GRAPH, "graph")?.payload)?;
    let mut out = Vec::new();
    for field in graph.iter().filter(|f| f.number == GRAPH_INITIALIZER) {
        let tensor = wire::fields(field.payload)?;
        let location = wire::first_uint(&tensor, TENSOR_DATA_LOCATION)?;
        if location != Some(EXTERNAL) {
            continue;
        }
        let name = wire::str_field(&tensor, TENSOR_NAME)?.to_owned();
        let value = external_tensor(&tensor, weights).map_err(|e| format!("initializer {name}: {e}"))?;
        out.push((name, Arc::new(value)));
    }
    Ok(out)
}

/// One external initializer (a TensorProto's fields) as a tensor of its bytes in `weights`.
fn external_tensor(tensor: &[Field<'_>], weights: &[u8]) -> Result<DynValue, String> {
    let mut dims = Vec::new();
    for field in tensor.iter().filter(|f| f.number == TENSOR_DIMS) {
        dims.extend(field.uints()?.into_iter().map(|d| d as i64));
    }
    let data_type = wire::first_uint(tensor, TENSOR_DATA_TYPE)?.unwrap_or(0);
    let (mut location, mut offset, mut length) = (None, 0usize, None);
    for entry in tensor.iter().filter(|f| f.number == TENSOR_EXTERNAL_DATA) {
        let entry = wire::fields(entry.payload)?;
        let value = wire::str_field(&entry, ENTRY_VALUE)?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("external data entry {value:?}"))
        };
        match wire::str_field(&entry, ENTRY_KEY)? {
            "location" => location = Some(value),
            "offset" => offset = number()?,
            "length" => length = Some(number()?),
            _ => {}
        }
    }
    if location != Some(WEIGHTS_FILE) {
        return Err(format!("its data is in {location:?}, not {WEIGHTS_FILE}"));
    }
    let length = length.ok_or("its external data has no length")?;
    let bytes = offset
        .checked_add(length)
        .and_then(|end| weights.get(offset..end))
        .ok_or_else(|| {
            format!(
                "bytes {offset}+{length} are past the weights file's {}",
                weights.len()
            )
        })?;
    let elements: i64 = dims.iter().product();
    let value = match data_type {
        FLOAT => tensor_of(dims, elements, bytes, f32::from_le_bytes)?,
        INT64 => tensor_of(dims, elements, bytes, i64::from_le_bytes)?,
        INT32 => tensor_of(dims, elements, bytes, i32::from_le_bytes)?,
        other => return Err(format!("element type {other} is not supported")),
    };
    Ok(value)
}

/// A tensor of `dims` from little-endian `bytes`, which must hold exactly `elements` values.
fn tensor_of<T, const N: usize>(
    dims: Vec<i64>,
    elements: i64,
    bytes: &[u8],
    from_le: fn([u8; N]) -> T,
) -> Result<DynValue, String>
where
    T: PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static,
{
    if bytes.len() as i64 != elements * N as i64 {
        return Err(format!(
            "{} bytes for {elements} elements of {N} bytes",
            bytes.len()
        ));
    }
    let data: Vec<T> = bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut array = [0; N];
            array.copy_from_slice(chunk);
            from_le(array)
        })
        .collect();
    Tensor::from_array((dims, data))
        .map(Tensor::into_dyn)
        .map_err(|e| e.to_string())
}

/// A private directory under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("ttsd-onnx-{}-{n}", std::process::id()));
            match create_private_dir(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("creating {}: {e}", path.display())),
            }
        }
    }
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(path)
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
