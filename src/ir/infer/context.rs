//! What an operator rule sees and returns: [`NodeView`] reads a node's
//! attributes, opset and the dtype, shape and partial value of each input;
//! [`OutputFacts`] is what the rule found out about one output.

use crate::ir::AttributeList;
use std::borrow::Cow;

use petgraph::stable_graph::NodeIndex;

use super::dims::{unknown_shape, MAX_RANK};
use super::partial::{Element, PartialTensor};
use crate::ir::dtype::DataType;
use crate::ir::graph::{Graph, Node, Producer, ValueId};
use crate::ir::shape::Shape;

/// Model-wide facts every rule may need.
#[derive(Clone, Copy, Debug)]
pub(super) struct ModelFacts {
    /// The default-domain opset the model imports.
    pub opset: i64,
    pub ir_version: i64,
}

/// Partial values computed so far, by value index.
pub(super) type PartialValues = Vec<Option<PartialTensor>>;

/// What inference found out about one output of a node.
#[derive(Clone, Debug, Default)]
pub(super) struct OutputFacts {
    pub dtype: Option<DataType>,
    pub shape: Option<Shape>,
    /// The output's elements, when small and (partly) computable.
    pub value: Option<PartialTensor>,
}

impl OutputFacts {
    pub(super) fn new(dtype: Option<DataType>, shape: Option<Shape>) -> OutputFacts {
        OutputFacts { dtype, shape, value: None }
    }

    /// Facts for an output whose elements were computed (the shape follows from them).
    pub(super) fn with_value(dtype: Option<DataType>, value: PartialTensor) -> OutputFacts {
        OutputFacts { dtype, shape: Some(value.shape()), value: Some(value) }
    }

    /// Adds the computed elements when there are any (their dims win over the shape).
    pub(super) fn or_value(mut self, value: Option<PartialTensor>) -> OutputFacts {
        if let Some(value) = value {
            self.shape = Some(value.shape());
            self.value = Some(value);
        }
        self
    }
}

/// An integer-list operand that moved from an attribute to an input at some opset.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum IntList {
    /// Neither the attribute nor the input is given.
    Absent,
    Known(Vec<i64>),
    /// Given as an input whose elements are not all known.
    Unknown,
}

/// A 1-D input that gives a shape (Reshape, Expand, ConstantOfShape, Resize sizes).
#[derive(Clone, Debug)]
pub(super) enum ShapeOperand {
    /// Its elements are (partly) known.
    Elements(Vec<Element>),
    /// Only its length, the rank of the shape it gives, is known.
    Rank(usize),
}

impl ShapeOperand {
    /// The shape the elements describe, each read as a dimension.
    pub(super) fn to_shape(&self) -> Shape {
        match self {
            ShapeOperand::Elements(elements) => Shape(elements.iter().map(Element::to_dim).collect()),
            ShapeOperand::Rank(rank) => unknown_shape(*rank),
        }
    }
}

/// A node as its rule sees it.
pub(super) struct NodeView<'a> {
    pub graph: &'a Graph,
    pub node: &'a Node,
    /// The default-domain opset the model imports.
    pub opset: i64,
    /// Whether a graph input's initializer counts as its value: in IR
    /// versions before 4 every initializer had to be listed as an input, so
    /// there the listing does not make it overridable.
    pub initialized_inputs_are_constant: bool,
    partials: &'a PartialValues,
}

