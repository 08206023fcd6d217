//! `pare optimize --quantize` end to end: the output is QDQ (QuantizeLinear /
//! DequantizeLinear around float operators, no operator-form integer nodes
//! left), at opset 13 or above, at most 0.27x the float file (SqueezeNet), passes
//! onnx.checker's full check, and stays within the stated tolerance of the
//! float model in ONNX Runtime with its integer kernels (`--ort-opt all`)
//! and with reference semantics (`--ort-opt none`).

mod common;

use std::path::Path;
use std::process::Command;

use pare::onnx::read_model;

/// Relative L2 error allowed against fp32 (int8 weights and activations).
const MAX_REL_L2: &str = "0.08";

fn python() -> Option<std::path::PathBuf> {
    std::env::var_os("PARE_PYTHON").map(Into::into)
}

/// Quantizes `model` into `out` (exit status must be 0).
fn quantize(model: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = common::pare(&args);
    let stderr = common::stderr(&run);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    stderr
}

/// `pare verify` of the quantized model against the float one in ONNX Runtime.
fn verify_in_ort(model: &Path, out: &Path, level: &str, extra: &[&str]) {
    let mut args = vec!["verify", model.to_str().unwrap(), out.to_str().unwrap(), "--runtime", "ort"];
    args.extend(["--ort-opt", level, "--max-rel-l2", MAX_REL_L2]);
    args.extend_from_slice(extra);
    let run = common::pare(&args);
    assert_eq!(
        run.status.code(),
        Some(0),
        "--ort-opt {level}: {}\n{}",
        String::from_utf8_lossy(&run.stdout),
        common::stderr(&run)
    );
}

fn check_qdq_form(out: &Path) -> (usize, usize) {
    let model = read_model(out).unwrap().model;
    let opset = model.opset_import.iter().find(|o| o.domain.as_deref().unwrap_or("").is_empty()).unwrap();
    assert!(opset.version.unwrap() >= 13, "opset {:?}", opset.version);
    let graph = model.graph.as_ref().unwrap();
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_deref().unwrap_or("")).collect();
    for op in ["QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd"] {
        assert!(!ops.contains(&op), "{op} left in operator form: {ops:?}");
    }
    let count = |op: &str| ops.iter().filter(|o| **o == op).count();
    (count("QuantizeLinear"), count("DequantizeLinear"))
}

/// The names of the layers whose weights a DequantizeLinear reads from a
/// constant of `dtype`.
fn layers_with_weights_of(out: &Path, dtype: pare::ir::DataType) -> Vec<String> {
    let model = pare::ir::import(read_model(out).unwrap().model).unwrap();
    let graph = &model.graph;
    let weights_of = |node: &pare::ir::Node| {
        let dequantize = graph.node(graph.producer_node(node.input(1)?)?);
        (dequantize.op_type == "DequantizeLinear").then_some(())?;
        graph.constant(dequantize.input(0)?).and_then(pare::ir::tensor::dtype)
    };
    graph
        .nodes
        .node_weights()
        .filter(|node| ["Conv", "Gemm", "MatMul"].contains(&node.op_type.as_str()))
        .filter(|node| weights_of(node) == Some(dtype))
        .map(|node| node.name.clone())
        .collect()
}

/// Whether ONNX Runtime can be loaded (says so when a test is skipped without it).
fn ort_available() -> bool {
    let available = python().is_some() || std::env::var_os("ORT_DYLIB_PATH").is_some();
    if !available {
        eprintln!("skipped: ONNX Runtime not available (set PARE_PYTHON)");
    }
    available
}

/// The residual block golden model (Conv, BatchNormalization, Add, Gemm).
fn residual_block() -> std::path::PathBuf {
    common::repo().join("golden/resnet_block_op13/model.onnx")
}

