//! The lossless round trip: import into the IR and export again gives back
//! exactly the ModelProto that was read (every field, every tensor), for every
//! golden model and every fetched real model; the written file reads back equal.

mod common;

use std::path::Path;

use pare::onnx::{read_model, WriteOptions};
use pare::pipeline;

fn assert_round_trip(path: &Path, fixed: &[(String, Vec<i64>)]) {
    let original = read_model(path).unwrap_or_else(|e| panic!("{e}"));
    let loaded = pipeline::load(path, fixed).unwrap_or_else(|e| panic!("{e}"));
    let exported = pare::ir::export(loaded.model.clone()).expect("exports");
    assert!(exported == original.model, "{}: export differs from the model read", path.display());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let options = WriteOptions { source_had_external_data: original.had_external_data, ..Default::default() };
    let written = pipeline::save(loaded.model, &out, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(written.external.is_some(), original.had_external_data, "{}", path.display());
    let reread = read_model(&out).unwrap_or_else(|e| panic!("{e}"));
    assert!(reread.model == original.model, "{}: written file reads back different", path.display());
}

#[test]
fn golden_models_round_trip_exactly() {
    for path in common::golden_models() {
        assert_round_trip(&path, &[]);
    }
}

#[test]
fn fetched_models_round_trip_exactly() {
    for model in common::fetched_models() {
        let fixed: Vec<(String, Vec<i64>)> = model
            .input_shapes
            .iter()
            .map(|s| pare::ir::infer::parse_input_shape(s).expect("manifest shape parses"))
            .collect();
        assert_round_trip(&model.path, &fixed);
    }
}

#[test]
fn forced_external_data_reads_back_equal() {
    let source = common::repo().join("golden/resnet_block_op13/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("resnet.onnx");
    let run = common::pare(&[
        "optimize",
        source.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "none",
        "--external-data",
        "--external-threshold",
        "256",
    ]);
    assert!(run.status.success(), "{}", common::stderr(&run));
    let data = dir.path().join("resnet.onnx.data");
    assert!(data.metadata().unwrap().len() > 0, "external data written");
    assert!(out.metadata().unwrap().len() < data.metadata().unwrap().len(), "weights moved out");
    let original = read_model(&source).unwrap();
    let reread = read_model(&out).unwrap();
    assert!(reread.had_external_data);
    assert!(reread.model == original.model);
}

#[test]
fn models_over_the_size_limit_switch_to_external_data() {
    let source = common::repo().join("golden/vgg_bn_op21/model.onnx");
    let original = read_model(&source).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.onnx");
    // A limit below this model's size stands in for protobuf's 2 GiB.
    let options = WriteOptions { size_limit: 4096, external_threshold: 0, ..Default::default() };
    let written = pare::onnx::write_model(original.model.clone(), &out, &options).unwrap();
    assert!(written.external.is_some());
    assert!(written.model_bytes <= 4096);
    assert!(read_model(&out).unwrap().model == original.model);

    let never = WriteOptions { size_limit: 4096, external: pare::onnx::ExternalData::Never, ..Default::default() };
    let refused = pare::onnx::write_model(original.model, &dir.path().join("never.onnx"), &never);
    assert!(refused.unwrap_err().to_string().contains("limit"));
    assert!(!dir.path().join("never.onnx").exists());
}

#[test]
fn stdin_to_stdout_is_the_same_model() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let source = common::repo().join("golden/se_hardsigmoid_op17/model.onnx");
    let bytes = std::fs::read(&source).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(["optimize", "-", "-o", "-", "--passes", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("piped.onnx");
    std::fs::write(&out, &output.stdout).unwrap();
    assert!(read_model(&out).unwrap().model == read_model(&source).unwrap().model);
}
