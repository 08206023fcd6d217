//! Engine tests that state start ⇒ goal on golden models, and the error
//! budget exercised with a synthetic approximate rule (exact families never
//! need it): each Relu may be dropped at an error of 0.3.

use super::*;
use crate::cost::DeviceProfile;
use crate::families::quantize;
use crate::ir::{DataType, Shape};
use crate::pipeline;

fn resnet_block() -> Model {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/resnet_block_op13/model.onnx");
    pipeline::load(&path, &[("images".into(), vec![1, 3, 32, 32])]).unwrap().model
}

fn options(families: &[&str], user_rules: &str, budget: f64) -> Options {
    Options {
        families: families.iter().map(|f| f.to_string()).collect(),
        user_rules: if user_rules.is_empty() { vec![] } else { vec![("test.rules".into(), user_rules.into())] },
        limits: Limits::default(),
        objective: Objective::Latency,
        profile: DeviceProfile::shipped("x86-avx2").unwrap(),
        budget,
        compression: None,
        target_opset: Some(22),
        measured: None,
    }
}

fn count(model: &Model, op: &str) -> usize {
    model.graph.nodes.node_weights().filter(|n| n.op_type == op).count()
}

#[test]
fn fuse_folds_every_batch_norm_into_its_conv() {
    let model = resnet_block();
    assert_eq!(count(&model, "BatchNormalization"), 6);
    let (optimized, report) = optimize(&model, &options(&["fuse"], "", 0.0)).unwrap();
    assert_eq!(count(&optimized, "BatchNormalization"), 0);
    assert_eq!(count(&optimized, "Conv"), count(&model, "Conv"));
    let at: Vec<&str> = report.firings.iter().map(|f| f.at.as_str()).collect();
    assert_eq!(report.fired, vec![("fuse-bn-conv".to_string(), 6)], "{at:?}");
    assert_eq!(report.extraction.error, 0.0);
}

#[test]
fn the_budget_decides_how_many_approximations_are_taken() {
    let model = resnet_block();
    let relus = count(&model, "Relu");
    assert!(relus >= 4, "{relus} Relu nodes");
    let rule = "# Synthetic: drop a Relu at an error of 0.3.\ndrop-relu: (Relu ?x ?a) => (~0.3 ?x)\n";
    let mut previous = (f64::INFINITY, 0);
    for budget in [0.0, 0.65, 1.0, 100.0] {
        let (optimized, report) = optimize(&model, &options(&[], rule, budget)).unwrap();
        let dropped = relus - count(&optimized, "Relu");
        let error = report.extraction.error;
        assert!((error - 0.3 * dropped as f64).abs() < 1e-9 && error <= budget, "budget {budget}: error {error}");
        assert!(report.extraction.cost <= previous.0 && dropped >= previous.1, "a larger budget never costs more");
        match budget {
            0.0 => assert_eq!(dropped, 0),
            100.0 => assert_eq!(dropped, relus),
            _ => assert!(dropped < relus, "budget {budget} cannot pay for every Relu"),
        }
        previous = (report.extraction.cost, dropped);
    }
    assert!(previous.1 > 0);
}

#[test]
fn a_shared_value_is_paid_once() {
    // The DAG-aware cost of the original graph equals the sum over its nodes,
    // even though residual blocks read values twice.
    let model = resnet_block();
    let profile = DeviceProfile::shipped("x86-avx2").unwrap();
    let (_, report) = optimize(&model, &options(&[], "unused: (Identity ?x ?a) => ?x\n", 0.0)).unwrap();
    let summed = crate::cost::graph_estimate(&model.graph, &profile).latency_seconds;
    let extracted = report.extraction.cost;
    assert!((extracted - summed).abs() <= 0.02 * summed, "extracted {extracted} vs summed {summed}");
}

/// Every Conv and Add of the block quantized, with the settings pare uses on x86.
fn forced_quantization(model: &Model, mode: quantize::QuantMode) -> Compression {
    calibrated_quantization(model, settings(mode, false), 2)
}

/// Quantization settings as `mode` says, uint8 weights (no saturation check).
fn settings(mode: quantize::QuantMode, bias_correction: bool) -> quantize::QuantSettings {
    quantize::QuantSettings {
        mode,
        activations: quantize::ActivationType::Uint8,
        per_channel: true,
        reduced_range: false,
        weight_bits: 8,
        block_size: None,
        unsigned_weights: true,
        bias_correction,
        check_saturation: false,
    }
}

