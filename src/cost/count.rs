//! Static counts per node. Parameters are the float and integer elements of
//! every weight (initializer, sparse initializer at its dense size, or Constant
//! output) a node reads; MACs follow the
//! usual convention for the linear layers (Conv: N·Cout·Hout·Wout·Cin/groups·Kh·Kw,
//! ConvTranspose: N·Cin·Hin·Win·Cout/groups·Kh·Kw, Gemm and MatMul: M·N·K per
//! batch) and are zero for other operators.

use crate::ir::AttributeList;
use petgraph::stable_graph::NodeIndex;

use crate::ir::graph::{Graph, Producer, ValueId};
use crate::ir::{tensor, DataType, Shape};

/// Static costs of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCost {
    pub params: u64,
    /// `None` when a shape the count needs is not known.
    pub macs: Option<u64>,
    pub weight_bytes: u64,
    /// Bytes of the node's outputs; `None` when a shape is not known.
    pub activation_bytes: Option<u64>,
}

/// Size of a stored weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightSize {
    pub elements: u64,
    /// Packed bytes of the dense tensor.
    pub bytes: u64,
}

/// The stored weight behind a value, if it is one with float or integer
/// elements: an initializer (also one listed as a graph input), a sparse
/// initializer (at its dense size), or the output of a Constant node.
pub fn weight_size(graph: &Graph, id: ValueId) -> Option<WeightSize> {
    let value = graph.value(id);
    let numeric = |dtype: Option<DataType>| dtype.filter(|d| d.is_float() || d.is_integer());
    let dense = |dtype: DataType, dims: &[i64]| {
        let elements = Shape::known(dims).element_count()?;
        Some(WeightSize { elements, bytes: dtype.byte_size(elements)? })
    };
    if let Some(tensor) = &value.initializer {
        return dense(numeric(tensor::dtype(tensor))?, &tensor.dims);
    }
    match value.producer {
        Producer::SparseInitializer => {
            let sparse = graph
                .passthrough
                .sparse_initializer
                .iter()
                .find(|s| s.values.as_ref().and_then(|v| v.name.as_deref()) == Some(value.name.as_str()))?;
            dense(numeric(tensor::dtype(sparse.values.as_ref()?))?, &sparse.dims)
        }
        Producer::Node(node, _) => {
            let node = graph.node(node);
            if node.op_type != "Constant" || !node.domain.is_empty() {
                return None;
            }
            let attribute = node.attributes.first()?;
            match attribute.name.as_deref()? {
                "value" => {
                    let tensor = attribute.t.as_ref()?;
                    dense(numeric(tensor::dtype(tensor))?, &tensor.dims)
                }
                "sparse_value" => {
                    let sparse = attribute.sparse_tensor.as_ref()?;
                    dense(numeric(tensor::dtype(sparse.values.as_ref()?))?, &sparse.dims)
                }
                "value_float" => dense(DataType::Float, &[]),
                "value_int" => dense(DataType::Int64, &[]),
                "value_floats" => dense(DataType::Float, &[attribute.floats.len() as i64]),
                "value_ints" => dense(DataType::Int64, &[attribute.ints.len() as i64]),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The weights a node reads (also from inside its subgraphs), each once.
pub fn node_weights(graph: &Graph, index: NodeIndex) -> Vec<(ValueId, WeightSize)> {
    let node = graph.node(index);
    let mut weights: Vec<(ValueId, WeightSize)> = Vec::new();
    for &id in node.inputs.iter().flatten().chain(&node.implicit_inputs) {
        if weights.iter().all(|(seen, _)| *seen != id) {
            if let Some(size) = weight_size(graph, id) {
                weights.push((id, size));
            }
        }
    }
    weights
}

/// Counts a node's parameters, MACs and bytes.
pub fn node_cost(graph: &Graph, index: NodeIndex) -> NodeCost {
    let mut cost = NodeCost { macs: Some(0), ..Default::default() };
    for (_, size) in node_weights(graph, index) {
        cost.params += size.elements;
        cost.weight_bytes += size.bytes;
    }
    cost.macs = macs(graph, index);
    cost.activation_bytes = graph.node(index).outputs.iter().flatten().try_fold(0u64, |total, &id| {
        let value = graph.value(id);
        let bytes = value.dtype?.byte_size(value.shape.as_ref()?.element_count()?)?;
        total.checked_add(bytes)
    });
    cost
}

fn known_shape(graph: &Graph, id: Option<ValueId>) -> Option<Vec<u64>> {
    let shape = graph.value(id?).shape.as_ref()?.as_known()?;
    shape.into_iter().map(|d| u64::try_from(d).ok()).collect()
}

fn product(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// Multiply-accumulates of the linear layers; `Some(0)` for other operators.
fn macs(graph: &Graph, index: NodeIndex) -> Option<u64> {
    let node = graph.node(index);
    if !node.domain.is_empty() && node.domain != "ai.onnx" {
        return Some(0);
    }
    let shapes = LinearShapes {
        first_input: known_shape(graph, node.input(0)),
        second_input: known_shape(graph, node.input(1)),
        output: known_shape(graph, node.output(0)),
        trans_a: node.attr_int("transA").unwrap_or(0) != 0,
    };
    linear_macs(&node.op_type, &shapes)
}

/// The shapes a linear layer's MAC count depends on (`None`: not known).
#[derive(Clone, Debug, Default)]
pub struct LinearShapes {
    pub first_input: Option<Vec<u64>>,
    pub second_input: Option<Vec<u64>>,
    pub output: Option<Vec<u64>>,
    /// Gemm's transA.
    pub trans_a: bool,
}

/// Multiply-accumulates of a default-domain operator: the linear layers by
/// their shapes, `Some(0)` for every other operator.
pub fn linear_macs(op_type: &str, shapes: &LinearShapes) -> Option<u64> {
    match op_type {
        "Conv" => {
            // weight: [Cout, Cin/groups, k...]; output: [N, Cout, spatial...]
            let weight = shapes.second_input.as_ref()?;
            product(shapes.output.as_ref()?)?.checked_mul(product(weight.get(1..)?)?)
        }
        "ConvTranspose" => {
            // weight: [Cin, Cout/groups, k...]; each input element feeds Cout/groups·K outputs.
            let weight = shapes.second_input.as_ref()?;
            product(shapes.first_input.as_ref()?)?.checked_mul(product(weight.get(1..)?)?)
        }
        "Gemm" => {
            let a = shapes.first_input.as_ref()?;
            let k = if shapes.trans_a { *a.first()? } else { *a.get(1)? };
            product(shapes.output.as_ref()?)?.checked_mul(k)
        }
        "MatMul" | "MatMulInteger" | "QLinearMatMul" => {
            product(shapes.output.as_ref()?)?.checked_mul(*shapes.first_input.as_ref()?.last()?)
        }
        _ => Some(0),
    }
}
