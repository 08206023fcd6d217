//! Bad input gets a clear error naming the file (and node), exit code 2, and
//! no output file: empty, truncated, not ONNX at all, missing or escaping
//! external data, a graph with a cycle, an undefined input, a bad --input-shape.

mod common;

use std::path::{Path, PathBuf};

use pare::onnx::proto::{
    tensor_proto::DataLocation, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, ValueInfoProto,
};
use prost::Message;

/// Runs `pare optimize` and `pare inspect` on a bad model: both must exit 2
/// with every `expected` fragment in the message, and nothing may be written.
fn assert_refused(model: &Path, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let runs = [
        common::pare(&["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--passes", "none"]),
        common::pare(&["inspect", model.to_str().unwrap()]),
    ];
    for run in runs {
        let message = common::stderr(&run);
        assert_eq!(run.status.code(), Some(2), "exit code for {}: {message}", model.display());
        assert!(!message.contains("panicked"), "{message}");
        assert!(message.contains(&model.display().to_string()), "names the file: {message}");
        for fragment in expected {
            assert!(message.contains(fragment), "'{fragment}' in: {message}");
        }
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn float_input(name: &str) -> ValueInfoProto {
    use pare::onnx::proto::{type_proto, TensorShapeProto, TypeProto};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto::default()),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(graph: GraphProto) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A model whose one initializer lives in external data at `location`.
fn external_model(location: &str) -> Vec<u8> {
    let weight = TensorProto {
        name: Some("w".into()),
        dims: vec![4],
        data_type: Some(1),
        data_location: Some(DataLocation::External as i32),
        external_data: vec![
            StringStringEntryProto { key: Some("location".into()), value: Some(location.into()) },
            StringStringEntryProto { key: Some("offset".into()), value: Some("0".into()) },
            StringStringEntryProto { key: Some("length".into()), value: Some("16".into()) },
        ],
        ..Default::default()
    };
    model(GraphProto {
        node: vec![node("add_w", "Add", &["x", "w"], &["y"])],
        initializer: vec![weight],
        input: vec![float_input("x")],
        output: vec![float_input("y")],
        ..Default::default()
    })
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_refused(&write(dir.path(), "empty.onnx", b""), &["empty"]);
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(common::repo().join("golden/resnet_block_op13/model.onnx")).unwrap();
    assert_refused(&write(dir.path(), "truncated.onnx", &bytes[..bytes.len() / 2]), &["not an ONNX model"]);
}

#[test]
fn png_renamed_onnx() {
    let dir = tempfile::tempdir().unwrap();
    // A complete 1x1 PNG image.
    let png: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00,
        0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d,
        0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];
    assert_refused(&write(dir.path(), "picture.onnx", png), &["not an ONNX model"]);
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_refused(&dir.path().join("nowhere.onnx"), &["cannot read"]);
}

#[test]
fn missing_external_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "model.onnx", &external_model("model.onnx.data"));
    assert_refused(&path, &["'w'", "model.onnx.data"]);
}

#[test]
fn external_data_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "short.data", &[0u8; 8]);
    let path = write(dir.path(), "model.onnx", &external_model("short.data"));
    assert_refused(&path, &["'w'", "outside"]);
}

#[test]
fn external_data_escaping_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "model.onnx", &external_model("../../etc/passwd"));
    assert_refused(&path, &["'w'", "../../etc/passwd", "out of the model's folder"]);
    let path = write(dir.path(), "absolute.onnx", &external_model("/etc/passwd"));
    assert_refused(&path, &["absolute"]);
}

#[cfg(unix)]
#[test]
fn external_data_through_a_link_out_of_the_folder() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.data", &[0u8; 16]);
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.data"), dir.path().join("link.data")).unwrap();
    let path = write(dir.path(), "model.onnx", &external_model("link.data"));
    assert_refused(&path, &["outside the model's folder"]);
}

#[test]
fn graph_with_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = model(GraphProto {
        node: vec![
            node("first", "Add", &["x", "b"], &["a"]),
            node("second", "Relu", &["a"], &["b"]),
            node("third", "Relu", &["a"], &["y"]),
        ],
        input: vec![float_input("x")],
        output: vec![float_input("y")],
        ..Default::default()
    });
    assert_refused(&write(dir.path(), "cycle.onnx", &bytes), &["cycle", "'first'"]);
}

#[test]
fn node_reading_an_undefined_value() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = model(GraphProto {
        node: vec![node("lonely", "Relu", &["ghost"], &["y"])],
        input: vec![float_input("x")],
        output: vec![float_input("y")],
        ..Default::default()
    });
    assert_refused(&write(dir.path(), "undefined.onnx", &bytes), &["'lonely'", "'ghost'"]);
}

#[test]
fn input_shape_for_an_unknown_input() {
    let model = common::repo().join("golden/resnet_block_op13/model.onnx");
    let run = common::pare(&["inspect", model.to_str().unwrap(), "--input-shape", "nope=1,3,8,8"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(common::stderr(&run).contains("nope"), "{}", common::stderr(&run));
}

#[test]
fn unknown_pass_family() {
    let model = common::repo().join("golden/resnet_block_op13/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let run = common::pare(&["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--passes", "magic"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(common::stderr(&run).contains("magic"));
    assert!(!out.exists());
}

/// `pare optimize` with a user rules file holding `text` is exit 2, its
/// message names the file and says each of `says`, nothing is written.
fn assert_rules_refused(text: &str, says: &[&str]) {
    let model = common::repo().join("golden/resnet_block_op13/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let rules = write(dir.path(), "mine.rules", text.as_bytes());
    let out = dir.path().join("o.onnx");
    let args = ["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--rules", rules.to_str().unwrap()];
    let run = common::pare(&args);
    let message = common::stderr(&run);
    assert_eq!(run.status.code(), Some(2), "{message}");
    assert!(message.contains("mine.rules"), "{message}");
    for said in says {
        assert!(message.contains(said), "{said}: {message}");
    }
    assert!(!out.exists());
}

/// A rules file whose guard has ')' before '(' panicked in the parser (exit 101).
#[test]
fn malformed_rules_file() {
    assert_rules_refused("r: (Relu ?x ?a) => ?x if g)(\n", &["rule 'r'"]);
}

/// A guard argument that is neither a variable nor a number names the rule.
#[test]
fn guard_numbers_must_be_numbers() {
    assert_rules_refused("r: (Mul ?x ?c ?a) => ?x if scalar(?c, ?x, six)\n", &["rule 'r'", "'six'"]);
}

/// A target opset pare cannot write, or one below what `--quantize` needs, is exit 2 with nothing written.
#[test]
fn target_opset_out_of_range_or_below_quantization() {
    // At opset 9: quantizing must raise it to 13.
    let model = common::repo().join("golden/resnet_block_op9/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let optimize = |extra: &[&str]| {
        let mut args = vec!["optimize", model.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        common::pare(&args)
    };
    for (extra, says) in [
        (&["--target-opset", "25"][..], "--target-opset must be in 7..=24, not 25"),
        (&["--target-opset", "6"][..], "--target-opset must be in 7..=24, not 6"),
        (&["--target-opset", "12", "--quantize", "all"][..], "--quantize needs opset 13"),
    ] {
        let run = optimize(extra);
        let message = common::stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{extra:?}: {message}");
        assert!(message.contains(says), "{extra:?}: {message}");
        assert!(!out.exists());
    }
}
