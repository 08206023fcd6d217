//! Measured layer sensitivity: how far the model output moves when one
//! layer alone takes its compressed form. The e-graph is saturated once with
//! the enabled compression families' rules; then, per layer, the extraction
//! that keeps every other layer float is written out as runtimes take it
//! (each family lowers its forms) and run in ONNX Runtime (all graph
//! optimizations, so the deployment runtime's real kernels) on the
//! calibration probe, against the float model. The relative L2 distance
//! becomes the error of that layer's alternatives (it replaces the family's
//! estimate), so extraction under `--budget` keeps the layers the output is
//! sensitive to in float.

use std::collections::{BTreeMap, HashMap, HashSet};

use egg::{Id, Language};
use prost::Message;
use serde::Serialize;

use super::alternatives::{approximation_of, Approximation};
use super::analysis::Graph;
use super::extract::{self, Choice, NodeCosts};
use super::language::Onnx;
use super::{export, saturate, Compression, EgraphError, Options};
use crate::eval::{runs_relative_l2, NamedTensor};
use crate::ir::{self, DataType, Model};
use crate::onnxruntime::{GraphOptimization, OrtSession};

/// The error charged to a layer whose single-layer variant ONNX Runtime
/// could not run: as if it destroyed the output.
const UNRUNNABLE_ERROR: f64 = 1.0;

/// Memory the single-layer variants measured side by side may hold together
/// (VGG-19's 0.57 GB of weights: three at once).
const SIDE_BY_SIDE_BYTES: u64 = 6 << 30;

/// One layer's measured sensitivity.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerSensitivity {
    /// The layer's output value.
    pub value: String,
    /// The alternative measured: its family's details (form, rank, ...).
    pub alternative: serde_json::Value,
    /// Relative L2 distance of the model outputs from the float model's.
    pub error: f64,
    /// Why ONNX Runtime could not run the variant, when it could not.
    pub failure: Option<String>,
    /// The keys its error is kept under, one per value name of the layer.
    #[serde(skip)]
    pub keys: Vec<String>,
}

/// What [`measure`] found.
#[derive(Clone, Debug, Default)]
pub struct Sensitivities {
    /// Per layer, in class order.
    pub layers: Vec<LayerSensitivity>,
    /// The measured errors by [`super::alternatives::measured_key`], as
    /// [`super::Compression::measured_errors`] takes them.
    pub by_alternative: BTreeMap<String, f64>,
}

