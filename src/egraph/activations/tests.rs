//! One small graph per spelling of each activation (start ⇒ goal), the near
//! misses that must stay as they are, and the outputs of every fused model
//! against its original in ONNX Runtime (within 1e-5 relative L2, graph
//! optimizations off and on).

use std::path::Path;

use crate::cost::{DeviceProfile, Objective};
use crate::egraph::{optimize, EngineReport, Limits, Options};
use crate::eval::{NamedTensor, Tensor};
use crate::ir::attribute::{float, int, ints};
use crate::ir::{tensor, tensor_declaration, AttributeList, DataType, Model, Shape};
use crate::onnx::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use crate::onnxruntime::GraphOptimization;

/// The input every test graph reads.
const X_DIMS: [i64; 4] = [1, 8, 6, 5];

/// A node `output = op(inputs)`; inputs named `c:V` are one-element float constants of value V.
struct Step<'a> {
    op: &'a str,
    inputs: &'a [&'a str],
    output: &'a str,
    attributes: Vec<AttributeProto>,
}

fn step<'a>(op: &'a str, inputs: &'a [&'a str], output: &'a str) -> Step<'a> {
    Step { op, inputs, output, attributes: Vec::new() }
}

fn with<'a>(op: &'a str, inputs: &'a [&'a str], output: &'a str, attributes: Vec<AttributeProto>) -> Step<'a> {
    Step { op, inputs, output, attributes }
}

/// A tensor under a name.
fn named(tensor: crate::onnx::proto::TensorProto, name: &str) -> crate::onnx::proto::TensorProto {
    crate::onnx::proto::TensorProto { name: Some(name.to_string()), ..tensor }
}

/// A model at `opset` of float input `x` of `dims` and the steps, whose
/// graph outputs are `outputs`, with more `constants` (named initializers).
fn model_with(
    opset: i64,
    dims: &[i64],
    steps: &[Step],
    constants: Vec<crate::onnx::proto::TensorProto>,
    outputs: &[&str],
) -> Model {
    let mut graph = GraphProto { name: Some("activation".into()), ..Default::default() };
    let mut constant_names: Vec<String> = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        for input in step.inputs {
            if let Some(value) = input.strip_prefix("c:") {
                if !constant_names.iter().any(|n| n == input) {
                    let value: f32 = value.parse().expect("a number after c:");
                    graph.initializer.push(tensor::from_f32(input, &[1], &[value]));
                    constant_names.push(input.to_string());
                }
            }
        }
        graph.node.push(NodeProto {
            name: Some(format!("node{index}_{}", step.op)),
            op_type: Some(step.op.to_string()),
            input: step.inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![step.output.to_string()],
            attribute: step.attributes.clone(),
            ..Default::default()
        });
    }
    graph.initializer.extend(constants);
    graph.input.push(tensor_declaration("x", DataType::Float, Some(&Shape::known(dims))));
    for output in outputs {
        graph.output.push(tensor_declaration(output, DataType::Float, None));
    }
    let proto = ModelProto {
        ir_version: Some(crate::ir::opset::min_ir_version(opset).max(7)),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        graph: Some(graph),
        ..Default::default()
    };
    let mut model = crate::ir::import(proto).expect("imports");
    crate::ir::infer::infer(&mut model, &[]).expect("infers");
    model
}

fn model(opset: i64, steps: &[Step]) -> Model {
    model_with(opset, &X_DIMS, steps, Vec::new(), &["y"])
}

fn options(target_opset: i64) -> Options {
    Options {
        families: ["fold", "fuse", "clean"].iter().map(|f| f.to_string()).collect(),
        user_rules: Vec::new(),
        limits: Limits::default(),
        objective: Objective::Latency,
        profile: DeviceProfile::shipped("x86-avx2").unwrap(),
        budget: 0.0,
        compression: None,
        target_opset: Some(target_opset),
        measured: None,
    }
}

fn fused_at(model: &Model, target_opset: i64) -> (Model, EngineReport) {
    optimize(model, &options(target_opset)).expect("optimizes")
}

