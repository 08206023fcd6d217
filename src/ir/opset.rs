//! Default-domain opset upgrade: raises a model's `ai.onnx` opset from any
//! version 7..=24 to a higher one (up to 24), rewriting every operator whose
//! signature changed in between so the model computes the same thing, and
//! raises the IR version to what the target opset needs.
//!
//! This module owns the knowledge of which ONNX operators changed how between
//! opsets 7 and 24 ([`upgrade`] and the one function per operator family
//! below). Operators of other domains are left alone. Subgraphs (If, Loop,
//! Scan bodies, of nodes of any domain) and model-local functions that import
//! the default domain are upgraded the same way. A failed upgrade changes
//! nothing: the work happens on a copy that replaces the model only at the end.
//!
//! Attributes that became inputs become int64 (or float, for values) tensors:
//! initializers with fresh names, or `Constant` nodes inside functions (which
//! have no initializers). Raising the IR version from below 4 also removes the
//! initializers from the graph inputs: IR 3 had to list them there, IR 4 and
//! later would make each one an input the caller may override.
//!
//! Operators rewritten, by the opset whose change the upgrade crosses:
//!
//! - 9 BatchNormalization: `spatial` removed; spatial=1 (the default) is
//!   dropped, spatial=0 (per-activation statistics) is refused.
//! - 9 Scan: Scan-8's batch axis is gone in Scan-9; refused.
//! - 9 MeanVarianceNormalization: the experimental form before 9 takes
//!   `across_channels` (axes [1,2,3], else [2,3] of its NCHW input) and
//!   `normalize_variance` (0 is refused: there is no mean-only form).
//! - 10 Slice: `starts`, `ends`, `axes` attributes → int64 inputs.
//! - 10 TopK: `k` attribute → int64 input of shape [1].
//! - 10 Upsample → Resize (Upsample is deprecated): the `scales` attribute
//!   (Upsample-7) or input (Upsample-9) becomes Resize's scales; `bilinear`
//!   mode is `linear`; then as Resize at 11.
//! - 10 Dropout: the mask output turns bool; an unused mask is dropped, a read
//!   one is refused.
//! - 10 experimental operators removed from ONNX: ImageScaler → Mul, Add
//!   (per channel); Scale → Mul; Affine → Mul, Add; ScaledTanh → Mul, Tanh,
//!   Mul; ParametricSoftplus → Mul, Softplus, Mul; DynamicSlice → Slice;
//!   Crop → Slice of H and W. GRUUnit and GivenTensorFill are refused.
//! - 11 Clip: `min`, `max` attributes → scalar inputs of the input's type.
//! - 11 Pad: `pads` → int64 input, `value` → scalar input (left out when 0).
//! - 11 Resize: a `roi` input is inserted (an empty tensor at 11-12, omitted
//!   from 13 on) and Resize-10's sampling is spelled out:
//!   coordinate_transformation_mode `asymmetric` and, for `nearest`,
//!   nearest_mode `floor` (as ONNX's own converter does), or `ceil` when the
//!   constant scales only shrink (ONNX Runtime's opset-10 kernel rounds
//!   downsampling up). Constant scales that both grow and shrink are refused.
//! - 11 Scatter → ScatterElements (Scatter is deprecated; same semantics).
//! - 12 Dropout: `ratio` attribute → float scalar input.
//! - 13 Softmax, LogSoftmax, Hardmax: before 13 the input was coerced to 2-D
//!   at `axis` (default 1); from 13 the op runs along one `axis` (default -1).
//!   Nothing changes when the axis is the last one of a known rank; otherwise
//!   the op becomes Flatten(axis) → op(axis=-1) → Reshape(Shape(x)).
//! - 13 Squeeze, Unsqueeze, ReduceSum: `axes` attribute → int64 input.
//! - 13 Split: `split` attribute → int64 input.
//! - 14 BatchNormalization: the training outputs (saved mean/var) are gone;
//!   unused extra outputs are dropped, read ones refused.
//! - 16 RoiAlign: coordinate_transformation_mode set to `output_half_pixel`,
//!   the old behaviour (the new default is `half_pixel`).
//! - 18 ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
//!   ReduceLogSum, ReduceLogSumExp, ReduceSumSquare: `axes` → int64 input.
//! - 18 Split: `num_outputs` set to the output count when no split input is
//!   given (Split-18 needs one of the two).
//! - 20 GridSample: mode `bilinear` → `linear`, `bicubic` → `cubic`.
//! - 20 DFT: `axis` attribute → int64 scalar input (always given: its default
//!   moved from 1 to -2).
//! - 21 GroupNormalization: scale and bias go from one value per group to one
//!   per channel: each is repeated C/num_groups times (Reshape, Expand,
//!   Reshape), which needs the channel count known.
//!
//! Every other ai.onnx operator only gained types, or attributes and optional
//! inputs whose defaults keep the old behaviour, between 7 and 24
//! ([`UNCHANGED`]): for instance Gemm's C became optional (11), pools gained
//! ceil_mode and dilations (10, 19), GRU/LSTM/RNN a layout (14), Reshape
//! allowzero (14), If/Loop/Scan-9+ sequence and optional types; at 23
//! QuantizeLinear's `precision` and DequantizeLinear's `output_dtype` (their
//! defaults keep the old types), at 24 Cast's `round_mode` (float8e8m0 only)
//! and Attention's optional `nonpad_kv_seqlen`. An operator
//! in neither list is refused, since its semantics are unknown here.

use std::collections::{BTreeMap, HashSet};

use petgraph::stable_graph::NodeIndex;
use serde::Serialize;

use super::dtype::DataType;
use super::graph::{AttributeList, Graph, Model, Node, Producer, Value, ValueId, ValueInfoEntry};
use super::names::Names;
use super::shape::Shape;
use super::{attribute, tensor, IrError};
use crate::onnx::proto::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};

/// The oldest default-domain opset pare upgrades from.
pub const MIN_SOURCE_OPSET: i64 = 7;
/// The newest default-domain opset pare upgrades to.
pub const MAX_TARGET_OPSET: i64 = 24;

/// The lowest IR version that may import a default-domain opset (ONNX's
/// versioning table).
pub fn min_ir_version(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        23 => 11,
        _ => 12,
    }
}

