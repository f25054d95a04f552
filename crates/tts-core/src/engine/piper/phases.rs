//! Runs a 2-D decoder's transposed convolutions as ordinary convolutions, one output phase per channel
//! group, and interleaves the phases back into time.
//!
//! HiFi-GAN upsamples with `ConvTranspose` (kernel `k`, stride `s`, padding `p`). Output sample
//! `n = q·s + r` only ever reads `k / s` input frames, with the kernel taps `b_r + j·s`
//! (`r + p = a_r·s + b_r`): each of the `s` phases is an ordinary convolution of kernel `k / s`, shifted by
//! `a_r` frames. Phases with the same shift share one `Conv` (their weights stacked as output channels);
//! a `Concat`, `Reshape [N, s, C, T]`, `Transpose` to `[N, C, T, s]` and `Reshape [N, C, 1, T·s]` put the
//! samples back in order. Same function and the same multiply-adds, but on ONNX Runtime's blocked-layout
//! convolution kernels instead of its transposed convolution's GEMM and col2im: measured on
//! en_US-joe-medium, one thread, the upsampling layers 24 → 16 ms in a 165 ms decoder run of 276 frames
//! (docs/performance.md). The engine checks the result against the unmodified decoder at a voice's first
//! load, as it does the 2-D rewrite.
//!
//! A transposed convolution of another shape (`k` not a multiple of `s`, output longer or shorter than
//! `T·s`, groups, dilations, output padding, weights that are not float constants) is left as it is.

use std::collections::HashMap;

use super::onnx::{
    ATTRIBUTE_I, ATTRIBUTE_INTS, ATTRIBUTE_NAME, ATTRIBUTE_S, FLOAT, GRAPH_INITIALIZER, GRAPH_NODE,
    NODE_ATTRIBUTE, TENSOR_DATA_TYPE, TENSOR_FLOAT_DATA, TENSOR_NAME, TENSOR_RAW_DATA, float_tensor, int,
    int64_tensor, ints, node,
};
use super::planar::{self, Node, Parsed};
use super::wire;

/// A transposed convolution that splits into phases: its weight `[c_in, c_out, 1, k]`, bias `[c_out]`.
struct Upsample<'a> {
    input: &'a str,
    output: &'a str,
    weight: &'a str,
    bias: Option<&'a str>,
    kernel: usize,
    stride: usize,
    pad: usize,
}

/// Rewrites every transposed convolution of a 2-D `decoder` (a ModelProto, as [`planar::rewrite`] leaves
/// it) that splits into phases; the error says why none does.
pub(super) fn rewrite(decoder: &[u8]) -> Result<Vec<u8>, String> {
    let Parsed {
        model_fields,
        graph,
        nodes,
        initializers,
        ..
    } = planar::parse(decoder)?;
    let tensors: HashMap<&str, &[u8]> = initializers.iter().map(|i| (i.name, i.payload)).collect();
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for input in nodes.iter().flat_map(|n| &n.inputs) {
        *readers.entry(input).or_default() += 1;
    }
    let plans: Vec<Option<Upsample<'_>>> = nodes.iter().map(|n| upsample(n, &tensors)).collect();
    if plans.iter().all(Option::is_none) {
        return Err("no transposed convolution that splits into phases".into());
    }
    let mut replaced: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    let mut added = Vec::new();
    for (node, plan) in nodes.iter().zip(&plans) {
        let Some(plan) = plan else {
            let copy: Vec<u8> = node.fields.iter().flat_map(|f| f.raw).copied().collect();
            wire::put_len(&mut out, GRAPH_NODE, &copy);
            continue;
        };
        phase_nodes(plan, &tensors, &mut out, &mut added)?;
        replaced.extend(std::iter::once(plan.weight).chain(plan.bias));
    }
    // Out with the replaced weights nobody else reads; everything else is copied.
    let mut graph_out = out;
    for field in graph.iter().filter(|f| f.number != GRAPH_NODE) {
        if field.number == GRAPH_INITIALIZER {
            let name = wire::str_field(&wire::fields(field.payload)?, TENSOR_NAME)?;
            if replaced.contains(&name) && readers.get(name) == Some(&1) {
                continue;
            }
        }
        graph_out.extend_from_slice(field.raw);
    }
    for tensor in &added {
        wire::put_len(&mut graph_out, GRAPH_INITIALIZER, tensor);
    }
    Ok(planar::with_graph(&model_fields, &graph_out, decoder.len()))
}

