//! Sliding-window operators: Conv (and its quantized forms QLinearConv and
//! ConvInteger), ConvTranspose, MaxPool/AveragePool/LpPool and the global
//! pools. Output sizes follow the ONNX formulas for explicit pads, strides,
//! dilations, `ceil_mode` (a window may not start in the right padding) and
//! `auto_pad` SAME_UPPER / SAME_LOWER / VALID. A symbolic spatial size stays
//! symbolic only where the output provably equals the input (stride 1 and a
//! "same" padding).

use super::context::{NodeView, OutputFacts};
use super::dims::{dim_plus, dim_times, known_non_negative, unknown_shape};
use crate::ir::dtype::DataType;
use crate::ir::shape::{Dim, Shape};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// The sliding-window attributes of one node, one entry per spatial axis.
struct Window {
    /// Kernel size per axis, `None` where not known.
    kernel: Vec<Option<i64>>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    pads_begin: Vec<i64>,
    pads_end: Vec<i64>,
    auto_pad: AutoPad,
    ceil_mode: bool,
}

/// An attribute list of `len` entries, `default` when absent, `None` when of the wrong length.
fn per_axis(view: &NodeView, name: &str, len: usize, default: i64) -> Option<Vec<i64>> {
    match view.attr_ints(name) {
        None => Some(vec![default; len]),
        Some([]) => Some(vec![default; len]),
        Some(values) if values.len() == len => Some(values.to_vec()),
        Some(_) => None,
    }
}

impl Window {
    fn read(view: &NodeView, spatial: usize, kernel: Vec<Option<i64>>) -> Option<Window> {
        let pads = per_axis(view, "pads", 2 * spatial, 0)?;
        let auto_pad = match view.attr_string("auto_pad").as_deref() {
            None | Some("NOTSET") | Some("") => AutoPad::NotSet,
            Some("SAME_UPPER") => AutoPad::SameUpper,
            Some("SAME_LOWER") => AutoPad::SameLower,
            Some("VALID") => AutoPad::Valid,
            Some(_) => return None,
        };
        Some(Window {
            kernel,
            strides: per_axis(view, "strides", spatial, 1)?,
            dilations: per_axis(view, "dilations", spatial, 1)?,
            pads_begin: pads[..spatial].to_vec(),
            pads_end: pads[spatial..].to_vec(),
            auto_pad,
            ceil_mode: view.attr_int_or("ceil_mode", 0) != 0,
        })
    }

    /// The kernel's extent with dilation, `None` when unknown or invalid.
    fn effective_kernel(&self, axis: usize) -> Option<i64> {
        let kernel = self.kernel[axis]?;
        let dilation = self.dilations[axis];
        if kernel < 1 || dilation < 1 {
            return None;
        }
        kernel.checked_sub(1)?.checked_mul(dilation)?.checked_add(1)
    }

    /// Pads of one axis as (begin, end) under `auto_pad`: explicit, or zero for VALID.
    fn explicit_pads(&self, axis: usize) -> (i64, i64) {
        match self.auto_pad {
            AutoPad::Valid => (0, 0),
            _ => (self.pads_begin[axis], self.pads_end[axis]),
        }
    }

