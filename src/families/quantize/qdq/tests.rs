//! Unit tests: one small model per quantized operator, built in code,
//! lowered, and checked node by node (start ⇒ goal), then numerically: the
//! lowered model runs in tract and is compared with the original in tract
//! (QLinearConv, QLinearMatMul) or with DQ → op → Q computed here in f64
//! (the com.microsoft operators, which tract lacks).

use super::{lower_to_qdq, Lowered};
use crate::eval::{EvaluatorBuilder, NamedTensor, Tensor};
use crate::ir::attribute::{float, int, ints};
use crate::ir::dtype::DataType;
use crate::ir::shape::Shape;
use crate::ir::tensor::{from_f32, from_raw, to_f64};
use crate::ir::tensor_declaration;
use crate::ir::{export, import, infer, AttributeList, Model};
use crate::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};

// ---------------------------------------------------------------------------
// Building models

/// A tensor declaration with known dims.
fn info(name: &str, dtype: DataType, dims: &[i64]) -> ValueInfoProto {
    tensor_declaration(name, dtype, Some(&Shape::known(dims)))
}

/// Integer elements packed little-endian as `dtype` (uint8, int8 or int32).
fn packed(dtype: DataType, values: &[i64]) -> Vec<u8> {
    match dtype {
        DataType::Uint8 => values.iter().map(|&v| v as u8).collect(),
        DataType::Int8 => values.iter().map(|&v| v as i8 as u8).collect(),
        DataType::Int32 => values.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
        other => panic!("no packing for {other}"),
    }
}

/// Deterministic integers in `lo..=hi` (a linear congruential sequence).
fn integers(count: usize, lo: i64, hi: i64, seed: u64) -> Vec<i64> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + ((state >> 33) % (hi - lo + 1) as u64) as i64
        })
        .collect()
}

/// A model under construction: one graph, a default-domain opset and, when a
/// com.microsoft node is added, that domain too.
struct Build {
    opset: i64,
    microsoft: bool,
    graph: GraphProto,
}

impl Build {
    fn new(opset: i64) -> Build {
        Build { opset, microsoft: false, graph: GraphProto { name: Some("qdq".into()), ..Default::default() } }
    }

    fn input(mut self, name: &str, dtype: DataType, dims: &[i64]) -> Build {
        self.graph.input.push(info(name, dtype, dims));
        self
    }

    fn output(mut self, name: &str, dtype: DataType, dims: &[i64]) -> Build {
        self.graph.output.push(info(name, dtype, dims));
        self
    }

    /// An integer initializer.
    fn quantized(mut self, name: &str, dtype: DataType, dims: &[i64], values: &[i64]) -> Build {
        self.graph.initializer.push(from_raw(name, dtype, dims, packed(dtype, values)));
        self
    }

    /// A float initializer (dims `[]` for a scalar).
    fn scale(mut self, name: &str, dims: &[i64], values: &[f32]) -> Build {
        self.graph.initializer.push(from_f32(name, dims, values));
        self
    }

    fn node(self, op: &str, inputs: &[&str], output: &str, attributes: Vec<AttributeProto>) -> Build {
        self.node_in("", op, inputs, output, attributes)
    }

    fn microsoft(mut self, op: &str, inputs: &[&str], output: &str, attributes: Vec<AttributeProto>) -> Build {
        self.microsoft = true;
        self.node_in("com.microsoft", op, inputs, output, attributes)
    }

    fn node_in(
        mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<AttributeProto>,
    ) -> Build {
        self.graph.node.push(NodeProto {
            name: Some(format!("{output}_node")),
            op_type: Some(op.to_string()),
            domain: (!domain.is_empty()).then(|| domain.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute: attributes,
            ..Default::default()
        });
        self
    }

    fn proto(self) -> ModelProto {
        let mut opset_import = vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(self.opset) }];
        if self.microsoft {
            opset_import.push(OperatorSetIdProto { domain: Some("com.microsoft".into()), version: Some(1) });
        }
        ModelProto {
            ir_version: Some(crate::ir::opset::min_ir_version(self.opset)),
            opset_import,
            graph: Some(self.graph),
            ..Default::default()
        }
    }
}

