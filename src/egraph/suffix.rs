//! The suffix of a single-layer variant: the part of the model that one
//! compressed layer changes, run alone on the float model's recorded
//! activations ([`super::sensitivity`] measures each variant this way).
//!
//! A variant is the export of the float choice with one layer swapped, so it
//! shares its other nodes with the float choice's export. A value of the
//! variant is *unchanged* when the float export has a value computed the same
//! way: the same graph input, an initializer with the same type, dims and
//! data, or the output of a node with the same operator and attributes that
//! reads unchanged values (names do not count: fresh names are numbered in
//! the order an export writes them, which the swapped layer shifts). The
//! suffix is every other node on the way to a model output, cut out with
//! [`ir::submodel`]: its graph inputs are the unchanged values it reads, fed
//! from [`Activations`] recorded on the float export, and the model's graph
//! inputs it reads, fed from the probe sample. The outputs it does not reach
//! are the float export's, taken from the same recording.
//!
//! The values a suffix reads must be bit for bit those the variant computes
//! itself: a quantized layer reading a value one ulp off rounds some of its
//! elements the other way, which moves a sensitive model's output error by
//! percents. Recording a value makes it a graph output, and ONNX Runtime
//! does not fold a node whose output is one into the node after it: where
//! that changes the rounding ([`unrecordable`]: a Conv's output into the
//! residual Add it feeds) the suffix starts before the node instead, and a
//! recording whose float outputs are not bit for bit those of the plain
//! float run is not used.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::eval::NamedTensor;
use crate::ir::{self, tensor_declaration, Dim, Graph, GraphIo, Model, Producer, Shape, ValueId};
use crate::onnxruntime::{GraphOptimization, SampleOutputs};

/// The value of `float` each unchanged value of `variant` holds (see the
/// module docs); `None` when `variant` has a cycle.
fn unchanged(variant: &Graph, float: &Graph) -> Option<HashMap<ValueId, ValueId>> {
    let mut same: HashMap<ValueId, ValueId> = HashMap::new();
    // Initializers by element type, dims and data.
    let mut constants: HashMap<(Option<i32>, &[i64]), Vec<ValueId>> = HashMap::new();
    for &id in &float.initializers {
        if let Some(tensor) = &float.value(id).initializer {
            constants.entry((tensor.data_type, &tensor.dims)).or_default().push(id);
        }
    }
    let data = |graph: &Graph, id: ValueId| graph.value(id).initializer.as_ref().and_then(ir::tensor::raw_bytes);
    for (index, value) in variant.values.iter().enumerate() {
        let id = ValueId(index);
        let found = match (&value.producer, &value.initializer) {
            (Producer::GraphInput, _) => {
                float.value_id(&value.name).filter(|&f| float.value(f).producer == Producer::GraphInput)
            }
            (Producer::Initializer, Some(tensor)) => {
                let candidates = constants.get(&(tensor.data_type, tensor.dims.as_slice()));
                let bytes = data(variant, id);
                candidates.into_iter().flatten().copied().find(|&f| bytes.is_some() && data(float, f) == bytes)
            }
            _ => None,
        };
        if let Some(found) = found {
            same.insert(id, found);
        }
    }
    // Nodes by operator and the values they read, then compared by attributes.
    type Reads = (String, String, Vec<Option<ValueId>>, Vec<ValueId>);
    let mut nodes: HashMap<Reads, Vec<petgraph::stable_graph::NodeIndex>> = HashMap::new();
    for index in float.nodes.node_indices() {
        let node = float.node(index);
        let key = (node.op_type.clone(), node.domain.clone(), node.inputs.clone(), node.implicit_inputs.clone());
        nodes.entry(key).or_default().push(index);
    }
    for index in variant.topological_order().ok()? {
        let node = variant.node(index);
        let inputs: Option<Vec<Option<ValueId>>> =
            node.inputs.iter().map(|input| input.map_or(Some(None), |v| same.get(&v).copied().map(Some))).collect();
        let implicit: Option<Vec<ValueId>> = node.implicit_inputs.iter().map(|v| same.get(v).copied()).collect();
        let (Some(inputs), Some(implicit)) = (inputs, implicit) else { continue };
        let key = (node.op_type.clone(), node.domain.clone(), inputs, implicit);
        let twin = nodes.get(&key).into_iter().flatten().map(|&f| float.node(f)).find(|other| {
            other.attributes == node.attributes
                && other.passthrough.overload == node.passthrough.overload
                && other.outputs.len() == node.outputs.len()
        });
        if let Some(twin) = twin {
            for (output, other) in node.outputs.iter().zip(&twin.outputs) {
                if let (Some(output), Some(other)) = (output, other) {
                    same.insert(*output, *other);
                }
            }
        }
    }
    Some(same)
}

