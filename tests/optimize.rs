//! `pare optimize` with the exact families end to end: every golden model
//! optimizes, verifies against its input (tract, or ONNX Runtime where tract
//! cannot run it) and still matches its golden outputs; after `fuse` no
//! BatchNormalization follows a Conv, Constant weights are initializers,
//! Dropout and Identity are gone; a second run changes nothing; bad rules,
//! devices and budgets are exit 2 with nothing written.

mod common;

use std::path::{Path, PathBuf};

use pare::onnx::proto::ModelProto;
use pare::onnx::read_model;

fn runtime_for(name: &str) -> &'static str {
    if common::TRACT_CANNOT_RUN.contains(&name) {
        "ort"
    } else {
        "tract"
    }
}

/// Optimizes a model into `dir`; returns (exit code, output path, report JSON, stderr).
fn optimize(model: &Path, dir: &Path, extra: &[&str]) -> (Option<i32>, PathBuf, serde_json::Value, String) {
    let output = dir.join("out.onnx");
    let report = dir.join("report.json");
    let mut args = vec!["optimize", model.to_str().unwrap(), "-o", output.to_str().unwrap()];
    args.extend(["--report", report.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let run = common::pare(&args);
    let json = std::fs::read_to_string(&report).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    (run.status.code(), output, json, common::stderr(&run))
}

fn ops(model: &ModelProto) -> Vec<String> {
    model.graph.as_ref().unwrap().node.iter().map(|n| n.op_type.clone().unwrap_or_default()).collect()
}

/// BatchNormalization nodes that read a Conv's output.
fn batchnorms_after_conv(model: &ModelProto) -> usize {
    let graph = model.graph.as_ref().unwrap();
    let conv_outputs: Vec<&String> =
        graph.node.iter().filter(|n| n.op_type.as_deref() == Some("Conv")).flat_map(|n| &n.output).collect();
    graph
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("BatchNormalization"))
        .filter(|n| n.input.first().is_some_and(|i| conv_outputs.contains(&i)))
        .count()
}

#[test]
fn every_golden_model_optimizes_verifies_and_keeps_its_golden_outputs() {
    for model in common::golden_models() {
        let name = common::golden_name(&model);
        let runtime = runtime_for(&name);
        let dir = tempfile::tempdir().unwrap();
        let shapes = common::golden_input_shapes(&model);
        let mut extra = vec!["--runtime", runtime];
        for shape in &shapes {
            extra.extend(["--input-shape", shape.as_str()]);
        }
        let (code, output, report, stderr) = optimize(&model, dir.path(), &extra);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        assert_eq!(report["verification"]["passed"], true, "{name}: {report}");
        let worst = report["verification"]["outputs"].as_array().unwrap().iter().map(|o| o["rel_l2"].as_f64().unwrap());
        assert!(worst.fold(0.0, f64::max) <= 1e-5, "{name}: {report}");

        // The optimized model still reproduces the golden outputs of the original.
        let golden = model.parent().unwrap().join("test_data_set_0");
        let run = common::pare(&[
            "verify",
            output.to_str().unwrap(),
            "--golden",
            golden.to_str().unwrap(),
            "--runtime",
            runtime,
            "--rtol",
            "1e-4",
            "--atol",
            "1e-5",
        ]);
        assert_eq!(
            run.status.code(),
            Some(0),
            "{name}: {}{}",
            String::from_utf8_lossy(&run.stdout),
            common::stderr(&run)
        );
    }
}

#[test]
fn fuse_and_clean_leave_no_batchnorm_dropout_identity_or_constant_node() {
    let cases = [
        ("resnet_block_op13", 6),
        ("resnet_block_op9", 6),
        ("vgg_bn_op21", 3),
        ("se_hardsigmoid_op17", 7),
        ("ppocr_constants_op11", 3),
        ("dropout_identity_op13", 0),
    ];
    for (name, fused) in cases {
        let model = common::repo().join("golden").join(name).join("model.onnx");
        let dir = tempfile::tempdir().unwrap();
        let shapes = common::golden_input_shapes(&model);
        let mut extra = vec![];
        for shape in &shapes {
            extra.extend(["--input-shape", shape.as_str()]);
        }
        let (code, output, report, stderr) = optimize(&model, dir.path(), &extra);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        let before = read_model(&model).unwrap().model;
        let after = read_model(&output).unwrap().model;
        assert_eq!(batchnorms_after_conv(&after), 0, "{name}");
        let bn_fusions: usize = report["engine"]["firings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rule"].as_str().unwrap().starts_with("fuse-bn"))
            .count();
        assert_eq!(bn_fusions, fused, "{name}: {report}");
        // The one Dropout whose mask is a graph output must stay.
        let dropouts = if name == "dropout_identity_op13" { 1 } else { 0 };
        assert_eq!(ops(&after).iter().filter(|op| *op == "Dropout").count(), dropouts, "{name}: {:?}", ops(&after));
        for gone in ["Identity", "Constant"] {
            assert!(!ops(&after).iter().any(|op| op == gone), "{name}: {gone} left in {:?}", ops(&after));
        }
        assert!(ops(&after).len() < ops(&before).len(), "{name}");
    }
}