fn ops(model: &Model) -> Vec<String> {
    let mut ops: Vec<String> = model.graph.nodes.node_weights().map(|n| n.op_type.clone()).collect();
    ops.sort();
    ops
}

fn node<'a>(model: &'a Model, op: &str) -> &'a crate::ir::Node {
    model.graph.nodes.node_weights().find(|n| n.op_type == op).unwrap_or_else(|| panic!("no {op} in {:?}", ops(model)))
}

/// Seeded inputs spanning the activations' bends (|x| up to 6).
fn samples(dims: &[i64]) -> Vec<Vec<NamedTensor>> {
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let count: usize = shape.iter().product();
    (0..2u64)
        .map(|seed| {
            let values: Vec<f32> =
                (0..count).map(|i| (((i as u64 * 7919 + seed * 104729) % 1201) as f32 / 100.0) - 6.0).collect();
            vec![NamedTensor::new("x", Tensor::from_f32(&shape, &values).unwrap())]
        })
        .collect()
}

/// The fused model computes what the original does in ONNX Runtime, optimizations off and on.
fn assert_same_outputs(original: &Model, fused: &Model, dims: &[i64]) {
    let samples = samples(dims);
    for level in [GraphOptimization::None, GraphOptimization::All] {
        let label = Path::new("activation test");
        let expected = crate::onnxruntime::outputs(original, label, level, &samples).expect("the original runs");
        let got = crate::onnxruntime::outputs(fused, label, level, &samples).expect("the fused model runs");
        let runs: Vec<_> = got.into_iter().zip(expected).collect();
        let error = crate::eval::runs_relative_l2(&runs);
        assert!(error <= 1e-5, "relative L2 {error} at {level:?}: {:?}", ops(fused));
    }
}

/// Fuses at target opset 22 and checks the result is exactly `goal`, the
/// node keeps the last original node's name, and the outputs agree.
fn assert_fuses(original: &Model, goal: &[&str], named: &str) -> (Model, EngineReport) {
    let (fused, report) = fused_at(original, 22);
    assert_eq!(ops(&fused), goal, "fired: {:?}", report.fired);
    assert_eq!(node(&fused, goal[0]).name, named);
    assert_same_outputs(original, &fused, &X_DIMS);
    (fused, report)
}

fn assert_untouched(original: &Model, target_opset: i64) {
    let (fused, report) = fused_at(original, target_opset);
    assert_eq!(ops(&fused), ops(original), "fired: {:?}", report.fired);
    assert!(report.opset_raised.is_none());
}

// ---------------------------------------------------------------------------
// HardSwish

/// paddle2onnx's HardSwish: Add(x, 3) → Clip(0, 6) → Mul(x, ·) → Div(·, 6).
fn paddle_hard_swish(opset: i64, clip: Step, six: &str) -> Model {
    model(opset, &[step("Add", &["x", "c:3"], "a"), clip, step("Mul", &["x", "c"], "m"), step("Div", &["m", six], "y")])
}

#[test]
fn paddle_hard_swish_becomes_one_node_and_raises_the_opset_to_14() {
    let original = paddle_hard_swish(12, step("Clip", &["a", "c:0", "c:6"], "c"), "c:6");
    let (fused, report) = assert_fuses(&original, &["HardSwish"], "node3_Div");
    assert_eq!(report.fired.iter().find(|(rule, _)| rule == "hard-swish-div"), Some(&("hard-swish-div".into(), 1)));
    let raised = report.opset_raised.expect("raised");
    assert_eq!((raised.from, raised.to), (12, 14));
    assert_eq!(raised.operators, vec![("HardSwish".to_string(), 14)]);
    assert_eq!(fused.opset(""), Some(14));
}

