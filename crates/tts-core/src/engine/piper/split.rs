//! Splits a Piper VITS graph at the decoder's input, so the decoder can run over windows of latent frames.
//!
//! The decoder is found by the graph, not by a tensor name: the `Conv` node of the VITS module
//! `dec.conv_pre` (a node name containing `dec/conv_pre`, as PyTorch's exporter writes module paths, or a
//! weight initializer named `dec.conv_pre.weight`, as every Piper export has). Its data input is the
//! latent `z` (`[1, channels, frames]`). The decoder sub-graph is every node the graph's outputs need that
//! the latent's producers do not; what that sub-graph reads from the rest (the latent, and e.g. the speaker
//! embedding `g` of a multi-speaker voice) becomes the outputs of the first part and the inputs of the
//! decoder. Everything else in the model (opsets, IR version, metadata, attributes, value_info of the kept
//! nodes) is copied byte for byte.

use std::collections::{HashMap, HashSet};

use super::onnx::{
    ATTRIBUTE_GRAPH, ATTRIBUTE_GRAPHS, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_NODE, GRAPH_OUTPUT,
    GRAPH_VALUE_INFO, MODEL_GRAPH, NODE_ATTRIBUTE, NODE_INPUT, NODE_NAME, NODE_OP_TYPE, NODE_OUTPUT,
    TENSOR_NAME, VALUE_INFO_NAME,
};
use super::wire::{self, Field};

/// The two halves of a model, ready for `commit_from_memory`.
pub(super) struct SplitModel {
    /// Graph inputs → the latent and the other tensors the decoder needs.
    pub(super) encoder: Vec<u8>,
    /// The latent and the other tensors → the original graph outputs.
    pub(super) decoder: Vec<u8>,
    /// Name of the decoder's input with the time axis (the latent).
    pub(super) latent: String,
    /// The other tensors the decoder reads from the first part, passed whole to every window.
    pub(super) extra: Vec<String>,
}

struct Node<'a> {
    raw: &'a [u8],
    name: &'a str,
    op_type: &'a str,
    /// Data inputs, plus every name a sub-graph attribute (If, Loop, Scan) reads.
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
}

/// A named entry of the graph (initializer, input, output or value_info) with its payload.
pub(super) struct Named<'a> {
    pub(super) name: &'a str,
    pub(super) payload: &'a [u8],
}

/// Finds the decoder and splits `model` there; the error says why a model cannot be split.
pub(super) fn split(model: &[u8]) -> Result<SplitModel, String> {
    let model_fields = wire::fields(model)?;
    let graph_field = single(&model_fields, MODEL_GRAPH, "graph")?;
    let graph = wire::fields(graph_field.payload)?;
    let nodes = graph
        .iter()
        .filter(|f| f.number == GRAPH_NODE)
        .map(|f| node(f.payload))
        .collect::<Result<Vec<_>, _>>()?;
    let initializers = named(&graph, GRAPH_INITIALIZER, TENSOR_NAME)?;
    let outputs = named(&graph, GRAPH_OUTPUT, VALUE_INFO_NAME)?;
    let value_info = named(&graph, GRAPH_VALUE_INFO, VALUE_INFO_NAME)?;

    let conv = nodes
        .iter()
        .find(|n| {
            n.op_type == "Conv"
                && (n.name.contains("dec/conv_pre") || n.inputs.contains(&"dec.conv_pre.weight"))
        })
        .ok_or("no decoder: no Conv node of dec.conv_pre")?;
    let latent = *conv.inputs.first().ok_or("dec.conv_pre has no input")?;

    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |&o| (o, i)))
        .collect();
    let output_names: Vec<&str> = outputs.iter().map(|o| o.name).collect();
    let before = closure(&nodes, &producer, &[latent], None);
    let needed_by_outputs = closure(&nodes, &producer, &output_names, Some(latent));
    let decoder: Vec<bool> = needed_by_outputs
        .iter()
        .zip(&before)
        .map(|(&out, &pre)| out && !pre)
        .collect();
    for name in &output_names {
        if !producer.get(name).is_some_and(|&i| decoder[i]) {
            return Err(format!("graph output {name} is not computed by the decoder"));
        }
    }
    let boundary = boundary(&nodes, &decoder, &producer, &initializers)?;
    for name in &boundary {
        if !producer.get(name).is_some_and(|&i| before[i]) {
            return Err(format!(
                "the decoder reads {name}, which is not computed before it"
            ));
        }
    }
    if !boundary.contains(&latent) {
        return Err(format!("the decoder does not read its input {latent}"));
    }
    let boundary_info: Vec<Vec<u8>> = boundary.iter().map(|n| value_info_for(n, &value_info)).collect();
    let parts = Parts {
        model_fields: &model_fields,
        graph: &graph,
        nodes: &nodes,
        initializers: &initializers,
        value_info: &value_info,
        boundary: &boundary,
    };
    let encoder_graph = parts.graph(&before, GraphEnds::Encoder(&boundary_info));
    let decoder_graph = parts.graph(&decoder, GraphEnds::Decoder(&boundary_info));
    Ok(SplitModel {
        encoder: parts.model(&encoder_graph),
        decoder: parts.model(&decoder_graph),
        latent: latent.to_owned(),
        extra: boundary
            .iter()
            .filter(|&&n| n != latent)
            .map(|&n| n.to_owned())
            .collect(),
    })
}