/// Values of `float` a recording would change: a layer's (Conv,
/// ConvTranspose, Gemm, MatMul) output that only one Add, Sub, Mul, Div or
/// BatchNormalization reads, which ONNX Runtime folds into the layer (a
/// residual sum accumulated in the convolution, a bias) unless the output
/// is a graph output, and folded it rounds otherwise. (A recording that
/// changes the float outputs all the same is refused: [`Activations::record`].)
fn unrecordable(float: &Graph) -> HashSet<ValueId> {
    let mut readers: HashMap<ValueId, BTreeSet<petgraph::stable_graph::NodeIndex>> = HashMap::new();
    for index in float.nodes.node_indices() {
        let node = float.node(index);
        for &value in node.inputs.iter().flatten().chain(&node.implicit_inputs) {
            readers.entry(value).or_default().insert(index);
        }
    }
    let outputs: HashSet<ValueId> = float.outputs.iter().map(|io| io.value).collect();
    let layer = |value: ValueId| {
        let producer = float.producer_node(value).map(|node| float.node(node).op_type.as_str());
        matches!(producer, Some("Conv" | "ConvTranspose" | "Gemm" | "MatMul"))
    };
    let folded = |readers: &BTreeSet<_>| match readers.iter().collect::<Vec<_>>()[..] {
        [&reader] => {
            matches!(float.node(reader).op_type.as_str(), "Add" | "Sub" | "Mul" | "Div" | "BatchNormalization")
        }
        _ => false,
    };
    readers
        .into_iter()
        .filter(|(value, readers)| !outputs.contains(value) && layer(*value) && folded(readers))
        .map(|(value, _)| value)
        .collect()
}

/// What the suffix computing `outputs` reads from before it, walking back
/// through the nodes that compute other values than `cut`: the values of
/// `cut` nodes produce and the graph inputs, in value order. (Initializers
/// are copied into the suffix.)
fn suffix_inputs(graph: &Graph, cut: impl Fn(ValueId) -> bool, outputs: &[ValueId]) -> BTreeSet<ValueId> {
    let mut inputs = BTreeSet::new();
    let mut visited = HashSet::new();
    let mut pending = outputs.to_vec();
    while let Some(value) = pending.pop() {
        match graph.value(value).producer {
            Producer::Node(node, _) if !cut(value) => {
                if visited.insert(node) {
                    let node = graph.node(node);
                    pending.extend(node.inputs.iter().flatten().chain(&node.implicit_inputs));
                }
            }
            Producer::Node(..) | Producer::GraphInput => {
                inputs.insert(value);
            }
            Producer::Initializer | Producer::SparseInitializer => {}
        }
    }
    inputs
}

/// The float export's values on each probe sample, by name: its outputs and
/// the activations suffixes read.
pub struct Activations {
    samples: Vec<HashMap<String, NamedTensor>>,
}