#[test]
fn hard_swish_spellings_fuse() {
    let clip = || step("Clip", &["a", "c:0", "c:6"], "c");
    let spellings: Vec<(&str, Model)> = vec![
        (
            "clip first in the product, times 1/6",
            model(
                13,
                &[
                    step("Add", &["c:3", "x"], "a"),
                    clip(),
                    step("Mul", &["c", "x"], "m"),
                    step("Mul", &["m", "c:0.16666667"], "y"),
                ],
            ),
        ),
        (
            "1/6 first",
            model(
                13,
                &[
                    step("Add", &["x", "c:3"], "a"),
                    clip(),
                    step("Mul", &["x", "c"], "m"),
                    step("Mul", &["c:0.16666667", "m"], "y"),
                ],
            ),
        ),
        (
            "Relu6 as Min(Max(·, 0), 6)",
            model(
                13,
                &[
                    step("Add", &["x", "c:3"], "a"),
                    step("Max", &["a", "c:0"], "r"),
                    step("Min", &["r", "c:6"], "c"),
                    step("Mul", &["x", "c"], "m"),
                    step("Div", &["m", "c:6"], "y"),
                ],
            ),
        ),
        (
            "Relu6 as Min(Relu(·), 6)",
            model(
                13,
                &[
                    step("Add", &["x", "c:3"], "a"),
                    step("Relu", &["a"], "r"),
                    step("Min", &["r", "c:6"], "c"),
                    step("Mul", &["x", "c"], "m"),
                    step("Div", &["m", "c:6"], "y"),
                ],
            ),
        ),
        (
            "x · HardSigmoid(x)",
            model(
                13,
                &[
                    with("HardSigmoid", &["x"], "h", vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)]),
                    step("Mul", &["x", "h"], "y"),
                ],
            ),
        ),
        (
            "x · (clip(x + 3, 0, 6) / 6)",
            model(
                13,
                &[
                    step("Add", &["x", "c:3"], "a"),
                    clip(),
                    step("Div", &["c", "c:6"], "h"),
                    step("Mul", &["h", "x"], "y"),
                ],
            ),
        ),
        (
            "opset 10: Clip's bounds as attributes",
            paddle_hard_swish(10, with("Clip", &["a"], "c", vec![float("min", 0.0), float("max", 6.0)]), "c:6"),
        ),
    ];
    for (spelling, original) in spellings {
        let (fused, _) = fused_at(&original, 22);
        assert_eq!(ops(&fused), ["HardSwish"], "{spelling}");
        assert_eq!(fused.opset(""), Some(14), "{spelling}");
        assert_same_outputs(&original, &fused, &X_DIMS);
    }
}

/// Min and Max read constants of any rank; Clip's bounds must be scalars.
#[test]
fn relu6_from_min_and_max_gets_scalar_clip_bounds() {
    let original = model_with(
        12,
        &X_DIMS,
        &[step("Max", &["x", "zero"], "r"), step("Min", &["r", "six"], "y")],
        vec![tensor::from_f32("zero", &[1, 1, 1, 1], &[0.0]), tensor::from_f32("six", &[1, 1, 1, 1], &[6.0])],
        &["y"],
    );
    let (fused, _) = assert_fuses(&original, &["Clip"], "node1_Min");
    let clip = node(&fused, "Clip");
    for bound in [1, 2] {
        let shape = fused.graph.value(clip.input(bound).unwrap()).shape.clone().unwrap();
        assert_eq!(shape.rank(), 0, "bound {bound}");
    }
}