#[test]
fn fetched_models_lose_every_batchnorm_after_a_conv() {
    for name in ["resnet50", "densenet121", "inception_v2", "shufflenet", "ppocr_det", "ppocr_rec", "ppocr_cls"] {
        let Some(model) = common::fetched(name) else { continue };
        let dir = tempfile::tempdir().unwrap();
        let mut extra = vec!["--samples", "1"];
        for shape in &model.input_shapes {
            extra.extend(["--input-shape", shape.as_str()]);
        }
        let (code, output, report, stderr) = optimize(&model.path, dir.path(), &extra);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        let before = read_model(&model.path).unwrap().model;
        let after = read_model(&output).unwrap().model;
        assert!(batchnorms_after_conv(&before) > 0, "{name} had no BatchNormalization after a Conv to fuse");
        assert_eq!(batchnorms_after_conv(&after), 0, "{name}");
        for gone in ["Dropout", "Identity", "Constant"] {
            assert!(!ops(&after).iter().any(|op| op == gone), "{name}: {gone} left");
        }
        assert!(report["after"]["nodes"].as_u64() < report["before"]["nodes"].as_u64(), "{name}: {report}");
    }
}

#[test]
fn optimizing_twice_changes_nothing_and_runs_are_deterministic() {
    let model = common::repo().join("golden/ppocr_constants_op11/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let (code, first, _, stderr) = optimize(&model, dir.path(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let first_bytes = std::fs::read(&first).unwrap();
    let again = tempfile::tempdir().unwrap();
    let (code, repeat, _, stderr) = optimize(&model, again.path(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(std::fs::read(&repeat).unwrap(), first_bytes, "same input, same options: same bytes");
    let second_dir = tempfile::tempdir().unwrap();
    let (code, second, report, stderr) = optimize(&first, second_dir.path(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(std::fs::read(&second).unwrap(), first_bytes, "idempotent: {report}");
}

#[test]
fn user_rules_objectives_and_devices_are_options() {
    let model = common::repo().join("golden/dropout_identity_op13/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    // A user rule that removes nothing new but must fire on the Relu... of which there is none:
    // instead it rewrites Identity itself, with the shipped families off.
    let rules = dir.path().join("mine.rules");
    std::fs::write(&rules, "# Drop Identity.\nmy-identity: (Identity ?x ?a) => ?x\n").unwrap();
    let (code, _, report, stderr) =
        optimize(&model, dir.path(), &["--passes", "none", "--rules", rules.to_str().unwrap(), "--device", "mcu"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["engine"]["fired"], serde_json::json!([["my-identity", 2]]), "{report}");
    assert_eq!(report["device"], "mcu");
    for objective in ["latency", "energy", "size"] {
        let (code, _, report, stderr) = optimize(&model, dir.path(), &["--objective", objective]);
        assert_eq!(code, Some(0), "{objective}: {stderr}");
        assert_eq!(report["after"]["nodes"], 3, "{objective}: {report}");
    }
}

#[test]
fn bad_rules_devices_and_budgets_are_exit_2_with_nothing_written() {
    let model = common::repo().join("golden/resnet_block_op13/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("broken.rules");
    std::fs::write(&rules, "oops: (Conv ?x ?w ?b ?a) => ?nothing\n").unwrap();
    let device = dir.path().join("device.toml");
    std::fs::write(&device, "name = \"half\"\n").unwrap();
    let rules_arg = rules.to_str().unwrap().to_string();
    let device_arg = device.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--rules", &rules_arg], "broken.rules: rule 'oops'"),
        (vec!["--rules", "/nonexistent/x.rules"], "/nonexistent/x.rules"),
        (vec!["--device", "gpu"], "unknown device 'gpu'"),
        (vec!["--device-file", &device_arg], "device.toml: not a device profile"),
        (vec!["--budget=-1"], "--budget"),
        (vec!["--passes", "fold,warp"], "unknown pass family 'warp'"),
    ];
    for (extra, message) in cases {
        let (code, output, _, stderr) = optimize(&model, dir.path(), &extra);
        assert_eq!(code, Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
        assert!(!output.exists(), "{extra:?} wrote {}", output.display());
    }
}

#[test]
fn passes_lists_every_rule() {
    let run = common::pare(&["passes"]);
    assert_eq!(run.status.code(), Some(0));
    let text = String::from_utf8_lossy(&run.stdout);
    for rule in [
        "fold-constant",
        "fold-shape",
        "fuse-bn-conv",
        "fuse-matmul-add",
        "fuse-pad-conv",
        "remove-dropout",
        "dead-nodes",
    ] {
        assert!(text.contains(rule), "{rule} missing:\n{text}");
    }
}
