//! A part of a model as a model of its own: the nodes that compute chosen
//! values from other chosen values, which become the part's graph inputs,
//! with the constants those nodes read copied in. One layer of a quantized
//! model, cut out this way, runs alone on the values it read inside the
//! whole model.

use std::collections::{HashMap, HashSet};

use super::graph::{Graph, GraphIo, Model, Node, Producer, Value, ValueId};
use super::shape::tensor_declaration;

/// The model computing `outputs` of `model` from `inputs`: every node on
/// the way from them, in the model's order, and every initializer those
/// nodes read; inputs and outputs are declared with the type and shape they
/// have in `model`. `None` when the outputs also depend on a graph input
/// that is not among `inputs`, when a node on the way is on a cycle, or when
/// an input or output has no known element type.
pub fn submodel(model: &Model, inputs: &[ValueId], outputs: &[ValueId]) -> Option<Model> {
    let graph = &model.graph;
    let mut needed = HashSet::new();
    let mut pending: Vec<ValueId> = outputs.to_vec();
    while let Some(value) = pending.pop() {
        if inputs.contains(&value) {
            continue;
        }
        match graph.value(value).producer {
            Producer::Initializer => {}
            Producer::Node(node, _) => {
                if needed.insert(node) {
                    let node = graph.node(node);
                    pending.extend(node.inputs.iter().flatten().chain(&node.implicit_inputs));
                }
            }
            Producer::GraphInput | Producer::SparseInitializer => return None,
        }
    }
    let order = graph.topological_order().ok()?;

    let mut part = Graph::default();
    let mut copied: HashMap<ValueId, ValueId> = HashMap::new();
    for &input in inputs {
        let value = graph.value(input);
        let declared = tensor_declaration(&value.name, value.dtype?, value.shape.as_ref());
        let id = part.add_value(Value {
            producer: Producer::GraphInput,
            initializer: None,
            declared: None,
            ..value.clone()
        });
        part.inputs.push(GraphIo { value: id, declared });
        copied.insert(input, id);
    }
    for index in order.into_iter().filter(|index| needed.contains(index)) {
        let node = graph.node(index);
        let mut read = |value: ValueId| -> ValueId {
            *copied.entry(value).or_insert_with(|| {
                let original = graph.value(value);
                let tensor = original.initializer.clone().unwrap_or_default();
                part.add_initializer(original.name.clone(), tensor)
            })
        };
        let node_inputs = node.inputs.iter().map(|input| input.map(&mut read)).collect();
        let implicit_inputs = node.implicit_inputs.iter().map(|&value| read(value)).collect();
        let added =
            part.nodes.add_node(Node { inputs: node_inputs, implicit_inputs, outputs: Vec::new(), ..node.clone() });
        let node_outputs = node
            .outputs
            .iter()
            .enumerate()
            .map(|(slot, output)| {
                output.map(|output| {
                    let value = graph.value(output);
                    let producer = Producer::Node(added, slot);
                    let id = part.add_value(Value { producer, initializer: None, declared: None, ..value.clone() });
                    copied.insert(output, id);
                    id
                })
            })
            .collect();
        part.nodes[added].outputs = node_outputs;
    }
    for &output in outputs {
        let value = graph.value(output);
        let declared = tensor_declaration(&value.name, value.dtype?, value.shape.as_ref());
        part.outputs.push(GraphIo { value: *copied.get(&output)?, declared });
    }
    part.rebuild_edges();
    Some(Model { header: model.header.clone(), graph: part })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{self, tensor};
    use crate::onnx::proto::ModelProto;

    fn golden(name: &str) -> Model {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(name).join("model.onnx");
        let bytes = std::fs::read(path).unwrap();
        ir::import(<ModelProto as prost::Message>::decode(bytes.as_slice()).unwrap()).unwrap()
    }

    #[test]
    fn a_part_keeps_only_the_nodes_and_constants_between_its_inputs_and_outputs() {
        let model = golden("resnet_block_op13");
        let graph = &model.graph;
        let order = graph.topological_order().unwrap();
        // The second node's output, computed from the first node's output.
        let (first, second) = (graph.node(order[0]), graph.node(order[1]));
        let input = first.output(0).unwrap();
        let output = second.output(0).unwrap();
        assert!(second.inputs.contains(&Some(input)), "the golden block's second node reads the first");
        let part = submodel(&model, &[input], &[output]).unwrap();
        assert_eq!(part.graph.nodes.node_count(), 1);
        assert_eq!(part.graph.nodes.node_weights().next().unwrap().op_type, second.op_type);
        let constants = second.inputs.iter().flatten().filter(|&&v| graph.constant(v).is_some()).count();
        assert_eq!(part.graph.initializers.len(), constants);
        for &initializer in &part.graph.initializers {
            let copy = part.graph.value(initializer);
            let original = graph.value(graph.value_id(&copy.name).unwrap());
            assert_eq!(
                copy.initializer.as_ref().and_then(tensor::raw_bytes),
                original.initializer.as_ref().and_then(tensor::raw_bytes)
            );
        }
        assert_eq!(part.graph.value(part.graph.inputs[0].value).name, graph.value(input).name);
        ir::export(part).unwrap();
    }

    #[test]
    fn a_part_that_needs_another_graph_input_is_refused() {
        let model = golden("resnet_block_op13");
        let graph = &model.graph;
        let outputs: Vec<ValueId> = graph.outputs.iter().map(|io| io.value).collect();
        assert!(submodel(&model, &[], &outputs).is_none());
        let inputs: Vec<ValueId> = graph.inputs.iter().map(|io| io.value).collect();
        let whole = submodel(&model, &inputs, &outputs).unwrap();
        assert_eq!(whole.graph.nodes.node_count(), graph.nodes.node_count());
    }
}
