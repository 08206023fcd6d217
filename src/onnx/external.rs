//! External data: tensors whose bytes live in a file beside the model, named
//! by a `location` relative to the model's folder with an optional offset and
//! length. Locations that are absolute or lead out of that folder (`..`, or a
//! symlink pointing elsewhere) are refused.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use super::proto::{tensor_proto::DataLocation, StringStringEntryProto, TensorProto};
use super::OnnxError;

/// Whether a tensor's data is stored outside the model file.
pub fn is_external(tensor: &TensorProto) -> bool {
    tensor.data_location == Some(DataLocation::External as i32)
}

/// Where an external tensor's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalRef {
    pub location: String,
    pub offset: u64,
    /// `None`: up to the end of the file.
    pub length: Option<u64>,
}

impl ExternalRef {
    /// Reads the location, offset and length entries of a tensor.
    pub fn of(tensor: &TensorProto) -> Result<ExternalRef, String> {
        let entry = |key: &str| {
            tensor.external_data.iter().find(|e| e.key.as_deref() == Some(key)).and_then(|e| e.value.clone())
        };
        let number = |key: &str| -> Result<Option<u64>, String> {
            entry(key)
                .map(|text| text.trim().parse::<u64>().map_err(|_| format!("has a bad {key} '{text}'")))
                .transpose()
        };
        let location = entry("location").ok_or("has no location entry")?;
        Ok(ExternalRef { location, offset: number("offset")?.unwrap_or(0), length: number("length")? })
    }

    /// The entries to store in a tensor that points here.
    pub fn entries(&self) -> Vec<StringStringEntryProto> {
        let entry = |key: &str, value: String| StringStringEntryProto { key: Some(key.into()), value: Some(value) };
        let mut entries = vec![entry("location", self.location.clone()), entry("offset", self.offset.to_string())];
        if let Some(length) = self.length {
            entries.push(entry("length", length.to_string()));
        }
        entries
    }
}

/// Checks that a location stays inside the model folder; returns why not.
pub fn check_location(location: &str) -> Result<(), String> {
    if location.is_empty() {
        return Err("is empty".into());
    }
    let path = Path::new(location);
    if location.starts_with('/') || location.starts_with('\\') || path.is_absolute() {
        return Err("is absolute; it must be relative to the model's folder".into());
    }
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("leads out of the model's folder".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("is absolute; it must be relative to the model's folder".into())
            }
        }
    }
    if location.contains('\\') || location.contains(':') {
        return Err("contains a path separator or drive this platform does not allow".into());
    }
    Ok(())
}

/// Loads external tensors of one model, reading each data file once and
/// handing out slices of it.
pub struct ExternalLoader<'a> {
    model_path: &'a Path,
    base_dir: PathBuf,
    files: HashMap<String, Bytes>,
}

impl<'a> ExternalLoader<'a> {
    pub fn new(model_path: &'a Path, base_dir: PathBuf) -> Self {
        ExternalLoader { model_path, base_dir, files: HashMap::new() }
    }

    /// Moves an external tensor's bytes into its raw_data.
    pub fn load(&mut self, tensor: &mut TensorProto) -> Result<(), OnnxError> {
        let tensor_name = tensor.name.clone().unwrap_or_default();
        let range_error = |reason: String| OnnxError::ExternalRange {
            path: self.model_path.to_path_buf(),
            tensor: tensor_name.clone(),
            reason,
        };
        let reference = ExternalRef::of(tensor).map_err(range_error)?;
        let location_error = |reason: String| OnnxError::ExternalLocation {
            path: self.model_path.to_path_buf(),
            tensor: tensor_name.clone(),
            location: reference.location.clone(),
            reason,
        };
        check_location(&reference.location).map_err(location_error)?;
        let data = match self.files.get(&reference.location) {
            Some(data) => data.clone(),
            None => {
                let file = self.base_dir.join(&reference.location);
                let missing = |source| OnnxError::ExternalMissing {
                    path: self.model_path.to_path_buf(),
                    tensor: tensor_name.clone(),
                    file: file.clone(),
                    source,
                };
                let real_file = file.canonicalize().map_err(missing)?;
                let real_base = self.base_dir.canonicalize().map_err(missing)?;
                if !real_file.starts_with(&real_base) {
                    return Err(location_error(
                        "resolves (through a link) to a file outside the model's folder".into(),
                    ));
                }
                let data = super::read::map_file(&real_file).map_err(missing)?;
                self.files.insert(reference.location.clone(), data.clone());
                data
            }
        };
        let size = data.len() as u64;
        let start = reference.offset;
        let end = match reference.length {
            Some(length) => start.checked_add(length),
            None => Some(size),
        };
        let end = end.filter(|&end| end <= size && start <= end).ok_or_else(|| {
            range_error(format!(
                "[offset {start}, length {}] lies outside '{}' ({size} bytes)",
                reference.length.map_or("to end".to_string(), |l| l.to_string()),
                reference.location
            ))
        })?;
        tensor.raw_data = Some(data.slice(start as usize..end as usize));
        tensor.external_data.clear();
        tensor.data_location = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_must_stay_inside_the_folder() {
        assert!(check_location("weights.data").is_ok());
        assert!(check_location("sub/dir/w.bin").is_ok());
        assert!(check_location("./w.bin").is_ok());
        assert!(check_location("../../etc/passwd").unwrap_err().contains("out of"));
        assert!(check_location("a/../../b").is_err());
        assert!(check_location("/etc/passwd").unwrap_err().contains("absolute"));
        assert!(check_location("").is_err());
        assert!(check_location("C:\\x").is_err());
    }

    #[test]
    fn reference_entries_round_trip() {
        let reference = ExternalRef { location: "m.onnx.data".into(), offset: 4096, length: Some(12) };
        let tensor = TensorProto { external_data: reference.entries(), ..Default::default() };
        assert_eq!(ExternalRef::of(&tensor), Ok(reference));
        let bad = TensorProto { external_data: vec![], ..Default::default() };
        assert!(ExternalRef::of(&bad).is_err());
    }
}
