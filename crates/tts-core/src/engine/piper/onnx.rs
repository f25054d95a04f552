//! The ONNX protobuf field numbers that [`super::split`] and the graph rewrites read and write, and
//! builders for the few messages the rewrites add: nodes, attributes and raw-data tensors.
//!
//! Numbers are those of `onnx.proto` (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto,
//! ValueInfoProto, OperatorSetIdProto, StringStringEntryProto).

use super::wire;

pub(super) const MODEL_GRAPH: u32 = 7;
pub(super) const MODEL_OPSET_IMPORT: u32 = 8;

pub(super) const OPSET_DOMAIN: u32 = 1;
pub(super) const OPSET_VERSION: u32 = 2;

pub(super) const GRAPH_NODE: u32 = 1;
pub(super) const GRAPH_INITIALIZER: u32 = 5;
pub(super) const GRAPH_INPUT: u32 = 11;
pub(super) const GRAPH_OUTPUT: u32 = 12;
pub(super) const GRAPH_VALUE_INFO: u32 = 13;

pub(super) const NODE_INPUT: u32 = 1;
pub(super) const NODE_OUTPUT: u32 = 2;
pub(super) const NODE_NAME: u32 = 3;
pub(super) const NODE_OP_TYPE: u32 = 4;
pub(super) const NODE_ATTRIBUTE: u32 = 5;
pub(super) const NODE_DOMAIN: u32 = 7;

pub(super) const ATTRIBUTE_NAME: u32 = 1;
pub(super) const ATTRIBUTE_I: u32 = 3;
pub(super) const ATTRIBUTE_S: u32 = 4;
pub(super) const ATTRIBUTE_GRAPH: u32 = 6;
pub(super) const ATTRIBUTE_INTS: u32 = 8;
pub(super) const ATTRIBUTE_GRAPHS: u32 = 11;
pub(super) const ATTRIBUTE_TYPE: u32 = 20;
const ATTRIBUTE_TYPE_INT: u64 = 2;
const ATTRIBUTE_TYPE_INTS: u64 = 7;

pub(super) const TENSOR_DIMS: u32 = 1;
pub(super) const TENSOR_DATA_TYPE: u32 = 2;
pub(super) const TENSOR_FLOAT_DATA: u32 = 4;
pub(super) const TENSOR_INT64_DATA: u32 = 7;
pub(super) const TENSOR_NAME: u32 = 8;
pub(super) const TENSOR_RAW_DATA: u32 = 9;
pub(super) const TENSOR_EXTERNAL_DATA: u32 = 13;
pub(super) const TENSOR_DATA_LOCATION: u32 = 14;
/// `TensorProto.data_location` of a tensor whose bytes live in another file.
pub(super) const EXTERNAL: u64 = 1;

pub(super) const ENTRY_KEY: u32 = 1;
pub(super) const ENTRY_VALUE: u32 = 2;

pub(super) const VALUE_INFO_NAME: u32 = 1;

/// `TensorProto.DataType` values.
pub(super) const FLOAT: u64 = 1;
pub(super) const INT32: u64 = 6;
pub(super) const INT64: u64 = 7;

/// `op_type(inputs) → output` with `attributes` (AttributeProtos), named after its output.
pub(super) fn node<S: AsRef<str>>(
    op_type: &str,
    inputs: &[S],
    output: &str,
    attributes: &[Vec<u8>],
) -> Vec<u8> {
    let mut node = Vec::new();
    for input in inputs {
        wire::put_len(&mut node, NODE_INPUT, input.as_ref().as_bytes());
    }
    wire::put_len(&mut node, NODE_OUTPUT, output.as_bytes());
    wire::put_len(&mut node, NODE_NAME, output.as_bytes());
    wire::put_len(&mut node, NODE_OP_TYPE, op_type.as_bytes());
    for attribute in attributes {
        wire::put_len(&mut node, NODE_ATTRIBUTE, attribute);
    }
    node
}

/// An integer attribute.
pub(super) fn int(name: &str, value: i64) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_len(&mut out, ATTRIBUTE_NAME, name.as_bytes());
    wire::put_uint(&mut out, ATTRIBUTE_I, value as u64);
    wire::put_uint(&mut out, ATTRIBUTE_TYPE, ATTRIBUTE_TYPE_INT);
    out
}

/// An attribute that is a list of integers.
pub(super) fn ints(name: &str, values: &[i64]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_len(&mut out, ATTRIBUTE_NAME, name.as_bytes());
    for &value in values {
        wire::put_uint(&mut out, ATTRIBUTE_INTS, value as u64);
    }
    wire::put_uint(&mut out, ATTRIBUTE_TYPE, ATTRIBUTE_TYPE_INTS);
    out
}

/// A float tensor of `dims` holding `values`.
pub(super) fn float_tensor(name: &str, dims: &[u64], values: &[f32]) -> Vec<u8> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, FLOAT, &bytes)
}

/// A 1-D int64 tensor holding `values` (a shape, a permutation).
pub(super) fn int64_tensor(name: &str, values: &[i64]) -> Vec<u8> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, &[values.len() as u64], INT64, &bytes)
}

fn tensor(name: &str, dims: &[u64], data_type: u64, raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + name.len() + 32);
    for &dim in dims {
        wire::put_uint(&mut out, TENSOR_DIMS, dim);
    }
    wire::put_uint(&mut out, TENSOR_DATA_TYPE, data_type);
    wire::put_len(&mut out, TENSOR_NAME, name.as_bytes());
    wire::put_len(&mut out, TENSOR_RAW_DATA, raw);
    out
}

/// Builders for the small graphs the rewrites' tests are run on.
#[cfg(test)]
pub(super) mod build {
    use super::*;

    /// A float tensor's name and dims with no data, for rewrites that read only its shape.
    pub(in super::super) fn declared(name: &str, dims: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &dim in dims {
            wire::put_uint(&mut out, TENSOR_DIMS, dim);
        }
        wire::put_uint(&mut out, TENSOR_DATA_TYPE, FLOAT);
        wire::put_len(&mut out, TENSOR_NAME, name.as_bytes());
        out
    }

    pub(in super::super) fn value_info(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        wire::put_len(&mut out, VALUE_INFO_NAME, name.as_bytes());
        out
    }

    /// A ModelProto (IR version 8) of `graph` (a GraphProto's fields) importing the default domain at
    /// `opset`.
    pub(in super::super) fn model(graph: &[u8], opset: u64) -> Vec<u8> {
        let mut opset_import = Vec::new();
        wire::put_uint(&mut opset_import, OPSET_VERSION, opset);
        let mut model = Vec::new();
        wire::put_uint(&mut model, 1, 8);
        wire::put_len(&mut model, MODEL_GRAPH, graph);
        wire::put_len(&mut model, MODEL_OPSET_IMPORT, &opset_import);
        model
    }
}
