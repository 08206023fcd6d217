//! Shape and dtype inference: walks the graph in topological order and fills
//! in each value's element type and shape from its producer's rule, for the
//! vision operator set at default-domain opsets 9 to 21.
//!
//! Small tensors are evaluated on the side as partial values (elements may be
//! numbers, symbolic dimensions or unknown), so shape computations resolve:
//! a `Shape` of `[N,3,H,W]` yields the elements `N,3,H,W`, which flow through
//! Gather, Slice, Concat, Cast, arithmetic and into Reshape, Expand,
//! ConstantOfShape or Resize. The graph itself is never changed.
//!
//! Inference is best effort. Operators it does not know (any domain) stay
//! opaque and keep the shapes the model declared; an inconsistent model leaves
//! shapes unknown rather than guessed; only a bad `fixed` argument is an
//! error. Computed known dims win over declared symbolic or unknown ones.
//!
//! Rules live one family per submodule: `elementwise` (activations,
//! arithmetic, comparisons, Cast, Clip, Where, Dropout), `conv` (Conv,
//! ConvTranspose, pools), `linalg` (Gemm, MatMul), `normalization`,
//! `layout` (Reshape, Slice, Concat, Split, Squeeze, Gather, Pad, ...),
//! `resize` (Resize, Upsample), `reduce` (Reduce*, ArgMax, TopK),
//! `generators` (Constant, ConstantOfShape, Shape, Range), `quantize`
//! (Q/DQ) and `recurrent` (LSTM/GRU/RNN). `partial` holds the evaluated
//! values, `dims` the dimension arithmetic, `context` the view a rule gets.

mod context;
mod conv;
mod dims;
mod elementwise;
mod generators;
mod layout;
mod linalg;
mod normalization;
mod partial;
mod quantize;
mod recurrent;
mod reduce;
mod resize;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use self::context::{ModelFacts, NodeView, OutputFacts, PartialValues};
use self::elementwise::{Arithmetic, UnaryMap};
use self::reduce::Reduction;
use super::dtype::DataType;
use super::graph::{Graph, Model, ValueId};
use super::shape::{Dim, Shape};
use super::IrError;

/// The default-domain opset assumed when a model imports none.
const DEFAULT_OPSET: i64 = 21;
/// The IR version assumed when a model states none.
const DEFAULT_IR_VERSION: i64 = 10;

/// Infers dtype and shape of every value it can.
///
/// `fixed` gives graph inputs a concrete shape (the CLI's `--input-shape`);
/// it overrides their declared shapes and binds the symbols those declared
/// (every `N` in the model becomes the fixed batch). A name that is not a
/// graph input, a rank that differs from the declared one, a dimension that
/// contradicts a statically known one or a non-positive dimension is an error;
/// nothing is changed then.
pub fn infer(model: &mut Model, fixed: &[(String, Vec<i64>)]) -> Result<(), IrError> {
    let model_facts = ModelFacts {
        opset: model.opset("").unwrap_or(DEFAULT_OPSET),
        ir_version: model.header.ir_version.unwrap_or(DEFAULT_IR_VERSION),
    };
    let graph = &mut model.graph;
    let fixed = resolve_fixed_inputs(graph, fixed)?;
    for value in &mut graph.values {
        value.shape = value.shape.take().and_then(cleaned_shape);
    }
    apply_fixed_inputs(graph, &fixed);
    let Ok(order) = graph.topological_order() else { return Ok(()) };
    let mut partials: PartialValues = vec![None; graph.values.len()];
    for index in order {
        let facts = infer_node(&NodeView::new(graph, index, model_facts, &partials));
        let outputs = graph.node(index).outputs.clone();
        for (output, facts) in outputs.into_iter().zip(facts) {
            if let Some(id) = output {
                record(graph, &mut partials, id, facts);
            }
        }
    }
    Ok(())
}

