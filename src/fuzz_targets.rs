//! The byte-level entry points the fuzz targets (fuzz/fuzz_targets/) and their
//! regression tests (tests/fuzz_regressions.rs) share: each takes arbitrary
//! bytes, feeds them to one of pare's readers the way the command line would,
//! and returns `Ok` or the reader's error. None may panic, abort or allocate
//! without bound, whatever the bytes.
//!
//! Inputs that describe several files (external data, a test_data_set folder)
//! are split by [`split_chunks`] and written into a fresh temporary folder.
//! [`BoundedAllocator`] is the global allocator of the fuzz targets and the
//! regression test: it refuses any single allocation over
//! [`MAX_SINGLE_ALLOCATION`], so a length field that sizes a buffer from what a
//! file claims rather than what it holds is caught even where the operating
//! system would have let the reservation through.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use crate::cost::profile::{DeviceProfile, ProfileError};
use crate::egraph::rules::{self, FiringLog, RuleError};
use crate::eval::{self, EvalError, Tensor};
use crate::ir::IrError;
use crate::onnx::proto::TensorProto;
use crate::onnx::OnnxError;

/// Why an entry point refused its input: the reader's own error.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("not a .npy file: {0}")]
    Npy(String),
    #[error("not a TensorProto: {0}")]
    TensorProto(#[from] prost::DecodeError),
    #[error("cannot lay out the input's files: {0}")]
    Scratch(#[from] std::io::Error),
}

/// A fuzz target's entry point: bytes in, `Ok` or the reader's refusal out.
pub type EntryPoint = fn(&[u8]) -> Result<(), Refused>;

/// Every fuzz target, by the name of its folder under fuzz/corpus/ and
/// fuzz/regressions/, with its entry point.
pub const TARGETS: &[(&str, EntryPoint)] = &[
    ("onnx_model", onnx_model),
    ("external_data", external_data),
    ("rules", rule_file),
    ("device_profile", device_profile),
    ("npy", npy),
    ("tensor_proto", tensor_proto),
    ("test_data_set", test_data_set),
];

/// The model file's name in the messages of the model readers.
const MODEL_NAME: &str = "fuzz.onnx";

/// A model file: decoded (external data would be looked up in a folder that
/// does not exist), imported into the IR, and its shapes inferred.
pub fn onnx_model(bytes: &[u8]) -> Result<(), Refused> {
    let no_folder = PathBuf::from("/nonexistent/pare-fuzz");
    let loaded = crate::onnx::read::decode_model(Bytes::copy_from_slice(bytes), Path::new(MODEL_NAME), no_folder)?;
    let mut model = crate::ir::import(loaded.model)?;
    crate::ir::infer::infer(&mut model, &[])?;
    Ok(())
}

/// The data file's name in the folder [`external_data`] lays out.
pub const EXTERNAL_DATA_FILE: &str = "model.onnx.data";
/// A link in that folder to a file outside it, which must be refused.
pub const ESCAPING_LINK: &str = "outside.data";

/// A model and its external data: the first chunk ([`split_chunks`]) is the
/// model, the second the contents of [`EXTERNAL_DATA_FILE`] beside it. The
/// folder also holds [`ESCAPING_LINK`], a symlink to a file one level up, and
/// an empty `sub/` folder.
pub fn external_data(bytes: &[u8]) -> Result<(), Refused> {
    let chunks = split_chunks(bytes);
    let model = chunks.first().copied().unwrap_or_default();
    let data = chunks.get(1).copied().unwrap_or_default();
    let scratch = tempfile::tempdir()?;
    let folder = scratch.path().join("model");
    std::fs::create_dir_all(folder.join("sub"))?;
    std::fs::write(folder.join(EXTERNAL_DATA_FILE), data)?;
    let outside = scratch.path().join("secret.data");
    std::fs::write(&outside, b"bytes outside the model's folder")?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, folder.join(ESCAPING_LINK))?;
    let loaded =
        crate::onnx::read::decode_model(Bytes::copy_from_slice(model), &folder.join(MODEL_NAME), folder.clone())?;
    let mut escaped = false;
    let mut model = loaded.model;
    crate::onnx::tensors::for_each_tensor_mut(&mut model, &mut |tensor| {
        escaped |= tensor.raw_data.as_deref().is_some_and(|raw| raw.starts_with(b"bytes outside"));
        Ok::<(), Refused>(())
    })?;
    assert!(!escaped, "a tensor was loaded from a file outside the model's folder");
    Ok(())
}

/// A user rule file: parsed, then every rule compiled into a rewrite.
pub fn rule_file(bytes: &[u8]) -> Result<(), Refused> {
    let text = String::from_utf8_lossy(bytes);
    let source_name = "fuzz.rules";
    let specs = rules::parse("user", source_name, &text)?;
    let log = FiringLog::default();
    for spec in &specs {
        rules::compile(spec, source_name, &log, crate::families::REGISTRY)?;
    }
    Ok(())
}

/// A device-profile TOML file.
pub fn device_profile(bytes: &[u8]) -> Result<(), Refused> {
    let text = String::from_utf8_lossy(bytes);
    let profile = DeviceProfile::parse(&text, "fuzz.toml")?;
    profile.macs_per_second(Some(crate::ir::DataType::Int8));
    Ok(())
}