#[test]
fn near_misses_of_hard_swish_stay_as_they_are() {
    // Clip to 5, not 6.
    assert_untouched(&paddle_hard_swish(12, step("Clip", &["a", "c:0", "c:5"], "c"), "c:6"), 22);
    // Divided by 6.5.
    assert_untouched(&paddle_hard_swish(12, step("Clip", &["a", "c:0", "c:6"], "c"), "c:6.5"), 22);
    // The Clip's output is read elsewhere too (a second graph output).
    let shared = model_with(
        12,
        &X_DIMS,
        &[
            step("Add", &["x", "c:3"], "a"),
            step("Clip", &["a", "c:0", "c:6"], "c"),
            step("Mul", &["x", "c"], "m"),
            step("Div", &["m", "c:6"], "y"),
        ],
        Vec::new(),
        &["y", "c"],
    );
    assert_untouched(&shared, 22);
    // A constant of higher rank than x broadcasts the result to a larger shape.
    let growing = model_with(
        12,
        &X_DIMS,
        &[
            step("Add", &["x", "three"], "a"),
            step("Clip", &["a", "c:0", "c:6"], "c"),
            step("Mul", &["x", "c"], "m"),
            step("Div", &["m", "c:6"], "y"),
        ],
        vec![tensor::from_f32("three", &[1, 1, 1, 1, 1], &[3.0])],
        &["y"],
    );
    assert_untouched(&growing, 22);
    // On doubles (ONNX Runtime's CPU HardSwish takes float32 only).
    let doubles = model_with(
        12,
        &X_DIMS,
        &[
            with("Cast", &["x"], "xd", vec![int("to", DataType::Double.code().into())]),
            step("Add", &["xd", "three"], "a"),
            step("Clip", &["a", "zero", "six"], "c"),
            step("Mul", &["xd", "c"], "m"),
            step("Div", &["m", "six"], "yd"),
            with("Cast", &["yd"], "y", vec![int("to", DataType::Float.code().into())]),
        ],
        ["three", "zero", "six"]
            .iter()
            .zip([3.0, 0.0, 6.0])
            .map(|(name, value)| tensor::from_f64(DataType::Double, &[], &[value]).map(|t| named(t, name)).unwrap())
            .collect(),
        &["y"],
    );
    assert_untouched(&doubles, 22);
    // The target opset does not have HardSwish.
    assert_untouched(&paddle_hard_swish(12, step("Clip", &["a", "c:0", "c:6"], "c"), "c:6"), 13);
}

// ---------------------------------------------------------------------------
// HardSigmoid

#[test]
fn hard_sigmoid_spellings_fuse_with_their_slope_and_offset() {
    let divided = model(
        12,
        &[step("Add", &["x", "c:3"], "a"), step("Clip", &["a", "c:0", "c:6"], "c"), step("Div", &["c", "c:6"], "y")],
    );
    let (fused, report) = assert_fuses(&divided, &["HardSigmoid"], "node2_Div");
    let hard_sigmoid = node(&fused, "HardSigmoid");
    assert!((hard_sigmoid.attr_float("alpha").unwrap() - 1.0 / 6.0).abs() < 1e-7);
    assert_eq!(hard_sigmoid.attr_float("beta"), Some(0.5));
    assert!(report.opset_raised.is_none(), "HardSigmoid is in opset 6");

    let affine = model(
        12,
        &[
            step("Mul", &["x", "c:0.2"], "s"),
            step("Add", &["s", "c:0.4"], "a"),
            step("Clip", &["a", "c:0", "c:1"], "y"),
        ],
    );
    let (fused, _) = assert_fuses(&affine, &["HardSigmoid"], "node2_Clip");
    let hard_sigmoid = node(&fused, "HardSigmoid");
    assert_eq!((hard_sigmoid.attr_float("alpha"), hard_sigmoid.attr_float("beta")), (Some(0.2), Some(0.4)));

    // clip(x + 3, 0, -6) is -6 everywhere (min above max), not a HardSigmoid.
    let negative = model(
        12,
        &[step("Add", &["x", "c:3"], "a"), step("Clip", &["a", "c:0", "c:-6"], "c"), step("Div", &["c", "c:-6"], "y")],
    );
    assert_untouched(&negative, 22);
    // clip(x + 3, 0, 6) / 6.5 is not clip(·, 0, 1) of anything.
    let off = model(
        12,
        &[step("Add", &["x", "c:3"], "a"), step("Clip", &["a", "c:0", "c:6"], "c"), step("Div", &["c", "c:6.5"], "y")],
    );
    assert_untouched(&off, 22);
}

// ---------------------------------------------------------------------------
// The activations newer opsets name

