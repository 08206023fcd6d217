//! The runtimes a model is run on for verification: the embedded evaluator
//! (tract, in process, no setup) or ONNX Runtime (loaded at run time) with its
//! graph optimizations off (reference semantics) or on (deployed kernels).

use std::path::Path;

use prost::Message;

use crate::eval::{EvalError, Evaluator, EvaluatorBuilder, NamedTensor};
use crate::onnx::proto::ModelProto;
use crate::onnxruntime::{GraphOptimization, OrtError, OrtSession};

/// Which runtime to run models on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeChoice {
    Tract,
    Ort(GraphOptimization),
}

/// Why a runtime could not load or run a model.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Ort(#[from] OrtError),
}

/// A model loaded into a runtime.
pub enum Runtime {
    Tract(Box<Evaluator>),
    Ort(OrtSession),
}

impl Runtime {
    /// Loads a model; `fixed` fixes dynamic input dimensions (tract needs them
    /// before it plans; ONNX Runtime takes them from the inputs).
    pub fn load(path: &Path, choice: RuntimeChoice, fixed: &[(String, Vec<i64>)]) -> Result<Runtime, RuntimeError> {
        Ok(match choice {
            RuntimeChoice::Tract => Runtime::Tract(Box::new(Evaluator::from_path(path, fixed)?)),
            RuntimeChoice::Ort(optimization) => Runtime::Ort(OrtSession::load(path, optimization)?),
        })
    }

    /// Loads a model held in memory (its external data already loaded);
    /// `label` names it in errors.
    pub fn from_model(
        model: &ModelProto,
        label: &str,
        choice: RuntimeChoice,
        fixed: &[(String, Vec<i64>)],
    ) -> Result<Runtime, RuntimeError> {
        Ok(match choice {
            RuntimeChoice::Tract => Runtime::Tract(Box::new(
                EvaluatorBuilder::new().fixed_input_shapes(fixed).build_from_model(model, label)?,
            )),
            RuntimeChoice::Ort(optimization) => {
                Runtime::Ort(OrtSession::from_bytes(&model.encode_to_vec(), Path::new(label), optimization)?)
            }
        })
    }

    /// Runs one sample; outputs in the model's output order.
    pub fn run(&mut self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, RuntimeError> {
        Ok(match self {
            Runtime::Tract(evaluator) => evaluator.run(inputs)?,
            Runtime::Ort(session) => session.run(inputs)?,
        })
    }
}
