//! Unit tests: one small graph per rewrite, built at the old opset, upgraded,
//! exported, and checked node by node (start ⇒ goal). Numerical equivalence
//! is checked on whole models in tests/opset.rs.

use std::collections::BTreeMap;

use super::{upgrade, OpsetError, Upgrade, MAX_TARGET_OPSET};
use crate::ir::attribute::{self, float, floats, int, ints, string};
use crate::ir::dtype::DataType;
use crate::ir::tensor::{from_f32, from_i64, to_f64, to_i64};
use crate::ir::{export, import, tensor_declaration, AttributeList, Dim, Shape};
use crate::onnx::proto::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};

// ---------------------------------------------------------------------------
// Building models

/// A tensor declaration; `dims` None leaves the shape out, `-1` is an unknown dim.
fn declared(name: &str, dtype: DataType, dims: Option<&[i64]>) -> ValueInfoProto {
    let dim = |&d: &i64| if d >= 0 { Dim::Known(d) } else { Dim::Unknown };
    let shape = dims.map(|dims| Shape(dims.iter().map(dim).collect()));
    tensor_declaration(name, dtype, shape.as_ref())
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: Some(format!("{}_node", outputs.first().copied().unwrap_or(op))),
        op_type: Some(op.to_string()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

/// A model at `opset` with float input `x` of `dims` and graph outputs `outputs`.
fn model(opset: i64, dims: Option<&[i64]>, nodes: Vec<NodeProto>, outputs: &[&str]) -> ModelProto {
    ModelProto {
        ir_version: Some(crate::ir::opset::min_ir_version(opset)),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        graph: Some(GraphProto {
            name: Some("test".into()),
            node: nodes,
            input: vec![declared("x", DataType::Float, dims)],
            output: outputs.iter().map(|name| declared(name, DataType::Float, None)).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_initializer(mut model: ModelProto, tensor: TensorProto) -> ModelProto {
    model.graph.as_mut().unwrap().initializer.push(tensor);
    model
}

/// Imports, upgrades and exports.
fn upgraded(model: ModelProto, target: i64) -> (ModelProto, Upgrade) {
    let mut ir = import(model).unwrap();
    let report = upgrade(&mut ir, target).unwrap();
    (export(ir).unwrap(), report)
}

fn upgrade_error(model: ModelProto, target: i64) -> String {
    let mut ir = import(model).unwrap();
    upgrade(&mut ir, target).unwrap_err().to_string()
}

// ---------------------------------------------------------------------------
// Reading results

fn graph(model: &ModelProto) -> &GraphProto {
    model.graph.as_ref().unwrap()
}

fn ops(model: &ModelProto) -> Vec<&str> {
    graph(model).node.iter().map(|n| n.op_type.as_deref().unwrap_or("")).collect()
}

fn only<'a>(model: &'a ModelProto, op: &str) -> &'a NodeProto {
    let mut found = graph(model).node.iter().filter(|n| n.op_type.as_deref() == Some(op));
    let first = found.next().unwrap_or_else(|| panic!("no {op} in {:?}", ops(model)));
    assert!(found.next().is_none(), "more than one {op}");
    first
}

fn initializer<'a>(model: &'a ModelProto, name: &str) -> &'a TensorProto {
    let graph = graph(model);
    graph
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no initializer {name}"))
}

/// The int64 elements and dims of the initializer a node reads at `slot`.
fn int_input(model: &ModelProto, node: &NodeProto, slot: usize) -> (Vec<i64>, Vec<i64>) {
    let tensor = initializer(model, &node.input[slot]);
    assert_eq!(tensor.data_type, Some(DataType::Int64.code()), "{}", node.input[slot]);
    (to_i64(tensor).unwrap(), tensor.dims.clone())
}

/// The float elements of the initializer a node reads at `slot`.
fn float_input(model: &ModelProto, node: &NodeProto, slot: usize) -> Vec<f64> {
    to_f64(initializer(model, &node.input[slot])).unwrap()
}

fn string_attr(node: &NodeProto, name: &str) -> Option<String> {
    node.attribute.as_slice().attr_string(name)
}

fn has_attr(node: &NodeProto, name: &str) -> bool {
    node.attribute.as_slice().attribute(name).is_some()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(op, count)| (op.to_string(), *count)).collect()
}

// ---------------------------------------------------------------------------
// Softmax family

#[test]
fn softmax_on_a_middle_axis_is_flattened_and_reshaped_back() {
    let start = model(12, Some(&[1, 10, 2, 2]), vec![node("Softmax", &["x"], &["y"], vec![])], &["y"]);
    let (goal, report) = upgraded(start, 13);
    assert_eq!(ops(&goal), ["Flatten", "Softmax", "Shape", "Reshape"]);
    let flatten = only(&goal, "Flatten");
    assert_eq!(flatten.attribute.as_slice().attr_int("axis"), Some(1), "old default axis");
    let softmax = only(&goal, "Softmax");
    assert_eq!(softmax.input, flatten.output);
    assert_eq!(softmax.attribute.as_slice().attr_int("axis"), Some(-1));
    let reshape = only(&goal, "Reshape");
    assert_eq!(reshape.input, [softmax.output[0].clone(), only(&goal, "Shape").output[0].clone()]);
    assert_eq!(reshape.output, ["y"], "the output keeps its name");
    assert_eq!(only(&goal, "Shape").input, ["x"]);
    assert_eq!(report.rewritten, counts(&[("Softmax", 1)]));
    assert_eq!(report.to_opset, 13);
    assert_eq!(goal.opset_import[0].version, Some(13));
}

#[test]
fn softmax_on_the_last_axis_stays_as_it_is() {
    for (dims, axis) in [(vec![1, 1000], None), (vec![2, 3, 4], Some(2)), (vec![2, 3, 4], Some(-1))] {
        let attributes = axis.map(|a| vec![int("axis", a)]).unwrap_or_default();
        let start = model(11, Some(&dims), vec![node("LogSoftmax", &["x"], &["y"], attributes.clone())], &["y"]);
        let (goal, report) = upgraded(start, 21);
        assert_eq!(ops(&goal), ["LogSoftmax"], "{dims:?}");
        assert_eq!(only(&goal, "LogSoftmax").attribute, attributes);
        assert_eq!(report.total_rewritten(), 0);
    }
}

#[test]
fn hardmax_of_unknown_rank_is_coerced_explicitly() {
    let start = model(9, None, vec![node("Hardmax", &["x"], &["y"], vec![int("axis", 2)])], &["y"]);
    let (goal, report) = upgraded(start, 13);
    assert_eq!(ops(&goal), ["Flatten", "Hardmax", "Shape", "Reshape"]);
    assert_eq!(only(&goal, "Flatten").attribute.as_slice().attr_int("axis"), Some(2));
    assert_eq!(report.rewritten, counts(&[("Hardmax", 1)]));
}

#[test]
fn softmax_before_13_is_left_alone_when_the_target_is_below_13() {
    let start = model(9, Some(&[1, 10, 2, 2]), vec![node("Softmax", &["x"], &["y"], vec![])], &["y"]);
    let (goal, report) = upgraded(start, 12);
    assert_eq!(ops(&goal), ["Softmax"]);
    assert_eq!(report.total_rewritten(), 0);
}

// ---------------------------------------------------------------------------
// Attributes that became inputs

#[test]
fn slice_attributes_become_inputs() {
    let attributes = vec![ints("starts", &[0, 1]), ints("ends", &[1, -1]), ints("axes", &[0, 3])];
    let start = model(9, Some(&[2, 3, 4, 5]), vec![node("Slice", &["x"], &["y"], attributes)], &["y"]);
    let (goal, report) = upgraded(start, 13);
    let slice = only(&goal, "Slice");
    assert!(slice.attribute.is_empty());
    assert_eq!(slice.input.len(), 4);
    assert_eq!(int_input(&goal, slice, 1), (vec![0, 1], vec![2]));
    assert_eq!(int_input(&goal, slice, 2), (vec![1, -1], vec![2]));
    assert_eq!(int_input(&goal, slice, 3), (vec![0, 3], vec![2]));
    assert_eq!(report.rewritten, counts(&[("Slice", 1)]));
}

#[test]
fn topk_k_becomes_a_one_element_input() {
    let start = model(9, Some(&[2, 8]), vec![node("TopK", &["x"], &["v", "i"], vec![int("k", 3)])], &["v", "i"]);
    let (goal, _) = upgraded(start, 10);
    let topk = only(&goal, "TopK");
    assert_eq!(int_input(&goal, topk, 1), (vec![3], vec![1]));
    assert!(!has_attr(topk, "k"));
}

#[test]
fn clip_bounds_become_scalar_inputs_of_the_input_type() {
    let start =
        model(9, Some(&[4]), vec![node("Clip", &["x"], &["y"], vec![float("min", 0.0), float("max", 6.0)])], &["y"]);
    let (goal, _) = upgraded(start, 11);
    let clip = only(&goal, "Clip");
    assert!(clip.attribute.is_empty());
    assert_eq!(float_input(&goal, clip, 1), [0.0]);
    assert_eq!(float_input(&goal, clip, 2), [6.0]);
    assert!(initializer(&goal, &clip.input[2]).dims.is_empty(), "a scalar");

    let only_max = model(9, Some(&[4]), vec![node("Clip", &["x"], &["y"], vec![float("max", 6.0)])], &["y"]);
    let (goal, _) = upgraded(only_max, 13);
    assert_eq!(only(&goal, "Clip").input[1], "", "min left out");
}

#[test]
fn pad_pads_and_value_become_inputs() {
    let attributes = vec![ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1]), float("value", 0.5)];
    let start = model(9, Some(&[1, 1, 2, 2]), vec![node("Pad", &["x"], &["y"], attributes)], &["y"]);
    let (goal, _) = upgraded(start, 13);
    let pad = only(&goal, "Pad");
    assert_eq!(int_input(&goal, pad, 1).0, [0, 0, 1, 1, 0, 0, 1, 1]);
    assert_eq!(float_input(&goal, pad, 2), [0.5]);

    let reflect = vec![ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1]), string("mode", "reflect")];
    let start = model(9, Some(&[1, 1, 2, 2]), vec![node("Pad", &["x"], &["y"], reflect)], &["y"]);
    let (goal, _) = upgraded(start, 13);
    let pad = only(&goal, "Pad");
    assert_eq!(pad.input.len(), 2, "no constant value when zero");
    assert_eq!(string_attr(pad, "mode").as_deref(), Some("reflect"));
}

