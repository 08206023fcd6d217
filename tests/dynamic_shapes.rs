//! Models whose inputs leave dims open (PP-OCR's `x: [-1, 3, ?, ?]`):
//! calibration keeps each sample's own shape, latencies are measured at the
//! median sample's shape and the report says so, verification runs on the
//! samples (or, without any, at a representative shape, never 1x1), and
//! `--input-shape` makes a sample of another shape an error naming the
//! sample and the model.

mod common;

use std::path::{Path, PathBuf};

use prost::Message;

fn ort_available() -> bool {
    std::env::var_os("PARE_PYTHON").is_some() || std::env::var_os("ORT_DYLIB_PATH").is_some()
}

/// The fetched PP-OCR direction classifier, when the models were fetched.
fn classifier() -> Option<PathBuf> {
    match common::fetched("ppocr_cls") {
        Some(model) => Some(model.path),
        None => {
            assert!(std::env::var_os("PARE_REQUIRE_MODELS").is_none(), "ppocr_cls was not fetched");
            None
        }
    }
}

/// Calibration samples in test_data_set layout: one 1x3x48xW input per width,
/// seeded values in [-1, 1].
fn samples_of_widths(dir: &Path, widths: &[usize]) {
    for (index, &width) in widths.iter().enumerate() {
        let shape = [1, 3, 48, width];
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count).map(|i| ((i * 7919 + index * 31) % 2001) as f32 / 1000.0 - 1.0).collect();
        let tensor = pare::eval::Tensor::from_f32(&shape, &values).unwrap();
        let folder = dir.join(format!("test_data_set_{index}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("input_0.pb"), tensor.to_proto("x").unwrap().encode_to_vec()).unwrap();
    }
}

/// `pare optimize MODEL -o OUT --calib CALIB --quantize` followed by `mode_and_more`.
fn quantize(model: &Path, calib: &Path, out: &Path, mode_and_more: &[&str]) -> std::process::Output {
    let paths = [model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--calib", calib.to_str().unwrap()];
    common::pare(&[&["optimize"][..], &paths, &["--quantize"], mode_and_more].concat())
}

fn report_of(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn auto_quantization_of_a_dynamic_model_takes_its_shapes_from_the_samples() {
    let Some(model) = classifier() else { return };
    if !ort_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib");
    // Median element count: width 192.
    samples_of_widths(&calib, &[96, 320, 192, 160, 256]);
    let (out, report) = (dir.path().join("auto.onnx"), dir.path().join("report.json"));
    let run = quantize(&model, &calib, &out, &["auto", "--samples", "5", "--report", report.to_str().unwrap()]);
    let stderr = common::stderr(&run);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("latencies measured at: x=1x3x48x192"), "{stdout}");
    let report = report_of(&report);
    assert_eq!(report["engine"]["timing_shapes"], serde_json::json!(["x=1x3x48x192"]));
    // Verified on the samples, each at its own width.
    let shapes = report["verification"]["input_shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 5, "{shapes:?}");
    assert!(report["verification"]["warnings"].as_array().unwrap().is_empty(), "{report}");
    // The written model keeps its open width.
    let written = pare::onnx::read_model(&out).unwrap().model;
    let input = &written.graph.as_ref().unwrap().input[0];
    let shape = match input.r#type.as_ref().unwrap().value.as_ref().unwrap() {
        pare::onnx::proto::type_proto::Value::TensorType(tensor) => {
            pare::ir::Shape::from_proto(tensor.shape.as_ref().unwrap())
        }
        _ => panic!("not a tensor input"),
    };
    assert_eq!(shape.0[3].known(), None, "width stays open: {shape}");
    // Each candidate was timed at that shape, and the choice is recorded.
    let end_to_end = report["engine"]["end_to_end"].as_array().unwrap();
    assert!(end_to_end.iter().all(|c| c["seconds"].as_f64().unwrap().is_finite()), "{end_to_end:?}");
    assert!(!report["engine"]["end_to_end_decisions"].as_array().unwrap().is_empty());
}

#[test]
fn a_sample_of_another_shape_than_input_shape_fixes_is_exit_2_naming_both() {
    let Some(model) = classifier() else { return };
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib");
    samples_of_widths(&calib, &[192, 160]);
    let out = dir.path().join("out.onnx");
    let run = quantize(&model, &calib, &out, &["all", "--input-shape", "x=1,3,48,192"]);
    let stderr = common::stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("test_data_set_1") && stderr.contains("1x3x48x160"), "names the sample: {stderr}");
    assert!(stderr.contains(model.to_str().unwrap()), "names the model: {stderr}");
    assert!(!out.exists());
}

#[test]
fn a_dynamic_model_is_verified_at_a_representative_shape_and_a_tiny_one_is_flagged() {
    let Some(det) = common::fetched("ppocr_det").map(|m| m.path) else {
        assert!(std::env::var_os("PARE_REQUIRE_MODELS").is_none(), "ppocr_det was not fetched");
        return;
    };
    let det = det.to_str().unwrap();
    let run = common::pare(&["verify", det, det, "--json"]);
    assert_eq!(run.status.code(), Some(0), "{}", common::stderr(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["input_shapes"], serde_json::json!(["x=1x3x224x224"]));
    assert!(report["warnings"].as_array().unwrap().is_empty(), "{report}");
    // At 1x1 (what open dims used to be filled with) verification says it checks nothing.
    let run = common::pare(&["verify", det, det, "--json", "--input-shape", "x=1,3,1,1"]);
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let warnings = report["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("degenerate shape (x=1x3x1x1)")), "{warnings:?}");
    assert!(common::stderr(&run).contains("warning: verified at a degenerate shape"));
}

/// A model with open height and width that only runs at 32x32 (it adds a
/// 1x3x32x32 constant): without samples pare's guess (224x224) cannot run,
/// and the error asks for `--input-shape`.
#[test]
fn a_guessed_shape_that_cannot_run_is_exit_2_asking_for_input_shape() {
    use pare::ir::{tensor_declaration, DataType, Dim, Shape};
    use pare::onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto};
    let open = Shape(vec![Dim::Known(1), Dim::Known(3), Dim::Symbol("h".into()), Dim::Symbol("w".into())]);
    let conv_weight = TensorProto {
        name: Some("k".into()),
        dims: vec![3, 3, 1, 1],
        data_type: Some(1),
        float_data: (0..9).map(|i| i as f32 / 9.0).collect(),
        ..Default::default()
    };
    let bias = TensorProto {
        name: Some("b".into()),
        dims: vec![1, 3, 32, 32],
        data_type: Some(1),
        float_data: vec![0.5; 3 * 32 * 32],
        ..Default::default()
    };
    let node = |name: &str, op: &str, inputs: &[&str], output: &str| NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto {
            name: Some("fixed_size_inside".into()),
            node: vec![node("conv", "Conv", &["x", "k"], "c"), node("add", "Add", &["c", "b"], "y")],
            initializer: vec![conv_weight, bias],
            input: vec![tensor_declaration("x", DataType::Float, Some(&open))],
            output: vec![tensor_declaration("y", DataType::Float, None)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixed_size_inside.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let out = dir.path().join("out.onnx");
    let args = ["optimize", path.to_str().unwrap(), "-o", out.to_str().unwrap(), "--quantize", "all"];
    let run = common::pare(&args);
    let stderr = common::stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("fixed_size_inside.onnx") && stderr.contains("pare ran it at x=1x3x224x224"), "{stderr}");
    assert!(stderr.contains("--input-shape"), "{stderr}");
    assert!(!out.exists());
    // At the size it runs at, it quantizes.
    let run = common::pare(&[&args[..], &["--input-shape", "x=1,3,32,32"]].concat());
    assert_eq!(run.status.code(), Some(0), "{}", common::stderr(&run));
}
