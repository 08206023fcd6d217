//! Operators that move or select elements without computing new ones:
//! Reshape (0 and -1, allowzero), Flatten, Transpose, Squeeze/Unsqueeze,
//! Concat, Split, Slice, Pad, Expand, Tile, Gather and its relatives,
//! DepthToSpace/SpaceToDepth. Where an operand moved from an attribute to an
//! input across opsets, both forms are read. Partial values are carried
//! through all of them that shape computations use.

use super::context::{IntList, NodeView, OutputFacts, ShapeOperand};
use super::dims::{
    broadcast_shapes, dim_divided, dim_plus, dim_product, dim_sum, dim_times, normalize_axes, normalize_axis,
    unify_dims, unknown_shape, MAX_RANK,
};
use super::partial::{known_usize_dims, Element, PartialTensor, MAX_FOLDED_ELEMENTS};
use crate::ir::shape::{Dim, Shape};

/// Reshape: `0` copies the input dim (unless `allowzero`, opset 14), one `-1`
/// is inferred from the element count, cancelling matching symbols.
pub(super) fn reshape(view: &NodeView) -> Vec<OutputFacts> {
    let allow_zero = view.opset >= 14 && view.attr_int_or("allowzero", 0) != 0;
    let data = view.input_shape(0);
    let shape = view.shape_operand(1).map(|target| match target {
        ShapeOperand::Elements(elements) => reshaped_shape(data, &elements, allow_zero),
        ShapeOperand::Rank(rank) => unknown_shape(rank),
    });
    vec![reshaped_facts(view, shape)]
}

/// The output shape of Reshape(data, target).
fn reshaped_shape(data: Option<&Shape>, target: &[Element], allow_zero: bool) -> Shape {
    let mut dims = Vec::with_capacity(target.len());
    let mut inferred: Vec<usize> = Vec::new();
    let mut unresolved: Vec<usize> = Vec::new();
    for (index, element) in target.iter().enumerate() {
        match element {
            Element::Int(0) if !allow_zero => {
                dims.push(data.and_then(|d| d.0.get(index)).cloned().unwrap_or(Dim::Unknown));
            }
            Element::Int(-1) => {
                inferred.push(index);
                dims.push(Dim::Unknown);
            }
            Element::Int(value) if *value >= 0 => dims.push(Dim::Known(*value)),
            Element::Symbol(name) => dims.push(Dim::Symbol(name.clone())),
            _ => {
                unresolved.push(index);
                dims.push(Dim::Unknown);
            }
        }
    }
    // One -1, or (without -1) one element we could not evaluate, is whatever
    // makes the element count match; either way the count decides it.
    let solve_for = match (inferred.as_slice(), unresolved.as_slice()) {
        ([index], []) => Some(*index),
        ([], [index]) => Some(*index),
        _ => None,
    };
    if let (Some(index), Some(data)) = (solve_for, data) {
        dims[index] = missing_factor(&data.0, &dims, index);
    }
    Shape(dims)
}

/// The dim at `skip` that makes the product of `dims` equal the product of `total`.
fn missing_factor(total: &[Dim], dims: &[Dim], skip: usize) -> Dim {
    let mut numerator: Vec<&Dim> = total.iter().collect();
    let mut denominator: i64 = 1;
    for (index, dim) in dims.iter().enumerate() {
        if index == skip {
            continue;
        }
        match dim {
            Dim::Known(value) => match denominator.checked_mul(*value) {
                Some(product) => denominator = product,
                None => return Dim::Unknown,
            },
            Dim::Symbol(_) => match numerator.iter().position(|d| *d == dim) {
                Some(position) => {
                    numerator.remove(position);
                }
                None => return Dim::Unknown,
            },
            Dim::Unknown => return Dim::Unknown,
        }
    }
    match dim_product(numerator) {
        Dim::Known(count) if denominator > 0 && count % denominator == 0 => Dim::Known(count / denominator),
        Dim::Symbol(name) if denominator == 1 => Dim::Symbol(name),
        _ => Dim::Unknown,
    }
}

/// Flatten to 2-D at `axis` (default 1; negative from opset 11).
pub(super) fn flatten(view: &NodeView) -> Vec<OutputFacts> {
    let shape = view.input_shape(0).and_then(|data| {
        let rank = data.rank();
        let axis = view.attr_int_or("axis", 1);
        let axis = if axis == rank as i64 { rank } else { normalize_axis(axis, rank)? };
        Some(Shape(vec![dim_product(&data.0[..axis]), dim_product(&data.0[axis..])]))
    });
    vec![reshaped_facts(view, shape)]
}

