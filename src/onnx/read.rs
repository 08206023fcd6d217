//! Reading a model: the file is mapped into memory (stdin is read into one
//! buffer), decoded with tensor data sliced from that mapping rather than
//! copied, then its external data loaded the same way. Anything that is not a well-formed ONNX model is refused with
//! an error naming the file.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use super::external::{is_external, ExternalLoader};
use super::proto::ModelProto;
use super::tensors::for_each_tensor_mut;
use super::OnnxError;

/// A model read from disk or stdin.
#[derive(Debug)]
pub struct Loaded {
    pub model: ModelProto,
    /// Whether any tensor was stored as external data.
    pub had_external_data: bool,
    /// Size of the model file itself.
    pub file_bytes: u64,
}

/// Whether a path means stdin/stdout.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Reads a model from a path, or from stdin when the path is `-` (external
/// data is then looked up relative to the current folder).
pub fn read_model(path: &Path) -> Result<Loaded, OnnxError> {
    let read_error = |source| OnnxError::Read { path: path.to_path_buf(), source };
    let (bytes, base_dir) = if is_stdio(path) {
        let mut buffer = Vec::new();
        std::io::stdin().lock().read_to_end(&mut buffer).map_err(read_error)?;
        (Bytes::from(buffer), PathBuf::from("."))
    } else {
        let bytes = map_file(path).map_err(read_error)?;
        let base_dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (bytes, base_dir)
    };
    decode_model(bytes, path, base_dir)
}

/// The contents of a file, mapped rather than copied when it is a regular
/// file: tensor data then costs no copy and no fresh memory. pare never
/// writes over a file in place (outputs are renamed into place), so a mapping
/// of its own input stays valid while it runs.
pub fn map_file(path: &Path) -> std::io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    if metadata.is_file() && metadata.len() > 0 {
        // SAFETY: the mapping is read-only and private; see the note above on
        // files changing underneath it.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
        return Ok(Bytes::from_owner(map));
    }
    let mut buffer = Vec::new();
    (&file).read_to_end(&mut buffer)?;
    Ok(Bytes::from(buffer))
}

/// Decodes model bytes and loads external data relative to `base_dir`.
pub fn decode_model(bytes: Bytes, path: &Path, base_dir: PathBuf) -> Result<Loaded, OnnxError> {
    let not_onnx = |reason: String| OnnxError::NotOnnx { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(not_onnx("the file is empty".into()));
    }
    let file_bytes = bytes.len() as u64;
    let mut model = ModelProto::decode(bytes)
        .map_err(|error| not_onnx(format!("the protobuf is malformed or truncated ({error})")))?;
    if model.graph.is_none() {
        return Err(not_onnx("it has no graph (is it an ONNX file at all?)".into()));
    }
    if model.ir_version.unwrap_or(0) <= 0 {
        return Err(not_onnx("it has no IR version".into()));
    }

    let mut loader = ExternalLoader::new(path, base_dir);
    let mut had_external_data = false;
    for_each_tensor_mut(&mut model, &mut |tensor| {
        if is_external(tensor) {
            had_external_data = true;
            loader.load(tensor)?;
        }
        Ok::<(), OnnxError>(())
    })?;
    Ok(Loaded { model, had_external_data, file_bytes })
}
