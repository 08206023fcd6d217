//! Where verification and calibration samples come from, and at which shapes:
//! ONNX test_data_set folders (inputs with their golden outputs), a folder of
//! `.npy`/`.pb` input files, or seeded random inputs shaped from the model.
//! Samples are loaded one at a time, so a long run never holds more than one
//! sample in memory.
//!
//! A model whose inputs leave dimensions open (`[?, 3, ?, ?]`) runs at a
//! *representative shape*: the median calibration sample's shape when there
//! are samples ([`median_shapes`]), else a guess ([`representative_specs`]:
//! batch 1, image height and width 224, other open dims 32). A check run at a
//! shape whose spatial dims are tiny (a 1x1 image) checks almost nothing:
//! [`degenerate_inputs`] says which inputs are.

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
    /// Where it came from, for messages: a file or folder, or "random sample K".
    pub source: String,
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

/// Whether some graph input the caller feeds leaves a dim open (after `--input-shape`).
pub fn has_open_dims(model: &Model) -> bool {
    fed_inputs(model).any(|value| value.shape.as_ref().is_none_or(|shape| shape.as_known().is_none()))
}

/// Names of the graph inputs a caller feeds, in order.
pub fn input_names(model: &Model) -> Vec<String> {
    fed_inputs(model).map(|value| value.name.clone()).collect()
}

/// The graph inputs a caller feeds, with their shapes, which must be fully
/// known (after `--input-shape`).
pub fn input_specs(model: &Model) -> Result<Vec<InputSpec>, SampleError> {
    specs_with(model, false)
}

/// The graph inputs a caller feeds at their representative shapes: open
/// dims guessed by [`guessed_dim`] (a rank must still be known).
pub fn representative_specs(model: &Model) -> Result<Vec<InputSpec>, SampleError> {
    specs_with(model, true)
}

/// The size pare guesses for the open dim `index` of an input of rank
/// `rank` when no sample shows one: the batch (first of several dims) 1, an
/// image's height and width (dims 2 and 3 of a rank-4 input) 224, any other 32.
pub fn guessed_dim(index: usize, rank: usize) -> usize {
    match (index, rank) {
        (0, 2..) => 1,
        (2 | 3, 4) => GUESSED_IMAGE_SIDE,
        _ => GUESSED_OTHER_DIM,
    }
}

/// The image side [`guessed_dim`] picks (ImageNet's; a multiple of 32, as
/// detectors that downsample five times need).
pub const GUESSED_IMAGE_SIDE: usize = 224;
/// Any other open dim [`guessed_dim`] picks.
const GUESSED_OTHER_DIM: usize = 32;

/// A spatial dim (dim 2 or later of an input of rank 3 or more) below this
/// makes a check degenerate: a conv net sees too few pixels for its
/// outputs to mean anything.
pub const DEGENERATE_BELOW: usize = 32;

fn specs_with(model: &Model, guess: bool) -> Result<Vec<InputSpec>, SampleError> {
    fed_inputs(model)
        .map(|value| {
            let dynamic = || SampleError::DynamicInput {
                name: value.name.clone(),
                shape: value.shape.as_ref().map_or("unknown".into(), ToString::to_string),
            };
            let shape = value.shape.as_ref().ok_or_else(dynamic)?;
            let rank = shape.rank();
            let shape = shape
                .0
                .iter()
                .enumerate()
                .map(|(index, dim)| match dim.known() {
                    Some(d) => usize::try_from(d).ok(),
                    None => guess.then(|| guessed_dim(index, rank)),
                })
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(dynamic)?;
            Ok(InputSpec { name: value.name.clone(), dtype: value.dtype.unwrap_or(DataType::Float), shape })
        })
        .collect()
}

/// [`representative_specs`] as `--input-shape` pairs.
pub fn representative_shapes(model: &Model) -> Result<Vec<(String, Vec<i64>)>, SampleError> {
    let specs = representative_specs(model)?;
    Ok(specs.into_iter().map(|spec| (spec.name, spec.shape.iter().map(|&d| d as i64).collect())).collect())
}

/// Each input's shape in the median sample: the sample whose element count
/// (all inputs together) is the median of the samples' (the first of equals,
/// so the choice is deterministic). Empty without samples.
pub fn median_shapes(samples: &[Vec<NamedTensor>]) -> Vec<(String, Vec<i64>)> {
    let count = |sample: &Vec<NamedTensor>| sample.iter().map(|t| t.tensor.len()).sum::<usize>();
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by_key(|&index| (count(&samples[index]), index));
    let Some(&median) = order.get(order.len().saturating_sub(1) / 2) else { return Vec::new() };
    samples[median]
        .iter()
        .map(|input| (input.name.clone(), input.tensor.shape().iter().map(|&d| d as i64).collect()))
        .collect()
}

/// One input's shape in a run, written `name=1x3x48x320` (in reports too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputShape {
    pub name: String,
    pub dims: Vec<usize>,
}

impl std::fmt::Display for InputShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, dims_text(&self.dims))
    }
}

