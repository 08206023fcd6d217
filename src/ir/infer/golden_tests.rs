//! Checks on real files. Every `golden/*/model.onnx`, with its inputs fixed
//! to the shapes of `test_data_set_0/input_N.pb`, must infer each graph
//! output's shape and dtype as recorded in `output_N.pb`. The model cache
//! (`$PARE_MODELS_DIR` or `.cache/models`: ImageNet zoo and PP-OCR), with
//! inputs fixed as its manifest says, must give every input of a Conv, Gemm
//! or MatMul a fully known shape and match the recorded outputs. Either
//! folder may be absent; the test then says so and passes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message;

use super::{infer, parse_input_shape};
use crate::ir::graph::Model;
use crate::ir::import;
use crate::ir::shape::Shape;
use crate::ir::tensor;
use crate::onnx::proto::{ModelProto, TensorProto};

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_model(path: &Path) -> Result<ModelProto, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    ModelProto::decode(bytes::Bytes::from(bytes)).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_tensor(path: &Path) -> Option<TensorProto> {
    TensorProto::decode(bytes::Bytes::from(std::fs::read(path).ok()?)).ok()
}

/// Graph inputs that are not initializers, in order.
fn real_inputs(model: &ModelProto) -> Vec<String> {
    let Some(graph) = &model.graph else { return Vec::new() };
    let initialized: Vec<&str> = graph.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    graph.input.iter().filter_map(|i| i.name.clone()).filter(|name| !initialized.contains(&name.as_str())).collect()
}

/// Input shapes from `input_N.pb` (named by the tensor, else by position).
fn fixed_from_test_inputs(model: &ModelProto, data_dir: &Path) -> Vec<(String, Vec<i64>)> {
    let inputs = real_inputs(model);
    let mut fixed = Vec::new();
    for (index, positional_name) in inputs.iter().enumerate() {
        let Some(tensor) = read_tensor(&data_dir.join(format!("input_{index}.pb"))) else { break };
        let name = tensor.name.clone().filter(|n| inputs.contains(n)).unwrap_or_else(|| positional_name.clone());
        fixed.push((name, tensor.dims.clone()));
    }
    fixed
}

/// Imports and infers; returns the model and how long inference took.
fn import_and_infer(proto: ModelProto, fixed: &[(String, Vec<i64>)]) -> Result<(Model, Duration), String> {
    let mut model = import(proto).map_err(|e| format!("import: {e}"))?;
    let started = Instant::now();
    infer(&mut model, fixed).map_err(|e| format!("infer: {e}"))?;
    Ok((model, started.elapsed()))
}

/// Mismatches between the graph outputs and the recorded `output_N.pb` tensors.
fn output_mismatches(label: &str, model: &Model, data_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, output) in model.graph.outputs.iter().enumerate() {
        let Some(expected) = read_tensor(&data_dir.join(format!("output_{index}.pb"))) else { continue };
        let value = model.graph.value(output.value);
        let wanted = Shape::known(&expected.dims);
        if value.shape.as_ref() != Some(&wanted) {
            let got = value.shape.as_ref().map_or("none".to_string(), |s| s.to_string());
            problems.push(format!("{label}: output '{}' inferred {got}, expected {wanted}", value.name));
        }
        if value.dtype.is_some() && value.dtype != tensor::dtype(&expected) {
            problems.push(format!(
                "{label}: output '{}' dtype {:?}, expected {:?}",
                value.name,
                value.dtype,
                tensor::dtype(&expected)
            ));
        }
    }
    problems
}

#[test]
fn golden_models_infer_their_recorded_output_shapes() {
    let golden = repo_path("golden");
    let Ok(entries) = std::fs::read_dir(&golden) else {
        eprintln!("note: {} is absent; golden shape check skipped", golden.display());
        return;
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    dirs.sort();
    let mut problems = Vec::new();
    let mut checked = 0;
    for dir in dirs {
        let (model_path, data_dir) = (dir.join("model.onnx"), dir.join("test_data_set_0"));
        if !model_path.is_file() || !data_dir.is_dir() {
            continue;
        }
        let label = dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let proto = match read_model(&model_path) {
            Ok(proto) => proto,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let fixed = fixed_from_test_inputs(&proto, &data_dir);
        match import_and_infer(proto, &fixed) {
            Ok((model, _)) => problems.extend(output_mismatches(&label, &model, &data_dir)),
            Err(e) => problems.push(format!("{label}: {e}")),
        }
        checked += 1;
    }
    eprintln!("golden: {checked} models checked");
    assert!(problems.is_empty(), "golden shape mismatches:\n{}", problems.join("\n"));
}

/// Fully known shapes for every input of Conv, Gemm and MatMul nodes.
fn unknown_operand_shapes(label: &str, model: &Model) -> Vec<String> {
    let graph = &model.graph;
    let mut problems = Vec::new();
    for index in graph.nodes.node_indices() {
        let node = graph.node(index);
        if !node.domain.is_empty() || !matches!(node.op_type.as_str(), "Conv" | "Gemm" | "MatMul") {
            continue;
        }
        for input in node.inputs.iter().flatten() {
            let value = graph.value(*input);
            if value.shape.as_ref().and_then(Shape::as_known).is_none() {
                let shape = value.shape.as_ref().map_or("none".to_string(), |s| s.to_string());
                problems
                    .push(format!("{label}: {} '{}' reads '{}' of shape {shape}", node.op_type, node.name, value.name));
            }
        }
    }
    problems
}

#[test]
fn cached_real_models_get_fully_known_operand_shapes() {
    let cache = std::env::var_os("PARE_MODELS_DIR").map_or_else(|| repo_path(".cache/models"), PathBuf::from);
    let Ok(manifest) = std::fs::read_to_string(cache.join("manifest.json")) else {
        eprintln!("note: {} has no manifest.json; real-model shape check skipped", cache.display());
        return;
    };
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest.json is JSON");
    let entries = manifest["models"].as_array().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    for entry in entries {
        let Some(relative) = entry["path"].as_str() else { continue };
        let model_path = cache.join(relative);
        let model_dir = model_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let label = entry["name"].as_str().unwrap_or(relative).to_string();
        let specs: Vec<String> = match std::fs::read_to_string(model_dir.join("input_shape.txt")) {
            Ok(text) => text.split_whitespace().map(str::to_string).collect(),
            Err(_) => entry["input_shape_arg"].as_str().map(|s| vec![s.to_string()]).unwrap_or_default(),
        };
        let fixed: Vec<(String, Vec<i64>)> = match specs.iter().map(|s| parse_input_shape(s)).collect() {
            Ok(fixed) => fixed,
            Err(e) => {
                problems.push(format!("{label}: {e}"));
                continue;
            }
        };
        let proto = match read_model(&model_path) {
            Ok(proto) => proto,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        match import_and_infer(proto, &fixed) {
            Ok((model, took)) => {
                eprintln!(
                    "{label}: {} nodes inferred in {:.2} ms",
                    model.graph.nodes.node_count(),
                    took.as_secs_f64() * 1e3
                );
                problems.extend(unknown_operand_shapes(&label, &model));
                problems.extend(output_mismatches(&label, &model, &model_dir.join("test_data_set_0")));
            }
            Err(e) => problems.push(format!("{label}: {e}")),
        }
    }
    assert!(problems.is_empty(), "real-model shape problems:\n{}", problems.join("\n"));
}
