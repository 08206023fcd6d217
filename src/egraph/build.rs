//! IR → e-graph. Every node becomes an operator e-node over the e-classes of
//! its inputs (omitted optional inputs padded with `absent` to the operator's
//! full input list, so one pattern covers every spelling), initializers become
//! weight leaves, graph inputs and sparse initializers fed leaves. A node with
//! several read outputs becomes a tuple with one `#k` e-node per output.
//! The root joins the graph outputs; what they do not reach is dead and never
//! extracted (unless `clean` is off, then the root keeps every node).

use std::collections::HashMap;

use egg::Id;

use super::analysis::{Facts, FedValue, Graph, OpAttrs};
use super::language::{op_symbol, Onnx};
use crate::ir::graph::{Model, Producer, ValueId};
use crate::onnx::proto::NodeProto;
use crate::weights::fold::OpsetContext;

/// Where an e-node of the input model came from, for names at export.
#[derive(Clone, Debug)]
pub struct NodeOrigin {
    pub name: String,
    /// The node's other fields (doc string, metadata), as the IR keeps them.
    pub passthrough: NodeProto,
}

/// The e-graph of a model with what export needs to give values and nodes
/// their original names back.
pub struct Built {
    pub egraph: Graph,
    pub root: Id,
    /// E-nodes as added, with the node each came from.
    pub origins: Vec<(Onnx, NodeOrigin)>,
    /// Original value names with their class, graph outputs first, then
    /// names subgraphs read, then the rest in graph order.
    pub value_names: Vec<(Id, String)>,
    /// The class of each graph output, in order.
    pub outputs: Vec<Id>,
}

/// Full input counts of operators with optional trailing inputs that rules match.
const PADDED_INPUTS: &[(&str, usize)] = &[
    ("Conv", 3),
    ("ConvTranspose", 3),
    ("Gemm", 3),
    ("BatchNormalization", 5),
    ("Dropout", 3),
    ("Pad", 4),
    ("Slice", 5),
    ("Clip", 3),
    ("Squeeze", 2),
    ("Unsqueeze", 2),
    ("Resize", 4),
];

/// Operators whose outputs after the first are optional: unread ones are dropped.
const DROPPABLE_OUTPUTS: &[&str] = &["Dropout", "BatchNormalization", "MaxPool", "LSTM", "GRU", "RNN"];

/// Whether graph inputs with an initializer are constants: before IR version
/// 4 every initializer had to be listed as an input, so the listing says
/// nothing about overriding it.
pub fn initializer_inputs_are_constant(model: &Model) -> bool {
    model.header.ir_version.unwrap_or(8) < 4
}

