//! What the e-graph knows of each e-class ([`ClassFacts`]: element type,
//! shape, whether it depends on weights only, its constant value) and the
//! side tables the leaves index: weights, attribute sets and graph-fed values.
//! Shapes come from the IR's inference when the e-graph is built; appliers
//! state the facts of the classes they create, and check shapes before adding
//! a node, so no ill-shaped node enters.

use std::collections::HashMap;

use bytes::Bytes;
use egg::{DidMerge, EGraph, Id};
use prost::Message;

use super::language::{AttrsId, Onnx, WeightId};
use crate::eval::calibrate::ActivationRange;
use crate::eval::statistics::MeanActivation;
use crate::ir::{tensor, AttributeList, DataType, Shape};
use crate::onnx::proto::{AttributeProto, TensorProto};
use crate::weights::{fold, fold::OpsetContext, Operand, WeightFn};

/// Facts about one e-class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassFacts {
    pub dtype: Option<DataType>,
    pub shape: Option<Shape>,
    /// Computable from weights alone (no graph input reaches it).
    pub weight_only: bool,
    /// Its value, when it is a known constant tensor.
    pub constant: Option<WeightId>,
    /// How many nodes (and graph outputs) read it in the input model.
    pub uses: usize,
    /// The calibrated range of its values, when calibration measured one.
    pub range: Option<ActivationRange>,
    /// Its elementwise mean on the calibration data (an index into
    /// [`Facts::means`]), when bias correction needs it.
    pub mean: Option<usize>,
}

impl ClassFacts {
    /// The shape, when every dim is known.
    pub fn static_dims(&self) -> Option<Vec<i64>> {
        self.shape.as_ref()?.as_known()
    }
}

/// A constant tensor and the initializer names it had in the input model.
#[derive(Clone, Debug)]
pub struct WeightEntry {
    pub tensor: TensorProto,
    pub names: Vec<String>,
}

/// An operator's attributes, plus the outer-scope names its subgraphs read
/// (its children after the attribute leaf, in this order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpAttrs {
    pub attributes: Vec<AttributeProto>,
    pub implicit: Vec<String>,
    /// For a tuple node: which output slots it writes (unread ones get fresh names).
    pub output_slots: Vec<bool>,
}

impl OpAttrs {
    /// A copy with one attribute replaced (or added), kept sorted by name.
    pub fn with(&self, attribute: AttributeProto) -> OpAttrs {
        let mut attributes: Vec<AttributeProto> =
            self.attributes.iter().filter(|a| a.name != attribute.name).cloned().collect();
        attributes.push(attribute);
        attributes.sort_by(|a, b| a.name.cmp(&b.name));
        OpAttrs { attributes, implicit: self.implicit.clone(), output_slots: self.output_slots.clone() }
    }
}

impl AttributeList for OpAttrs {
    fn attribute_list(&self) -> &[AttributeProto] {
        &self.attributes
    }
}

/// The layer a node added by a family stands in for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StandIn {
    /// The class of the layer's output.
    pub layer: Id,
    /// The layer's operator (the node among the class's nodes whose name it takes).
    pub op: &'static str,
}

/// A value the graph's nodes do not compute: a graph input or a sparse initializer.
#[derive(Clone, Debug)]
pub struct FedValue {
    pub name: String,
    pub dtype: Option<DataType>,
    pub shape: Option<Shape>,
}

/// The e-graph analysis: facts per class and the tables behind the leaves.
#[derive(Debug, Default)]
pub struct Facts {
    pub weights: Vec<WeightEntry>,
    pub attrs: Vec<OpAttrs>,
    pub fed: Vec<FedValue>,
    pub context: OpsetContext,
    /// Merge weights with equal type, dims and bytes (the `clean` family).
    pub deduplicate_weights: bool,
    /// The settings of each enabled compression family, by its name (its
    /// appliers read them; a family with none adds nothing).
    pub settings: std::collections::BTreeMap<&'static str, super::family::Settings>,
    /// Every alternative the compression families offered.
    pub alternatives: super::alternatives::Alternatives,
    /// Calibration means of values, as [`ClassFacts::mean`] indexes them.
    pub means: Vec<std::sync::Arc<MeanActivation>>,
    /// Second moments of layer inputs on the calibration data: the input's
    /// class (as added: look it up through `find`), how its vectors are taken
    /// ([`crate::eval::statistics::MomentVectors::key`]) and the moment.
    pub second_moments: Vec<(Id, String, std::sync::Arc<crate::eval::statistics::SecondMoment>)>,
    /// The class of each node a family added in place of a layer's node →
    /// that layer's class and the operator it had (export names the new
    /// node after it). Ids as added: look them up through `find`.
    pub stand_ins: std::collections::BTreeMap<Id, StandIn>,
    /// Classes a family marked for itself, by family (ids as added): the
    /// factors a family added, which it must not take for layers again.
    pub marks: std::collections::BTreeMap<&'static str, Vec<Id>>,
    /// The default-domain opset rewrites may raise the model to, for
    /// operators newer than its own (`None`: its own opset).
    pub target_opset: Option<i64>,
    /// Classes whose alternatives are priced by measured latencies: the
    /// classes `measured()` rules matched (ids as added: look them up
    /// through `find`).
    pub measured_classes: std::collections::BTreeSet<Id>,
    /// The classes a named applier matched by walking the e-graph itself
    /// (an any-arity rule's pattern names only its root), for `measured()`.
    pub walked: Vec<Id>,
    weight_index: HashMap<(i32, Vec<i64>, Bytes), WeightId>,
    attrs_index: HashMap<Vec<u8>, AttrsId>,
}

