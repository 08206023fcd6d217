//! Operators whose output is made rather than transformed: Constant (every
//! value_* form), ConstantOfShape, Shape (start/end from opset 15), Size,
//! Range, NonZero. These are where shape computations start, so each records
//! its output's elements when they are small.

use super::context::{NodeView, OutputFacts};
use super::partial::{Element, PartialTensor};
use crate::ir::dtype::DataType;
use crate::ir::shape::{Dim, Shape};
use crate::ir::tensor;
use crate::ir::AttributeList;

/// Constant: `value`, `sparse_value`, `value_float(s)`, `value_int(s)`, `value_string(s)`.
pub(super) fn constant(view: &NodeView) -> Vec<OutputFacts> {
    let node = view.node;
    let facts = if let Some(value) = node.attr_tensor("value") {
        let dims = value.dims.iter().map(|&d| super::dims::dim_from_number(d)).collect();
        OutputFacts::new(tensor::dtype(value), Some(Shape(dims))).or_value(PartialTensor::from_tensor(value))
    } else if let Some(sparse) = node.attribute("sparse_value").and_then(|a| a.sparse_tensor.as_ref()) {
        let dtype = sparse.values.as_ref().and_then(tensor::dtype);
        OutputFacts::new(dtype, Some(Shape(sparse.dims.iter().map(|&d| super::dims::dim_from_number(d)).collect())))
    } else if let Some(value) = view.attr_float("value_float") {
        OutputFacts::with_value(Some(DataType::Float), PartialTensor::scalar(Element::Float(f64::from(value))))
    } else if let Some(value) = view.attr_int("value_int") {
        OutputFacts::with_value(Some(DataType::Int64), PartialTensor::scalar(Element::Int(value)))
    } else if let Some(attribute) = node.attribute("value_floats") {
        let elements = attribute.floats.iter().map(|&v| Element::Float(f64::from(v))).collect();
        vector_facts(DataType::Float, attribute.floats.len(), elements)
    } else if let Some(attribute) = node.attribute("value_ints") {
        let elements = attribute.ints.iter().map(|&v| Element::Int(v)).collect();
        vector_facts(DataType::Int64, attribute.ints.len(), elements)
    } else if node.attribute("value_string").is_some() {
        OutputFacts::new(Some(DataType::String), Some(Shape(Vec::new())))
    } else if let Some(attribute) = node.attribute("value_strings") {
        OutputFacts::new(Some(DataType::String), Some(Shape::known(&[attribute.strings.len() as i64])))
    } else {
        OutputFacts::default()
    };
    vec![facts]
}

fn vector_facts(dtype: DataType, len: usize, elements: Vec<Element>) -> OutputFacts {
    OutputFacts::new(Some(dtype), Some(Shape::known(&[len as i64]))).or_value(PartialTensor::vector(elements))
}

/// ConstantOfShape: the shape is input 0's elements; dtype and fill from `value` (default float 0).
pub(super) fn constant_of_shape(view: &NodeView) -> Vec<OutputFacts> {
    let fill = view.node.attr_tensor("value");
    let dtype = fill.map_or(Some(DataType::Float), tensor::dtype);
    let fill_element = match fill {
        Some(fill) => {
            PartialTensor::from_tensor(fill).and_then(|v| v.elements.first().cloned()).unwrap_or(Element::Unknown)
        }
        None => Element::Float(0.0),
    };
    let shape = view.shape_operand(0).map(|target| target.to_shape());
    let value = shape.as_ref().and_then(|s| PartialTensor::filled(s, fill_element));
    vec![OutputFacts::new(dtype, shape).or_value(value)]
}

/// Shape: the input's dims (or the `start..end` range of them, opset 15) as int64 elements.
pub(super) fn shape_of(view: &NodeView) -> Vec<OutputFacts> {
    let Some(data) = view.input_shape(0) else {
        return vec![OutputFacts::new(Some(DataType::Int64), None)];
    };
    let rank = data.rank() as i64;
    // Negative bounds count from the end; both are clamped to [0, rank].
    let clamp = |bound: i64| (if bound < 0 { bound.saturating_add(rank) } else { bound }).clamp(0, rank);
    let (start, end) = if view.opset >= 15 {
        (clamp(view.attr_int_or("start", 0)), clamp(view.attr_int_or("end", rank)))
    } else {
        (0, rank)
    };
    let picked: &[Dim] = if start < end { &data.0[start as usize..end as usize] } else { &[] };
    let value = PartialTensor::vector(picked.iter().map(Element::from_dim).collect());
    let shape = Shape::known(&[picked.len() as i64]);
    vec![OutputFacts::new(Some(DataType::Int64), Some(shape)).or_value(value)]
}

/// Size: the element count as an int64 scalar.
pub(super) fn size_of(view: &NodeView) -> Vec<OutputFacts> {
    let element = match view.input_shape(0) {
        Some(data) => Element::from_dim(&super::dims::dim_product(&data.0)),
        None => Element::Unknown,
    };
    vec![OutputFacts::with_value(Some(DataType::Int64), PartialTensor::scalar(element))]
}

/// Range(start, limit, delta): `max(ceil((limit - start) / delta), 0)` elements.
pub(super) fn range(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let scalar =
        |slot: usize| view.input_value(slot).and_then(|v| (v.elements.len() == 1).then(|| v.elements[0].clone()));
    let (start, limit, delta) = (scalar(0), scalar(1), scalar(2));
    let count = match (&start, &limit, &delta) {
        (Some(Element::Int(start)), Some(Element::Int(limit)), Some(Element::Int(delta))) if *delta != 0 => {
            limit.checked_sub(*start).map(|span| {
                let quotient = span / delta;
                let count = if span % delta != 0 && (span > 0) == (*delta > 0) { quotient + 1 } else { quotient };
                count.max(0)
            })
        }
        (Some(start), Some(limit), Some(delta)) => match (start.as_float(), limit.as_float(), delta.as_float()) {
            (Some(start), Some(limit), Some(delta)) if delta != 0.0 => {
                let count = ((limit - start) / delta).ceil().max(0.0);
                (count.is_finite() && count < 9.0e18).then_some(count as i64)
            }
            _ => None,
        },
        _ => None,
    };
    let shape = Shape(vec![count.map_or(Dim::Unknown, Dim::Known)]);
    let value = (|| {
        let count = usize::try_from(count?).ok()?;
        if count > super::partial::MAX_FOLDED_ELEMENTS {
            return None;
        }
        let (start, delta) = (start?, delta?);
        let elements = (0..count)
            .map(|i| match (&start, &delta) {
                (Element::Int(s), Element::Int(d)) => {
                    (i as i64).checked_mul(*d).and_then(|o| o.checked_add(*s)).map_or(Element::Unknown, Element::Int)
                }
                _ => match (start.as_float(), delta.as_float()) {
                    (Some(s), Some(d)) => Element::Float(s + i as f64 * d),
                    _ => Element::Unknown,
                },
            })
            .collect();
        PartialTensor::vector(elements)
    })();
    vec![OutputFacts::new(dtype, Some(shape)).or_value(value)]
}

/// NonZero: `[rank, count]` int64, the count known only at run time.
pub(super) fn non_zero(view: &NodeView) -> Vec<OutputFacts> {
    let shape = view.input_rank(0).map(|rank| Shape(vec![Dim::Known(rank as i64), Dim::Unknown]));
    vec![OutputFacts::new(Some(DataType::Int64), shape)]
}
