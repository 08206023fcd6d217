//! ONNX Runtime's fused integer kernels against its own reference semantics
//! (each QDQ node as written). On x86 without VNNI its u8×s8 kernels add
//! pairs of 8-bit products in 16 bits, which saturates where two large
//! inputs meet two large weights of one sign; its u8×u8 kernels widen before
//! multiplying and cannot saturate, but run slower.
//!
//! A quantized model in QDQ form is checked on the calibration probe
//! ([`check`]) twice: as a whole (how far the fused kernels move the
//! output, next to how far quantization did), and layer by layer (each
//! layer with int8 weights cut out and run alone both ways, on the integer
//! input the whole model's reference run fed it, so a layer's own
//! saturation shows apart from the rounding differences it inherits). A
//! layer whose fused output departs by more than a tenth of the noise power
//! its output rounding adds saturates (see [`NOISE_POWER_SHARE`]);
//! [`store_weights_unsigned`] stores its weights as uint8 with zero point
//! 128 — the same levels, so the same model — and every other layer keeps
//! the faster int8 kernels; [`departure`] checks the model again.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use petgraph::stable_graph::NodeIndex;
use serde::Serialize;

use crate::eval::{runs_relative_l2, NamedTensor};
use crate::ir::{self, tensor, DataType, Graph, GraphIo, Model, ValueId};
use crate::onnxruntime::{self, GraphOptimization, SampleOutputs};

/// How far ONNX Runtime's integer kernels depart from its own semantics on
/// a quantized model, next to how far quantization moved the model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KernelDeparture {
    /// Relative L2 of the fused kernels (all graph optimizations) against
    /// reference semantics (none).
    pub kernels: f64,
    /// Relative L2 of reference semantics against the float model.
    pub quantization: f64,
}

/// How far a layer's fused kernel, run alone with int8 weights, departs
/// from reference semantics, in quantization levels of its output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SaturatingLayer {
    /// The layer's node name.
    pub layer: String,
    /// The largest departure of one element.
    pub levels: f64,
    /// The root mean square departure over every element of every sample.
    pub rms_levels: f64,
}

/// Rounding a layer's output to its levels adds noise of 1/√12 level RMS.
/// A layer saturates when its fused kernel's departure adds more than this
/// share of that noise power. Kernels that round a tie the other way, or
/// clip a rare pair (a few elements in a million off by a few levels), stay
/// far below it; a first conv whose u8×s8 pairs overflow int16 on 1% of its
/// outputs by up to 70 levels is far above.
pub const NOISE_POWER_SHARE: f64 = 0.1;

impl SaturatingLayer {
    /// Whether the departure exceeds [`NOISE_POWER_SHARE`] of the rounding noise.
    pub fn saturates(&self) -> bool {
        self.rms_levels * self.rms_levels > NOISE_POWER_SHARE / 12.0
    }
}

/// Weighted operators whose QDQ form runtimes fuse into integer kernels.
const LAYER_OPERATORS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul"];

/// [`KernelDeparture`] of `quantized` on `probe`, its fused and reference
/// runs side by side, against `original` (the float model's outputs in
/// reference semantics).
pub fn departure(
    quantized: &Model,
    original: &SampleOutputs,
    path: &Path,
    probe: &[Vec<NamedTensor>],
) -> Result<KernelDeparture, String> {
    let runs = [(quantized, GraphOptimization::All), (quantized, GraphOptimization::None)];
    let mut outputs = onnxruntime::outputs_side_by_side(&runs, path, probe)?.into_iter();
    let (fused, reference) = (outputs.next().unwrap_or_default(), outputs.next().unwrap_or_default());
    Ok(compared(fused, reference, original))
}

/// How far `fused` departs from `reference`, and `reference` from `original`.
fn compared(fused: SampleOutputs, reference: SampleOutputs, original: &SampleOutputs) -> KernelDeparture {
    let kernels: Vec<_> = fused.into_iter().zip(reference.iter().cloned()).collect();
    let quantization: Vec<_> = reference.into_iter().zip(original.iter().cloned()).collect();
    KernelDeparture { kernels: runs_relative_l2(&kernels), quantization: runs_relative_l2(&quantization) }
}