/// Every layer quantized as `settings` say, calibrated on `samples` seeded
/// random inputs; with bias correction, their means are kept and applied.
fn calibrated_quantization(model: &Model, settings: quantize::QuantSettings, samples: usize) -> Compression {
    let source = pipeline::CalibrationSource::Random { count: samples, seed: 7 };
    let path = std::path::Path::new("resnet_block_op13");
    let fixed = [("images".to_string(), vec![1, 3, 32, 32])];
    let method = crate::eval::calibrate::RangeMethod::MinMax;
    let enabled = crate::families::Enabled {
        family: &quantize::Quantize,
        settings: crate::families::Settings(std::sync::Arc::new(settings)),
        forced: true,
    };
    let request = enabled.family.statistics(&enabled, model);
    let calibration = pipeline::calibrate(model, path, &fixed, &source, method, &request).unwrap().calibration;
    Compression {
        enabled: vec![enabled],
        ranges: calibration.ranges,
        means: calibration.means,
        second_moments: calibration.second_moments,
        measure: false,
        probe: Vec::new(),
        measured_errors: Default::default(),
        exclude: Vec::new(),
        calibration: None,
        representative: Vec::new(),
        cost_cache: crate::cost::cache::CostCache::in_memory(String::new()).shared(),
        pinned: None,
    }
}

/// The quantization section of a report.
fn quantization_report(report: &EngineReport) -> quantize::report::QuantizationReport {
    let section = report.sections.get("quantization").expect("a quantization section");
    section.as_any().downcast_ref::<quantize::report::QuantizationReport>().unwrap().clone()
}

#[test]
fn bias_correction_takes_back_the_mean_shift_of_rounded_weights() {
    use crate::eval::{runs_relative_l2, EvaluatorBuilder};
    let model = resnet_block();
    // Weights only, one scale per tensor: coarse rounding that moves each
    // layer's output means, and float compute, so nothing else rounds.
    let quantized = |bias_correction: bool| {
        let mut settings = settings(quantize::QuantMode::WeightsOnly, bias_correction);
        settings.per_channel = false;
        let mut options = options(&["fuse", "quant"], "", 0.0);
        options.compression = Some(calibrated_quantization(&model, settings, 16));
        optimize(&model, &options).unwrap()
    };
    let ((plain, plain_report), (corrected, report)) = (quantized(false), quantized(true));
    assert_eq!(quantization_report(&plain_report).bias_corrected, Vec::<String>::new());
    let mut layers = quantization_report(&report).bias_corrected;
    layers.sort();
    let mut expected: Vec<String> = model
        .graph
        .nodes
        .node_weights()
        .filter(|n| ["Conv", "Gemm"].contains(&n.op_type.as_str()))
        .map(|n| n.name.clone())
        .collect();
    expected.sort();
    assert_eq!(layers, expected, "every Conv and the Gemm");

    // Held out: other inputs of the calibration's distribution.
    let specs = crate::samples::representative_specs(&model).unwrap();
    let inputs: Vec<_> = crate::samples::random(&specs, 16, 99).unwrap().map(|s| s.inputs).collect();
    let outputs = |model: &Model| -> Vec<_> {
        let proto = crate::ir::export(model.clone()).unwrap();
        let evaluator = EvaluatorBuilder::new().build_from_model(&proto, "resnet block").unwrap();
        inputs.iter().map(|input| evaluator.run(input).unwrap()).collect()
    };
    let float = outputs(&model);
    // The distance of the outputs' mean over the samples from the float
    // model's, relative to the float outputs' size; and the relative L2.
    let errors = |quantized: &Model| {
        let got = outputs(quantized);
        let values = |runs: &[Vec<crate::eval::NamedTensor>], i: usize| runs[i][0].tensor.to_f64().unwrap();
        let size = values(&float, 0).len();
        let mut mean_difference = vec![0.0; size];
        for i in 0..inputs.len() {
            for ((m, q), f) in mean_difference.iter_mut().zip(values(&got, i)).zip(values(&float, i)) {
                *m += (q - f) / inputs.len() as f64;
            }
        }
        let norm = (0..inputs.len()).flat_map(|i| values(&float, i)).map(|v| v * v).sum::<f64>() / inputs.len() as f64;
        let shift = (mean_difference.iter().map(|d| d * d).sum::<f64>() / norm).sqrt();
        let runs: Vec<_> = got.into_iter().zip(float.iter().cloned()).collect();
        (shift, runs_relative_l2(&runs))
    };
    let ((plain_shift, plain_error), (shift, error)) = (errors(&plain), errors(&corrected));
    assert!(plain_shift > 0.01, "per-tensor rounding shifts the outputs: {plain_shift}");
    assert!(shift < 0.2 * plain_shift, "mean shift {shift} corrected vs {plain_shift}");
    assert!(error < 0.5 * plain_error, "relative L2 {error} corrected vs {plain_error}");
}