/// The default-domain operators pare's rewrites write in a form newer than
/// their first version, or that are new since opset 7: (operator, the opset
/// that first defines it, the opset since which its signature is the one
/// pare writes). Operators not listed have kept their signature since 7.
const WRITTEN_FORMS: &[(&str, i64, i64)] = &[
    ("Clip", 6, 11),
    ("HardSwish", 14, 14),
    ("LayerNormalization", 17, 17),
    ("Mish", 18, 18),
    ("Gelu", 20, 20),
    ("Swish", 24, 24),
];

/// Whether a rewrite may write operator `op_type` (default domain, in the
/// form pare writes it) into a model at opset `model` that may be raised to
/// `target`: the model's opset already has that form, or the operator is
/// new since then (so its nodes mean nothing older and the model can be
/// raised to the opset that defines it, see [`opset_needed_by`]). An
/// operator whose older form differs (Clip before 11) needs the model at
/// the newer opset already, since an upgrade would read it as the old form.
pub fn may_write(op_type: &str, model: i64, target: i64) -> bool {
    match WRITTEN_FORMS.iter().find(|(op, _, _)| *op == op_type) {
        None => true,
        Some(&(_, first, form)) => model >= form || (model < first && form <= target),
    }
}

/// The opset that defines operator `op_type` (default domain), when a model
/// at `opset` does not know it: what a model holding it must be raised to.
pub fn opset_needed_by(op_type: &str, opset: i64) -> Option<i64> {
    WRITTEN_FORMS.iter().find(|&&(op, first, _)| op == op_type && first > opset).map(|&(_, _, form)| form)
}

/// Why a model cannot be upgraded. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum OpsetError {
    #[error("the model imports no default-domain (ai.onnx) opset")]
    NoDefaultOpset,
    #[error(
        "target opset {target} is not supported: pare upgrades to opsets {MIN_SOURCE_OPSET} to {MAX_TARGET_OPSET}"
    )]
    UnsupportedTarget { target: i64 },
    #[error("{what} imports opset {from}; pare upgrades from opset {MIN_SOURCE_OPSET} or later")]
    SourceTooOld { what: String, from: i64 },
    #[error("the model is at opset {from}, above the target {target}; pare does not downgrade")]
    Downgrade { from: i64, target: i64 },
    #[error("the model carries training_info graphs, which pare does not upgrade")]
    TrainingInfo,
    #[error("node '{node}' ({op}){scope}: {reason}")]
    Node { node: String, op: String, scope: String, reason: String },
    #[error("{scope}: {source}")]
    Subgraph { scope: String, source: IrError },
    #[error(transparent)]
    Ir(#[from] IrError),
}

/// What an upgrade did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Upgrade {
    pub from_opset: i64,
    pub to_opset: i64,
    /// The IR version the model stated, if any.
    pub from_ir_version: Option<i64>,
    pub to_ir_version: i64,
    /// Nodes rewritten, by their original operator type, over the main graph,
    /// subgraphs and functions (a node counts once however many changes it took).
    pub rewritten: BTreeMap<String, usize>,
    /// Initializers no longer listed as graph inputs (raising IR from below 4).
    pub initializers_unlisted: usize,
    /// Subgraphs (If/Loop/Scan bodies) walked.
    pub subgraphs: usize,
    /// Model-local functions whose default-domain opset was raised.
    pub functions: usize,
}

impl Upgrade {
    /// Nodes rewritten in all.
    pub fn total_rewritten(&self) -> usize {
        self.rewritten.values().sum()
    }
}

/// Raises the default-domain opset of `model` to `target`, rewriting every
/// operator whose signature changed (see the module doc), and the IR version
/// to at least [`min_ir_version`] of the target. Shapes are inferred before
/// (Softmax needs ranks) and after (new values get theirs). On error the
/// model is unchanged.
pub fn upgrade(model: &mut Model, target: i64) -> Result<Upgrade, OpsetError> {
    if !(MIN_SOURCE_OPSET..=MAX_TARGET_OPSET).contains(&target) {
        return Err(OpsetError::UnsupportedTarget { target });
    }
    let from = model.opset("").ok_or(OpsetError::NoDefaultOpset)?;
    if from > target {
        return Err(OpsetError::Downgrade { from, target });
    }
    if from < MIN_SOURCE_OPSET {
        return Err(OpsetError::SourceTooOld { what: "the model".into(), from });
    }
    if !model.header.training_info.is_empty() && from < target {
        return Err(OpsetError::TrainingInfo);
    }
    let from_ir_version = model.header.ir_version;
    let to_ir_version = from_ir_version.unwrap_or(0).max(min_ir_version(target));

    // Work on a copy (tensor bytes are shared, not copied) so an error leaves the model as it was.
    let mut work = model.clone();
    super::infer::infer(&mut work, &[])?;
    let mut upgrader = Upgrader {
        step: Step { from, to: target },
        source_ir_version: from_ir_version.unwrap_or(0),
        names: Names::of_model(&work),
        report: Upgrade { from_opset: from, to_opset: target, from_ir_version, to_ir_version, ..Default::default() },
    };
    upgrade_graph(&mut upgrader, &mut work.graph, "", ConstantStyle::Initializer)?;
    for function in &mut work.header.functions {
        upgrade_function(&mut upgrader, function)?;
    }
    set_default_opset(&mut work.header.opset_import, target);
    work.header.ir_version = Some(to_ir_version);
    if from_ir_version.unwrap_or(0) < 4 && to_ir_version >= 4 {
        upgrader.report.initializers_unlisted = unlist_initializers(&mut work.graph);
    }
    super::infer::infer(&mut work, &[])?;
    *model = work;
    Ok(upgrader.report)
}

