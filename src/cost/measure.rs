//! Operator latency measured in the deployment runtime, the way TASO measures
//! operator costs: one single-node model per distinct configuration
//! (operator, attributes, input types and shapes, which inputs are
//! constant), run in ONNX Runtime with full graph optimizations on one
//! thread, timed (median with its 95% interval), and kept in the cost cache
//! ([`super::cache`]) by that configuration. The time of running an empty
//! model (session overhead, not the operator's) is subtracted. Extraction
//! uses these numbers where it has them and the device profile's roofline
//! elsewhere. Whole models are timed side by side in rounds ([`SideBySide`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;
use serde::Serialize;

use super::cache::{key_of, CacheError, Interval, OperatorEntry, SharedCostCache};

use crate::eval::{NamedTensor, Tensor};
use crate::ir::{tensor_declaration, DataType, Shape};
use crate::onnx::proto::{
    tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};
use crate::onnxruntime::{GraphOptimization, OrtError, OrtSession};

/// One input of a measured operator.
#[derive(Clone, Debug)]
pub enum CallInput<'a> {
    /// Omitted optional input.
    Absent,
    /// A constant (an initializer of the measured model).
    Constant(&'a TensorProto),
    /// A value fed at run time.
    Fed(DataType, Vec<i64>),
}

/// One operator invocation to time.
#[derive(Clone, Debug)]
pub struct OperatorCall<'a> {
    pub domain: &'a str,
    pub op_type: &'a str,
    pub attributes: &'a [AttributeProto],
    pub inputs: Vec<CallInput<'a>>,
    pub output: (DataType, Vec<i64>),
}

/// Each configuration is timed in this many sessions, one after another: a
/// session's own memory layout moves its median by more than its runs vary
/// (PP-OCR rec, five runs of `--quantize auto`: 86% of a configuration's
/// medians fell outside another run's interval; they spread 4.5% at the
/// median configuration, 17% at the 90th percentile), so the interval a
/// choice is judged by spans the sessions' medians.
const SESSIONS: usize = 3;
/// Each session runs at least this long (and this many times).
const MEASURE_TIME: Duration = Duration::from_millis(15);
const MIN_RUNS: usize = 7;
const MAX_RUNS: usize = 100;

/// Why a latency could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MeasureError {
    #[error(transparent)]
    Ort(#[from] OrtError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// One operator configuration's latency as extraction used it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperatorTiming {
    /// The operator with its input and output shapes.
    pub operator: String,
    /// Seconds beyond an empty run, with its 95% interval; `None`: ONNX
    /// Runtime could not run it alone (the device profile prices it).
    pub seconds: Option<Interval>,
    /// Taken from the cost cache rather than measured in this run.
    pub cached: bool,
}

/// Measured latencies, looked up in the cost cache first.
pub struct LatencyTable {
    opset: i64,
    cache: SharedCostCache,
    /// The configurations looked up so far, by cache key.
    known: HashMap<String, Option<Interval>>,
    /// Seconds an empty run costs (subtracted from every measurement).
    overhead: f64,
    /// Every configuration looked up, in lookup order.
    pub timings: Vec<OperatorTiming>,
    /// Configurations timed in this run (the rest came from the cache).
    pub measured: usize,
    /// The first lookup that failed for want of a timing (a frozen cache's miss).
    pub error: Option<MeasureError>,
}

impl LatencyTable {
    /// A table for models of this default-domain opset; fails when ONNX
    /// Runtime cannot be loaded, or a frozen cache lacks the empty run.
    pub fn new(opset: i64, cache: SharedCostCache) -> Result<LatencyTable, MeasureError> {
        let mut table = LatencyTable {
            opset,
            cache,
            known: HashMap::new(),
            overhead: 0.0,
            timings: Vec::new(),
            measured: 0,
            error: None,
        };
        let identity = OperatorCall {
            domain: "",
            op_type: "Identity",
            attributes: &[],
            inputs: vec![CallInput::Fed(DataType::Float, vec![1])],
            output: (DataType::Float, vec![1]),
        };
        let empty = table.lookup(&identity)?.ok_or_else(|| OrtError::Run {
            path: "(measured operator)".into(),
            message: "ONNX Runtime cannot run an Identity".into(),
        })?;
        table.overhead = empty.median;
        table.timings.clear();
        Ok(table)
    }

    /// Seconds one call takes in ONNX Runtime beyond an empty run, with its
    /// 95% interval, or `None` when the runtime cannot run it alone (or the
    /// frozen cache lacks it: [`error`](Self::error) says so).
    pub fn latency(&mut self, call: &OperatorCall) -> Option<Interval> {
        match self.lookup(call) {
            Ok(found) => found.map(|interval| interval.less(self.overhead)),
            Err(error) => {
                self.error.get_or_insert(error);
                None
            }
        }
    }