#[test]
fn axes_become_inputs_at_13_for_squeeze_and_reduce_sum_and_at_18_for_other_reductions() {
    let nodes = vec![
        node("Unsqueeze", &["x"], &["u"], vec![ints("axes", &[0])]),
        node("Squeeze", &["u"], &["s"], vec![ints("axes", &[0])]),
        node("ReduceSum", &["s"], &["r"], vec![ints("axes", &[1]), int("keepdims", 1)]),
        node("ReduceMean", &["r"], &["m"], vec![ints("axes", &[1])]),
    ];
    let start = model(11, Some(&[2, 3]), nodes, &["m"]);
    let (at13, report) = upgraded(start.clone(), 13);
    for op in ["Unsqueeze", "Squeeze", "ReduceSum"] {
        let node = only(&at13, op);
        assert!(!has_attr(node, "axes"), "{op}");
        assert_eq!(int_input(&at13, node, 1).1, vec![1], "{op}");
    }
    assert_eq!(only(&at13, "ReduceSum").attribute.as_slice().attr_int("keepdims"), Some(1));
    assert!(has_attr(only(&at13, "ReduceMean"), "axes"), "ReduceMean keeps its attribute until 18");
    assert_eq!(report.rewritten, counts(&[("ReduceSum", 1), ("Squeeze", 1), ("Unsqueeze", 1)]));

    let (at18, report) = upgraded(start, 18);
    assert_eq!(int_input(&at18, only(&at18, "ReduceMean"), 1).0, [1]);
    assert_eq!(report.total_rewritten(), 4);
}