/// `node` as an [`Upsample`] when it is a transposed convolution that splits into phases.
fn upsample<'a>(node: &Node<'a>, tensors: &HashMap<&str, &[u8]>) -> Option<Upsample<'a>> {
    if node.op_type != "ConvTranspose" || node.outputs.len() != 1 {
        return None;
    }
    let (&input, &weight) = (node.inputs.first()?, node.inputs.get(1)?);
    let bias = node.inputs.get(2).copied().filter(|b| !b.is_empty());
    let mut kernel = None;
    let mut stride = 1;
    let mut pads = vec![0, 0, 0, 0];
    for field in node.fields.iter().filter(|f| f.number == NODE_ATTRIBUTE) {
        let attribute = wire::fields(field.payload).ok()?;
        let name = wire::str_field(&attribute, ATTRIBUTE_NAME).ok()?;
        let ints: Vec<u64> = attribute
            .iter()
            .filter(|f| f.number == ATTRIBUTE_INTS)
            .map(wire::Field::uints)
            .collect::<Result<Vec<_>, _>>()
            .ok()?
            .concat();
        let int = attribute
            .iter()
            .find(|f| f.number == ATTRIBUTE_I)
            .and_then(|f| f.uints().ok()?.first().copied());
        let string = attribute.iter().find(|f| f.number == ATTRIBUTE_S);
        match (name, &ints[..]) {
            ("kernel_shape", [1, k]) => kernel = Some(*k as usize),
            ("strides", [1, s]) => stride = *s as usize,
            ("pads", [0, a, 0, b]) if a == b => pads = ints.clone(),
            ("dilations", [1, 1]) | ("output_padding", [0, 0]) => {}
            ("group", []) if int == Some(1) => {}
            ("auto_pad", []) if string.is_some_and(|s| s.payload == b"NOTSET") => {}
            _ => return None,
        }
    }
    let (kernel, pad) = (kernel?, pads[1] as usize);
    let splits = stride > 1 && kernel % stride == 0 && pad < stride && kernel == stride + 2 * pad;
    let [_, c_out, 1, k] = planar::dims(tensors.get(weight)?).ok()?[..] else {
        return None;
    };
    let bias_fits = bias.is_none_or(|b| {
        tensors
            .get(b)
            .and_then(|t| planar::dims(t).ok())
            .is_some_and(|d| d == [c_out])
    });
    (splits && k as usize == kernel && bias_fits).then_some(Upsample {
        input,
        output: node.outputs[0],
        weight,
        bias,
        kernel,
        stride,
        pad,
    })
}

