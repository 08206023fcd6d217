//! Matrix products: Gemm (with transA/transB), MatMul with numpy semantics
//! (1-D operands and broadcast batch dims), and the quantized MatMulInteger
//! and QLinearMatMul.

use super::context::{NodeView, OutputFacts};
use super::dims::broadcast_shapes;
use crate::ir::dtype::DataType;
use crate::ir::shape::{Dim, Shape};

/// Gemm: `[M, K] x [K, N] -> [M, N]` after the optional transposes.
pub(super) fn gemm(view: &NodeView) -> Vec<OutputFacts> {
    let dim_of = |slot: usize, index: usize| -> Dim {
        match view.input_shape(slot) {
            Some(shape) if shape.rank() == 2 => shape.0[index].clone(),
            _ => Dim::Unknown,
        }
    };
    let trans_a = view.attr_int_or("transA", 0) != 0;
    let trans_b = view.attr_int_or("transB", 0) != 0;
    let known_rank = |slot: usize| view.input_rank(slot).is_none_or(|rank| rank == 2);
    // M is A's dim 0 (dim 1 when transposed); N is B's dim 1 (dim 0 when transposed).
    let shape = (known_rank(0) && known_rank(1))
        .then(|| Shape(vec![dim_of(0, usize::from(trans_a)), dim_of(1, usize::from(!trans_b))]));
    let dtype = view.input_dtype(0).or_else(|| view.input_dtype(1));
    vec![OutputFacts::new(dtype, shape)]
}

/// The numpy matrix-product shape of `a @ b`.
pub(super) fn matmul_shape(a: &Shape, b: &Shape) -> Option<Shape> {
    if a.rank() == 0 || b.rank() == 0 {
        return None;
    }
    let a_matrix = if a.rank() == 1 { Shape(vec![Dim::Known(1), a.0[0].clone()]) } else { a.clone() };
    let b_matrix = if b.rank() == 1 { Shape(vec![b.0[0].clone(), Dim::Known(1)]) } else { b.clone() };
    let a_batch = Shape(a_matrix.0[..a_matrix.rank() - 2].to_vec());
    let b_batch = Shape(b_matrix.0[..b_matrix.rank() - 2].to_vec());
    let mut dims = broadcast_shapes([&a_batch, &b_batch]).0;
    if a.rank() > 1 {
        dims.push(a_matrix.0[a_matrix.rank() - 2].clone());
    }
    if b.rank() > 1 {
        dims.push(b_matrix.0[b_matrix.rank() - 1].clone());
    }
    Some(Shape(dims))
}

/// MatMul-shaped output reading a at `a_slot` and b at `b_slot`.
fn matmul_like(view: &NodeView, a_slot: usize, b_slot: usize, dtype: Option<DataType>) -> Vec<OutputFacts> {
    let shape = match (view.input_shape(a_slot), view.input_shape(b_slot)) {
        (Some(a), Some(b)) => matmul_shape(a, b),
        _ => None,
    };
    vec![OutputFacts::new(dtype, shape)]
}

/// MatMul.
pub(super) fn matmul(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(0).or_else(|| view.input_dtype(1));
    matmul_like(view, 0, 1, dtype)
}

/// MatMulInteger: int32 output.
pub(super) fn matmul_integer(view: &NodeView) -> Vec<OutputFacts> {
    matmul_like(view, 0, 1, Some(DataType::Int32))
}

/// QLinearMatMul: a at 0, b at 3, output typed like y_zero_point (7).
pub(super) fn qlinear_matmul(view: &NodeView) -> Vec<OutputFacts> {
    let dtype = view.input_dtype(7).or_else(|| view.input_dtype(0));
    matmul_like(view, 0, 3, dtype)
}
