//! E-graph choice → IR. Emits the chosen e-node of every needed class in
//! dependency order: weights as initializers (computations evaluated by
//! src/weights), operators as nodes. Values keep their original names where
//! the class had one (graph outputs first, then names subgraphs read), nodes
//! keep the name and fields of the node they came from; new ones get fresh
//! names. A graph output (or a subgraph's outer-scope name) whose class ends
//! up under another name gets an Identity, so the interface never changes.

use std::collections::{HashMap, HashSet};

use egg::Id;

use super::analysis::{attrs_of, Graph as EGraph, OpAttrs};
use super::build::{Built, NodeOrigin};
use super::extract::Choice;
use super::language::{split_op, Onnx};
use crate::ir::graph::{Graph, GraphIo, Model, Node, Producer, Value, ValueId, ValueInfoEntry};
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::weights::{self, Operand};

/// An operator's inputs, attributes and implicit (subgraph) inputs.
type Operands = (Vec<Option<ValueId>>, OpAttrs, Vec<ValueId>);

/// The input model's node behind each e-node, by which chosen e-nodes get
/// their names and fields back.
pub struct Origins<'a> {
    egraph: &'a EGraph,
    origins: HashMap<Onnx, &'a NodeOrigin>,
    /// Origins by (operator, first input, attributes): a rewritten node
    /// (a Conv with folded weights) takes the name of the node it replaces.
    similar_origins: HashMap<(Onnx, Id, Id), &'a NodeOrigin>,
    /// The class of a node a family added → the layer it stands in for.
    stand_ins: HashMap<Id, super::analysis::StandIn>,
}

impl<'a> Origins<'a> {
    pub fn of(built: &'a Built) -> Origins<'a> {
        let egraph = &built.egraph;
        let find = |id: Id| egraph.find(id);
        let mut origins = HashMap::new();
        let mut similar_origins = HashMap::new();
        for (node, origin) in &built.origins {
            let node = egg::Language::map_children(node.clone(), find);
            if let Some(key) = similarity_key(&node) {
                similar_origins.entry(key).or_insert(origin);
            }
            origins.entry(node).or_insert(origin);
        }
        let mut stand_ins = HashMap::new();
        for (&node, stand_in) in &egraph.analysis.stand_ins {
            stand_ins.entry(find(node)).or_insert(*stand_in);
        }
        Origins { egraph, origins, similar_origins, stand_ins }
    }

    /// The node an e-node of `class` came from, or took the place of: a
    /// rewritten node that of its original, an integer layer that of the
    /// float layer it replaces.
    pub fn of_node(&self, class: Id, node: &Onnx) -> Option<&'a NodeOrigin> {
        self.direct(node).or_else(|| node.as_op().and_then(|_| self.of_stand_in(class)))
    }

    /// The input model's node that computed the value of `class` (any of its
    /// e-nodes that came from one): the name a node replacing it takes.
    pub fn of_class(&self, class: Id) -> Option<&'a NodeOrigin> {
        self.egraph[self.egraph.find(class)].nodes.iter().find_map(|n| self.origins.get(n).copied())
    }

    fn direct(&self, node: &Onnx) -> Option<&'a NodeOrigin> {
        self.origins.get(node).or_else(|| self.similar_origins.get(&similarity_key(node)?)).copied()
    }

    fn of_stand_in(&self, class: Id) -> Option<&'a NodeOrigin> {
        let stand_in = self.stand_ins.get(&self.egraph.find(class))?;
        self.of_layer(stand_in.layer, stand_in.op)
    }

    /// The node that the float operator `op` among the alternatives of the
    /// class `layer` came from (the name its integer forms take too).
    pub fn of_layer(&self, layer: Id, op: &str) -> Option<&'a NodeOrigin> {
        self.egraph[self.egraph.find(layer)]
            .nodes
            .iter()
            .filter(|n| n.as_op().is_some_and(|(o, _)| o.as_str() == op))
            .find_map(|n| self.direct(n))
    }
}

