//! [`Evaluator`]: one ONNX model compiled by tract-onnx, with its dynamic
//! dimensions fixed, optional activation captures, and a run by graph input
//! name.
//!
//! The model is read by pare's own reader (so external data is loaded with
//! the same checks as everywhere else in pare), handed to tract's ONNX
//! parser, and value_info / output shape annotations are ignored: tract
//! infers every shape from the inputs, as a runtime does, so a symbolic `N`
//! in value_info never conflicts with a fixed batch size.
//!
//! When every input shape is known (from the model or from
//! `--input-shape`), the model is compiled once at construction, so load and
//! unsupported-operator errors surface early. Otherwise it is compiled on
//! first use for each distinct set of sample input shapes (a small cache
//! keeps the most recent plans).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};

use prost::Message;
use tract_onnx::prelude::IntoTensor;
use tract_onnx::prelude::{
    DatumType, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, IntoTValue, OutletId, TValue, TVec,
    TypedModel, TypedRunnableModel,
};
use tract_onnx::tract_hir::infer::Factoid;

use super::tensor::{onnx_dtype, NamedTensor, Tensor};
use super::EvalError;
use crate::onnx::proto::ModelProto;

/// How far tract transforms the model before running it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Optimization {
    /// tract's full pipeline (declutter, then kernel selection and fusion):
    /// fastest, and within 1e-5 relative of ONNX Runtime's reference
    /// semantics on the golden corpus.
    #[default]
    Optimized,
    /// Declutter only: tract's canonical operators, no fused kernels.
    Decluttered,
}

/// Plans kept for dynamically shaped models before the cache is cleared.
const PLAN_CACHE_LIMIT: usize = 8;

/// Options for building an [`Evaluator`].
#[derive(Clone, Debug, Default)]
pub struct EvaluatorBuilder {
    fixed_input_shapes: Vec<(String, Vec<i64>)>,
    captures: Vec<String>,
    optimization: Optimization,
}

impl EvaluatorBuilder {
    pub fn new() -> EvaluatorBuilder {
        EvaluatorBuilder::default()
    }

    /// Fixes input shapes (`--input-shape NAME=DIMS` pairs). Inputs not named
    /// keep the model's shape, or take each sample's shape when dynamic.
    pub fn fixed_input_shapes(mut self, shapes: &[(String, Vec<i64>)]) -> EvaluatorBuilder {
        self.fixed_input_shapes = shapes.to_vec();
        self
    }

    /// Values (any tensor name in the graph: node outputs, inputs,
    /// initializers) returned after the graph outputs, in this order.
    pub fn captures<S: AsRef<str>>(mut self, names: &[S]) -> EvaluatorBuilder {
        self.captures = names.iter().map(|name| name.as_ref().to_string()).collect();
        self
    }

    pub fn optimization(mut self, optimization: Optimization) -> EvaluatorBuilder {
        self.optimization = optimization;
        self
    }

    /// Reads the model with pare's reader (`-` is stdin) and builds.
    pub fn build_from_path(self, path: &Path) -> Result<Evaluator, EvalError> {
        let loaded = crate::onnx::read_model(path)?;
        self.build_from_model(&loaded.model, &path.display().to_string())
    }

    /// Builds from model bytes; `label` names the model in errors. External
    /// data cannot be resolved without a folder, so it is refused.
    pub fn build_from_bytes(self, bytes: &[u8], label: &str) -> Result<Evaluator, EvalError> {
        let loaded = crate::onnx::read::decode_model(
            bytes::Bytes::copy_from_slice(bytes),
            Path::new(label),
            "/nonexistent".into(),
        )?;
        self.build_from_model(&loaded.model, label)
    }

