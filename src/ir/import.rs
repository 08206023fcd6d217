//! ONNX → IR: builds the petgraph graph from a ModelProto, resolving every
//! input name to the value that defines it. Refuses models the IR cannot hold
//! faithfully (no graph, a name defined twice, a read of an undefined value, a
//! cycle) with an error naming the node.

use std::collections::HashSet;

use super::dtype::DataType;
use super::graph::{Graph, GraphIo, Model, Node, Producer, Value, ValueId, ValueInfoEntry};
use super::shape::Shape;
use super::IrError;
use crate::onnx::proto::{type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, ValueInfoProto};

/// Builds the IR of a model.
pub fn import(mut proto: ModelProto) -> Result<Model, IrError> {
    let graph_proto = proto.graph.take().ok_or(IrError::NoGraph)?;
    Ok(Model { header: proto, graph: import_graph(graph_proto)? })
}

fn import_graph(mut proto: GraphProto) -> Result<Graph, IrError> {
    let node_protos = std::mem::take(&mut proto.node);
    let initializers = std::mem::take(&mut proto.initializer);
    let inputs = std::mem::take(&mut proto.input);
    let outputs = std::mem::take(&mut proto.output);
    let value_info = std::mem::take(&mut proto.value_info);
    let mut graph = Graph::default();
    graph.passthrough = proto;

    for tensor in initializers {
        let name = tensor.name.clone().unwrap_or_default();
        if graph.value_id(&name).is_some() {
            return Err(IrError::DuplicateName { what: "initializer".into(), name });
        }
        let dims = tensor.dims.clone();
        let id = graph.add_value(Value {
            name,
            dtype: super::tensor::dtype(&tensor),
            shape: Some(Shape::known(&dims)),
            producer: Producer::Initializer,
            initializer: Some(tensor),
            declared: None,
        });
        graph.initializers.push(id);
    }

    for sparse in graph.passthrough.sparse_initializer.clone() {
        let name = sparse.values.as_ref().and_then(|v| v.name.clone()).unwrap_or_default();
        if graph.value_id(&name).is_some() {
            return Err(IrError::DuplicateName { what: "sparse initializer".into(), name });
        }
        let dtype = sparse.values.as_ref().and_then(super::tensor::dtype);
        // The sparse tensor itself stays in the pass-through graph fields.
        let shape = Some(Shape::known(&sparse.dims));
        graph.add_value(Value {
            name,
            dtype,
            shape,
            producer: Producer::SparseInitializer,
            initializer: None,
            declared: None,
        });
    }

    for declared in inputs {
        let name = declared.name.clone().unwrap_or_default();
        let id = match graph.value_id(&name) {
            Some(id) if graph.value(id).producer == Producer::Initializer => {
                graph.value_mut(id).producer = Producer::GraphInput;
                id
            }
            Some(_) => return Err(IrError::DuplicateName { what: "graph input".into(), name }),
            None => graph.add_value(Value {
                name,
                dtype: None,
                shape: None,
                producer: Producer::GraphInput,
                initializer: None,
                declared: None,
            }),
        };
        apply_declared_type(graph.value_mut(id), &declared);
        graph.inputs.push(GraphIo { value: id, declared });
    }

    // Outputs first, so that nodes listed out of topological order still resolve.
    let mut pending = Vec::with_capacity(node_protos.len());
    for mut node_proto in node_protos {
        let node_name = node_proto.name.clone().unwrap_or_default();
        let output_names = std::mem::take(&mut node_proto.output);
        let index = graph.nodes.add_node(Node {
            name: node_name.clone(),
            op_type: node_proto.op_type.clone().unwrap_or_default(),
            domain: node_proto.domain.clone().unwrap_or_default(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            implicit_inputs: Vec::new(),
            attributes: std::mem::take(&mut node_proto.attribute),
            passthrough: NodeProto::default(),
        });
        let mut outputs = Vec::with_capacity(output_names.len());
        for (slot, name) in output_names.into_iter().enumerate() {
            if name.is_empty() {
                outputs.push(None);
                continue;
            }
            if graph.value_id(&name).is_some() {
                return Err(IrError::DuplicateName { what: format!("output of node '{node_name}'"), name });
            }
            outputs.push(Some(graph.add_value(Value {
                name,
                dtype: None,
                shape: None,
                producer: Producer::Node(index, slot),
                initializer: None,
                declared: None,
            })));
        }
        graph.nodes[index].outputs = outputs;
        pending.push((index, node_proto));
    }

    for (index, mut node_proto) in pending {
        let input_names = std::mem::take(&mut node_proto.input);
        let mut inputs = Vec::with_capacity(input_names.len());
        for name in input_names {
            if name.is_empty() {
                inputs.push(None);
                continue;
            }
            let id = graph.value_id(&name).ok_or_else(|| IrError::UndefinedInput {
                node: graph.nodes[index].name.clone(),
                op: graph.nodes[index].op_type.clone(),
                name: name.clone(),
            })?;
            inputs.push(Some(id));
        }
        let mut implicit: Vec<ValueId> = Vec::new();
        for name in subgraph_free_names(&graph.nodes[index].attributes) {
            if let Some(id) = graph.value_id(&name) {
                implicit.push(id);
            }
        }
        implicit.sort();
        let node = &mut graph.nodes[index];
        node.inputs = inputs;
        node.implicit_inputs = implicit;
        node.passthrough = node_proto;
    }

    for declared in value_info {
        let name = declared.name.clone().unwrap_or_default();
        match graph.value_id(&name) {
            Some(id) if graph.value(id).declared.is_none() => {
                apply_declared_type(graph.value_mut(id), &declared);
                graph.value_mut(id).declared = Some(declared);
                graph.value_info.push(ValueInfoEntry::Value(id));
            }
            // A value_info entry for a name the graph does not define (or a
            // second entry for one): not ours to judge, carried through.
            _ => graph.value_info.push(ValueInfoEntry::Orphan(declared)),
        }
    }

    for declared in outputs {
        let name = declared.name.clone().unwrap_or_default();
        let id = graph.value_id(&name).ok_or_else(|| IrError::UndefinedOutput { name: name.clone() })?;
        apply_declared_type(graph.value_mut(id), &declared);
        graph.outputs.push(GraphIo { value: id, declared });
    }

    graph.rebuild_edges();
    if let Err(stuck) = graph.topological_order() {
        let node = graph.node(stuck);
        return Err(IrError::Cycle { node: node.name.clone(), op: node.op_type.clone() });
    }
    Ok(graph)
}

/// Fills a value's dtype and shape from a declaration, where it says more.
fn apply_declared_type(value: &mut Value, declared: &ValueInfoProto) {
    let Some(type_proto::Value::TensorType(tensor_type)) = declared.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return;
    };
    if value.dtype.is_none() {
        value.dtype = tensor_type.elem_type.and_then(DataType::from_code);
    }
    if value.shape.is_none() {
        value.shape = tensor_type.shape.as_ref().map(Shape::from_proto);
    }
}

