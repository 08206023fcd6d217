//! Tensor shapes: a rank with one dimension each, known, symbolic (a name such
//! as `N` that stays open until `--input-shape` fixes it) or unknown.

use std::fmt;

use super::dtype::DataType;
use crate::onnx::proto::{tensor_shape_proto, type_proto, TensorShapeProto, TypeProto, ValueInfoProto};

/// The declaration of a tensor value: its name, element type and shape
/// (`None` leaves the shape out).
pub fn tensor_declaration(name: &str, dtype: DataType, shape: Option<&Shape>) -> ValueInfoProto {
    let tensor = type_proto::Tensor { elem_type: Some(dtype.code()), shape: shape.map(Shape::to_proto) };
    let r#type = TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() };
    ValueInfoProto { name: Some(name.to_string()), r#type: Some(r#type), ..Default::default() }
}

/// One dimension of a shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(i64),
    Symbol(String),
    Unknown,
}

impl Dim {
    pub fn known(&self) -> Option<i64> {
        match self {
            Dim::Known(value) => Some(*value),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(value) => write!(f, "{value}"),
            Dim::Symbol(name) => f.write_str(name),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A shape of known rank.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn known(dims: &[i64]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// All dimensions as numbers, if every one is known.
    pub fn as_known(&self) -> Option<Vec<i64>> {
        self.0.iter().map(Dim::known).collect()
    }

    /// Number of elements, if every dimension is known and non-negative.
    pub fn element_count(&self) -> Option<u64> {
        self.0.iter().try_fold(1u64, |acc, dim| {
            let value = u64::try_from(dim.known()?).ok()?;
            acc.checked_mul(value)
        })
    }

    pub fn from_proto(proto: &TensorShapeProto) -> Shape {
        Shape(
            proto
                .dim
                .iter()
                .map(|dim| match &dim.value {
                    Some(tensor_shape_proto::dimension::Value::DimValue(v)) => Dim::Known(*v),
                    Some(tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Symbol(p.clone()),
                    _ => Dim::Unknown,
                })
                .collect(),
        )
    }

    pub fn to_proto(&self) -> TensorShapeProto {
        TensorShapeProto {
            dim: self
                .0
                .iter()
                .map(|dim| tensor_shape_proto::Dimension {
                    value: match dim {
                        Dim::Known(v) => Some(tensor_shape_proto::dimension::Value::DimValue(*v)),
                        Dim::Symbol(p) => Some(tensor_shape_proto::dimension::Value::DimParam(p.clone())),
                        Dim::Unknown => None,
                    },
                    denotation: None,
                })
                .collect(),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, dim) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{dim}")?;
        }
        f.write_str("]")
    }
}
