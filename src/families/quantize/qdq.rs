//! Lowering of operator-form quantized nodes to QDQ form: each quantized
//! layer the e-graph carries as one node becomes DequantizeLinear on each
//! quantized operand, the float operator, and QuantizeLinear on its output —
//! the pattern ONNX Runtime and other runtimes fuse back into integer kernels.
//!
//! Nodes lowered (any other node is left alone):
//!
//! - `QLinearConv` → DQ(x), DQ(w, axis 0 when per-channel), DQ(B) with the
//!   scale x_scale·w_scale and no zero point, `Conv` with the node's own
//!   attributes, Q(y).
//! - `QLinearMatMul` → DQ(a, per-row: axis rank−2), DQ(b, per-column: axis
//!   rank−1), `MatMul`, Q(y, per-row: axis rank−2).
//! - `com.microsoft::QGemm` → DQ(A), DQ(B, per-column: axis 0 with transB,
//!   else 1), DQ(C) with the scale alpha·a_scale·b_scale (ONNX Runtime's
//!   contrib spec: C is int32 with scale alpha / beta · a_scale · b_scale, and
//!   QGemm's beta is 1), `Gemm` with alpha, transA, transB (beta keeps its
//!   default 1), and Q(Y) when y_scale is given; without it the Gemm produces
//!   the node's float output itself.
//! - `com.microsoft::QLinearAdd` → DQ(A), DQ(B), `Add`, Q(C). An omitted
//!   output zero point becomes an explicit zero of the quantized type (a Q
//!   without one would produce uint8).
//! - `com.microsoft::QLinearGlobalAveragePool` (channels_last 0 only) → DQ,
//!   `GlobalAveragePool`, Q.
//!
//! The node's output value keeps its id and name (the last new node produces
//! it), so its consumers, graph outputs and value_info are untouched. New
//! values are named after that output; the float operator takes the node's
//! name (it is the layer) and the other new nodes are named after it; float
//! intermediates get the scale's dtype, dequantized operands the quantized
//! tensor's shape, and the float operator's output no shape (shape inference,
//! run by the caller, fills it).
//!
//! What the file stores stays small: a bias scale is computed by a `Mul` of
//! the two (constant) scales it is the product of (times a constant for
//! alpha ≠ 1), which runtimes fold at load time, rather than stored as a
//! third scale per channel; one DequantizeLinear serves every lowered node
//! that reads the same operand with the same parameters (ONNX Runtime
//! duplicates it per reader itself before fusing), and the operator forms'
//! constants that no node reads any more are dropped.
//!
//! A scale with more than one element is per-channel (per-axis), which Q and
//! DQ take from opset 13: an older model is refused (the caller raises its
//! opset with [`crate::ir::upgrade_opset`] first). Everything is checked
//! before anything is rewritten, so on error the model is unchanged. Only the
//! main graph is lowered; the model's opset imports are left as they are.

use std::collections::{HashMap, HashSet};

use petgraph::stable_graph::NodeIndex;

use crate::ir::attribute;
use crate::ir::dtype::DataType;
use crate::ir::graph::{AttributeList, Graph, Model, Node, Producer, Value, ValueId};
use crate::ir::names::Names;
use crate::ir::shape::Shape;
use crate::ir::tensor;
use crate::onnx::proto::{AttributeProto, NodeProto, TensorProto};

/// The first default-domain opset with QuantizeLinear and DequantizeLinear.
const QDQ_OPSET: i64 = 10;
/// The first default-domain opset whose QuantizeLinear and DequantizeLinear
/// take per-axis scales.
const PER_AXIS_OPSET: i64 = 13;

/// What a lowering did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lowered {
    /// Quantized nodes rewritten into QDQ form.
    pub nodes: usize,
}

/// Why a node cannot be lowered. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum QdqError {
    #[error("node '{node}' ({op}): {reason}")]
    Node { node: String, op: String, reason: String },
}