pub(super) fn single<'a>(fields: &[Field<'a>], number: u32, what: &str) -> Result<Field<'a>, String> {
    let mut found = fields.iter().filter(|f| f.number == number);
    match (found.next(), found.next()) {
        (Some(f), None) => Ok(*f),
        _ => Err(format!("the model does not have exactly one {what}")),
    }
}

pub(super) fn named<'a>(graph: &[Field<'a>], number: u32, key: u32) -> Result<Vec<Named<'a>>, String> {
    graph
        .iter()
        .filter(|f| f.number == number)
        .map(|f| {
            let name = wire::str_field(&wire::fields(f.payload)?, key)?;
            Ok(Named {
                name,
                payload: f.payload,
            })
        })
        .collect()
}

fn node(bytes: &[u8]) -> Result<Node<'_>, String> {
    let mut node = Node {
        raw: bytes,
        name: "",
        op_type: "",
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    for field in wire::fields(bytes)? {
        match field.number {
            NODE_INPUT => node.inputs.push(field.as_str()?),
            NODE_OUTPUT => node.outputs.push(field.as_str()?),
            NODE_NAME => node.name = field.as_str()?,
            NODE_OP_TYPE => node.op_type = field.as_str()?,
            NODE_ATTRIBUTE => subgraph_reads(field.payload, &mut node.inputs)?,
            _ => {}
        }
    }
    Ok(node)
}

/// Adds every name that the sub-graphs of an attribute read (an over-approximation of what they take
/// from the outer scope, which is enough to keep their producers).
fn subgraph_reads<'a>(attribute: &'a [u8], reads: &mut Vec<&'a str>) -> Result<(), String> {
    for field in wire::fields(attribute)? {
        if field.number == ATTRIBUTE_GRAPH || field.number == ATTRIBUTE_GRAPHS {
            for graph_field in wire::fields(field.payload)? {
                if graph_field.number == GRAPH_NODE {
                    reads.extend(node(graph_field.payload)?.inputs);
                }
            }
        }
    }
    Ok(())
}