/// Transpose by `perm` (default: reverse the axes).
pub(super) fn transpose(view: &NodeView) -> Vec<OutputFacts> {
    let perm = view.input_rank(0).and_then(|rank| {
        let perm: Vec<i64> = match view.attr_ints("perm") {
            Some(perm) if !perm.is_empty() => perm.to_vec(),
            _ => (0..rank as i64).rev().collect(),
        };
        if perm.len() != rank {
            return None;
        }
        normalize_axes(&perm, rank)
    });
    let shape = match (&perm, view.input_shape(0)) {
        (Some(perm), Some(data)) => Some(Shape(perm.iter().map(|&axis| data.0[axis].clone()).collect())),
        _ => None,
    };
    let value = match (&perm, view.input_value(0)) {
        (Some(perm), Some(input)) => input.transpose(perm),
        _ => None,
    };
    vec![OutputFacts::new(view.input_dtype(0), shape).or_value(value)]
}

/// Squeeze (axes attribute before opset 13, input from 13; none: every dim of size 1).
pub(super) fn squeeze(view: &NodeView) -> Vec<OutputFacts> {
    let shape = view.input_shape(0).and_then(|data| {
        let removed: Vec<usize> = match view.int_list_operand("axes", 1, 13) {
            IntList::Known(axes) if !axes.is_empty() => normalize_axes(&axes, data.rank())?,
            IntList::Known(_) | IntList::Absent => {
                if data.0.iter().any(|d| d.known().is_none()) {
                    return None;
                }
                (0..data.rank()).filter(|&axis| data.0[axis] == Dim::Known(1)).collect()
            }
            IntList::Unknown => return None,
        };
        if removed.iter().any(|&axis| matches!(data.0[axis], Dim::Known(size) if size != 1)) {
            return None;
        }
        Some(Shape((0..data.rank()).filter(|axis| !removed.contains(axis)).map(|axis| data.0[axis].clone()).collect()))
    });
    vec![reshaped_facts(view, shape)]
}

/// Unsqueeze (axes attribute before opset 13, input from 13), axes counted in the output.
pub(super) fn unsqueeze(view: &NodeView) -> Vec<OutputFacts> {
    let shape = view.input_shape(0).and_then(|data| {
        let IntList::Known(axes) = view.int_list_operand("axes", 1, 13) else { return None };
        let rank = data.rank().checked_add(axes.len()).filter(|&r| r <= MAX_RANK)?;
        let inserted = normalize_axes(&axes, rank)?;
        let mut remaining = data.0.iter();
        let dims = (0..rank)
            .map(|axis| if inserted.contains(&axis) { Some(Dim::Known(1)) } else { remaining.next().cloned() })
            .collect::<Option<Vec<Dim>>>()?;
        Some(Shape(dims))
    });
    vec![reshaped_facts(view, shape)]
}

/// Facts for an output that holds input 0's elements under a new shape.
fn reshaped_facts(view: &NodeView, shape: Option<Shape>) -> OutputFacts {
    let value = match (&shape, view.input_value(0)) {
        (Some(shape), Some(input)) => known_usize_dims(shape).and_then(|dims| input.reshaped(dims)),
        _ => None,
    };
    OutputFacts::new(view.input_dtype(0), shape).or_value(value)
}