/// What the check finds on a model as first quantized.
pub struct Checked {
    /// The whole model's departure.
    pub departure: KernelDeparture,
    /// Its layers whose fused kernels saturate, in node order.
    pub saturating: Vec<SaturatingLayer>,
    /// The float model's outputs on the probe (reference semantics), for
    /// checking the model again once its saturating layers changed.
    pub original: SampleOutputs,
}

/// Checks `quantized` (QDQ form) on `probe` against `float`, as a whole and
/// layer by layer. Its reference run, side by side with its fused run and
/// the float model's, also records every int8 layer's integer input, on
/// which each layer then runs alone.
pub fn check(quantized: &Model, float: &Model, path: &Path, probe: &[Vec<NamedTensor>]) -> Result<Checked, String> {
    let layers = layers_with_int8_weights(&quantized.graph);
    let mut tapped = quantized.clone();
    let mut tapped_values: HashSet<ValueId> = quantized.graph.outputs.iter().map(|io| io.value).collect();
    for layer in &layers {
        let value = quantized.graph.value(layer.input);
        if tapped_values.insert(layer.input) {
            let dtype =
                value.dtype.ok_or_else(|| format!("{}: '{}' has no element type", path.display(), value.name))?;
            let declared = ir::tensor_declaration(&value.name, dtype, value.shape.as_ref());
            tapped.graph.outputs.push(GraphIo { value: layer.input, declared });
        }
    }
    let runs =
        [(quantized, GraphOptimization::All), (&tapped, GraphOptimization::None), (float, GraphOptimization::None)];
    let mut outputs = onnxruntime::outputs_side_by_side(&runs, path, probe)?.into_iter();
    let (fused, mut reference) = (outputs.next().unwrap_or_default(), outputs.next().unwrap_or_default());
    let original = outputs.next().unwrap_or_default();
    drop(tapped);
    // The tapped outputs follow the model's own, in each sample.
    let own = quantized.graph.outputs.len();
    let taps: SampleOutputs = reference.iter_mut().map(|sample| sample.split_off(own.min(sample.len()))).collect();
    let departure = compared(fused, reference, &original);
    let saturating = saturating_layers(quantized, &layers, &taps, path)?;
    Ok(Checked { departure, saturating, original })
}

/// A layer of a QDQ model with int8 weights, as the check cuts it out.
struct IntegerLayer {
    name: String,
    /// The integer tensor its input DequantizeLinear reads.
    input: ValueId,
    /// Its QuantizeLinear's integer output, or its float output when no
    /// QuantizeLinear alone reads it (a Gemm whose integer kernel returns float).
    output: ValueId,
}

/// Those of `layers` whose fused kernels saturate, each run alone on its
/// input as `taps` (each probe sample's tapped values, by name) hold it.
fn saturating_layers(
    model: &Model,
    layers: &[IntegerLayer],
    taps: &SampleOutputs,
    path: &Path,
) -> Result<Vec<SaturatingLayer>, String> {
    let departures = crate::parallel::side_by_side(layers, layers.len(), |layer| {
        let name = &model.graph.value(layer.input).name;
        let feeds: Vec<Vec<NamedTensor>> =
            taps.iter().map(|sample| sample.iter().filter(|t| &t.name == name).take(1).cloned().collect()).collect();
        layer_departure(model, layer, path, &feeds)
    });
    let mut saturating = Vec::new();
    for departure in departures {
        saturating.extend(departure?.filter(SaturatingLayer::saturates));
    }
    Ok(saturating)
}