/// Marks the nodes that computing `targets` needs, not going through `stop`.
fn closure(
    nodes: &[Node<'_>],
    producer: &HashMap<&str, usize>,
    targets: &[&str],
    stop: Option<&str>,
) -> Vec<bool> {
    let mut marked = vec![false; nodes.len()];
    let mut pending: Vec<&str> = targets.to_vec();
    while let Some(name) = pending.pop() {
        if Some(name) == stop {
            continue;
        }
        if let Some(&i) = producer.get(name)
            && !marked[i]
        {
            marked[i] = true;
            pending.extend(nodes[i].inputs.iter().filter(|n| !n.is_empty()));
        }
    }
    marked
}

/// The tensors that decoder nodes read and no decoder node or initializer provides, in first-read order.
fn boundary<'a>(
    nodes: &[Node<'a>],
    decoder: &[bool],
    producer: &HashMap<&str, usize>,
    initializers: &[Named<'_>],
) -> Result<Vec<&'a str>, String> {
    let initializer: HashSet<&str> = initializers.iter().map(|i| i.name).collect();
    let mut seen = HashSet::new();
    let mut boundary = Vec::new();
    for (node, _) in nodes.iter().zip(decoder).filter(|(_, d)| **d) {
        for &input in &node.inputs {
            let inside = producer.get(input).is_some_and(|&i| decoder[i]);
            if input.is_empty() || inside || initializer.contains(input) {
                continue;
            }
            if seen.insert(input) {
                boundary.push(input);
            }
        }
    }
    if boundary.is_empty() {
        return Err("the decoder reads nothing from the rest of the graph".into());
    }
    Ok(boundary)
}

/// The graph's own `value_info` for `name` (type and shape), or a float tensor of unknown shape.
fn value_info_for(name: &str, value_info: &[Named<'_>]) -> Vec<u8> {
    if let Some(info) = value_info.iter().find(|v| v.name == name) {
        return info.payload.to_vec();
    }
    let mut tensor = Vec::new();
    wire::put_uint(&mut tensor, 1, 1); // elem_type FLOAT
    let mut ty = Vec::new();
    wire::put_len(&mut ty, 1, &tensor); // TypeProto.tensor_type
    let mut info = Vec::new();
    wire::put_len(&mut info, VALUE_INFO_NAME, name.as_bytes());
    wire::put_len(&mut info, 2, &ty);
    info
}

/// What a part's graph takes and gives: the encoder keeps the original inputs and gives the boundary;
/// the decoder takes the boundary and keeps the original outputs.
enum GraphEnds<'b> {
    Encoder(&'b [Vec<u8>]),
    Decoder(&'b [Vec<u8>]),
}

struct Parts<'m, 'a> {
    model_fields: &'m [Field<'a>],
    graph: &'m [Field<'a>],
    nodes: &'m [Node<'a>],
    initializers: &'m [Named<'a>],
    value_info: &'m [Named<'a>],
    /// Declared as the parts' outputs and inputs, so not repeated in their value_info.
    boundary: &'m [&'a str],
}

