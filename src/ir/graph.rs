//! The graph IR: operator nodes in a petgraph `StableGraph`, joined by edges
//! that carry the value flowing from producer to consumer. Values (named
//! tensors) live in one table with their dtype, shape, initializer data and the
//! `ValueInfoProto` they were declared with, so export can write them back
//! exactly. Everything the IR does not model is kept verbatim beside it.

use std::collections::HashMap;

use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::Direction;

use super::dtype::DataType;
use super::shape::Shape;
use crate::onnx::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

/// Index of a value in `Graph::values`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Producer {
    /// A graph input fed by the caller (possibly with an initializer as default).
    GraphInput,
    /// A constant initializer (not listed as a graph input).
    Initializer,
    /// A sparse initializer; its tensor stays in `Graph::passthrough`.
    SparseInitializer,
    /// Output `slot` of a node.
    Node(NodeIndex, usize),
}

/// A named tensor flowing through the graph.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub dtype: Option<DataType>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Shape>,
    pub producer: Producer,
    /// Constant data when the value is an initializer (or a graph input with a default).
    pub initializer: Option<TensorProto>,
    /// The value_info entry the model gave this value, if any.
    pub declared: Option<ValueInfoProto>,
}

/// A graph input or output: the value and the declaration written for it.
#[derive(Clone, Debug)]
pub struct GraphIo {
    pub value: ValueId,
    pub declared: ValueInfoProto,
}

/// An operator invocation.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    /// Operator domain; "" is the default ai.onnx domain.
    pub domain: String,
    /// Inputs by position; `None` for an omitted optional input ("").
    pub inputs: Vec<Option<ValueId>>,
    /// Outputs by position; `None` for an omitted optional output.
    pub outputs: Vec<Option<ValueId>>,
    /// Outer-scope values read by the node's subgraphs (If/Loop/Scan bodies).
    pub implicit_inputs: Vec<ValueId>,
    pub attributes: Vec<AttributeProto>,
    /// The node's remaining fields (doc string, overload, metadata, device
    /// configurations), written back as they came. Its inputs, outputs and
    /// attributes are empty; name, op_type and domain are superseded by the
    /// fields above (kept only to tell an absent field from an empty one).
    pub passthrough: NodeProto,
}

impl Node {
    /// The value at input position `slot`, if present.
    pub fn input(&self, slot: usize) -> Option<ValueId> {
        self.inputs.get(slot).copied().flatten()
    }

    /// The value at output position `slot`, if present.
    pub fn output(&self, slot: usize) -> Option<ValueId> {
        self.outputs.get(slot).copied().flatten()
    }
}

/// Typed reads of an attribute list by name (a node's, or an e-graph attribute set's).
pub trait AttributeList {
    fn attribute_list(&self) -> &[AttributeProto];

    fn attribute(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute_list().iter().find(|a| a.name.as_deref() == Some(name))
    }

    fn attr_int(&self, name: &str) -> Option<i64> {
        self.attribute(name).and_then(|a| a.i)
    }

    fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        self.attribute(name).map(|a| a.ints.as_slice())
    }

    fn attr_float(&self, name: &str) -> Option<f32> {
        self.attribute(name).and_then(|a| a.f)
    }

    fn attr_string(&self, name: &str) -> Option<String> {
        self.attribute(name).and_then(|a| a.s.as_ref()).map(|s| String::from_utf8_lossy(s).into_owned())
    }

    fn attr_tensor(&self, name: &str) -> Option<&TensorProto> {
        self.attribute(name).and_then(|a| a.t.as_ref())
    }
}

impl AttributeList for [AttributeProto] {
    fn attribute_list(&self) -> &[AttributeProto] {
        self
    }
}

impl AttributeList for Node {
    fn attribute_list(&self) -> &[AttributeProto] {
        &self.attributes
    }
}

/// One value_info entry: a value of the graph (its declaration is the
/// value's `declared`), or a declaration of a name the graph does not define,
/// carried through as it came.
#[derive(Clone, Debug)]
pub enum ValueInfoEntry {
    Value(ValueId),
    Orphan(ValueInfoProto),
}

/// An edge from producer to consumer: the value passed along it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub value: ValueId,
}

/// A computation graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub nodes: StableGraph<Node, Edge>,
    pub values: Vec<Value>,
    pub inputs: Vec<GraphIo>,
    pub outputs: Vec<GraphIo>,
    /// Initializers in the order they are written.
    pub initializers: Vec<ValueId>,
    /// The value_info entries in file order.
    pub value_info: Vec<ValueInfoEntry>,
    /// The graph's remaining fields (name, doc string, sparse initializers,
    /// quantization annotations, metadata), carried through unchanged.
    pub passthrough: GraphProto,
    by_name: HashMap<String, ValueId>,
}