/// How far the layer's fused kernel departs from reference semantics, run
/// alone on `feeds` (`None` when it cannot be cut out).
fn layer_departure(
    model: &Model,
    layer: &IntegerLayer,
    path: &Path,
    feeds: &[Vec<NamedTensor>],
) -> Result<Option<SaturatingLayer>, String> {
    let Some(part) = ir::submodel(model, &[layer.input], &[layer.output]) else { return Ok(None) };
    let label = path.join(&layer.name);
    let fused = onnxruntime::outputs(&part, &label, GraphOptimization::All, feeds)?;
    let reference = onnxruntime::outputs(&part, &label, GraphOptimization::None, feeds)?;
    let integer_output = model.graph.value(layer.output).dtype.is_some_and(|d| d != DataType::Float);
    let (mut largest, mut squares, mut count) = (0.0f64, 0.0, 0usize);
    for (fused, reference) in fused.iter().flatten().zip(reference.iter().flatten()) {
        let (Some(fused), Some(reference)) = (fused.tensor.to_f64(), reference.tensor.to_f64()) else { continue };
        // A float output is measured in levels of 8 bits over its range.
        let level = if integer_output {
            1.0
        } else {
            let (low, high) = reference.iter().fold((0.0f64, 0.0f64), |(l, h), &v| (l.min(v), h.max(v)));
            ((high - low) / 255.0).max(f64::MIN_POSITIVE)
        };
        for (f, r) in fused.iter().zip(&reference) {
            let levels = (f - r).abs() / level;
            largest = largest.max(levels);
            squares += levels * levels;
        }
        count += fused.len();
    }
    let rms_levels = (squares / count.max(1) as f64).sqrt();
    Ok(Some(SaturatingLayer { layer: layer.name.clone(), levels: largest, rms_levels }))
}

/// Every weighted layer of a QDQ model whose input is dequantized from an
/// integer activation and whose weights are int8 constants.
fn layers_with_int8_weights(graph: &Graph) -> Vec<IntegerLayer> {
    graph
        .nodes
        .node_indices()
        .filter_map(|index| {
            let node = graph.node(index);
            if !node.domain.is_empty() || !LAYER_OPERATORS.contains(&node.op_type.as_str()) {
                return None;
            }
            let input = dequantized_operand(graph, node.input(0)?).filter(|&x| graph.constant(x).is_none())?;
            let weights = dequantized_operand(graph, node.input(1)?)?;
            (graph.constant(weights).and_then(tensor::dtype) == Some(DataType::Int8)).then_some(())?;
            let output = node.output(0)?;
            let requantized = match graph.consumers(output)[..] {
                [reader] if graph.node(reader).op_type == "QuantizeLinear" => graph.node(reader).output(0),
                _ => None,
            };
            Some(IntegerLayer { name: node.name.clone(), input, output: requantized.unwrap_or(output) })
        })
        .collect()
}

/// The tensor a DequantizeLinear producing `value` reads.
fn dequantized_operand(graph: &Graph, value: ValueId) -> Option<ValueId> {
    let node = graph.node(graph.producer_node(value)?);
    (node.op_type == "DequantizeLinear" && node.domain.is_empty()).then(|| node.input(0)).flatten()
}

