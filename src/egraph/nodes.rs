//! What appliers use to read the constants they match and to add nodes
//! whose facts (element type, shape) they state themselves.

use egg::{Id, Symbol};

use super::analysis::{constant_of, Graph};
use super::language::Onnx;
use crate::ir::{tensor, DataType, Shape};
use crate::onnx::proto::TensorProto;

/// A float32 constant's values and dims.
pub fn float_weight(egraph: &Graph, id: Id) -> Option<(Vec<f64>, Vec<usize>)> {
    let t = constant_of(egraph, id)?;
    if tensor::dtype(t)? != DataType::Float {
        return None;
    }
    let dims = t.dims.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<Vec<_>>>()?;
    Some((tensor::to_f64(t)?, dims))
}

/// Adds a node and states the facts of its class when nothing else did.
pub fn add_typed(egraph: &mut Graph, node: Onnx, dtype: DataType, shape: Option<Shape>) -> Id {
    let id = egraph.add(node);
    let data = &mut egraph[id].data;
    data.dtype = data.dtype.or(Some(dtype));
    if data.shape.is_none() {
        data.shape = shape;
    }
    id
}

pub fn add_typed_op(
    egraph: &mut Graph,
    op: &str,
    mut inputs: Vec<Id>,
    attrs: Id,
    dtype: DataType,
    shape: Option<Shape>,
) -> Id {
    inputs.push(attrs);
    add_typed(egraph, Onnx::Op(Symbol::from(op), inputs.into()), dtype, shape)
}

pub fn add_weight(egraph: &mut Graph, tensor: TensorProto) -> Id {
    let id = egraph.analysis.intern_weight(tensor, None);
    egraph.add(Onnx::Weight(id))
}

pub fn no_attributes(egraph: &mut Graph) -> Id {
    egraph.add(Onnx::Attrs(0))
}