impl<'a> NodeView<'a> {
    pub(super) fn new(
        graph: &'a Graph,
        index: NodeIndex,
        model: ModelFacts,
        partials: &'a PartialValues,
    ) -> NodeView<'a> {
        NodeView {
            graph,
            node: graph.node(index),
            opset: model.opset,
            initialized_inputs_are_constant: model.ir_version < 4,
            partials,
        }
    }

    fn input_id(&self, slot: usize) -> Option<ValueId> {
        self.node.input(slot)
    }

    /// Whether the optional input at `slot` is given.
    pub(super) fn has_input(&self, slot: usize) -> bool {
        self.input_id(slot).is_some()
    }

    pub(super) fn input_count(&self) -> usize {
        self.node.inputs.len()
    }

    pub(super) fn output_count(&self) -> usize {
        self.node.outputs.len()
    }

    pub(super) fn input_dtype(&self, slot: usize) -> Option<DataType> {
        self.graph.value(self.input_id(slot)?).dtype
    }

    pub(super) fn input_shape(&self, slot: usize) -> Option<&'a Shape> {
        self.graph.value(self.input_id(slot)?).shape.as_ref()
    }

    pub(super) fn input_rank(&self, slot: usize) -> Option<usize> {
        self.input_shape(slot).map(Shape::rank)
    }

    /// The input's elements: computed by an earlier rule, or decoded from its constant data.
    pub(super) fn input_value(&self, slot: usize) -> Option<Cow<'a, PartialTensor>> {
        let id = self.input_id(slot)?;
        if let Some(Some(value)) = self.partials.get(id.0) {
            return Some(Cow::Borrowed(value));
        }
        let value = self.graph.value(id);
        let tensor = match (&value.producer, &value.initializer) {
            (Producer::GraphInput, Some(tensor)) if self.initialized_inputs_are_constant => Some(tensor),
            _ => self.graph.constant(id),
        };
        tensor.and_then(PartialTensor::from_tensor).map(Cow::Owned)
    }

    /// The input's elements as integers, if all are known.
    pub(super) fn input_ints(&self, slot: usize) -> Option<Vec<i64>> {
        self.input_value(slot)?.ints()
    }

    /// The input's elements as floats, if all are known.
    pub(super) fn input_floats(&self, slot: usize) -> Option<Vec<f64>> {
        self.input_value(slot)?.floats()
    }

    /// The input at `slot` read as a shape; `None` when not 1-D or of an absurd length.
    pub(super) fn shape_operand(&self, slot: usize) -> Option<ShapeOperand> {
        match self.input_value(slot) {
            Some(value) => (value.rank() == 1 && value.elements.len() <= MAX_RANK)
                .then(|| ShapeOperand::Elements(value.elements.clone())),
            None => {
                let dims = self.input_shape(slot)?.as_known()?;
                let [length] = dims.as_slice() else { return None };
                usize::try_from(*length).ok().filter(|&rank| rank <= MAX_RANK).map(ShapeOperand::Rank)
            }
        }
    }

    /// Facts for an output that has the dtype and shape of input `slot`.
    pub(super) fn like_input(&self, slot: usize) -> OutputFacts {
        OutputFacts::new(self.input_dtype(slot), self.input_shape(slot).cloned())
    }

    pub(super) fn attr_int(&self, name: &str) -> Option<i64> {
        self.node.attr_int(name)
    }

    pub(super) fn attr_int_or(&self, name: &str, default: i64) -> i64 {
        self.node.attr_int(name).unwrap_or(default)
    }

    pub(super) fn attr_ints(&self, name: &str) -> Option<&'a [i64]> {
        self.node.attr_ints(name)
    }

    pub(super) fn attr_float(&self, name: &str) -> Option<f32> {
        self.node.attr_float(name)
    }

    pub(super) fn attr_floats(&self, name: &str) -> Option<&'a [f32]> {
        self.node.attribute(name).map(|a| a.floats.as_slice())
    }

    pub(super) fn attr_string(&self, name: &str) -> Option<String> {
        self.node.attr_string(name)
    }

    /// An integer list given as attribute `name` before opset `input_since`
    /// and as input `slot` from then on.
    pub(super) fn int_list_operand(&self, name: &str, slot: usize, input_since: i64) -> IntList {
        if self.opset < input_since {
            return match self.attr_ints(name) {
                Some(values) => IntList::Known(values.to_vec()),
                None => IntList::Absent,
            };
        }
        if !self.has_input(slot) {
            return IntList::Absent;
        }
        match self.input_ints(slot) {
            Some(values) => IntList::Known(values),
            None => IntList::Unknown,
        }
    }
}
