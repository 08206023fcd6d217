//! `pare optimize --lowrank` end to end: a forced share factorizes every
//! eligible layer at the rank that keeps it (rounded to the device's channel
//! multiple) and the model still verifies; `--lowrank auto` on a trained
//! model factorizes only where the measured output error fits the budget
//! and the result was timed against float; bad values are exit 2.

mod common;

use std::path::{Path, PathBuf};

fn residual_block() -> PathBuf {
    common::repo().join("golden/resnet_block_op13/model.onnx")
}

fn report_of(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn count(model: &Path, op: &str) -> usize {
    let model = pare::onnx::read_model(model).unwrap().model;
    model.graph.unwrap().node.iter().filter(|n| n.op_type.as_deref() == Some(op)).count()
}

#[test]
fn a_forced_share_factorizes_every_eligible_layer_at_its_rank() {
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("lr.onnx"), dir.path().join("report.json"));
    let run = common::pare(&[
        "optimize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--lowrank",
        "0.5",
        "--input-shape",
        "images=1,3,32,32",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", common::stderr(&run));
    let report = report_of(&report);
    let section = &report["engine"]["lowrank"];
    assert_eq!(section["settings"]["fixed"], 0.5, "{section}");
    assert_eq!(section["settings"]["data_aware"], false, "no --calib: plain SVD");
    let layers = section["layers"].as_array().unwrap();
    assert!(!layers.is_empty(), "{section}");
    for layer in layers {
        let (rank, before, after) = (
            layer["rank"].as_u64().unwrap(),
            layer["macs_before"].as_u64().unwrap(),
            layer["macs_after"].as_u64().unwrap(),
        );
        assert_eq!(rank % 8, 0, "x86-avx2's channel_multiple: {layer}");
        // At most half the MACs, unless the smallest rank (one multiple) keeps more.
        assert!(after < before && (after <= before / 2 || rank == 8), "{layer}");
        assert!(after * 4 >= before, "not far below half: {layer}");
    }
    // Each factorized layer is two nodes.
    let original = count(&model, "Conv") + count(&model, "Gemm");
    let written = count(&out, "Conv") + count(&out, "Gemm") + count(&out, "MatMul");
    assert_eq!(written, original + layers.len(), "{layers:?}");
}

#[test]
fn budgeted_factorization_of_a_trained_model_keeps_what_fits_and_is_timed() {
    let Some(cls) = common::fetched("ppocr_cls") else { return };
    let data = cls.path.parent().unwrap().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("lr.onnx"), dir.path().join("report.json"));
    let mut args = vec!["optimize", cls.path.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend(["--lowrank", "auto", "--calib", &data, "--budget", "0.05", "--report", report.to_str().unwrap()]);
    args.extend(cls.input_shapes.iter().flat_map(|s| ["--input-shape", s.as_str()]));
    let run = common::pare(&args);
    assert_eq!(run.status.code(), Some(0), "{}", common::stderr(&run));
    let report = report_of(&report);
    let engine = &report["engine"];
    assert_eq!(engine["lowrank"]["settings"]["data_aware"], true);
    // Every layer's factorized forms were measured on the output.
    let measured = engine["layer_sensitivity"].as_array().unwrap();
    assert!(!measured.is_empty(), "{engine}");
    for layer in engine["lowrank"]["layers"].as_array().unwrap() {
        assert_eq!(layer["measured"], true, "{layer}");
        assert!(layer["error"].as_f64().unwrap() <= 0.05, "{layer}");
    }
    // The kept candidate was timed side by side with float in ONNX Runtime.
    let timed = engine["end_to_end"].as_array().unwrap();
    assert!(timed.iter().any(|c| c["candidate"] == "float"), "{timed:?}");
    assert_eq!(timed.iter().filter(|c| c["chosen"] == true).count(), 1);
}

#[test]
fn a_share_outside_0_1_is_exit_2_with_nothing_written() {
    let model = residual_block();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lr.onnx");
    for bad in ["0", "1", "8", "-0.5", "half"] {
        let flag = format!("--lowrank={bad}");
        let run = common::pare(&["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap(), &flag]);
        let stderr = common::stderr(&run);
        assert_eq!(run.status.code(), Some(2), "--lowrank {bad}: {stderr}");
        assert!(stderr.contains("(0, 1)"), "{stderr}");
        assert!(!out.exists());
    }
}