pub type Graph = EGraph<Onnx, Facts>;

impl Facts {
    pub fn new(context: OpsetContext, deduplicate_weights: bool) -> Facts {
        let mut facts = Facts { context, deduplicate_weights, ..Default::default() };
        facts.intern_attrs(OpAttrs::default());
        facts
    }

    /// The leaf id for a tensor; with deduplication, equal tensors share one.
    pub fn intern_weight(&mut self, tensor: TensorProto, name: Option<&str>) -> WeightId {
        let key = tensor::raw_bytes(&tensor)
            .filter(|_| self.deduplicate_weights)
            .map(|bytes| (tensor.data_type.unwrap_or(0), tensor.dims.clone(), bytes));
        if let Some(&id) = key.as_ref().and_then(|key| self.weight_index.get(key)) {
            if let Some(name) = name {
                self.weights[id as usize].names.push(name.to_string());
            }
            return id;
        }
        let id = self.weights.len() as WeightId;
        self.weights.push(WeightEntry { tensor, names: name.into_iter().map(str::to_string).collect() });
        if let Some(key) = key {
            self.weight_index.insert(key, id);
        }
        id
    }

    /// The leaf id for an attribute set (sorted by name, so order does not matter).
    pub fn intern_attrs(&mut self, mut attrs: OpAttrs) -> AttrsId {
        attrs.attributes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut key = Vec::new();
        for attribute in &attrs.attributes {
            attribute.encode_length_delimited(&mut key).expect("a Vec grows as needed");
        }
        for name in &attrs.implicit {
            key.extend_from_slice(name.as_bytes());
            key.push(0);
        }
        key.push(1);
        key.extend(attrs.output_slots.iter().map(|&slot| slot as u8));
        if let Some(&id) = self.attrs_index.get(&key) {
            return id;
        }
        let id = self.attrs.len() as AttrsId;
        self.attrs.push(attrs);
        self.attrs_index.insert(key, id);
        id
    }

    pub fn weight(&self, id: WeightId) -> &TensorProto {
        &self.weights[id as usize].tensor
    }

    /// The settings of the enabled family `family`, when they are of type `T`.
    pub fn settings_of<T: 'static>(&self, family: &str) -> Option<&T> {
        self.settings.get(family)?.0.downcast_ref::<T>()
    }
}

impl Facts {
    /// The model's default-domain opset (21 when it imports none).
    pub fn default_opset(&self) -> i64 {
        self.context
            .opset_import
            .iter()
            .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
            .and_then(|o| o.version)
            .unwrap_or(21)
    }

    /// Whether a rewrite may add a node of this (default-domain) operator:
    /// see [`crate::ir::opset::may_write`].
    pub fn may_write(&self, op_type: &str) -> bool {
        let opset = self.default_opset();
        crate::ir::opset::may_write(op_type, opset, self.target_opset.unwrap_or(opset).max(opset))
    }
}

/// The attributes behind a class holding an attribute leaf.
pub fn attrs_of(egraph: &Graph, id: Id) -> Option<&OpAttrs> {
    egraph[id].nodes.iter().find_map(|node| match node {
        Onnx::Attrs(a) => Some(&egraph.analysis.attrs[*a as usize]),
        _ => None,
    })
}

/// The constant tensor a class holds, if known.
pub fn constant_of(egraph: &Graph, id: Id) -> Option<&TensorProto> {
    egraph[id].data.constant.map(|w| egraph.analysis.weight(w))
}

/// Whether a class is the omitted-input leaf.
pub fn is_absent(egraph: &Graph, id: Id) -> bool {
    egraph[id].nodes.iter().any(|node| matches!(node, Onnx::Absent))
}

