//! Runs a split Piper voice's 1-D convolutions as 2-D ones over a height of 1.
//!
//! ONNX Runtime's CPU provider has blocked-layout (NCHWc) convolution kernels for 2-D convolutions only;
//! 1-D ones take its generic im2col-and-GEMM path. The VITS decoder (HiFi-GAN) is convolutions,
//! transposed convolutions and element-wise operators, so all of it can run on `[N, C, 1, T]` tensors
//! instead of `[N, C, T]`: each decoder input gets an `Unsqueeze` at axis 2; each `Conv` and
//! `ConvTranspose` weight `[O, I, k]` becomes `[O, I, 1, k]` (the same bytes, only its dims change), its
//! attributes gain a leading height of 1 (`pads` `[a, b]` become `[0, a, 0, b]`); and every 4-D tensor
//! that another operator reads (the graph's final `Unsqueeze`) gets a `Squeeze` back. The result is the
//! same function; the engine checks that at a voice's first load against the unmodified decoder.
//! Measured on en_US-joe-medium, one thread: 12-15 % less decoder time (docs/performance.md).
//!
//! A decoder with anything else between its inputs and those convolutions (an operator whose meaning
//! depends on the rank, a constant that would broadcast differently, opset before 13) is left as it
//! is, and the error says why.
//!
//! The first part (text encoder, duration predictor, flow) mixes convolutions with attention, reshapes
//! and slices whose meaning depends on the rank, so there [`wrap_convs`] rewrites each 1-D `Conv` on its
//! own, between an `Unsqueeze` of its input and a `Squeeze` of its output: the rest of the graph sees the
//! same 3-D tensors. Measured on en_US-joe-medium, one thread: 3-11 % less first-part time, more on
//! longer chunks (docs/performance.md).

use std::collections::{HashMap, HashSet};

use super::onnx::{
    self, ATTRIBUTE_INTS, ATTRIBUTE_NAME, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_NODE, GRAPH_OUTPUT,
    GRAPH_VALUE_INFO, INT64, MODEL_GRAPH, MODEL_OPSET_IMPORT, NODE_ATTRIBUTE, NODE_INPUT, NODE_OP_TYPE,
    NODE_OUTPUT, OPSET_DOMAIN, OPSET_VERSION, TENSOR_DATA_TYPE, TENSOR_DIMS, TENSOR_INT64_DATA, TENSOR_NAME,
    VALUE_INFO_NAME,
};
use super::split::{Named, named, single};
use super::wire::{self, Field};

/// Operators whose meaning does not depend on the rank of their inputs.
const ELEMENTWISE: [&str; 8] = ["Add", "Sub", "Mul", "Div", "LeakyRelu", "Relu", "Tanh", "Sigmoid"];
const CONVOLUTIONS: [&str; 2] = ["Conv", "ConvTranspose"];
/// The initializer holding `[2]`, the axes of the added `Unsqueeze` and `Squeeze` nodes.
const AXES: &str = "/planar/axes";

pub(super) struct Node<'a> {
    pub(super) fields: Vec<Field<'a>>,
    pub(super) op_type: &'a str,
    pub(super) inputs: Vec<&'a str>,
    pub(super) outputs: Vec<&'a str>,
}

