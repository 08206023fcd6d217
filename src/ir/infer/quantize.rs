//! Quantization operators: QuantizeLinear (output typed like the zero point,
//! else uint8, or by `output_dtype` from opset 21), DequantizeLinear (typed
//! like the scale) and DynamicQuantizeLinear. All keep the input's shape.

use super::context::{NodeView, OutputFacts};
use crate::ir::dtype::DataType;
use crate::ir::shape::Shape;

/// QuantizeLinear(x, y_scale, y_zero_point?).
pub(super) fn quantize_linear(view: &NodeView) -> Vec<OutputFacts> {
    let requested = if view.opset >= 21 {
        view.attr_int("output_dtype").filter(|&code| code != 0).and_then(|code| DataType::from_code(code as i32))
    } else {
        None
    };
    let dtype = requested.or_else(|| if view.has_input(2) { view.input_dtype(2) } else { Some(DataType::Uint8) });
    vec![OutputFacts::new(dtype, view.input_shape(0).cloned())]
}

/// DequantizeLinear(x, x_scale, x_zero_point?): the scale's dtype (float before opset 19).
pub(super) fn dequantize_linear(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(1).or((view.opset < 19).then_some(DataType::Float));
    vec![OutputFacts::new(dtype, view.input_shape(0).cloned())]
}

/// DynamicQuantizeLinear(x) -> (y uint8 like x, scalar float scale, scalar uint8 zero point).
pub(super) fn dynamic_quantize_linear(view: &NodeView) -> Vec<OutputFacts> {
    let scalar = Some(Shape(Vec::new()));
    vec![
        OutputFacts::new(Some(DataType::Uint8), view.input_shape(0).cloned()),
        OutputFacts::new(Some(DataType::Float), scalar.clone()),
        OutputFacts::new(Some(DataType::Uint8), scalar),
    ]
}