/// The default-domain operators whose signature did not change between
/// opsets 7 and 24 other than by added types, or by added attributes and
/// optional inputs whose defaults keep the old behaviour.
#[rustfmt::skip]
pub const UNCHANGED: &[&str] = &[
    "Abs", "Acos", "Acosh", "Add", "AffineGrid", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "Attention", "AveragePool", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "BlackmanWindow",
    "Cast", "CastLike", "Ceil", "Celu", "CenterCropPad", "Col2Im", "Compress", "Concat", "ConcatFromSequence",
    "Constant", "ConstantOfShape", "Conv", "ConvInteger", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv",
    "DepthToSpace", "DequantizeLinear", "Det", "Div", "DynamicQuantizeLinear", "Einsum", "Elu", "Equal", "Erf", "Exp",
    "Expand", "EyeLike", "Flatten", "Floor", "GRU", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "HammingWindow", "HannWindow",
    "HardSigmoid", "HardSwish", "Identity", "If", "ImageDecoder", "InstanceNormalization", "IsInf", "IsNaN", "LRN",
    "LSTM", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "Loop", "LpNormalization", "LpPool",
    "MatMul", "MatMulInteger", "Max", "MaxPool", "MaxRoiPool", "MaxUnpool", "Mean", "MelWeightMatrix", "Min", "Mish",
    "Mod", "Mul", "Multinomial", "Neg", "NegativeLogLikelihoodLoss", "NonMaxSuppression", "NonZero", "Not", "OneHot",
    "Optional", "OptionalGetElement", "OptionalHasElement", "Or", "PRelu", "Pow", "QLinearConv", "QLinearMatMul",
    "QuantizeLinear", "RMSNormalization", "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range",
    "Reciprocal", "RegexFullMatch", "Relu", "Reshape", "ReverseSequence", "RotaryEmbedding", "Round", "STFT", "ScatterElements",
    "ScatterND", "Selu", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
    "SequenceLength", "SequenceMap", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size",
    "SoftmaxCrossEntropyLoss", "Softplus", "Softsign", "SpaceToDepth", "SplitToSequence", "Sqrt", "StringConcat",
    "StringNormalizer", "StringSplit", "Sub", "Sum", "Swish", "Tan", "Tanh", "TensorScatter", "TfIdfVectorizer", "ThresholdedRelu", "Tile",
    "Transpose", "Trilu", "Unique", "Where", "Xor",
];

/// The Reduce operators whose `axes` became an input at 18 (ReduceSum's did at 13).
const REDUCE_AXES_AT_18: &[&str] = &[
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
];

/// Rewrites one default-domain node for the upgrade; true when it changed.
fn upgrade_node(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    let op = rw.node(n).op_type.clone();
    match op.as_str() {
        "Softmax" | "LogSoftmax" | "Hardmax" => single_axis(rw, n),
        "Slice" => slice_inputs(rw, n),
        "TopK" => topk_input(rw, n),
        "Clip" => clip_inputs(rw, n),
        "Pad" => pad_inputs(rw, n),
        "Squeeze" | "Unsqueeze" | "ReduceSum" => axes_input(rw, n, 13),
        reduce if REDUCE_AXES_AT_18.contains(&reduce) => axes_input(rw, n, 18),
        "Split" => split_inputs(rw, n),
        "Dropout" => dropout(rw, n),
        "BatchNormalization" => batch_normalization(rw, n),
        "Upsample" => upsample_to_resize(rw, n),
        "Resize" => resize_inputs(rw, n),
        "Scatter" => renamed(rw, n, 11, "ScatterElements"),
        "DynamicSlice" => renamed(rw, n, 10, "Slice"),
        "RoiAlign" => roi_align(rw, n),
        "GridSample" => grid_sample(rw, n),
        "DFT" => dft_axis(rw, n),
        "GroupNormalization" => group_normalization(rw, n),
        "ImageScaler" | "Scale" | "Affine" | "ScaledTanh" | "ParametricSoftplus" => experimental_arithmetic(rw, n),
        "Scan" => refused_before(rw, n, 9, "Scan-8 has a batch axis that Scan-9 removed"),
        "MeanVarianceNormalization" => mean_variance_axes(rw, n),
        "Crop" => crop_to_slice(rw, n),
        "GRUUnit" | "GivenTensorFill" => {
            refused_before(rw, n, 10, "this experimental operator was removed at opset 10 and has no rewrite here")
        }
        op if UNCHANGED.contains(&op) => Ok(false),
        _ => Err(rw.fail(n, "not an ai.onnx operator pare knows the version history of")),
    }
}

// ---------------------------------------------------------------------------
// Operator families

/// Softmax, LogSoftmax, Hardmax at 13: 2-D coercion → one axis.
fn single_axis(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(13) {
        return Ok(false);
    }
    let axis = rw.int_attribute(n, "axis")?.unwrap_or(1);
    let x = rw.required_input(n, 0)?;
    if let Some(rank) = rw.rank(x) {
        let rank = i64::try_from(rank).unwrap_or(i64::MAX);
        let normalized = if axis < 0 { axis + rank } else { axis };
        if !(0..rank.max(1)).contains(&normalized) {
            return Err(rw.fail(n, format!("axis {axis} is out of range for rank {rank}")));
        }
        if normalized == rank - 1 || rank == 0 {
            return Ok(false);
        }
    }
    // Coerce explicitly: Flatten(x, axis) → op(axis=-1) → Reshape(·, Shape(x)).
    let flat = rw.add_node(n, "Flatten", vec![Some(x)], vec![attribute::int("axis", axis)], None);
    let (inner, output) = rw.detach_output(n, 0, "2d")?;
    rw.set_input(n, 0, Some(flat));
    rw.set_attribute(n, attribute::int("axis", -1));
    let shape = rw.add_node(n, "Shape", vec![Some(x)], vec![], None);
    rw.add_node(n, "Reshape", vec![Some(inner), Some(shape)], vec![], Some(output));
    Ok(true)
}

/// Slice at 10: starts, ends, axes → inputs 1..=3.
fn slice_inputs(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(10) {
        return Ok(false);
    }
    for (slot, name) in [(1, "starts"), (2, "ends")] {
        if !rw.ints_to_input(n, name, slot)? {
            return Err(rw.fail(n, format!("has no '{name}' attribute")));
        }
    }
    rw.ints_to_input(n, "axes", 3)?;
    Ok(true)
}

/// TopK at 10: k → input 1, a one-element int64 tensor.
fn topk_input(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(10) {
        return Ok(false);
    }
    let k = rw.take_attribute(n, "k")?.and_then(|a| a.i).ok_or_else(|| rw.fail(n, "has no integer 'k' attribute"))?;
    let k = rw.int64_constant(n, "k", &[1], &[k]);
    rw.set_input(n, 1, Some(k));
    Ok(true)
}

