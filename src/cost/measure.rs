//! Operator latency measured in the deployment runtime, the way TASO measures
//! operator costs: one single-node model per distinct configuration
//! (operator, attributes, input types and shapes, which inputs are
//! constant), run in ONNX Runtime with full graph optimizations on one
//! thread, timed, and cached by that configuration. The time of running an
//! empty model (session overhead, not the operator's) is subtracted.
//! Extraction uses these numbers where it has them and the device profile's
//! roofline elsewhere.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;

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

/// Runs at least this long (and this many times) per configuration.
const MEASURE_TIME: Duration = Duration::from_millis(30);
const MIN_RUNS: usize = 5;
const MAX_RUNS: usize = 200;

/// Measured latencies, cached by configuration.
pub struct LatencyTable {
    opset: i64,
    cache: HashMap<Vec<u8>, Option<f64>>,
    /// Seconds an empty run costs (subtracted from every measurement).
    overhead: f64,
    pub measured: usize,
}

impl LatencyTable {
    /// A table for models of this default-domain opset; fails when ONNX
    /// Runtime cannot be loaded.
    pub fn new(opset: i64) -> Result<LatencyTable, OrtError> {
        let mut table = LatencyTable { opset, cache: HashMap::new(), overhead: 0.0, measured: 0 };
        let identity = OperatorCall {
            domain: "",
            op_type: "Identity",
            attributes: &[],
            inputs: vec![CallInput::Fed(DataType::Float, vec![1])],
            output: (DataType::Float, vec![1]),
        };
        table.overhead = table.time(&table.model(&identity))?;
        Ok(table)
    }

    /// Seconds one call takes in ONNX Runtime beyond an empty run, or `None`
    /// when the runtime cannot run it alone.
    pub fn latency(&mut self, call: &OperatorCall) -> Option<f64> {
        let model = self.model(call);
        let key = configuration_key(&model);
        if let Some(&known) = self.cache.get(&key) {
            return known;
        }
        let seconds = self.time(&model).ok().map(|t| (t - self.overhead).max(0.0));
        self.measured += 1;
        self.cache.insert(key, seconds);
        seconds
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
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![opset("", self.opset), opset("com.microsoft", 1)],
            graph: Some(graph),
            ..Default::default()
        }
    }

    /// Median seconds per run of a model over its fed inputs.
    fn time(&self, model: &ModelProto) -> Result<f64, OrtError> {
        let label = Path::new("(measured operator)");
        let mut session = OrtSession::from_bytes(&model.encode_to_vec(), label, GraphOptimization::All)?;
        let inputs = filled_inputs(model);
        session.run(&inputs)?;
        let started = Instant::now();
        let mut runs = Vec::new();
        while runs.len() < MAX_RUNS && (runs.len() < MIN_RUNS || started.elapsed() < MEASURE_TIME) {
            let run = Instant::now();
            session.run(&inputs)?;
            runs.push(run.elapsed().as_secs_f64());
        }
        Ok(median(runs))
    }
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// The graph inputs of a model whose input shapes are static, filled by [`filled_tensor`].
fn filled_inputs(model: &ModelProto) -> Vec<NamedTensor> {
    model
        .graph
        .iter()
        .flat_map(|g| &g.input)
        .filter(|input| model.graph.iter().flat_map(|g| &g.initializer).all(|i| i.name != input.name))
        .filter_map(|input| Some(NamedTensor::new(input.name.clone()?, filled_tensor(input)?)))
        .collect()
}

/// Median seconds per run of whole models (labelled), timed side by side:
/// `rounds` rounds, each running every model once in turn, after one warm-up
/// run each. Inputs are filled from each model's (static) input declarations.
/// A model ONNX Runtime cannot load or run gets its error instead of a time.
pub fn time_models(models: &[(String, ModelProto)], rounds: usize) -> Vec<Result<f64, OrtError>> {
    let mut sessions: Vec<Result<(OrtSession, Vec<NamedTensor>), OrtError>> = models
        .iter()
        .map(|(label, model)| {
            let mut session = OrtSession::from_bytes(&model.encode_to_vec(), Path::new(label), GraphOptimization::All)?;
            let inputs = filled_inputs(model);
            session.run(&inputs)?;
            Ok((session, inputs))
        })
        .collect();
    let mut runs: Vec<Result<Vec<f64>, OrtError>> =
        sessions.iter().map(|s| s.as_ref().map(|_| Vec::new()).map_err(Clone::clone)).collect();
    for _ in 0..rounds.max(1) {
        for (session, times) in sessions.iter_mut().zip(&mut runs) {
            let (Ok((session, inputs)), Ok(list)) = (session, times.as_mut()) else { continue };
            let run = Instant::now();
            match session.run(inputs) {
                Ok(_) => list.push(run.elapsed().as_secs_f64()),
                Err(error) => *times = Err(error),
            }
        }
    }
    runs.into_iter().map(|times| times.map(median)).collect()
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

/// An input filled with small, varied values (floats in [−0.8, 0.8], bytes cycling).
fn filled_tensor(input: &ValueInfoProto) -> Option<Tensor> {
    let Some(type_proto::Value::TensorType(tensor)) = input.r#type.as_ref()?.value.as_ref() else { return None };
    let dtype = DataType::from_code(tensor.elem_type?)?;
    let dims: Vec<usize> = tensor
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(tensor_shape_proto::dimension::Value::DimValue(v)) => usize::try_from(v).ok(),
            _ => None,
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