    /// The raw timing of a call: from this table, the cost cache, or measured.
    fn lookup(&mut self, call: &OperatorCall) -> Result<Option<Interval>, MeasureError> {
        let model = self.model(call);
        let key = key_of(&configuration_key(&model));
        if let Some(&known) = self.known.get(&key) {
            return Ok(known);
        }
        let what = describe(call);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (seconds, cached) = match cache.operator(&key, || what.clone())? {
            Some(entry) => (entry.seconds, true),
            None => {
                let seconds = time(&model).ok();
                self.measured += 1;
                cache.put_operator(key.clone(), OperatorEntry { what: what.clone(), seconds });
                (seconds, false)
            }
        };
        drop(cache);
        self.known.insert(key, seconds);
        let shown = seconds.map(|s| s.less(self.overhead));
        self.timings.push(OperatorTiming { operator: what, seconds: shown, cached });
        Ok(seconds)
    }

    fn model(&self, call: &OperatorCall) -> ModelProto {
        let mut graph = GraphProto { name: Some("measure".into()), ..Default::default() };
        let mut node = NodeProto {
            op_type: Some(call.op_type.to_string()),
            domain: Some(call.domain.to_string()),
            attribute: call.attributes.to_vec(),
            output: vec!["y".into()],
            ..Default::default()
        };
        for (i, input) in call.inputs.iter().enumerate() {
            let name = format!("x{i}");
            match input {
                CallInput::Absent => node.input.push(String::new()),
                CallInput::Constant(tensor) => {
                    graph.initializer.push(TensorProto { name: Some(name.clone()), ..(*tensor).clone() });
                    node.input.push(name);
                }
                CallInput::Fed(dtype, dims) => {
                    graph.input.push(tensor_declaration(&name, *dtype, Some(&Shape::known(dims))));
                    node.input.push(name);
                }
            }
        }
        graph.output.push(tensor_declaration("y", call.output.0, Some(&Shape::known(&call.output.1))));
        graph.node.push(node);
        let opset =
            |domain: &str, version: i64| OperatorSetIdProto { domain: Some(domain.into()), version: Some(version) };
        // An operator newer than the model's opset (a fused activation) is timed at the opset that defines it.
        let newer =
            (call.domain.is_empty()).then(|| crate::ir::opset::opset_needed_by(call.op_type, self.opset)).flatten();
        let default_opset = newer.unwrap_or(self.opset);
        ModelProto {
            ir_version: Some(crate::ir::opset::min_ir_version(default_opset).max(8)),
            opset_import: vec![opset("", default_opset), opset("com.microsoft", 1)],
            graph: Some(graph),
            ..Default::default()
        }
    }
}

/// `Conv f32[1,3,224,224] f32:[64,3,7,7] -> f32[1,64,112,112]` (constants after a colon).
fn describe(call: &OperatorCall) -> String {
    let dims = |dims: &[i64]| dims.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let inputs: Vec<String> = call
        .inputs
        .iter()
        .map(|input| match input {
            CallInput::Absent => "-".to_string(),
            CallInput::Constant(tensor) => {
                let dtype = DataType::from_code(tensor.data_type.unwrap_or(0)).map_or("?".into(), |d| d.to_string());
                format!("{dtype}:[{}]", dims(&tensor.dims))
            }
            CallInput::Fed(dtype, shape) => format!("{dtype}[{}]", dims(shape)),
        })
        .collect();
    let op =
        if call.domain.is_empty() { call.op_type.to_string() } else { format!("{}::{}", call.domain, call.op_type) };
    format!("{op} {} -> {}[{}]", inputs.join(" "), call.output.0, dims(&call.output.1))
}

/// The median seconds per run of a model over its fed inputs, with an
/// interval that holds the 95% interval of the pooled runs and every
/// session's median ([`SESSIONS`]).
fn time(model: &ModelProto) -> Result<Interval, OrtError> {
    let label = Path::new("(measured operator)");
    let bytes = model.encode_to_vec();
    let inputs = filled_inputs(model, &[], label)?;
    let mut pooled = Vec::new();
    let mut medians = Vec::new();
    for _ in 0..SESSIONS {
        let mut session = OrtSession::from_bytes(&bytes, label, GraphOptimization::All)?;
        session.run(&inputs)?;
        let started = Instant::now();
        let mut runs = Vec::new();
        while runs.len() < MAX_RUNS && (runs.len() < MIN_RUNS || started.elapsed() < MEASURE_TIME) {
            let run = Instant::now();
            session.run(&inputs)?;
            runs.push(run.elapsed().as_secs_f64());
        }
        medians.extend(Interval::of_runs(&runs).map(|i| i.median));
        pooled.extend(runs);
    }
    let interval = Interval::of_runs(&pooled)
        .ok_or_else(|| OrtError::Run { path: label.into(), message: "no run finished".into() })?;
    Ok(medians.iter().fold(interval, |i, &m| Interval { low: i.low.min(m), high: i.high.max(m), ..i }))
}