/// Clip at 11: min, max → scalar inputs 1 and 2 of the input's type.
fn clip_inputs(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(11) {
        return Ok(false);
    }
    let mut changed = false;
    for (slot, name) in [(1, "min"), (2, "max")] {
        if let Some(bound) = rw.take_float(n, name)? {
            let bound = rw.scalar_like_input(n, name, f64::from(bound))?;
            rw.set_input(n, slot, Some(bound));
            changed = true;
        }
    }
    Ok(changed)
}

/// Pad at 11: pads → int64 input 1, value → scalar input 2 (omitted when 0).
fn pad_inputs(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(11) {
        return Ok(false);
    }
    if !rw.ints_to_input(n, "pads", 1)? {
        return Err(rw.fail(n, "has no 'pads' attribute"));
    }
    let value = rw.take_float(n, "value")?.unwrap_or(0.0);
    let constant_mode = rw.string_attribute(n, "mode")?.is_none_or(|mode| mode == "constant");
    if value != 0.0 && constant_mode {
        let value = rw.scalar_like_input(n, "value", f64::from(value))?;
        rw.set_input(n, 2, Some(value));
    }
    Ok(true)
}

/// Squeeze, Unsqueeze, ReduceSum at 13 and the other Reduce ops at 18: axes → input 1.
fn axes_input(rw: &mut Rewrite, n: NodeIndex, version: i64) -> Result<bool, OpsetError> {
    if !rw.step().crosses(version) {
        return Ok(false);
    }
    rw.ints_to_input(n, "axes", 1)
}

/// Split at 13 (split → input 1) and 18 (num_outputs when there is no split input).
fn split_inputs(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    let mut changed = false;
    if rw.step().crosses(13) {
        changed |= rw.ints_to_input(n, "split", 1)?;
    }
    if rw.step().crosses(18) && rw.node(n).input(1).is_none() && rw.node(n).attribute("num_outputs").is_none() {
        let count = i64::try_from(rw.node(n).outputs.len()).unwrap_or(i64::MAX);
        rw.set_attribute(n, attribute::int("num_outputs", count));
        changed = true;
    }
    Ok(changed)
}

/// Dropout at 10 (the mask turns bool) and 12 (ratio → input 1).
fn dropout(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    let mut changed = false;
    if rw.step().crosses(10) {
        changed |= rw.drop_outputs_from(n, 1, "the mask output turns bool at opset 10")?;
    }
    if rw.step().crosses(12) {
        if let Some(ratio) = rw.take_float(n, "ratio")? {
            let dtype = rw.float_type_of_input(n).unwrap_or(DataType::Float);
            let ratio = rw.float_constant(n, "ratio", dtype, f64::from(ratio))?;
            rw.set_input(n, 1, Some(ratio));
            changed = true;
        }
    }
    Ok(changed)
}

/// BatchNormalization at 9 (spatial removed) and 14 (training outputs removed).
fn batch_normalization(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    let mut changed = false;
    if rw.step().crosses(9) {
        if let Some(spatial) = rw.take_attribute(n, "spatial")? {
            if spatial.i != Some(1) {
                return Err(rw.fail(n, "spatial=0 (per-activation statistics) has no equivalent from opset 9"));
            }
            changed = true;
        }
    }
    if rw.step().crosses(14) {
        changed |= rw.drop_outputs_from(n, 1, "BatchNormalization-14 has no saved mean/variance outputs")?;
    }
    Ok(changed)
}

/// Upsample → Resize at 10 (scales from the attribute of Upsample-7 or the input of Upsample-9).
fn upsample_to_resize(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(10) {
        return Ok(false);
    }
    if let Some(scales) = rw.take_attribute(n, "scales")? {
        let constant = tensor::from_f32("", &[len_i64(scales.floats.len())], &scales.floats);
        let scales = rw.constant(n, "scales", constant);
        rw.set_input(n, 1, Some(scales));
    }
    rw.required_input(n, 1)?;
    if rw.string_attribute(n, "mode")?.as_deref() == Some("bilinear") {
        rw.set_attribute(n, attribute::string("mode", "linear"));
    }
    rw.graph.nodes[n].op_type = "Resize".into();
    resize_inputs(rw, n)?;
    Ok(true)
}

/// Resize at 11: (X, scales) → (X, roi, scales), Resize-10's sampling spelled out.
fn resize_inputs(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(11) {
        return Ok(false);
    }
    let x = rw.required_input(n, 0)?;
    let scales = rw.required_input(n, 1)?;
    let roi = (rw.step().to < 13).then(|| rw.constant(n, "roi", tensor::from_f32("", &[0], &[])));
    rw.graph.nodes[n].inputs = vec![Some(x), roi, Some(scales)];
    rw.set_attribute(n, attribute::string("coordinate_transformation_mode", "asymmetric"));
    if rw.string_attribute(n, "mode")?.is_none_or(|mode| mode == "nearest") {
        let rounding = nearest_rounding(rw, n, scales)?;
        rw.set_attribute(n, attribute::string("nearest_mode", rounding));
    }
    Ok(true)
}

/// The nearest_mode that reproduces Resize-10's (and Upsample's) nearest
/// sampling: floor, except that ONNX Runtime's opset-10 kernel rounds up when
/// downsampling, which only constant scales reveal.
fn nearest_rounding(rw: &Rewrite, n: NodeIndex, scales: ValueId) -> Result<&'static str, OpsetError> {
    let Some(scales) = rw.graph.constant(scales).and_then(tensor::to_f64) else { return Ok("floor") };
    let shrinks = scales.iter().any(|&s| s < 1.0);
    let grows = scales.iter().any(|&s| s > 1.0);
    match (shrinks, grows) {
        (true, true) => Err(rw.fail(
            n,
            "nearest resize with scales that both grow and shrink has no single nearest_mode matching opset 10",
        )),
        (true, false) => Ok("ceil"),
        _ => Ok("floor"),
    }
}

/// An operator renamed at `version` with the same inputs, outputs and attributes.
fn renamed(rw: &mut Rewrite, n: NodeIndex, version: i64, new_op: &str) -> Result<bool, OpsetError> {
    if !rw.step().crosses(version) {
        return Ok(false);
    }
    rw.graph.nodes[n].op_type = new_op.into();
    Ok(true)
}