    /// Builds from a decoded model whose external data is already loaded;
    /// `label` names the model in errors.
    pub fn build_from_model(self, model: &ModelProto, label: &str) -> Result<Evaluator, EvalError> {
        let label = label.to_string();
        let load_error = |reason: String| EvalError::Load { model: label.clone(), reason };
        let tract_proto = tract_onnx::pb::ModelProto::decode(model.encode_to_vec().as_slice())
            .map_err(|error| load_error(format!("re-encoding the model for tract failed: {error}")))?;
        let parser = tract_onnx::onnx().with_ignore_value_info(true).with_ignore_output_shapes(true);
        let parsed = guard(|| parser.parse(&tract_proto, None)).map_err(load_error)?;
        drop(tract_proto);
        if !parsed.unresolved_inputs.is_empty() {
            return Err(load_error(format!("values used but never defined: {}", parsed.unresolved_inputs.join(", "))));
        }
        let mut inference = parsed.model;

        let graph_outputs: Vec<OutletId> =
            inference.output_outlets().map_err(tract_reason).map_err(load_error)?.to_vec();
        let graph_output_names: Vec<String> = model
            .graph
            .as_ref()
            .map(|graph| graph.output.iter().map(|o| o.name.clone().unwrap_or_default()).collect())
            .unwrap_or_default();
        let mut capture_outlets = Vec::with_capacity(self.captures.len());
        for name in &self.captures {
            let outlet = parsed
                .outlets_by_name
                .get(name)
                .copied()
                .ok_or_else(|| EvalError::UnknownCapture { model: label.clone(), name: name.clone() })?;
            capture_outlets.push(outlet);
        }
        // One model output per distinct outlet; results are mapped back so a
        // value both captured and a graph output is computed once.
        let mut distinct_outlets: Vec<OutletId> = Vec::new();
        let mut result_slots = Vec::new();
        for outlet in graph_outputs.iter().chain(&capture_outlets) {
            let slot = distinct_outlets.iter().position(|known| known == outlet).unwrap_or_else(|| {
                distinct_outlets.push(*outlet);
                distinct_outlets.len() - 1
            });
            result_slots.push(slot);
        }
        inference.select_output_outlets(&distinct_outlets).map_err(tract_reason).map_err(load_error)?;
        let result_names = graph_output_names.into_iter().chain(self.captures.iter().cloned()).collect();

        let inputs = describe_inputs(&inference, &self.fixed_input_shapes, &label)?;
        let evaluator = Evaluator {
            label,
            inference,
            inputs,
            optimization: self.optimization,
            result_names,
            result_slots,
            plans: Mutex::new(HashMap::new()),
        };
        if let Some(shapes) = evaluator.static_shapes() {
            evaluator.plan_for(&shapes)?;
        }
        Ok(evaluator)
    }
}

/// A graph input as the evaluator sees it.
#[derive(Clone, Debug)]
struct InputSpec {
    name: String,
    datum_type: Option<DatumType>,
    /// Declared dims, `None` where symbolic or unknown; `None` overall when
    /// the rank is unknown.
    declared: Option<Vec<Option<usize>>>,
    /// The shape every sample must have, when the model or `--input-shape`
    /// fixes it completely.
    fixed: Option<Vec<usize>>,
}

impl InputSpec {
    fn describe_expected(&self) -> String {
        match (&self.fixed, &self.declared) {
            (Some(fixed), _) => format!("{fixed:?}"),
            (None, Some(dims)) => {
                let dims: Vec<String> =
                    dims.iter().map(|dim| dim.map_or_else(|| "?".to_string(), |d| d.to_string())).collect();
                format!("[{}]", dims.join(", "))
            }
            (None, None) => "any shape".to_string(),
        }
    }

    fn accepts(&self, shape: &[usize]) -> bool {
        match (&self.fixed, &self.declared) {
            (Some(fixed), _) => fixed == shape,
            (None, Some(dims)) => {
                dims.len() == shape.len()
                    && dims.iter().zip(shape).all(|(dim, &actual)| dim.is_none_or(|d| d == actual))
            }
            (None, None) => true,
        }
    }
}

/// A compiled ONNX model. Cheap to share between threads (`run` takes
/// `&self`).
pub struct Evaluator {
    label: String,
    /// The parsed model with captures declared as outputs; kept to compile
    /// plans for new input shapes.
    inference: InferenceModel,
    inputs: Vec<InputSpec>,
    optimization: Optimization,
    /// Graph output names, then capture names.
    result_names: Vec<String>,
    /// For each result, its position among the compiled model's outputs.
    result_slots: Vec<usize>,
    plans: Mutex<HashMap<Vec<Vec<usize>>, Arc<TypedRunnableModel>>>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Evaluator")
            .field("model", &self.label)
            .field("inputs", &self.input_names())
            .field("results", &self.result_names)
            .finish()
    }
}

impl Evaluator {
    /// Loads a model; `fixed_input_shapes` are `--input-shape` pairs.
    pub fn from_path(path: &Path, fixed_input_shapes: &[(String, Vec<i64>)]) -> Result<Evaluator, EvalError> {
        EvaluatorBuilder::new().fixed_input_shapes(fixed_input_shapes).build_from_path(path)
    }

    /// Loads a model from bytes (no external data); `label` names it in errors.
    pub fn from_bytes(
        bytes: &[u8],
        label: &str,
        fixed_input_shapes: &[(String, Vec<i64>)],
    ) -> Result<Evaluator, EvalError> {
        EvaluatorBuilder::new().fixed_input_shapes(fixed_input_shapes).build_from_bytes(bytes, label)
    }

    /// Loads a model whose results are its graph outputs followed by the
    /// named intermediate values, all computed in one run per sample.
    pub fn with_captures<S: AsRef<str>>(
        path: &Path,
        fixed_input_shapes: &[(String, Vec<i64>)],
        captures: &[S],
    ) -> Result<Evaluator, EvalError> {
        EvaluatorBuilder::new().fixed_input_shapes(fixed_input_shapes).captures(captures).build_from_path(path)
    }