/// Appends the nodes that compute `plan` to `out`, and the initializers they need to `added`.
fn phase_nodes(
    plan: &Upsample<'_>,
    tensors: &HashMap<&str, &[u8]>,
    out: &mut Vec<u8>,
    added: &mut Vec<Vec<u8>>,
) -> Result<(), String> {
    let weight_dims = planar::dims(tensors[plan.weight])?;
    let (c_in, c_out) = (weight_dims[0] as usize, weight_dims[1] as usize);
    let weight = floats(tensors[plan.weight])?;
    let bias = plan.bias.map(|b| floats(tensors[b])).transpose()?;
    if weight.len() != c_in * c_out * plan.kernel || bias.as_ref().is_some_and(|b| b.len() != c_out) {
        return Err(format!("{}: weight or bias of the wrong size", plan.output));
    }
    let (s, taps) = (plan.stride, plan.kernel / plan.stride);
    // Phase r reads input frame q + shift − j through tap b + j·s, where r + pad = shift·s + b.
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for r in 0..s {
        let (shift, b) = ((r + plan.pad) / s, (r + plan.pad) % s);
        match groups.last_mut() {
            Some((last, taps_of)) if *last == shift => taps_of.push(b),
            _ => groups.push((shift, vec![b])),
        }
    }
    let base = plan.output;
    let mut phases = Vec::new();
    for (shift, offsets) in &groups {
        let mut w = vec![0f32; offsets.len() * c_out * c_in * taps];
        for (phase, &b) in offsets.iter().enumerate() {
            for o in 0..c_out {
                for i in 0..c_in {
                    for u in 0..taps {
                        let tap = b + (taps - 1 - u) * s;
                        w[((phase * c_out + o) * c_in + i) * taps + u] =
                            weight[(i * c_out + o) * plan.kernel + tap];
                    }
                }
            }
        }
        let name = format!("{base}/phases{shift}");
        let rows = (offsets.len() * c_out) as u64;
        added.push(float_tensor(
            &format!("{name}/weight"),
            &[rows, c_in as u64, 1, taps as u64],
            &w,
        ));
        let mut inputs = vec![plan.input.to_owned(), format!("{name}/weight")];
        if let Some(bias) = &bias {
            added.push(float_tensor(
                &format!("{name}/bias"),
                &[rows],
                &bias.repeat(offsets.len()),
            ));
            inputs.push(format!("{name}/bias"));
        }
        let pads = [0, (taps - 1 - shift) as i64, 0, *shift as i64];
        let conv = node(
            "Conv",
            &inputs,
            &name,
            &[
                ints("kernel_shape", &[1, taps as i64]),
                ints("pads", &pads),
                ints("strides", &[1, 1]),
            ],
        );
        wire::put_len(out, GRAPH_NODE, &conv);
        phases.push(name);
    }
    let stacked = if phases.len() == 1 {
        phases.remove(0)
    } else {
        let name = format!("{base}/phases");
        wire::put_len(
            out,
            GRAPH_NODE,
            &node("Concat", &phases, &name, &[int("axis", 1)]),
        );
        name
    };
    let (by_phase, interleaved) = (format!("{base}/by_phase"), format!("{base}/interleaved"));
    let (shape_in, shape_out) = (
        format!("{base}/by_phase_shape"),
        format!("{base}/interleaved_shape"),
    );
    added.push(int64_tensor(&shape_in, &[0, s as i64, c_out as i64, -1]));
    added.push(int64_tensor(&shape_out, &[0, c_out as i64, 1, -1]));
    let reshape = node("Reshape", &[stacked, shape_in], &by_phase, &[]);
    wire::put_len(out, GRAPH_NODE, &reshape);
    let transpose = node(
        "Transpose",
        &[by_phase],
        &interleaved,
        &[ints("perm", &[0, 2, 3, 1])],
    );
    wire::put_len(out, GRAPH_NODE, &transpose);
    let back = node("Reshape", &[interleaved, shape_out], plan.output, &[]);
    wire::put_len(out, GRAPH_NODE, &back);
    Ok(())
}