struct Exporter<'a> {
    egraph: &'a EGraph,
    chosen: &'a HashMap<Id, Onnx>,
    origins: Origins<'a>,
    source: &'a Graph,
    graph: Graph,
    /// Names given to classes before emission (original names).
    names: HashMap<Id, String>,
    used_names: HashSet<String>,
    node_names: HashSet<String>,
    values: HashMap<Id, ValueId>,
    /// Tuple (multi-output) classes already written as a node.
    emitted_tuples: HashSet<Id>,
    /// Classes whose value is being emitted (a class met again among its
    /// own operands means the choice has a cycle).
    emitting: HashSet<Id>,
    tensors: HashMap<Id, TensorProto>,
    /// (tuple class, slot) → the class of that output.
    tuple_outputs: HashMap<(Id, u32), Id>,
    counter: usize,
}

/// Builds the IR graph of a choice. `source` is the model the e-graph was built from.
pub fn export(source: &Model, built: &Built, choice: &Choice) -> Result<Model, String> {
    let egraph = &built.egraph;
    let find = |id: Id| egraph.find(id);
    let mut tuple_outputs = HashMap::new();
    for (&class, node) in &choice.chosen {
        if let Onnx::Output(slot, [tuple]) = node {
            tuple_outputs.insert((find(*tuple), *slot), class);
        }
    }
    let mut exporter = Exporter {
        egraph,
        chosen: &choice.chosen,
        origins: Origins::of(built),
        source: &source.graph,
        graph: Graph::default(),
        names: HashMap::new(),
        used_names: HashSet::new(),
        node_names: HashSet::new(),
        values: HashMap::new(),
        emitted_tuples: HashSet::new(),
        emitting: HashSet::new(),
        tensors: HashMap::new(),
        tuple_outputs,
        counter: 0,
    };
    let constant_inputs = super::build::initializer_inputs_are_constant(source);
    exporter.start_graph(constant_inputs);
    exporter.assign_names(built);

    for &output in &built.outputs {
        exporter.value_of(output)?;
    }
    let root = find(built.root);
    if let Some(Onnx::Root(children)) = choice.chosen.get(&root) {
        for &child in children.iter() {
            exporter.emit_any(child)?;
        }
    }
    exporter.finish_graph(source, built)?;
    let mut graph = exporter.graph;
    graph.rebuild_edges();
    let mut header = source.header.clone();
    if constant_inputs {
        // IR 4 lets initializers stand alone, as the rewritten graph has them.
        header.ir_version = Some(4);
    }
    Ok(Model { header, graph })
}

/// (operator with no children, first input, attribute leaf) of an operator node.
fn similarity_key(node: &Onnx) -> Option<(Onnx, Id, Id)> {
    let (op, children) = node.as_op()?;
    Some((Onnx::Op(op, Box::new([])), *children.first()?, *children.last()?))
}

impl<'a> Exporter<'a> {
    /// Graph inputs and sparse initializers keep their values and names.
    /// (With `constant_inputs`, inputs that are initializers are weights instead.)
    fn start_graph(&mut self, constant_inputs: bool) {
        for (index, value) in self.source.values.iter().enumerate() {
            let constant = constant_inputs && value.initializer.is_some();
            if matches!(value.producer, Producer::GraphInput | Producer::SparseInitializer) && !constant {
                let id = self.graph.add_value(value.clone());
                self.used_names.insert(value.name.clone());
                if value.initializer.is_some() && self.source.initializers.contains(&ValueId(index)) {
                    self.graph.initializers.push(id);
                }
            }
        }
        for io in &self.source.outputs {
            self.used_names.insert(self.source.value(io.value).name.clone());
        }
    }

    /// The class a value really comes from (approximations stand for their inner choice).
    fn resolve(&self, class: Id) -> Id {
        let mut class = self.egraph.find(class);
        while let Some(Onnx::Approx(_, [inner])) = self.chosen.get(&class) {
            class = self.egraph.find(*inner);
        }
        class
    }

    fn assign_names(&mut self, built: &Built) {
        let output_names: HashSet<String> =
            self.source.outputs.iter().map(|io| self.source.value(io.value).name.clone()).collect();
        let mut assigned: HashSet<String> = HashSet::new();
        for (class, name) in &built.value_names {
            let class = self.resolve(*class);
            let named_by_node = matches!(
                self.chosen.get(&class),
                Some(Onnx::Op(..) | Onnx::Output(..) | Onnx::Weights(..) | Onnx::Weight(_))
            );
            if !named_by_node || self.names.contains_key(&class) {
                continue;
            }
            // Graph output names are reserved for their own classes.
            let reserved_elsewhere = self.used_names.contains(name) && !output_names.contains(name);
            if reserved_elsewhere || !assigned.insert(name.clone()) {
                continue;
            }
            self.used_names.insert(name.clone());
            self.names.insert(class, name.clone());
        }
    }

