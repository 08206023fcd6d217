//! Resize (signatures of opsets 10, 11, 13, 18 and 19: scales or sizes, roi
//! for tf_crop_and_resize, `axes` and `keep_aspect_ratio_policy`) and the
//! older Upsample (scales attribute before opset 9, input from 9). Output
//! sizes are computed in f32 and truncated, as runtimes do.

use super::context::{NodeView, OutputFacts, ShapeOperand};
use super::dims::{normalize_axes, unknown_shape};
use super::partial::Element;
use crate::ir::shape::{Dim, Shape};

/// `floor(size * factor)` computed in f32; a symbol survives a factor of 1.
fn scaled_dim(dim: &Dim, factor: f32) -> Dim {
    match dim {
        Dim::Known(size) => {
            let scaled = (*size as f32 * factor).floor();
            if (0.0..9.0e18).contains(&scaled) {
                Dim::Known(scaled as i64)
            } else {
                Dim::Unknown
            }
        }
        Dim::Symbol(_) if factor == 1.0 => dim.clone(),
        _ => Dim::Unknown,
    }
}

/// Resize.
pub(super) fn resize(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let shape = view.input_shape(0).and_then(|data| resized_shape(view, data));
    vec![OutputFacts::new(dtype, shape)]
}

fn resized_shape(view: &NodeView, data: &Shape) -> Option<Shape> {
    let rank = data.rank();
    let (roi_slot, scales_slot, sizes_slot) = if view.opset < 11 { (None, 1, None) } else { (Some(1), 2, Some(3)) };
    let axes: Vec<usize> = match view.attr_ints("axes").filter(|a| view.opset >= 18 && !a.is_empty()) {
        Some(axes) => normalize_axes(axes, rank)?,
        None => (0..rank).collect(),
    };
    let mut dims = data.0.clone();
    let mark_unknown = |mut dims: Vec<Dim>| {
        axes.iter().for_each(|&axis| dims[axis] = Dim::Unknown);
        Some(Shape(dims))
    };

    if let Some(slot) = sizes_slot.filter(|&s| view.has_input(s)) {
        // An empty sizes tensor means "use the scales".
        match view.shape_operand(slot) {
            Some(ShapeOperand::Elements(sizes)) if !sizes.is_empty() => {
                if sizes.len() != axes.len() {
                    return None;
                }
                return Some(Shape(sized_dims(view, data, &axes, &sizes)));
            }
            Some(ShapeOperand::Elements(_) | ShapeOperand::Rank(0)) => {}
            Some(ShapeOperand::Rank(_)) | None => return mark_unknown(dims),
        }
    }

    if !view.has_input(scales_slot) {
        return mark_unknown(dims);
    }
    let Some(scales) = view.input_floats(scales_slot) else { return mark_unknown(dims) };
    if scales.len() != axes.len() {
        return Some(unknown_shape(rank));
    }
    let crop = view.attr_string("coordinate_transformation_mode").as_deref() == Some("tf_crop_and_resize");
    let roi = match roi_slot {
        Some(slot) if crop => match view.input_floats(slot) {
            Some(roi) if roi.len() == 2 * axes.len() => Some(roi),
            _ => return mark_unknown(dims),
        },
        _ => None,
    };
    for (position, &axis) in axes.iter().enumerate() {
        let mut factor = scales[position] as f32;
        if let Some(roi) = &roi {
            factor *= (roi[position + axes.len()] - roi[position]) as f32;
        }
        dims[axis] = scaled_dim(&data.0[axis], factor);
    }
    Some(Shape(dims))
}

/// Output dims from explicit sizes, under `keep_aspect_ratio_policy` (opset 18).
fn sized_dims(view: &NodeView, data: &Shape, axes: &[usize], sizes: &[Element]) -> Vec<Dim> {
    let mut dims = data.0.clone();
    let policy = if view.opset >= 18 { view.attr_string("keep_aspect_ratio_policy") } else { None };
    let keep_larger = match policy.as_deref() {
        Some("not_larger") => false,
        Some("not_smaller") => true,
        _ => {
            for (position, &axis) in axes.iter().enumerate() {
                dims[axis] = sizes[position].to_dim();
            }
            return dims;
        }
    };
    // One scale for all axes, the smallest (not_larger) or largest (not_smaller) ratio.
    let ratios: Option<Vec<f32>> = axes
        .iter()
        .enumerate()
        .map(|(position, &axis)| {
            let wanted = sizes[position].as_int()? as f32;
            let size = data.0[axis].known().filter(|&s| s > 0)? as f32;
            Some(wanted / size)
        })
        .collect();
    let scale =
        ratios.and_then(|ratios| ratios.into_iter().reduce(|a, b| if keep_larger { a.max(b) } else { a.min(b) }));
    for &axis in axes {
        dims[axis] = match (scale, data.0[axis].known()) {
            (Some(scale), Some(size)) => {
                let rounded = (scale * size as f32).round();
                if rounded.is_finite() && rounded >= 0.0 {
                    Dim::Known(rounded as i64)
                } else {
                    Dim::Unknown
                }
            }
            _ => Dim::Unknown,
        };
    }
    dims
}

/// Upsample: `floor(size * scale)` per axis.
pub(super) fn upsample(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0);
    let shape = view.input_shape(0).map(|data| {
        let scales: Option<Vec<f32>> = if view.opset < 9 {
            view.attr_floats("scales").map(<[f32]>::to_vec)
        } else {
            view.input_floats(1).map(|s| s.into_iter().map(|v| v as f32).collect())
        };
        match scales {
            Some(scales) if scales.len() == data.rank() => {
                Shape(data.0.iter().zip(&scales).map(|(dim, &factor)| scaled_dim(dim, factor)).collect())
            }
            _ => unknown_shape(data.rank()),
        }
    });
    vec![OutputFacts::new(dtype, shape)]
}