/// Rewrites `decoder` (a ModelProto) to run on 4-D tensors; the error says why it cannot.
pub(super) fn rewrite(decoder: &[u8]) -> Result<Vec<u8>, String> {
    let Parsed {
        model_fields,
        graph,
        nodes,
        initializers,
        ranks,
    } = parse_fresh(decoder)?;
    let inputs: Vec<&str> = named(&graph, GRAPH_INPUT, VALUE_INFO_NAME)?
        .iter()
        .map(|n| n.name)
        .collect();
    let outputs: HashSet<&str> = named(&graph, GRAPH_OUTPUT, VALUE_INFO_NAME)?
        .iter()
        .map(|n| n.name)
        .collect();

    // Which tensors are 4-D after the rewrite, and which nodes run on them.
    let mut planar: HashSet<&str> = inputs.iter().copied().collect();
    let mut in_region = vec![false; nodes.len()];
    let mut weights: HashSet<&str> = HashSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let reads_planar = node.inputs.iter().any(|n| planar.contains(n));
        let supported = ELEMENTWISE.contains(&node.op_type) || CONVOLUTIONS.contains(&node.op_type);
        if !reads_planar {
            continue;
        }
        if !supported {
            continue; // It reads 4-D tensors through a Squeeze.
        }
        if CONVOLUTIONS.contains(&node.op_type) {
            let [data, weight, rest @ ..] = &node.inputs[..] else {
                return Err(format!("a {} without a weight", node.op_type));
            };
            if !planar.contains(data) || ranks.get(weight) != Some(&3) {
                return Err(format!(
                    "{} reads {data} and {weight}: not a 1-D convolution",
                    node.op_type
                ));
            }
            if rest.iter().any(|b| !b.is_empty() && ranks.get(b) != Some(&1)) {
                return Err(format!(
                    "{} has a bias that is not a constant vector",
                    node.op_type
                ));
            }
            weights.insert(weight);
        } else {
            for input in &node.inputs {
                if !planar.contains(input) && ranks.get(input).is_none_or(|&r| r > 1) {
                    return Err(format!(
                        "{} reads {input}, which is neither on the decoder's path nor a scalar or vector constant",
                        node.op_type
                    ));
                }
            }
        }
        if let Some(out) = node.outputs.iter().find(|o| outputs.contains(*o)) {
            return Err(format!("graph output {out} would be 4-D"));
        }
        in_region[i] = true;
        planar.extend(node.outputs.iter().copied());
    }
    if !nodes
        .iter()
        .zip(&in_region)
        .any(|(n, &r)| r && CONVOLUTIONS.contains(&n.op_type))
    {
        return Err("no convolution reads the decoder's inputs".into());
    }

    // The new graph: Unsqueeze the inputs, the region with 2-D convolutions, a Squeeze before every
    // other reader of a 4-D tensor.
    let unsqueezed = |name: &str| format!("{name}/planar");
    let squeezed = |name: &str| format!("{name}/squeezed");
    let mut out = Vec::new();
    for input in &inputs {
        let node = onnx::node("Unsqueeze", &[input, AXES], &unsqueezed(input), &[]);
        wire::put_len(&mut out, GRAPH_NODE, &node);
    }
    let is_input: HashSet<&str> = inputs.iter().copied().collect();
    let mut squeezes_done: HashSet<&str> = HashSet::new();
    for (node, &region) in nodes.iter().zip(&in_region) {
        let rename = |name: &str| -> String {
            if region && is_input.contains(name) {
                unsqueezed(name)
            } else if !region && planar.contains(name) && !is_input.contains(name) {
                squeezed(name)
            } else {
                name.to_owned()
            }
        };
        if !region {
            for input in node
                .inputs
                .iter()
                .filter(|n| planar.contains(*n) && !is_input.contains(*n))
            {
                if squeezes_done.insert(input) {
                    let squeeze = onnx::node("Squeeze", &[input, AXES], &squeezed(input), &[]);
                    wire::put_len(&mut out, GRAPH_NODE, &squeeze);
                }
            }
        }
        let mut rebuilt = Vec::new();
        for field in &node.fields {
            match field.number {
                NODE_INPUT => wire::put_len(&mut rebuilt, NODE_INPUT, rename(field.as_str()?).as_bytes()),
                NODE_ATTRIBUTE if region && CONVOLUTIONS.contains(&node.op_type) => {
                    wire::put_len(&mut rebuilt, NODE_ATTRIBUTE, &attribute(field.payload)?);
                }
                _ => rebuilt.extend_from_slice(field.raw),
            }
        }
        wire::put_len(&mut out, GRAPH_NODE, &rebuilt);
    }
    for field in &graph {
        match field.number {
            GRAPH_NODE => {}
            GRAPH_INITIALIZER => {
                let name = initializers
                    .iter()
                    .find(|i| std::ptr::eq(i.payload, field.payload))
                    .map_or("", |i| i.name);
                if weights.contains(name) {
                    wire::put_len(&mut out, GRAPH_INITIALIZER, &with_height(field.payload)?);
                } else {
                    out.extend_from_slice(field.raw);
                }
            }
            // Shapes recorded for the region's tensors are 3-D; ONNX Runtime infers the new ones.
            GRAPH_VALUE_INFO => {
                let name = wire::str_field(&wire::fields(field.payload)?, VALUE_INFO_NAME)?;
                if !planar.contains(name) {
                    out.extend_from_slice(field.raw);
                }
            }
            _ => out.extend_from_slice(field.raw),
        }
    }
    wire::put_len(&mut out, GRAPH_INITIALIZER, &axes_tensor());
    Ok(with_graph(&model_fields, &out, decoder.len()))
}