/// Rewrites every QLinearConv, QLinearMatMul and com.microsoft QGemm,
/// QLinearAdd and QLinearGlobalAveragePool of the main graph into QDQ form
/// (see the module doc). On error the model is unchanged.
pub fn lower_to_qdq(model: &mut Model) -> Result<Lowered, QdqError> {
    let opset = model.opset("");
    let graph = &model.graph;
    let mut indices: Vec<NodeIndex> = graph.nodes.node_indices().collect();
    indices.sort();
    let mut plans = Vec::new();
    for n in indices {
        let Some(kind) = Kind::of(graph.node(n)) else { continue };
        let check = Check { graph, n, opset };
        plans.push(check.plan(kind)?);
    }
    if plans.is_empty() {
        return Ok(Lowered::default());
    }
    let mut writer = Writer { names: Names::of_model(model), products: HashMap::new(), dequantized: HashMap::new() };
    let mut operands: HashSet<ValueId> = HashSet::new();
    for plan in &plans {
        operands.extend(model.graph.node(plan.node).inputs.iter().flatten());
        writer.lower(&mut model.graph, plan);
    }
    model.graph.rebuild_edges();
    // Constants only the operator forms read (zero points left at their default) go too.
    let graph = &mut model.graph;
    let read = graph.read_values();
    graph.initializers.retain(|id| read.contains(id) || !operands.contains(id));
    Ok(Lowered { nodes: plans.len() })
}

/// The quantized operators this module lowers, by the float operator each becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Conv,
    MatMul,
    Gemm,
    Add,
    GlobalAveragePool,
}

impl Kind {
    fn of(node: &Node) -> Option<Kind> {
        match (node.domain.as_str(), node.op_type.as_str()) {
            ("" | "ai.onnx", "QLinearConv") => Some(Kind::Conv),
            ("" | "ai.onnx", "QLinearMatMul") => Some(Kind::MatMul),
            ("com.microsoft", "QGemm") => Some(Kind::Gemm),
            ("com.microsoft", "QLinearAdd") => Some(Kind::Add),
            ("com.microsoft", "QLinearGlobalAveragePool") => Some(Kind::GlobalAveragePool),
            _ => None,
        }
    }

    /// The attributes the operator defines; any other is refused.
    fn attributes(self) -> &'static [&'static str] {
        match self {
            Kind::Conv => &["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"],
            Kind::Gemm => &["alpha", "transA", "transB"],
            Kind::GlobalAveragePool => &["channels_last"],
            Kind::MatMul | Kind::Add => &[],
        }
    }
}

// ---------------------------------------------------------------------------
// Plans: what to write for one node, found without changing anything

/// Which axis a per-channel scale runs along.
#[derive(Clone, Copy)]
enum ChannelAxis {
    /// Only a per-tensor scale is allowed.
    None,
    /// This axis of the quantized tensor.
    Fixed(usize),
    /// This many axes from the end (1: the last one).
    FromEnd(usize),
}

/// Where a DequantizeLinear's scale comes from.
enum ScaleSource {
    Value(ValueId),
    /// `factor` times an input scale times a weight scale, computed by Mul
    /// nodes over the two (constant) scales: runtimes fold them at load time,
    /// and the file does not store a third scale per channel.
    Product {
        input: ValueId,
        weight: ValueId,
        factor: f64,
    },
}

/// One DequantizeLinear to write.
struct Dequantize {
    /// The operand's role, for names ("x", "w", "bias").
    role: &'static str,
    input: ValueId,
    scale: ScaleSource,
    zero_point: Option<ValueId>,
    axis: Option<i64>,
}

/// A QuantizeLinear's zero point.
enum ZeroPoint {
    Value(ValueId),
    /// None was given and the output type is not uint8: a new zero scalar of this type.
    Zero(DataType),
    /// None was given and the output is uint8, QuantizeLinear's default.
    Omitted,
}

/// The QuantizeLinear after the float operator.
struct Requantize {
    scale: ValueId,
    zero_point: ZeroPoint,
    axis: Option<i64>,
}

/// The float operator a quantized node becomes, with its dequantized
/// operands and the requantization of its output.
struct FloatStage {
    op: &'static str,
    /// The float operator's inputs, each dequantized, in order.
    operands: Vec<Dequantize>,
    attributes: Vec<AttributeProto>,
    /// `None` when the float operator's output is the node's output.
    requantize: Option<Requantize>,
}

