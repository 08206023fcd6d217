//! Reductions: ReduceMean/Sum/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare
//! (axes attribute before the opset that made it an input: 13 for ReduceSum,
//! 18 for the rest; keepdims; noop_with_empty_axes), ArgMax/ArgMin and TopK.
//! Reductions of a whole small tensor are folded (ReduceProd of a shape slice
//! is how some exporters compute a flattened size).

use super::context::{IntList, NodeView, OutputFacts};
use super::dims::{normalize_axes, normalize_axis, unknown_shape};
use super::elementwise::{combine, Arithmetic};
use super::partial::{Element, PartialTensor};
use crate::ir::dtype::DataType;
use crate::ir::shape::{Dim, Shape};

/// How a reduction folds its elements, when it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reduction {
    Sum,
    Prod,
    Max,
    Min,
    /// Shapes only.
    Other,
}

/// A Reduce* operator whose axes became an input at opset `axes_input_since`.
pub(super) fn reduce(view: &NodeView, axes_input_since: i64, reduction: Reduction) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let keep_dims = view.attr_int_or("keepdims", 1) != 0;
    let Some(data) = view.input_shape(0) else { return vec![OutputFacts::new(dtype, None)] };
    let rank = data.rank();
    let axes = match view.int_list_operand("axes", 1, axes_input_since) {
        IntList::Known(axes) if !axes.is_empty() => normalize_axes(&axes, rank),
        IntList::Known(_) | IntList::Absent => {
            let noop = view.opset >= axes_input_since && view.attr_int_or("noop_with_empty_axes", 0) != 0;
            if noop {
                return vec![view.like_input(0).or_value(view.input_value(0).map(|v| v.into_owned()))];
            }
            Some((0..rank).collect())
        }
        IntList::Unknown => {
            // Each dim is either kept or becomes 1: known only where it already is 1.
            let shape = keep_dims.then(|| {
                Shape(data.0.iter().map(|d| if *d == Dim::Known(1) { d.clone() } else { Dim::Unknown }).collect())
            });
            return vec![OutputFacts::new(dtype, shape)];
        }
    };
    let Some(axes) = axes else { return vec![OutputFacts::new(dtype, None)] };
    let shape = reduced_shape(data, &axes, keep_dims);
    let value = (|| {
        if axes.len() != rank {
            return None;
        }
        let input = view.input_value(0)?;
        let total = fold_all(&input.elements, reduction)?;
        PartialTensor::new(shape.0.iter().map(|_| 1).collect(), vec![total])
    })();
    vec![OutputFacts::new(dtype, Some(shape)).or_value(value)]
}

fn reduced_shape(data: &Shape, axes: &[usize], keep_dims: bool) -> Shape {
    Shape(
        data.0
            .iter()
            .enumerate()
            .filter_map(|(axis, dim)| match (axes.contains(&axis), keep_dims) {
                (false, _) => Some(dim.clone()),
                (true, true) => Some(Dim::Known(1)),
                (true, false) => None,
            })
            .collect(),
    )
}

fn fold_all(elements: &[Element], reduction: Reduction) -> Option<Element> {
    let op = match reduction {
        Reduction::Sum => Arithmetic::Add,
        Reduction::Prod => Arithmetic::Mul,
        Reduction::Max => Arithmetic::Max,
        Reduction::Min => Arithmetic::Min,
        Reduction::Other => return None,
    };
    let (first, rest) = elements.split_first()?;
    Some(rest.iter().fold(first.clone(), |acc, e| combine(op, &acc, e)))
}

/// ArgMax / ArgMin along `axis`: int64 indices.
pub(super) fn arg_reduce(view: &NodeView) -> Vec<OutputFacts> {
    let keep_dims = view.attr_int_or("keepdims", 1) != 0;
    let shape = view.input_shape(0).and_then(|data| {
        let axis = normalize_axis(view.attr_int_or("axis", 0), data.rank())?;
        Some(reduced_shape(data, &[axis], keep_dims))
    });
    vec![OutputFacts::new(Some(DataType::Int64), shape)]
}

/// TopK: values and int64 indices, the axis dim becoming K (attribute before opset 10, input from 10).
pub(super) fn top_k(view: &NodeView) -> Vec<OutputFacts> {
    let shape = view.input_shape(0).map(|data| {
        let Some(axis) = normalize_axis(view.attr_int_or("axis", -1), data.rank()) else {
            return unknown_shape(data.rank());
        };
        let k = if view.opset < 10 {
            view.attr_int("k")
        } else {
            view.input_value(1).and_then(|v| (v.elements.len() == 1).then(|| v.elements[0].as_int()).flatten())
        };
        let mut dims = data.0.clone();
        dims[axis] = k.filter(|&k| k >= 0).map_or(Dim::Unknown, Dim::Known);
        Shape(dims)
    });
    vec![OutputFacts::new(view.input_dtype(0), shape.clone()), OutputFacts::new(Some(DataType::Int64), shape)]
}
