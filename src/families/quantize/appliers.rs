//! The `quant` family's appliers. A linear layer (Conv, MatMul, Gemm) with
//! constant float weights, or an Add, whose operands have calibrated ranges
//! gets an integer alternative in operator form — QLinearConv,
//! QLinearMatMul, com.microsoft QGemm or QLinearAdd — read back by a
//! DequantizeLinear and marked approximate. A Gemm also gets QGemm with a
//! float output (no output rounding), for when what reads it is float. One
//! node per integer layer keeps its cost independent of its neighbours;
//! [`super::qdq`] lowers the operator forms to QDQ nodes after extraction.
//!
//! Activations are quantized where an integer node reads them. A
//! QuantizeLinear of a value an integer node already produces at other
//! parameters re-emits that node with the wanted output parameters
//! (`requantize`), and one above a data-movement operator (MaxPool, Reshape,
//! Transpose, Concat, Resize, Slice, ...) moves below it (`commute_quantize`),
//! so chains of integer layers form with no dequantize/quantize pair between
//! them. Relu and Clip fold into the range they are quantized to (guards).
//!
//! Weight-only mode instead stores the weights as integers behind a
//! DequantizeLinear and keeps float compute.

use egg::{Id, Subst, Symbol};

use super::settings::{ActivationType, QuantMode, QuantSettings};
use super::NAME;
use crate::egraph::alternatives::{offer, Alternative, Approximation};
use crate::egraph::analysis::{attrs_of, constant_of, is_absent, Graph, StandIn};
use crate::egraph::appliers::var;
use crate::egraph::language::{Onnx, WeightId};
use crate::egraph::nodes::{add_typed, add_typed_op, add_weight, float_weight, no_attributes};
use crate::eval::calibrate::ActivationRange;
use crate::families::quantize::bias_correction::{conv_shift, gemm_shift, ConvGeometry};
use crate::families::quantize::weights::{quantize, QuantizedLayer, WeightSpec};
use crate::ir::{attribute, tensor, AttributeList, DataType, Shape};
use crate::onnx::proto::TensorProto;

/// Relative error charged for each activation rounded to 8 bits (half a
/// level of 255), next to the weight's measured rounding error.
const ACTIVATION_ROUNDING_ERROR: f64 = 0.5 / 255.0;

/// Integer operator forms, the child index of their output scale (the
/// output zero point follows it) and the float operator they stand for.
const INTEGER_OPERATORS: &[(&str, usize, &str)] = &[
    ("QLinearConv", 6, "Conv"),
    ("QLinearMatMul", 6, "MatMul"),
    ("com.microsoft::QGemm", 7, "Gemm"),
    ("com.microsoft::QLinearAdd", 6, "Add"),
];

/// The float operator an integer operator form stands for.
pub fn float_operator(op: &str) -> Option<&'static str> {
    INTEGER_OPERATORS.iter().find(|(name, ..)| *name == op).map(|&(.., float)| float)
}

/// Operators that only move, select or compare values, so quantizing their
/// output equals running them on the quantized input (per-tensor
/// parameters), with the indices of their data inputs (`None`: all inputs).
const DATA_MOVEMENT: &[(&str, Option<usize>)] = &[
    ("MaxPool", Some(0)),
    ("Reshape", Some(0)),
    ("Transpose", Some(0)),
    ("Flatten", Some(0)),
    ("Squeeze", Some(0)),
    ("Unsqueeze", Some(0)),
    ("Slice", Some(0)),
    ("Identity", Some(0)),
    ("Gather", Some(0)),
    ("DepthToSpace", Some(0)),
    ("SpaceToDepth", Some(0)),
    ("Resize", Some(0)),
    ("Concat", None),
];

/// Whether the class already holds a quantized alternative (rules re-run on
/// every match each iteration; quantizing the weights again would only find
/// the same nodes).
fn already_quantized(egraph: &Graph, class: Id) -> bool {
    egraph[class].nodes.iter().any(|node| is_quantized_alternative(egraph, node))
}

/// Whether the family stores weights only (float compute).
fn weights_only(egraph: &Graph) -> bool {
    settings(egraph).is_some_and(|s| s.mode == QuantMode::WeightsOnly)
}

/// The settings, when the family may quantize activations here.
fn static_settings(egraph: &Graph) -> Option<QuantSettings> {
    settings(egraph).filter(|s| s.mode == QuantMode::Static).cloned()
}

/// Scale and zero point of an activation range.
pub fn activation_parameters(range: ActivationRange, activations: ActivationType) -> (f32, i32) {
    let (lowest, highest) = activations.levels();
    let span = range.max - range.min;
    let scale = if span > 0.0 && span.is_finite() { span / f64::from(highest - lowest) } else { 1.0 };
    let zero_point = (f64::from(lowest) - range.min / scale).round().clamp(f64::from(lowest), f64::from(highest));
    (scale as f32, zero_point as i32)
}

