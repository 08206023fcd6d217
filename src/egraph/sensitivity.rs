//! Measured layer sensitivity: how far the model output moves when one
//! layer alone takes its compressed form. The e-graph is saturated once with
//! the enabled compression families' rules; then, per layer and alternative,
//! the extraction that keeps every other layer float (a variant) is written
//! out as runtimes take it (each family lowers its forms) and run in ONNX
//! Runtime (all graph optimizations, so the deployment runtime's real
//! kernels) on the calibration probe, against the float model's outputs. The
//! relative L2 distance becomes the error of that alternative (it replaces
//! the family's estimate), so extraction under `--budget` keeps the layers
//! the output is sensitive to in float.
//!
//! Only a variant's suffix runs ([`super::suffix`]): the nodes its layer
//! changes and everything after them, fed the float activations recorded by
//! one run of the float choice's export (whose value names the variants
//! share), which also gives the outputs the suffix does not reach. Variants
//! are measured in consecutive runs whose suffixes read at most
//! [`RECORDED_BYTES`] of activations together, one recording each; a variant
//! that cannot be cut runs whole. The errors equal the whole runs' up to
//! float noise: ONNX Runtime fuses differently across the cut (a residual
//! Add fed from outside is not folded into the Conv before it), which moves
//! outputs by an ulp and the errors by about 1e-5 of themselves.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use egg::{Id, Language};
use serde::Serialize;

use super::alternatives::{approximation_of, Approximation};
use super::analysis::Graph;
use super::extract::{self, Choice, NodeCosts};
use super::language::Onnx;
use super::suffix::{self, Activations, Suffix};
use super::{export, saturate, Compression, EgraphError, Options};
use crate::eval::{runs_relative_l2, NamedTensor};
use crate::ir::{DataType, Model};
use crate::onnxruntime::GraphOptimization;

/// The error charged to a layer whose single-layer variant ONNX Runtime
/// could not run: as if it destroyed the output.
const UNRUNNABLE_ERROR: f64 = 1.0;

/// Float activations recorded for the variants' suffixes at once, over all
/// probe samples (as estimated from the shapes inferred at the probe's
/// largest input shapes): the variants are measured in runs whose suffixes
/// read at most this much together, or one variant whose reads alone are
/// more. Only the values suffixes read are kept.
const RECORDED_BYTES: u64 = 2 << 30;

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
    /// Whether it ran cut to its suffix (else whole).
    #[serde(skip)]
    pub suffix: bool,
    /// Its cost beside the layer's, as the extraction that chose with this
    /// error priced them (filled in by the pipeline).
    pub cost: Option<super::alternative_costs::AlternativeCost>,
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
    measure_with(model, options, probe, Runs::Suffixes)
}

/// How the single-layer variants run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runs {
    /// Cut to their suffixes where they can be, else whole.
    Suffixes,
    /// Whole (the suffixes' reference in tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Whole,
}