#[test]
fn split_sizes_become_an_input_and_even_splits_name_their_output_count_at_18() {
    let sized = model(11, Some(&[6]), vec![node("Split", &["x"], &["a", "b"], vec![ints("split", &[2, 4])])], &["a"]);
    let (goal, _) = upgraded(sized, 18);
    let split = only(&goal, "Split");
    assert_eq!(int_input(&goal, split, 1).0, [2, 4]);
    assert!(!has_attr(split, "num_outputs"));

    let even = model(11, Some(&[6]), vec![node("Split", &["x"], &["a", "b", "c"], vec![])], &["a"]);
    let (at13, _) = upgraded(even.clone(), 13);
    assert!(only(&at13, "Split").attribute.is_empty());
    let (at18, report) = upgraded(even, 18);
    assert_eq!(only(&at18, "Split").attribute.as_slice().attr_int("num_outputs"), Some(3));
    assert_eq!(report.rewritten, counts(&[("Split", 1)]));
}

// ---------------------------------------------------------------------------
// Dropout and BatchNormalization

#[test]
fn dropout_loses_an_unused_mask_and_takes_its_ratio_as_an_input() {
    let start =
        model(7, Some(&[2, 2]), vec![node("Dropout", &["x"], &["y", "mask"], vec![float("ratio", 0.3)])], &["y"]);
    let (goal, report) = upgraded(start, 13);
    let dropout = only(&goal, "Dropout");
    assert_eq!(dropout.output, ["y"]);
    assert!(dropout.attribute.is_empty());
    assert!((float_input(&goal, dropout, 1)[0] - 0.3).abs() < 1e-7);
    assert_eq!(report.rewritten, counts(&[("Dropout", 1)]));
}