/// A quantization parameter pair as constant leaves: (scale, zero point).
fn parameter_leaves(egraph: &mut Graph, scale: &[f32], zero_point: &[i32], dtype: DataType, dims: &[i64]) -> (Id, Id) {
    let scale = add_weight(egraph, tensor::from_f32("", dims, scale));
    let zero_point = add_weight(egraph, integer_tensor(dtype, dims, zero_point));
    (scale, zero_point)
}

/// An int4, uint4, int8, uint8 or int32 tensor (4-bit values packed two to
/// a byte, the first in the low nibble).
fn integer_tensor(dtype: DataType, dims: &[i64], values: &[i32]) -> TensorProto {
    let raw: Vec<u8> = match dtype {
        DataType::Int4 | DataType::Uint4 => values
            .chunks(2)
            .map(|pair| (pair[0] as u8 & 0x0f) | ((*pair.get(1).unwrap_or(&0) as u8 & 0x0f) << 4))
            .collect(),
        DataType::Int8 => values.iter().map(|&v| v as i8 as u8).collect(),
        DataType::Uint8 => values.iter().map(|&v| v as u8).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    tensor::from_raw("", dtype, dims, raw)
}

/// A quantized activation: the QuantizeLinear class and its parameter leaves.
struct QuantizedInput {
    value: Id,
    scale: Id,
    zero_point: Id,
    scale_value: f64,
}

/// Quantizes a float value with a calibrated range.
fn quantize_input(egraph: &mut Graph, x: Id, settings: &QuantSettings) -> Option<QuantizedInput> {
    let facts = &egraph[x].data;
    if facts.dtype != Some(DataType::Float) || facts.weight_only {
        return None;
    }
    let range = facts.range?;
    let shape = facts.shape.clone();
    let (scale_value, zero_point) = activation_parameters(range, settings.activations);
    let dtype = settings.activations.dtype();
    let (scale, zero) = parameter_leaves(egraph, &[scale_value], &[zero_point], dtype, &[]);
    let attrs = no_attributes(egraph);
    let value = add_typed_op(egraph, "QuantizeLinear", vec![x, scale, zero], attrs, dtype, shape);
    Some(QuantizedInput { value, scale, zero_point: zero, scale_value: f64::from(scale_value) })
}

/// Output parameters for the value `root`'s calibrated range.
fn output_parameters(egraph: &mut Graph, root: Id, settings: &QuantSettings) -> Option<(Id, Id)> {
    let range = egraph[root].data.range?;
    let (scale, zero_point) = activation_parameters(range, settings.activations);
    Some(parameter_leaves(egraph, &[scale], &[zero_point], settings.activations.dtype(), &[]))
}

/// The family's settings in this e-graph (`None`: it is not enabled).
fn settings(egraph: &Graph) -> Option<&QuantSettings> {
    egraph.analysis.settings_of::<QuantSettings>(NAME)
}

/// Registers a quantized form of the layer computing `layer` (with
/// `is_layer` false: a rounding of the value `layer` between integer
/// layers) with its estimated error (the output error measured with it
/// alone replaces it when `--budget` is finite).
fn offer_form(egraph: &mut Graph, layer: Id, is_layer: bool, error: f64, details: serde_json::Value) -> Approximation {
    let replaces = vec![layer];
    let alternative = Alternative {
        family: NAME,
        replaces,
        is_layer,
        error,
        measured: false,
        // The rounding-error estimates stand where no layer was measured.
        needs_measurement: false,
        excluded: false,
        details,
    };
    offer(egraph, alternative)
}

/// Notes that the node of class `node` stands in for the float layer
/// `layer` (export names it after that layer's `op` node).
fn stand_in(egraph: &mut Graph, node: Id, layer: Id, op: &'static str) {
    egraph.analysis.stand_ins.insert(node, StandIn { layer, op });
}

/// Wraps an integer node's class as an approximation and reads it back as float.
fn dequantized(
    egraph: &mut Graph,
    integer: Id,
    approximation: Approximation,
    scale: Id,
    zero_point: Id,
    root: Id,
) -> Id {
    let approx = egraph.add(Onnx::Approx(approximation, [integer]));
    let attrs = no_attributes(egraph);
    let shape = egraph[root].data.shape.clone();
    add_typed_op(egraph, "DequantizeLinear", vec![approx, scale, zero_point], attrs, DataType::Float, shape)
}

/// Relative L2 error of the stored weights against the float ones.
fn weight_error(w: &[f64], layer: &QuantizedLayer, dims: &[usize], spec: &WeightSpec) -> f64 {
    let stored = layer.dequantized(dims, spec);
    let diff: f64 = w.iter().zip(&stored).map(|(v, q)| (v - q).powi(2)).sum();
    let norm: f64 = w.iter().map(|v| v * v).sum();
    if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        0.0
    }
}

