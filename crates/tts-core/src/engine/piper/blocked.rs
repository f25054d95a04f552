//! Keeps a decoder's tensors in ONNX Runtime's blocked layout between its convolutions.
//!
//! ONNX Runtime's CPU provider runs 2-D convolutions in a blocked channel layout (NCHWc: channels in
//! blocks of 8 or 16, the block innermost) and converts between that and the plain layout with
//! `ReorderInput` and `ReorderOutput` around every operator it has no blocked kernel for. In the
//! VITS decoder (HiFi-GAN) those are the `LeakyRelu` before each convolution, the residual `Add`s whose
//! other input came from the phase interleave ([`super::phases`]), and the `Div` averaging the residual
//! blocks: ORT's own profiler put the reorders at a fifth of the decoder's time.
//!
//! Those operators do not care how their tensor is laid out in memory. [`keep_blocked`] rewrites the
//! graph ONNX Runtime optimised (the one [`super::shared`] keeps) so that they run on the blocked
//! tensors themselves:
//! - a `ReorderOutput` of a tensor whose channels fill whole blocks has the blocked tensor as its twin;
//! - an element-wise operator whose every other input is a scalar constant, and whose tensor inputs all
//!   have twins, is repeated on the twins, and its output has the repeat's as its twin;
//! - the phase interleave (`Reshape [N, s, C, T]`, `Transpose`, `Reshape [N, C, 1, T·s]` of a blocked
//!   `Concat`) is repeated on the blocked tensor as `Reshape [N, s, C/b, T, b]`, `Transpose` to
//!   `[N, C/b, T, s, b]` and `Reshape [N, C, 1, T·s]`, which is the blocked layout of the interleaved
//!   tensor;
//! - a `ReorderInput` of a tensor with a twin is the twin, and whatever no longer leads to an output
//!   goes.
//!
//! Same arithmetic in the same order, so the same samples. Measured on en_US-joe-medium, one thread:
//! 10-18 % less decoder time (docs/performance.md). The block size is the CPU's (16 floats with
//! AVX-512, else 8); the engine checks the result against the unmodified decoder at a voice's first
//! load, and a graph this rewrite got wrong (a block size ONNX Runtime does not use, operands that
//! broadcast) fails that check and loads without the rewrite.

use std::collections::{HashMap, HashSet};

use super::onnx::{
    self, ATTRIBUTE_I, ATTRIBUTE_INTS, ATTRIBUTE_NAME, GRAPH_INITIALIZER, GRAPH_NODE, GRAPH_OUTPUT,
    GRAPH_VALUE_INFO, INT64, NODE_ATTRIBUTE, NODE_DOMAIN, NODE_INPUT, NODE_OP_TYPE, TENSOR_DATA_TYPE,
    TENSOR_INT64_DATA, TENSOR_NAME, TENSOR_RAW_DATA, VALUE_INFO_NAME, int64_tensor, ints,
};
use super::planar::{self, Node, Parsed};
use super::split::named;
use super::wire::{self, Field};
/// ONNX Runtime's domain of its blocked-layout operators.
const NCHWC: &str = "com.microsoft.nchwc";
/// Operators that compute each output element from the same element of each input.
const ELEMENTWISE: [&str; 8] = ["Add", "Sub", "Mul", "Div", "LeakyRelu", "Relu", "Tanh", "Sigmoid"];