impl Activations {
    /// Runs `float` once on every probe sample (in ONNX Runtime, all graph
    /// optimizations, as the variants run) with `values` as extra outputs;
    /// fails unless its outputs are bit for bit `plain`, its run without them.
    pub fn record(
        float: &Model,
        values: &BTreeSet<String>,
        probe: &[Vec<NamedTensor>],
        plain: &SampleOutputs,
    ) -> Result<Activations, String> {
        let mut recording = float.clone();
        let graph = &mut recording.graph;
        let mut outputs: BTreeSet<ValueId> = graph.outputs.iter().map(|io| io.value).collect();
        for name in values {
            let Some(id) = graph.value_id(name).filter(|&id| outputs.insert(id)) else { continue };
            let Some(dtype) = graph.value(id).dtype else { continue };
            graph.outputs.push(GraphIo { value: id, declared: tensor_declaration(name, dtype, None) });
        }
        let label = std::path::Path::new("the float model's activations");
        let runs = crate::onnxruntime::owned_outputs(recording, label, GraphOptimization::All, probe)?;
        let same = |(run, plain): (&Vec<NamedTensor>, &Vec<NamedTensor>)| run.get(..plain.len()) == Some(plain);
        if runs.len() != plain.len() || !runs.iter().zip(plain).all(same) {
            return Err("recording the activations changed the float outputs".into());
        }
        let samples = runs.into_iter().map(|run| run.into_iter().map(|t| (t.name.clone(), t)).collect()).collect();
        Ok(Activations { samples })
    }

    /// The declaration of a recorded value as the graph input `name`: its
    /// element type, and its shape with the dimensions that differ between
    /// samples left symbolic.
    fn declaration(&self, recorded: &str, name: &str) -> Option<crate::onnx::proto::ValueInfoProto> {
        let tensors: Vec<&NamedTensor> =
            self.samples.iter().map(|sample| sample.get(recorded)).collect::<Option<_>>()?;
        let first = tensors.first()?.tensor.shape();
        let dims = (0..first.len())
            .map(|axis| match tensors.iter().all(|t| t.tensor.shape().get(axis) == Some(&first[axis])) {
                true => Dim::Known(first[axis] as i64),
                false => Dim::Symbol(format!("{name}_{axis}")),
            })
            .collect();
        Some(tensor_declaration(name, tensors[0].tensor.dtype()?, Some(&Shape(dims))))
    }
}

/// Bytes that `float`'s values take over all probe samples, by name, as
/// inferred at each input's largest shape among the samples (values whose
/// size inference leaves open are missing).
pub fn value_bytes(float: &Model, probe: &[Vec<NamedTensor>]) -> HashMap<String, u64> {
    let mut largest: HashMap<&str, Vec<i64>> = HashMap::new();
    for tensor in probe.iter().flatten() {
        let shape: Vec<i64> = tensor.tensor.shape().iter().map(|&d| d as i64).collect();
        let dims = largest.entry(&tensor.name).or_insert_with(|| shape.clone());
        if dims.len() == shape.len() {
            dims.iter_mut().zip(&shape).for_each(|(d, s)| *d = (*d).max(*s));
        }
    }
    let fixed: Vec<(String, Vec<i64>)> = largest.into_iter().map(|(name, dims)| (name.to_string(), dims)).collect();
    let mut inferred = float.clone();
    if ir::infer::infer(&mut inferred, &fixed).is_err() {
        return HashMap::new();
    }
    let samples = probe.len() as u64;
    inferred
        .graph
        .values
        .iter()
        .filter_map(|value| {
            let bytes = value.dtype?.byte_size(value.shape.as_ref()?.element_count()?)?;
            Some((value.name.clone(), bytes * samples))
        })
        .collect()
}

/// One of the variant's outputs.
enum Output {
    /// Computed by the suffix, under this name.
    Computed(String),
    /// Unchanged: the float export's value of this name.
    Recorded(String),
}

/// A variant cut to its suffix.
pub struct Suffix {
    /// The suffix as a model of its own.
    model: Model,
    /// Its graph inputs fed from the recorded activations: the name of the
    /// float export's value by the input's name (the others are the
    /// variant's graph inputs, fed from the probe sample).
    recorded: HashMap<String, String>,
    /// The variant's outputs, in order.
    outputs: Vec<Output>,
}