    /// Output size of a convolution or pooling along `axis`.
    fn output_dim(&self, axis: usize, input: &Dim) -> Dim {
        let stride = self.strides[axis];
        if stride < 1 {
            return Dim::Unknown;
        }
        if matches!(self.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
            return match input {
                Dim::Known(size) => known_non_negative(Some(div_ceil(*size, stride))),
                _ if stride == 1 => input.clone(),
                _ => Dim::Unknown,
            };
        }
        let Some(kernel) = self.effective_kernel(axis) else { return Dim::Unknown };
        let (begin, end) = self.explicit_pads(axis);
        let Dim::Known(size) = input else {
            // Stride 1: out = in + pads - kernel + 1, which keeps a symbol only when that adds 0.
            return match (stride, begin.checked_add(end).and_then(|p| p.checked_sub(kernel - 1))) {
                (1, Some(offset)) => dim_plus(input, offset),
                _ => Dim::Unknown,
            };
        };
        let Some(padded) = size.checked_add(begin).and_then(|s| s.checked_add(end)) else { return Dim::Unknown };
        let span = match padded.checked_sub(kernel) {
            Some(span) if span >= 0 => span,
            _ => return Dim::Unknown,
        };
        if self.ceil_mode && self.auto_pad == AutoPad::NotSet {
            let Some(mut count) = div_ceil(span, stride).checked_add(1) else { return Dim::Unknown };
            // The last window must start inside the input or the left padding.
            let last_start = (count - 1).checked_mul(stride);
            if matches!((last_start, size.checked_add(begin)), (Some(start), Some(limit)) if start >= limit) {
                count -= 1;
            }
            Dim::Known(count)
        } else {
            known_non_negative((span / stride).checked_add(1))
        }
    }

    /// Output size of a transposed convolution along `axis`.
    fn transposed_output_dim(&self, axis: usize, input: &Dim, output_padding: i64) -> Dim {
        let stride = self.strides[axis];
        if stride < 1 {
            return Dim::Unknown;
        }
        if matches!(self.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
            return dim_times(input, stride);
        }
        let Some(kernel) = self.effective_kernel(axis) else { return Dim::Unknown };
        let (begin, end) = self.explicit_pads(axis);
        // out = stride * (in - 1) + output_padding + kernel - begin - end
        let fixed_part = output_padding.checked_add(kernel).and_then(|v| v.checked_sub(begin)?.checked_sub(end));
        let Some(fixed_part) = fixed_part else { return Dim::Unknown };
        match input {
            Dim::Known(size) => known_non_negative(
                size.checked_sub(1).and_then(|s| s.checked_mul(stride)).and_then(|s| s.checked_add(fixed_part)),
            ),
            _ if stride == 1 => dim_plus(input, fixed_part.saturating_sub(1)),
            _ => Dim::Unknown,
        }
    }
}

fn div_ceil(value: i64, divisor: i64) -> i64 {
    let quotient = value / divisor;
    if value % divisor != 0 && (value > 0) == (divisor > 0) {
        quotient + 1
    } else {
        quotient
    }
}

/// Kernel sizes: the `kernel_shape` attribute, else the weight's spatial dims.
fn kernel_sizes(view: &NodeView, spatial: usize, weight: Option<&Shape>) -> Option<Vec<Option<i64>>> {
    match view.attr_ints("kernel_shape") {
        Some(kernel) if kernel.len() == spatial => Some(kernel.iter().map(|&k| Some(k)).collect()),
        Some(kernel) if !kernel.is_empty() => None,
        _ => Some(match weight {
            Some(weight) if weight.rank() == spatial + 2 => weight.0[2..].iter().map(Dim::known).collect(),
            _ => vec![None; spatial],
        }),
    }
}

/// The data input's shape, or an unknown one of the weight's rank.
fn data_shape(view: &NodeView, data_slot: usize, weight: Option<&Shape>) -> Option<Shape> {
    let shape = view.input_shape(data_slot).cloned().or_else(|| weight.map(|w| unknown_shape(w.rank())))?;
    (shape.rank() >= 3).then_some(shape)
}

/// Output shape of a convolution reading data from `data_slot` and weights from `weight_slot`.
fn conv_shape(view: &NodeView, data_slot: usize, weight_slot: usize) -> Option<Shape> {
    let weight = view.input_shape(weight_slot);
    let data = data_shape(view, data_slot, weight)?;
    let spatial = data.rank() - 2;
    let window = Window::read(view, spatial, kernel_sizes(view, spatial, weight)?)?;
    let channels = match weight {
        Some(weight) if weight.rank() == data.rank() => weight.0[0].clone(),
        _ => Dim::Unknown,
    };
    let mut dims = vec![data.0[0].clone(), channels];
    dims.extend((0..spatial).map(|axis| window.output_dim(axis, &data.0[axis + 2])));
    Some(Shape(dims))
}