impl Graph {
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0]
    }

    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.0]
    }

    pub fn value_id(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }

    /// Adds a value; its name must be new to the graph.
    pub fn add_value(&mut self, value: Value) -> ValueId {
        let id = ValueId(self.values.len());
        self.by_name.insert(value.name.clone(), id);
        self.values.push(value);
        id
    }

    /// Adds a constant initializer under `name`, which must be new to the
    /// graph; the tensor takes the name too.
    pub fn add_initializer(&mut self, name: String, mut tensor: TensorProto) -> ValueId {
        tensor.name = Some(name.clone());
        let id = self.add_value(Value {
            name,
            dtype: super::tensor::dtype(&tensor),
            shape: Some(Shape::known(&tensor.dims)),
            producer: Producer::Initializer,
            initializer: Some(tensor),
            declared: None,
        });
        self.initializers.push(id);
        id
    }

    pub fn node(&self, index: NodeIndex) -> &Node {
        &self.nodes[index]
    }

    /// The node producing a value, if a node does.
    pub fn producer_node(&self, id: ValueId) -> Option<NodeIndex> {
        match self.value(id).producer {
            Producer::Node(node, _) => Some(node),
            _ => None,
        }
    }

    /// The constant data of a value: its initializer, or the tensor of the
    /// Constant node producing it.
    pub fn constant(&self, id: ValueId) -> Option<&TensorProto> {
        let value = self.value(id);
        if value.producer != Producer::GraphInput {
            if let Some(tensor) = &value.initializer {
                return Some(tensor);
            }
        }
        let node = self.node(self.producer_node(id)?);
        (node.op_type == "Constant" && node.domain.is_empty()).then(|| node.attr_tensor("value")).flatten()
    }

    /// Nodes that read a value, each once, in node order.
    pub fn consumers(&self, id: ValueId) -> Vec<NodeIndex> {
        let mut found: Vec<NodeIndex> = self
            .nodes
            .node_indices()
            .filter(|&n| {
                let node = &self.nodes[n];
                node.inputs.contains(&Some(id)) || node.implicit_inputs.contains(&id)
            })
            .collect();
        found.dedup();
        found
    }

    /// Every value a node (or its subgraphs) or a graph output reads.
    pub fn read_values(&self) -> std::collections::HashSet<ValueId> {
        self.nodes
            .node_weights()
            .flat_map(|node| node.inputs.iter().flatten().chain(&node.implicit_inputs))
            .chain(self.outputs.iter().map(|io| &io.value))
            .copied()
            .collect()
    }

    /// Nodes in a topological order that keeps the original order wherever the
    /// edges allow (the order nodes were added in). `Err` names a node on a cycle.
    pub fn topological_order(&self) -> Result<Vec<NodeIndex>, NodeIndex> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut pending: HashMap<NodeIndex, usize> = HashMap::new();
        let mut ready = BinaryHeap::new();
        for n in self.nodes.node_indices() {
            let mut producers: Vec<NodeIndex> = self.nodes.neighbors_directed(n, Direction::Incoming).collect();
            producers.sort();
            producers.dedup();
            if producers.is_empty() {
                ready.push(Reverse(n));
            } else {
                pending.insert(n, producers.len());
            }
        }
        let mut order = Vec::with_capacity(self.nodes.node_count());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(n);
            let mut consumers: Vec<NodeIndex> = self.nodes.neighbors_directed(n, Direction::Outgoing).collect();
            consumers.sort();
            consumers.dedup();
            for c in consumers {
                if let Some(count) = pending.get_mut(&c) {
                    *count -= 1;
                    if *count == 0 {
                        pending.remove(&c);
                        ready.push(Reverse(c));
                    }
                }
            }
        }
        match pending.keys().min() {
            Some(&stuck) => Err(stuck),
            None => Ok(order),
        }
    }

    /// Rebuilds the edges from the nodes' input lists (after nodes changed).
    pub fn rebuild_edges(&mut self) {
        self.nodes.clear_edges();
        let indices: Vec<NodeIndex> = self.nodes.node_indices().collect();
        for consumer in indices {
            let node = &self.nodes[consumer];
            let read: Vec<ValueId> = node.inputs.iter().flatten().chain(node.implicit_inputs.iter()).copied().collect();
            for value in read {
                if let Producer::Node(producer, _) = self.values[value.0].producer {
                    self.nodes.add_edge(producer, consumer, Edge { value });
                }
            }
        }
    }
}

/// A model: the graph plus the model-level fields, carried through unchanged.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// The ModelProto without its graph: IR version, opset imports, producer,
    /// metadata, functions, training info, device configurations.
    pub header: ModelProto,
    pub graph: Graph,
}

impl Model {
    /// The imported version of an operator domain ("" or "ai.onnx" for the default).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let wanted = if domain == "ai.onnx" { "" } else { domain };
        self.header.opset_import.iter().find_map(|o| {
            let d = o.domain.as_deref().unwrap_or("");
            let d = if d == "ai.onnx" { "" } else { d };
            (d == wanted).then(|| o.version.unwrap_or(0))
        })
    }
}