/// [`measure`], the variants run as `runs` says.
fn measure_with(
    model: &Model,
    options: &Options,
    probe: &[Vec<NamedTensor>],
    runs: Runs,
) -> Result<Sensitivities, EgraphError> {
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

    let label = Path::new("the float model");
    let failed = |reason: String| EgraphError::Sensitivity(format!("{}: {reason}", label.display()));
    let expected = crate::onnxruntime::outputs(model, label, GraphOptimization::All, probe).map_err(failed)?;

    // Every other layer stays as the float extraction has it.
    let mut costs = NodeCosts::new(egraph, &options.profile, options.objective, None);
    costs.prefer(|_, node| !compression.offers(egraph, node));
    let float_choice = extract::extract(&costs, egraph, built.root, f64::INFINITY)?;
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
    // The variants and the float choice, written as runtimes take them.
    let written = |choice: &Choice| -> Result<Model, String> {
        let mut written = export::export(model, built, choice)?;
        super::raise_opset_for_written_operators(&mut written).map_err(|e| e.to_string())?;
        compression.enabled.iter().try_for_each(|e| e.family.lower(&mut written))?;
        Ok(written)
    };
    // The float choice's export names its values as the variants do, so
    // its activations feed their suffixes.
    let float = written(&float_choice).ok().filter(|_| runs == Runs::Suffixes);
    let float_outputs = float.as_ref().and_then(|float| {
        crate::onnxruntime::outputs(float, Path::new("the float choice"), GraphOptimization::All, probe).ok()
    });
    let measure_variant = |(class, approximation, choice): &(Id, Approximation, Choice),
                           activations: Option<&Activations>| {
        let value = names[class][0].to_string();
        let record = egraph.analysis.alternatives.get(*approximation);
        let alternative = record.map_or(serde_json::Value::Null, |r| r.details.clone());
        let keys: Vec<String> = record
            .map(|r| names[class].iter().map(|name| super::alternatives::measured_key(name, r)).collect())
            .unwrap_or_default();
        let label = Path::new(&value);
        let mut ran_suffix = false;
        let run = written(choice).and_then(|variant| {
            let cut = float.as_ref().and_then(|float| Suffix::of(&variant, float));
            match cut.zip(activations).and_then(|(cut, activations)| cut.outputs(activations, probe, label).ok()) {
                Some(outputs) => {
                    ran_suffix = true;
                    Ok(outputs)
                }
                None => crate::onnxruntime::owned_outputs(variant, label, GraphOptimization::All, probe),
            }
        });
        let (error, failure) = match run {
            Ok(outputs) => {
                (runs_relative_l2(&outputs.into_iter().zip(expected.iter().cloned()).collect::<Vec<_>>()), None)
            }
            Err(reason) => (UNRUNNABLE_ERROR, Some(reason)),
        };
        LayerSensitivity { value, alternative, error, failure, keys, suffix: ran_suffix, cost: None }
    };
    // Each variant holds about three copies of the weights at once (the
    // exported model, its encoding, ONNX Runtime's session).
    let variant_bytes = 3 * crate::inspect::inspect(model).weight_bytes.max(1);
    let side_by_side = usize::try_from(SIDE_BY_SIDE_BYTES / variant_bytes).unwrap_or(usize::MAX).max(1);
    // What each variant's suffix reads from the float export's recording.
    let reads = crate::parallel::side_by_side(&variants, side_by_side, |(_, _, choice)| -> Vec<String> {
        let cut = float.as_ref().zip(written(choice).ok()).and_then(|(float, variant)| Suffix::of(&variant, float));
        cut.map_or_else(Vec::new, |cut| cut.reads().cloned().collect())
    });
    let bytes = float.as_ref().map_or_else(HashMap::new, |float| suffix::value_bytes(float, probe));
    let mut measured = Sensitivities::default();
    for (chunk, values) in chunks(&reads, &bytes, RECORDED_BYTES) {
        let activations = float
            .as_ref()
            .zip(float_outputs.as_ref())
            .and_then(|(float, plain)| Activations::record(float, &values, probe, plain).ok());
        let chunk = &variants[chunk];
        for layer in crate::parallel::side_by_side(chunk, side_by_side, |v| measure_variant(v, activations.as_ref())) {
            measured.by_alternative.extend(layer.keys.iter().map(|key| (key.clone(), layer.error)));
            measured.layers.push(layer);
        }
    }
    Ok(measured)
}

