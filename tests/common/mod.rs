//! Shared helpers of the integration tests: where the golden and fetched
//! models are, and how to run the `pare` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every golden model: golden/**/model.onnx, sorted.
pub fn golden_models() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.file_name().is_some_and(|n| n == "model.onnx") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo().join("golden"), &mut found);
    found.sort();
    assert!(found.len() >= 15, "golden/ should hold the golden corpus; found {}", found.len());
    found
}

/// `--input-shape` arguments that fix a golden model's inputs to the shapes of
/// its test data (golden/manifest.json).
pub fn golden_input_shapes(model: &Path) -> Vec<String> {
    let name = model.parent().and_then(|p| p.strip_prefix(repo().join("golden")).ok()).expect("a golden model");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("golden/manifest.json")).expect("golden manifest"))
            .expect("golden manifest parses");
    let Some(entry) = manifest["models"].as_array().unwrap().iter().find(|m| m["name"] == name.to_str().unwrap())
    else {
        return Vec::new();
    };
    entry["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| {
            let dims: Vec<String> =
                input["test_shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap().to_string()).collect();
            format!("{}={}", input["name"].as_str().unwrap(), dims.join(","))
        })
        .collect()
}

/// A model fetched by scripts/fetch_models.py.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub group: String,
    pub name: String,
    pub path: PathBuf,
    /// `--input-shape` arguments that fix its inputs.
    pub input_shapes: Vec<String>,
    /// Parameter count computed by the fetch script (initializer and Constant elements).
    pub params: Option<u64>,
}

/// The fetched models, or none when the cache is absent. With
/// PARE_REQUIRE_MODELS=1 (as the README's test command sets) an absent cache
/// is a failure, so CI cannot silently skip them.
pub fn fetched_models() -> Vec<Fetched> {
    let dir = std::env::var_os("PARE_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join(".cache/models"));
    let manifest = dir.join("manifest.json");
    let Ok(text) = std::fs::read_to_string(&manifest) else {
        if std::env::var("PARE_REQUIRE_MODELS").is_ok_and(|v| v == "1") {
            panic!("{} is missing: run scripts/fetch_models.py", manifest.display());
        }
        eprintln!("note: {} absent, fetched-model checks skipped (run scripts/fetch_models.py)", manifest.display());
        return Vec::new();
    };
    let json: serde_json::Value = serde_json::from_str(&text).expect("manifest.json parses");
    json["models"]
        .as_array()
        .expect("manifest lists models")
        .iter()
        .map(|m| {
            let mut input_shapes = Vec::new();
            match &m["input_shape_arg"] {
                serde_json::Value::String(s) => input_shapes.push(s.clone()),
                serde_json::Value::Array(a) => {
                    input_shapes.extend(a.iter().filter_map(|s| s.as_str().map(String::from)))
                }
                _ => {}
            }
            Fetched {
                group: m["group"].as_str().unwrap_or_default().to_string(),
                name: m["name"].as_str().unwrap_or_default().to_string(),
                path: dir.join(m["path"].as_str().expect("model path")),
                input_shapes,
                params: m["params"].as_u64(),
            }
        })
        .collect()
}

pub fn fetched(name: &str) -> Option<Fetched> {
    fetched_models().into_iter().find(|m| m.name == name)
}

/// Runs the pare binary with arguments.
pub fn pare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pare")).args(args).output().expect("pare runs")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Golden models tract 0.23 cannot run (see src/eval/golden_tests.rs).
pub const TRACT_CANNOT_RUN: &[&str] = &[
    "legacy_attrs_op9",
    "local_function_op17",
    "control_flow_op13",
    "sparse_initializer_op13",
    "com_microsoft_op17",
    "qdq_matmul_op21",
];

/// A golden model's folder name (`resnet_block_op13`), from its model path.
pub fn golden_name(path: &Path) -> String {
    path.parent().unwrap().strip_prefix(repo().join("golden")).unwrap().display().to_string()
}
