//! The embedded evaluator: runs an ONNX model in process with tract-onnx, so
//! verification, calibration and data-aware rewrites need no external
//! runtime.
//!
//! - [`Evaluator`] loads a model (from a path, bytes or a `ModelProto`),
//!   fixes dynamic dimensions from `--input-shape` pairs or, failing that,
//!   from each sample's own shapes, and runs it by graph input name.
//! - Activation capture: [`EvaluatorBuilder::captures`] makes any named
//!   value in the graph an extra output of the one compiled model, so every
//!   capture of a sample comes from one run. Captures are declared before
//!   tract optimizes the model (optimization fuses nodes; a value inside a
//!   fused kernel would otherwise no longer exist).
//! - [`Evaluator::run_stream`] runs many samples one at a time and hands each
//!   sample's outputs to a sink before the next one runs, so memory holds one
//!   sample's activations at most.
//! - [`calibrate`] turns captured activations of calibration samples into
//!   quantization ranges (minmax, percentile, entropy) in one pass.
//! - [`Tensor`] keeps each value's element type and converts from and to
//!   ONNX `TensorProto`; [`read_npy`] and [`read_test_data_set`] read input
//!   and golden files.

pub mod calibrate;
mod evaluator;
mod files;
mod npy;
pub mod statistics;
mod tensor;

#[cfg(test)]
mod golden_tests;

use std::path::PathBuf;

pub use evaluator::{Evaluator, EvaluatorBuilder, Optimization};
pub use files::{read_tensor_file, read_test_data_set, TestDataSet};
pub use npy::{decode_npy, read_npy};
pub(crate) use tensor::with_element_type;
pub use tensor::{runs_relative_l2, NamedTensor, Tensor};

/// Why a model could not be loaded or run. Variants name the model (its
/// path, or the label given for bytes) and, where tract reports one, the
/// node inside the message.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Read(#[from] crate::onnx::OnnxError),
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{model}: tract cannot load the model: {reason}")]
    Load { model: String, reason: String },
    #[error("{model}: tract cannot prepare the model for running: {reason}")]
    Prepare { model: String, reason: String },
    #[error("{model}: running the model failed: {reason}")]
    Run { model: String, reason: String },
    #[error("{model}: --input-shape names '{name}', which is not a graph input (inputs: {inputs})")]
    UnknownFixedInput { model: String, name: String, inputs: String },
    #[error("{model}: input '{name}' is missing (inputs: {inputs})")]
    MissingInput { model: String, name: String, inputs: String },
    #[error("{model}: '{name}' is not a graph input (inputs: {inputs})")]
    UnknownInput { model: String, name: String, inputs: String },
    #[error("{model}: input '{name}' is given twice")]
    DuplicateInput { model: String, name: String },
    #[error("{model}: input '{name}' has shape {found:?}, the model expects {expected}")]
    InputShape { model: String, name: String, expected: String, found: Vec<usize> },
    #[error("{model}: input '{name}' has element type {found}, the model expects {expected}")]
    InputType { model: String, name: String, expected: String, found: String },
    #[error("{model}: cannot capture '{name}': no value of that name exists in the graph")]
    UnknownCapture { model: String, name: String },
    #[error("tensor '{name}': {reason}")]
    Tensor { name: String, reason: String },
    #[error("{path}: not a readable .npy file: {reason}")]
    Npy { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    TestData { path: PathBuf, reason: String },
}