#[cfg(test)]
thread_local! {
    /// A block size for this thread's rewrites in place of the CPU's (a test of a rewrite gone wrong).
    pub(super) static BLOCK_FLOATS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The floats in one block of ONNX Runtime's blocked layout on this CPU, or None where it has none.
pub(super) fn block_floats() -> Option<u64> {
    #[cfg(test)]
    if let Some(block) = BLOCK_FLOATS.get() {
        return Some(block);
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(16);
        }
        Some(8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// A graph to write: one node's bytes and what it reads and writes.
struct Out {
    bytes: Vec<u8>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

/// Rewrites `optimised` (a ModelProto as ONNX Runtime saves an optimised graph) so that element-wise
/// operators and phase interleaves run on blocked tensors of `block` floats; returns the new model and
/// how many reorders it no longer runs. The error says why nothing was rewritten.
pub(super) fn keep_blocked(optimised: &[u8], block: u64) -> Result<(Vec<u8>, usize), String> {
    let Parsed {
        model_fields,
        graph,
        nodes,
        initializers,
        ..
    } = planar::parse(optimised)?;
    let tensors: HashMap<&str, &[u8]> = initializers.iter().map(|i| (i.name, i.payload)).collect();
    let scalar = |name: &str| {
        tensors
            .get(name)
            .and_then(|t| planar::dims(t).ok())
            .is_some_and(|dims| dims.iter().product::<u64>() == 1)
    };
    let producers: HashMap<&str, &Node<'_>> = nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(move |o| (*o, n)))
        .collect();

    // Plain tensor → the same values in the blocked layout.
    let mut twins: HashMap<String, String> = HashMap::new();
    // A dropped `ReorderInput`'s output → the twin its readers now read.
    let mut aliases: HashMap<&str, String> = HashMap::new();
    let mut added: Vec<(String, Vec<u8>)> = Vec::new();
    let mut out: Vec<Out> = Vec::with_capacity(nodes.len() + 16);
    let mut reorders_before = 0;
    for node in &nodes {
        let domain = wire::str_field(&node.fields, NODE_DOMAIN)?;
        let blocked_op = domain == NCHWC;
        if blocked_op && matches!(node.op_type, "ReorderInput" | "ReorderOutput") {
            reorders_before += 1;
        }
        if blocked_op
            && node.op_type == "ReorderInput"
            && int_attribute(node, "channels_last")?.unwrap_or(0) == 0
            && let Some(twin) = node.inputs.first().and_then(|i| twins.get(*i))
        {
            aliases.insert(node.outputs[0], twin.clone());
            continue;
        }
        out.push(copy(node, &aliases)?);
        match node.op_type {
            "ReorderOutput" if blocked_op => {
                let channels = int_attribute(node, "channels")?.unwrap_or(0);
                let last = int_attribute(node, "channels_last")?.unwrap_or(0);
                if channels > 0 && channels % block as i64 == 0 && last == 0 {
                    twins.insert(node.outputs[0].to_owned(), renamed(node.inputs[0], &aliases));
                }
            }
            op if !blocked_op && ELEMENTWISE.contains(&op) && node.outputs.len() == 1 => {
                let tensor_inputs: Vec<&str> = node.inputs.iter().copied().filter(|i| !scalar(i)).collect();
                if tensor_inputs.is_empty() || !tensor_inputs.iter().all(|i| twins.contains_key(*i)) {
                    continue;
                }
                let inputs: Vec<String> = node
                    .inputs
                    .iter()
                    .map(|i| twins.get(*i).cloned().unwrap_or_else(|| renamed(i, &aliases)))
                    .collect();
                let output = format!("{}/blocked", node.outputs[0]);
                let mut bytes = onnx::node(op, &inputs, &output, &[]);
                for field in node.fields.iter().filter(|f| f.number == NODE_ATTRIBUTE) {
                    bytes.extend_from_slice(field.raw);
                }
                out.push(Out {
                    bytes,
                    inputs,
                    outputs: vec![output.clone()],
                });
                twins.insert(node.outputs[0].to_owned(), output);
            }
            "Reshape" if !blocked_op => {
                if let Some((from, phases, channels)) = interleave(node, &producers, &tensors)?
                    && let Some(twin) = twins.get(from)
                    && channels % block == 0
                {
                    let twin = twin.clone();
                    let output = node.outputs[0];
                    let (split, merged) = (
                        format!("{output}/blocked_shape"),
                        format!("{output}/merged_shape"),
                    );
                    let (by_phase, moved) = (
                        format!("{output}/blocked_by_phase"),
                        format!("{output}/blocked_moved"),
                    );
                    let blocked = format!("{output}/blocked");
                    let (s, c, b) = (phases as i64, channels as i64, block as i64);
                    added.push((split.clone(), int64_tensor(&split, &[0, s, c / b, -1, b])));
                    added.push((merged.clone(), int64_tensor(&merged, &[0, c, 1, -1])));
                    let perm = ints("perm", &[0, 2, 3, 1, 4]);
                    let transpose = onnx::node("Transpose", &[&by_phase], &moved, &[perm]);
                    for (bytes, inputs, output) in [
                        (
                            onnx::node("Reshape", &[&twin, &split], &by_phase, &[]),
                            vec![twin.clone(), split.clone()],
                            by_phase.clone(),
                        ),
                        (transpose, vec![by_phase.clone()], moved.clone()),
                        (
                            onnx::node("Reshape", &[&moved, &merged], &blocked, &[]),
                            vec![moved.clone(), merged.clone()],
                            blocked.clone(),
                        ),
                    ] {
                        out.push(Out {
                            bytes,
                            inputs,
                            outputs: vec![output],
                        });
                    }
                    twins.insert(output.to_owned(), blocked);
                }
            }
            _ => {}
        }
    }

    // Only what leads to a graph output stays.
    let mut needed: HashSet<String> = named(&graph, GRAPH_OUTPUT, VALUE_INFO_NAME)?
        .iter()
        .map(|o| o.name.to_owned())
        .collect();
    let mut kept = vec![false; out.len()];
    for (i, node) in out.iter().enumerate().rev() {
        if node.outputs.iter().any(|o| needed.contains(o)) {
            kept[i] = true;
            needed.extend(node.inputs.iter().cloned());
        }
    }
    let mut reorders_after = 0;
    let mut written = Vec::with_capacity(optimised.len());
    for (node, _) in out.iter().zip(&kept).filter(|(_, k)| **k) {
        let fields = wire::fields(&node.bytes)?;
        if wire::str_field(&fields, NODE_DOMAIN)? == NCHWC
            && matches!(op_type(&fields)?, "ReorderInput" | "ReorderOutput")
        {
            reorders_after += 1;
        }
        wire::put_len(&mut written, GRAPH_NODE, &node.bytes);
    }
    if reorders_after >= reorders_before {
        return Err(format!("no reorder to remove (of {reorders_before})"));
    }
    let produced: HashSet<&str> = out
        .iter()
        .zip(&kept)
        .filter(|(_, k)| **k)
        .flat_map(|(n, _)| n.outputs.iter().map(String::as_str))
        .collect();
    for field in graph.iter().filter(|f| f.number != GRAPH_NODE) {
        let keep = match field.number {
            GRAPH_INITIALIZER => {
                needed.contains(wire::str_field(&wire::fields(field.payload)?, TENSOR_NAME)?)
            }
            GRAPH_VALUE_INFO => {
                produced.contains(wire::str_field(&wire::fields(field.payload)?, VALUE_INFO_NAME)?)
            }
            _ => true,
        };
        if keep {
            written.extend_from_slice(field.raw);
        }
    }
    for (_, tensor) in added.iter().filter(|(name, _)| needed.contains(name)) {
        wire::put_len(&mut written, GRAPH_INITIALIZER, tensor);
    }
    Ok((
        planar::with_graph(&model_fields, &written, optimised.len()),
        reorders_before - reorders_after,
    ))
}

/// `node` as it is, reading the twins of the `ReorderInput`s that were dropped.
fn copy(node: &Node<'_>, aliases: &HashMap<&str, String>) -> Result<Out, String> {
    let mut bytes = Vec::with_capacity(node.fields.iter().map(|f| f.raw.len()).sum::<usize>() + 16);
    for field in &node.fields {
        match field.number {
            NODE_INPUT => wire::put_len(
                &mut bytes,
                NODE_INPUT,
                renamed(field.as_str()?, aliases).as_bytes(),
            ),
            _ => bytes.extend_from_slice(field.raw),
        }
    }
    Ok(Out {
        bytes,
        inputs: node.inputs.iter().map(|i| renamed(i, aliases)).collect(),
        outputs: node.outputs.iter().map(|o| (*o).to_owned()).collect(),
    })
}

fn renamed(name: &str, aliases: &HashMap<&str, String>) -> String {
    aliases.get(name).cloned().unwrap_or_else(|| name.to_owned())
}

fn op_type<'a>(fields: &[Field<'a>]) -> Result<&'a str, String> {
    wire::str_field(fields, NODE_OP_TYPE)
}

/// The value of `node`'s integer attribute `name`, if it has one.
fn int_attribute(node: &Node<'_>, name: &str) -> Result<Option<i64>, String> {
    for field in node.fields.iter().filter(|f| f.number == NODE_ATTRIBUTE) {
        let attribute = wire::fields(field.payload)?;
        if wire::str_field(&attribute, ATTRIBUTE_NAME)? == name {
            return Ok(wire::first_uint(&attribute, ATTRIBUTE_I)?.map(|i| i as i64));
        }
    }
    Ok(None)
}

/// When `last` is the final `Reshape` of a phase interleave as [`super::phases`] writes it
/// (`ReorderOutput` → `Reshape [0, s, C, -1]` → `Transpose [0, 2, 3, 1]` → `Reshape [0, C, 1, -1]`):
/// the `ReorderOutput`'s output, `s` and `C`.
fn interleave<'a>(
    last: &Node<'a>,
    producers: &HashMap<&str, &Node<'a>>,
    tensors: &HashMap<&str, &[u8]>,
) -> Result<Option<(&'a str, u64, u64)>, String> {
    let producer = |name: &str, op: &str| producers.get(name).copied().filter(|n| n.op_type == op);
    let Some(transpose) = last.inputs.first().and_then(|i| producer(i, "Transpose")) else {
        return Ok(None);
    };
    let Some(by_phase) = transpose.inputs.first().and_then(|i| producer(i, "Reshape")) else {
        return Ok(None);
    };
    let Some(from) = by_phase.inputs.first().copied() else {
        return Ok(None);
    };
    let Some(reorder) = producer(from, "ReorderOutput") else {
        return Ok(None);
    };
    let perm = ints_attribute(transpose, "perm")?;
    let shape = |node: &Node<'_>| -> Result<Option<Vec<i64>>, String> {
        node.inputs
            .get(1)
            .and_then(|s| tensors.get(s))
            .map(|t| int64s(t))
            .transpose()
    };
    let (Some(split), Some(merged)) = (shape(by_phase)?, shape(last)?) else {
        return Ok(None);
    };
    let channels = int_attribute(reorder, "channels")?.unwrap_or(0);
    match (&split[..], &merged[..], &perm[..]) {
        ([0, s, c, -1], [0, c2, 1, -1], [0, 2, 3, 1]) if c == c2 && *s > 0 && *c > 0 && s * c == channels => {
            Ok(Some((from, *s as u64, *c as u64)))
        }
        _ => Ok(None),
    }
}