/// A `.npy` file, decoded into a tensor.
pub fn npy(bytes: &[u8]) -> Result<(), Refused> {
    let tensor = eval::decode_npy(bytes).map_err(Refused::Npy)?;
    tensor.to_le_bytes().map_err(Refused::Npy)?;
    Ok(())
}

/// A `.pb` file: a TensorProto, decoded into a tensor.
pub fn tensor_proto(bytes: &[u8]) -> Result<(), Refused> {
    let proto = TensorProto::decode(bytes)?;
    let tensor = Tensor::from_proto(&proto)?;
    tensor.to_proto("round trip")?;
    Ok(())
}

/// A test_data_set folder: the first byte says how many of the chunks that
/// follow ([`split_chunks`]) are `input_N.pb` (0 to 3); the rest are
/// `output_N.pb`.
pub fn test_data_set(bytes: &[u8]) -> Result<(), Refused> {
    let (&input_count, rest) = bytes.split_first().unwrap_or((&0, &[]));
    let input_count = usize::from(input_count % 4);
    let scratch = tempfile::tempdir()?;
    for (index, chunk) in split_chunks(rest).into_iter().enumerate() {
        let name = match index.checked_sub(input_count) {
            None => format!("input_{index}.pb"),
            Some(output) => format!("output_{output}.pb"),
        };
        std::fs::write(scratch.path().join(name), chunk)?;
    }
    eval::read_test_data_set(scratch.path())?;
    Ok(())
}

/// Splits fuzz input into files at each occurrence of [`CHUNK_SEPARATOR`]
/// (at most 8 chunks; the last takes the rest). A separator rather than length
/// prefixes keeps every mutation of one file local to it.
pub fn split_chunks(bytes: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while chunks.len() < 7 {
        let Some(at) = rest.windows(CHUNK_SEPARATOR.len()).position(|window| window == CHUNK_SEPARATOR) else { break };
        chunks.push(&rest[..at]);
        rest = &rest[at + CHUNK_SEPARATOR.len()..];
    }
    chunks.push(rest);
    chunks
}

/// The bytes between the files of a multi-file fuzz input.
pub const CHUNK_SEPARATOR: &[u8] = b"--pare-fuzz-file--";

/// Joins files into one fuzz input, the inverse of [`split_chunks`] (for
/// seeding corpora).
pub fn join_chunks(files: &[&[u8]]) -> Vec<u8> {
    files.join(CHUNK_SEPARATOR)
}

/// The largest single allocation [`BoundedAllocator`] grants: far more than
/// any fuzz input of a few megabytes can honestly need.
pub const MAX_SINGLE_ALLOCATION: usize = 1 << 30;

/// The system allocator, refusing (null, so Rust reports "memory allocation
/// of N bytes failed" and aborts) any single allocation over
/// [`MAX_SINGLE_ALLOCATION`].
pub struct BoundedAllocator;

// SAFETY: every call is forwarded unchanged to the system allocator, or
// answered with null, which GlobalAlloc allows for any request.
unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_SINGLE_ALLOCATION {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_SINGLE_ALLOCATION {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_SINGLE_ALLOCATION {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_at_the_separator_and_join_back() {
        let joined = join_chunks(&[b"model", b"", b"data"]);
        assert_eq!(split_chunks(&joined), vec![&b"model"[..], b"", b"data"]);
        assert_eq!(split_chunks(b"no separator"), vec![&b"no separator"[..]]);
        let many = join_chunks(&[b"x".as_slice(); 10]);
        assert_eq!(split_chunks(&many).len(), 8);
    }

    /// A model whose one initializer (four floats) lives at `location`.
    fn model_with_external_weight(location: &str) -> Vec<u8> {
        use crate::onnx::external::ExternalRef;
        use crate::onnx::proto::{tensor_proto::DataLocation, GraphProto, ModelProto};
        let reference = ExternalRef { location: location.into(), offset: 0, length: Some(16) };
        let weight = TensorProto {
            name: Some("w".into()),
            dims: vec![4],
            data_type: Some(crate::ir::DataType::Float.code()),
            data_location: Some(DataLocation::External as i32),
            external_data: reference.entries(),
            ..Default::default()
        };
        let graph = GraphProto { initializer: vec![weight], ..Default::default() };
        ModelProto { ir_version: Some(8), graph: Some(graph), ..Default::default() }.encode_to_vec()
    }

    #[test]
    fn external_data_loads_beside_the_model_and_refuses_the_escaping_link() {
        let data = [0u8; 16];
        let inside = join_chunks(&[&model_with_external_weight(EXTERNAL_DATA_FILE), &data]);
        assert!(external_data(&inside).is_ok());
        for location in [ESCAPING_LINK, "../secret.data", "sub", "missing.data"] {
            let input = join_chunks(&[&model_with_external_weight(location), &data]);
            let error = external_data(&input).unwrap_err();
            assert!(matches!(error, Refused::Onnx(_)), "{location}: {error}");
        }
        let escaping = join_chunks(&[&model_with_external_weight(ESCAPING_LINK), &data]);
        assert!(external_data(&escaping).unwrap_err().to_string().contains("outside the model's folder"));
    }

    #[test]
    fn empty_input_is_refused_except_as_a_rule_file() {
        for (name, target) in TARGETS {
            // An empty rule file is a valid file with no rules.
            assert_eq!(target(b"").is_ok(), *name == "rules", "{name}");
        }
    }
}