/// Names that the subgraphs in these attributes read but do not define: the
/// outer-scope values a control-flow node depends on.
fn subgraph_free_names(attributes: &[AttributeProto]) -> Vec<String> {
    let mut free = Vec::new();
    for attribute in attributes {
        for graph in attribute.g.iter().chain(attribute.graphs.iter()) {
            collect_free_names(graph, &HashSet::new(), &mut free);
        }
    }
    free.sort();
    free.dedup();
    free
}

pub(super) fn collect_free_names(graph: &GraphProto, outer_defined: &HashSet<String>, free: &mut Vec<String>) {
    let mut defined = outer_defined.clone();
    defined.extend(graph.input.iter().filter_map(|v| v.name.clone()));
    defined.extend(graph.initializer.iter().filter_map(|t| t.name.clone()));
    defined.extend(graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref()?.name.clone()));
    for node in &graph.node {
        defined.extend(node.output.iter().cloned());
    }
    let mut note = |name: &String| {
        if !name.is_empty() && !defined.contains(name) {
            free.push(name.clone());
        }
    };
    for node in &graph.node {
        node.input.iter().for_each(&mut note);
    }
    graph.output.iter().filter_map(|v| v.name.as_ref()).for_each(&mut note);
    for node in &graph.node {
        for attribute in &node.attribute {
            for inner in attribute.g.iter().chain(attribute.graphs.iter()) {
                collect_free_names(inner, &defined, free);
            }
        }
    }
}