#[test]
fn gelu_in_erf_and_tanh_forms_fuses_at_opset_20() {
    let erf = model(
        13,
        &[
            step("Div", &["x", "c:1.4142135"], "d"),
            step("Erf", &["d"], "e"),
            step("Add", &["e", "c:1"], "a"),
            step("Mul", &["x", "a"], "m"),
            step("Mul", &["m", "c:0.5"], "y"),
        ],
    );
    let (fused, report) = assert_fuses(&erf, &["Gelu"], "node4_Mul");
    assert_eq!(report.opset_raised.unwrap().to, 20);
    assert_eq!(node(&fused, "Gelu").attr_string("approximate"), None);

    let half_first = model(
        13,
        &[
            step("Mul", &["x", "c:0.70710677"], "d"),
            step("Erf", &["d"], "e"),
            step("Add", &["c:1", "e"], "a"),
            step("Mul", &["x", "c:0.5"], "h"),
            step("Mul", &["h", "a"], "y"),
        ],
    );
    assert_fuses(&half_first, &["Gelu"], "node4_Mul");

    let tanh = model(
        13,
        &[
            step("Pow", &["x", "c:3"], "p"),
            step("Mul", &["p", "c:0.044715"], "k"),
            step("Add", &["x", "k"], "s"),
            step("Mul", &["s", "c:0.7978846"], "t"),
            step("Tanh", &["t"], "th"),
            step("Add", &["th", "c:1"], "a"),
            step("Mul", &["x", "c:0.5"], "h"),
            step("Mul", &["h", "a"], "y"),
        ],
    );
    let (fused, _) = assert_fuses(&tanh, &["Gelu"], "node7_Mul");
    assert_eq!(node(&fused, "Gelu").attr_string("approximate").as_deref(), Some("tanh"));

    // Not below the opset that defines Gelu.
    assert_untouched(&erf, 19);
}

#[test]
fn mish_fuses_at_opset_18_swish_only_at_24() {
    let softplus =
        model(13, &[step("Softplus", &["x"], "s"), step("Tanh", &["s"], "t"), step("Mul", &["x", "t"], "y")]);
    let (_, report) = assert_fuses(&softplus, &["Mish"], "node2_Mul");
    assert_eq!(report.opset_raised.unwrap().to, 18);
    let log_exp = model(
        13,
        &[
            step("Exp", &["x"], "e"),
            step("Add", &["e", "c:1"], "a"),
            step("Log", &["a"], "s"),
            step("Tanh", &["s"], "t"),
            step("Mul", &["x", "t"], "y"),
        ],
    );
    let (fused, _) = fused_at(&log_exp, 22);
    assert_eq!(ops(&fused), ["Mish"]);

    // PP-OCR's recognizer spells Swish as x · Sigmoid(Mul(x, 1)).
    let swish =
        model(13, &[step("Mul", &["x", "c:1"], "one"), step("Sigmoid", &["one"], "s"), step("Mul", &["x", "s"], "y")]);
    let (fused, _) = fused_at(&swish, 22);
    assert_eq!(ops(&fused), ["Mul", "Sigmoid"], "Swish needs opset 24; the Mul by one goes");
    let (fused, report) = fused_at(&swish, 24);
    assert_eq!(ops(&fused), ["Swish"]);
    assert_eq!(report.opset_raised.unwrap().to, 24);
}

#[test]
fn multiplying_by_one_and_adding_zero_are_removed_unless_they_broadcast() {
    let identities = model(
        13,
        &[
            step("Mul", &["x", "c:1"], "a"),
            step("Add", &["c:0", "a"], "b"),
            step("Div", &["b", "c:1"], "c"),
            step("Sub", &["c", "c:0"], "d"),
            step("Relu", &["d"], "y"),
        ],
    );
    let (fused, _) = fused_at(&identities, 22);
    assert_eq!(ops(&fused), ["Relu"]);
    let growing = model_with(
        13,
        &X_DIMS,
        &[step("Mul", &["x", "one"], "y")],
        vec![tensor::from_f32("one", &[1, 1, 1, 1, 1], &[1.0])],
        &["y"],
    );
    assert_untouched(&growing, 22);
    let not_one = model(13, &[step("Mul", &["x", "c:1.001"], "y")]);
    assert_untouched(&not_one, 22);
}