/// The lowering of one node.
struct Plan {
    node: NodeIndex,
    /// The node's output, which the last new node produces.
    output: ValueId,
    stage: FloatStage,
}

/// Reads one node and the values around it to plan its lowering.
struct Check<'a> {
    graph: &'a Graph,
    n: NodeIndex,
    opset: Option<i64>,
}

impl Check<'_> {
    fn node(&self) -> &Node {
        self.graph.node(self.n)
    }

    fn fail(&self, reason: impl Into<String>) -> QdqError {
        let node = self.node();
        QdqError::Node { node: node.name.clone(), op: node.op_type.clone(), reason: reason.into() }
    }

    fn value_name(&self, id: ValueId) -> &str {
        &self.graph.value(id).name
    }

    fn required(&self, slot: usize, what: &str) -> Result<ValueId, QdqError> {
        self.node().input(slot).ok_or_else(|| self.fail(format!("missing required input {slot} ({what})")))
    }

    fn optional(&self, slot: usize) -> Option<ValueId> {
        self.node().input(slot)
    }

    fn plan(&self, kind: Kind) -> Result<Plan, QdqError> {
        match self.opset {
            None => return Err(self.fail("the model imports no default-domain (ai.onnx) opset for QDQ nodes")),
            Some(opset) if opset < QDQ_OPSET => {
                return Err(
                    self.fail(format!("QuantizeLinear and DequantizeLinear need opset {QDQ_OPSET}, model has {opset}"))
                )
            }
            Some(_) => {}
        }
        if let Some(unknown) = self.node().attributes.iter().find_map(|a| {
            let name = a.name.as_deref().unwrap_or("");
            (!kind.attributes().contains(&name)).then_some(name)
        }) {
            return Err(self.fail(format!("unexpected attribute '{unknown}'")));
        }
        let output = self.node().output(0).ok_or_else(|| self.fail("has no output"))?;
        if self.node().outputs.len() > 1 {
            return Err(self.fail("has more than one output"));
        }
        let stage = match kind {
            Kind::Conv => self.conv(output)?,
            Kind::MatMul => self.matmul(output)?,
            Kind::Gemm => self.gemm(output)?,
            Kind::Add => self.add(output)?,
            Kind::GlobalAveragePool => self.global_average_pool(output)?,
        };
        Ok(Plan { node: self.n, output, stage })
    }

    /// QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B?).
    fn conv(&self, output: ValueId) -> Result<FloatStage, QdqError> {
        let x = self.dequantize("x", [0, 1, 2], true, ChannelAxis::None)?;
        let w = self.dequantize("w", [3, 4, 5], true, ChannelAxis::Fixed(0))?;
        let mut operands = vec![x, w];
        if let Some(bias) = self.optional(8) {
            operands.push(self.bias(bias, 1.0, [1, 4], "x_scale · w_scale", 8)?);
        }
        let requantize = self.requantize(output, 6, 7, true, ChannelAxis::None)?;
        Ok(FloatStage {
            op: "Conv",
            operands,
            attributes: self.node().attributes.clone(),
            requantize: Some(requantize),
        })
    }

    /// QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp).
    fn matmul(&self, output: ValueId) -> Result<FloatStage, QdqError> {
        let a = self.dequantize("a", [0, 1, 2], true, ChannelAxis::FromEnd(2))?;
        let b = self.dequantize("b", [3, 4, 5], true, ChannelAxis::FromEnd(1))?;
        let requantize = self.requantize(output, 6, 7, true, ChannelAxis::FromEnd(2))?;
        Ok(FloatStage { op: "MatMul", operands: vec![a, b], attributes: Vec::new(), requantize: Some(requantize) })
    }

    /// QGemm(A, a_scale, a_zp, B, b_scale, b_zp, C?, y_scale?, y_zp?).
    fn gemm(&self, output: ValueId) -> Result<FloatStage, QdqError> {
        let node = self.node();
        let alpha = node.attr_float("alpha").unwrap_or(1.0);
        let trans_b = node.attr_int("transB").unwrap_or(0) != 0;
        let a = self.dequantize("a", [0, 1, 2], true, ChannelAxis::None)?;
        let b = self.dequantize("b", [3, 4, 5], true, ChannelAxis::Fixed(if trans_b { 0 } else { 1 }))?;
        let mut operands = vec![a, b];
        if let Some(c) = self.optional(6) {
            operands.push(self.bias(c, f64::from(alpha), [1, 4], "alpha · a_scale · b_scale", 6)?);
        }
        let attributes =
            ["alpha", "transA", "transB"].iter().filter_map(|name| node.attribute(name).cloned()).collect();
        let requantize = match (self.optional(7), self.optional(8)) {
            (Some(_), Some(_)) => Some(self.requantize(output, 7, 8, true, ChannelAxis::None)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(
                    self.fail("y_scale without y_zero_point (a float output divided by y_scale) has no QDQ form")
                )
            }
            (None, Some(_)) => return Err(self.fail("y_zero_point without y_scale has no QDQ form")),
        };
        Ok(FloatStage { op: "Gemm", operands, attributes, requantize })
    }

    /// QLinearAdd(A, A_scale, A_zp?, B, B_scale, B_zp?, C_scale, C_zp?).
    fn add(&self, output: ValueId) -> Result<FloatStage, QdqError> {
        let a = self.dequantize("a", [0, 1, 2], false, ChannelAxis::None)?;
        let b = self.dequantize("b", [3, 4, 5], false, ChannelAxis::None)?;
        let requantize = self.requantize(output, 6, 7, false, ChannelAxis::None)?;
        Ok(FloatStage { op: "Add", operands: vec![a, b], attributes: Vec::new(), requantize: Some(requantize) })
    }

    /// QLinearGlobalAveragePool(X, x_scale, x_zp, y_scale, y_zp), channels first.
    fn global_average_pool(&self, output: ValueId) -> Result<FloatStage, QdqError> {
        match self.node().attr_int("channels_last") {
            None | Some(0) => {}
            Some(other) => return Err(self.fail(format!("unsupported channels_last={other}"))),
        }
        let x = self.dequantize("x", [0, 1, 2], true, ChannelAxis::None)?;
        let requantize = self.requantize(output, 3, 4, true, ChannelAxis::None)?;
        let operands = vec![x];
        Ok(FloatStage { op: "GlobalAveragePool", operands, attributes: Vec::new(), requantize: Some(requantize) })
    }

    /// A DequantizeLinear of the input at `slots` [tensor, scale, zero point].
    fn dequantize(
        &self,
        role: &'static str,
        [tensor_slot, scale_slot, zero_point_slot]: [usize; 3],
        zero_point_required: bool,
        channel: ChannelAxis,
    ) -> Result<Dequantize, QdqError> {
        let input = self.required(tensor_slot, role)?;
        let scale = self.required(scale_slot, &format!("{role} scale"))?;
        let zero_point = if zero_point_required {
            Some(self.required(zero_point_slot, &format!("{role} zero point"))?)
        } else {
            self.optional(zero_point_slot)
        };
        let axis = self.channel_axis(role, input, scale, zero_point, channel)?;
        Ok(Dequantize { role, input, scale: ScaleSource::Value(scale), zero_point, axis })
    }

    /// The QuantizeLinear of the output with the scale and zero point at the given slots.
    fn requantize(
        &self,
        output: ValueId,
        scale_slot: usize,
        zero_point_slot: usize,
        zero_point_required: bool,
        channel: ChannelAxis,
    ) -> Result<Requantize, QdqError> {
        let scale = self.required(scale_slot, "output scale")?;
        let given = if zero_point_required {
            Some(self.required(zero_point_slot, "output zero point")?)
        } else {
            self.optional(zero_point_slot)
        };
        let axis = self.channel_axis("output", output, scale, given, channel)?;
        let zero_point = match given {
            Some(value) => ZeroPoint::Value(value),
            None => {
                let input = self.required(0, "input")?;
                let dtype =
                    self.graph.value(input).dtype.or(self.graph.value(output).dtype).ok_or_else(|| {
                        self.fail("the output zero point is omitted and the quantized type is unknown")
                    })?;
                if dtype == DataType::Uint8 {
                    ZeroPoint::Omitted
                } else {
                    ZeroPoint::Zero(dtype)
                }
            }
        };
        Ok(Requantize { scale, zero_point, axis })
    }

    /// The number of elements of a value, from its constant or its shape.
    fn element_count(&self, id: ValueId) -> Option<u64> {
        match self.graph.constant(id) {
            Some(constant) => tensor::element_count(constant),
            None => self.graph.value(id).shape.as_ref()?.element_count(),
        }
    }

    fn rank(&self, id: ValueId) -> Option<usize> {
        match self.graph.constant(id) {
            Some(constant) => Some(constant.dims.len()),
            None => self.graph.value(id).shape.as_ref().map(Shape::rank),
        }
    }

    fn dim(&self, id: ValueId, axis: usize) -> Option<i64> {
        match self.graph.constant(id) {
            Some(constant) => constant.dims.get(axis).copied(),
            None => self.graph.value(id).shape.as_ref()?.0.get(axis)?.known(),
        }
    }

    /// The axis of a per-channel scale of `tensor` (`None` when it has one
    /// element), checked against the rule, the opset and the tensor's shape.
    fn channel_axis(
        &self,
        role: &str,
        tensor: ValueId,
        scale: ValueId,
        zero_point: Option<ValueId>,
        channel: ChannelAxis,
    ) -> Result<Option<i64>, QdqError> {
        let (tensor_name, scale_name) = (self.value_name(tensor), self.value_name(scale));
        let count = self.element_count(scale).ok_or_else(|| {
            self.fail(format!(
                "cannot tell whether the {role} scale '{scale_name}' is per-tensor or per-channel: its shape is unknown"
            ))
        })?;
        if let Some(zero_count) = zero_point.and_then(|zp| self.element_count(zp)).filter(|&n| n != count) {
            return Err(self.fail(format!("the {role} scale has {count} elements but its zero point has {zero_count}")));
        }
        if count == 1 {
            return Ok(None);
        }
        let rank = self.rank(tensor);
        let axis = match channel {
            ChannelAxis::None => {
                let reason = format!("the {role} scale '{scale_name}' must be per-tensor, it has {count} elements");
                return Err(self.fail(reason));
            }
            ChannelAxis::Fixed(axis) => axis,
            ChannelAxis::FromEnd(from_end) => {
                let rank = rank.ok_or_else(|| {
                    self.fail(format!("the {role} scale is per-channel and the rank of '{tensor_name}' is unknown"))
                })?;
                rank.checked_sub(from_end).ok_or_else(|| {
                    self.fail(format!(
                        "a per-channel {role} scale needs rank {from_end} or more, '{tensor_name}' has {rank}"
                    ))
                })?
            }
        };
        let opset = self.opset.unwrap_or(0);
        if opset < PER_AXIS_OPSET {
            let reason = format!("per-channel scale of {role} needs opset {PER_AXIS_OPSET}, model has {opset}");
            return Err(self.fail(reason));
        }
        if self.rank(scale).is_some_and(|rank| rank != 1) {
            return Err(self.fail(format!("the per-channel {role} scale '{scale_name}' is not 1-D")));
        }
        if let Some(rank) = rank.filter(|&rank| axis >= rank) {
            return Err(
                self.fail(format!("a per-channel {role} scale needs axis {axis}, '{tensor_name}' has rank {rank}"))
            );
        }
        let size = self.dim(tensor, axis).ok_or_else(|| {
            self.fail(format!(
                "the {role} scale has {count} elements and axis {axis} of '{tensor_name}' is of unknown size"
            ))
        })?;
        if u64::try_from(size).ok() != Some(count) {
            let reason = format!("the {role} scale has {count} elements but axis {axis} of '{tensor_name}' has {size}");
            return Err(self.fail(reason));
        }
        Ok(i64::try_from(axis).ok())
    }

    /// The DequantizeLinear of an int32 bias (QLinearConv's B, QGemm's C)
    /// whose scale is `factor` times the input scale (slot `scales[0]`) times
    /// the weight scale (slot `scales[1]`), per channel when the weight's is;
    /// a per-channel bias runs along its last axis.
    fn bias(
        &self,
        bias: ValueId,
        factor: f64,
        scales: [usize; 2],
        formula: &str,
        slot: usize,
    ) -> Result<Dequantize, QdqError> {
        let bias_name = self.value_name(bias);
        if let Some(dtype) = self.graph.value(bias).dtype.filter(|&dtype| dtype != DataType::Int32) {
            return Err(self.fail(format!("the bias '{bias_name}' (input {slot}) is {dtype}, not int32")));
        }
        let constant_scale = |slot: usize| -> Result<(Vec<f64>, Option<DataType>), QdqError> {
            let id = self.required(slot, "scale")?;
            let values = self.graph.constant(id).and_then(tensor::to_f64).ok_or_else(|| {
                self.fail(format!(
                    "the bias scale {formula} needs constant scales, and '{}' is not a constant",
                    self.value_name(id)
                ))
            })?;
            Ok((values, self.graph.value(id).dtype))
        };
        let (input_scale, dtype) = constant_scale(scales[0])?;
        let (weight_scale, _) = constant_scale(scales[1])?;
        if input_scale.len() != 1 {
            return Err(self.fail("the input scale must have one element"));
        }
        if !dtype.unwrap_or(DataType::Float).is_float() {
            return Err(self.fail(format!("the scales are {}, not a float type", dtype.unwrap_or(DataType::Float))));
        }
        let axis = match weight_scale.len() {
            1 => None,
            count => {
                let rank = self.rank(bias).unwrap_or(0);
                let last = rank.checked_sub(1).and_then(|axis| self.dim(bias, axis));
                if last.and_then(|size| u64::try_from(size).ok()) != Some(count as u64) {
                    let shape = self.graph.value(bias).shape.as_ref().map_or("unknown".to_string(), Shape::to_string);
                    return Err(self.fail(format!(
                        "the bias '{bias_name}' has shape {shape}, but its per-channel scale needs a last axis of {count}"
                    )));
                }
                i64::try_from(rank - 1).ok()
            }
        };
        let (input, weight) = (self.required(scales[0], "scale")?, self.required(scales[1], "scale")?);
        Ok(Dequantize {
            role: "bias",
            input: bias,
            scale: ScaleSource::Product { input, weight, factor },
            zero_point: None,
            axis,
        })
    }
}