/// Stores the int8 weights and zero points of the named layers as uint8
/// shifted by 128: their DequantizeLinear gives the same values, and
/// runtimes fuse each into a u8×u8 kernel. Constants no node reads any more
/// are dropped. Returns the layers changed (a layer whose weights are not
/// int8 with an explicit zero point is left alone; another layer that reads
/// the same DequantizeLinear changes with it).
pub fn store_weights_unsigned(model: &mut Model, layers: &[String]) -> Vec<String> {
    let mut names = ir::names::Names::of_model(model);
    let graph = &mut model.graph;
    let mut dequantizers: Vec<(String, NodeIndex)> = Vec::new();
    for node in graph.nodes.node_weights().filter(|node| layers.contains(&node.name)) {
        let Some(dequantize) = node.input(1).and_then(|w| graph.producer_node(w)) else { continue };
        let reads_int8 = |slot: usize| {
            let dq = graph.node(dequantize);
            dq.op_type == "DequantizeLinear"
                && dq.input(slot).and_then(|v| graph.constant(v)).and_then(tensor::dtype) == Some(DataType::Int8)
        };
        if reads_int8(0) && reads_int8(2) {
            dequantizers.push((node.name.clone(), dequantize));
        }
    }
    let mut changed = Vec::new();
    let mut shifted: HashMap<ValueId, ValueId> = HashMap::new();
    let mut done = HashSet::new();
    for (layer, dequantize) in dequantizers {
        changed.push(layer);
        // Layers that read the same weights share their DequantizeLinear.
        if !done.insert(dequantize) {
            continue;
        }
        for slot in [0, 2] {
            let Some(signed) = graph.node(dequantize).input(slot) else { continue };
            let unsigned = match shifted.get(&signed) {
                Some(&unsigned) => unsigned,
                None => {
                    let Some(tensor) = graph.constant(signed) else { continue };
                    let Some(raw) = tensor::raw_bytes(tensor) else { continue };
                    // Two's complement int8 plus 128 is the byte with its top bit flipped.
                    let raw: Vec<u8> = raw.iter().map(|byte| byte ^ 0x80).collect();
                    let dims = tensor.dims.clone();
                    let name = names.value(&format!("{}_u8", graph.value(signed).name));
                    let unsigned =
                        graph.add_initializer(name.clone(), tensor::from_raw(&name, DataType::Uint8, &dims, raw));
                    shifted.insert(signed, unsigned);
                    unsigned
                }
            };
            graph.nodes[dequantize].inputs[slot] = Some(unsigned);
        }
    }
    graph.rebuild_edges();
    let read = graph.read_values();
    graph.initializers.retain(|id| read.contains(id) || !shifted.contains_key(id));
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::read_test_data_set;

    /// quantize_static's output for a small CNN whose int8 kernels saturate
    /// on x86 without VNNI, and its input.
    fn saturation_model() -> (std::path::PathBuf, Model, Vec<NamedTensor>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join("qdq_saturation");
        let path = dir.join("model.onnx");
        let model = crate::pipeline::load(&path, &[]).unwrap().model;
        (path, model, read_test_data_set(&dir.join("test_data_set_0")).unwrap().inputs)
    }

    fn largest_difference(a: &SampleOutputs, b: &SampleOutputs) -> f64 {
        let values = |runs: &SampleOutputs| -> Vec<f64> {
            runs.iter().flatten().flat_map(|t| t.tensor.to_f64().unwrap()).collect()
        };
        values(a).iter().zip(values(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn uint8_weights_give_the_same_model_in_reference_semantics() {
        let (path, mut model, input) = saturation_model();
        let probe = vec![input];
        let layers: Vec<String> = layers_with_int8_weights(&model.graph).into_iter().map(|l| l.name).collect();
        assert_eq!(layers.len(), 3, "two convs and the Gemm");
        let initializers = model.graph.initializers.len();
        let before = onnxruntime::outputs(&model, &path, GraphOptimization::None, &probe).unwrap();
        assert_eq!(store_weights_unsigned(&mut model, &layers), layers);
        assert!(layers_with_int8_weights(&model.graph).is_empty());
        assert_eq!(model.graph.initializers.len(), initializers, "each int8 constant replaced by one uint8");
        let after = onnxruntime::outputs(&model, &path, GraphOptimization::None, &probe).unwrap();
        assert_eq!(largest_difference(&before, &after), 0.0);
    }

    #[test]
    fn a_layer_that_saturates_alone_is_found_and_uint8_weights_end_it() {
        let (path, mut model, input) = saturation_model();
        let probe = vec![input];
        let float = crate::pipeline::load(&path.parent().unwrap().join("fp32/model.onnx"), &[]).unwrap().model;
        let saturating = check(&model, &float, &path, &probe).unwrap().saturating;
        if crate::onnxruntime::cpu_has_vnni() {
            assert!(saturating.is_empty(), "VNNI int8 kernels cannot saturate: {saturating:?}");
            return;
        }
        assert!(!saturating.is_empty() && saturating.iter().all(SaturatingLayer::saturates), "{saturating:?}");
        let gap = |model: &Model| {
            let fused = onnxruntime::outputs(model, &path, GraphOptimization::All, &probe).unwrap();
            let reference = onnxruntime::outputs(model, &path, GraphOptimization::None, &probe).unwrap();
            largest_difference(&fused, &reference)
        };
        let signed_gap = gap(&model);
        let layers: Vec<String> = saturating.iter().map(|s| s.layer.clone()).collect();
        store_weights_unsigned(&mut model, &layers);
        assert!(check(&model, &float, &path, &probe).unwrap().saturating.is_empty());
        let unsigned_gap = gap(&model);
        eprintln!("fused vs reference: int8 weights {signed_gap:.4}, saturating layers uint8 {unsigned_gap:.4}");
        assert!(unsigned_gap < 0.25 * signed_gap, "{unsigned_gap} vs {signed_gap}");
    }
}