#[test]
fn a_dropout_mask_that_is_read_cannot_turn_bool() {
    let start = model(9, Some(&[2, 2]), vec![node("Dropout", &["x"], &["y", "mask"], vec![])], &["y", "mask"]);
    let message = upgrade_error(start, 13);
    assert!(message.contains("node 'y_node' (Dropout)"), "{message}");
    assert!(message.contains("'mask' is read"), "{message}");
}

fn batchnorm_model(opset: i64, attributes: Vec<AttributeProto>, outputs: &[&str]) -> ModelProto {
    let mut start = model(
        opset,
        Some(&[1, 2, 3, 3]),
        vec![node("BatchNormalization", &["x", "s", "b", "m", "v"], outputs, attributes)],
        &["y"],
    );
    for name in ["s", "b", "m", "v"] {
        start = with_initializer(start, from_f32(name, &[2], &[1.0, 1.0]));
    }
    start
}

#[test]
fn batchnorm_spatial_goes_and_training_outputs_are_dropped() {
    let start = batchnorm_model(7, vec![int("spatial", 1), float("epsilon", 1e-3)], &["y", "m1", "v1", "sm", "sv"]);
    let (at9, _) = upgraded(start.clone(), 9);
    let bn = only(&at9, "BatchNormalization");
    assert!(!has_attr(bn, "spatial"));
    assert_eq!(bn.output.len(), 5, "outputs stay until 14");
    let (at14, report) = upgraded(start, 14);
    let bn = only(&at14, "BatchNormalization");
    assert_eq!(bn.output, ["y"]);
    assert!(has_attr(bn, "epsilon"));
    assert_eq!(report.rewritten, counts(&[("BatchNormalization", 1)]));
}

#[test]
fn per_activation_batchnorm_is_refused() {
    let message = upgrade_error(batchnorm_model(8, vec![int("spatial", 0)], &["y"]), 13);
    assert!(message.contains("(BatchNormalization)") && message.contains("spatial=0"), "{message}");
}

// ---------------------------------------------------------------------------
// Upsample, Resize

#[test]
fn upsample_becomes_resize_with_asymmetric_floor_sampling() {
    let attributes = vec![floats("scales", &[1.0, 1.0, 2.0, 2.0])];
    let start = model(7, Some(&[1, 1, 2, 2]), vec![node("Upsample", &["x"], &["y"], attributes)], &["y"]);
    let (at13, report) = upgraded(start.clone(), 13);
    let resize = only(&at13, "Resize");
    assert_eq!(resize.input[..2], ["x", ""], "no roi from 13");
    assert_eq!(float_input(&at13, resize, 2), [1.0, 1.0, 2.0, 2.0]);
    assert_eq!(string_attr(resize, "coordinate_transformation_mode").as_deref(), Some("asymmetric"));
    assert_eq!(string_attr(resize, "nearest_mode").as_deref(), Some("floor"));
    assert!(!has_attr(resize, "scales"));
    assert_eq!(report.rewritten, counts(&[("Upsample", 1)]));

    let (at11, _) = upgraded(start.clone(), 11);
    let resize = only(&at11, "Resize");
    assert_eq!(initializer(&at11, &resize.input[1]).dims, [0], "an empty roi at 11");
    let (at10, _) = upgraded(start, 10);
    let resize = only(&at10, "Resize");
    assert_eq!(resize.input.len(), 2, "Resize-10 takes (X, scales)");
    assert!(!has_attr(resize, "coordinate_transformation_mode"));
}

