//! Where verification samples come from: ONNX test_data_set folders (inputs
//! with their golden outputs), a folder of `.npy`/`.pb` input files, or
//! seeded random inputs shaped from the model. Samples are loaded one at a
//! time, so a long run never holds more than one sample in memory.

use std::path::{Path, PathBuf};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::eval::{read_tensor_file, read_test_data_set, EvalError, NamedTensor, Tensor};
use crate::ir::{DataType, Model, Producer};

/// Why samples could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("{path}: cannot read the folder: {source}")]
    Folder { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("input '{name}' has shape {shape}; fix its dynamic dimensions with --input-shape {name}=...")]
    DynamicInput { name: String, shape: String },
    #[error("input '{name}' has element type {dtype}, for which pare makes no random values")]
    UnsupportedType { name: String, dtype: String },
}

/// One sample: the model inputs and, when the source has them, the golden outputs.
#[derive(Clone, Debug)]
pub struct Sample {
    pub inputs: Vec<NamedTensor>,
    pub expected: Vec<NamedTensor>,
}

/// A graph input with a concrete type and shape, as random samples need.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<usize>,
}

/// The graph inputs a caller feeds (not initializers).
fn fed_inputs(model: &Model) -> impl Iterator<Item = &crate::ir::Value> {
    let graph = &model.graph;
    graph
        .inputs
        .iter()
        .map(|io| graph.value(io.value))
        .filter(|value| value.producer == Producer::GraphInput && value.initializer.is_none())
}

/// Names of the graph inputs a caller feeds, in order.
pub fn input_names(model: &Model) -> Vec<String> {
    fed_inputs(model).map(|value| value.name.clone()).collect()
}

/// The graph inputs a caller feeds, with their shapes, which must be fully
/// known (after `--input-shape`).
pub fn input_specs(model: &Model) -> Result<Vec<InputSpec>, SampleError> {
    specs_with(model, None)
}

/// The graph inputs a caller feeds, with symbolic or unknown dims set to
/// `fill` (a rank must still be known).
pub fn input_specs_filled(model: &Model, fill: usize) -> Result<Vec<InputSpec>, SampleError> {
    specs_with(model, Some(fill))
}

fn specs_with(model: &Model, fill: Option<usize>) -> Result<Vec<InputSpec>, SampleError> {
    fed_inputs(model)
        .map(|value| {
            let dynamic = || SampleError::DynamicInput {
                name: value.name.clone(),
                shape: value.shape.as_ref().map_or("unknown".into(), ToString::to_string),
            };
            let shape = value.shape.as_ref().ok_or_else(dynamic)?;
            let shape = shape
                .0
                .iter()
                .map(|dim| match (dim.known(), fill) {
                    (Some(d), _) => usize::try_from(d).ok(),
                    (None, fill) => fill,
                })
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(dynamic)?;
            Ok(InputSpec { name: value.name.clone(), dtype: value.dtype.unwrap_or(DataType::Float), shape })
        })
        .collect()
}

/// Where one sample is stored, read when its turn comes.
#[derive(Clone, Debug)]
enum StoredSample {
    /// A test_data_set_N folder: input_K.pb and output_K.pb.
    TestDataSet(PathBuf),
    /// Files holding the inputs, each with the input name it feeds.
    Files(Vec<(String, PathBuf)>),
}

/// Samples stored in a folder: ONNX's layout (the folder is a test_data_set,
/// or holds test_data_set_N folders), or `.npy`/`.pb` files — one sample per
/// file for a single-input model, else one sample whose files are named
/// after the inputs.
pub fn from_folder(
    dir: &Path,
    input_names: &[String],
) -> Result<impl Iterator<Item = Result<Sample, SampleError>>, SampleError> {
    let stored = stored_samples(dir, input_names)?;
    let names = input_names.to_vec();
    Ok(stored.into_iter().map(move |sample| load(sample, &names)))
}

fn stored_samples(dir: &Path, input_names: &[String]) -> Result<Vec<StoredSample>, SampleError> {
    let layout = |reason: String| SampleError::Layout { path: dir.to_path_buf(), reason };
    if dir.join("input_0.pb").is_file() {
        return Ok(vec![StoredSample::TestDataSet(dir.to_path_buf())]);
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| SampleError::Folder { path: dir.to_path_buf(), source })?
        .flatten()
        .map(|entry| entry.path())
        .collect();
    let mut sets: Vec<(u64, PathBuf)> = entries
        .iter()
        .filter(|path| path.join("input_0.pb").is_file())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            Some((name.strip_prefix("test_data_set_")?.parse().ok()?, path.clone()))
        })
        .collect();
    if !sets.is_empty() {
        sets.sort();
        return Ok(sets.into_iter().map(|(_, path)| StoredSample::TestDataSet(path)).collect());
    }
    let mut files: Vec<PathBuf> = entries
        .into_iter()
        .filter(|path| {
            path.is_file()
                && path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("npy") || e == "pb")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(layout("holds no test_data_set_N folder, input_0.pb, .npy or .pb file".into()));
    }
    if let [only] = input_names {
        return Ok(files.into_iter().map(|path| StoredSample::Files(vec![(only.clone(), path)])).collect());
    }
    let stem = |path: &PathBuf| path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    let named = input_names
        .iter()
        .map(|name| {
            let file = files
                .iter()
                .find(|path| stem(path) == *name)
                .ok_or_else(|| layout(format!("the model has several inputs; no file named after input '{name}'")))?;
            Ok((name.clone(), file.clone()))
        })
        .collect::<Result<Vec<_>, SampleError>>()?;
    Ok(vec![StoredSample::Files(named)])
}