    fn fresh(&mut self, base: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("{base}__pare{}", self.counter);
            if self.used_names.insert(name.clone()) {
                return name;
            }
        }
    }

    fn fresh_node_name(&mut self, op: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("pare/{op}_{}", self.counter);
            if self.node_names.insert(name.clone()) {
                return name;
            }
        }
    }

    fn name_for(&mut self, class: Id, base: &str) -> String {
        match self.names.get(&class) {
            Some(name) => name.clone(),
            None => self.fresh(base),
        }
    }

    fn chosen(&self, class: Id) -> Result<&'a Onnx, String> {
        self.chosen.get(&class).ok_or_else(|| format!("e-class {class} has no chosen node"))
    }

    /// Emits whatever a root child is (a value, or a tuple node).
    fn emit_any(&mut self, class: Id) -> Result<(), String> {
        let class = self.resolve(class);
        match self.chosen(class)? {
            Onnx::Tuple(..) => self.emit_tuple(class).map(|_| ()),
            _ => self.value_of(class).map(|_| ()),
        }
    }

    /// A value a node is about to produce (its producer is set once the node exists).
    fn add_output_value(&mut self, name: String, dtype: Option<crate::ir::DataType>) -> ValueId {
        self.graph.add_value(Value {
            name,
            dtype,
            shape: None,
            producer: Producer::GraphInput,
            initializer: None,
            declared: None,
        })
    }

    fn add_initializer(&mut self, class: Id, tensor: TensorProto, base: &str) -> ValueId {
        let name = self.name_for(class, base);
        self.graph.add_initializer(name, tensor)
    }

    /// The value a class stands for; `None` for an omitted input.
    fn value_of(&mut self, class: Id) -> Result<Option<ValueId>, String> {
        let class = self.resolve(class);
        if let Some(&value) = self.values.get(&class) {
            return Ok(Some(value));
        }
        if !self.emitting.insert(class) {
            return Err(format!("the chosen graph has a cycle through e-class {class}"));
        }
        let value = self.emit_value(class);
        self.emitting.remove(&class);
        value
    }

    /// Emits the value of a class not emitted yet (see [`Self::value_of`]).
    fn emit_value(&mut self, class: Id) -> Result<Option<ValueId>, String> {
        let value = match self.chosen(class)? {
            Onnx::Absent => return Ok(None),
            Onnx::Input(i) => {
                let name = &self.egraph.analysis.fed[*i as usize].name;
                self.graph.value_id(name).ok_or_else(|| format!("graph input '{name}' is missing"))?
            }
            Onnx::Weight(w) => {
                let entry = &self.egraph.analysis.weights[*w as usize];
                if !self.names.contains_key(&class) {
                    if let Some(name) = entry.names.iter().find(|n| !self.used_names.contains(*n)) {
                        self.used_names.insert(name.clone());
                        self.names.insert(class, name.clone());
                    }
                }
                self.add_initializer(class, entry.tensor.clone(), "const")
            }
            Onnx::Weights(function, _) => {
                let tensor = self.tensor_of(class)?;
                self.add_initializer(class, tensor, function.name())
            }
            Onnx::Op(op, children) => {
                let (inputs, attrs, implicit) = self.operands(children)?;
                let (_, op_type) = split_op(*op);
                let name = self.name_for(class, &op_type.to_lowercase());
                let value = self.add_output_value(name, self.egraph[class].data.dtype);
                let node = self.make_node(class, inputs, vec![Some(value)], attrs, implicit)?;
                self.graph.value_mut(value).producer = Producer::Node(node, 0);
                value
            }
            Onnx::Output(slot, [tuple]) => {
                let tuple = self.egraph.find(*tuple);
                self.emit_tuple(tuple)?;
                *self.values.get(&class).ok_or_else(|| format!("output {slot} of a tuple node was not emitted"))?
            }
            other => return Err(format!("e-node '{other}' is not a value")),
        };
        self.values.insert(class, value);
        Ok(Some(value))
    }

    /// Emits a multi-output node; its outputs' classes get their values.
    fn emit_tuple(&mut self, class: Id) -> Result<(), String> {
        if !self.emitted_tuples.insert(class) {
            return Ok(());
        }
        let Onnx::Tuple(op, children) = self.chosen(class)? else { return Err("not a tuple node".into()) };
        let (inputs, attrs, implicit) = self.operands(children)?;
        let (_, op_type) = split_op(*op);
        let mut outputs = Vec::new();
        let mut slot_classes = Vec::new();
        for (slot, &present) in attrs.output_slots.iter().enumerate() {
            if !present {
                outputs.push(None);
                continue;
            }
            let output_class = self.tuple_outputs.get(&(class, slot as u32)).copied();
            let name = match output_class {
                Some(c) => self.name_for(c, &op_type.to_lowercase()),
                None => self.fresh(&format!("{}_unused", op_type.to_lowercase())),
            };
            let dtype = output_class.and_then(|c| self.egraph[c].data.dtype);
            let value = self.add_output_value(name, dtype);
            outputs.push(Some(value));
            slot_classes.push((output_class, value));
        }
        let node = self.make_node(class, inputs, outputs.clone(), attrs, implicit)?;
        for (slot, value) in outputs.iter().enumerate() {
            if let Some(value) = value {
                self.graph.value_mut(*value).producer = Producer::Node(node, slot);
            }
        }
        for (output_class, value) in slot_classes {
            if let Some(c) = output_class {
                self.values.insert(c, value);
            }
        }
        Ok(())
    }

    /// An operator's inputs, attributes and implicit inputs (renamed by Identity where needed).
    fn operands(&mut self, children: &[Id]) -> Result<Operands, String> {
        let attrs_at = children
            .iter()
            .position(|&c| attrs_of(self.egraph, c).is_some())
            .ok_or("an operator without its attribute leaf")?;
        let attrs = attrs_of(self.egraph, children[attrs_at]).cloned().unwrap_or_default();
        let mut inputs = Vec::new();
        for &child in &children[..attrs_at] {
            inputs.push(self.value_of(child)?);
        }
        while matches!(inputs.last(), Some(None)) {
            inputs.pop();
        }
        let mut implicit = Vec::new();
        for (&child, wanted) in children[attrs_at + 1..].iter().zip(&attrs.implicit) {
            let value = self.value_of(child)?.ok_or("a subgraph reads an omitted value")?;
            implicit.push(self.named(value, wanted)?);
        }
        Ok((inputs, attrs, implicit))
    }

    /// A value under the given name: itself, or an Identity of it.
    fn named(&mut self, value: ValueId, wanted: &str) -> Result<ValueId, String> {
        if self.graph.value(value).name == wanted {
            return Ok(value);
        }
        if let Some(existing) = self.graph.value_id(wanted) {
            return Ok(existing); // an earlier Identity made it
        }
        let renamed = self.add_output_value(wanted.to_string(), self.graph.value(value).dtype);
        self.used_names.insert(wanted.to_string());
        let name = self.fresh_node_name("Identity");
        let node = self.graph.nodes.add_node(Node {
            name: name.clone(),
            op_type: "Identity".into(),
            domain: String::new(),
            inputs: vec![Some(value)],
            outputs: vec![Some(renamed)],
            implicit_inputs: Vec::new(),
            attributes: Vec::new(),
            passthrough: NodeProto { name: Some(name), op_type: Some("Identity".into()), ..Default::default() },
        });
        self.graph.value_mut(renamed).producer = Producer::Node(node, 0);
        Ok(renamed)
    }

    fn make_node(
        &mut self,
        class: Id,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<Option<ValueId>>,
        attrs: OpAttrs,
        implicit: Vec<ValueId>,
    ) -> Result<petgraph::stable_graph::NodeIndex, String> {
        let node = self.chosen(class)?.clone();
        let (op, _) = node.as_op().ok_or("not an operator")?;
        let (domain, op_type) = split_op(op);
        let origin = self.origins.of_node(class, &node);
        let (name, passthrough) = match origin.filter(|o| o.name.is_empty() || !self.node_names.contains(&o.name)) {
            Some(origin) => {
                self.node_names.insert(origin.name.clone());
                (origin.name.clone(), origin.passthrough.clone())
            }
            None => {
                // A node that replaces others (a fusion) takes the name of the one whose value it computes.
                let replaced = origin
                    .is_none()
                    .then(|| self.origins.of_class(class))
                    .flatten()
                    .map(|o| o.name.clone())
                    .filter(|name| !name.is_empty() && self.node_names.insert(name.clone()));
                let name = replaced.unwrap_or_else(|| self.fresh_node_name(op_type));
                let passthrough = NodeProto {
                    name: Some(name.clone()),
                    op_type: Some(op_type.to_string()),
                    domain: (!domain.is_empty()).then(|| domain.to_string()),
                    ..Default::default()
                };
                (name, passthrough)
            }
        };
        Ok(self.graph.nodes.add_node(Node {
            name,
            op_type: op_type.to_string(),
            domain: domain.to_string(),
            inputs,
            outputs,
            implicit_inputs: implicit,
            attributes: attrs.attributes,
            passthrough,
        }))
    }

    /// The tensor of a weight-only class: its constant, or its computation evaluated.
    fn tensor_of(&mut self, class: Id) -> Result<TensorProto, String> {
        let class = self.egraph.find(class);
        if let Some(tensor) = self.tensors.get(&class) {
            return Ok(tensor.clone());
        }
        if let Some(w) = self.egraph[class].data.constant {
            return Ok(self.egraph.analysis.weight(w).clone());
        }
        let Some(Onnx::Weights(function, children)) = self.chosen.get(&class) else {
            return Err(format!("e-class {class} is not a constant"));
        };
        let mut owned: Vec<Option<TensorProto>> = Vec::new();
        for &child in children.iter() {
            let child = self.egraph.find(child);
            let is_leaf = self.egraph[child].nodes.iter().any(|n| matches!(n, Onnx::Attrs(_) | Onnx::Absent));
            owned.push(if is_leaf { None } else { Some(self.tensor_of(child)?) });
        }
        let operands: Vec<Operand> = children
            .iter()
            .zip(&owned)
            .map(|(&child, tensor)| match tensor {
                Some(t) => Operand::Tensor(t),
                None => match attrs_of(self.egraph, child) {
                    Some(attrs) => Operand::Attributes(&attrs.attributes),
                    None => Operand::Absent,
                },
            })
            .collect();
        let tensor = weights::evaluate(*function, &operands).map_err(|e| e.to_string())?;
        self.tensors.insert(class, tensor.clone());
        Ok(tensor)
    }

    /// Graph outputs under their names, value_info for surviving names.
    fn finish_graph(&mut self, source: &Model, built: &Built) -> Result<(), String> {
        for (io, &class) in source.graph.outputs.iter().zip(&built.outputs) {
            let wanted = source.graph.value(io.value).name.clone();
            let value = self.value_of(class)?.ok_or("a graph output is an omitted value")?;
            let value = self.named(value, &wanted)?;
            self.graph.outputs.push(GraphIo { value, declared: io.declared.clone() });
        }
        for io in &source.graph.inputs {
            let name = &source.graph.value(io.value).name;
            // Initializers listed as inputs (IR < 4) are now plain initializers, or gone.
            let Some(value) = self.graph.value_id(name) else { continue };
            if self.graph.value(value).producer == Producer::GraphInput {
                self.graph.inputs.push(GraphIo { value, declared: io.declared.clone() });
            }
        }
        self.graph.passthrough = source.graph.passthrough.clone();
        for entry in &source.graph.value_info {
            match entry {
                ValueInfoEntry::Value(old) => {
                    let old_value = source.graph.value(*old);
                    let Some(new) = self.graph.value_id(&old_value.name) else { continue };
                    // Only a value computed by a node: the rest are declared elsewhere.
                    if matches!(self.graph.value(new).producer, Producer::Node(..)) && old_value.declared.is_some() {
                        self.graph.value_mut(new).declared = old_value.declared.clone();
                        self.graph.value_info.push(ValueInfoEntry::Value(new));
                    }
                }
                ValueInfoEntry::Orphan(declared) => {
                    self.graph.value_info.push(ValueInfoEntry::Orphan(declared.clone()))
                }
            }
        }
        Ok(())
    }
}