/// Parses the CLI's `--input-shape NAME=D1,D2,...` (the name may contain `=`;
/// the last one separates it from the dims, which must be positive integers).
pub fn parse_input_shape(spec: &str) -> Result<(String, Vec<i64>), IrError> {
    let Some((name, dims)) = spec.rsplit_once('=') else {
        return Err(IrError::BadInputShape {
            name: spec.to_string(),
            reason: "expected NAME=D1,D2,... (for example x=1,3,224,224)".into(),
        });
    };
    let bad = |reason: String| IrError::BadInputShape { name: name.to_string(), reason };
    if name.is_empty() {
        return Err(IrError::BadInputShape { name: spec.to_string(), reason: "the input name is empty".into() });
    }
    if dims.trim().is_empty() {
        return Err(bad("no dimensions after '='".into()));
    }
    let dims = dims
        .split(',')
        .map(|part| match part.trim().parse::<i64>() {
            Ok(dim) if dim > 0 => Ok(dim),
            _ => Err(bad(format!("'{}' is not a positive integer", part.trim()))),
        })
        .collect::<Result<Vec<i64>, IrError>>()?;
    Ok((name.to_string(), dims))
}

/// A dimension as inference reads it: negative sizes (some exporters write
/// -1) and the anonymous symbol `?` mean unknown.
fn cleaned_dim(dim: &Dim) -> Dim {
    match dim {
        Dim::Known(size) if *size < 0 => Dim::Unknown,
        Dim::Symbol(name) if name.is_empty() || name == "?" => Dim::Unknown,
        _ => dim.clone(),
    }
}

/// A shape with its dims cleaned; `None` for absurd ranks.
fn cleaned_shape(shape: Shape) -> Option<Shape> {
    (shape.rank() <= dims::MAX_RANK).then(|| Shape(shape.0.iter().map(cleaned_dim).collect()))
}

/// Checks `fixed` against the graph inputs and pairs each with its value.
fn resolve_fixed_inputs(graph: &Graph, fixed: &[(String, Vec<i64>)]) -> Result<Vec<(ValueId, Vec<i64>)>, IrError> {
    let mut resolved: Vec<(ValueId, Vec<i64>)> = Vec::new();
    for (name, dims) in fixed {
        let bad = |reason: String| IrError::BadInputShape { name: name.clone(), reason };
        let Some(io) = graph.inputs.iter().find(|io| graph.value(io.value).name == *name) else {
            let known: Vec<&str> = graph
                .inputs
                .iter()
                .map(|io| graph.value(io.value))
                .filter(|value| value.initializer.is_none())
                .map(|value| value.name.as_str())
                .collect();
            return Err(IrError::UnknownInput { name: name.clone(), known: known.join(", ") });
        };
        if let Some((index, dim)) = dims.iter().enumerate().find(|(_, &dim)| dim < 1) {
            return Err(bad(format!("dimension {index} is {dim}; dimensions must be positive")));
        }
        if dims.len() > dims::MAX_RANK {
            return Err(bad(format!("{} dimensions is more than the {} supported", dims.len(), dims::MAX_RANK)));
        }
        if let Some(declared) = &graph.value(io.value).shape {
            if declared.rank() != dims.len() {
                return Err(bad(format!(
                    "the model declares rank {} {declared}, but {} dimensions were given",
                    declared.rank(),
                    dims.len()
                )));
            }
            for (index, (dim, &wanted)) in declared.0.iter().zip(dims).enumerate() {
                if let Dim::Known(size) = cleaned_dim(dim) {
                    if size != wanted {
                        return Err(bad(format!("dimension {index} is {size} in the model {declared}, not {wanted}")));
                    }
                }
            }
        }
        match resolved.iter().find(|(id, _)| *id == io.value) {
            Some((_, earlier)) if earlier != dims => return Err(bad("given twice with different dimensions".into())),
            Some(_) => {}
            None => resolved.push((io.value, dims.clone())),
        }
    }
    Ok(resolved)
}

/// Sets the fixed inputs' shapes and replaces the symbols they declared
/// everywhere in the graph (a symbol fixed to two different sizes stays open).
fn apply_fixed_inputs(graph: &mut Graph, fixed: &[(ValueId, Vec<i64>)]) {
    let mut bindings: BTreeMap<String, Option<i64>> = BTreeMap::new();
    for (id, dims) in fixed {
        if let Some(declared) = &graph.value(*id).shape {
            for (dim, &size) in declared.0.iter().zip(dims) {
                if let Dim::Symbol(name) = dim {
                    let binding = bindings.entry(name.clone()).or_insert(Some(size));
                    if *binding != Some(size) {
                        *binding = None;
                    }
                }
            }
        }
    }
    if bindings.values().any(Option::is_some) {
        for value in &mut graph.values {
            if let Some(shape) = &mut value.shape {
                for dim in &mut shape.0 {
                    if let Dim::Symbol(name) = dim {
                        if let Some(Some(size)) = bindings.get(name.as_str()) {
                            *dim = Dim::Known(*size);
                        }
                    }
                }
            }
        }
    }
    for (id, dims) in fixed {
        graph.value_mut(*id).shape = Some(Shape::known(dims));
    }
}