/// Imports, lowers and exports; the lowering's report too.
fn lowered(start: &ModelProto) -> (ModelProto, Lowered) {
    let mut model = import(start.clone()).expect("imports");
    let report = lower_to_qdq(&mut model).expect("lowers");
    (export(model).expect("exports"), report)
}

// ---------------------------------------------------------------------------
// Reading results

fn ops(model: &ModelProto) -> Vec<String> {
    graph(model).node.iter().map(|n| n.op_type.clone().unwrap_or_default()).collect()
}

fn graph(model: &ModelProto) -> &GraphProto {
    model.graph.as_ref().expect("a graph")
}

/// The nodes of one operator type, in graph order.
fn nodes_of<'a>(model: &'a ModelProto, op: &str) -> Vec<&'a NodeProto> {
    graph(model).node.iter().filter(|n| n.op_type.as_deref() == Some(op)).collect()
}

fn axis(node: &NodeProto) -> Option<i64> {
    node.attribute.as_slice().attr_int("axis")
}

/// The initializer of a name, as f64 with its dims.
fn constant(model: &ModelProto, name: &str) -> (Vec<f64>, Vec<i64>) {
    let found: &TensorProto = graph(model)
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no initializer {name}"));
    (to_f64(found).expect("numeric"), found.dims.clone())
}

/// Runs a model in tract on integer inputs; the first output as f64.
fn run(model: &ModelProto, inputs: &[(&str, DataType, &[usize], &[i64])]) -> Vec<f64> {
    let evaluator = EvaluatorBuilder::new().build_from_model(model, "qdq test").expect("tract loads the model");
    let inputs: Vec<NamedTensor> = inputs
        .iter()
        .map(|(name, dtype, shape, values)| {
            let tensor = Tensor::from_le_bytes(*dtype, shape, &packed(*dtype, values)).expect("input tensor");
            NamedTensor::new(*name, tensor)
        })
        .collect();
    let outputs = evaluator.run(&inputs).expect("tract runs the model");
    outputs[0].tensor.to_f64().expect("numeric output")
}

/// (largest difference, number of equal elements) of two quantized outputs.
fn compare(lowered: &[f64], reference: &[f64]) -> (f64, usize) {
    assert_eq!(lowered.len(), reference.len(), "output sizes");
    let largest = lowered.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    (largest, lowered.iter().zip(reference).filter(|(a, b)| a == b).count())
}

/// Asserts that a lowered quantized output is within one step of the
/// reference everywhere and equal to it in at least 90% of the elements.
fn assert_within_one_step(lowered: &[f64], reference: &[f64]) {
    let (largest, equal) = compare(lowered, reference);
    assert!(largest <= 1.0, "largest difference {largest}");
    assert!(equal * 10 >= lowered.len() * 9, "only {equal} of {} equal", lowered.len());
}

// ---------------------------------------------------------------------------
// Reference arithmetic

fn dequantize(values: &[i64], scale: f64, zero_point: i64) -> Vec<f64> {
    values.iter().map(|&v| (v - zero_point) as f64 * scale).collect()
}

/// QuantizeLinear: round half to even, add the zero point, saturate to the type.
fn quantize(values: &[f64], scale: f64, zero_point: i64, dtype: DataType) -> Vec<f64> {
    let (lo, hi) = if dtype == DataType::Int8 { (-128.0, 127.0) } else { (0.0, 255.0) };
    values.iter().map(|&v| ((v / scale).round_ties_even() + zero_point as f64).clamp(lo, hi)).collect()
}

// ---------------------------------------------------------------------------
// QLinearConv