/// The graph inputs of a model filled by [`filled_tensor`] at their declared
/// shapes, open dims taken from `shapes` (the representative shapes).
fn filled_inputs(
    model: &ModelProto,
    shapes: &[(String, Vec<i64>)],
    label: &Path,
) -> Result<Vec<NamedTensor>, OrtError> {
    let initializers: Vec<&Option<String>> = model.graph.iter().flat_map(|g| &g.initializer).map(|i| &i.name).collect();
    model
        .graph
        .iter()
        .flat_map(|g| &g.input)
        .filter(|input| !initializers.contains(&&input.name))
        .map(|input| {
            let name = input.name.clone().unwrap_or_default();
            let given = shapes.iter().find(|(n, _)| *n == name).map(|(_, dims)| dims.as_slice());
            let tensor = filled_tensor(input, given).ok_or_else(|| OrtError::Input {
                path: label.to_path_buf(),
                name: name.clone(),
                message: "has open dimensions and no sample shows their size; fix them with --input-shape".into(),
            })?;
            Ok(NamedTensor::new(name, tensor))
        })
        .collect()
}

/// Whole models timed side by side: rounds in which every model runs once
/// in turn, after one warm-up run each. Inputs are filled from each model's
/// declarations, open dims at `shapes`. A model ONNX Runtime cannot load or
/// run keeps its error instead of times.
pub struct SideBySide {
    sessions: Vec<Result<(OrtSession, Vec<NamedTensor>), OrtError>>,
    /// Per model, its time in every round so far.
    pub rounds: Vec<Result<Vec<f64>, OrtError>>,
}

impl SideBySide {
    /// Loads and warms every model (labelled).
    pub fn open(models: &[(String, ModelProto)], shapes: &[(String, Vec<i64>)]) -> SideBySide {
        let sessions: Vec<Result<(OrtSession, Vec<NamedTensor>), OrtError>> = models
            .iter()
            .map(|(label, model)| {
                let label = Path::new(label);
                let mut session = OrtSession::from_bytes(&model.encode_to_vec(), label, GraphOptimization::All)?;
                let inputs = filled_inputs(model, shapes, label)?;
                session.run(&inputs)?;
                Ok((session, inputs))
            })
            .collect();
        let rounds = sessions.iter().map(|s| s.as_ref().map(|_| Vec::new()).map_err(Clone::clone)).collect();
        SideBySide { sessions, rounds }
    }

    /// Runs `count` more rounds.
    pub fn run(&mut self, count: usize) {
        for _ in 0..count {
            for (session, times) in self.sessions.iter_mut().zip(&mut self.rounds) {
                let (Ok((session, inputs)), Ok(list)) = (session, times.as_mut()) else { continue };
                let run = Instant::now();
                match session.run(inputs) {
                    Ok(_) => list.push(run.elapsed().as_secs_f64()),
                    Err(error) => *times = Err(error),
                }
            }
        }
    }
}

/// The model with every initializer reduced to its type and dims.
fn configuration_key(model: &ModelProto) -> Vec<u8> {
    let mut key = model.clone();
    if let Some(graph) = key.graph.as_mut() {
        for tensor in &mut graph.initializer {
            *tensor = TensorProto {
                name: tensor.name.clone(),
                dims: tensor.dims.clone(),
                data_type: tensor.data_type,
                ..Default::default()
            };
        }
    }
    key.encode_to_vec()
}

/// An input filled with small, varied values (floats in [−0.8, 0.8], bytes
/// cycling), at its declared shape or, where that leaves dims open, at `given`.
fn filled_tensor(input: &ValueInfoProto, given: Option<&[i64]>) -> Option<Tensor> {
    let Some(type_proto::Value::TensorType(tensor)) = input.r#type.as_ref()?.value.as_ref() else { return None };
    let dtype = DataType::from_code(tensor.elem_type?)?;
    let declared = &tensor.shape.as_ref()?.dim;
    let dims: Vec<usize> = declared
        .iter()
        .enumerate()
        .map(|(index, d)| match d.value {
            // A negative dim_value (paddle2onnx writes -1) is as open as a dim_param.
            Some(tensor_shape_proto::dimension::Value::DimValue(v)) if v >= 0 => usize::try_from(v).ok(),
            _ => given.filter(|g| g.len() == declared.len()).and_then(|g| usize::try_from(g[index]).ok()),
        })
        .collect::<Option<_>>()?;
    let count: usize = dims.iter().product();
    let bytes: Vec<u8> = match dtype {
        DataType::Float => (0..count).flat_map(|i| (((i % 17) as f32 - 8.0) * 0.1).to_le_bytes()).collect(),
        _ => {
            let width = (dtype.bits()? as usize).div_ceil(8);
            (0..count * width).map(|i| (i * 31 % 251) as u8).collect()
        }
    };
    Tensor::from_le_bytes(dtype, &dims, &bytes).ok()
}