// ---------------------------------------------------------------------------
// LayerNormalization

/// The decomposed layer normalization over the last axis of x [1, 6, 16]
/// (γ of `gamma_dims`, 16 values),
/// as PP-OCR's recognizer spells it (Pow, or `square` = Mul(d, d)), with
/// the reduction axes as an attribute before opset 18 and an input after.
fn decomposed_layer_norm(opset: i64, square: &str, axes: &[i64], gamma_dims: &[i64]) -> Model {
    let mean = |input: &'static str, output: &'static str| -> Step<'static> {
        if opset >= 18 {
            step("ReduceMean", if input == "x" { &["x", "axes"] } else { &["q", "axes"] }, output)
        } else {
            with("ReduceMean", if input == "x" { &["x"] } else { &["q"] }, output, vec![ints("axes", axes)])
        }
    };
    let squared = if square == "Pow" { step("Pow", &["d", "c:2"], "q") } else { step("Mul", &["d", "d"], "q") };
    let gamma: Vec<f32> = (0..16).map(|i| 0.5 + i as f32 / 16.0).collect();
    let beta: Vec<f32> = (0..16).map(|i| i as f32 / 32.0 - 0.25).collect();
    let mut constants = vec![tensor::from_f32("gamma", gamma_dims, &gamma), tensor::from_f32("beta", &[16], &beta)];
    if opset >= 18 {
        constants.push(tensor::from_i64("axes", &[axes.len() as i64], axes));
    }
    model_with(
        opset,
        &[1, 6, 16],
        &[
            mean("x", "m"),
            step("Sub", &["x", "m"], "d"),
            squared,
            mean("q", "v"),
            step("Add", &["v", "c:0.00001"], "ve"),
            step("Sqrt", &["ve"], "s"),
            step("Div", &["d", "s"], "n"),
            step("Mul", &["n", "gamma"], "g"),
            step("Add", &["g", "beta"], "y"),
        ],
        constants,
        &["y"],
    )
}

#[test]
fn decomposed_layer_norm_becomes_layer_normalization_with_its_scale_and_bias() {
    for (opset, square) in [(12, "Pow"), (12, "Mul"), (18, "Pow")] {
        let original = decomposed_layer_norm(opset, square, &[-1], &[16]);
        let (fused, report) = fused_at(&original, 22);
        assert_eq!(ops(&fused), ["LayerNormalization"], "opset {opset}, {square}: {:?}", report.fired);
        let normalization = node(&fused, "LayerNormalization");
        assert_eq!(normalization.name, "node8_Add");
        assert_eq!(normalization.attr_int("axis"), Some(2));
        assert!((normalization.attr_float("epsilon").unwrap() - 1e-5).abs() < 1e-12);
        assert_eq!(fused.opset(""), Some(opset.max(17)));
        assert_same_outputs(&original, &fused, &[1, 6, 16]);
    }
    // γ of rank 4 on x of rank 3 broadcasts the output wider: it stays a Mul after the LayerNormalization.
    let wide_gamma = decomposed_layer_norm(12, "Pow", &[-1], &[1, 1, 1, 16]);
    let (fused, _) = fused_at(&wide_gamma, 22);
    assert_eq!(ops(&fused), ["Add", "LayerNormalization", "Mul"]);
    let output = fused.graph.outputs[0].value;
    assert_eq!(fused.graph.value(output).shape.as_ref().map(|s| s.rank()), Some(4));
    assert_same_outputs(&wide_gamma, &fused, &[1, 6, 16]);
    // Normalizing over a middle axis is not a layer normalization.
    assert_untouched(&decomposed_layer_norm(12, "Pow", &[1], &[16]), 22);
    // Opset 17 defines it.
    assert_untouched(&decomposed_layer_norm(12, "Pow", &[-1], &[16]), 16);
}
