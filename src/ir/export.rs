//! IR → ONNX: writes the graph back as a ModelProto, nodes in topological
//! order (the original order where it was already topological), every
//! declaration and pass-through field as it came.

use super::graph::{Graph, GraphIo, Model, Node, ValueId, ValueInfoEntry};
use super::IrError;
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, ValueInfoProto};

/// Writes a model's IR as a ModelProto.
pub fn export(model: Model) -> Result<ModelProto, IrError> {
    let Model { mut header, graph } = model;
    header.graph = Some(export_graph(graph)?);
    Ok(header)
}

fn export_graph(mut graph: Graph) -> Result<GraphProto, IrError> {
    let order = graph.topological_order().map_err(|stuck| {
        let node = graph.node(stuck);
        IrError::Cycle { node: node.name.clone(), op: node.op_type.clone() }
    })?;
    let mut proto = std::mem::take(&mut graph.passthrough);

    let mut nodes = std::mem::take(&mut graph.nodes);
    let name_of = |id: &Option<ValueId>| id.map(|id| graph.value(id).name.clone()).unwrap_or_default();
    proto.node = order
        .into_iter()
        .filter_map(|index| nodes.remove_node(index))
        .map(|node| {
            let input = node.inputs.iter().map(name_of).collect();
            let output = node.outputs.iter().map(name_of).collect();
            export_node(node, input, output)
        })
        .collect();

    proto.initializer = graph
        .initializers
        .iter()
        .filter_map(|&id| {
            let value = &mut graph.values[id.0];
            let mut tensor = value.initializer.take()?;
            tensor.name = Some(value.name.clone());
            Some(tensor)
        })
        .collect();
    proto.input = declarations(&graph, &graph.inputs);
    proto.output = declarations(&graph, &graph.outputs);
    proto.value_info = std::mem::take(&mut graph.value_info)
        .into_iter()
        .filter_map(|entry| match entry {
            ValueInfoEntry::Value(id) => {
                let value = graph.value(id);
                let mut declared = value.declared.clone()?;
                declared.name = Some(value.name.clone());
                Some(declared)
            }
            ValueInfoEntry::Orphan(declared) => Some(declared),
        })
        .collect();
    Ok(proto)
}

/// The declarations of graph inputs or outputs, under their values' current names.
fn declarations(graph: &Graph, ios: &[GraphIo]) -> Vec<ValueInfoProto> {
    ios.iter()
        .map(|io| {
            let mut declared = io.declared.clone();
            declared.name = Some(graph.value(io.value).name.clone());
            declared
        })
        .collect()
}

fn export_node(node: Node, input: Vec<String>, output: Vec<String>) -> NodeProto {
    let mut proto = node.passthrough;
    let keep = |field: Option<String>, value: &str| (field.is_some() || !value.is_empty()).then(|| value.to_string());
    proto.name = keep(proto.name, &node.name);
    proto.domain = keep(proto.domain, &node.domain);
    proto.op_type = Some(node.op_type);
    proto.input = input;
    proto.output = output;
    proto.attribute = node.attributes;
    proto
}