    /// The model's path or label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Graph input names in graph order (initializers excluded).
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|input| input.name.as_str()).collect()
    }

    /// Names of the results `run` returns: graph outputs, then captures.
    pub fn result_names(&self) -> &[String] {
        &self.result_names
    }

    /// Runs one sample. Inputs are matched by graph input name; an input with
    /// an empty name takes the graph input name at its position. Results are
    /// the graph outputs in graph order, then the captures, each named.
    pub fn run(&self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, EvalError> {
        let ordered = self.order_inputs(inputs)?;
        let shapes: Vec<Vec<usize>> = ordered.iter().map(|tensor| tensor.shape().to_vec()).collect();
        let plan = self.plan_for(&shapes)?;
        let values: TVec<TValue> = ordered.into_iter().map(|tensor| tensor.as_tract().clone().into_tvalue()).collect();
        let run_error = |reason: String| EvalError::Run { model: self.label.clone(), reason };
        let outputs = guard(|| plan.run(values)).map_err(run_error)?;
        // Each result takes its tensor out of tract's outputs; only a slot
        // read twice (a capture that is also a graph output) is copied.
        let mut readers = vec![0usize; outputs.len()];
        for &slot in self.result_slots.iter().filter(|&&slot| slot < outputs.len()) {
            readers[slot] += 1;
        }
        let mut outputs: Vec<Option<TValue>> = outputs.into_iter().map(Some).collect();
        self.result_slots
            .iter()
            .zip(&self.result_names)
            .map(|(&slot, name)| {
                let missing = || run_error(format!("tract returned no value for '{name}'"));
                let taken = outputs.get_mut(slot).ok_or_else(missing)?;
                readers[slot] -= 1;
                let value = if readers[slot] == 0 { taken.take() } else { taken.clone() }.ok_or_else(missing)?;
                Ok(NamedTensor::new(name.clone(), as_onnx_tensor(value.into_tensor(), name)?))
            })
            .collect()
    }

    /// Runs samples one after another, handing each sample's results to
    /// `sink` (with the sample's index) before the next sample runs, so at
    /// most one sample's activations are alive. Stops at the first error,
    /// from the model or from the sink. Returns the number of samples run.
    pub fn run_stream(
        &self,
        samples: impl IntoIterator<Item = Vec<NamedTensor>>,
        mut sink: impl FnMut(usize, Vec<NamedTensor>) -> Result<(), EvalError>,
    ) -> Result<usize, EvalError> {
        let mut count = 0;
        for (index, sample) in samples.into_iter().enumerate() {
            let results = self.run(&sample)?;
            drop(sample);
            sink(index, results)?;
            count += 1;
        }
        Ok(count)
    }

    /// The input tensors in graph input order, checked against the model.
    fn order_inputs<'a>(&self, given: &'a [NamedTensor]) -> Result<Vec<&'a Tensor>, EvalError> {
        let listed = || self.input_names().join(", ");
        let mut by_name: HashMap<&str, &Tensor> = HashMap::new();
        for (position, input) in given.iter().enumerate() {
            let name = match (input.name.as_str(), self.inputs.get(position)) {
                ("", Some(spec)) => spec.name.as_str(),
                (name, _) => name,
            };
            if !self.inputs.iter().any(|spec| spec.name == name) {
                return Err(EvalError::UnknownInput {
                    model: self.label.clone(),
                    name: name.to_string(),
                    inputs: listed(),
                });
            }
            if by_name.insert(name, &input.tensor).is_some() {
                return Err(EvalError::DuplicateInput { model: self.label.clone(), name: name.to_string() });
            }
        }
        self.inputs
            .iter()
            .map(|spec| {
                let tensor = by_name.get(spec.name.as_str()).copied().ok_or_else(|| EvalError::MissingInput {
                    model: self.label.clone(),
                    name: spec.name.clone(),
                    inputs: listed(),
                })?;
                let found_type = tensor.as_tract().datum_type();
                if let Some(expected) = spec.datum_type {
                    if expected.unquantized() != found_type.unquantized() {
                        return Err(EvalError::InputType {
                            model: self.label.clone(),
                            name: spec.name.clone(),
                            expected: type_name(expected),
                            found: type_name(found_type),
                        });
                    }
                }
                if !spec.accepts(tensor.shape()) {
                    return Err(EvalError::InputShape {
                        model: self.label.clone(),
                        name: spec.name.clone(),
                        expected: spec.describe_expected(),
                        found: tensor.shape().to_vec(),
                    });
                }
                Ok(tensor)
            })
            .collect()
    }

    /// Input shapes when every input's shape is fixed.
    fn static_shapes(&self) -> Option<Vec<Vec<usize>>> {
        self.inputs.iter().map(|input| input.fixed.clone()).collect()
    }

    /// The compiled plan for these input shapes, compiling it if needed.
    fn plan_for(&self, shapes: &[Vec<usize>]) -> Result<Arc<TypedRunnableModel>, EvalError> {
        let mut plans = self.plans.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(plan) = plans.get(shapes) {
            return Ok(Arc::clone(plan));
        }
        let plan = self.compile(shapes)?;
        if plans.len() >= PLAN_CACHE_LIMIT {
            plans.clear();
        }
        plans.insert(shapes.to_vec(), Arc::clone(&plan));
        Ok(plan)
    }

    fn compile(&self, shapes: &[Vec<usize>]) -> Result<Arc<TypedRunnableModel>, EvalError> {
        let prepare_error = |reason: String| EvalError::Prepare { model: self.label.clone(), reason };
        let mut model = self.inference.clone();
        for (index, (spec, shape)) in self.inputs.iter().zip(shapes).enumerate() {
            let fact = match spec.datum_type {
                Some(datum_type) => InferenceFact::dt_shape(datum_type, shape.clone()),
                None => InferenceFact::shape(shape.clone()),
            };
            model.set_input_fact(index, fact).map_err(tract_reason).map_err(prepare_error)?;
        }
        let optimization = self.optimization;
        guard(move || {
            let typed: TypedModel = model.into_typed()?;
            let typed = match optimization {
                Optimization::Optimized => typed.into_optimized()?,
                Optimization::Decluttered => typed.into_decluttered()?,
            };
            typed.into_runnable()
        })
        .map_err(prepare_error)
    }
}

