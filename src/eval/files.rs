//! Tensor files the evaluator reads: ONNX `TensorProto` files (`.pb`), NumPy
//! `.npy` files, and ONNX's test_data_set_N layout (`input_N.pb` and
//! `output_N.pb`, numbered from 0).

use std::path::{Path, PathBuf};

use prost::Message;

use super::npy::read_npy;
use super::tensor::{NamedTensor, Tensor};
use super::EvalError;
use crate::onnx::proto::TensorProto;

/// The inputs and expected outputs of one test_data_set_N folder, in file
/// number order. Names come from the files; a tensor saved without a name
/// has an empty name, which [`super::Evaluator::run`] fills from its
/// position.
#[derive(Clone, Debug)]
pub struct TestDataSet {
    pub inputs: Vec<NamedTensor>,
    pub outputs: Vec<NamedTensor>,
}

/// Reads a `.pb` (TensorProto) or `.npy` file. A `.npy` tensor is named
/// after the file stem, a `.pb` tensor by the name stored in it.
pub fn read_tensor_file(path: &Path) -> Result<NamedTensor, EvalError> {
    let is_npy = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("npy"));
    if is_npy {
        let name = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
        return Ok(NamedTensor::new(name, read_npy(path)?));
    }
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
    let proto = TensorProto::decode(bytes.as_slice()).map_err(|error| EvalError::TestData {
        path: path.to_path_buf(),
        reason: format!("not a TensorProto file ({error})"),
    })?;
    let tensor = Tensor::from_proto(&proto)
        .map_err(|error| EvalError::TestData { path: path.to_path_buf(), reason: error.to_string() })?;
    Ok(NamedTensor::new(proto.name.unwrap_or_default(), tensor))
}

/// Reads `input_N.pb` and `output_N.pb` from a test_data_set folder.
pub fn read_test_data_set(dir: &Path) -> Result<TestDataSet, EvalError> {
    let inputs = read_numbered(dir, "input")?;
    if inputs.is_empty() {
        return Err(EvalError::TestData { path: dir.to_path_buf(), reason: "no input_0.pb in this folder".into() });
    }
    Ok(TestDataSet { inputs, outputs: read_numbered(dir, "output")? })
}

/// `{prefix}_0.pb`, `{prefix}_1.pb`, … up to the first missing number.
fn read_numbered(dir: &Path, prefix: &str) -> Result<Vec<NamedTensor>, EvalError> {
    let mut tensors = Vec::new();
    loop {
        let path: PathBuf = dir.join(format!("{prefix}_{}.pb", tensors.len()));
        if !path.exists() {
            return Ok(tensors);
        }
        tensors.push(read_tensor_file(&path)?);
    }
}