/// Quantized weight leaves: (values, scale, zero point, bias) and the weight error.
struct QuantizedWeights {
    values: Id,
    scale: Id,
    zero_point: Id,
    /// The int32 bias leaf and its weight id.
    bias: Option<(Id, WeightId)>,
    /// Channels whose weight scale was widened for the bias to fit int32.
    widened: Vec<usize>,
    error: f64,
}

/// How a weight's scales are laid out: the output-channel axis (per-channel
/// scales) and the input axis (block-wise scales).
#[derive(Clone, Copy)]
struct WeightAxes {
    output: usize,
    input: usize,
}

impl WeightAxes {
    /// The weight spec `settings` ask for (blocks only for weight-only layers).
    fn spec(self, settings: &QuantSettings) -> WeightSpec {
        let block = settings.block_size.filter(|_| settings.mode == QuantMode::WeightsOnly).map(|b| (self.input, b));
        let channel_axis = (settings.per_channel && block.is_none()).then_some(self.output);
        let bits = if settings.mode == QuantMode::WeightsOnly { settings.weight_bits } else { 8 };
        WeightSpec { bits, reduced_range: settings.reduced_range, channel_axis, block }
    }
}

/// Conv weights are [out, in/groups, kernel...].
const CONV_AXES: WeightAxes = WeightAxes { output: 0, input: 1 };
/// A MatMul's (and an untransposed Gemm's) weights are [in, out].
const MATMUL_AXES: WeightAxes = WeightAxes { output: 1, input: 0 };

fn quantize_weights(
    egraph: &mut Graph,
    w: &[f64],
    dims: &[usize],
    spec: &WeightSpec,
    bias: Option<(&[f64], f64)>,
    settings: &QuantSettings,
) -> Option<QuantizedWeights> {
    let layer = quantize(w, dims, spec, bias).ok()?;
    let error = weight_error(w, &layer, dims, spec);
    let dims_i64: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    let (dtype, zero) = settings.weight_type(spec.bits);
    let stored: Vec<i32> = layer.values.iter().map(|&v| v + zero).collect();
    let values = add_weight(egraph, integer_tensor(dtype, &dims_i64, &stored));
    let scales: Vec<f32> = layer.scales.iter().map(|&s| s as f32).collect();
    let scale_dims: Vec<i64> = match spec.block {
        Some(_) => layer.scale_dims.iter().map(|&d| d as i64).collect(),
        None if scales.len() == 1 => Vec::new(),
        None => vec![scales.len() as i64],
    };
    let (scale, zero_point) = parameter_leaves(egraph, &scales, &vec![zero; scales.len()], dtype, &scale_dims);
    let bias = layer.bias.as_ref().map(|b| {
        let weight = egraph.analysis.intern_weight(integer_tensor(DataType::Int32, &[b.len() as i64], b), None);
        (egraph.add(Onnx::Weight(weight)), weight)
    });
    Some(QuantizedWeights { values, scale, zero_point, bias, widened: layer.widened, error })
}

/// How a layer's output mean follows from its weights (bias correction).
#[derive(Clone, Copy)]
enum Shift {
    /// Conv (weights [out, in/group, kernel...]; geometry from its attributes).
    Conv,
    /// Gemm, whose weights are [K, N], or [N, K] when `transposed`.
    Gemm { transposed: bool },
}

/// The layer's bias (zeros when it has none) minus the mean shift that
/// storing `weights` as `spec` says causes on the calibration data (see
/// [`crate::families::quantize::bias_correction`]); `None` when the layer is not
/// corrected: the settings say so, its input has no calibration mean, or
/// the dims do not fit.
#[allow(clippy::too_many_arguments)]
fn corrected_bias(
    egraph: &Graph,
    input: Id,
    attrs: Id,
    shift: Shift,
    weights: &[f64],
    dims: &[usize],
    spec: &WeightSpec,
    bias: Option<&[f64]>,
) -> Option<Vec<f64>> {
    if !settings(egraph)?.bias_correction {
        return None;
    }
    let mean = egraph.analysis.means.get(egraph[input].data.mean?)?;
    let mut difference = quantize(weights, dims, spec, None).ok()?.dequantized(dims, spec);
    difference.iter_mut().zip(weights).for_each(|(d, w)| *d -= w);
    let shift = match shift {
        Shift::Conv => {
            let spatial = mean.dims.get(mean.dims.len().checked_sub(dims.len().checked_sub(2)?)?..)?;
            let geometry = ConvGeometry::new(attrs_of(egraph, attrs)?, spatial, dims.get(2..)?)?;
            conv_shift(&difference, dims, mean, &geometry)?
        }
        Shift::Gemm { transposed } => gemm_shift(&difference, dims, transposed, mean)?,
    };
    match bias {
        None => Some(shift.iter().map(|s| -s).collect()),
        Some(bias) => (bias.len() == shift.len()).then(|| bias.iter().zip(&shift).map(|(b, s)| b - s).collect()),
    }
}