#[test]
fn calibration_leaves_out_values_only_batch_norm_reads() {
    let model = resnet_block();
    let ranges = forced_quantization(&model, quantize::QuantMode::Static).ranges;
    let graph = &model.graph;
    let batch_norms: Vec<&crate::ir::Node> =
        graph.nodes.node_weights().filter(|n| n.op_type == "BatchNormalization").collect();
    assert_eq!(batch_norms.len(), 6);
    for node in batch_norms {
        let input = node.inputs[0].unwrap();
        assert_eq!(graph.consumers(input).len(), 1);
        assert!(!ranges.contains_key(&graph.value(input).name), "{}", graph.value(input).name);
        let output = node.outputs[0].unwrap();
        assert!(ranges.contains_key(&graph.value(output).name), "{}", graph.value(output).name);
    }
    // Every other value a node computes has its range (the Gemm's logits too).
    let computed = graph.nodes.node_weights().flat_map(|n| n.outputs.iter().flatten()).count();
    assert_eq!(ranges.len() + 6, computed + 1, "the image input has a range too");
}

#[test]
fn forced_quantization_makes_one_integer_chain() {
    let model = resnet_block();
    let mut options = options(&["fuse", "clean", "quant"], "", 0.0);
    options.compression = Some(forced_quantization(&model, quantize::QuantMode::Static));
    let (optimized, report) = optimize(&model, &options).unwrap();
    let convs = count(&model, "Conv");
    assert_eq!(count(&optimized, "QLinearConv"), convs, "{:?}", report.fired);
    assert_eq!(count(&optimized, "Conv"), 0);
    assert_eq!(count(&optimized, "QLinearAdd"), count(&model, "Add"));
    assert_eq!(count(&optimized, "QGemm"), 1);
    // Quantized: the image, and the pooled features (GlobalAveragePool stays
    // float) for the Gemm; dequantized: the last Add for the pooling. The
    // logits come out of the QGemm as float (no output parameters), unrounded.
    assert_eq!(count(&optimized, "QuantizeLinear"), 2, "{:?}", report.fired);
    assert_eq!(count(&optimized, "DequantizeLinear"), 1);
    let qgemm = optimized.graph.nodes.node_weights().find(|n| n.op_type == "QGemm").unwrap();
    assert_eq!(qgemm.inputs.len(), 7, "no y_scale or y_zero_point: {:?}", qgemm.inputs);
    // Only the Relu after the last Add stays: the others fold into the ranges.
    assert_eq!(count(&optimized, "Relu"), 1);
    assert!(report.extraction.error > 0.0 && report.extraction.cost < 1.0);
}

#[test]
fn integer_layers_keep_their_names_and_a_widened_bias_is_reported() {
    let model = resnet_block();
    let mut compression = forced_quantization(&model, quantize::QuantMode::Static);
    // An image range of 1e-6: the first conv's bias / (input scale × weight
    // scale) is far beyond int32, so its weight scales must widen.
    let image = compression.ranges.get_mut("images").unwrap();
    *image = crate::eval::calibrate::ActivationRange { min: 0.0, max: 1e-6 };
    let mut options = options(&["fuse", "clean", "quant"], "", 0.0);
    options.compression = Some(compression);
    let (optimized, report) = optimize(&model, &options).unwrap();
    let convs: Vec<&str> =
        optimized.graph.nodes.node_weights().filter(|n| n.op_type == "QLinearConv").map(|n| n.name.as_str()).collect();
    let originals: Vec<&str> =
        model.graph.nodes.node_weights().filter(|n| n.op_type == "Conv").map(|n| n.name.as_str()).collect();
    let mut sorted = convs.clone();
    sorted.sort();
    let mut expected = originals.clone();
    expected.sort();
    assert_eq!(sorted, expected, "each integer conv is named after its float conv");
    let quantization = quantization_report(&report);
    let first_conv = originals[0];
    assert_eq!(first_conv, "n_Conv_3");
    let widened: Vec<&str> = quantization.widened_bias.iter().map(|w| w.layer.as_str()).collect();
    assert_eq!(widened, [first_conv], "only the conv reading the image widens");
    let channels = model.graph.nodes.node_weights().find(|n| n.name == first_conv).unwrap().inputs[1].unwrap();
    let out_channels = model.graph.value(channels).shape.as_ref().unwrap().as_known().unwrap()[0] as usize;
    let widened_channels = &quantization.widened_bias[0].channels;
    assert!(!widened_channels.is_empty() && widened_channels.len() <= out_channels, "{widened_channels:?}");
}