/// Rewrites every 1-D `Conv` of `model` (a ModelProto) whose weight is a 3-D initializer read by no other
/// node as a 2-D `Conv` over a height of 1, between an `Unsqueeze` of its input and a `Squeeze` back to
/// its original output; every other node is copied. The error says why it cannot (opset before 13, no
/// such convolution).
pub(super) fn wrap_convs(model: &[u8]) -> Result<Vec<u8>, String> {
    let Parsed {
        model_fields,
        graph,
        nodes,
        initializers,
        ranks,
    } = parse_fresh(model)?;
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for input in nodes.iter().flat_map(|n| &n.inputs) {
        *readers.entry(input).or_default() += 1;
    }
    // Per node, the weight of a convolution to wrap.
    let wrapped: Vec<Option<&str>> = nodes
        .iter()
        .map(|node| {
            let weight = *node.inputs.get(1)?;
            let one_dimensional = node.op_type == "Conv"
                && node.outputs.len() == 1
                && ranks.get(weight) == Some(&3)
                && readers.get(weight) == Some(&1);
            one_dimensional.then_some(weight)
        })
        .collect();
    let weights: HashSet<&str> = wrapped.iter().flatten().copied().collect();
    if weights.is_empty() {
        return Err("no 1-D convolution with a constant weight".into());
    }

    let mut out = Vec::new();
    for (node, weight) in nodes.iter().zip(&wrapped) {
        let mut rebuilt = Vec::new();
        if weight.is_none() {
            for field in &node.fields {
                rebuilt.extend_from_slice(field.raw);
            }
            wire::put_len(&mut out, GRAPH_NODE, &rebuilt);
            continue;
        }
        let output = node.outputs[0];
        let (input, result) = (format!("{output}/planar_in"), format!("{output}/planar"));
        let unsqueeze = onnx::node("Unsqueeze", &[node.inputs[0], AXES], &input, &[]);
        wire::put_len(&mut out, GRAPH_NODE, &unsqueeze);
        let mut first_input = true;
        for field in &node.fields {
            match field.number {
                NODE_INPUT if first_input => {
                    first_input = false;
                    wire::put_len(&mut rebuilt, NODE_INPUT, input.as_bytes());
                }
                NODE_OUTPUT => wire::put_len(&mut rebuilt, NODE_OUTPUT, result.as_bytes()),
                NODE_ATTRIBUTE => wire::put_len(&mut rebuilt, NODE_ATTRIBUTE, &attribute(field.payload)?),
                _ => rebuilt.extend_from_slice(field.raw),
            }
        }
        wire::put_len(&mut out, GRAPH_NODE, &rebuilt);
        let squeeze = onnx::node("Squeeze", &[&result, AXES], output, &[]);
        wire::put_len(&mut out, GRAPH_NODE, &squeeze);
    }
    for field in graph.iter().filter(|f| f.number != GRAPH_NODE) {
        let name = (field.number == GRAPH_INITIALIZER)
            .then(|| {
                initializers
                    .iter()
                    .find(|i| std::ptr::eq(i.payload, field.payload))
            })
            .flatten()
            .map_or("", |i| i.name);
        if weights.contains(name) {
            wire::put_len(&mut out, GRAPH_INITIALIZER, &with_height(field.payload)?);
        } else {
            out.extend_from_slice(field.raw);
        }
    }
    wire::put_len(&mut out, GRAPH_INITIALIZER, &axes_tensor());
    Ok(with_graph(&model_fields, &out, model.len()))
}