/// A weight-only layer's bias correction: how its output follows from its
/// weights, its bias in output units (beta folded in for Gemm) and the
/// factor its bias input is scaled by (Gemm's beta; 1 for Conv).
struct WeightOnlyCorrection {
    shift: Shift,
    bias: Option<Vec<f64>>,
    beta: f64,
}

/// The corrected float bias leaf of a weight-only layer whose float
/// weights are `weights` (children as matched: input, weights, bias, ...,
/// attributes).
fn weight_only_bias(
    egraph: &mut Graph,
    children: &[Id],
    weights: (&[f64], &[usize]),
    spec: &WeightSpec,
    correction: WeightOnlyCorrection,
) -> Option<(Id, WeightId)> {
    if correction.beta == 0.0 {
        return None;
    }
    let (values, dims) = weights;
    let (input, attrs, bias) = (children[0], *children.last()?, correction.bias.as_deref());
    let corrected = corrected_bias(egraph, input, attrs, correction.shift, values, dims, spec, bias)?;
    let stored: Vec<f32> = corrected.iter().map(|b| (b / correction.beta) as f32).collect();
    let weight = egraph.analysis.intern_weight(tensor::from_f32("", &[stored.len() as i64], &stored), None);
    Some((egraph.add(Onnx::Weight(weight)), weight))
}

/// Weight-only alternative of float weights `values` of shape `dims`: the
/// layer reads DequantizeLinear of integer weights (per channel or in
/// blocks, as `spec` says).
fn weight_only_layer(
    egraph: &mut Graph,
    values: &[f64],
    dims: &[usize],
    spec: &WeightSpec,
    settings: &QuantSettings,
) -> Option<(Id, f64)> {
    let weights = quantize_weights(egraph, values, dims, spec, None, settings)?;
    let attributes = match (spec.block, spec.channel_axis) {
        (Some((axis, size)), _) => crate::egraph::analysis::OpAttrs::default()
            .with(attribute::int("axis", axis as i64))
            .with(attribute::int("block_size", size as i64)),
        (None, Some(axis)) => crate::egraph::analysis::OpAttrs::default().with(attribute::int("axis", axis as i64)),
        (None, None) => crate::egraph::analysis::OpAttrs::default(),
    };
    let attrs = egraph.analysis.intern_attrs(attributes);
    let attrs = egraph.add(Onnx::Attrs(attrs));
    let shape = Some(Shape::known(&dims.iter().map(|&d| d as i64).collect::<Vec<_>>()));
    let inputs = vec![weights.values, weights.scale, weights.zero_point];
    Some((add_typed_op(egraph, "DequantizeLinear", inputs, attrs, DataType::Float, shape), weights.error))
}

/// Replaces the weight child (index 1) of the matched layer, whose float
/// weights are `weights`, with its weight-only quantized form, wrapped as an
/// approximation; with a correction, the bias child (index 2) with the
/// corrected bias.
fn weight_only_alternative(
    egraph: &mut Graph,
    root: Id,
    op: &'static str,
    children: Vec<Id>,
    weights: (&[f64], &[usize]),
    axes: WeightAxes,
    correction: Option<WeightOnlyCorrection>,
) -> Option<Id> {
    let settings = settings(egraph)?.clone();
    let spec = axes.spec(&settings);
    let (weight, error) = weight_only_layer(egraph, weights.0, weights.1, &spec, &settings)?;
    let mut inputs = children;
    let mut details = serde_json::json!({"form": "weights only", "op": op});
    if let Some((bias, id)) = correction.and_then(|c| weight_only_bias(egraph, &inputs, weights, &spec, c)) {
        inputs[2] = bias;
        details["adjusted_bias"] = serde_json::json!({"weight": id, "corrected": true, "widened": []});
    }
    inputs[1] = weight;
    let attrs = inputs.pop()?;
    let shape = egraph[root].data.shape.clone();
    let layer = add_typed_op(egraph, op, inputs, attrs, DataType::Float, shape);
    let approximation = offer_form(egraph, root, true, error, details);
    Some(egraph.add(Onnx::Approx(approximation, [layer])))
}

/// Where an integer linear operator reads its int32 bias.
#[derive(Clone, Copy)]
enum BiasInput {
    /// No bias input (QLinearMatMul).
    None,
    /// After the output scale and zero point (QLinearConv).
    AfterOutput,
    /// Before them (QGemm, whose output parameters are optional: without
    /// them it returns float).
    BeforeOutput,
}