impl Suffix {
    /// `variant`'s suffix against `float` (their exports of the same
    /// e-graph); `None` when the variant changes no output or cannot be cut.
    pub fn of(variant: &Model, float: &Model) -> Option<Suffix> {
        let graph = &variant.graph;
        let unchanged = unchanged(graph, &float.graph)?;
        let float_name = |value: &ValueId| float.graph.value(unchanged[value]).name.clone();
        let changed: Vec<ValueId> =
            graph.outputs.iter().map(|io| io.value).filter(|value| !unchanged.contains_key(value)).collect();
        if changed.is_empty() {
            return None;
        }
        let unrecordable = unrecordable(&float.graph);
        let cut = |value: ValueId| unchanged.get(&value).is_some_and(|f| !unrecordable.contains(f));
        let inputs: Vec<ValueId> = suffix_inputs(graph, cut, &changed).into_iter().collect();
        let recorded = inputs
            .iter()
            .filter(|&&value| matches!(graph.value(value).producer, Producer::Node(..)))
            .map(|value| (graph.value(*value).name.clone(), float_name(value)))
            .collect();
        let outputs = graph
            .outputs
            .iter()
            .map(|io| match unchanged.contains_key(&io.value) {
                true => Output::Recorded(float_name(&io.value)),
                false => Output::Computed(graph.value(io.value).name.clone()),
            })
            .collect();
        Some(Suffix { model: ir::submodel(variant, &inputs, &changed)?, recorded, outputs })
    }

    /// The float export's values the variant's outputs take from the
    /// recording: the activations the suffix reads, the outputs it does not compute.
    pub fn reads(&self) -> impl Iterator<Item = &String> {
        let outputs = self.outputs.iter().filter_map(|output| match output {
            Output::Recorded(name) => Some(name),
            Output::Computed(_) => None,
        });
        self.recorded.values().chain(outputs)
    }

    /// The variant's outputs on every probe sample: the suffix's, run in ONNX
    /// Runtime with all graph optimizations on the recorded `activations`,
    /// and the recorded float outputs it does not compute.
    pub fn outputs(
        mut self,
        activations: &Activations,
        probe: &[Vec<NamedTensor>],
        label: &std::path::Path,
    ) -> Result<SampleOutputs, String> {
        let missing = |name: &str| format!("no recorded value '{name}'");
        let graph = &mut self.model.graph;
        for io in &mut graph.inputs {
            let name = &graph.values[io.value.0].name;
            if let Some(recorded) = self.recorded.get(name) {
                io.declared = activations.declaration(recorded, name).ok_or_else(|| missing(recorded))?;
            }
        }
        let feeds = probe
            .iter()
            .zip(&activations.samples)
            .map(|(sample, values)| {
                graph
                    .inputs
                    .iter()
                    .map(|io| {
                        let name = &graph.values[io.value.0].name;
                        let fed = match self.recorded.get(name) {
                            Some(recorded) => values.get(recorded).map(|t| NamedTensor::new(name, t.tensor.clone())),
                            None => sample.iter().find(|tensor| &tensor.name == name).cloned(),
                        };
                        fed.ok_or_else(|| missing(name))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .collect::<Result<Vec<_>, String>>()?;
        let runs = crate::onnxruntime::owned_outputs(self.model, label, GraphOptimization::All, &feeds)?;
        runs.into_iter()
            .zip(&activations.samples)
            .map(|(run, values)| {
                let mut computed: HashMap<String, NamedTensor> = run.into_iter().map(|t| (t.name.clone(), t)).collect();
                self.outputs
                    .iter()
                    .map(|output| match output {
                        Output::Computed(name) => computed.remove(name).ok_or_else(|| format!("no output '{name}'")),
                        Output::Recorded(name) => values.get(name).cloned().ok_or_else(|| missing(name)),
                    })
                    .collect()
            })
            .collect()
    }
}