/// Stores what a rule found about a value, merged with what was declared.
fn record(graph: &mut Graph, partials: &mut PartialValues, id: ValueId, facts: OutputFacts) {
    let value = graph.value_mut(id);
    if let Some(dtype) = facts.dtype {
        value.dtype = Some(dtype);
    }
    if let Some(computed) = facts.shape.and_then(cleaned_shape) {
        value.shape = Some(match value.shape.take() {
            Some(declared) if declared.rank() == computed.rank() => merged_shape(declared, computed),
            _ => computed,
        });
    }
    if let Some(slot) = partials.get_mut(id.0) {
        *slot = facts.value;
    }
}

/// Per dim: computed known, else declared known, else computed symbol, else declared.
fn merged_shape(declared: Shape, computed: Shape) -> Shape {
    Shape(
        declared
            .0
            .into_iter()
            .zip(computed.0)
            .map(|(declared, computed)| match (&declared, &computed) {
                (_, Dim::Known(_)) => computed,
                (Dim::Known(_), _) => declared,
                (_, Dim::Symbol(_)) => computed,
                _ => declared,
            })
            .collect(),
    )
}

/// ONNX Runtime's contrib operators that vision models exported for it use
/// (com.microsoft domain); an empty list for the others.
fn infer_microsoft_node(view: &NodeView) -> Vec<OutputFacts> {
    match view.node.op_type.as_str() {
        // Conv with a fused activation (and optional residual input): Conv's shape rule.
        "FusedConv" => conv::conv(view),
        "Gelu" | "FastGelu" | "BiasGelu" | "QuickGelu" => elementwise::same_as_input(view),
        _ => Vec::new(),
    }
}