/// A linear layer with constant float weights, to be given an integer form.
struct LinearLayer {
    op: &'static str,
    input: Id,
    weights: Vec<f64>,
    dims: Vec<usize>,
    axes: WeightAxes,
    bias: Option<Vec<f64>>,
    bias_input: BiasInput,
    attrs: Id,
    /// How bias correction finds the output's mean shift (`None`: no bias to correct).
    shift: Option<Shift>,
}

/// The integer form of a linear layer: its input quantized, its weights
/// (and int32 bias) quantized, the operator in operator form, read back by a
/// DequantizeLinear and marked approximate.
fn integer_linear(egraph: &mut Graph, root: Id, layer: LinearLayer) -> Option<Id> {
    let settings = static_settings(egraph)?;
    let (output_scale, output_zero) = output_parameters(egraph, root, &settings)?;
    let input = quantize_input(egraph, layer.input, &settings)?;
    let spec = layer.axes.spec(&settings);
    let corrected = layer.shift.and_then(|shift| {
        let (weights, dims, bias) = (&layer.weights, &layer.dims, layer.bias.as_deref());
        corrected_bias(egraph, layer.input, layer.attrs, shift, weights, dims, &spec, bias)
    });
    let bias = corrected.as_deref().or(layer.bias.as_deref()).map(|b| (b, input.scale_value));
    let weights = quantize_weights(egraph, &layer.weights, &layer.dims, &spec, bias, &settings)?;
    let op = float_operator(layer.op).unwrap_or(layer.op);
    let mut details = serde_json::json!({"form": layer.op, "op": op});
    if let Some((_, bias)) = weights.bias.filter(|_| corrected.is_some() || !weights.widened.is_empty()) {
        let corrected = corrected.is_some();
        details["adjusted_bias"] =
            serde_json::json!({"weight": bias, "corrected": corrected, "widened": weights.widened});
    }
    let absent = egraph.add(Onnx::Absent);
    let bias = weights.bias.map_or(absent, |(leaf, _)| leaf);
    let mut inputs =
        vec![input.value, input.scale, input.zero_point, weights.values, weights.scale, weights.zero_point];
    match layer.bias_input {
        BiasInput::None => inputs.extend([output_scale, output_zero]),
        BiasInput::AfterOutput => inputs.extend([output_scale, output_zero, bias]),
        BiasInput::BeforeOutput => inputs.extend([bias, output_scale, output_zero]),
    }
    let shape = egraph[root].data.shape.clone();
    let error = weights.error + 2.0 * ACTIVATION_ROUNDING_ERROR;
    let approximation = offer_form(egraph, root, true, error, details);
    if let BiasInput::BeforeOutput = layer.bias_input {
        // QGemm without output parameters returns float: no output rounding
        // and no QuantizeLinear/DequantizeLinear pair when what reads the
        // layer is float (a Softmax, a graph output).
        let float_inputs = inputs[..inputs.len() - 2].to_vec();
        let float_output = add_typed_op(egraph, layer.op, float_inputs, layer.attrs, DataType::Float, shape.clone());
        stand_in(egraph, float_output, root, op);
        let alternative = egraph.add(Onnx::Approx(approximation, [float_output]));
        egraph.union(root, alternative);
    }
    let integer = add_typed_op(egraph, layer.op, inputs, layer.attrs, settings.activations.dtype(), shape);
    stand_in(egraph, integer, root, op);
    Some(dequantized(egraph, integer, approximation, output_scale, output_zero, root))
}

pub(crate) fn quantize_conv(egraph: &mut Graph, root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    if already_quantized(egraph, root) {
        return None;
    }
    let (x, w, b, attrs) = (var(subst, "?x")?, var(subst, "?w")?, var(subst, "?b")?, var(subst, "?a")?);
    let (values, dims) = float_weight(egraph, w)?;
    if dims.len() < 3 {
        return None;
    }
    let bias = if is_absent(egraph, b) {
        None
    } else {
        let (bias, bias_dims) = float_weight(egraph, b)?;
        (bias_dims == [dims[0]]).then_some(bias)?.into()
    };
    if weights_only(egraph) {
        let correction = WeightOnlyCorrection { shift: Shift::Conv, bias, beta: 1.0 };
        return weight_only_alternative(
            egraph,
            root,
            "Conv",
            vec![x, w, b, attrs],
            (&values, &dims),
            CONV_AXES,
            Some(correction),
        );
    }
    let layer = LinearLayer {
        op: "QLinearConv",
        input: x,
        weights: values,
        dims,
        axes: CONV_AXES,
        bias,
        bias_input: BiasInput::AfterOutput,
        attrs,
        shift: Some(Shift::Conv),
    };
    integer_linear(egraph, root, layer)
}