/// RoiAlign at 16: keep the old output_half_pixel sampling explicitly.
fn roi_align(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(16) || rw.node(n).attribute("coordinate_transformation_mode").is_some() {
        return Ok(false);
    }
    rw.set_attribute(n, attribute::string("coordinate_transformation_mode", "output_half_pixel"));
    Ok(true)
}

/// GridSample at 20: interpolation modes renamed.
fn grid_sample(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(20) {
        return Ok(false);
    }
    let renamed = match rw.string_attribute(n, "mode")?.as_deref() {
        Some("bilinear") => "linear",
        Some("bicubic") => "cubic",
        _ => return Ok(false),
    };
    rw.set_attribute(n, attribute::string("mode", renamed));
    Ok(true)
}

/// DFT at 20: axis → int64 scalar input 2 (given even when defaulted: the default moved).
fn dft_axis(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(20) {
        return Ok(false);
    }
    let axis = rw.take_attribute(n, "axis")?.and_then(|a| a.i).unwrap_or(1);
    let axis = rw.int64_constant(n, "axis", &[], &[axis]);
    rw.set_input(n, 2, Some(axis));
    Ok(true)
}

/// GroupNormalization at 21: per-group scale and bias → per-channel.
fn group_normalization(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(21) {
        return Ok(false);
    }
    let groups = rw.int_attribute(n, "num_groups")?.ok_or_else(|| rw.fail(n, "has no 'num_groups' attribute"))?;
    let x = rw.required_input(n, 0)?;
    let channels = rw.graph.value(x).shape.as_ref().and_then(|s| s.0.get(1)).and_then(|d| d.known());
    let channels = channels.ok_or_else(|| {
        rw.fail(n, "the channel count of its input is unknown, so per-group scale and bias cannot be repeated")
    })?;
    if groups <= 0 || channels % groups != 0 {
        return Err(rw.fail(n, format!("{channels} channels do not split into {groups} groups")));
    }
    if channels == groups {
        return Ok(false);
    }
    let column = rw.int64_constant(n, "column_shape", &[2], &[-1, 1]);
    let repeat = rw.int64_constant(n, "repeat_shape", &[2], &[1, channels / groups]);
    let flat = rw.int64_constant(n, "flat_shape", &[1], &[-1]);
    for slot in [1, 2] {
        let per_group = rw.required_input(n, slot)?;
        let column = rw.add_node(n, "Reshape", vec![Some(per_group), Some(column)], vec![], None);
        let repeated = rw.add_node(n, "Expand", vec![Some(column), Some(repeat)], vec![], None);
        let per_channel = rw.add_node(n, "Reshape", vec![Some(repeated), Some(flat)], vec![], None);
        rw.set_input(n, slot, Some(per_channel));
    }
    Ok(true)
}