/// The rule for one node; an empty list for operators inference does not know.
fn infer_node(view: &NodeView) -> Vec<OutputFacts> {
    use self::elementwise as ew;
    match view.node.domain.as_str() {
        "" | "ai.onnx" => {}
        "com.microsoft" => return infer_microsoft_node(view),
        _ => return Vec::new(),
    }
    match view.node.op_type.as_str() {
        // Shape and dtype of the input.
        "LeakyRelu"
        | "PRelu"
        | "Sigmoid"
        | "HardSigmoid"
        | "HardSwish"
        | "Tanh"
        | "Erf"
        | "Exp"
        | "Log"
        | "Elu"
        | "Selu"
        | "Celu"
        | "Softplus"
        | "Softsign"
        | "ThresholdedRelu"
        | "Mish"
        | "Gelu"
        | "Sin"
        | "Cos"
        | "Tan"
        | "Asin"
        | "Acos"
        | "Atan"
        | "Sinh"
        | "Cosh"
        | "Asinh"
        | "Acosh"
        | "Atanh"
        | "Shrink"
        | "Softmax"
        | "LogSoftmax"
        | "Hardmax"
        | "LRN"
        | "InstanceNormalization"
        | "LpNormalization"
        | "MeanVarianceNormalization"
        | "GroupNormalization"
        | "CumSum"
        | "Trilu"
        | "ScatterND"
        | "ScatterElements"
        | "Scatter"
        | "ReverseSequence"
        | "BitwiseNot" => ew::same_as_input(view),
        "Identity" => ew::identity(view),
        "Relu" => ew::unary(view, UnaryMap::Relu),
        "Neg" => ew::unary(view, UnaryMap::Neg),
        "Abs" => ew::unary(view, UnaryMap::Abs),
        "Floor" => ew::unary(view, UnaryMap::Floor),
        "Ceil" => ew::unary(view, UnaryMap::Ceil),
        "Round" => ew::unary(view, UnaryMap::Round),
        "Sqrt" => ew::unary(view, UnaryMap::Sqrt),
        "Reciprocal" => ew::unary(view, UnaryMap::Reciprocal),
        "Sign" => ew::unary(view, UnaryMap::Sign),
        "Not" => ew::unary(view, UnaryMap::Not),
        "IsNaN" | "IsInf" => ew::same_shape_as_input(view, DataType::Bool),
        "Add" => ew::broadcasting(view, Arithmetic::Add),
        "Sub" => ew::broadcasting(view, Arithmetic::Sub),
        "Mul" => ew::broadcasting(view, Arithmetic::Mul),
        "Div" => ew::broadcasting(view, Arithmetic::Div),
        "Mod" => ew::broadcasting(view, Arithmetic::Mod { fmod: view.attr_int_or("fmod", 0) != 0 }),
        "Pow" => ew::broadcasting(view, Arithmetic::Pow),
        "Max" => ew::broadcasting(view, Arithmetic::Max),
        "Min" => ew::broadcasting(view, Arithmetic::Min),
        "Sum" => ew::broadcasting(view, Arithmetic::Sum),
        "Mean" => ew::broadcasting(view, Arithmetic::Mean),
        "Equal" => ew::broadcasting(view, Arithmetic::Equal),
        "Less" => ew::broadcasting(view, Arithmetic::Less),
        "Greater" => ew::broadcasting(view, Arithmetic::Greater),
        "LessOrEqual" => ew::broadcasting(view, Arithmetic::LessOrEqual),
        "GreaterOrEqual" => ew::broadcasting(view, Arithmetic::GreaterOrEqual),
        "And" => ew::broadcasting(view, Arithmetic::And),
        "Or" => ew::broadcasting(view, Arithmetic::Or),
        "Xor" => ew::broadcasting(view, Arithmetic::Xor),
        "BitShift" | "BitwiseAnd" | "BitwiseOr" | "BitwiseXor" => ew::broadcasting(view, Arithmetic::Opaque),
        "Where" => ew::where_select(view),
        "Cast" => ew::cast(view),
        "CastLike" => ew::cast_like(view),
        "Clip" => ew::clip(view),
        "Dropout" => ew::dropout(view),

        "Conv" => conv::conv(view),
        "QLinearConv" => conv::qlinear_conv(view),
        "ConvInteger" => conv::conv_integer(view),
        "ConvTranspose" => conv::conv_transpose(view),
        "MaxPool" | "AveragePool" | "LpPool" => conv::pool(view),
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => conv::global_pool(view),

        "Gemm" => linalg::gemm(view),
        "MatMul" => linalg::matmul(view),
        "MatMulInteger" => linalg::matmul_integer(view),
        "QLinearMatMul" => linalg::qlinear_matmul(view),

        "BatchNormalization" => normalization::batch_normalization(view),
        "LayerNormalization" => normalization::layer_normalization(view),

        "Reshape" => layout::reshape(view),
        "Flatten" => layout::flatten(view),
        "Transpose" => layout::transpose(view),
        "Squeeze" => layout::squeeze(view),
        "Unsqueeze" => layout::unsqueeze(view),
        "Concat" => layout::concat(view),
        "Split" => layout::split(view),
        "Slice" => layout::slice(view),
        "Pad" => layout::pad(view),
        "Expand" => layout::expand(view),
        "Tile" => layout::tile(view),
        "Gather" => layout::gather(view),
        "GatherElements" => layout::gather_elements(view),
        "GatherND" => layout::gather_nd(view),
        "DepthToSpace" => layout::depth_space(view, true),
        "SpaceToDepth" => layout::depth_space(view, false),

        "Resize" => resize::resize(view),
        "Upsample" => resize::upsample(view),

        "ReduceSum" => reduce::reduce(view, 13, Reduction::Sum),
        "ReduceMax" => reduce::reduce(view, 18, Reduction::Max),
        "ReduceMin" => reduce::reduce(view, 18, Reduction::Min),
        "ReduceProd" => reduce::reduce(view, 18, Reduction::Prod),
        "ReduceMean" | "ReduceL1" | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => {
            reduce::reduce(view, 18, Reduction::Other)
        }
        "ArgMax" | "ArgMin" => reduce::arg_reduce(view),
        "TopK" => reduce::top_k(view),

        "Constant" => generators::constant(view),
        "ConstantOfShape" => generators::constant_of_shape(view),
        "Shape" => generators::shape_of(view),
        "Size" => generators::size_of(view),
        "Range" => generators::range(view),
        "NonZero" => generators::non_zero(view),

        "QuantizeLinear" => quantize::quantize_linear(view),
        "DequantizeLinear" => quantize::dequantize_linear(view),
        "DynamicQuantizeLinear" => quantize::dynamic_quantize_linear(view),

        "LSTM" | "GRU" | "RNN" => recurrent::recurrent(view),
        _ => Vec::new(),
    }
}