// ---------------------------------------------------------------------------
// Writing the planned nodes

/// Adds the nodes and values of planned lowerings to a graph.
struct Writer {
    names: Names,
    /// Bias scales already computed, by their two scales and factor bits.
    products: HashMap<([ValueId; 2], u64), ValueId>,
    /// Values already dequantized (one DequantizeLinear serves every
    /// reader; runtimes that fuse per reader duplicate it themselves), by
    /// input, scale, zero point and axis.
    dequantized: HashMap<(ValueId, ValueId, Option<ValueId>, Option<i64>), ValueId>,
}

impl Writer {
    /// Replaces the planned node by its DequantizeLinear nodes, the float
    /// operator and the QuantizeLinear.
    fn lower(&mut self, graph: &mut Graph, plan: &Plan) {
        let Some(original) = graph.nodes.remove_node(plan.node) else { return };
        let output_name = graph.value(plan.output).name.clone();
        let node_base = if original.name.is_empty() { output_name.clone() } else { original.name.clone() };
        let stage = &plan.stage;
        let mut float_inputs = Vec::with_capacity(stage.operands.len());
        let mut float_dtype = DataType::Float;
        for (index, operand) in stage.operands.iter().enumerate() {
            let scale = match &operand.scale {
                ScaleSource::Value(id) => *id,
                &ScaleSource::Product { input, weight, factor } => {
                    self.product_scale(graph, &format!("{output_name}_bscale"), [input, weight], factor)
                }
            };
            let dtype = graph.value(scale).dtype.unwrap_or(DataType::Float);
            if index == 0 {
                float_dtype = dtype;
            }
            let key = (operand.input, scale, operand.zero_point, operand.axis);
            let dequantized = match self.dequantized.get(&key) {
                Some(&shared) => shared,
                None => {
                    let shape = graph.value(operand.input).shape.clone();
                    let dequantized = self.value(graph, &format!("{output_name}_{}_dq", operand.role), dtype, shape);
                    let inputs =
                        [Some(operand.input), Some(scale)].into_iter().chain(operand.zero_point.map(Some)).collect();
                    let node = format!("{node_base}_dq_{}", operand.role);
                    self.add_node(graph, &node, "DequantizeLinear", inputs, axis_attribute(operand.axis), dequantized);
                    self.dequantized.insert(key, dequantized);
                    dequantized
                }
            };
            float_inputs.push(Some(dequantized));
        }
        // The float operator is the layer: it takes the node's name.
        self.names.release_node(&original.name);
        let float_node = node_base.clone();
        let Some(requantize) = &stage.requantize else {
            self.add_node(graph, &float_node, stage.op, float_inputs, stage.attributes.clone(), plan.output);
            return;
        };
        let float_output = self.value(graph, &format!("{output_name}_float"), float_dtype, None);
        self.add_node(graph, &float_node, stage.op, float_inputs, stage.attributes.clone(), float_output);
        let zero_point = match requantize.zero_point {
            ZeroPoint::Value(id) => Some(id),
            ZeroPoint::Zero(dtype) => {
                let bytes = dtype.byte_size(1).and_then(|size| usize::try_from(size).ok()).unwrap_or(1);
                let zero = tensor::from_raw("", dtype, &[], vec![0; bytes]);
                Some(self.initializer(graph, &format!("{output_name}_zero_point"), zero))
            }
            ZeroPoint::Omitted => None,
        };
        let inputs = [Some(float_output), Some(requantize.scale)].into_iter().chain(zero_point.map(Some)).collect();
        let node = format!("{node_base}_q");
        self.add_node(graph, &node, "QuantizeLinear", inputs, axis_attribute(requantize.axis), plan.output);
    }