#[test]
fn upsample_9_keeps_its_scales_input_and_linear_mode() {
    let nodes = vec![node("Upsample", &["x", "scales"], &["y"], vec![string("mode", "linear")])];
    let start =
        with_initializer(model(9, Some(&[1, 1, 2, 2]), nodes, &["y"]), from_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]));
    let (goal, _) = upgraded(start, 21);
    let resize = only(&goal, "Resize");
    assert_eq!(resize.input, ["x", "", "scales"]);
    assert_eq!(string_attr(resize, "mode").as_deref(), Some("linear"));
    assert!(!has_attr(resize, "nearest_mode"));
}

#[test]
fn resize_10_downsampling_rounds_up_and_mixed_scales_are_refused() {
    let resize = |scales: &[f32]| {
        let nodes = vec![node("Resize", &["x", "scales"], &["y"], vec![])];
        with_initializer(model(10, Some(&[1, 1, 4, 4]), nodes, &["y"]), from_f32("scales", &[4], scales))
    };
    let (goal, report) = upgraded(resize(&[1.0, 1.0, 0.6, 0.6]), 13);
    let node = only(&goal, "Resize");
    assert_eq!(node.input, ["x", "", "scales"]);
    assert_eq!(string_attr(node, "nearest_mode").as_deref(), Some("ceil"));
    assert_eq!(report.rewritten, counts(&[("Resize", 1)]));
    let message = upgrade_error(resize(&[1.0, 1.0, 0.5, 2.0]), 13);
    assert!(message.contains("both grow and shrink"), "{message}");
}

#[test]
fn resize_11_needs_nothing_up_to_22() {
    let nodes = vec![node("Resize", &["x", "roi", "scales"], &["y"], vec![string("mode", "linear")])];
    let mut start = with_initializer(model(11, Some(&[1, 1, 2, 2]), nodes, &["y"]), from_f32("roi", &[0], &[]));
    start = with_initializer(start, from_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]));
    let (goal, report) = upgraded(start, MAX_TARGET_OPSET);
    assert_eq!(only(&goal, "Resize").input, ["x", "roi", "scales"]);
    assert_eq!(report.total_rewritten(), 0);
}

// ---------------------------------------------------------------------------
// Renamed and re-spelled operators

#[test]
fn scatter_becomes_scatter_elements() {
    let nodes = vec![node("Scatter", &["x", "i", "u"], &["y"], vec![int("axis", 0)])];
    let mut start = with_initializer(model(9, Some(&[3]), nodes, &["y"]), from_i64("i", &[1], &[1]));
    start = with_initializer(start, from_f32("u", &[1], &[5.0]));
    let (goal, report) = upgraded(start, 13);
    assert_eq!(ops(&goal), ["ScatterElements"]);
    assert_eq!(only(&goal, "ScatterElements").attribute.as_slice().attr_int("axis"), Some(0));
    assert_eq!(report.rewritten, counts(&[("Scatter", 1)]));
}

#[test]
fn roi_align_keeps_its_old_sampling_and_grid_sample_modes_are_renamed() {
    let nodes = vec![
        node("RoiAlign", &["x", "rois", "idx"], &["r"], vec![]),
        node("GridSample", &["x", "grid"], &["g"], vec![string("mode", "bicubic")]),
    ];
    let mut start = with_initializer(
        model(16, Some(&[1, 1, 4, 4]), nodes, &["r", "g"]),
        from_f32("rois", &[1, 4], &[0.0, 0.0, 2.0, 2.0]),
    );
    start = with_initializer(start, from_i64("idx", &[1], &[0]));
    start = with_initializer(start, from_f32("grid", &[1, 1, 1, 2], &[0.0, 0.0]));
    let (goal, report) = upgraded(start.clone(), 20);
    assert!(!has_attr(only(&goal, "RoiAlign"), "coordinate_transformation_mode"), "16 is already the new form");
    assert_eq!(string_attr(only(&goal, "GridSample"), "mode").as_deref(), Some("cubic"));
    assert_eq!(report.rewritten, counts(&[("GridSample", 1)]));

    let mut older = start;
    older.opset_import[0].version = Some(10);
    older.graph.as_mut().unwrap().node.truncate(1);
    older.graph.as_mut().unwrap().output.truncate(1);
    let (goal, _) = upgraded(older, 16);
    let roi_align = only(&goal, "RoiAlign");
    assert_eq!(string_attr(roi_align, "coordinate_transformation_mode").as_deref(), Some("output_half_pixel"));
}