/// Builds the e-graph of a model whose shapes were inferred.
/// `keep_dead` keeps nodes no output needs (the `clean` family is off).
pub fn build(model: &Model, keep_dead: bool) -> Result<Built, String> {
    let graph = &model.graph;
    let context = OpsetContext {
        ir_version: model.header.ir_version.unwrap_or(8),
        opset_import: model.header.opset_import.clone(),
    };
    let mut egraph = Graph::new(Facts::new(context, !keep_dead));
    let mut class_of: HashMap<ValueId, Id> = HashMap::new();
    let absent = egraph.add(Onnx::Absent);

    // Leaves: fed values and initializers. Before IR 4 every initializer had
    // to be listed as an input too; those are constants (as runtimes treat them).
    let constant_inputs = initializer_inputs_are_constant(model);
    for (index, value) in graph.values.iter().enumerate() {
        let id = ValueId(index);
        let leaf = match value.producer {
            Producer::GraphInput if constant_inputs && value.initializer.is_some() => {
                let tensor = value.initializer.clone().expect("checked");
                Onnx::Weight(egraph.analysis.intern_weight(tensor, Some(&value.name)))
            }
            Producer::GraphInput | Producer::SparseInitializer => {
                let fed = egraph.analysis.fed.len() as u32;
                egraph.analysis.fed.push(FedValue {
                    name: value.name.clone(),
                    dtype: value.dtype,
                    shape: value.shape.clone(),
                });
                Onnx::Input(fed)
            }
            Producer::Initializer => {
                let Some(tensor) = value.initializer.clone() else { continue };
                Onnx::Weight(egraph.analysis.intern_weight(tensor, Some(&value.name)))
            }
            Producer::Node(..) => continue,
        };
        class_of.insert(id, egraph.add(leaf));
    }

    let order =
        graph.topological_order().map_err(|stuck| format!("node '{}' is on a cycle", graph.node(stuck).name))?;
    let read: std::collections::HashSet<ValueId> = graph
        .nodes
        .node_weights()
        .flat_map(|n| n.inputs.iter().flatten().chain(&n.implicit_inputs).copied())
        .chain(graph.outputs.iter().map(|io| io.value))
        .collect();
    let mut origins = Vec::new();
    // Nodes nothing reads in the input (kept when `clean` is off).
    let mut dead_classes = Vec::new();
    for index in order {
        let node = graph.node(index);
        let mut children: Vec<Id> = Vec::with_capacity(node.inputs.len() + 1);
        for input in &node.inputs {
            children.push(match input {
                Some(value) => {
                    *class_of.get(value).ok_or_else(|| format!("node '{}' reads an undefined value", node.name))?
                }
                None => absent,
            });
        }
        let padded = PADDED_INPUTS.iter().find(|(op, _)| *op == node.op_type && node.domain.is_empty());
        if let Some(&(_, full)) = padded {
            while children.len() < full {
                children.push(absent);
            }
        }
        let implicit: Vec<String> = node.implicit_inputs.iter().map(|v| graph.value(*v).name.clone()).collect();
        // Outputs a runtime may omit when nobody reads them; other operators
        // (Split, TopK, ...) keep every output slot they had.
        let optional_outputs = DROPPABLE_OUTPUTS.contains(&node.op_type.as_str()) && node.domain.is_empty();
        let needed = |v: &ValueId| keep_dead || read.contains(v);
        let used: Vec<(usize, ValueId)> = node
            .outputs
            .iter()
            .enumerate()
            .filter_map(|(slot, v)| v.map(|v| (slot, v)))
            .filter(|(_, v)| !optional_outputs || needed(v))
            .collect();
        let single = used.iter().all(|(slot, _)| *slot == 0);
        let output_slots = if single {
            Vec::new()
        } else {
            node.outputs.iter().map(|v| v.is_some_and(|v| !optional_outputs || needed(&v))).collect()
        };
        let attrs =
            egraph.analysis.intern_attrs(OpAttrs { attributes: node.attributes.clone(), implicit, output_slots });
        children.push(egraph.add(Onnx::Attrs(attrs)));
        for value in &node.implicit_inputs {
            children
                .push(*class_of.get(value).ok_or_else(|| format!("node '{}' reads an undefined value", node.name))?);
        }
        let op = op_symbol(&node.domain, &node.op_type);
        let enode = if single { Onnx::Op(op, children.into()) } else { Onnx::Tuple(op, children.into()) };
        let node_class = egraph.add(enode.clone());
        origins.push((enode, NodeOrigin { name: node.name.clone(), passthrough: node.passthrough.clone() }));
        if !node.outputs.iter().flatten().any(|v| read.contains(v)) {
            dead_classes.push(node_class);
        }
        for (slot, value) in used {
            let class = if single { node_class } else { egraph.add(Onnx::Output(slot as u32, [node_class])) };
            class_of.insert(value, class);
        }
    }

    // Facts from the IR's inference for every class that holds a value, and its readers.
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    for node in graph.nodes.node_weights() {
        let mut read_here: Vec<ValueId> = node.inputs.iter().flatten().chain(&node.implicit_inputs).copied().collect();
        read_here.sort();
        read_here.dedup();
        for value in read_here {
            *uses.entry(value).or_default() += 1;
        }
    }
    for io in &graph.outputs {
        *uses.entry(io.value).or_default() += 1;
    }
    for (&value_id, &class) in &class_of {
        let value = graph.value(value_id);
        let data = &mut egraph[class].data;
        data.uses = data.uses.max(uses.get(&value_id).copied().unwrap_or(0));
        if data.dtype.is_none() {
            data.dtype = value.dtype;
        }
        if data.shape.is_none() {
            data.shape = value.shape.clone();
        }
    }

    let outputs: Vec<Id> = graph
        .outputs
        .iter()
        .map(|io| {
            class_of
                .get(&io.value)
                .copied()
                .ok_or_else(|| format!("graph output '{}' is never defined", graph.value(io.value).name))
        })
        .collect::<Result<_, _>>()?;
    let mut roots = outputs.clone();
    if keep_dead {
        roots.extend(dead_classes);
    }
    let root = egraph.add(Onnx::Root(roots.into()));

    let mut value_names: Vec<(Id, String)> = Vec::new();
    let implicit_names: Vec<ValueId> = graph.nodes.node_weights().flat_map(|n| n.implicit_inputs.clone()).collect();
    let ordered =
        graph.outputs.iter().map(|io| io.value).chain(implicit_names).chain((0..graph.values.len()).map(ValueId));
    for value in ordered {
        if let Some(&class) = class_of.get(&value) {
            value_names.push((class, graph.value(value).name.clone()));
        }
    }
    egraph.rebuild();
    Ok(Built { egraph, root, origins, value_names, outputs })
}