pub(crate) fn quantize_matmul(egraph: &mut Graph, root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    if already_quantized(egraph, root) {
        return None;
    }
    let (x, w, attrs) = (var(subst, "?x")?, var(subst, "?w")?, var(subst, "?a")?);
    let (values, dims) = float_weight(egraph, w)?;
    if dims.len() != 2 || egraph[x].data.shape.as_ref().is_none_or(|s| s.rank() < 2) {
        return None;
    }
    if weights_only(egraph) {
        // No bias input to correct.
        return weight_only_alternative(egraph, root, "MatMul", vec![x, w, attrs], (&values, &dims), MATMUL_AXES, None);
    }
    let layer = LinearLayer {
        op: "QLinearMatMul",
        input: x,
        weights: values,
        dims,
        axes: MATMUL_AXES,
        bias: None,
        bias_input: BiasInput::None,
        attrs,
        shift: None,
    };
    integer_linear(egraph, root, layer)
}

pub(crate) fn quantize_gemm(egraph: &mut Graph, root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    if already_quantized(egraph, root) {
        return None;
    }
    let (x, w, c, attrs) = (var(subst, "?x")?, var(subst, "?w")?, var(subst, "?c")?, var(subst, "?a")?);
    let gemm = attrs_of(egraph, attrs)?.clone();
    let trans_b = gemm.attr_int("transB").unwrap_or(0) != 0;
    let (alpha, beta) = (gemm.attr_float("alpha").unwrap_or(1.0), gemm.attr_float("beta").unwrap_or(1.0));
    if gemm.attr_int("transA").unwrap_or(0) != 0 || alpha != 1.0 {
        return None;
    }
    let (values, dims) = float_weight(egraph, w)?;
    if dims.len() != 2 || egraph[x].data.shape.as_ref().is_none_or(|s| s.rank() != 2) {
        return None;
    }
    let (axes, columns) = if trans_b { (WeightAxes { output: 0, input: 1 }, dims[0]) } else { (MATMUL_AXES, dims[1]) };
    // The bias: one value per output column (beta folded in); `None` when C
    // has another shape.
    let bias: Option<Option<Vec<f64>>> = if is_absent(egraph, c) {
        Some(None)
    } else {
        float_weight(egraph, c)
            .filter(|(_, dims)| dims.iter().product::<usize>() == columns && dims.last() == Some(&columns))
            .map(|(bias, _)| Some(bias.iter().map(|v| v * f64::from(beta)).collect()))
    };
    let shift = Shift::Gemm { transposed: trans_b };
    if weights_only(egraph) {
        let correction = bias.map(|bias| WeightOnlyCorrection { shift, bias, beta: f64::from(beta) });
        return weight_only_alternative(egraph, root, "Gemm", vec![x, w, c, attrs], (&values, &dims), axes, correction);
    }
    let bias = bias?;
    let attributes = crate::egraph::analysis::OpAttrs::default()
        .with(attribute::float("alpha", 1.0))
        .with(attribute::int("transA", 0))
        .with(attribute::int("transB", i64::from(trans_b)));
    let attrs = egraph.analysis.intern_attrs(attributes);
    let attrs = egraph.add(Onnx::Attrs(attrs));
    let layer = LinearLayer {
        op: "com.microsoft::QGemm",
        input: x,
        weights: values,
        dims,
        axes,
        bias,
        bias_input: BiasInput::BeforeOutput,
        attrs,
        shift: Some(shift),
    };
    integer_linear(egraph, root, layer)
}

pub(crate) fn quantize_add(egraph: &mut Graph, root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    if already_quantized(egraph, root) {
        return None;
    }
    let settings = static_settings(egraph)?;
    let (a, b) = (var(subst, "?x")?, var(subst, "?y")?);
    if egraph[root].data.dtype != Some(DataType::Float) {
        return None;
    }
    let (output_scale, output_zero) = output_parameters(egraph, root, &settings)?;
    let left = quantize_input(egraph, a, &settings)?;
    let right = quantize_input(egraph, b, &settings)?;
    let inputs = vec![
        left.value,
        left.scale,
        left.zero_point,
        right.value,
        right.scale,
        right.zero_point,
        output_scale,
        output_zero,
    ];
    let attrs = no_attributes(egraph);
    let shape = egraph[root].data.shape.clone();
    let integer = add_typed_op(egraph, "com.microsoft::QLinearAdd", inputs, attrs, settings.activations.dtype(), shape);
    stand_in(egraph, integer, root, "Add");
    let details = serde_json::json!({"form": "com.microsoft::QLinearAdd", "op": "Add"});
    let approximation = offer_form(egraph, root, true, 3.0 * ACTIVATION_ROUNDING_ERROR, details);
    Some(dequantized(egraph, integer, approximation, output_scale, output_zero, root))
}

