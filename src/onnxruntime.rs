//! ONNX Runtime as the external oracle and deployment runtime: the shared
//! library is loaded at run time (the `ort` crate's load-dynamic; nothing is
//! downloaded at build time) from ORT_DYLIB_PATH or from the `onnxruntime`
//! Python package, and models run with graph optimizations off (reference
//! semantics) or fully on (the fused kernels a deployment runs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use crate::eval::{with_element_type, NamedTensor, Tensor as EvalTensor};
use crate::ir::DataType;

/// Why ONNX Runtime could not load or run a model.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OrtError {
    #[error(
        "ONNX Runtime not found ({searched}); set ORT_DYLIB_PATH to libonnxruntime.so, or \
         `pip install onnxruntime` into the Python named by PARE_PYTHON, VIRTUAL_ENV or PATH \
         (pare never downloads it)"
    )]
    NotFound { searched: String },
    #[error("ONNX Runtime library {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("{path}: ONNX Runtime: {message}")]
    Run { path: PathBuf, message: String },
    #[error("{path}: input '{name}': {message}")]
    Input { path: PathBuf, name: String, message: String },
}

/// ONNX Runtime's graph optimization level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphOptimization {
    /// ORT_DISABLE_ALL: reference semantics, one kernel per node.
    None,
    /// ORT_ENABLE_ALL: fused and int8 kernels, as deployed.
    All,
}

/// The ONNX Runtime library pare would load: ORT_DYLIB_PATH, else the
/// `onnxruntime` package of the Python named by PARE_PYTHON, VIRTUAL_ENV, or
/// `python3` on PATH.
pub fn find_library() -> Result<PathBuf, OrtError> {
    let mut searched = Vec::new();
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        searched.push(format!("ORT_DYLIB_PATH={} is not a file", path.display()));
    }
    let mut pythons: Vec<PathBuf> = Vec::new();
    if let Some(python) = std::env::var_os("PARE_PYTHON") {
        pythons.push(python.into());
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        pythons.push(Path::new(&venv).join("bin/python"));
    }
    pythons.push("python3".into());
    for python in pythons {
        match python_package_library(&python) {
            Some(path) => return Ok(path),
            None => searched.push(format!("no onnxruntime package for {}", python.display())),
        }
    }
    Err(OrtError::NotFound { searched: searched.join("; ") })
}

/// libonnxruntime inside the `onnxruntime` package a Python interpreter imports.
fn python_package_library(python: &Path) -> Option<PathBuf> {
    let script = "import importlib.util, os; s = importlib.util.find_spec('onnxruntime'); \
                  print(os.path.join(os.path.dirname(s.origin), 'capi'))";
    let output = Command::new(python).args(["-c", script]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let capi = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    let mut libraries: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib" || n == "onnxruntime.dll"
            })
        })
        .collect();
    libraries.sort();
    libraries.pop()
}

/// The process-wide ONNX Runtime environment, loaded on first use.
fn environment() -> Result<&'static ort::environment::Environment, OrtError> {
    static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, OrtError>> = OnceLock::new();
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = find_library()?;
        let load_error = |message: String| OrtError::Load { path: path.clone(), message };
        ort::init_from(&path)
            .map_err(|e| load_error(e.to_string()))?
            .with_name("pare")
            .build()
            .map_err(|e| load_error(e.to_string()))
    });
    // A failed load is remembered and reported again to every caller.
    loaded.as_ref().map_err(Clone::clone)
}

/// A model loaded into ONNX Runtime (CPU, one intra-op thread for repeatable numbers).
pub struct OrtSession {
    session: Session,
    path: PathBuf,
}

