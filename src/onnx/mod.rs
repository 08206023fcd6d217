//! ONNX on disk: the generated protobuf types, reading a model from a file or
//! stdin (with its external data loaded and checked), and writing one to a file
//! (atomically, with external data when asked or when it must) or stdout.

pub mod external;
pub mod read;
pub mod tensors;
pub mod write;

pub use read::{read_model, Loaded};
pub use write::{write_model, ExternalData, WriteOptions};

/// The generated ONNX protobuf types (proto/onnx.proto).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use std::path::PathBuf;

/// Why a model could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an ONNX model: {reason}")]
    NotOnnx { path: PathBuf, reason: String },
    #[error("{path}: tensor '{tensor}': external data location '{location}' {reason}")]
    ExternalLocation { path: PathBuf, tensor: String, location: String, reason: String },
    #[error("{path}: tensor '{tensor}': external data file {file} cannot be read: {source}")]
    ExternalMissing { path: PathBuf, tensor: String, file: PathBuf, source: std::io::Error },
    #[error("{path}: tensor '{tensor}': external data {reason}")]
    ExternalRange { path: PathBuf, tensor: String, reason: String },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    TooLarge { path: PathBuf, reason: String },
}