#[test]
fn weight_only_quantization_keeps_float_compute() {
    let model = resnet_block();
    let mut options = options(&["fuse", "quant"], "", 0.0);
    options.compression = Some(forced_quantization(&model, quantize::QuantMode::WeightsOnly));
    let (optimized, _) = optimize(&model, &options).unwrap();
    assert_eq!(count(&optimized, "Conv"), count(&model, "Conv"));
    assert_eq!(count(&optimized, "DequantizeLinear"), count(&model, "Conv") + count(&model, "Gemm"));
    assert_eq!(count(&optimized, "QuantizeLinear"), 0);
}

/// X → BatchNormalization → Mul(c) → Add(d) → Relu, Caffe2's affine after
/// BN, with no layer before the BN to fold it into.
fn batch_norm_affine() -> Model {
    use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
    let node = |op: &str, inputs: &[&str], output: &str| NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    let vector = |name: &str, dims: &[i64], values: &[f32]| crate::ir::tensor::from_f32(name, dims, values);
    let graph = GraphProto {
        node: vec![
            node("BatchNormalization", &["x", "s", "b", "m", "v"], "bn"),
            node("Mul", &["bn", "c"], "scaled"),
            node("Add", &["d", "scaled"], "shifted"),
            node("Relu", &["shifted"], "y"),
        ],
        initializer: vec![
            vector("s", &[3], &[1.5, 0.5, 2.0]),
            vector("b", &[3], &[0.1, -0.2, 0.3]),
            vector("m", &[3], &[0.0, 1.0, -1.0]),
            vector("v", &[3], &[1.0, 4.0, 0.25]),
            vector("c", &[3, 1, 1], &[2.0, -1.0, 0.5]),
            vector("d", &[1, 3, 1, 1], &[-0.5, 0.25, 1.0]),
        ],
        input: vec![crate::ir::tensor_declaration("x", DataType::Float, Some(&Shape::known(&[1, 3, 4, 4])))],
        output: vec![crate::ir::tensor_declaration("y", DataType::Float, Some(&Shape::known(&[1, 3, 4, 4])))],
        ..Default::default()
    };
    let opset = OperatorSetIdProto { domain: Some(String::new()), version: Some(13) };
    let proto = ModelProto { ir_version: Some(7), opset_import: vec![opset], graph: Some(graph), ..Default::default() };
    let mut model = crate::ir::import(proto).unwrap();
    crate::ir::infer::infer(&mut model, &[]).unwrap();
    model
}

#[test]
fn a_per_channel_mul_and_add_after_batch_norm_fold_into_it() {
    use crate::eval::{EvaluatorBuilder, NamedTensor, Tensor};
    let model = batch_norm_affine();
    let (optimized, report) = optimize(&model, &options(&["fuse"], "", 0.0)).unwrap();
    let fired: Vec<&str> = report.fired.iter().map(|(rule, _)| rule.as_str()).collect();
    assert_eq!(fired, ["fuse-mul-batchnorm", "fuse-add-batchnorm", "constant-second-add"]);
    let ops: Vec<&str> = optimized.graph.nodes.node_weights().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_eq!((count(&optimized, "BatchNormalization"), count(&optimized, "Relu")), (1, 1));

    let x: Vec<f32> = (0..48).map(|i| (i as f32 - 24.0) / 8.0).collect();
    let input = [NamedTensor::new("x", Tensor::from_f32(&[1, 3, 4, 4], &x).unwrap())];
    let run = |model: &Model| {
        let proto = crate::ir::export(model.clone()).unwrap();
        let outputs = EvaluatorBuilder::new().build_from_model(&proto, "bn-affine").unwrap().run(&input).unwrap();
        outputs[0].tensor.to_f64().unwrap()
    };
    let (expected, got) = (run(&model), run(&optimized));
    assert!(expected.iter().any(|&v| v > 0.5), "a non-trivial case");
    for (e, g) in expected.iter().zip(&got) {
        assert!((e - g).abs() <= 1e-5 * e.abs().max(1.0), "{g} vs {e}");
    }
}