/// One step of the arithmetic an experimental operator stands for.
enum Stage {
    /// Multiply by a scalar.
    Scale(f64),
    /// Add one value per channel (axis 1) of an NCHW tensor, or one scalar.
    Shift(Vec<f64>),
    /// An elementwise ai.onnx operator.
    Apply(&'static str),
}

/// ImageScaler, Scale, Affine, ScaledTanh, ParametricSoftplus (experimental,
/// removed at 10) → the Mul/Add/Tanh/Softplus chain they compute.
fn experimental_arithmetic(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(10) {
        return Ok(false);
    }
    let op = rw.node(n).op_type.clone();
    let float = |name: &str| rw.node(n).attr_float(name).map(f64::from);
    let required = |name: &str| float(name).ok_or_else(|| rw.fail(n, format!("has no '{name}' attribute")));
    let stages = match op.as_str() {
        "ImageScaler" => {
            let bias = rw.node(n).attribute("bias").map(|a| a.floats.iter().map(|&b| f64::from(b)).collect());
            let bias = bias.unwrap_or_default();
            vec![Stage::Scale(float("scale").unwrap_or(1.0)), Stage::Shift(bias)]
        }
        "Scale" => vec![Stage::Scale(float("scale").unwrap_or(1.0))],
        "Affine" => vec![Stage::Scale(float("alpha").unwrap_or(1.0)), Stage::Shift(vec![float("beta").unwrap_or(0.0)])],
        "ScaledTanh" => vec![Stage::Scale(required("beta")?), Stage::Apply("Tanh"), Stage::Scale(required("alpha")?)],
        "ParametricSoftplus" => {
            vec![Stage::Scale(required("beta")?), Stage::Apply("Softplus"), Stage::Scale(required("alpha")?)]
        }
        _ => return Err(rw.fail(n, "not an experimental arithmetic operator")),
    };
    replace_with_stages(rw, n, &stages)?;
    Ok(true)
}

/// Replaces a one-input, one-output node by a chain of stages.
fn replace_with_stages(rw: &mut Rewrite, n: NodeIndex, stages: &[Stage]) -> Result<(), OpsetError> {
    let mut current = rw.required_input(n, 0)?;
    let output = rw.node(n).output(0).ok_or_else(|| rw.fail(n, "has no output"))?;
    let dtype = rw.float_type_of_input(n).ok_or_else(|| rw.fail(n, "the input's float type is unknown"))?;
    let steps: Vec<(&str, Option<TensorProto>)> = stages
        .iter()
        .map(|stage| match stage {
            Stage::Scale(factor) => Ok(("Mul", Some(tensor::from_f64(dtype, &[], &[*factor]).ok_or(dtype)?))),
            Stage::Shift(values) if values.len() > 1 => {
                Ok(("Add", Some(tensor::from_f64(dtype, &[1, len_i64(values.len()), 1, 1], values).ok_or(dtype)?)))
            }
            Stage::Shift(values) => {
                Ok(("Add", Some(tensor::from_f64(dtype, &[], &[values.first().copied().unwrap_or(0.0)]).ok_or(dtype)?)))
            }
            Stage::Apply(op) => Ok((*op, None)),
        })
        .collect::<Result<_, DataType>>()
        .map_err(|dtype| rw.fail(n, format!("has input type {dtype}, not a float type")))?;
    let last = steps.len().saturating_sub(1);
    for (index, (op, operand)) in steps.into_iter().enumerate() {
        let mut inputs = vec![Some(current)];
        if let Some(operand) = operand {
            inputs.push(Some(rw.constant(n, &op.to_lowercase(), operand)));
        }
        current = rw.add_node(n, op, inputs, vec![], (index == last).then_some(output));
    }
    // Inference does not know the experimental ops: say what the chain keeps
    // (type and shape), so a following experimental op sees its input's type.
    let input = rw.graph.value(rw.required_input(n, 0)?).clone();
    let output = rw.graph.value_mut(output);
    output.dtype = Some(dtype);
    output.shape = output.shape.take().or(input.shape);
    rw.graph.nodes.remove_node(n);
    Ok(())
}

/// MeanVarianceNormalization at 9: the experimental form's `across_channels`
/// and `normalize_variance` → `axes` over an NCHW input.
fn mean_variance_axes(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(9) {
        return Ok(false);
    }
    let across_channels = rw.take_attribute(n, "across_channels")?.and_then(|a| a.i).unwrap_or(0);
    if rw.take_attribute(n, "normalize_variance")?.and_then(|a| a.i).unwrap_or(1) != 1 {
        return Err(rw.fail(n, "normalize_variance=0 (mean subtraction only) has no form from opset 9"));
    }
    if rw.rank(rw.required_input(n, 0)?) != Some(4) {
        return Err(rw.fail(n, "the experimental form normalizes an NCHW input, and this input's rank is not 4"));
    }
    let axes: &[i64] = if across_channels != 0 { &[1, 2, 3] } else { &[2, 3] };
    rw.set_attribute(n, attribute::ints("axes", axes));
    Ok(true)
}

/// Crop (experimental, removed at 10) → Slice of H and W: from the top-left
/// border, to the bottom-right border or over `scale` (height, width).
fn crop_to_slice(rw: &mut Rewrite, n: NodeIndex) -> Result<bool, OpsetError> {
    if !rw.step().crosses(10) {
        return Ok(false);
    }
    let border = rw.take_attribute(n, "border")?.map(|a| a.ints).unwrap_or_default();
    let &[left, top, right, bottom] = border.as_slice() else {
        return Err(rw.fail(n, "'border' is not (left, top, right, bottom)"));
    };
    let scale = rw.take_attribute(n, "scale")?.map(|a| a.ints).unwrap_or_default();
    // A border of 0 ends at the edge; a negative end counts from it.
    let from_edge = |border: i64| if border == 0 { i64::MAX } else { -border };
    let ends = match scale.as_slice() {
        [] => [from_edge(bottom), from_edge(right)],
        &[height, width] => [top + height, left + width],
        _ => return Err(rw.fail(n, "'scale' is not (height, width)")),
    };
    let starts = rw.int64_constant(n, "starts", &[2], &[top, left]);
    let ends = rw.int64_constant(n, "ends", &[2], &ends);
    let axes = rw.int64_constant(n, "axes", &[2], &[2, 3]);
    let x = rw.required_input(n, 0)?;
    rw.graph.nodes[n].inputs = vec![Some(x), Some(starts), Some(ends), Some(axes)];
    rw.graph.nodes[n].op_type = "Slice".into();
    Ok(true)
}

/// An operator (or operator version) that cannot be upgraded past `version`.
fn refused_before(rw: &mut Rewrite, n: NodeIndex, version: i64, why: &str) -> Result<bool, OpsetError> {
    if rw.step().crosses(version) {
        return Err(rw.fail(n, why));
    }
    Ok(false)
}

// ---------------------------------------------------------------------------
// Graphs, subgraphs and functions

/// The source and target opsets of the graph being rewritten.
#[derive(Clone, Copy, Debug)]
struct Step {
    from: i64,
    to: i64,
}

impl Step {
    /// Whether the upgrade passes the opset at which a change took effect.
    fn crosses(self, version: i64) -> bool {
        self.from < version && version <= self.to
    }
}

/// How the constants made from attributes enter a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConstantStyle {
    Initializer,
    /// Function bodies have no initializers.
    ConstantNode,
}

/// State shared by every graph of one upgrade.
struct Upgrader {
    step: Step,
    source_ir_version: i64,
    names: Names,
    report: Upgrade,
}

/// Rewrites every node of a graph (subgraphs first), then rebuilds its edges.
fn upgrade_graph(up: &mut Upgrader, graph: &mut Graph, scope: &str, style: ConstantStyle) -> Result<(), OpsetError> {
    let order = graph.topological_order().unwrap_or_else(|_| graph.nodes.node_indices().collect());
    for n in order {
        let owner = format!("node '{}' ({}){scope}", graph.nodes[n].name, graph.nodes[n].op_type);
        let mut attributes = std::mem::take(&mut graph.nodes[n].attributes);
        let walked = upgrade_subgraphs(up, &mut attributes, &owner);
        graph.nodes[n].attributes = attributes;
        walked?;
        let node = &graph.nodes[n];
        if !is_default_domain(&node.domain) {
            continue;
        }
        let op = node.op_type.clone();
        let mut rewrite = Rewrite { up: &mut *up, graph: &mut *graph, scope, style };
        if upgrade_node(&mut rewrite, n)? {
            *up.report.rewritten.entry(op).or_default() += 1;
        }
    }
    graph.rebuild_edges();
    Ok(())
}

/// Upgrades the graphs held in the attributes of a node (`owner` describes it).
fn upgrade_subgraphs(up: &mut Upgrader, attributes: &mut [AttributeProto], owner: &str) -> Result<(), OpsetError> {
    for attribute in attributes {
        let scope = format!(" in graph '{}' of {owner}", attribute.name.as_deref().unwrap_or(""));
        let graphs = attribute.g.iter_mut().chain(attribute.graphs.iter_mut());
        for graph in graphs {
            *graph = upgrade_graph_proto(up, std::mem::take(graph), &scope, ConstantStyle::Initializer)?;
            up.report.subgraphs += 1;
        }
    }
    Ok(())
}