/// A model's graph, read for a rewrite.
pub(super) struct Parsed<'a> {
    pub(super) model_fields: Vec<Field<'a>>,
    pub(super) graph: Vec<Field<'a>>,
    pub(super) nodes: Vec<Node<'a>>,
    pub(super) initializers: Vec<Named<'a>>,
    /// Initializer name → rank.
    pub(super) ranks: HashMap<&'a str, usize>,
}

/// Reads `model` (a ModelProto) for a rewrite that adds [`AXES`]: its opset must be 13 or later (for the
/// axes input of `Squeeze` and `Unsqueeze`), and the name must be free.
fn parse_fresh(model: &[u8]) -> Result<Parsed<'_>, String> {
    let parsed = parse(model)?;
    if parsed.ranks.contains_key(AXES) {
        return Err(format!("the model already has an initializer named {AXES}"));
    }
    Ok(parsed)
}

/// Reads `model` (a ModelProto, opset 13 or later) for a rewrite.
pub(super) fn parse(model: &[u8]) -> Result<Parsed<'_>, String> {
    let model_fields = wire::fields(model)?;
    check_opset(&model_fields)?;
    let graph = wire::fields(single(&model_fields, MODEL_GRAPH, "graph")?.payload)?;
    let nodes = graph
        .iter()
        .filter(|f| f.number == GRAPH_NODE)
        .map(|f| node(f.payload))
        .collect::<Result<Vec<_>, _>>()?;
    let initializers = named(&graph, GRAPH_INITIALIZER, TENSOR_NAME)?;
    let ranks = initializers
        .iter()
        .map(|i| Ok((i.name, dims(i.payload)?.len())))
        .collect::<Result<HashMap<_, _>, String>>()?;
    Ok(Parsed {
        model_fields,
        graph,
        nodes,
        initializers,
        ranks,
    })
}