/// Concat along `axis`.
pub(super) fn concat(view: &NodeView) -> Vec<OutputFacts> {
    let slots: Vec<usize> = (0..view.input_count()).filter(|&s| view.has_input(s)).collect();
    let dtype = slots.iter().find_map(|&s| view.input_dtype(s));
    let rank = slots.iter().find_map(|&s| view.input_rank(s));
    let axis = rank.and_then(|rank| normalize_axis(view.attr_int("axis")?, rank));
    let (Some(rank), Some(axis)) = (rank, axis) else { return vec![OutputFacts::new(dtype, None)] };
    let shapes: Vec<Option<&Shape>> = slots.iter().map(|&s| view.input_shape(s)).collect();
    if shapes.iter().flatten().any(|s| s.rank() != rank) {
        return vec![OutputFacts::new(dtype, None)];
    }
    let dims: Vec<Dim> = (0..rank)
        .map(|index| {
            if index == axis {
                let along: Option<Vec<&Dim>> = shapes.iter().map(|s| s.map(|s| &s.0[index])).collect();
                along.map_or(Dim::Unknown, dim_sum)
            } else {
                unify_dims(shapes.iter().flatten().map(|s| &s.0[index]))
            }
        })
        .collect();
    let value = (|| {
        let values: Vec<_> = slots.iter().map(|&s| view.input_value(s)).collect::<Option<_>>()?;
        let parts: Vec<&PartialTensor> = values.iter().map(|v| v.as_ref()).collect();
        PartialTensor::concat(&parts, axis)
    })();
    vec![OutputFacts::new(dtype, Some(Shape(dims))).or_value(value)]
}

/// Split along `axis`: sizes from the `split` attribute (before 13) or input
/// (from 13), else `num_outputs` (18), else equal parts.
pub(super) fn split(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let Some(data) = view.input_shape(0) else { return vec![OutputFacts::new(dtype, None); view.output_count()] };
    let Some(axis) = normalize_axis(view.attr_int_or("axis", 0), data.rank()) else {
        return vec![OutputFacts::new(dtype, None); view.output_count()];
    };
    let parts = view.output_count();
    let sizes: Option<Vec<i64>> = match view.int_list_operand("split", 1, 13) {
        IntList::Known(sizes) if !sizes.is_empty() => (sizes.len() == parts).then_some(sizes),
        IntList::Unknown => None,
        _ => equal_split_sizes(view, &data.0[axis], parts),
    };
    let mut offset = 0i64;
    (0..parts)
        .map(|part| {
            let mut dims = data.0.clone();
            dims[axis] = match &sizes {
                Some(sizes) if sizes[part] >= 0 => Dim::Known(sizes[part]),
                _ => Dim::Unknown,
            };
            let value = (|| {
                let size = usize::try_from(*sizes.as_ref()?.get(part)?).ok()?;
                let start = usize::try_from(offset).ok()?;
                if size > MAX_FOLDED_ELEMENTS {
                    return None;
                }
                let input = view.input_value(0)?;
                input.select(axis, &(start..start.checked_add(size)?).collect::<Vec<_>>())
            })();
            if let Some(size) = sizes.as_ref().and_then(|s| s.get(part)) {
                offset = offset.saturating_add(*size);
            }
            OutputFacts::new(dtype, Some(Shape(dims))).or_value(value)
        })
        .collect()
}

/// Split sizes without an explicit list: `num_outputs` chunks of ceil(dim / n)
/// with a smaller last one (opset 18), or equal parts.
fn equal_split_sizes(view: &NodeView, dim: &Dim, parts: usize) -> Option<Vec<i64>> {
    let size = dim.known()?;
    let count = i64::try_from(parts).ok().filter(|&c| c > 0)?;
    if view.opset >= 18 {
        if let Some(num_outputs) = view.attr_int("num_outputs") {
            if num_outputs != count {
                return None;
            }
            let chunk = size.checked_add(count - 1)? / count;
            let last = size.checked_sub(chunk.checked_mul(count - 1)?)?;
            if last < 0 {
                return None;
            }
            let mut sizes = vec![chunk; parts - 1];
            sizes.push(last);
            return Some(sizes);
        }
    }
    (size % count == 0).then(|| vec![size / count; parts])
}

/// The resolved selection of one sliced axis.
struct AxisSlice {
    start: i64,
    step: i64,
    len: i64,
}

/// Clamps Slice's start/end on a dim of `size` the ONNX way and counts the elements.
fn resolve_slice(size: i64, start: i64, end: i64, step: i64) -> Option<AxisSlice> {
    if step == 0 || size < 0 {
        return None;
    }
    if size == 0 {
        return Some(AxisSlice { start: 0, step, len: 0 });
    }
    let adjust = |v: i64| if v < 0 { v.saturating_add(size) } else { v };
    let (start, end) = (adjust(start), adjust(end));
    let (start, end) = if step > 0 {
        (start.clamp(0, size), end.clamp(0, size))
    } else {
        (start.clamp(0, size - 1), end.clamp(-1, size - 1))
    };
    let span = if step > 0 { end - start } else { start - end };
    let len = if span <= 0 { 0 } else { ((span as u64 - 1) / step.unsigned_abs() + 1) as i64 };
    Some(AxisSlice { start, step, len })
}