impl serde::Serialize for InputShape {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The inputs whose shape in `shapes` is degenerate where the model left it
/// open: a spatial dim (see [`DEGENERATE_BELOW`]) the model did not fix, run
/// below 32.
pub fn degenerate_inputs<'a>(model: &Model, shapes: &'a [InputShape]) -> Vec<&'a InputShape> {
    let graph = &model.graph;
    graph
        .inputs
        .iter()
        .filter_map(|io| {
            let value = graph.value(io.value);
            let shape = shapes.iter().find(|shape| shape.name == value.name)?;
            let dims = &shape.dims;
            let declared = declared_shape(&io.declared);
            // A negative dim_value (paddle2onnx's -1) is as open as a dim_param.
            let open = |index: usize| {
                declared.as_ref().and_then(|s| s.0.get(index)).is_none_or(|d| d.known().is_none_or(|v| v < 0))
            };
            let degenerate = dims.len() >= 3
                && dims.iter().enumerate().skip(2).any(|(index, &dim)| dim < DEGENERATE_BELOW && open(index));
            degenerate.then_some(shape)
        })
        .collect()
}

/// The shape a graph input is declared with in the model file (before `--input-shape`).
fn declared_shape(declared: &crate::onnx::proto::ValueInfoProto) -> Option<crate::ir::Shape> {
    use crate::onnx::proto::type_proto;
    match declared.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(tensor) => tensor.shape.as_ref().map(crate::ir::Shape::from_proto),
        _ => None,
    }
}

/// `1x3x48x320`.
pub fn dims_text<D: std::fmt::Display>(dims: &[D]) -> String {
    dims.iter().map(ToString::to_string).collect::<Vec<_>>().join("x")
}

/// Input shapes as `name=1x3x48x320`.
pub fn shapes_text(shapes: &[(String, Vec<i64>)]) -> Vec<String> {
    shapes.iter().map(|(name, dims)| format!("{name}={}", dims_text(dims))).collect()
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
            Ok(Sample { inputs: set.inputs, expected: set.outputs, source: dir.display().to_string() })
        }
        StoredSample::Files(files) => {
            let source = files.iter().map(|(_, path)| path.display().to_string()).collect::<Vec<_>>().join(", ");
            let inputs = files
                .into_iter()
                .map(|(name, path)| Ok(NamedTensor::new(name, read_tensor_file(&path)?.tensor)))
                .collect::<Result<Vec<_>, SampleError>>()?;
            Ok(Sample { inputs, expected: Vec::new(), source })
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
    Ok((0..count).map(move |index| Sample {
        inputs: specs.iter().map(|spec| NamedTensor::new(spec.name.clone(), random_tensor(spec, &mut rng))).collect(),
        expected: Vec::new(),
        source: format!("random sample {index}"),
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
    fn open_dims_are_guessed_as_batch_1_and_images_of_224() {
        assert_eq!((0..4).map(|i| guessed_dim(i, 4)).collect::<Vec<_>>(), [1, 32, 224, 224]);
        assert_eq!((0..3).map(|i| guessed_dim(i, 3)).collect::<Vec<_>>(), [1, 32, 32]);
        assert_eq!(guessed_dim(0, 1), 32);
    }

    #[test]
    fn the_median_sample_gives_the_representative_shapes() {
        let sample = |width: usize| {
            vec![NamedTensor::new("x", Tensor::from_f32(&[1, 1, 2, width], &vec![0.0; 2 * width]).unwrap())]
        };
        let samples: Vec<_> = [96, 320, 192, 160, 256].into_iter().map(sample).collect();
        assert_eq!(median_shapes(&samples), [("x".to_string(), vec![1, 1, 2, 192])]);
        // An even count takes the lower middle; ties keep the first.
        assert_eq!(median_shapes(&samples[..2]), [("x".to_string(), vec![1, 1, 2, 96])]);
        assert!(median_shapes(&[]).is_empty());
    }

    #[test]
    fn a_tiny_spatial_dim_is_degenerate_only_where_the_model_left_it_open() {
        let shape = |dims: &[usize]| InputShape { name: "images".into(), dims: dims.to_vec() };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/resnet_block_op13/model.onnx");
        // images: [N, 3, 32, 32]; only the batch is open, so no size the model fixed is pare's doing.
        let model = crate::pipeline::load(&dir, &[]).unwrap().model;
        assert!(degenerate_inputs(&model, &[shape(&[1, 3, 8, 8])]).is_empty());
        // Declared open (the PP-OCR models' [-1, 3, ?, ?]), 8x8 is degenerate and 32x32 is not.
        let mut open = model.clone();
        let declared = &mut open.graph.inputs[0].declared;
        if let Some(crate::onnx::proto::type_proto::Value::TensorType(tensor)) =
            declared.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            let mut shape = crate::ir::Shape::from_proto(tensor.shape.as_ref().unwrap());
            shape.0[2] = crate::ir::Dim::Known(-1);
            shape.0[3] = crate::ir::Dim::Symbol("?".into());
            tensor.shape = Some(shape.to_proto());
        }
        let tiny = [shape(&[1, 3, 8, 8])];
        let found: Vec<String> = degenerate_inputs(&open, &tiny).iter().map(ToString::to_string).collect();
        assert_eq!(found, ["images=1x3x8x8"]);
        assert!(degenerate_inputs(&open, &[shape(&[1, 3, 32, 32])]).is_empty());
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