/// The graph inputs with their declared types and shapes, fixed shapes applied.
fn describe_inputs(
    model: &InferenceModel,
    fixed_input_shapes: &[(String, Vec<i64>)],
    label: &str,
) -> Result<Vec<InputSpec>, EvalError> {
    let prepare_error = |reason: String| EvalError::Prepare { model: label.to_string(), reason };
    let mut inputs = Vec::new();
    for (index, outlet) in model.input_outlets().map_err(tract_reason).map_err(prepare_error)?.iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let fact = model.input_fact(index).map_err(tract_reason).map_err(prepare_error)?;
        let declared: Option<Vec<Option<usize>>> = (!fact.shape.is_open()).then(|| {
            fact.shape
                .dims()
                .map(|dim| dim.concretize().and_then(|dim| dim.to_i64().ok()).and_then(|dim| usize::try_from(dim).ok()))
                .collect()
        });
        let fixed = declared.as_ref().and_then(|dims| dims.iter().copied().collect::<Option<Vec<usize>>>());
        inputs.push(InputSpec { name, datum_type: fact.datum_type.concretize(), declared, fixed });
    }
    let names = inputs.iter().map(|input| input.name.as_str()).collect::<Vec<_>>().join(", ");
    for (name, dims) in fixed_input_shapes {
        let Some(position) = inputs.iter().position(|input| &input.name == name) else {
            return Err(EvalError::UnknownFixedInput { model: label.to_string(), name: name.clone(), inputs: names });
        };
        let shape: Vec<usize> = dims.iter().filter_map(|&dim| usize::try_from(dim).ok()).collect();
        let spec = &mut inputs[position];
        if shape.len() != dims.len() || !spec.accepts(&shape) {
            return Err(EvalError::InputShape {
                model: label.to_string(),
                name: name.clone(),
                expected: spec.describe_expected(),
                found: shape,
            });
        }
        spec.fixed = Some(shape);
    }
    Ok(inputs)
}

/// A tract result as a value, with tract's error chain (which names the
/// node) or a panic inside tract turned into an error message.
fn guard<T>(work: impl FnOnce() -> tract_onnx::prelude::TractResult<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => result.map_err(tract_reason),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(format!("tract panicked: {message}"))
        }
    }
}

fn tract_reason(error: tract_onnx::prelude::TractError) -> String {
    format!("{error:#}")
}

fn type_name(datum_type: DatumType) -> String {
    onnx_dtype(datum_type).map_or_else(|| format!("{datum_type:?}"), |dtype| dtype.name())
}

/// A tract result in an ONNX element type (tract computes shapes as its own
/// symbolic-dimension type; ONNX calls them int64).
fn as_onnx_tensor(tensor: tract_onnx::prelude::Tensor, name: &str) -> Result<Tensor, EvalError> {
    if tensor.datum_type() == DatumType::TDim {
        let as_i64 = tensor
            .cast_to::<i64>()
            .map_err(|error| EvalError::Tensor { name: name.to_string(), reason: format!("{error:#}") })?;
        return Ok(Tensor::from_tract(as_i64.into_owned()));
    }
    Ok(Tensor::from_tract(tensor))
}