fn onnx_checker(out: &Path) {
    let Some(python) = python() else { return };
    let script = "import sys, onnx; onnx.checker.check_model(sys.argv[1], full_check=True)";
    let run = Command::new(python).args(["-c", script]).arg(out).output().unwrap();
    assert!(run.status.success(), "onnx.checker: {}", String::from_utf8_lossy(&run.stderr));
}

#[test]
fn a_quantized_residual_block_is_qdq_checked_and_close_in_both_ort_modes() {
    if !ort_available() {
        return;
    }
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int8.onnx");
    let shape = ["--input-shape", "images=1,3,32,32"];
    // Calibration and verification both draw seeded N(0,1) images.
    let report_path = dir.path().join("report.json");
    let mut args = vec!["--quantize", "all", "--calib-samples", "16", "--runtime", "ort", "--ort-opt", "all"];
    args.extend(["--max-rel-l2", MAX_REL_L2, "--report", report_path.to_str().unwrap()]);
    args.extend(shape);
    let stderr = quantize(&model, &out, &args);
    assert!(stderr.contains("no --calib DIR given"), "the random-calibration warning: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let quantization = &report["engine"]["quantization"];
    // The six Conv (BatchNormalization folded) and the Gemm, by their own names.
    let integer = quantization["layers"]["integer"].as_array().unwrap();
    let mut names: Vec<&str> = integer.iter().map(|n| n.as_str().unwrap()).collect();
    names.sort();
    let expected = ["n_Conv_14", "n_Conv_25", "n_Conv_3", "n_Conv_38", "n_Conv_49", "n_Conv_58", "n_Gemm_76"];
    assert_eq!(names, expected, "{quantization}");
    assert_eq!(quantization["layers"]["float"], serde_json::json!([]));
    assert_eq!(quantization["calibration"], serde_json::json!({"source": "random", "samples": 16, "method": "MinMax"}));
    assert_eq!(quantization["widened_bias"], serde_json::json!([]));
    // The x86-avx2 profile checks the integer kernels: the layers that
    // saturate alone store uint8 weights, the others int8, and the whole
    // model is checked again when some do.
    let check = &quantization["kernel_check"];
    let saturating: Vec<&str> =
        check["saturating"].as_array().unwrap().iter().map(|s| s["layer"].as_str().unwrap()).collect();
    assert!(saturating.iter().all(|layer| names.contains(layer)), "{check}");
    // More than a tenth of the output rounding's noise power (1/12 level²).
    let rms = |s: &serde_json::Value| s["rms_levels"].as_f64().unwrap();
    assert!(check["saturating"].as_array().unwrap().iter().all(|s| rms(s) * rms(s) > 0.1 / 12.0), "{check}");
    assert_eq!(check["unsigned"].is_null(), saturating.is_empty(), "{check}");
    let mut unsigned = layers_with_weights_of(&out, pare::ir::DataType::Uint8);
    unsigned.sort();
    let mut expected_unsigned = saturating.clone();
    expected_unsigned.sort();
    assert_eq!(unsigned, expected_unsigned);
    assert_eq!(layers_with_weights_of(&out, pare::ir::DataType::Int8).len(), names.len() - saturating.len());
    let (quantize_nodes, dequantize_nodes) = check_qdq_form(&out);
    // Every Conv, Add and the Gemm read quantized inputs: one DQ per weight,
    // bias and integer input; integer layers chain without re-quantizing.
    assert!(quantize_nodes >= 9 && dequantize_nodes >= 20, "{quantize_nodes} Q, {dequantize_nodes} DQ");
    onnx_checker(&out);
    for level in ["all", "none"] {
        verify_in_ort(&model, &out, level, &shape);
    }
}

#[test]
fn weight_only_quantization_keeps_float_compute_and_quarter_weights() {
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let (out, report_path) = (dir.path().join("w8.onnx"), dir.path().join("report.json"));
    let args =
        ["--quantize", "weights", "--objective", "size", "--max-rel-l2", "0.02", "--input-shape", "images=1,3,32,32"];
    quantize(&model, &out, &[&args[..], &["--report", report_path.to_str().unwrap()]].concat());
    let (quantize_nodes, dequantize_nodes) = check_qdq_form(&out);
    assert_eq!(quantize_nodes, 0);
    assert_eq!(dequantize_nodes, 7, "six Conv weights and the Gemm's");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let quantization = &report["engine"]["quantization"];
    assert_eq!(quantization["layers"]["weight_only"].as_array().unwrap().len(), 7, "{quantization}");
    assert_eq!(quantization["layers"]["integer"], serde_json::json!([]));
    assert!(quantization["calibration"].is_null() && quantization["kernel_check"].is_null(), "{quantization}");
    onnx_checker(&out);
}

#[test]
fn excluded_layers_stay_float_and_a_malformed_exclusion_is_exit_2() {
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let (out, report_path) = (dir.path().join("w8.onnx"), dir.path().join("report.json"));
    let base = ["--quantize", "weights", "--objective", "size", "--input-shape", "images=1,3,32,32"];
    let report = ["--report", report_path.to_str().unwrap()];
    // By node name (the first Conv, which BatchNormalization folds into) and by operator type.
    let cases: [(&[&str], usize, &[&str]); 3] = [
        (&["--exclude", "n_Conv_3"], 6, &["n_Conv_3"]),
        (&["--exclude", "op:Gemm", "--exclude", "n_Conv_58"], 5, &["n_Conv_58", "n_Gemm_76"]),
        (&["--exclude", "op:Conv"], 1, &[]),
    ];
    for (exclude, weight_only, float) in cases {
        quantize(&model, &out, &[&base[..], &report, exclude].concat());
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
        let layers = &report["engine"]["quantization"]["layers"];
        assert_eq!(layers["weight_only"].as_array().unwrap().len(), weight_only, "{exclude:?}: {layers}");
        let kept: Vec<&str> = layers["float"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        for name in float {
            assert!(kept.contains(name), "{exclude:?}: {name} not float in {layers}");
        }
    }
    for bad in ["op:", ""] {
        let run = common::pare(
            &[&["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap()], &base[..], &["--exclude", bad]]
                .concat(),
        );
        assert_eq!(run.status.code(), Some(2), "--exclude '{bad}': {}", common::stderr(&run));
        assert!(common::stderr(&run).contains("--exclude"), "{}", common::stderr(&run));
    }
}

#[test]
fn bias_correction_needs_calibration_data_and_can_be_turned_off() {
    let model = residual_block();
    let data = model.parent().unwrap().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (out, report_path) = (dir.path().join("w8.onnx"), dir.path().join("report.json"));
    // The golden inputs are a batch of two.
    let base =
        ["--quantize", "weights", "--input-shape", "images=2,3,32,32", "--report", report_path.to_str().unwrap()];
    let calib = ["--calib", data.as_str()];
    let cases: [(&[&str], usize); 3] = [(&calib, 7), (&[&calib[..], &["--no-bias-correction"]].concat(), 0), (&[], 0)];
    for (extra, corrected) in cases {
        quantize(&model, &out, &[&base[..], extra].concat());
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
        let quantization = &report["engine"]["quantization"];
        let listed = quantization["bias_corrected"].as_array().unwrap();
        assert_eq!(listed.len(), corrected, "{extra:?}: {quantization}");
        assert_eq!(quantization["settings"]["bias_correction"], corrected > 0, "{extra:?}");
        // Weight-only quantization calibrates only for bias correction.
        assert_eq!(quantization["calibration"].is_null(), corrected == 0, "{extra:?}: {quantization}");
    }
}

#[test]
fn a_fetched_opset_9_model_is_upgraded_quantized_and_verified_on_its_own_data() {
    let Some(squeezenet) = common::fetched("squeezenet") else {
        assert!(std::env::var_os("PARE_REQUIRE_MODELS").is_none(), "squeezenet was not fetched");
        return;
    };
    if python().is_none() {
        return;
    }
    let data = squeezenet.path.parent().unwrap().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("int8.onnx"), dir.path().join("report.json"));
    let calib = ["--calib", data.to_str().unwrap(), "--report", report.to_str().unwrap()];
    // Verified by default: rel L2 at most 0.1 on the calibration inputs.
    quantize(&squeezenet.path, &out, &[&["--quantize", "all", "--weights", "s8"], &calib[..]].concat());
    check_qdq_form(&out);
    onnx_checker(&out);
    // With calibration data every integer layer's bias is corrected.
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let quantization = &report["engine"]["quantization"];
    let integer = quantization["layers"]["integer"].as_array().unwrap();
    assert_eq!(integer.len(), 26, "{quantization}");
    assert_eq!(quantization["bias_corrected"].as_array().unwrap().len(), integer.len(), "{quantization}");
    // Measured alone, a uint8 MaxPool is slower than a float one; between
    // integer layers (where ONNX Runtime runs it in their layout) `all`
    // still keeps it on the integers.
    let written = pare::pipeline::load(&out, &[]).unwrap().model;
    let graph = &written.graph;
    let pools: Vec<_> = graph.nodes.node_weights().filter(|n| n.op_type == "MaxPool").collect();
    assert_eq!(pools.len(), 3);
    for pool in pools {
        assert_eq!(graph.value(pool.input(0).unwrap()).dtype, Some(pare::ir::DataType::Uint8), "{}", pool.name);
    }
    let inputs = ["--inputs", data.to_str().unwrap()];
    for level in ["all", "none"] {
        verify_in_ort(&squeezenet.path, &out, level, &inputs);
    }
    let ratio =
        std::fs::metadata(&out).unwrap().len() as f64 / std::fs::metadata(&squeezenet.path).unwrap().len() as f64;
    assert!(ratio <= 0.27, "size ratio {ratio}");
}

#[test]
fn a_missing_calibration_folder_is_exit_2_naming_it_with_nothing_written() {
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int8.onnx");
    let missing = dir.path().join("no-such-calib");
    let args = ["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--quantize", "all"];
    let run = common::pare(
        &[&args[..], &["--calib", missing.to_str().unwrap(), "--input-shape", "images=1,3,32,32"]].concat(),
    );
    let stderr = common::stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no-such-calib"), "{stderr}");
    assert!(!out.exists());
}

/// Runs `--quantize auto --budget B --cost-model C` on the residual block and
/// returns the report and the output's QuantizeLinear count.
fn budgeted_residual_block_with(budget: &str, cost_model: &str) -> (serde_json::Value, usize) {
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("auto.onnx"), dir.path().join("report.json"));
    let args = ["--quantize", "auto", "--cost-model", cost_model, "--calib-samples", "16", "--budget", budget];
    let report_arg = ["--report", report.to_str().unwrap(), "--input-shape", "images=1,3,32,32"];
    quantize(&model, &out, &[&args[..], &report_arg[..]].concat());
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    (report, check_qdq_form(&out).0)
}

/// [`budgeted_residual_block_with`] profile costs.
fn budgeted_residual_block(budget: &str) -> (serde_json::Value, usize) {
    budgeted_residual_block_with(budget, "profile")
}

#[test]
fn measured_auto_never_keeps_a_candidate_whose_deployed_error_is_over_budget() {
    if !ort_available() {
        return;
    }
    let check = |budget: f64| {
        let (report, quantize_nodes) = budgeted_residual_block_with(&format!("{budget}"), "measured");
        let candidates = report["engine"]["end_to_end"].as_array().unwrap().clone();
        let error = |c: &serde_json::Value| c["output_error"].as_f64().unwrap();
        let all = candidates.iter().find(|c| c["candidate"] == "all").unwrap();
        assert!(error(all) > 0.0 && error(all) < 0.1, "every layer int8: {all}");
        // More budgeted candidates only where the first left room (below
        // 0.7 of the budget) or went over, and `all` does not fit; at most 5.
        let auto = candidates.iter().find(|c| c["candidate"] == "auto").unwrap();
        assert!((3..=8).contains(&candidates.len()), "{candidates:?}");
        if candidates.len() > 3 {
            assert!((error(auto) < 0.7 * budget || error(auto) > budget) && error(all) > budget, "{candidates:?}");
            for searched in &candidates[3..] {
                assert!(searched["candidate"].as_str().unwrap().starts_with("auto, budget "), "{candidates:?}");
            }
        }
        let chosen: Vec<_> = candidates.iter().filter(|c| c["chosen"] == true).collect();
        assert_eq!(chosen.len(), 1, "{candidates:?}");
        // The report says which layers of the chosen candidate run on integers.
        let layers = &report["engine"]["quantization"]["layers"];
        let integer = layers["integer"].as_array().unwrap().len();
        assert_eq!(integer + layers["float"].as_array().unwrap().len(), 7, "{layers}");
        match chosen[0]["candidate"].as_str().unwrap() {
            "float" => assert_eq!(integer, 0, "{layers}"),
            "all" => assert_eq!(integer, 7, "{layers}"),
            _ => {}
        }
        assert!(error(chosen[0]) <= budget, "{} chosen over budget {budget}", chosen[0]);
        (error(all), chosen[0]["candidate"].as_str().unwrap().to_string(), quantize_nodes)
    };
    // Below the fully quantized model's deployed error, it is never kept.
    let (all_error, _, _) = check(0.05);
    let (_, chosen, quantize_nodes) = check(all_error * 0.5);
    assert_ne!(chosen, "all");
    if chosen == "float" {
        assert_eq!(quantize_nodes, 0);
    }
}

#[test]
fn budgeted_quantization_charges_each_layer_its_measured_sensitivity() {
    if !ort_available() {
        return;
    }
    let (report, _) = budgeted_residual_block("1000");
    let layers = report["engine"]["layer_sensitivity"].as_array().unwrap();
    // The float graph's six Conv (BatchNormalization folded), two Add and the Gemm.
    assert_eq!(layers.len(), 9, "{layers:?}");
    let errors: Vec<f64> = layers.iter().map(|l| l["error"].as_f64().unwrap()).collect();
    for (layer, error) in layers.iter().zip(&errors) {
        assert!(layer["failure"].is_null(), "{layer}");
        assert!(*error > 0.0 && *error < 0.1, "int8 moves the output, a little: {layer}");
    }
    let smallest = errors.iter().copied().fold(f64::INFINITY, f64::min);

    // Below the least sensitive layer nothing can be quantized.
    let (report, quantize_nodes) = budgeted_residual_block(&format!("{}", smallest * 0.9));
    assert_eq!(quantize_nodes, 0);
    assert_eq!(report["engine"]["extraction"]["error"].as_f64(), Some(0.0));

    // Just above it, the chosen layers' measured errors fit the budget.
    let budget = smallest * 1.1;
    let (report, _) = budgeted_residual_block(&format!("{budget}"));
    let error = report["engine"]["extraction"]["error"].as_f64().unwrap();
    assert!(error <= budget, "{error} > {budget}");
    assert!(errors.iter().any(|e| (e - error).abs() < 1e-12) || error == 0.0, "{error} is one layer's, {errors:?}");
}

#[test]
fn int4_block_wise_weights_are_opset_21_checked_and_close_in_ort() {
    if !ort_available() {
        return;
    }
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w4.onnx");
    // tract has no int4 tensors, so the output is verified in ONNX Runtime.
    let args = ["--quantize", "weights", "--weights", "u4", "--block-size", "8", "--objective", "size"];
    let check = ["--runtime", "ort", "--ort-opt", "all", "--max-rel-l2", "0.08", "--input-shape", "images=1,3,32,32"];
    quantize(&model, &out, &[&args[..], &check[..]].concat());
    let proto = read_model(&out).unwrap().model;
    let opset = proto.opset_import.iter().find(|o| o.domain.as_deref().unwrap_or("").is_empty()).unwrap();
    assert_eq!(opset.version, Some(21));
    let graph = proto.graph.as_ref().unwrap();
    let dequantize: Vec<_> = graph.node.iter().filter(|n| n.op_type.as_deref() == Some("DequantizeLinear")).collect();
    assert_eq!(dequantize.len(), 7, "six Conv weights and the Gemm's");
    let uint4 = pare::ir::DataType::Uint4.code();
    for node in dequantize {
        let attribute = |name: &str| node.attribute.iter().find(|a| a.name.as_deref() == Some(name)).and_then(|a| a.i);
        assert_eq!(attribute("block_size"), Some(8), "{node:?}");
        let weight = graph.initializer.iter().find(|t| t.name == node.input.first().cloned()).unwrap();
        assert_eq!(weight.data_type, Some(uint4));
        let elements: i64 = weight.dims.iter().product();
        assert_eq!(weight.raw_data.as_ref().unwrap().len() as i64, (elements + 1) / 2, "two weights to a byte");
    }
    onnx_checker(&out);
    let shape = ["--input-shape", "images=1,3,32,32"];
    for level in ["all", "none"] {
        verify_in_ort(&model, &out, level, &shape);
    }
}

/// PP-OCR's direction classifier spells its 18 HardSwish out; fused, each
/// stays between the integer convolutions around it: it reads a
/// DequantizeLinear and a QuantizeLinear reads it (ONNX Runtime has no
/// integer HardSwish), the model is raised to opset 14 for it, and it
/// verifies in ONNX Runtime.
#[test]
fn fused_hard_swish_stays_between_integer_convolutions() {
    let Some(cls) = common::fetched("ppocr_cls") else {
        assert!(std::env::var_os("PARE_REQUIRE_MODELS").is_none(), "ppocr_cls was not fetched");
        return;
    };
    if python().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("int8.onnx"), dir.path().join("report.json"));
    quantize(
        &cls.path,
        &out,
        &["--quantize", "all", "--input-shape", "x=1,3,48,192", "--report", report.to_str().unwrap()],
    );
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let raised = &report["engine"]["opset_raised"];
    assert_eq!((raised["from"].as_i64(), raised["to"].as_i64()), (Some(13), Some(14)), "{raised}");
    check_qdq_form(&out);
    onnx_checker(&out);
    let written = pare::pipeline::load(&out, &[]).unwrap().model;
    assert_eq!(written.opset(""), Some(14));
    let graph = &written.graph;
    let producer_op = |value| match graph.value(value).producer {
        pare::ir::Producer::Node(node, _) => graph.nodes[node].op_type.clone(),
        _ => String::new(),
    };
    let swishes: Vec<_> = graph.nodes.node_weights().filter(|n| n.op_type == "HardSwish").collect();
    assert_eq!(swishes.len(), 18);
    let mut quantized_readers = 0;
    for swish in swishes {
        assert_eq!(producer_op(swish.input(0).unwrap()), "DequantizeLinear", "{}", swish.name);
        let output = swish.outputs[0].unwrap();
        let readers: Vec<&str> = graph
            .nodes
            .node_weights()
            .filter(|n| n.inputs.contains(&Some(output)))
            .map(|n| n.op_type.as_str())
            .collect();
        // The next convolution reads it quantized (9 of them); an SE block's
        // pool and gate (8) and the last MaxPool (1) read it as float.
        assert!(!readers.contains(&"Conv"), "{}: read by {readers:?}", swish.name);
        quantized_readers += usize::from(readers.contains(&"QuantizeLinear"));
    }
    assert_eq!(quantized_readers, 9, "every one a convolution reads");
    for level in ["all", "none"] {
        verify_in_ort(&cls.path, &out, level, &["--input-shape", "x=1,3,48,192"]);
    }
}