/// Slice: starts/ends/axes as attributes before opset 10, inputs (with steps) from 10.
pub(super) fn slice(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let Some(data) = view.input_shape(0) else { return vec![OutputFacts::new(dtype, None)] };
    let rank = data.rank();
    let operands = if view.opset < 10 {
        let starts = view.attr_ints("starts").map(<[i64]>::to_vec);
        let ends = view.attr_ints("ends").map(<[i64]>::to_vec);
        let axes = match view.attr_ints("axes") {
            Some(axes) if !axes.is_empty() => IntList::Known(axes.to_vec()),
            _ => IntList::Absent,
        };
        (starts, ends, axes, IntList::Absent)
    } else {
        let operand = |slot: usize| if view.has_input(slot) { view.input_ints(slot) } else { None };
        let optional = |slot: usize| match (view.has_input(slot), view.input_ints(slot)) {
            (false, _) => IntList::Absent,
            (true, Some(values)) => IntList::Known(values),
            (true, None) => IntList::Unknown,
        };
        (operand(1), operand(2), optional(3), optional(4))
    };
    let (starts, ends, axes, steps) = operands;
    let axes: Option<Vec<usize>> = match axes {
        IntList::Known(axes) => normalize_axes(&axes, rank),
        IntList::Absent => starts.as_ref().map(|s| (0..s.len().min(rank)).collect()),
        IntList::Unknown => None,
    };
    let Some(axes) = axes else {
        // Which axes are sliced is unknown: only the rank survives.
        return vec![OutputFacts::new(dtype, Some(unknown_shape(rank)))];
    };
    let steps: Option<Vec<i64>> = match steps {
        IntList::Known(steps) => Some(steps),
        IntList::Absent => Some(vec![1; axes.len()]),
        IntList::Unknown => None,
    };
    let mut dims = data.0.clone();
    let mut selections: Vec<(usize, AxisSlice)> = Vec::new();
    let operands_known = match (&starts, &ends, &steps) {
        (Some(s), Some(e), Some(t)) => s.len() == axes.len() && e.len() == axes.len() && t.len() == axes.len(),
        _ => false,
    };
    for (position, &axis) in axes.iter().enumerate() {
        if !operands_known {
            dims[axis] = Dim::Unknown;
            continue;
        }
        let (start, end, step) = match (&starts, &ends, &steps) {
            (Some(s), Some(e), Some(t)) => (s[position], e[position], t[position]),
            _ => continue,
        };
        match &data.0[axis] {
            Dim::Known(size) => match resolve_slice(*size, start, end, step) {
                Some(selection) => {
                    dims[axis] = Dim::Known(selection.len);
                    selections.push((axis, selection));
                }
                None => dims[axis] = Dim::Unknown,
            },
            // The whole axis: [0:huge:1] keeps a symbolic dim as it is.
            other if start == 0 && step == 1 && end >= i64::from(i32::MAX) => dims[axis] = other.clone(),
            _ => dims[axis] = Dim::Unknown,
        }
    }
    let value = (|| {
        if !operands_known || selections.len() != axes.len() {
            return None;
        }
        let mut value = view.input_value(0)?.into_owned();
        for (axis, selection) in &selections {
            if selection.len > MAX_FOLDED_ELEMENTS as i64 {
                return None;
            }
            let picks: Vec<usize> = (0..selection.len)
                .map(|i| usize::try_from(selection.start + i * selection.step).ok())
                .collect::<Option<_>>()?;
            value = value.select(*axis, &picks)?;
        }
        Some(value)
    })();
    vec![OutputFacts::new(dtype, Some(Shape(dims))).or_value(value)]
}

