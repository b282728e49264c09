//! Small constructors for the prost ONNX types, so the graph code reads like the builder's `make_node` calls.

use crate::proto::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto,
    type_proto,
};

/// One node attribute value. Attributes are written in the order given, which for every node below is the
/// order the builder writes (onnx `helper.make_node` sorts kwargs; onnx_ir keeps insertion order).
#[derive(Clone, Debug)]
pub(crate) enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Tensor(TensorProto),
    Graph(GraphProto),
}

pub(crate) fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.i = Some(i);
            a.r#type = Some(AttributeType::Int as i32);
        }
        Attr::Ints(v) => {
            a.ints = v;
            a.r#type = Some(AttributeType::Ints as i32);
        }
        Attr::Float(f) => {
            a.f = Some(f);
            a.r#type = Some(AttributeType::Float as i32);
        }
        Attr::Tensor(t) => {
            a.t = Some(t);
            a.r#type = Some(AttributeType::Tensor as i32);
        }
        Attr::Graph(g) => {
            a.g = Some(g);
            a.r#type = Some(AttributeType::Graph as i32);
        }
    }
    a
}

/// A node; `domain` is `""` for the default ONNX domain (left unset, as onnx writes it).
pub(crate) fn node(
    op_type: &str,
    name: &str,
    domain: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<(&str, Attr)>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: Some(name.to_string()),
        op_type: Some(op_type.to_string()),
        domain: (!domain.is_empty()).then(|| domain.to_string()),
        attribute: attrs.into_iter().map(|(n, v)| attribute(n, v)).collect(),
        ..Default::default()
    }
}

/// A tensor dimension: fixed or symbolic.
#[derive(Clone, Debug)]
pub(crate) enum Dim {
    Fixed(usize),
    Named(&'static str),
}

pub(crate) fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v as i64),
                Dim::Named(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A tensor with inline `raw_data` (used for Constant node values).
pub(crate) fn raw_tensor(name: &str, elem: DataType, dims: &[usize], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(elem as i32),
        name: Some(name.to_string()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// Little-endian bytes of f32 values (ONNX raw_data is little-endian, onnx.proto `raw_data` comment).
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian IEEE half bytes, round-to-nearest-even (numpy `astype(float16)`, which the builder's
/// `torch.Tensor.to(float16)` matches).
pub(crate) fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}