#[test]
fn dft_axis_becomes_an_input_with_the_old_default() {
    let start = model(17, Some(&[1, 8, 1]), vec![node("DFT", &["x"], &["y"], vec![])], &["y"]);
    let (goal, _) = upgraded(start, 20);
    let dft = only(&goal, "DFT");
    assert_eq!(dft.input[1], "", "no dft_length");
    assert_eq!(int_input(&goal, dft, 2), (vec![1], vec![]));
}

#[test]
fn group_normalization_scale_and_bias_are_repeated_per_channel() {
    let nodes = vec![node("GroupNormalization", &["x", "s", "b"], &["y"], vec![int("num_groups", 2)])];
    let mut start = with_initializer(model(18, Some(&[1, 6, 2, 2]), nodes, &["y"]), from_f32("s", &[2], &[1.0, 2.0]));
    start = with_initializer(start, from_f32("b", &[2], &[0.0, 1.0]));
    let (goal, report) = upgraded(start, 21);
    assert_eq!(ops(&goal).iter().filter(|op| **op == "Expand").count(), 2);
    let group_norm = only(&goal, "GroupNormalization");
    assert_ne!(group_norm.input[1], "s");
    let expand = graph(&goal).node.iter().find(|n| n.op_type.as_deref() == Some("Expand")).unwrap();
    assert_eq!(int_input(&goal, expand, 1).0, [1, 3]);
    assert_eq!(report.rewritten, counts(&[("GroupNormalization", 1)]));
}

#[test]
fn experimental_image_scaler_becomes_mul_and_per_channel_add() {
    let attributes = vec![float("scale", 0.5), floats("bias", &[1.0, 2.0, 3.0])];
    let start = model(8, Some(&[1, 3, 2, 2]), vec![node("ImageScaler", &["x"], &["y"], attributes)], &["y"]);
    let (goal, report) = upgraded(start, 13);
    assert_eq!(ops(&goal), ["Mul", "Add"]);
    let mul = only(&goal, "Mul");
    assert_eq!(float_input(&goal, mul, 1), [0.5]);
    let add = only(&goal, "Add");
    assert_eq!(add.input[0], mul.output[0]);
    assert_eq!(initializer(&goal, &add.input[1]).dims, [1, 3, 1, 1]);
    assert_eq!(add.output, ["y"]);
    assert_eq!(report.rewritten, counts(&[("ImageScaler", 1)]));
}

#[test]
fn experimental_scaled_tanh_and_dynamic_slice_are_spelled_in_standard_ops() {
    let nodes = vec![
        node("ScaledTanh", &["x"], &["t"], vec![float("alpha", 2.0), float("beta", 0.5)]),
        node("DynamicSlice", &["t", "starts", "ends"], &["y"], vec![]),
    ];
    let mut start = with_initializer(model(9, Some(&[4]), nodes, &["y"]), from_i64("starts", &[1], &[1]));
    start = with_initializer(start, from_i64("ends", &[1], &[3]));
    let (goal, _) = upgraded(start, 10);
    assert_eq!(ops(&goal), ["Mul", "Tanh", "Mul", "Slice"]);
    assert_eq!(only(&goal, "Slice").input, ["t", "starts", "ends"]);
}