const X_SCALE: f32 = 0.02;
const X_ZERO: i64 = 128;
const Y_SCALE: f32 = 0.05;
const Y_ZERO: i64 = 120;
const BIAS: [i64; 3] = [30000, -20000, 5000];

/// QLinearConv of a [1,2,5,5] uint8 input with a [3,2,3,3] int8 weight (pads
/// 1, stride 2 on the width), the weight per-channel when `w_scales` has 3
/// elements, and an int32 bias when `bias` is set.
fn conv_model(opset: i64, w_scales: &[f32], bias: bool) -> ModelProto {
    let w_dims: &[i64] = if w_scales.len() == 1 { &[] } else { &[3] };
    let w_zero = vec![0; w_scales.len()];
    let mut inputs = vec!["x", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale", "y_zero"];
    if bias {
        inputs.push("b");
    }
    let attributes = vec![ints("pads", &[1, 1, 1, 1]), ints("strides", &[1, 2]), ints("kernel_shape", &[3, 3])];
    Build::new(opset)
        .input("x", DataType::Uint8, &[1, 2, 5, 5])
        .output("y", DataType::Uint8, &[1, 3, 5, 3])
        .scale("x_scale", &[], &[X_SCALE])
        .quantized("x_zero", DataType::Uint8, &[], &[X_ZERO])
        .quantized("w", DataType::Int8, &[3, 2, 3, 3], &integers(54, -127, 127, 1))
        .scale("w_scale", w_dims, w_scales)
        .quantized("w_zero", DataType::Int8, w_dims, &w_zero)
        .scale("y_scale", &[], &[Y_SCALE])
        .quantized("y_zero", DataType::Uint8, &[], &[Y_ZERO])
        .quantized("b", DataType::Int32, &[3], &BIAS)
        .node("QLinearConv", &inputs, "y", attributes)
        .proto()
}

fn conv_input() -> Vec<i64> {
    integers(50, 0, 255, 2)
}

/// The float result of [`conv_model`]'s convolution on `x`, computed from
/// its dequantized operands in f64: out[c,i,j] = Σ x[k, i+di−1, 2j+dj−1] ·
/// w[c,k,di,dj] + bias[c] · x_scale · w_scale[c].
fn conv_reference(x: &[i64], w_scales: &[f32], bias: &[i64]) -> Vec<f64> {
    let x = dequantize(x, f64::from(X_SCALE), X_ZERO);
    let w = integers(54, -127, 127, 1);
    let mut out = Vec::new();
    for c in 0..3 {
        let w_scale = f64::from(w_scales[c]);
        for i in 0..5i64 {
            for j in 0..3i64 {
                let mut sum = bias[c] as f64 * f64::from(X_SCALE) * w_scale;
                for (k, di, dj) in (0..2).flat_map(|k| (0..3).flat_map(move |di| (0..3).map(move |dj| (k, di, dj)))) {
                    let (row, col) = (i + di - 1, 2 * j + dj - 1);
                    if (0..5).contains(&row) && (0..5).contains(&col) {
                        let weight = w[((c * 2 + k) * 3 + di as usize) * 3 + dj as usize] as f64 * w_scale;
                        sum += x[(k * 25) + (row * 5 + col) as usize] * weight;
                    }
                }
                out.push(sum);
            }
        }
    }
    out
}

#[test]
fn qlinear_conv_per_tensor_becomes_dq_conv_q() {
    let start = conv_model(10, &[0.004], false);
    let (goal, report) = lowered(&start);
    assert_eq!(report, Lowered { nodes: 1 });
    assert_eq!(ops(&goal), ["DequantizeLinear", "DequantizeLinear", "Conv", "QuantizeLinear"]);
    let dq = nodes_of(&goal, "DequantizeLinear");
    assert_eq!(dq[0].input, ["x", "x_scale", "x_zero"]);
    assert_eq!(dq[1].input, ["w", "w_scale", "w_zero"]);
    assert!(dq.iter().all(|n| n.attribute.is_empty()), "per-tensor: no axis");
    let conv = nodes_of(&goal, "Conv")[0];
    assert_eq!(conv.input, [dq[0].output[0].clone(), dq[1].output[0].clone()]);
    assert_eq!(conv.attribute, graph(&start).node[0].attribute, "the QLinearConv's own attributes");
    assert_eq!(conv.name.as_deref(), Some("y_node"));
    let q = nodes_of(&goal, "QuantizeLinear")[0];
    assert_eq!(q.input, [conv.output[0].clone(), "y_scale".into(), "y_zero".into()]);
    assert_eq!(q.output, ["y"], "the output keeps its name");
    assert_eq!(graph(&goal).output[0].name.as_deref(), Some("y"));
    assert_eq!(goal.opset_import, start.opset_import);

    let x = conv_input();
    let feed: &[(&str, DataType, &[usize], &[i64])] = &[("x", DataType::Uint8, &[1, 2, 5, 5], &x)];
    let (original, lowered) = (run(&start, feed), run(&goal, feed));
    assert_eq!(lowered.len(), 45);
    assert_within_one_step(&lowered, &original);
}

#[test]
fn qlinear_conv_per_channel_with_bias_dequantizes_the_bias_at_x_scale_times_w_scale() {
    let w_scales = [0.004, 0.0025, 0.006];
    let start = conv_model(13, &w_scales, true);
    let (goal, report) = lowered(&start);
    assert_eq!(report.nodes, 1);
    assert_eq!(
        ops(&goal),
        ["DequantizeLinear", "DequantizeLinear", "Mul", "DequantizeLinear", "Conv", "QuantizeLinear"]
    );
    let dq = nodes_of(&goal, "DequantizeLinear");
    assert_eq!(axis(dq[0]), None);
    assert_eq!(axis(dq[1]), Some(0), "weight scales run along the output channels");
    assert_eq!(dq[2].input.len(), 2, "the bias has no zero point");
    assert_eq!(dq[2].input[0], "b");
    assert_eq!(axis(dq[2]), Some(0));
    // The bias scale is computed, not stored: x_scale · w_scale (runtimes fold it at load).
    let product = nodes_of(&goal, "Mul")[0];
    assert_eq!(product.input, ["x_scale", "w_scale"]);
    assert_eq!(dq[2].input[1], product.output[0]);
    let conv = nodes_of(&goal, "Conv")[0];
    assert_eq!(conv.input.len(), 3);
    assert_eq!(conv.input[2], dq[2].output[0]);

    let x = conv_input();
    let feed: &[(&str, DataType, &[usize], &[i64])] = &[("x", DataType::Uint8, &[1, 2, 5, 5], &x)];
    let (original, lowered) = (run(&start, feed), run(&goal, feed));
    assert_within_one_step(&lowered, &original);
    let expected = quantize(&conv_reference(&x, &w_scales, &BIAS), f64::from(Y_SCALE), Y_ZERO, DataType::Uint8);
    assert_within_one_step(&lowered, &expected);
    // The bias moves the outputs (by 48, −20 and 12 steps where nothing saturates).
    let (unbiased_model, _) = super::tests::lowered(&conv_model(13, &w_scales, false));
    assert!(compare(&lowered, &run(&unbiased_model, feed)).0 >= 10.0);
}

#[test]
fn per_channel_scales_before_opset_13_are_refused_and_nothing_changes() {
    let start = conv_model(11, &[0.004, 0.0025, 0.006], true);
    let mut model = import(start.clone()).expect("imports");
    let before = export(model.clone()).expect("exports");
    let error = lower_to_qdq(&mut model).unwrap_err().to_string();
    assert_eq!(error, "node 'y_node' (QLinearConv): per-channel scale of w needs opset 13, model has 11");
    assert_eq!(export(model).expect("exports"), before);
}

#[test]
fn a_missing_required_input_is_named() {
    let start = Build::new(13)
        .input("x", DataType::Uint8, &[1, 2, 4, 4])
        .output("y", DataType::Uint8, &[1, 2, 1, 1])
        .scale("s", &[], &[0.1])
        .quantized("z", DataType::Uint8, &[], &[128])
        .microsoft("QLinearGlobalAveragePool", &["x", "s", "z", "s"], "y", vec![])
        .proto();
    let mut model = import(start).expect("imports");
    let error = lower_to_qdq(&mut model).unwrap_err().to_string();
    assert_eq!(error, "node 'y_node' (QLinearGlobalAveragePool): missing required input 4 (output zero point)");
}

#[test]
fn equal_bias_scales_are_shared_and_new_names_avoid_existing_ones() {
    // Two QLinearConvs read the same x with the same scales; a value named
    // like the first conv's float output already exists.
    let names = ["x", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale", "y_zero", "b"];
    let kernel = || vec![ints("kernel_shape", &[1, 1])];
    let start = Build::new(13)
        .input("x", DataType::Uint8, &[1, 2, 2, 2])
        .output("y_float", DataType::Uint8, &[1, 2, 2, 2])
        .output("z", DataType::Uint8, &[1, 2, 2, 2])
        .scale("x_scale", &[], &[X_SCALE])
        .quantized("x_zero", DataType::Uint8, &[], &[X_ZERO])
        .quantized("w", DataType::Int8, &[2, 2, 1, 1], &[10, -20, 30, 40])
        .scale("w_scale", &[2], &[0.01, 0.02])
        .quantized("w_zero", DataType::Int8, &[2], &[0, 0])
        .scale("y_scale", &[], &[Y_SCALE])
        .quantized("y_zero", DataType::Uint8, &[], &[Y_ZERO])
        .quantized("b", DataType::Int32, &[2], &[100, -100])
        .node("QLinearConv", &names, "y", kernel())
        .node("QLinearConv", &names, "z", kernel())
        .node("Identity", &["y"], "y_float", vec![])
        .proto();
    let (goal, report) = lowered(&start);
    assert_eq!(report.nodes, 2);
    // One DequantizeLinear per distinct operand serves both convs, and one Mul their bias scale.
    let dequantized: Vec<&str> = nodes_of(&goal, "DequantizeLinear").iter().map(|n| n.input[0].as_str()).collect();
    assert_eq!(dequantized, ["x", "w", "b"]);
    assert_eq!(nodes_of(&goal, "Mul").len(), 1);
    let convs = nodes_of(&goal, "Conv");
    assert_eq!(convs[0].input, convs[1].input);
    let mut outputs: Vec<&str> = convs.iter().map(|c| c.output[0].as_str()).collect();
    outputs.sort();
    assert_eq!(outputs, ["y_float_1", "z_float"], "'y_float' was taken");
    assert_eq!(nodes_of(&goal, "Identity")[0].input, ["y"]);
}

#[test]
fn shape_inference_fills_the_float_outputs_afterwards() {
    let mut model = import(conv_model(13, &[0.004, 0.0025, 0.006], true)).expect("imports");
    lower_to_qdq(&mut model).expect("lowers");
    let float = model.graph.value_id("y_float").expect("the conv's float output");
    assert_eq!(model.graph.value(float).shape, None);
    assert_eq!(model.graph.value(float).dtype, Some(DataType::Float));
    let weight = model.graph.value_id("y_w_dq").expect("the dequantized weight");
    assert_eq!(model.graph.value(weight).shape, Some(Shape::known(&[3, 2, 3, 3])));
    infer::infer(&mut model, &[]).expect("infers");
    assert_eq!(model.graph.value(float).shape, Some(Shape::known(&[1, 3, 5, 3])));
}

// ---------------------------------------------------------------------------
// QLinearMatMul

#[test]
fn qlinear_matmul_per_column_dequantizes_b_along_its_last_axis() {
    let b_scales = [0.01, 0.004, 0.007];
    let start = Build::new(13)
        .input("a", DataType::Uint8, &[2, 4])
        .output("y", DataType::Uint8, &[2, 3])
        .scale("a_scale", &[], &[0.03])
        .quantized("a_zero", DataType::Uint8, &[], &[100])
        .quantized("b", DataType::Int8, &[4, 3], &integers(12, -127, 127, 3))
        .scale("b_scale", &[3], &b_scales)
        .quantized("b_zero", DataType::Int8, &[3], &[0, 0, 0])
        .scale("y_scale", &[], &[0.04])
        .quantized("y_zero", DataType::Uint8, &[], &[128])
        .node("QLinearMatMul", &["a", "a_scale", "a_zero", "b", "b_scale", "b_zero", "y_scale", "y_zero"], "y", vec![])
        .proto();
    let (goal, report) = lowered(&start);
    assert_eq!(report.nodes, 1);
    assert_eq!(ops(&goal), ["DequantizeLinear", "DequantizeLinear", "MatMul", "QuantizeLinear"]);
    let dq = nodes_of(&goal, "DequantizeLinear");
    assert_eq!((axis(dq[0]), axis(dq[1])), (None, Some(1)));
    assert!(nodes_of(&goal, "MatMul")[0].attribute.is_empty());
    assert_eq!(nodes_of(&goal, "QuantizeLinear")[0].output, ["y"]);

    let a = integers(8, 0, 255, 4);
    let feed: &[(&str, DataType, &[usize], &[i64])] = &[("a", DataType::Uint8, &[2, 4], &a)];
    let (original, lowered) = (run(&start, feed), run(&goal, feed));
    assert_within_one_step(&lowered, &original);
}

// ---------------------------------------------------------------------------
// com.microsoft::QGemm

/// QGemm of A [2,3] uint8 and B^T [4,3] int8 (per-column scales), alpha 0.5,
/// with an int32 C [4]; quantized output when `quantized_output`.
fn qgemm_model(quantized_output: bool) -> ModelProto {
    let mut inputs = vec!["a", "a_scale", "a_zero", "b", "b_scale", "b_zero", "c"];
    if quantized_output {
        inputs.extend(["y_scale", "y_zero"]);
    }
    let output_type = if quantized_output { DataType::Uint8 } else { DataType::Float };
    Build::new(13)
        .input("a", DataType::Uint8, &[2, 3])
        .output("y", output_type, &[2, 4])
        .scale("a_scale", &[], &[0.05])
        .quantized("a_zero", DataType::Uint8, &[], &[128])
        .quantized("b", DataType::Int8, &[4, 3], &[10, -20, 30, 40, 50, -60, -70, 80, 90, 100, -110, 120])
        .scale("b_scale", &[4], &[0.01, 0.02, 0.005, 0.008])
        .quantized("b_zero", DataType::Int8, &[4], &[0, 0, 0, 0])
        .quantized("c", DataType::Int32, &[4], &[400, -300, 1000, 0])
        .scale("y_scale", &[], &[0.02])
        .quantized("y_zero", DataType::Uint8, &[], &[128])
        .microsoft("QGemm", &inputs, "y", vec![float("alpha", 0.5), int("transB", 1)])
        .proto()
}

/// QGemm's float result for the model above, computed from its DQ operands in f64.
fn qgemm_reference(a: &[i64]) -> Vec<f64> {
    let a = dequantize(a, f64::from(0.05f32), 128);
    let b = [10, -20, 30, 40, 50, -60, -70, 80, 90, 100, -110, 120];
    let b_scale = [0.01f32, 0.02, 0.005, 0.008].map(f64::from);
    let c = [400, -300, 1000, 0];
    let alpha = 0.5;
    let mut y = Vec::new();
    for row in 0..2 {
        for col in 0..4 {
            let dot: f64 = (0..3).map(|k| a[row * 3 + k] * f64::from(b[col * 3 + k]) * b_scale[col]).sum();
            y.push(alpha * dot + f64::from(c[col]) * alpha * f64::from(0.05f32) * b_scale[col]);
        }
    }
    y
}

#[test]
fn qgemm_dequantizes_c_at_alpha_times_a_scale_times_b_scale() {
    let start = qgemm_model(true);
    let (goal, report) = lowered(&start);
    assert_eq!(report.nodes, 1);
    let quantize_ops =
        ["DequantizeLinear", "DequantizeLinear", "Mul", "Mul", "DequantizeLinear", "Gemm", "QuantizeLinear"];
    assert_eq!(ops(&goal), quantize_ops);
    let dq = nodes_of(&goal, "DequantizeLinear");
    assert_eq!(axis(dq[1]), Some(0), "transB: B's columns are its rows");
    assert_eq!(dq[2].input[0], "c");
    assert_eq!(axis(dq[2]), Some(0));
    // C's scale is alpha · a_scale · b_scale, computed by two Mul nodes.
    let products = nodes_of(&goal, "Mul");
    assert_eq!(products[0].input[1], dq[1].input[1], "b_scale");
    assert_eq!(products[1].input[0], products[0].output[0]);
    assert_eq!(constant(&goal, &products[1].input[1]), (vec![0.5], vec![]), "alpha");
    assert_eq!(dq[2].input[1], products[1].output[0]);
    let gemm = nodes_of(&goal, "Gemm")[0];
    let attributes = gemm.attribute.as_slice();
    assert_eq!((attributes.attr_float("alpha"), attributes.attr_int("transB")), (Some(0.5), Some(1)));
    assert_eq!(attributes.attr_float("beta").unwrap_or(1.0), 1.0);
    assert_eq!(gemm.input.len(), 3);
    assert_eq!(nodes_of(&goal, "QuantizeLinear")[0].output, ["y"]);

    let a = integers(6, 0, 255, 5);
    let lowered = run(&goal, &[("a", DataType::Uint8, &[2, 3], &a)]);
    let expected = quantize(&qgemm_reference(&a), f64::from(0.02f32), 128, DataType::Uint8);
    assert_within_one_step(&lowered, &expected);
    assert!(expected.iter().any(|&v| v != 128.0), "a non-trivial case");
}

#[test]
fn qgemm_without_y_scale_ends_in_the_float_gemm() {
    let start = qgemm_model(false);
    let (goal, _) = lowered(&start);
    assert_eq!(ops(&goal), ["DequantizeLinear", "DequantizeLinear", "Mul", "Mul", "DequantizeLinear", "Gemm"]);
    assert_eq!(nodes_of(&goal, "Gemm")[0].output, ["y"]);
    let a = integers(6, 0, 255, 6);
    let lowered = run(&goal, &[("a", DataType::Uint8, &[2, 3], &a)]);
    let expected = qgemm_reference(&a);
    for (got, want) in lowered.iter().zip(&expected) {
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{got} vs {want}");
    }
}

// ---------------------------------------------------------------------------
// com.microsoft::QLinearAdd and QLinearGlobalAveragePool

#[test]
fn qlinear_add_without_output_zero_point_gets_an_int8_zero() {
    let start = Build::new(13)
        .input("a", DataType::Int8, &[2, 3])
        .output("c", DataType::Int8, &[2, 3])
        .scale("a_scale", &[], &[0.02])
        .quantized("a_zero", DataType::Int8, &[], &[-5])
        .quantized("b", DataType::Int8, &[3], &[100, -100, 27])
        .scale("b_scale", &[], &[0.03])
        .scale("c_scale", &[], &[0.04])
        .microsoft("QLinearAdd", &["a", "a_scale", "a_zero", "b", "b_scale", "", "c_scale"], "c", vec![])
        .proto();
    let (goal, report) = lowered(&start);
    assert_eq!(report.nodes, 1);
    assert_eq!(ops(&goal), ["DequantizeLinear", "DequantizeLinear", "Add", "QuantizeLinear"]);
    let dq = nodes_of(&goal, "DequantizeLinear");
    assert_eq!(dq[1].input, ["b", "b_scale"], "B's zero point stays omitted");
    let q = nodes_of(&goal, "QuantizeLinear")[0];
    assert_eq!(q.input.len(), 3);
    let zero = graph(&goal).initializer.iter().find(|t| t.name.as_ref() == Some(&q.input[2])).expect("a zero point");
    assert_eq!((zero.data_type, zero.dims.len()), (Some(DataType::Int8.code()), 0));
    assert_eq!(to_f64(zero), Some(vec![0.0]));

    let a = integers(6, -128, 127, 7);
    let lowered = run(&goal, &[("a", DataType::Int8, &[2, 3], &a)]);
    let (a_float, b_float) =
        (dequantize(&a, f64::from(0.02f32), -5), dequantize(&[100, -100, 27], f64::from(0.03f32), 0));
    let sum: Vec<f64> = a_float.iter().enumerate().map(|(i, v)| v + b_float[i % 3]).collect();
    let expected = quantize(&sum, f64::from(0.04f32), 0, DataType::Int8);
    assert_within_one_step(&lowered, &expected);
}

fn pool_model(attributes: Vec<AttributeProto>) -> ModelProto {
    Build::new(13)
        .input("x", DataType::Uint8, &[1, 3, 2, 2])
        .output("y", DataType::Uint8, &[1, 3, 1, 1])
        .scale("x_scale", &[], &[0.1])
        .quantized("x_zero", DataType::Uint8, &[], &[128])
        .scale("y_scale", &[], &[0.05])
        .quantized("y_zero", DataType::Uint8, &[], &[100])
        .microsoft("QLinearGlobalAveragePool", &["x", "x_scale", "x_zero", "y_scale", "y_zero"], "y", attributes)
        .proto()
}

#[test]
fn qlinear_global_average_pool_becomes_dq_pool_q() {
    let (goal, report) = lowered(&pool_model(vec![int("channels_last", 0)]));
    assert_eq!(report.nodes, 1);
    assert_eq!(ops(&goal), ["DequantizeLinear", "GlobalAveragePool", "QuantizeLinear"]);
    assert!(nodes_of(&goal, "GlobalAveragePool")[0].attribute.is_empty());
    let x = [130, 140, 150, 160, 0, 10, 20, 30, 255, 255, 250, 128];
    let lowered = run(&goal, &[("x", DataType::Uint8, &[1, 3, 2, 2], &x)]);
    let x_float = dequantize(&x, f64::from(0.1f32), 128);
    let means: Vec<f64> = x_float.chunks(4).map(|c| c.iter().sum::<f64>() / 4.0).collect();
    let expected = quantize(&means, f64::from(0.05f32), 100, DataType::Uint8);
    assert_eq!(expected, [134.0, 0.0, 255.0], "one plain, two saturated");
    assert_within_one_step(&lowered, &expected);
}

#[test]
fn channels_last_pooling_is_refused() {
    let mut model = import(pool_model(vec![int("channels_last", 1)])).expect("imports");
    let error = lower_to_qdq(&mut model).unwrap_err().to_string();
    assert_eq!(error, "node 'y_node' (QLinearGlobalAveragePool): unsupported channels_last=1");
    assert_eq!(model.graph.nodes.node_count(), 1);
}

#[test]
fn a_model_without_quantized_nodes_is_left_alone() {
    let start = Build::new(13)
        .input("x", DataType::Float, &[2])
        .output("y", DataType::Float, &[2])
        .node("Relu", &["x"], "y", vec![])
        .proto();
    let mut model: Model = import(start.clone()).expect("imports");
    assert_eq!(lower_to_qdq(&mut model).expect("lowers"), Lowered { nodes: 0 });
    assert_eq!(export(model).expect("exports"), start);
}