/// The integer operator node of `class`, its children and the index of its
/// output scale, when it holds one.
fn integer_node(egraph: &Graph, class: Id) -> Option<(Symbol, Box<[Id]>, usize)> {
    egraph[class].nodes.iter().find_map(|n| match n {
        Onnx::Op(op, children) => INTEGER_OPERATORS
            .iter()
            .find(|(name, ..)| op.as_str() == *name)
            .map(|&(_, at, _)| (*op, children.clone(), at)),
        _ => None,
    })
}

/// Whether two classes hold equal constants.
fn same_constant(egraph: &Graph, a: Id, b: Id) -> bool {
    if egraph.find(a) == egraph.find(b) {
        return true;
    }
    match (constant_of(egraph, a), constant_of(egraph, b)) {
        (Some(x), Some(y)) => {
            x.data_type == y.data_type && x.dims == y.dims && tensor::raw_bytes(x) == tensor::raw_bytes(y)
        }
        _ => false,
    }
}

/// (QuantizeLinear (DequantizeLinear ?q ?s1 ?z1 ?a1) ?s ?z ?a): `?q` itself
/// when the parameters agree; else the integer node behind `?q` re-emitted
/// with output parameters `?s`, `?z` (one rounding instead of two). A `?q`
/// that only marks a rounding (a float reader dequantizing a moved integer
/// value) is left alone: merging it would drop the rounding's error.
pub(crate) fn requantize(egraph: &mut Graph, _root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let (q, s1, z1, s, z) =
        (var(subst, "?q")?, var(subst, "?s1")?, var(subst, "?z1")?, var(subst, "?s")?, var(subst, "?z")?);
    let wrapped = egraph[q].nodes.iter().find_map(|n| match n {
        Onnx::Approx(approximation, [inner]) => Some((*approximation, *inner)),
        _ => None,
    });
    let integer = wrapped.and_then(|(error, inner)| Some((error, inner, integer_node(egraph, inner)?)));
    if wrapped.is_some() && integer.is_none() {
        return None;
    }
    if same_constant(egraph, s1, s) && same_constant(egraph, z1, z) {
        return Some(q);
    }
    if constant_of(egraph, z1).map(|t| t.data_type) != constant_of(egraph, z).map(|t| t.data_type) {
        return None;
    }
    let (error, inner, (op, children, at)) = integer?;
    let mut children = children.to_vec();
    children[at] = s;
    children[at + 1] = z;
    let facts = egraph[inner].data.clone();
    let node = add_typed(egraph, Onnx::Op(op, children.into()), facts.dtype?, facts.shape);
    let inner = egraph.find(inner);
    let layer = egraph.analysis.stand_ins.iter().find(|(&class, _)| egraph.find(class) == inner).map(|(_, &l)| l);
    if let Some(layer) = layer {
        egraph.analysis.stand_ins.insert(node, layer);
    }
    Some(egraph.add(Onnx::Approx(error, [node])))
}

/// (QuantizeLinear ?y ?s ?z ?a) over a data-movement operator: the operator
/// applied to its quantized data inputs (per-tensor parameters only).
pub(crate) fn commute_quantize(egraph: &mut Graph, root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let (y, s, z, qa) = (var(subst, "?y")?, var(subst, "?s")?, var(subst, "?z")?, var(subst, "?a")?);
    let per_tensor = |id: Id| constant_of(egraph, id).is_some_and(|t| t.dims.is_empty());
    if !per_tensor(s) || !per_tensor(z) {
        return None;
    }
    let dtype = egraph[root].data.dtype?;
    let (op, children, data) = egraph[y].nodes.iter().find_map(|n| match n {
        Onnx::Op(op, children) => {
            let (_, data) = DATA_MOVEMENT.iter().find(|(name, _)| op.as_str() == *name)?;
            Some((*op, children.clone(), *data))
        }
        _ => None,
    })?;
    let attrs_at = children.iter().position(|&c| attrs_of(egraph, c).is_some())?;
    if op.as_str() == "Resize" {
        let nearest = attrs_of(egraph, children[attrs_at])?.attr_string("mode").is_none_or(|m| m == "nearest");
        if !nearest {
            return None;
        }
    }
    let mut inputs = children.to_vec();
    for (i, input) in inputs.iter_mut().enumerate().take(attrs_at) {
        if data.is_some_and(|d| d != i) || is_absent(egraph, *input) {
            continue;
        }
        if egraph[*input].data.dtype != Some(DataType::Float) {
            return None;
        }
        let shape = egraph[*input].data.shape.clone();
        *input = add_typed_op(egraph, "QuantizeLinear", vec![*input, s, z], qa, dtype, shape);
    }
    let shape = egraph[root].data.shape.clone();
    let moved = add_typed(egraph, Onnx::Op(op, inputs.into()), dtype, shape);
    // Float readers of `?y` may dequantize the moved integer value instead
    // of recomputing the float one: a Concat read by both integer layers and
    // a float AveragePool then runs its producers once, not once per form.
    let rounding = offer_form(egraph, y, false, ACTIVATION_ROUNDING_ERROR, serde_json::json!({"form": "rounding"}));
    let rounded = Onnx::Approx(rounding, [root]);
    let rounded = egraph.add(rounded);
    let float_shape = egraph[y].data.shape.clone();
    let dequantized = add_typed_op(egraph, "DequantizeLinear", vec![rounded, s, z], qa, DataType::Float, float_shape);
    egraph.union(y, dequantized);
    Some(moved)
}