#[test]
fn experimental_crop_becomes_a_slice_of_height_and_width() {
    let nodes = vec![
        node("Crop", &["x"], &["a"], vec![ints("border", &[1, 2, 0, 3])]),
        node("Crop", &["x"], &["b"], vec![ints("border", &[1, 2, 0, 3]), ints("scale", &[4, 5])]),
    ];
    let (goal, report) = upgraded(model(8, Some(&[1, 1, 9, 9]), nodes, &["a", "b"]), 13);
    let slices: Vec<&NodeProto> = graph(&goal).node.iter().collect();
    assert_eq!(ops(&goal), ["Slice", "Slice"]);
    assert_eq!(int_input(&goal, slices[0], 1).0, [2, 1], "starts at (top, left)");
    assert_eq!(int_input(&goal, slices[0], 2).0, [-3, i64::MAX], "ends at the bottom and right borders");
    assert_eq!(int_input(&goal, slices[0], 3).0, [2, 3]);
    assert_eq!(int_input(&goal, slices[1], 2).0, [6, 6], "or after (height, width)");
    assert_eq!(report.rewritten, counts(&[("Crop", 2)]));
}

#[test]
fn experimental_mean_variance_normalization_names_its_axes() {
    let nodes = vec![
        node("MeanVarianceNormalization", &["x"], &["a"], vec![]),
        node("MeanVarianceNormalization", &["x"], &["b"], vec![int("across_channels", 1)]),
    ];
    let (goal, _) = upgraded(model(8, Some(&[1, 2, 3, 3]), nodes, &["a", "b"]), 9);
    let axes: Vec<Vec<i64>> =
        graph(&goal).node.iter().map(|n| n.attribute.as_slice().attr_ints("axes").unwrap().to_vec()).collect();
    assert_eq!(axes, [vec![2, 3], vec![1, 2, 3]]);
    assert!(graph(&goal).node.iter().all(|n| n.attribute.len() == 1));
    let mean_only = vec![node("MeanVarianceNormalization", &["x"], &["a"], vec![int("normalize_variance", 0)])];
    assert!(upgrade_error(model(8, Some(&[1, 2, 3, 3]), mean_only, &["a"]), 13).contains("normalize_variance=0"));
}

// ---------------------------------------------------------------------------
// Subgraphs, functions, domains, versions

#[test]
fn subgraph_operators_are_upgraded_with_fresh_names() {
    let branch = |name: &str, axes: &[i64]| GraphProto {
        name: Some(name.into()),
        node: vec![node("Squeeze", &["x"], &[&format!("{name}_out")], vec![ints("axes", axes)])],
        output: vec![declared(&format!("{name}_out"), DataType::Float, None)],
        ..Default::default()
    };
    let nodes = vec![
        node("Squeeze", &["x"], &["s"], vec![ints("axes", &[0])]),
        node("ReduceSum", &["s"], &["c"], vec![ints("axes", &[0]), int("keepdims", 0)]),
        node("Cast", &["c"], &["cond"], vec![int("to", DataType::Bool.code() as i64)]),
        node(
            "If",
            &["cond"],
            &["y"],
            vec![
                attribute::graph("then_branch", branch("then", &[0])),
                attribute::graph("else_branch", branch("else", &[0])),
            ],
        ),
    ];
    let (goal, report) = upgraded(model(11, Some(&[1, 1]), nodes, &["y"]), 13);
    assert_eq!(report.subgraphs, 2);
    assert_eq!(report.rewritten, counts(&[("ReduceSum", 1), ("Squeeze", 3)]));
    let branch = only(&goal, "If").attribute[0].g.as_ref().unwrap();
    let squeeze = &branch.node[0];
    assert_eq!(squeeze.input[0], "x", "the outer value is still read");
    assert!(branch.input.is_empty(), "no temporary inputs left");
    let axes = branch.initializer.iter().find(|t| t.name.as_ref() == Some(&squeeze.input[1])).unwrap();
    assert_eq!(to_i64(axes).unwrap(), [0]);
    let outer_axes = &only(&goal, "Squeeze").input[1];
    assert_ne!(&squeeze.input[1], outer_axes, "names are unique across scopes");
}

