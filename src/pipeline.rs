//! The stages of a pare run in order — read, import, infer shapes, (passes),
//! export, write — as library calls, with one error type that says which file
//! and which stage failed.

use std::path::{Path, PathBuf};

use crate::ir::{self, IrError, Model};
use crate::onnx::{self, OnnxError, WriteOptions};

/// Why a pipeline stage failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("{path}: {source}")]
    Ir { path: PathBuf, source: IrError },
    #[error("unknown pass family '{name}' (known: {known})")]
    UnknownPass { name: String, known: String },
}

/// A model loaded into the IR, with what the writer needs to know of its source.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Model,
    pub had_external_data: bool,
    pub file_bytes: u64,
}

/// Reads a model (path or `-`), builds its IR and infers shapes, with the
/// given graph inputs fixed to concrete shapes.
pub fn load(path: &Path, fixed_shapes: &[(String, Vec<i64>)]) -> Result<LoadedModel, PipelineError> {
    let loaded = onnx::read_model(path)?;
    let ir_error = |source| PipelineError::Ir { path: path.to_path_buf(), source };
    let mut model = ir::import(loaded.model).map_err(ir_error)?;
    ir::infer::infer(&mut model, fixed_shapes).map_err(ir_error)?;
    Ok(LoadedModel { model, had_external_data: loaded.had_external_data, file_bytes: loaded.file_bytes })
}

/// The pass families pare knows (exact clean-ups and compressions arrive here).
pub const PASS_FAMILIES: &[&str] = &[];

/// Parses `--passes`: `none`, `all`, or a comma-separated list of families.
pub fn parse_passes(list: &str) -> Result<Vec<String>, PipelineError> {
    match list.trim() {
        "none" | "" => Ok(Vec::new()),
        "all" => Ok(PASS_FAMILIES.iter().map(|s| s.to_string()).collect()),
        names => names
            .split(',')
            .map(|name| {
                let name = name.trim();
                if PASS_FAMILIES.contains(&name) {
                    Ok(name.to_string())
                } else {
                    Err(PipelineError::UnknownPass {
                        name: name.to_string(),
                        known: ["none", "all"].iter().chain(PASS_FAMILIES).copied().collect::<Vec<_>>().join(", "),
                    })
                }
            })
            .collect(),
    }
}

/// Exports a model's IR and writes it (atomically) to a path or `-`.
pub fn save(model: Model, path: &Path, options: &WriteOptions) -> Result<onnx::write::Written, PipelineError> {
    let proto = ir::export(model).map_err(|source| PipelineError::Ir { path: path.to_path_buf(), source })?;
    Ok(onnx::write_model(proto, path, options)?)
}