    /// A new value that a node added next produces ([`Writer::add_node`] sets its producer).
    fn value(&mut self, graph: &mut Graph, base: &str, dtype: DataType, shape: Option<Shape>) -> ValueId {
        graph.add_value(Value {
            name: self.names.value(base),
            dtype: Some(dtype),
            shape,
            producer: Producer::GraphInput,
            initializer: None,
            declared: None,
        })
    }

    /// `factor` × the product of two scales, by Mul nodes (a factor other
    /// than 1 is an initializer), shared with an earlier identical product.
    fn product_scale(&mut self, graph: &mut Graph, base: &str, scales: [ValueId; 2], factor: f64) -> ValueId {
        let key = (scales, factor.to_bits());
        if let Some(&id) = self.products.get(&key) {
            return id;
        }
        let dtype = graph.value(scales[0]).dtype.unwrap_or(DataType::Float);
        let shape = graph.value(scales[1]).shape.clone();
        let product = self.value(graph, base, dtype, shape.clone());
        self.add_node(graph, base, "Mul", scales.map(Some).to_vec(), Vec::new(), product);
        let id = if factor == 1.0 {
            product
        } else {
            let constant = tensor::from_f64(dtype, &[], &[factor]).unwrap_or_default();
            let factor = self.initializer(graph, &format!("{base}_factor"), constant);
            let scaled = self.value(graph, base, dtype, shape);
            self.add_node(graph, base, "Mul", vec![Some(product), Some(factor)], Vec::new(), scaled);
            scaled
        };
        self.products.insert(key, id);
        id
    }

    fn initializer(&mut self, graph: &mut Graph, base: &str, constant: TensorProto) -> ValueId {
        graph.add_initializer(self.names.value(base), constant)
    }

    /// Adds a one-output default-domain node producing `output`.
    fn add_node(
        &mut self,
        graph: &mut Graph,
        base: &str,
        op: &str,
        inputs: Vec<Option<ValueId>>,
        attributes: Vec<AttributeProto>,
        output: ValueId,
    ) {
        let index = graph.nodes.add_node(Node {
            name: self.names.node(base),
            op_type: op.to_string(),
            domain: String::new(),
            inputs,
            outputs: vec![Some(output)],
            implicit_inputs: Vec::new(),
            attributes,
            passthrough: NodeProto::default(),
        });
        graph.value_mut(output).producer = Producer::Node(index, 0);
    }
}

fn axis_attribute(axis: Option<i64>) -> Vec<AttributeProto> {
    axis.map(|axis| vec![attribute::int("axis", axis)]).unwrap_or_default()
}

#[cfg(test)]
mod tests;