/// Guard: the zero point is its type's lowest level, so the quantized value
/// cannot go below zero (a Relu before it changes nothing).
pub(crate) fn zero_point_is_lowest(egraph: &Graph, zero_point: Id) -> bool {
    let Some(t) = constant_of(egraph, zero_point) else { return false };
    let Some(values) = tensor::to_i64(t) else { return false };
    let lowest = match tensor::dtype(t) {
        Some(DataType::Uint8) => 0,
        Some(DataType::Int8) => -128,
        _ => return false,
    };
    values.iter().all(|&v| v == lowest)
}

/// Guard: clipping to [lo, hi] changes nothing once the value is quantized
/// with (scale, zero point): lo rounds to or below the lowest level and hi
/// to or above the highest.
pub(crate) fn clip_within_quantized_range(egraph: &Graph, lo: Id, hi: Id, scale: Id, zero_point: Id) -> bool {
    let scalar = |id: Id| -> Option<f64> {
        let values = tensor::to_f64(constant_of(egraph, id)?)?;
        (values.len() == 1).then(|| values[0])
    };
    let (Some(scale), Some(zero)) = (scalar(scale), scalar(zero_point)) else { return false };
    let (lowest, highest) = match constant_of(egraph, zero_point).and_then(tensor::dtype) {
        Some(DataType::Uint8) => ActivationType::Uint8.levels(),
        Some(DataType::Int8) => ActivationType::Int8.levels(),
        _ => return false,
    };
    if scale <= 0.0 {
        return false;
    }
    let level = |v: f64| (v / scale).round() + zero;
    let lo_ok = is_absent(egraph, lo) || scalar(lo).is_some_and(|v| level(v) <= f64::from(lowest));
    let hi_ok = is_absent(egraph, hi) || scalar(hi).is_some_and(|v| level(v) >= f64::from(highest));
    lo_ok && hi_ok
}

/// Whether an e-node only rounds a value moved in integer form (the
/// DequantizeLinear [`commute_quantize`] offers float readers): it makes no
/// layer integer, so `--quantize all` does not force it.
pub fn is_rounding_only(egraph: &Graph, node: &Onnx) -> bool {
    match node {
        Onnx::Op(op, children) if op.as_str() == "DequantizeLinear" => egraph[children[0]]
            .nodes
            .iter()
            .any(|n| matches!(n, Onnx::Approx(_, [inner]) if integer_node(egraph, *inner).is_none())),
        _ => false,
    }
}

/// Whether `node` makes a layer quantized: a quantized alternative that does
/// more than round (a value moved in integer form and read back is a
/// rounding, not a layer; see [`is_rounding_only`]).
pub fn is_layer_alternative(egraph: &Graph, node: &Onnx) -> bool {
    is_quantized_alternative(egraph, node) && !is_rounding_only(egraph, node)
}

/// Whether an e-node is a MaxPool on integers. ONNX Runtime runs one fast
/// only between integer kernels (in their NHWC layout); alone, as measured,
/// it is many times slower than in float (1.9 ms against 0.11 ms on a
/// 24×112×112 input). `--quantize all` keeps integer chains through it.
pub fn is_integer_max_pool(egraph: &Graph, class: Id, node: &Onnx) -> bool {
    matches!(node, Onnx::Op(op, _) if op.as_str() == "MaxPool")
        && egraph[class].data.dtype.is_some_and(|d| matches!(d, DataType::Uint8 | DataType::Int8))
}

/// Whether an e-node is a quantized alternative of its class: a weight-only
/// layer (this family's approximation) or a DequantizeLinear reading an
/// integer node.
pub fn is_quantized_alternative(egraph: &Graph, node: &Onnx) -> bool {
    let ours = |approximation: &Approximation| {
        egraph.analysis.alternatives.get(*approximation).is_some_and(|record| record.family == NAME)
    };
    match node {
        Onnx::Approx(approximation, _) => ours(approximation),
        Onnx::Op(op, children) if op.as_str() == "DequantizeLinear" => {
            egraph[children[0]].nodes.iter().any(|n| matches!(n, Onnx::Approx(a, _) if ours(a)))
        }
        _ => false,
    }
}