/// Reads one stored sample; test_data_set tensors saved without a name take
/// the graph input's name at their position.
fn load(stored: StoredSample, input_names: &[String]) -> Result<Sample, SampleError> {
    match stored {
        StoredSample::TestDataSet(dir) => {
            let mut set = read_test_data_set(&dir)?;
            for (tensor, name) in set.inputs.iter_mut().zip(input_names) {
                if tensor.name.is_empty() {
                    tensor.name = name.clone();
                }
            }
            Ok(Sample { inputs: set.inputs, expected: set.outputs })
        }
        StoredSample::Files(files) => {
            let inputs = files
                .into_iter()
                .map(|(name, path)| Ok(NamedTensor::new(name, read_tensor_file(&path)?.tensor)))
                .collect::<Result<Vec<_>, SampleError>>()?;
            Ok(Sample { inputs, expected: Vec::new() })
        }
    }
}

/// `count` samples of seeded random inputs: floats from a standard normal
/// distribution, integers uniform in 0..4, booleans fair coins. The same seed
/// gives the same samples on every machine.
pub fn random(specs: &[InputSpec], count: usize, seed: u64) -> Result<impl Iterator<Item = Sample>, SampleError> {
    for spec in specs {
        if !matches!(spec.dtype, DataType::Float | DataType::Int64 | DataType::Int32 | DataType::Bool) {
            return Err(SampleError::UnsupportedType { name: spec.name.clone(), dtype: spec.dtype.to_string() });
        }
    }
    let specs = specs.to_vec();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Ok((0..count).map(move |_| Sample {
        inputs: specs.iter().map(|spec| NamedTensor::new(spec.name.clone(), random_tensor(spec, &mut rng))).collect(),
        expected: Vec::new(),
    }))
}

fn random_tensor(spec: &InputSpec, rng: &mut ChaCha8Rng) -> Tensor {
    let count: usize = spec.shape.iter().product();
    let bytes: Vec<u8> = match spec.dtype {
        DataType::Float => (0..count).flat_map(|_| (standard_normal(rng) as f32).to_le_bytes()).collect(),
        DataType::Int64 => (0..count).flat_map(|_| ((rng.next_u32() % 4) as i64).to_le_bytes()).collect(),
        DataType::Int32 => (0..count).flat_map(|_| ((rng.next_u32() % 4) as i32).to_le_bytes()).collect(),
        _ => (0..count).map(|_| (rng.next_u32() & 1) as u8).collect(),
    };
    // The byte count matches dtype and shape by construction.
    Tensor::from_le_bytes(spec.dtype, &spec.shape, &bytes).unwrap_or_else(|reason| unreachable!("{reason}"))
}

/// A standard normal variate by the Box–Muller transform.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let uniform = |rng: &mut ChaCha8Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let u1 = uniform(rng).max(f64::MIN_POSITIVE);
    let u2 = uniform(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, shape: &[usize]) -> InputSpec {
        InputSpec { name: name.into(), dtype: DataType::Float, shape: shape.to_vec() }
    }

    #[test]
    fn random_samples_are_seeded_and_normal() {
        let specs = [spec("x", &[1, 3, 32, 32])];
        let first: Vec<Sample> = random(&specs, 2, 7).unwrap().collect();
        let again: Vec<Sample> = random(&specs, 2, 7).unwrap().collect();
        let other: Vec<Sample> = random(&specs, 1, 8).unwrap().collect();
        assert_eq!(first[0].inputs, again[0].inputs);
        assert_ne!(first[0].inputs, first[1].inputs);
        assert_ne!(first[0].inputs, other[0].inputs);
        let values = first[0].inputs[0].tensor.to_f64().unwrap();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 0.06 && (variance - 1.0).abs() < 0.08, "mean {mean} variance {variance}");
    }

    #[test]
    fn golden_folders_are_read_in_onnx_layout() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/resnet_block_op13");
        let names = ["images".to_string()];
        let samples: Vec<Sample> = from_folder(&dir, &names).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].inputs[0].tensor.shape(), &[2, 3, 32, 32]);
        assert_eq!(samples[0].expected.len(), 2);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(from_folder(empty.path(), &names), Err(SampleError::Layout { .. })));
    }
}