/// Consecutive runs of variants (`reads`: the float activations each one's
/// suffix reads) whose reads together take at most `limit` bytes (`bytes`;
/// a value of unknown size counts as the largest known), each with those
/// reads; a variant whose reads alone are more is a run of its own.
fn chunks(
    reads: &[Vec<String>],
    bytes: &HashMap<String, u64>,
    limit: u64,
) -> Vec<(std::ops::Range<usize>, BTreeSet<String>)> {
    let largest = bytes.values().copied().max().unwrap_or(0);
    let mut chunks: Vec<(std::ops::Range<usize>, BTreeSet<String>)> = Vec::new();
    let mut held = 0;
    for (index, read) in reads.iter().enumerate() {
        let added = |values: &BTreeSet<String>| -> u64 {
            let new: BTreeSet<&String> = read.iter().filter(|value| !values.contains(*value)).collect();
            new.into_iter().map(|value| bytes.get(value).copied().unwrap_or(largest)).sum()
        };
        match chunks.last_mut() {
            Some((range, values)) if held + added(values) <= limit => {
                held += added(values);
                range.end = index + 1;
                values.extend(read.iter().cloned());
            }
            _ => {
                held = added(&BTreeSet::new());
                chunks.push((index..index + 1, read.iter().cloned().collect()));
            }
        }
    }
    chunks
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{DeviceProfile, Objective};
    use crate::families::quantize;
    use crate::ir::{tensor_declaration, GraphIo};
    use crate::pipeline;

    /// The golden residual block (two outputs: the pooled features and the
    /// logits), and the same with its first block's sum as a third output,
    /// which the layers after it leave as the float model has it.
    fn residual_blocks() -> Vec<Model> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/resnet_block_op13/model.onnx");
        let model = pipeline::load(&path, &[("images".into(), vec![1, 3, 32, 32])]).unwrap().model;
        let mut three = model.clone();
        let graph = &mut three.graph;
        let sum = graph.value_id("add_32").unwrap();
        let declared = tensor_declaration("add_32", DataType::Float, graph.value(sum).shape.as_ref());
        graph.outputs.push(GraphIo { value: sum, declared });
        vec![model, three]
    }

    /// Options that quantize every layer that can be (uint8 activations,
    /// per-channel int8 weights) after calibration on seeded random inputs,
    /// and the probe samples.
    fn quantization(model: &Model) -> (Options, Vec<Vec<NamedTensor>>) {
        let settings = quantize::QuantSettings {
            mode: quantize::QuantMode::Static,
            activations: quantize::ActivationType::Uint8,
            per_channel: true,
            reduced_range: false,
            weight_bits: 8,
            block_size: None,
            unsigned_weights: false,
            bias_correction: false,
            check_saturation: false,
        };
        let enabled = crate::families::Enabled {
            family: &quantize::Quantize,
            settings: crate::families::Settings(std::sync::Arc::new(settings)),
            forced: false,
        };
        let request = enabled.family.statistics(&enabled, model);
        let source = pipeline::CalibrationSource::Random { count: 8, seed: 7 };
        let fixed = [("images".to_string(), vec![1, 3, 32, 32])];
        let method = crate::eval::calibrate::RangeMethod::MinMax;
        let path = std::path::Path::new("resnet_block_op13");
        let calibrated = pipeline::calibrate(model, path, &fixed, &source, method, &request).unwrap();
        let compression = Compression {
            enabled: vec![enabled],
            ranges: calibrated.calibration.ranges,
            means: calibrated.calibration.means,
            second_moments: calibrated.calibration.second_moments,
            calibration: None,
            measure: false,
            probe: calibrated.probe.clone(),
            measured_errors: Default::default(),
            representative: Vec::new(),
            cost_cache: crate::cost::cache::CostCache::in_memory(String::new()).shared(),
            exclude: Vec::new(),
            pinned: None,
        };
        let options = Options {
            families: super::super::rules::families(&[&quantize::Quantize]).map(|(f, _)| f.to_string()).collect(),
            user_rules: Vec::new(),
            limits: super::super::Limits::default(),
            objective: Objective::Latency,
            profile: DeviceProfile::shipped("x86-avx2").unwrap(),
            budget: 0.05,
            target_opset: Some(22),
            compression: Some(compression),
            measured: None,
        };
        (options, calibrated.probe)
    }

    /// Every layer's alternatives measured on their suffixes (fed the
    /// recorded float activations) come out as measured on the whole
    /// variants: the second Conv of each block reads its block's input
    /// again at the residual Add, the Gemm leaves the features output
    /// untouched, and so do the second block's layers the first block's sum.
    #[test]
    fn suffixes_measure_what_whole_variants_do() {
        for model in residual_blocks() {
            let (options, probe) = quantization(&model);
            assert_eq!(probe.len(), 4);
            let suffixes = measure_with(&model, &options, &probe, Runs::Suffixes).unwrap();
            let whole = measure_with(&model, &options, &probe, Runs::Whole).unwrap();
            // Six Conv (BatchNormalization folded), two Add and the Gemm.
            assert_eq!(suffixes.layers.len(), 9, "{:?}", suffixes.layers);
            assert_eq!(whole.layers.len(), 9);
            for (cut, whole) in suffixes.layers.iter().zip(&whole.layers) {
                assert_eq!((&cut.value, &cut.alternative), (&whole.value, &whole.alternative));
                assert!(cut.suffix && !whole.suffix, "{cut:?}");
                assert!(cut.failure.is_none() && whole.failure.is_none(), "{cut:?} {whole:?}");
                assert!(whole.error > 0.0, "{whole:?}");
                let difference = (cut.error - whole.error).abs() / whole.error;
                assert!(difference <= 1e-5, "{}: {} on its suffix, {} whole", cut.value, cut.error, whole.error);
            }
        }
    }
}
