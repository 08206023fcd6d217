//! Constructors of ONNX attributes (`AttributeProto`) by kind, for code that
//! writes new nodes or sets attributes: rewrites, appliers and tests.

use crate::onnx::proto::{attribute_proto::AttributeType, AttributeProto, GraphProto, TensorProto};

fn of_kind(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto { name: Some(name.to_string()), r#type: Some(kind as i32), ..Default::default() }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { i: Some(value), ..of_kind(name, AttributeType::Int) }
}

pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { ints: values.to_vec(), ..of_kind(name, AttributeType::Ints) }
}

pub fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { f: Some(value), ..of_kind(name, AttributeType::Float) }
}

pub fn floats(name: &str, values: &[f32]) -> AttributeProto {
    AttributeProto { floats: values.to_vec(), ..of_kind(name, AttributeType::Floats) }
}

pub fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto { s: Some(value.as_bytes().to_vec().into()), ..of_kind(name, AttributeType::String) }
}

pub fn tensor(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto { t: Some(value), ..of_kind(name, AttributeType::Tensor) }
}

pub fn graph(name: &str, value: GraphProto) -> AttributeProto {
    AttributeProto { g: Some(value), ..of_kind(name, AttributeType::Graph) }
}