/// Conv.
pub(super) fn conv(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0).or_else(|| view.input_dtype(1));
    vec![OutputFacts::new(dtype, conv_shape(view, 0, 1))]
}

/// QLinearConv: x at 0, w at 3, output typed like y_zero_point (7).
pub(super) fn qlinear_conv(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(7).or_else(|| view.input_dtype(0));
    vec![OutputFacts::new(dtype, conv_shape(view, 0, 3))]
}

/// ConvInteger: int32 output.
pub(super) fn conv_integer(view: &NodeView) -> Vec<OutputFacts> {
    vec![OutputFacts::new(Some(DataType::Int32), conv_shape(view, 0, 1))]
}

/// ConvTranspose: channels = weight dim 1 × group; spatial sizes from
/// `output_shape`, or from strides, pads, `output_padding` and `auto_pad`.
pub(super) fn conv_transpose(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0).or_else(|| view.input_dtype(1));
    vec![OutputFacts::new(dtype, conv_transpose_shape(view))]
}

fn conv_transpose_shape(view: &NodeView) -> Option<Shape> {
    let weight = view.input_shape(1);
    let data = data_shape(view, 0, weight)?;
    let spatial = data.rank() - 2;
    let group = view.attr_int_or("group", 1);
    let channels = match weight {
        Some(weight) if weight.rank() == data.rank() && group >= 1 => dim_times(&weight.0[1], group),
        _ => Dim::Unknown,
    };
    let mut dims = vec![data.0[0].clone(), channels];
    if let Some(output_shape) = view.attr_ints("output_shape").filter(|s| !s.is_empty()) {
        let spatial_sizes = match output_shape.len() {
            len if len == spatial => output_shape,
            len if len == spatial + 2 => &output_shape[2..],
            _ => return None,
        };
        dims.extend(spatial_sizes.iter().map(|&size| known_non_negative(Some(size))));
        return Some(Shape(dims));
    }
    let window = Window::read(view, spatial, kernel_sizes(view, spatial, weight)?)?;
    let output_padding = per_axis(view, "output_padding", spatial, 0)?;
    dims.extend((0..spatial).map(|axis| window.transposed_output_dim(axis, &data.0[axis + 2], output_padding[axis])));
    Some(Shape(dims))
}

/// MaxPool, AveragePool, LpPool; MaxPool's optional Indices output is int64 of the same shape.
pub(super) fn pool(view: &NodeView) -> Vec<OutputFacts> {
    let shape = (|| {
        let data = view.input_shape(0)?;
        if data.rank() < 3 {
            return None;
        }
        let spatial = data.rank() - 2;
        let kernel = view.attr_ints("kernel_shape").filter(|k| k.len() == spatial)?;
        let window = Window::read(view, spatial, kernel.iter().map(|&k| Some(k)).collect())?;
        let mut dims = data.0[..2].to_vec();
        dims.extend((0..spatial).map(|axis| window.output_dim(axis, &data.0[axis + 2])));
        Some(Shape(dims))
    })();
    vec![OutputFacts::new(view.input_dtype(0), shape.clone()), OutputFacts::new(Some(DataType::Int64), shape)]
}

/// GlobalAveragePool, GlobalMaxPool, GlobalLpPool: spatial dims become 1.
pub(super) fn global_pool(view: &NodeView) -> Vec<OutputFacts> {
    let shape = view.input_shape(0).filter(|s| s.rank() >= 2).map(|data| {
        let mut dims = data.0[..2].to_vec();
        dims.resize(data.rank(), Dim::Known(1));
        Shape(dims)
    });
    vec![OutputFacts::new(view.input_dtype(0), shape)]
}