/// The values of a float TensorProto (raw or packed `float_data`).
fn floats(tensor: &[u8]) -> Result<Vec<f32>, String> {
    let fields = wire::fields(tensor)?;
    let kind = wire::first_uint(&fields, TENSOR_DATA_TYPE)?;
    if kind != Some(FLOAT) {
        return Err(format!("a weight of data type {kind:?}, not float"));
    }
    let bytes = fields
        .iter()
        .find(|f| f.number == TENSOR_RAW_DATA || f.number == TENSOR_FLOAT_DATA)
        .map(|f| f.payload)
        .ok_or("a weight without inline data")?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::piper::onnx::build::{self, value_info};
    use crate::engine::piper::onnx::{GRAPH_INPUT, GRAPH_OUTPUT};

    const C_IN: usize = 2;
    const C_OUT: usize = 3;

    /// x → ConvTranspose(kernel, stride, pad) → y, with made-up weights and bias.
    fn model(kernel: usize, stride: usize, pad: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let weight: Vec<f32> = (0..C_IN * C_OUT * kernel)
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let bias = vec![0.5, -1.0, 2.0];
        let mut graph = Vec::new();
        let upsample = node(
            "ConvTranspose",
            &["x", "u", "ub"],
            "y",
            &[
                ints("kernel_shape", &[1, kernel as i64]),
                ints("strides", &[1, stride as i64]),
                ints("pads", &[0, pad as i64, 0, pad as i64]),
            ],
        );
        wire::put_len(&mut graph, GRAPH_NODE, &upsample);
        let dims = [C_IN as u64, C_OUT as u64, 1, kernel as u64];
        wire::put_len(&mut graph, GRAPH_INITIALIZER, &float_tensor("u", &dims, &weight));
        wire::put_len(
            &mut graph,
            GRAPH_INITIALIZER,
            &float_tensor("ub", &[C_OUT as u64], &bias),
        );
        wire::put_len(&mut graph, GRAPH_INPUT, &value_info("x"));
        wire::put_len(&mut graph, GRAPH_OUTPUT, &value_info("y"));
        (build::model(&graph, 17), weight, bias)
    }

    /// `ConvTranspose` by its definition: `x` is `[C_IN][t]`, the result `[C_OUT][t·stride]`.
    fn transposed(
        x: &[Vec<f32>],
        weight: &[f32],
        bias: &[f32],
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Vec<Vec<f32>> {
        let frames = x[0].len();
        let mut full = vec![vec![0f32; (frames - 1) * stride + kernel]; C_OUT];
        for (i, row) in x.iter().enumerate() {
            for (t, &v) in row.iter().enumerate() {
                for o in 0..C_OUT {
                    for tap in 0..kernel {
                        full[o][t * stride + tap] += v * weight[(i * C_OUT + o) * kernel + tap];
                    }
                }
            }
        }
        full.iter()
            .zip(bias)
            .map(|(row, b)| row[pad..pad + frames * stride].iter().map(|v| v + b).collect())
            .collect()
    }

    /// The rewritten graph run by hand: each phase `Conv` by its definition, then the interleave.
    fn phased(model: &[u8], x: &[Vec<f32>], stride: usize) -> Vec<Vec<f32>> {
        let parsed = planar::parse(model).unwrap();
        let tensors: HashMap<&str, &[u8]> = parsed.initializers.iter().map(|i| (i.name, i.payload)).collect();
        let frames = x[0].len();
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for node in parsed.nodes.iter().filter(|n| n.op_type == "Conv") {
            let dims = planar::dims(tensors[node.inputs[1]]).unwrap();
            let (out_rows, taps) = (dims[0] as usize, dims[3] as usize);
            let (weight, bias) = (
                floats(tensors[node.inputs[1]]).unwrap(),
                floats(tensors[node.inputs[2]]).unwrap(),
            );
            let pads = node
                .fields
                .iter()
                .filter(|f| f.number == NODE_ATTRIBUTE)
                .map(|f| wire::fields(f.payload).unwrap())
                .find(|a| wire::str_field(a, ATTRIBUTE_NAME).unwrap() == "pads")
                .map(|a| {
                    a.iter()
                        .filter(|f| f.number == ATTRIBUTE_INTS)
                        .flat_map(|f| f.uints().unwrap())
                        .collect::<Vec<_>>()
                })
                .unwrap();
            let left = pads[1] as usize;
            for row in 0..out_rows {
                rows.push(
                    (0..frames)
                        .map(|q| {
                            let mut sum = bias[row];
                            for (i, input) in x.iter().enumerate() {
                                for u in 0..taps {
                                    let at = (q + u).checked_sub(left).filter(|&t| t < frames);
                                    sum += at.map_or(0.0, |t| input[t]) * weight[(row * C_IN + i) * taps + u];
                                }
                            }
                            sum
                        })
                        .collect(),
                );
            }
        }
        (0..C_OUT)
            .map(|o| {
                (0..frames * stride)
                    .map(|n| rows[(n % stride) * C_OUT + o][n / stride])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn phase_convolutions_compute_what_the_transposed_convolution_does() {
        let x: Vec<Vec<f32>> = (0..C_IN)
            .map(|i| (0..9).map(|t| ((t * 3 + i * 5) % 7) as f32 - 3.0).collect())
            .collect();
        // HiFi-GAN's upsampling shapes (kernel 2·stride) and others whose output is exactly T·stride.
        for (kernel, stride, pad) in [
            (16, 8, 4),
            (8, 4, 2),
            (4, 2, 1),
            (12, 6, 3),
            (3, 3, 0),
            (20, 10, 5),
        ] {
            let (model, weight, bias) = model(kernel, stride, pad);
            let rewritten =
                rewrite(&model).unwrap_or_else(|e| panic!("kernel {kernel}, stride {stride}: {e}"));
            let parsed = planar::parse(&rewritten).unwrap();
            let ops: Vec<&str> = parsed.nodes.iter().map(|n| n.op_type).collect();
            assert!(!ops.contains(&"ConvTranspose"), "{ops:?}");
            assert!(
                !parsed.initializers.iter().any(|i| i.name == "u"),
                "the replaced weight is gone"
            );
            let expected = transposed(&x, &weight, &bias, kernel, stride, pad);
            assert_eq!(
                phased(&rewritten, &x, stride),
                expected,
                "kernel {kernel}, stride {stride}, pad {pad}"
            );
        }
    }

    #[test]
    fn a_transposed_convolution_of_another_shape_is_left_as_it_is() {
        // Kernel not a multiple of the stride; output longer than T·stride; padding of a whole stride.
        for (kernel, stride, pad) in [(5, 2, 1), (8, 4, 1), (9, 3, 3)] {
            let (model, ..) = model(kernel, stride, pad);
            assert_eq!(
                rewrite(&model).unwrap_err(),
                "no transposed convolution that splits into phases"
            );
        }
    }
}
