//! Constant folding: an operator whose inputs are all constant is run once, at
//! compile time, by the embedded evaluator (so its semantics are the
//! runtime's, for every operator tract knows), and its output becomes an
//! initializer. Also reads the tensor a `Constant` node holds, and the shape
//! a `Shape` node reports on a statically shaped input.

use crate::eval::{Evaluator, EvaluatorBuilder};
use crate::ir::{tensor, Shape};
use crate::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};

/// The model facts an operator's meaning depends on.
#[derive(Clone, Debug, Default)]
pub struct OpsetContext {
    pub ir_version: i64,
    pub opset_import: Vec<OperatorSetIdProto>,
}

/// Runs one operator on constant inputs (`None`: omitted optional input) and
/// returns its first output.
pub fn evaluate_operator(
    context: &OpsetContext,
    domain: &str,
    op_type: &str,
    attributes: &[AttributeProto],
    inputs: &[Option<&TensorProto>],
) -> Result<TensorProto, String> {
    let mut initializers = Vec::new();
    let mut names = Vec::new();
    for (position, input) in inputs.iter().enumerate() {
        match input {
            Some(tensor) => {
                let name = format!("in{position}");
                let mut tensor = (*tensor).clone();
                tensor.name = Some(name.clone());
                initializers.push(tensor);
                names.push(name);
            }
            None => names.push(String::new()),
        }
    }
    let node = NodeProto {
        input: names,
        output: vec!["out".into()],
        op_type: Some(op_type.into()),
        domain: (!domain.is_empty()).then(|| domain.to_string()),
        attribute: attributes.to_vec(),
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(context.ir_version.max(3)),
        opset_import: context.opset_import.clone(),
        graph: Some(GraphProto {
            name: Some("fold".into()),
            node: vec![node],
            initializer: initializers,
            output: vec![ValueInfoProto { name: Some("out".into()), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let evaluator: Evaluator = EvaluatorBuilder::new()
        .build_from_model(&model, &format!("folding {op_type}"))
        .map_err(|error| error.to_string())?;
    let mut outputs = evaluator.run(&[]).map_err(|error| error.to_string())?;
    if outputs.is_empty() {
        return Err(format!("{op_type} produced no output"));
    }
    let output = outputs.swap_remove(0);
    output.tensor.to_proto("").map_err(|error| error.to_string())
}

/// The tensor a `Constant` node outputs, from its one attribute (sparse and
/// string constants are left to the runtime).
pub fn constant_node_tensor(attributes: &[AttributeProto]) -> Option<TensorProto> {
    let attribute = attributes.first()?;
    if attributes.len() != 1 {
        return None;
    }
    match attribute.name.as_deref()? {
        "value" => {
            let tensor = attribute.t.clone()?;
            // Keep only numeric tensors whose data is present.
            tensor::raw_bytes(&tensor)?;
            Some(tensor)
        }
        "value_float" => Some(tensor::from_f32("", &[], &[attribute.f?])),
        "value_floats" => Some(tensor::from_f32("", &[attribute.floats.len() as i64], &attribute.floats)),
        "value_int" => Some(tensor::from_i64("", &[], &[attribute.i?])),
        "value_ints" => Some(tensor::from_i64("", &[attribute.ints.len() as i64], &attribute.ints)),
        _ => None,
    }
}

/// What `Shape` (with its `start`/`end` attributes, opset 15) returns for an
/// input of a fully known shape.
pub fn shape_of(shape: &Shape, attributes: &[AttributeProto]) -> Option<TensorProto> {
    let dims = shape.as_known()?;
    let rank = dims.len() as i64;
    let attribute = |name: &str| attributes.iter().find(|a| a.name.as_deref() == Some(name)).and_then(|a| a.i);
    let clamp = |index: i64| (if index < 0 { index + rank } else { index }).clamp(0, rank) as usize;
    let start = clamp(attribute("start").unwrap_or(0));
    let end = clamp(attribute("end").unwrap_or(rank));
    let slice = if start < end { &dims[start..end] } else { &[] };
    Some(tensor::from_i64("", &[slice.len() as i64], slice))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Dim;

    fn opset(version: i64) -> OpsetContext {
        OpsetContext {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(version) }],
        }
    }

    #[test]
    fn gathers_and_concats_fold_in_the_evaluator() {
        let data = tensor::from_i64("", &[4], &[1, 3, 224, 224]);
        let index = tensor::from_i64("", &[], &[0]);
        let gathered = evaluate_operator(&opset(13), "", "Gather", &[], &[Some(&data), Some(&index)]).unwrap();
        assert_eq!(tensor::to_i64(&gathered), Some(vec![1]));
        assert!(gathered.dims.is_empty(), "a scalar index gathers a scalar");
        let minus = tensor::from_i64("", &[1], &[-1]);
        let axis = AttributeProto { name: Some("axis".into()), i: Some(0), r#type: Some(2), ..Default::default() };
        let joined = evaluate_operator(&opset(13), "", "Concat", &[axis], &[Some(&data), Some(&minus)]).unwrap();
        assert_eq!(tensor::to_i64(&joined), Some(vec![1, 3, 224, 224, -1]));
        assert!(evaluate_operator(&opset(13), "", "NoSuchOp", &[], &[Some(&data)]).is_err());
    }

    #[test]
    fn shape_respects_start_and_end() {
        let shape = Shape(vec![Dim::Known(1), Dim::Known(3), Dim::Known(8)]);
        let start = AttributeProto { name: Some("start".into()), i: Some(-2), r#type: Some(2), ..Default::default() };
        assert_eq!(tensor::to_i64(&shape_of(&shape, &[start]).unwrap()), Some(vec![3, 8]));
        assert!(shape_of(&Shape(vec![Dim::Symbol("N".into())]), &[]).is_none());
    }
}