#[test]
fn function_bodies_get_constant_nodes_and_their_opset_raised() {
    let mut start = model(11, Some(&[1, 2]), vec![node("Squeezer", &["x"], &["y"], vec![])], &["y"]);
    start.graph.as_mut().unwrap().node[0].domain = Some("local".into());
    start.opset_import.push(OperatorSetIdProto { domain: Some("local".into()), version: Some(1) });
    start.functions.push(FunctionProto {
        name: Some("Squeezer".into()),
        domain: Some("local".into()),
        input: vec!["a".into()],
        output: vec!["b".into()],
        node: vec![node("Squeeze", &["a"], &["b"], vec![ints("axes", &[0])])],
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(11) }],
        ..Default::default()
    });
    let (goal, report) = upgraded(start, 13);
    assert_eq!(report.functions, 1);
    let function = &goal.functions[0];
    assert_eq!(function.opset_import[0].version, Some(13));
    let body: Vec<&str> = function.node.iter().map(|n| n.op_type.as_deref().unwrap()).collect();
    assert_eq!(body, ["Constant", "Squeeze"]);
    assert_eq!(function.node[1].input, ["a", function.node[0].output[0].as_str()]);
    assert_eq!(only(&goal, "Squeezer").domain.as_deref(), Some("local"), "other domains are left alone");
}

#[test]
fn ir_version_rises_and_ir3_initializers_leave_the_inputs() {
    let mut start = model(8, Some(&[1, 2]), vec![node("Add", &["x", "w"], &["y"], vec![])], &["y"]);
    start.ir_version = Some(3);
    start = with_initializer(start, from_f32("w", &[2], &[1.0, 2.0]));
    start.graph.as_mut().unwrap().input.push(declared("w", DataType::Float, Some(&[2])));
    let (goal, report) = upgraded(start, 13);
    assert_eq!(goal.ir_version, Some(7));
    assert_eq!(report.from_ir_version, Some(3));
    assert_eq!(report.to_ir_version, 7);
    assert_eq!(report.initializers_unlisted, 1);
    let inputs: Vec<&str> = graph(&goal).input.iter().map(|i| i.name.as_deref().unwrap()).collect();
    assert_eq!(inputs, ["x"]);
    assert_eq!(graph(&goal).initializer.len(), 1);

    let (at21, report) = upgraded(model(13, Some(&[1]), vec![node("Relu", &["x"], &["y"], vec![])], &["y"]), 21);
    assert_eq!((at21.ir_version, report.total_rewritten()), (Some(10), 0));
}

#[test]
fn bad_requests_and_unknown_operators_are_errors_that_change_nothing() {
    let relu = |opset| model(opset, Some(&[1]), vec![node("Relu", &["x"], &["y"], vec![])], &["y"]);
    assert!(upgrade_error(relu(13), 11).contains("does not downgrade"));
    assert!(upgrade_error(relu(6), 13).contains("from opset 7 or later"));
    assert!(upgrade_error(relu(9), MAX_TARGET_OPSET + 1).contains(&format!("target opset {}", MAX_TARGET_OPSET + 1)));
    let mut none = relu(9);
    none.opset_import.clear();
    assert!(upgrade_error(none, 13).contains("no default-domain"));

    let nodes =
        vec![node("Squeeze", &["x"], &["s"], vec![ints("axes", &[0])]), node("Frobnicate", &["s"], &["y"], vec![])];
    let mut ir = import(model(11, Some(&[1, 2]), nodes, &["y"])).unwrap();
    let error = upgrade(&mut ir, 13).unwrap_err();
    assert!(matches!(error, OpsetError::Node { ref op, .. } if op == "Frobnicate"), "{error}");
    assert_eq!(ir.opset(""), Some(11), "nothing changed");
    let squeeze = ir.graph.nodes.node_weights().find(|n| n.op_type == "Squeeze").unwrap();
    assert_eq!(squeeze.inputs.len(), 1, "the earlier rewrite was not kept");
}

#[test]
fn an_attribute_reference_in_a_function_cannot_be_moved() {
    let mut start = model(11, Some(&[1, 2]), vec![node("F", &["x"], &["y"], vec![])], &["y"]);
    start.graph.as_mut().unwrap().node[0].domain = Some("local".into());
    let reference = AttributeProto { ref_attr_name: Some("which".into()), ..attribute::ints("axes", &[]) };
    start.functions.push(FunctionProto {
        name: Some("F".into()),
        domain: Some("local".into()),
        input: vec!["a".into()],
        output: vec!["b".into()],
        attribute: vec!["which".into()],
        node: vec![node("Squeeze", &["a"], &["b"], vec![reference])],
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(11) }],
        ..Default::default()
    });
    let message = upgrade_error(start, 13);
    assert!(message.contains("in function 'F'") && message.contains("refers to a function attribute"), "{message}");
}
