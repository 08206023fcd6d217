//! `pare verify`: a model against itself passes with zero error, a copy with
//! one weight scaled by 1.5 fails (exit 1) naming the output, the QDQ
//! saturation pair fails with ONNX Runtime's fused kernels and passes with
//! reference semantics, and bad input is exit 2.

mod common;

use std::path::{Path, PathBuf};

use pare::onnx::{read_model, write_model, WriteOptions};

fn verify(args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let run = common::pare(&all);
    let json = serde_json::from_slice(&run.stdout).unwrap_or(serde_json::Value::Null);
    (run.status.code(), json, common::stderr(&run))
}

#[test]
fn every_model_against_itself_has_zero_error() {
    let mut models: Vec<(PathBuf, Vec<String>)> = common::golden_models()
        .into_iter()
        .filter(|p| !common::TRACT_CANNOT_RUN.contains(&common::golden_name(p).as_str()))
        .map(|p| {
            let shapes = common::golden_input_shapes(&p);
            (p, shapes)
        })
        .collect();
    models.extend(common::fetched_models().into_iter().map(|m| (m.path, m.input_shapes)));
    for (path, shapes) in models {
        let path = path.to_str().unwrap();
        let mut args = vec![path, path];
        for shape in &shapes {
            args.extend(["--input-shape", shape.as_str()]);
        }
        let (code, json, stderr) = verify(&args);
        assert_eq!(code, Some(0), "{path}: {stderr}");
        for output in json["outputs"].as_array().unwrap() {
            assert_eq!(output["max_abs"].as_f64(), Some(0.0), "{path}: {}", output["name"]);
            assert_eq!(output["rel_l2"].as_f64(), Some(0.0), "{path}");
        }
    }
}

/// A copy of a model with the first float weight of at least 100 elements scaled by 1.5.
fn with_scaled_weight(source: &Path, dir: &Path) -> PathBuf {
    let mut model = read_model(source).unwrap().model;
    let graph = model.graph.as_mut().unwrap();
    let weight = graph
        .initializer
        .iter_mut()
        .find(|t| t.data_type == Some(1) && pare::ir::tensor::element_count(t).unwrap() >= 100)
        .expect("a float weight");
    let values: Vec<f32> = pare::ir::tensor::to_f64(weight).unwrap().into_iter().map(|v| (v * 1.5) as f32).collect();
    weight.raw_data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into());
    weight.float_data.clear();
    let out = dir.join("scaled.onnx");
    write_model(model, &out, &WriteOptions::default()).unwrap();
    out
}

#[test]
fn a_scaled_weight_fails_and_names_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::repo().join("golden/se_hardsigmoid_op17/model.onnx");
    let scaled = with_scaled_weight(&source, dir.path());
    let (code, json, stderr) = verify(&[source.to_str().unwrap(), scaled.to_str().unwrap(), "--samples", "2"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(json["passed"], false);
    let failure = json["failures"][0].as_str().unwrap();
    let output = json["outputs"][0]["name"].as_str().unwrap();
    assert!(failure.starts_with(output), "{failure}");
    assert!(json["outputs"][0]["rel_l2"].as_f64().unwrap() > 1e-3);

    let table = common::pare(&["verify", source.to_str().unwrap(), scaled.to_str().unwrap()]);
    assert_eq!(table.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&table.stdout).contains("FAIL"));
}

#[test]
fn golden_outputs_are_a_reference_too() {
    let dir = common::repo().join("golden/resnet_block_op13");
    let model = dir.join("model.onnx");
    let (code, json, stderr) = verify(&[model.to_str().unwrap(), "--golden", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["samples"], 1);
    assert!(json["outputs"][0]["max_abs"].as_f64().unwrap() < 1e-5);
}

#[test]
fn deployed_int8_kernels_fail_where_reference_semantics_pass() {
    if std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| info.contains("vnni")) {
        eprintln!("note: this CPU has VNNI; ONNX Runtime's int8 kernels do not saturate here");
        return;
    }
    let dir = common::repo().join("golden/qdq_saturation");
    let model = dir.join("model.onnx");
    let golden = dir.to_str().unwrap();
    let common_args =
        [model.to_str().unwrap(), "--golden", golden, "--runtime", "ort", "--rtol", "1e-3", "--atol", "1e-3"];
    let (reference, _, stderr) = verify(&[&common_args[..], &["--ort-opt", "none"]].concat());
    assert_eq!(reference, Some(0), "{stderr}");
    let (deployed, json, stderr) = verify(&[&common_args[..], &["--ort-opt", "all"]].concat());
    assert_eq!(deployed, Some(1), "{stderr}");
    assert!(json["outputs"][0]["max_abs"].as_f64().unwrap() > 1.0);
    // The embedded evaluator follows reference semantics.
    let (tract, _, stderr) = verify(&[model.to_str().unwrap(), "--golden", golden, "--rtol", "1e-3", "--atol", "1e-3"]);
    assert_eq!(tract, Some(0), "{stderr}");
}

#[test]
fn ort_and_tract_agree_on_a_real_model() {
    let Some(resnet) = common::fetched("resnet50") else { return };
    let path = resnet.path.to_str().unwrap();
    let dir = resnet.path.parent().unwrap().to_str().unwrap().to_string();
    for runtime in ["tract", "ort"] {
        let (code, _, stderr) =
            verify(&[path, "--golden", &dir, "--runtime", runtime, "--rtol", "1e-4", "--atol", "1e-5"]);
        assert_eq!(code, Some(0), "{runtime}: {stderr}");
    }
}

#[test]
fn bad_input_is_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let good = common::repo().join("golden/resnet_block_op13/model.onnx");
    let other = common::repo().join("golden/se_hardsigmoid_op17/model.onnx");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![junk.to_str().unwrap(), good.to_str().unwrap()], "junk.onnx"),
        (vec![good.to_str().unwrap()], "CANDIDATE"),
        // Inputs of another model: 'input' is not this model's input.
        (
            vec![good.to_str().unwrap(), good.to_str().unwrap(), "--inputs", other.parent().unwrap().to_str().unwrap()],
            "input",
        ),
        (
            vec![good.to_str().unwrap(), good.to_str().unwrap(), "--rtol=-1", "--input-shape", "images=1,3,32,32"],
            "rtol",
        ),
    ];
    for (args, expected) in cases {
        let (code, _, stderr) = verify(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "'{expected}' in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A symbolic batch and no --input-shape: random samples take batch 1 (and
/// say so), where they used to be refused.
#[test]
fn an_open_batch_is_verified_at_1() {
    let good = common::repo().join("golden/resnet_block_op13/model.onnx");
    let (code, report, stderr) = verify(&[good.to_str().unwrap(), good.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["input_shapes"], serde_json::json!(["images=1x3x32x32"]));
    assert!(report["warnings"].as_array().unwrap().is_empty(), "{report}");
}

#[test]
fn a_missing_onnx_runtime_is_a_clear_error() {
    let model = common::repo().join("golden/se_hardsigmoid_op17/model.onnx");
    let model = model.to_str().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(["verify", model, model, "--runtime", "ort"])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .env("PARE_PYTHON", "/nonexistent/python")
        .env_remove("VIRTUAL_ENV")
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = common::stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ONNX Runtime not found") && stderr.contains("ORT_DYLIB_PATH"), "{stderr}");
}