/// Upgrades a graph held as a GraphProto (a subgraph or a function body): the
/// names it reads from outer scopes become temporary inputs so it imports as
/// a graph of its own.
fn upgrade_graph_proto(
    up: &mut Upgrader,
    mut proto: GraphProto,
    scope: &str,
    style: ConstantStyle,
) -> Result<GraphProto, OpsetError> {
    let mut outer = Vec::new();
    super::import::collect_free_names(&proto, &HashSet::new(), &mut outer);
    outer.sort();
    outer.dedup();
    let own_inputs = proto.input.len();
    proto.input.extend(outer.into_iter().map(|name| ValueInfoProto { name: Some(name), ..Default::default() }));
    let wrapper = ModelProto {
        ir_version: Some(up.source_ir_version),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(up.step.from) }],
        graph: Some(proto),
        ..Default::default()
    };
    let located = |source: IrError| OpsetError::Subgraph { scope: scope.trim_start().to_string(), source };
    let mut model = super::import(wrapper).map_err(located)?;
    super::infer::infer(&mut model, &[]).map_err(located)?;
    upgrade_graph(up, &mut model.graph, scope, style)?;
    let mut upgraded = super::export(model).map_err(located)?.graph.unwrap_or_default();
    upgraded.input.truncate(own_inputs);
    Ok(upgraded)
}

/// Upgrades a model-local function that imports the default domain below the target.
fn upgrade_function(up: &mut Upgrader, function: &mut FunctionProto) -> Result<(), OpsetError> {
    let Some(from) = default_opset(&function.opset_import) else { return Ok(()) };
    if from >= up.step.to {
        return Ok(());
    }
    let what = format!("function '{}'", function.name.as_deref().unwrap_or(""));
    if from < MIN_SOURCE_OPSET {
        return Err(OpsetError::SourceTooOld { what, from });
    }
    let scope = format!(" in {what}");
    let declare = |name: &String| ValueInfoProto { name: Some(name.clone()), ..Default::default() };
    let body = GraphProto {
        node: std::mem::take(&mut function.node),
        input: function.input.iter().map(declare).collect(),
        output: function.output.iter().map(declare).collect(),
        ..Default::default()
    };
    let model_step = up.step;
    up.step = Step { from, to: model_step.to };
    let upgraded = upgrade_graph_proto(up, body, &scope, ConstantStyle::ConstantNode);
    up.step = model_step;
    function.node = upgraded?.node;
    set_default_opset(&mut function.opset_import, up.step.to);
    up.report.functions += 1;
    Ok(())
}

fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

fn default_opset(imports: &[OperatorSetIdProto]) -> Option<i64> {
    imports.iter().find(|o| is_default_domain(o.domain.as_deref().unwrap_or(""))).map(|o| o.version.unwrap_or(0))
}

fn set_default_opset(imports: &mut [OperatorSetIdProto], version: i64) {
    for import in imports.iter_mut().filter(|o| is_default_domain(o.domain.as_deref().unwrap_or(""))) {
        import.version = Some(version);
    }
}

/// Removes initializers from the graph inputs (IR < 4 listed them all there); returns how many.
fn unlist_initializers(graph: &mut Graph) -> usize {
    let listed: Vec<ValueId> =
        graph.inputs.iter().map(|io| io.value).filter(|&id| graph.value(id).initializer.is_some()).collect();
    for &id in &listed {
        graph.value_mut(id).producer = Producer::Initializer;
    }
    graph.inputs.retain(|io| !listed.contains(&io.value));
    listed.len()
}

// ---------------------------------------------------------------------------
// The edits a rewrite makes to one graph

/// One graph being rewritten.
struct Rewrite<'a> {
    up: &'a mut Upgrader,
    graph: &'a mut Graph,
    /// Where the graph sits, for errors: "" for the main graph.
    scope: &'a str,
    style: ConstantStyle,
}

