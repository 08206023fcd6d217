//! Fresh names for values and nodes that rewrites add: every name a model
//! already uses (in its graph, its subgraphs and its functions) is taken, and
//! a new name is the wanted base, or the base with the first free `_N` suffix.

use std::collections::HashSet;

use super::graph::Model;
use crate::onnx::proto::{AttributeProto, NodeProto};

/// Every value and node name in a model, its subgraphs and functions, so new
/// names are unique model-wide (subgraph names may not shadow outer ones).
#[derive(Default)]
pub(crate) struct Names {
    values: HashSet<String>,
    nodes: HashSet<String>,
}

impl Names {
    pub(crate) fn of_model(model: &Model) -> Names {
        let mut names = Names::default();
        names.values.extend(model.graph.values.iter().map(|v| v.name.clone()));
        for node in model.graph.nodes.node_weights() {
            names.nodes.insert(node.name.clone());
            names.add_attribute_graphs(&node.attributes);
        }
        for function in &model.header.functions {
            names.values.extend(function.input.iter().chain(&function.output).cloned());
            function.node.iter().for_each(|node| names.add_node_proto(node));
        }
        names
    }

    fn add_attribute_graphs(&mut self, attributes: &[AttributeProto]) {
        for graph in attributes.iter().flat_map(|a| a.g.iter().chain(&a.graphs)) {
            let declared = graph.input.iter().chain(&graph.output).filter_map(|v| v.name.clone());
            self.values.extend(declared);
            self.values.extend(graph.initializer.iter().filter_map(|t| t.name.clone()));
            graph.node.iter().for_each(|node| self.add_node_proto(node));
        }
    }

    fn add_node_proto(&mut self, node: &NodeProto) {
        self.nodes.extend(node.name.clone());
        self.values.extend(node.output.iter().cloned());
        self.add_attribute_graphs(&node.attribute);
    }

    fn fresh(taken: &mut HashSet<String>, base: &str) -> String {
        let mut candidate = base.to_string();
        let mut suffix = 0;
        while !taken.insert(candidate.clone()) {
            suffix += 1;
            candidate = format!("{base}_{suffix}");
        }
        candidate
    }

    /// A new value name (now taken).
    pub(crate) fn value(&mut self, base: &str) -> String {
        Names::fresh(&mut self.values, base)
    }

    /// A new node name (now taken).
    pub(crate) fn node(&mut self, base: &str) -> String {
        Names::fresh(&mut self.nodes, base)
    }

    /// Frees the name of a node the rewrite removed, for a node that takes its place.
    pub(crate) fn release_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }
}