/// The model of `model_fields` with `graph` as its graph.
pub(super) fn with_graph(model_fields: &[Field<'_>], graph: &[u8], size: usize) -> Vec<u8> {
    let mut model = Vec::with_capacity(size + 1024);
    for field in model_fields {
        if field.number == MODEL_GRAPH {
            wire::put_len(&mut model, MODEL_GRAPH, graph);
        } else {
            model.extend_from_slice(field.raw);
        }
    }
    model
}

/// `Squeeze` and `Unsqueeze` take their axes as an input from opset 13 on.
fn check_opset(model_fields: &[Field<'_>]) -> Result<(), String> {
    for field in model_fields.iter().filter(|f| f.number == MODEL_OPSET_IMPORT) {
        let opset = wire::fields(field.payload)?;
        let domain = wire::str_field(&opset, OPSET_DOMAIN)?;
        if domain.is_empty() || domain == "ai.onnx" {
            let version = wire::first_uint(&opset, OPSET_VERSION)?.unwrap_or(0);
            return if version >= 13 {
                Ok(())
            } else {
                Err(format!("opset {version} (Squeeze and Unsqueeze need 13)"))
            };
        }
    }
    Err("no default-domain opset".into())
}

fn node(bytes: &[u8]) -> Result<Node<'_>, String> {
    let fields = wire::fields(bytes)?;
    let mut node = Node {
        fields: Vec::new(),
        op_type: "",
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    for field in &fields {
        match field.number {
            NODE_INPUT => node.inputs.push(field.as_str()?),
            NODE_OUTPUT => node.outputs.push(field.as_str()?),
            NODE_OP_TYPE => node.op_type = field.as_str()?,
            _ => {}
        }
    }
    node.fields = fields;
    Ok(node)
}

/// The dims of a TensorProto.
pub(super) fn dims(tensor: &[u8]) -> Result<Vec<u64>, String> {
    let mut dims = Vec::new();
    for field in wire::fields(tensor)?.iter().filter(|f| f.number == TENSOR_DIMS) {
        dims.extend(field.uints()?);
    }
    Ok(dims)
}

/// A 1-D convolution weight `[O, I, k]` as a 2-D one, `[O, I, 1, k]`; its data is unchanged.
fn with_height(tensor: &[u8]) -> Result<Vec<u8>, String> {
    let [o, i, k] = dims(tensor)?[..] else {
        return Err("a convolution weight is not 3-D".into());
    };
    let mut out = Vec::with_capacity(tensor.len() + 8);
    for dim in [o, i, 1, k] {
        wire::put_uint(&mut out, TENSOR_DIMS, dim);
    }
    for field in wire::fields(tensor)?.iter().filter(|f| f.number != TENSOR_DIMS) {
        out.extend_from_slice(field.raw);
    }
    Ok(out)
}

/// A convolution attribute for a height of 1: `kernel_shape`, `strides`, `dilations` gain a leading 1,
/// `output_padding` a leading 0, `pads` `[a, b]` become `[0, a, 0, b]`; others are copied.
fn attribute(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let fields = wire::fields(bytes)?;
    let name = wire::str_field(&fields, ATTRIBUTE_NAME)?;
    let mut ints = Vec::new();
    for field in fields.iter().filter(|f| f.number == ATTRIBUTE_INTS) {
        ints.extend(field.uints()?);
    }
    let ints = match (name, &ints[..]) {
        ("kernel_shape" | "strides" | "dilations", [v]) => vec![1, *v],
        ("output_padding", [v]) => vec![0, *v],
        ("pads", [a, b]) => vec![0, *a, 0, *b],
        ("output_shape", _) => return Err("a ConvTranspose with output_shape".into()),
        ("kernel_shape" | "strides" | "dilations" | "output_padding" | "pads", _) => {
            return Err(format!("{name} {ints:?} is not 1-D"));
        }
        _ => return Ok(bytes.to_vec()),
    };
    let mut out = Vec::with_capacity(bytes.len() + 8);
    for field in fields.iter().filter(|f| f.number != ATTRIBUTE_INTS) {
        out.extend_from_slice(field.raw);
    }
    for value in ints {
        wire::put_uint(&mut out, ATTRIBUTE_INTS, value);
    }
    Ok(out)
}

/// The int64 tensor `[2]` named [`AXES`].
fn axes_tensor() -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_uint(&mut out, TENSOR_DIMS, 1);
    wire::put_uint(&mut out, TENSOR_DATA_TYPE, INT64);
    wire::put_uint(&mut out, TENSOR_INT64_DATA, 2);
    wire::put_len(&mut out, TENSOR_NAME, AXES.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::piper::onnx::build::{self, declared, value_info};
    use crate::engine::piper::onnx::{ints, node};

    /// A model of `graph`'s nodes and initializers, with input `input`, output `y`, a recorded shape
    /// for `c`, and the default-domain `opset`.
    fn model(mut graph: Vec<u8>, input: &str, opset: u64) -> Vec<u8> {
        wire::put_len(&mut graph, GRAPH_INPUT, &value_info(input));
        wire::put_len(&mut graph, GRAPH_OUTPUT, &value_info("y"));
        wire::put_len(&mut graph, GRAPH_VALUE_INFO, &value_info("c"));
        build::model(&graph, opset)
    }

    /// z → Conv(w, b) → c → LeakyRelu → l → Add(scale) → a → ConvTranspose(u) → t → Unsqueeze → y.
    fn decoder(opset: u64, scale_dims: &[u64]) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in [
            node(
                "Conv",
                &["z", "w", "b"],
                "c",
                &[
                    ints("kernel_shape", &[3]),
                    ints("pads", &[1, 1]),
                    ints("strides", &[1]),
                ],
            ),
            node("LeakyRelu", &["c"], "l", &[]),
            node("Add", &["l", "scale"], "a", &[]),
            node(
                "ConvTranspose",
                &["a", "u"],
                "t",
                &[
                    ints("kernel_shape", &[4]),
                    ints("strides", &[2]),
                    ints("pads", &[1, 1]),
                ],
            ),
            node("Unsqueeze", &["t", "one"], "y", &[]),
        ] {
            wire::put_len(&mut graph, GRAPH_NODE, &n);
        }
        for t in [
            declared("w", &[2, 4, 3]),
            declared("b", &[2]),
            declared("scale", scale_dims),
            declared("u", &[2, 1, 4]),
            declared("one", &[1]),
        ] {
            wire::put_len(&mut graph, GRAPH_INITIALIZER, &t);
        }
        model(graph, "z", opset)
    }

    /// A node as (op, inputs, output, attributes as name → ints).
    type NodeSummary = (String, Vec<String>, String, Vec<(String, Vec<u64>)>);
    /// An initializer's name and dims.
    type Dims = (String, Vec<u64>);

    /// Every node, initializer name → dims, and the value_info names.
    fn summary(model: &[u8]) -> (Vec<NodeSummary>, Vec<Dims>, Vec<String>) {
        let fields = wire::fields(model).unwrap();
        let graph = wire::fields(single(&fields, MODEL_GRAPH, "graph").unwrap().payload).unwrap();
        let mut nodes = Vec::new();
        for f in graph.iter().filter(|f| f.number == GRAPH_NODE) {
            let n = node_of(f.payload);
            nodes.push(n);
        }
        let inits = named(&graph, GRAPH_INITIALIZER, TENSOR_NAME)
            .unwrap()
            .iter()
            .map(|i| (i.name.to_owned(), dims(i.payload).unwrap()))
            .collect();
        let infos = named(&graph, GRAPH_VALUE_INFO, VALUE_INFO_NAME)
            .unwrap()
            .iter()
            .map(|i| i.name.to_owned())
            .collect();
        (nodes, inits, infos)
    }

    fn node_of(bytes: &[u8]) -> NodeSummary {
        let n = super::node(bytes).unwrap();
        let attributes = n
            .fields
            .iter()
            .filter(|f| f.number == NODE_ATTRIBUTE)
            .map(|f| {
                let a = wire::fields(f.payload).unwrap();
                let name = a
                    .iter()
                    .find(|x| x.number == ATTRIBUTE_NAME)
                    .unwrap()
                    .as_str()
                    .unwrap();
                let values = a
                    .iter()
                    .filter(|x| x.number == ATTRIBUTE_INTS)
                    .flat_map(|x| x.uints().unwrap())
                    .collect();
                (name.to_owned(), values)
            })
            .collect();
        (
            n.op_type.to_owned(),
            n.inputs.iter().map(|s| (*s).to_owned()).collect(),
            n.outputs[0].to_owned(),
            attributes,
        )
    }

    /// Each node as (op, inputs, output).
    fn wiring(nodes: &[NodeSummary]) -> Vec<(&str, Vec<&str>, &str)> {
        nodes
            .iter()
            .map(|(op, inputs, output, _)| {
                (
                    op.as_str(),
                    inputs.iter().map(String::as_str).collect(),
                    output.as_str(),
                )
            })
            .collect()
    }

    /// Attributes as `summary` gives them.
    fn pairs(v: &[(&str, &[u64])]) -> Vec<(String, Vec<u64>)> {
        v.iter().map(|(n, x)| ((*n).to_owned(), x.to_vec())).collect()
    }

    /// The dims of initializer `name`, if there is one.
    fn dims_of(inits: &[Dims], name: &str) -> Option<Vec<u64>> {
        inits.iter().find(|(n, _)| n == name).map(|(_, d)| d.clone())
    }

    #[test]
    fn convolutions_gain_a_height_of_one_between_an_unsqueeze_and_a_squeeze() {
        let (nodes, inits, infos) = summary(&rewrite(&decoder(15, &[])).unwrap());
        assert_eq!(
            wiring(&nodes),
            vec![
                ("Unsqueeze", vec!["z", AXES], "z/planar"),
                ("Conv", vec!["z/planar", "w", "b"], "c"),
                ("LeakyRelu", vec!["c"], "l"),
                ("Add", vec!["l", "scale"], "a"),
                ("ConvTranspose", vec!["a", "u"], "t"),
                ("Squeeze", vec!["t", AXES], "t/squeezed"),
                ("Unsqueeze", vec!["t/squeezed", "one"], "y"),
            ]
        );
        let attributes = |i: usize| nodes[i].3.clone();
        assert_eq!(
            attributes(1),
            pairs(&[
                ("kernel_shape", &[1, 3]),
                ("pads", &[0, 1, 0, 1]),
                ("strides", &[1, 1])
            ])
        );
        assert_eq!(
            attributes(4),
            pairs(&[
                ("kernel_shape", &[1, 4]),
                ("strides", &[1, 2]),
                ("pads", &[0, 1, 0, 1])
            ])
        );
        assert_eq!(dims_of(&inits, "w"), Some(vec![2, 4, 1, 3]));
        assert_eq!(dims_of(&inits, "u"), Some(vec![2, 1, 1, 4]));
        assert_eq!(dims_of(&inits, "b"), Some(vec![2]));
        assert_eq!(dims_of(&inits, AXES), Some(vec![1]));
        // The 3-D shape recorded for `c` would contradict the new one.
        assert!(infos.is_empty(), "{infos:?}");
    }

    /// x → Conv(`first`, b) → c → Relu → r → Conv(s) → d → Conv(s) → e → MatMul(m) → y; `s` is read
    /// at least twice.
    fn first_part(opset: u64, first: &str) -> Vec<u8> {
        let mut graph = Vec::new();
        let conv = |input: &str, weight: &str, output: &str| {
            node(
                "Conv",
                &[input, weight],
                output,
                &[ints("kernel_shape", &[3]), ints("pads", &[1, 1])],
            )
        };
        for n in [
            node(
                "Conv",
                &["x", first, "b"],
                "c",
                &[ints("kernel_shape", &[3]), ints("pads", &[1, 1])],
            ),
            node("Relu", &["c"], "r", &[]),
            conv("r", "s", "d"),
            conv("d", "s", "e"),
            node("MatMul", &["e", "m"], "y", &[]),
        ] {
            wire::put_len(&mut graph, GRAPH_NODE, &n);
        }
        for t in [
            declared("w", &[2, 4, 3]),
            declared("b", &[2]),
            declared("s", &[2, 2, 3]),
            declared("m", &[5, 5]),
        ] {
            wire::put_len(&mut graph, GRAPH_INITIALIZER, &t);
        }
        model(graph, "x", opset)
    }

    #[test]
    fn each_first_part_convolution_is_wrapped_on_its_own_and_the_graph_keeps_its_3d_tensors() {
        let (nodes, inits, infos) = summary(&wrap_convs(&first_part(15, "w")).unwrap());
        assert_eq!(
            wiring(&nodes),
            vec![
                ("Unsqueeze", vec!["x", AXES], "c/planar_in"),
                ("Conv", vec!["c/planar_in", "w", "b"], "c/planar"),
                ("Squeeze", vec!["c/planar", AXES], "c"),
                ("Relu", vec!["c"], "r"),
                // A weight two convolutions share stays as it is, and so do they.
                ("Conv", vec!["r", "s"], "d"),
                ("Conv", vec!["d", "s"], "e"),
                ("MatMul", vec!["e", "m"], "y"),
            ]
        );
        assert_eq!(
            nodes[1].3,
            pairs(&[("kernel_shape", &[1, 3]), ("pads", &[0, 1, 0, 1])])
        );
        assert_eq!(nodes[4].3, pairs(&[("kernel_shape", &[3]), ("pads", &[1, 1])]));
        assert_eq!(dims_of(&inits, "w"), Some(vec![2, 4, 1, 3]));
        assert_eq!(dims_of(&inits, "s"), Some(vec![2, 2, 3]));
        assert_eq!(dims_of(&inits, "m"), Some(vec![5, 5]));
        assert_eq!(dims_of(&inits, AXES), Some(vec![1]));
        // `c` is 3-D again after its Squeeze, so its recorded shape still holds.
        assert_eq!(infos, vec!["c".to_owned()]);
    }

    #[test]
    fn a_first_part_that_cannot_be_wrapped_says_why() {
        let err = wrap_convs(&first_part(12, "w")).unwrap_err();
        assert!(err.contains("opset 12"), "{err}");
        // Only a shared weight: nothing to wrap.
        let err = wrap_convs(&first_part(15, "s")).unwrap_err();
        assert!(err.contains("no 1-D convolution"), "{err}");
    }

    #[test]
    fn what_would_change_meaning_is_refused_with_the_reason() {
        let err = rewrite(&decoder(12, &[])).unwrap_err();
        assert!(err.contains("opset 12"), "{err}");
        // A [C, 1]-shaped constant broadcasts differently against 4-D tensors.
        let err = rewrite(&decoder(15, &[2, 1])).unwrap_err();
        assert!(err.contains("scale"), "{err}");
        assert!(rewrite(b"\x0a\x05abc").is_err());
    }
}