/// Runs a weight computation whose operands are all known constants, absent or attributes.
pub fn evaluate_weights(egraph: &Graph, function: WeightFn, children: &[Id]) -> Option<TensorProto> {
    let operands: Vec<Operand> = children
        .iter()
        .map(|&c| {
            if let Some(tensor) = constant_of(egraph, c) {
                Some(Operand::Tensor(tensor))
            } else if let Some(attrs) = attrs_of(egraph, c) {
                Some(Operand::Attributes(&attrs.attributes))
            } else if is_absent(egraph, c) {
                Some(Operand::Absent)
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    crate::weights::evaluate(function, &operands).ok()
}

fn tensor_facts(tensor: &TensorProto) -> (Option<DataType>, Option<Shape>) {
    (tensor::dtype(tensor), Some(Shape::known(&tensor.dims)))
}

impl egg::Analysis<Onnx> for Facts {
    type Data = ClassFacts;

    fn make(egraph: &mut Graph, enode: &Onnx, _id: Id) -> ClassFacts {
        let child = |id: &Id| &egraph[*id].data;
        match enode {
            Onnx::Weight(w) => {
                let (dtype, shape) = tensor_facts(egraph.analysis.weight(*w));
                ClassFacts { dtype, shape, weight_only: true, constant: Some(*w), ..Default::default() }
            }
            Onnx::Input(i) => {
                let fed = &egraph.analysis.fed[*i as usize];
                ClassFacts { dtype: fed.dtype, shape: fed.shape.clone(), ..Default::default() }
            }
            Onnx::Attrs(_) | Onnx::Absent => ClassFacts { weight_only: true, ..Default::default() },
            Onnx::Approx(_, [inner]) => child(inner).clone(),
            Onnx::Weights(function, children) => {
                let operands: Vec<Option<(DataType, Vec<i64>)>> =
                    children.iter().map(|c| Some((child(c).dtype?, child(c).static_dims()?))).collect();
                let result = function.result_type(&operands);
                // Computed now when every operand is known, so later rules see a constant.
                let constant =
                    evaluate_weights(egraph, *function, children).map(|t| egraph.analysis.intern_weight(t, None));
                ClassFacts {
                    dtype: result.as_ref().map(|r| r.0),
                    shape: result.map(|r| Shape::known(&r.1)),
                    weight_only: true,
                    constant,
                    ..Default::default()
                }
            }
            Onnx::Op(op, children) => {
                let weight_only = !op.as_str().starts_with("Random") && children.iter().all(|c| child(c).weight_only);
                if op.as_str() == "Constant" {
                    let tensor = children
                        .first()
                        .and_then(|&a| attrs_of(egraph, a))
                        .and_then(|attrs| fold::constant_node_tensor(&attrs.attributes));
                    if let Some(tensor) = tensor {
                        let (dtype, shape) = tensor_facts(&tensor);
                        let constant = Some(egraph.analysis.intern_weight(tensor, None));
                        return ClassFacts { dtype, shape, weight_only: true, constant, ..Default::default() };
                    }
                }
                ClassFacts { weight_only, ..Default::default() }
            }
            Onnx::Tuple(..) | Onnx::Output(..) | Onnx::Root(_) => ClassFacts::default(),
        }
    }

    fn merge(&mut self, a: &mut ClassFacts, b: ClassFacts) -> DidMerge {
        let mut changed = DidMerge(false, false);
        changed = changed | fill(&mut a.dtype, b.dtype);
        let known =
            |s: &Option<Shape>| s.as_ref().map_or(0, |s| 1 + s.0.iter().filter(|d| d.known().is_some()).count());
        match known(&a.shape).cmp(&known(&b.shape)) {
            std::cmp::Ordering::Less => {
                a.shape = b.shape;
                changed.0 = true;
            }
            std::cmp::Ordering::Greater => changed.1 = true,
            std::cmp::Ordering::Equal => {}
        }
        if !a.weight_only && b.weight_only {
            a.weight_only = true;
            changed.0 = true;
        } else if a.weight_only && !b.weight_only {
            changed.1 = true;
        }
        if b.uses > a.uses {
            a.uses = b.uses;
            changed.0 = true;
        } else if a.uses > b.uses {
            changed.1 = true;
        }
        changed = changed | fill(&mut a.constant, b.constant);
        changed = changed | fill(&mut a.range, b.range);
        changed | fill(&mut a.mean, b.mean)
    }
}

/// Merges an optional fact: `a` takes `b`'s when it has none. Says which
/// side the merged fact differs from.
fn fill<T>(a: &mut Option<T>, b: Option<T>) -> DidMerge {
    match (a.is_some(), b.is_some()) {
        (false, true) => {
            *a = b;
            DidMerge(true, false)
        }
        (true, false) => DidMerge(false, true),
        _ => DidMerge(false, false),
    }
}