impl Rewrite<'_> {
    fn step(&self) -> Step {
        self.up.step
    }

    fn node(&self, n: NodeIndex) -> &Node {
        &self.graph.nodes[n]
    }

    fn fail(&self, n: NodeIndex, reason: impl Into<String>) -> OpsetError {
        let node = self.node(n);
        OpsetError::Node {
            node: node.name.clone(),
            op: node.op_type.clone(),
            scope: self.scope.to_string(),
            reason: format!("{} (upgrading opset {} to {})", reason.into(), self.step().from, self.step().to),
        }
    }

    /// The base of names made for a node: its name, or its op type.
    fn base(&self, n: NodeIndex) -> String {
        let node = self.node(n);
        if node.name.is_empty() {
            node.op_type.to_lowercase()
        } else {
            node.name.clone()
        }
    }

    fn required_input(&self, n: NodeIndex, slot: usize) -> Result<ValueId, OpsetError> {
        self.node(n).input(slot).ok_or_else(|| self.fail(n, format!("has no input {slot}")))
    }

    fn rank(&self, value: ValueId) -> Option<usize> {
        self.graph.value(value).shape.as_ref().map(Shape::rank)
    }

    /// The float element type of input 0, if known (None for unknown or non-float).
    fn float_type_of_input(&self, n: NodeIndex) -> Option<DataType> {
        let dtype = self.graph.value(self.node(n).input(0)?).dtype?;
        tensor::from_f64(dtype, &[], &[0.0]).map(|_| dtype)
    }

    /// The attribute, refusing a reference to a function attribute (its value
    /// is only known per call).
    fn attribute(&self, n: NodeIndex, name: &str) -> Result<Option<&AttributeProto>, OpsetError> {
        match self.node(n).attribute(name) {
            Some(attribute) if attribute.ref_attr_name.is_some() => Err(self.fail(
                n,
                format!("attribute '{name}' refers to a function attribute, whose value an upgrade cannot move"),
            )),
            found => Ok(found),
        }
    }

    fn int_attribute(&self, n: NodeIndex, name: &str) -> Result<Option<i64>, OpsetError> {
        Ok(self.attribute(n, name)?.and_then(|a| a.i))
    }

    fn string_attribute(&self, n: NodeIndex, name: &str) -> Result<Option<String>, OpsetError> {
        Ok(self.attribute(n, name)?.and_then(|a| a.s.as_ref()).map(|s| String::from_utf8_lossy(s).into_owned()))
    }

    /// Removes an attribute and returns it.
    fn take_attribute(&mut self, n: NodeIndex, name: &str) -> Result<Option<AttributeProto>, OpsetError> {
        self.attribute(n, name)?;
        let attributes = &mut self.graph.nodes[n].attributes;
        Ok(attributes.iter().position(|a| a.name.as_deref() == Some(name)).map(|at| attributes.remove(at)))
    }

    fn take_float(&mut self, n: NodeIndex, name: &str) -> Result<Option<f32>, OpsetError> {
        match self.take_attribute(n, name)? {
            None => Ok(None),
            Some(attribute) => attribute.f.map(Some).ok_or_else(|| self.fail(n, format!("'{name}' is not a float"))),
        }
    }

    /// Sets an attribute, replacing one of the same name.
    fn set_attribute(&mut self, n: NodeIndex, attribute: AttributeProto) {
        let attributes = &mut self.graph.nodes[n].attributes;
        match attributes.iter_mut().find(|a| a.name == attribute.name) {
            Some(existing) => *existing = attribute,
            None => attributes.push(attribute),
        }
    }

    /// Moves an int-list attribute to an int64 1-D input at `slot`; false when absent.
    fn ints_to_input(&mut self, n: NodeIndex, name: &str, slot: usize) -> Result<bool, OpsetError> {
        let Some(attribute) = self.take_attribute(n, name)? else { return Ok(false) };
        let values = self.int64_constant(n, name, &[len_i64(attribute.ints.len())], &attribute.ints);
        self.set_input(n, slot, Some(values));
        Ok(true)
    }

    fn set_input(&mut self, n: NodeIndex, slot: usize, value: Option<ValueId>) {
        let inputs = &mut self.graph.nodes[n].inputs;
        if inputs.len() <= slot {
            inputs.resize(slot + 1, None);
        }
        inputs[slot] = value;
    }

    /// A new constant value (an initializer, or a Constant node in a function).
    fn constant(&mut self, n: NodeIndex, hint: &str, mut tensor: TensorProto) -> ValueId {
        if self.style == ConstantStyle::ConstantNode {
            tensor.name = None;
            return self.add_node(n, "Constant", vec![], vec![attribute::tensor("value", tensor)], None);
        }
        let name = self.up.names.value(&format!("{}_{hint}", self.base(n)));
        self.graph.add_initializer(name, tensor)
    }

    fn int64_constant(&mut self, n: NodeIndex, hint: &str, dims: &[i64], values: &[i64]) -> ValueId {
        self.constant(n, hint, tensor::from_i64("", dims, values))
    }

    fn float_constant(&mut self, n: NodeIndex, hint: &str, dtype: DataType, value: f64) -> Result<ValueId, OpsetError> {
        let tensor = tensor::from_f64(dtype, &[], &[value])
            .ok_or_else(|| self.fail(n, format!("'{hint}' cannot be a constant of type {dtype}")))?;
        Ok(self.constant(n, hint, tensor))
    }

    /// A scalar of input 0's float type, which must be known.
    fn scalar_like_input(&mut self, n: NodeIndex, hint: &str, value: f64) -> Result<ValueId, OpsetError> {
        let dtype = self.float_type_of_input(n).ok_or_else(|| {
            self.fail(n, format!("the float type of its input is unknown, so '{hint}' cannot become an input"))
        })?;
        self.float_constant(n, hint, dtype, value)
    }

    /// Adds a one-output node beside `n`, named after it; it produces `output`
    /// (an existing value it takes over) or a fresh value, which is returned.
    fn add_node(
        &mut self,
        n: NodeIndex,
        op: &str,
        inputs: Vec<Option<ValueId>>,
        attributes: Vec<AttributeProto>,
        output: Option<ValueId>,
    ) -> ValueId {
        let base = format!("{}_{}", self.base(n), op.to_lowercase());
        let name = self.up.names.node(&base);
        let index = self.graph.nodes.add_node(Node {
            name,
            op_type: op.to_string(),
            domain: String::new(),
            inputs,
            outputs: Vec::new(),
            implicit_inputs: Vec::new(),
            attributes,
            passthrough: NodeProto::default(),
        });
        let output = match output {
            Some(existing) => {
                self.graph.value_mut(existing).producer = Producer::Node(index, 0);
                existing
            }
            None => self.fresh_value(&base, Producer::Node(index, 0)),
        };
        self.graph.nodes[index].outputs = vec![Some(output)];
        output
    }

    fn fresh_value(&mut self, base: &str, producer: Producer) -> ValueId {
        let name = self.up.names.value(base);
        self.graph.add_value(Value { name, dtype: None, shape: None, producer, initializer: None, declared: None })
    }

    /// Gives output `slot` of `n` a fresh value and returns (fresh, original):
    /// a node added after `n` then produces the original value.
    fn detach_output(&mut self, n: NodeIndex, slot: usize, hint: &str) -> Result<(ValueId, ValueId), OpsetError> {
        let original = self.node(n).output(slot).ok_or_else(|| self.fail(n, format!("has no output {slot}")))?;
        let base = format!("{}_{hint}", self.graph.value(original).name);
        let inner = self.fresh_value(&base, Producer::Node(n, slot));
        self.graph.nodes[n].outputs[slot] = Some(inner);
        Ok((inner, original))
    }

    /// Whether a node or the graph's outputs read a value.
    fn is_read(&self, value: ValueId) -> bool {
        self.graph.outputs.iter().any(|io| io.value == value) || !self.graph.consumers(value).is_empty()
    }

    /// Drops outputs `first..` of `n`, which nothing may read; true when there were any.
    fn drop_outputs_from(&mut self, n: NodeIndex, first: usize, why: &str) -> Result<bool, OpsetError> {
        let dropped: Vec<ValueId> = self.node(n).outputs.iter().skip(first).flatten().copied().collect();
        if let Some(&read) = dropped.iter().find(|&&value| self.is_read(value)) {
            let name = self.graph.value(read).name.clone();
            return Err(self.fail(n, format!("its output '{name}' is read, but {why}")));
        }
        let had_outputs = self.node(n).outputs.len() > first;
        self.graph.nodes[n].outputs.truncate(first);
        self.graph.value_info.retain(|entry| !matches!(entry, ValueInfoEntry::Value(id) if dropped.contains(id)));
        Ok(had_outputs)
    }
}

// ---------------------------------------------------------------------------
// Small builders

fn len_i64(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