/// Measures every layer that has a compressed alternative, in class order.
/// `options` must carry the compression settings and statistics; `probe` the samples.
pub fn measure(model: &Model, options: &Options, probe: &[Vec<NamedTensor>]) -> Result<Sensitivities, EgraphError> {
    let mut options = options.clone();
    let Some(compression) = options.compression.as_mut() else { return Ok(Sensitivities::default()) };
    compression.measured_errors.clear();
    let compression = compression.clone();
    let saturated = saturate(model, &options)?;
    let built = &saturated.built;
    let egraph = &built.egraph;

    let mut names: BTreeMap<Id, Vec<&str>> = BTreeMap::new();
    for (class, name) in &built.value_names {
        names.entry(egraph.find(*class)).or_default().push(name);
    }
    let layers: Vec<Id> = names
        .keys()
        .copied()
        .filter(|&class| egraph[class].data.dtype == Some(DataType::Float))
        .filter(|&class| egraph[class].nodes.iter().any(|node| compression.is_layer_alternative(egraph, node)))
        .collect();

    let label = "the float model";
    let failed = |what: &str, reason: String| EgraphError::Sensitivity(format!("{what}: {reason}"));
    let float = ir::export(model.clone()).map_err(|e| failed(label, e.to_string()))?;
    let mut reference = OrtSession::from_bytes(&float.encode_to_vec(), label.as_ref(), GraphOptimization::All)
        .map_err(|e| failed(label, e.to_string()))?;
    let expected = probe
        .iter()
        .map(|sample| reference.run(sample).map_err(|e| failed(label, e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;

    // Every other layer stays as the float extraction has it.
    let mut costs = NodeCosts::new(egraph, &options.profile, options.objective, None);
    costs.prefer(|_, node| !compression.offers(egraph, node));
    let float_choice = extract::extract(&costs, egraph, built.root, f64::INFINITY)?;
    // A class the float graph does not use (fused into another) is no layer of it.
    // Each alternative of each layer the float graph uses (a class fused
    // into another is no layer of it), measured alone.
    let variants: Vec<(Id, Approximation, Choice)> = layers
        .into_iter()
        .filter(|class| float_choice.chosen.contains_key(class))
        .flat_map(|class| {
            let float_choice = &float_choice;
            let compression = &compression;
            alternatives_of(egraph, compression, class).into_iter().filter_map(move |(approximation, node)| {
                Some((class, approximation, with_alternative(egraph, compression, float_choice, class, node)?))
            })
        })
        .collect();
    let measure_variant = |(class, approximation, choice): &(Id, Approximation, Choice)| {
        let value = names[class][0].to_string();
        let record = egraph.analysis.alternatives.get(*approximation);
        let alternative = record.map_or(serde_json::Value::Null, |r| r.details.clone());
        let keys: Vec<String> = record
            .map(|r| names[class].iter().map(|name| super::alternatives::measured_key(name, r)).collect())
            .unwrap_or_default();
        let run = export::export(model, built, choice)
            .map_err(|e| e.to_string())
            .and_then(|mut variant| {
                super::raise_opset_for_written_operators(&mut variant).map(|_| variant).map_err(|e| e.to_string())
            })
            .and_then(|mut variant| {
                compression.enabled.iter().try_for_each(|e| e.family.lower(&mut variant)).map(|_| variant)
            })
            .and_then(|variant| ir::export(variant).map_err(|e| e.to_string()))
            .and_then(|proto| {
                let mut session =
                    OrtSession::from_bytes(&proto.encode_to_vec(), value.as_ref(), GraphOptimization::All)
                        .map_err(|e| e.to_string())?;
                probe.iter().map(|sample| session.run(sample).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()
            });
        match run {
            Ok(outputs) => {
                let pairs: Vec<_> = outputs.into_iter().zip(expected.iter().cloned()).collect();
                LayerSensitivity { value, alternative, error: runs_relative_l2(&pairs), failure: None, keys }
            }
            Err(reason) => {
                LayerSensitivity { value, alternative, error: UNRUNNABLE_ERROR, failure: Some(reason), keys }
            }
        }
    };
    // Each variant holds about three copies of the weights at once (the
    // exported model, its encoding, ONNX Runtime's session).
    let variant_bytes = 3 * crate::inspect::inspect(model).weight_bytes.max(1);
    let side_by_side = usize::try_from(SIDE_BY_SIDE_BYTES / variant_bytes).unwrap_or(usize::MAX).max(1);
    let mut measured = Sensitivities::default();
    let sensitivities = crate::parallel::side_by_side(&variants, side_by_side, measure_variant);
    for layer in sensitivities {
        measured.by_alternative.extend(layer.keys.iter().map(|key| (key.clone(), layer.error)));
        measured.layers.push(layer);
    }
    Ok(measured)
}

/// The distinct alternatives of `layer`'s class, each with the e-node to
/// measure it by: the one that is not an approximation itself when there
/// are two (a Gemm's QGemm with a quantized output, beside the one
/// returning float, whose error is the smaller).
fn alternatives_of<'a>(egraph: &'a Graph, compression: &Compression, layer: Id) -> Vec<(Approximation, &'a Onnx)> {
    let mut found: Vec<(Approximation, &Onnx)> = Vec::new();
    for node in egraph[layer].nodes.iter().filter(|node| compression.is_layer_alternative(egraph, node)) {
        let Some(approximation) = approximation_of(egraph, node) else { continue };
        match found.iter_mut().find(|(a, _)| *a == approximation) {
            Some(entry) if matches!(entry.1, Onnx::Approx(..)) && !matches!(node, Onnx::Approx(..)) => entry.1 = node,
            Some(_) => {}
            None => found.push((approximation, node)),
        }
    }
    found
}

/// The float choice with `node` (an alternative of `layer`) chosen instead,
/// and the classes that alternative adds chosen in float form (a quantized
/// input read through a QuantizeLinear, not another layer's integer output).
fn with_alternative(
    egraph: &Graph,
    compression: &Compression,
    float: &Choice,
    layer: Id,
    node: &Onnx,
) -> Option<Choice> {
    let mut choice = float.clone();
    let mut visiting = HashSet::from([layer]);
    let mut pending = vec![(layer, node)];
    // The alternative and the approximation it reads (a DequantizeLinear's
    // integer input), whose classes may also hold other spellings.
    while let Some((class, node)) = pending.pop() {
        choice.chosen.insert(class, node.clone().map_children(|c| egraph.find(c)));
        visiting.insert(class);
        for (i, &child) in node.children().iter().enumerate() {
            let child = egraph.find(child);
            let approx = egraph[child].nodes.iter().find(|n| matches!(n, Onnx::Approx(..)));
            match approx {
                Some(approx) if i == 0 && !matches!(node, Onnx::Approx(..)) => pending.push((child, approx)),
                _ => choose_float(egraph, compression, &mut choice.chosen, child, &mut visiting, NEW_CLASS_DEPTH)?,
            }
        }
    }
    Some(choice)
}

/// How deep the classes a compressed alternative adds go before they reach
/// the float graph (wrapper, integer node, quantized input, its parameters).
const NEW_CLASS_DEPTH: usize = 6;

/// Chooses a node for `class` (and its children, at most `depth` deep) when
/// it has none: the first that is no quantized alternative and closes no
/// cycle (the wrapper of an integer node, the one node of its class, is
/// taken as it is).
fn choose_float(
    egraph: &Graph,
    compression: &Compression,
    chosen: &mut HashMap<Id, Onnx>,
    class: Id,
    visiting: &mut HashSet<Id>,
    depth: usize,
) -> Option<()> {
    if visiting.contains(&class) {
        return None;
    }
    if chosen.contains_key(&class) {
        return Some(());
    }
    if depth == 0 {
        return None;
    }
    visiting.insert(class);
    let only = egraph[class].nodes.len() == 1;
    for node in &egraph[class].nodes {
        if !only && compression.offers(egraph, node) {
            continue;
        }
        let mut trial = chosen.clone();
        let fits = node.children().iter().all(|&child| {
            choose_float(egraph, compression, &mut trial, egraph.find(child), visiting, depth - 1).is_some()
        });
        if fits {
            *chosen = trial;
            chosen.insert(class, node.clone().map_children(|c| egraph.find(c)));
            visiting.remove(&class);
            return Some(());
        }
    }
    visiting.remove(&class);
    None
}