impl Parts<'_, '_> {
    /// A GraphProto with the kept nodes (in their order), the initializers they read, and every other
    /// graph field (name, doc string, sparse initializers, annotations, metadata) as it was.
    fn graph(&self, keep: &[bool], ends: GraphEnds<'_>) -> Vec<u8> {
        let kept: Vec<&Node<'_>> = self
            .nodes
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(n, _)| n)
            .collect();
        let reads: HashSet<&str> = kept.iter().flat_map(|n| n.inputs.iter().copied()).collect();
        let produced: HashSet<&str> = kept.iter().flat_map(|n| n.outputs.iter().copied()).collect();
        let mut out = Vec::new();
        for node in &kept {
            wire::put_len(&mut out, GRAPH_NODE, node.raw);
        }
        for field in self.graph {
            match field.number {
                GRAPH_NODE | GRAPH_INITIALIZER | GRAPH_VALUE_INFO => {}
                GRAPH_INPUT if matches!(ends, GraphEnds::Decoder(_)) => {}
                GRAPH_OUTPUT if matches!(ends, GraphEnds::Encoder(_)) => {}
                _ => out.extend_from_slice(field.raw),
            }
        }
        let (number, boundary) = match ends {
            GraphEnds::Encoder(b) => (GRAPH_OUTPUT, b),
            GraphEnds::Decoder(b) => (GRAPH_INPUT, b),
        };
        for info in boundary {
            wire::put_len(&mut out, number, info);
        }
        for init in self.initializers.iter().filter(|i| reads.contains(i.name)) {
            wire::put_len(&mut out, GRAPH_INITIALIZER, init.payload);
        }
        for info in self
            .value_info
            .iter()
            .filter(|v| produced.contains(v.name) && !self.boundary.contains(&v.name))
        {
            wire::put_len(&mut out, GRAPH_VALUE_INFO, info.payload);
        }
        out
    }

    /// The ModelProto with its graph replaced; every other field as it was.
    fn model(&self, graph: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(graph.len() + 256);
        for field in self.model_fields {
            if field.number == MODEL_GRAPH {
                wire::put_len(&mut out, MODEL_GRAPH, graph);
            } else {
                out.extend_from_slice(field.raw);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for i in inputs {
            wire::put_len(&mut out, NODE_INPUT, i.as_bytes());
        }
        for o in outputs {
            wire::put_len(&mut out, NODE_OUTPUT, o.as_bytes());
        }
        wire::put_len(&mut out, NODE_NAME, name.as_bytes());
        wire::put_len(&mut out, NODE_OP_TYPE, op.as_bytes());
        out
    }

    fn named_message(number: u32, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        wire::put_len(&mut out, number, name.as_bytes());
        out
    }

    /// x → Identity → g (a speaker embedding, read by the flow and the decoder); x · g → z;
    /// z → dec/conv_pre (weight w) → c; c + g → y.
    fn tiny_model(conv_name: &str) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in [
            node("/emb_g/Identity", "Identity", &["x"], &["g"]),
            node("/Mul", "Mul", &["x", "g"], &["z"]),
            node(conv_name, "Conv", &["z", "w"], &["c"]),
            node("/dec/Add", "Add", &["c", "g"], &["y"]),
        ] {
            wire::put_len(&mut graph, GRAPH_NODE, &n);
        }
        wire::put_len(&mut graph, 2, b"tiny");
        wire::put_len(&mut graph, GRAPH_INITIALIZER, &named_message(TENSOR_NAME, "w"));
        wire::put_len(&mut graph, GRAPH_INPUT, &named_message(VALUE_INFO_NAME, "x"));
        wire::put_len(&mut graph, GRAPH_OUTPUT, &named_message(VALUE_INFO_NAME, "y"));
        wire::put_len(&mut graph, GRAPH_VALUE_INFO, &named_message(VALUE_INFO_NAME, "c"));
        let mut model = Vec::new();
        wire::put_uint(&mut model, 1, 8); // ir_version
        wire::put_len(&mut model, MODEL_GRAPH, &graph);
        wire::put_len(&mut model, 8, &{
            let mut opset = Vec::new();
            wire::put_uint(&mut opset, 2, 15);
            opset
        });
        model
    }

    /// (node names, initializer names, input names, output names, value_info names, other graph fields)
    /// of a model, and whether its other model fields are the original ones.
    fn summary(model: &[u8]) -> [Vec<String>; 6] {
        let fields = wire::fields(model).unwrap();
        let graph = wire::fields(single(&fields, MODEL_GRAPH, "graph").unwrap().payload).unwrap();
        let names = |number, key| -> Vec<String> {
            named(&graph, number, key)
                .unwrap()
                .iter()
                .map(|n| n.name.to_owned())
                .collect()
        };
        let nodes = graph
            .iter()
            .filter(|f| f.number == GRAPH_NODE)
            .map(|f| super::node(f.payload).unwrap().name.to_owned())
            .collect();
        let others = graph
            .iter()
            .filter(|f| ![1, 5, 11, 12, 13].contains(&f.number))
            .map(|f| format!("{}={}", f.number, f.as_str().unwrap()))
            .collect();
        [
            nodes,
            names(GRAPH_INITIALIZER, TENSOR_NAME),
            names(GRAPH_INPUT, VALUE_INFO_NAME),
            names(GRAPH_OUTPUT, VALUE_INFO_NAME),
            names(GRAPH_VALUE_INFO, VALUE_INFO_NAME),
            others,
        ]
    }

    #[test]
    fn splits_at_the_decoder_and_passes_what_it_reads_from_before() {
        let model = tiny_model("/dec/conv_pre/Conv");
        let parts = split(&model).unwrap();
        assert_eq!(parts.latent, "z");
        assert_eq!(parts.extra, vec!["g".to_owned()]);
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            summary(&parts.encoder),
            [
                s(&["/emb_g/Identity", "/Mul"]),
                s(&[]),
                s(&["x"]),
                s(&["z", "g"]),
                s(&[]),
                s(&["2=tiny"])
            ]
        );
        assert_eq!(
            summary(&parts.decoder),
            [
                s(&["/dec/conv_pre/Conv", "/dec/Add"]),
                s(&["w"]),
                s(&["z", "g"]),
                s(&["y"]),
                s(&["c"]),
                s(&["2=tiny"])
            ]
        );
        // The model's other fields (IR version, opset) are carried byte for byte.
        for part in [&parts.encoder, &parts.decoder] {
            let fields = wire::fields(part).unwrap();
            let others: Vec<&[u8]> = fields
                .iter()
                .filter(|f| f.number != MODEL_GRAPH)
                .map(|f| f.raw)
                .collect();
            let original = wire::fields(&model).unwrap();
            let expected: Vec<&[u8]> = original
                .iter()
                .filter(|f| f.number != MODEL_GRAPH)
                .map(|f| f.raw)
                .collect();
            assert_eq!(others, expected);
        }
    }

    #[test]
    fn a_model_without_a_vits_decoder_is_not_split_and_says_why() {
        let err = split(&tiny_model("/conv/Conv")).err().unwrap();
        assert!(err.contains("dec.conv_pre"), "{err}");
        assert!(split(b"\x0a\x05abc").is_err());
    }
}