/// A session builder with pare's settings: the graph optimization level and one intra-op thread.
fn session_builder(
    path: &Path,
    optimization: GraphOptimization,
) -> Result<ort::session::builder::SessionBuilder, OrtError> {
    let run_error = |message: String| OrtError::Run { path: path.to_path_buf(), message };
    let level = match optimization {
        GraphOptimization::None => GraphOptimizationLevel::Disable,
        GraphOptimization::All => GraphOptimizationLevel::All,
    };
    Session::builder(environment()?)
        .map_err(|e| run_error(e.to_string()))?
        .with_optimization_level(level)
        .map_err(|e| run_error(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| run_error(e.to_string()))?
        // Sessions run side by side on few cores: a spinning thread would starve its neighbours.
        .with_intra_op_spinning(false)
        .map_err(|e| run_error(e.to_string()))
}

/// The loaded ONNX Runtime's version (`onnxruntime 1.23.2`), for the cost
/// cache's keys: from the library's file name (`libonnxruntime.so.1.23.2`),
/// else its build's commit; fails when it cannot be loaded.
pub fn version() -> Result<String, OrtError> {
    environment()?;
    let library = find_library()?;
    let name = library.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let from_name: String = name
        .split('.')
        .skip_while(|part| !part.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .take_while(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(".");
    if !from_name.is_empty() {
        return Ok(format!("onnxruntime {from_name}"));
    }
    let info = std::panic::catch_unwind(ort::info).unwrap_or("unknown build");
    let commit = info.split(',').find_map(|part| part.trim().strip_prefix("git-commit-id=")).unwrap_or(info);
    Ok(format!("onnxruntime build {commit}"))
}

impl OrtSession {
    pub fn load(path: &Path, optimization: GraphOptimization) -> Result<OrtSession, OrtError> {
        let mut builder = session_builder(path, optimization)?;
        let session = builder
            .commit_from_file(path)
            .map_err(|e| OrtError::Run { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(OrtSession { session, path: path.to_path_buf() })
    }

    /// Loads a model from its encoded bytes (no external data); `label` names it in errors.
    pub fn from_bytes(bytes: &[u8], label: &Path, optimization: GraphOptimization) -> Result<OrtSession, OrtError> {
        let mut builder = session_builder(label, optimization)?;
        let session = builder
            .commit_from_memory(bytes)
            .map_err(|e| OrtError::Run { path: label.to_path_buf(), message: e.to_string() })?;
        Ok(OrtSession { session, path: label.to_path_buf() })
    }

    /// Names of the model's inputs, in order.
    pub fn input_names(&self) -> Vec<String> {
        self.session.inputs().iter().map(|outlet| outlet.name().to_string()).collect()
    }

    /// Runs the model; outputs come back in the model's output order.
    pub fn run(&mut self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, OrtError> {
        let values = inputs
            .iter()
            .map(|tensor| Ok((tensor.name.clone(), to_value(tensor, &self.path)?)))
            .collect::<Result<Vec<(String, DynValue)>, OrtError>>()?;
        let path = self.path.clone();
        let run_error = |message: String| OrtError::Run { path: path.clone(), message };
        let names: Vec<String> = self.session.outputs().iter().map(|o| o.name().to_string()).collect();
        let outputs = self.session.run(values).map_err(|e| run_error(e.to_string()))?;
        names
            .iter()
            .map(|name| {
                let value = outputs.get(name.as_str()).ok_or_else(|| run_error(format!("no output '{name}'")))?;
                from_value(name, value).map_err(run_error)
            })
            .collect()
    }
}

/// Each sample's outputs, as one run gives them.
pub type SampleOutputs = Vec<Vec<NamedTensor>>;

/// `model`'s outputs for every sample, run at `level` (`label` names the
/// model in errors).
pub fn outputs(
    model: &crate::ir::Model,
    label: &Path,
    level: GraphOptimization,
    samples: &[Vec<NamedTensor>],
) -> Result<SampleOutputs, String> {
    owned_outputs(model.clone(), label, level, samples)
}

/// [`outputs`] of a model handed over (not copied to be written).
pub fn owned_outputs(
    model: crate::ir::Model,
    label: &Path,
    level: GraphOptimization,
    samples: &[Vec<NamedTensor>],
) -> Result<SampleOutputs, String> {
    use prost::Message;
    let proto = crate::ir::export(model).map_err(|reason| format!("{}: {reason}", label.display()))?;
    let mut session = OrtSession::from_bytes(&proto.encode_to_vec(), label, level).map_err(|e| e.to_string())?;
    samples.iter().map(|sample| session.run(sample).map_err(|e| e.to_string())).collect()
}

/// [`outputs`] of each run (a model and the level it runs at), the runs
/// side by side.
pub fn outputs_side_by_side(
    runs: &[(&crate::ir::Model, GraphOptimization)],
    label: &Path,
    samples: &[Vec<NamedTensor>],
) -> Result<Vec<SampleOutputs>, String> {
    crate::parallel::side_by_side(runs, runs.len(), |&(model, level)| outputs(model, label, level, samples))
        .into_iter()
        .collect()
}

fn to_value(input: &NamedTensor, path: &Path) -> Result<DynValue, OrtError> {
    let input_error = |message: String| OrtError::Input { path: path.to_path_buf(), name: input.name.clone(), message };
    let tensor = input.tensor.as_tract();
    let dtype = input.tensor.dtype().ok_or_else(|| input_error("has no ONNX element type".into()))?;
    with_element_type!(dtype, T => {
        let plain = tensor.try_as_plain_ram().map_err(|e| input_error(format!("{e:#}")))?;
        let values = plain.as_slice::<T>().map_err(|e| input_error(format!("{e:#}")))?.to_vec();
        Tensor::from_array((tensor.shape().to_vec(), values)).map(|t| t.into_dyn()).map_err(|e| input_error(e.to_string()))
    }, else Err(input_error(format!("element type {dtype} is not supported"))))
}

fn data_type_of(element: TensorElementType) -> Option<DataType> {
    Some(match element {
        TensorElementType::Float32 => DataType::Float,
        TensorElementType::Float64 => DataType::Double,
        TensorElementType::Float16 => DataType::Float16,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Bool => DataType::Bool,
        _ => return None,
    })
}

fn from_value(name: &str, value: &DynValue) -> Result<NamedTensor, String> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(format!("output '{name}' is not a tensor"));
    };
    let unreadable = || format!("output '{name}' has element type {ty:?}, which pare cannot read");
    let dtype = data_type_of(*ty).ok_or_else(unreadable)?;
    with_element_type!(dtype, T => {
        let (shape, values) = value.try_extract_tensor::<T>().map_err(|e| e.to_string())?;
        let shape: Vec<usize> = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
        let tensor = tract_onnx::prelude::Tensor::from_shape(&shape, values).map_err(|e| format!("{e:#}"))?;
        Ok(NamedTensor::new(name, EvalTensor::from(tensor)))
    }, else Err(unreadable()))
}

/// Whether this CPU has the VNNI dot-product instructions, whose int8
/// kernels do not saturate.
#[cfg(test)]
pub(crate) fn cpu_has_vnni() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| info.contains("vnni"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::read_test_data_set;

    fn golden(name: &str) -> (PathBuf, Vec<NamedTensor>, Vec<NamedTensor>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(name);
        let set = read_test_data_set(&dir.join("test_data_set_0")).unwrap();
        (dir.join("model.onnx"), set.inputs, set.outputs)
    }

    fn max_abs_difference(a: &NamedTensor, b: &NamedTensor) -> f64 {
        assert_eq!(a.tensor.shape(), b.tensor.shape());
        let (a, b) = (a.tensor.to_f64().unwrap(), b.tensor.to_f64().unwrap());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn reference_semantics_reproduce_the_golden_outputs() {
        let (model, inputs, expected) = golden("resnet_block_op13");
        for optimization in [GraphOptimization::None, GraphOptimization::All] {
            let mut session = OrtSession::load(&model, optimization).unwrap();
            let outputs = session.run(&inputs).unwrap();
            assert_eq!(outputs.len(), expected.len());
            for (output, golden) in outputs.iter().zip(&expected) {
                assert!(max_abs_difference(output, golden) <= 1e-5, "{optimization:?} {}", output.name);
            }
        }
    }

    #[test]
    fn fused_int8_kernels_diverge_on_the_saturation_pair() {
        if cpu_has_vnni() {
            eprintln!("note: this CPU has VNNI; ONNX Runtime's int8 kernels do not saturate here");
            return;
        }
        let (model, inputs, expected) = golden("qdq_saturation");
        let reference = OrtSession::load(&model, GraphOptimization::None).unwrap().run(&inputs).unwrap();
        let deployed = OrtSession::load(&model, GraphOptimization::All).unwrap().run(&inputs).unwrap();
        assert!(max_abs_difference(&reference[0], &expected[0]) <= 1e-4);
        assert!(max_abs_difference(&deployed[0], &reference[0]) > 1.0, "int8 kernels saturate on this CPU");
    }

    #[test]
    fn a_missing_library_says_how_to_get_one() {
        let message = OrtError::NotFound { searched: "x".into() }.to_string();
        assert!(message.contains("ORT_DYLIB_PATH") && message.contains("pip install onnxruntime"));
    }
}