/// The values of `node`'s integer-list attribute `name` (empty when it has none).
fn ints_attribute(node: &Node<'_>, name: &str) -> Result<Vec<i64>, String> {
    for field in node.fields.iter().filter(|f| f.number == NODE_ATTRIBUTE) {
        let attribute = wire::fields(field.payload)?;
        if wire::str_field(&attribute, ATTRIBUTE_NAME)? == name {
            let mut values = Vec::new();
            for ints in attribute.iter().filter(|f| f.number == ATTRIBUTE_INTS) {
                values.extend(ints.uints()?.into_iter().map(|v| v as i64));
            }
            return Ok(values);
        }
    }
    Ok(Vec::new())
}

/// The values of an int64 TensorProto (raw or packed `int64_data`).
fn int64s(tensor: &[u8]) -> Result<Vec<i64>, String> {
    let fields = wire::fields(tensor)?;
    let kind = wire::first_uint(&fields, TENSOR_DATA_TYPE)?;
    if kind != Some(INT64) {
        return Ok(Vec::new());
    }
    if let Some(raw) = fields.iter().find(|f| f.number == TENSOR_RAW_DATA) {
        return Ok(raw
            .payload
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect());
    }
    let mut values = Vec::new();
    for field in fields.iter().filter(|f| f.number == TENSOR_INT64_DATA) {
        values.extend(field.uints()?.into_iter().map(|v| v as i64));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::piper::onnx::build::{self, declared, value_info};
    use crate::engine::piper::onnx::{GRAPH_INPUT, MODEL_GRAPH, NODE_OUTPUT, int};

    fn node(domain: &str, op: &str, inputs: &[&str], output: &str, attributes: &[Vec<u8>]) -> Vec<u8> {
        let mut out = onnx::node(op, inputs, output, attributes);
        if !domain.is_empty() {
            wire::put_len(&mut out, NODE_DOMAIN, domain.as_bytes());
        }
        out
    }

    fn model(nodes: &[Vec<u8>], initializers: &[Vec<u8>], outputs: &[&str]) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in nodes {
            wire::put_len(&mut graph, GRAPH_NODE, n);
        }
        for i in initializers {
            wire::put_len(&mut graph, GRAPH_INITIALIZER, i);
        }
        wire::put_len(&mut graph, GRAPH_INPUT, &value_info("x"));
        for name in outputs {
            wire::put_len(&mut graph, GRAPH_OUTPUT, &value_info(name));
        }
        build::model(&graph, 17)
    }

    /// Every node of `model` as `op(inputs) -> outputs`, in order.
    fn listing(model: &[u8]) -> Vec<String> {
        let fields = wire::fields(model).unwrap();
        let graph = wire::fields(
            super::super::split::single(&fields, MODEL_GRAPH, "graph")
                .unwrap()
                .payload,
        )
        .unwrap();
        graph
            .iter()
            .filter(|f| f.number == GRAPH_NODE)
            .map(|f| {
                let node = wire::fields(f.payload).unwrap();
                let list = |number| {
                    node.iter()
                        .filter(|n| n.number == number)
                        .map(|n| n.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                format!(
                    "{}({})->{}",
                    op_type(&node).unwrap(),
                    list(NODE_INPUT),
                    list(NODE_OUTPUT)
                )
            })
            .collect()
    }

    /// x → blocked conv → plain → LeakyRelu → Div by a scalar → blocked conv → y; the plain tensor is
    /// also multiplied by a per-channel vector (which would broadcast differently on a blocked tensor).
    fn residual(channels: i64) -> Vec<u8> {
        model(
            &[
                node(NCHWC, "ReorderInput", &["x"], "xb", &[int("channels_last", 0)]),
                node(NCHWC, "Conv", &["xb", "w"], "cb", &[]),
                node(
                    NCHWC,
                    "ReorderOutput",
                    &["cb"],
                    "c",
                    &[int("channels", channels), int("channels_last", 0)],
                ),
                node("", "LeakyRelu", &["c"], "l", &[]),
                node("", "Div", &["l", "three"], "d", &[]),
                node(NCHWC, "ReorderInput", &["d"], "db", &[int("channels_last", 0)]),
                node(NCHWC, "Conv", &["db", "w"], "eb", &[]),
                node(
                    NCHWC,
                    "ReorderOutput",
                    &["eb"],
                    "y",
                    &[int("channels", channels), int("channels_last", 0)],
                ),
                node("", "Mul", &["c", "scale"], "m", &[]),
            ],
            &[
                declared("w", &[channels as u64, channels as u64, 1, 3]),
                declared("three", &[]),
                declared("scale", &[channels as u64, 1, 1]),
            ],
            &["y", "m"],
        )
    }

    #[test]
    fn element_wise_operators_between_reorders_run_on_the_blocked_tensor() {
        let (rewritten, removed) = keep_blocked(&residual(32), 16).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(
            listing(&rewritten),
            [
                "ReorderInput(x)->xb",
                "Conv(xb,w)->cb",
                // Still read by the Mul, whose vector operand must not meet a blocked tensor.
                "ReorderOutput(cb)->c",
                "LeakyRelu(cb)->l/blocked",
                "Div(l/blocked,three)->d/blocked",
                "Conv(d/blocked,w)->eb",
                "ReorderOutput(eb)->y",
                "Mul(c,scale)->m",
            ]
        );
    }

    #[test]
    fn channels_that_do_not_fill_whole_blocks_keep_their_reorders() {
        // 24 channels in blocks of 16: the blocked tensor is padded to 32, the plain one is not.
        assert!(keep_blocked(&residual(24), 16).is_err());
        assert_eq!(keep_blocked(&residual(24), 8).unwrap().1, 1);
    }

    #[test]
    fn a_phase_interleave_runs_on_the_blocked_tensor() {
        let shape = |name: &str, values: &[i64]| int64_tensor(name, values);
        let transpose = onnx::node("Transpose", &["p"], "t", &[ints("perm", &[0, 2, 3, 1])]);
        let interleaved = model(
            &[
                node(NCHWC, "ReorderInput", &["x"], "xb", &[int("channels_last", 0)]),
                node(NCHWC, "Conv", &["xb", "w"], "ab", &[]),
                node(NCHWC, "Conv", &["xb", "w"], "bb", &[]),
                node("", "Concat", &["ab", "bb"], "cb", &[int("axis", 1)]),
                node(
                    NCHWC,
                    "ReorderOutput",
                    &["cb"],
                    "c",
                    &[int("channels", 64), int("channels_last", 0)],
                ),
                node("", "Reshape", &["c", "by_phase"], "p", &[]),
                transpose,
                node("", "Reshape", &["t", "interleaved"], "u", &[]),
                node(NCHWC, "ReorderInput", &["u"], "ub", &[int("channels_last", 0)]),
                node(NCHWC, "Conv", &["ub", "w"], "vb", &[]),
                node(
                    NCHWC,
                    "ReorderOutput",
                    &["vb"],
                    "y",
                    &[int("channels", 32), int("channels_last", 0)],
                ),
            ],
            &[
                declared("w", &[32, 32, 1, 3]),
                shape("by_phase", &[0, 2, 32, -1]),
                shape("interleaved", &[0, 32, 1, -1]),
            ],
            &["y"],
        );
        let (rewritten, removed) = keep_blocked(&interleaved, 16).unwrap();
        assert_eq!(removed, 2);
        assert_eq!(
            listing(&rewritten),
            [
                "ReorderInput(x)->xb",
                "Conv(xb,w)->ab",
                "Conv(xb,w)->bb",
                "Concat(ab,bb)->cb",
                "Reshape(cb,u/blocked_shape)->u/blocked_by_phase",
                "Transpose(u/blocked_by_phase)->u/blocked_moved",
                "Reshape(u/blocked_moved,u/merged_shape)->u/blocked",
                "Conv(u/blocked,w)->vb",
                "ReorderOutput(vb)->y",
            ]
        );
        let parsed = planar::parse(&rewritten).unwrap();
        let tensor = |name: &str| {
            let t = parsed.initializers.iter().find(|i| i.name == name).unwrap();
            int64s(t.payload).unwrap()
        };
        // [N, s, C/b, T, b]: the blocked concat of the two phases, one block of 16 channels at a time.
        assert_eq!(tensor("u/blocked_shape"), [0, 2, 2, -1, 16]);
        assert_eq!(tensor("u/merged_shape"), [0, 32, 1, -1]);
        // The plain interleave's shapes are read by nothing now, and gone.
        assert!(parsed.initializers.iter().all(|i| i.name != "by_phase"));
    }
}