/// Pad: pads as attribute before opset 11, input from 11, with an `axes`
/// input from 18; negative pads crop.
pub(super) fn pad(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let shape = view.input_shape(0).and_then(|data| {
        let rank = data.rank();
        let pads = match view.int_list_operand("pads", 1, 11) {
            IntList::Known(pads) => pads,
            IntList::Absent => vec![0; 2 * rank],
            IntList::Unknown => return Some(unknown_shape(rank)),
        };
        let axes: Vec<usize> = if view.opset >= 18 && view.has_input(3) {
            match view.input_ints(3) {
                Some(axes) => normalize_axes(&axes, rank)?,
                None => return Some(unknown_shape(rank)),
            }
        } else {
            (0..rank).collect()
        };
        if pads.len() != 2 * axes.len() {
            return None;
        }
        let mut dims = data.0.clone();
        for (position, &axis) in axes.iter().enumerate() {
            let total = pads[position].checked_add(pads[position + axes.len()]);
            dims[axis] = total.map_or(Dim::Unknown, |total| dim_plus(&data.0[axis], total));
        }
        Some(Shape(dims))
    });
    vec![OutputFacts::new(dtype, shape)]
}

/// Expand: multidirectional broadcast of the input against the target shape.
pub(super) fn expand(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let target = view.shape_operand(1).map(|target| target.to_shape());
    let shape = match (view.input_shape(0), &target) {
        (Some(data), Some(target)) => Some(broadcast_shapes([data, target])),
        (None, Some(target)) => Some(unknown_shape(target.rank())),
        _ => None,
    };
    let value = (|| {
        let input = view.input_value(0)?;
        input.expanded_to(shape.as_ref()?)
    })();
    vec![OutputFacts::new(dtype, shape).or_value(value)]
}

/// Tile: each dim times its repeat count.
pub(super) fn tile(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let shape = view.input_shape(0).map(|data| match view.input_ints(1) {
        Some(repeats) if repeats.len() == data.rank() => {
            Shape(data.0.iter().zip(&repeats).map(|(dim, &times)| dim_times(dim, times)).collect())
        }
        _ => unknown_shape(data.rank()),
    });
    vec![OutputFacts::new(dtype, shape)]
}

/// Gather along `axis`: data[:axis] + indices + data[axis+1:].
pub(super) fn gather(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let axis = view.input_rank(0).and_then(|rank| normalize_axis(view.attr_int_or("axis", 0), rank));
    let shape = match (view.input_shape(0), view.input_shape(1), axis) {
        (Some(data), Some(indices), Some(axis)) => {
            let mut dims = data.0[..axis].to_vec();
            dims.extend(indices.0.iter().cloned());
            dims.extend(data.0[axis + 1..].iter().cloned());
            (dims.len() <= MAX_RANK).then_some(Shape(dims))
        }
        _ => None,
    };
    let value = (|| view.input_value(0)?.gather(axis?, view.input_value(1)?.as_ref()))();
    vec![OutputFacts::new(dtype, shape).or_value(value)]
}

/// GatherElements: the indices' shape.
pub(super) fn gather_elements(view: &NodeView) -> Vec<OutputFacts> {
    vec![OutputFacts::new(view.input_dtype(0), view.input_shape(1).cloned())]
}

/// GatherND: indices[:-1] + data[batch_dims + indices[-1]:].
pub(super) fn gather_nd(view: &NodeView) -> Vec<OutputFacts> {
    let shape = (|| {
        let data = view.input_shape(0)?;
        let indices = view.input_shape(1)?;
        let depth = usize::try_from(indices.0.last()?.known()?).ok()?;
        let batch = usize::try_from(view.attr_int_or("batch_dims", 0)).ok()?;
        let mut dims = indices.0[..indices.rank() - 1].to_vec();
        dims.extend(data.0.get(batch.checked_add(depth)?..)?.iter().cloned());
        Some(Shape(dims))
    })();
    vec![OutputFacts::new(view.input_dtype(0), shape)]
}

/// DepthToSpace (`to_space`) and SpaceToDepth on NCHW with `blocksize`.
pub(super) fn depth_space(view: &NodeView, to_space: bool) -> Vec<OutputFacts> {
    let shape = view.input_shape(0).filter(|s| s.rank() == 4).and_then(|data| {
        let block = view.attr_int("blocksize").filter(|&b| b > 0)?;
        let area = block.checked_mul(block)?;
        let [n, c, h, w] = [&data.0[0], &data.0[1], &data.0[2], &data.0[3]];
        Some(Shape(if to_space {
            vec![n.clone(), dim_divided(c, area), dim_times(h, block), dim_times(w, block)]
        } else {
            vec![n.clone(), dim_times(c, area), dim_divided(h, block), dim_divided(w, block)]
        }))
    });
    vec![OutputFacts::new(view.input_dtype(0), shape)]
}
