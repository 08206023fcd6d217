//! Partially known small tensors: the values inference evaluates on the side so
//! that shape computations resolve (Shape→Gather→Concat→Reshape and friends).
//! Each element is a number, a symbolic dimension (a `Shape` of `[N,3,H,W]`
//! yields the elements `N, 3, H, W`) or unknown. Only tensors of at most
//! [`MAX_FOLDED_ELEMENTS`] elements are ever built, so folding stays cheap and
//! a huge constant cannot blow up memory.

use crate::ir::dtype::DataType;
use crate::ir::shape::{Dim, Shape};
use crate::ir::tensor;
use crate::onnx::proto::TensorProto;

/// The most elements a folded tensor may have.
pub(super) const MAX_FOLDED_ELEMENTS: usize = 4096;

/// One element of a partially known tensor.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Element {
    /// An integer or bool (0/1) element.
    Int(i64),
    /// A floating-point element.
    Float(f64),
    /// A symbolic dimension's value (an integer not known until run time).
    Symbol(String),
    Unknown,
}

impl Element {
    /// The element holding a dimension's value.
    pub(super) fn from_dim(dim: &Dim) -> Element {
        match dim {
            Dim::Known(value) => Element::Int(*value),
            Dim::Symbol(name) => Element::Symbol(name.clone()),
            Dim::Unknown => Element::Unknown,
        }
    }

    pub(super) fn as_int(&self) -> Option<i64> {
        match self {
            Element::Int(value) => Some(*value),
            _ => None,
        }
    }

    pub(super) fn as_float(&self) -> Option<f64> {
        match self {
            Element::Int(value) => Some(*value as f64),
            Element::Float(value) => Some(*value),
            _ => None,
        }
    }

    /// The dimension this element describes when used as a size: a
    /// non-negative integer or a symbol.
    pub(super) fn to_dim(&self) -> Dim {
        match self {
            Element::Int(value) if *value >= 0 => Dim::Known(*value),
            Element::Symbol(name) => Dim::Symbol(name.clone()),
            _ => Dim::Unknown,
        }
    }

    /// The element converted to `dtype` the way Cast does (integers wrap to
    /// the target width, floats truncate toward zero); unknown when not representable.
    pub(super) fn cast(&self, dtype: DataType) -> Element {
        match self {
            Element::Unknown => Element::Unknown,
            Element::Symbol(_) if dtype == DataType::Bool => Element::Unknown,
            Element::Symbol(_) if dtype.is_integer() || dtype.is_float() => self.clone(),
            Element::Symbol(_) => Element::Unknown,
            Element::Int(value) => cast_int(*value, dtype),
            Element::Float(value) => {
                if dtype.is_float() {
                    Element::Float(round_to_float_width(*value, dtype))
                } else if dtype == DataType::Bool {
                    Element::Int(i64::from(*value != 0.0))
                } else if value.is_finite() && value.abs() < 9.2e18 {
                    cast_int(value.trunc() as i64, dtype)
                } else {
                    Element::Unknown
                }
            }
        }
    }
}

fn cast_int(value: i64, dtype: DataType) -> Element {
    use DataType::*;
    match dtype {
        Int64 => Element::Int(value),
        Int32 => Element::Int(i64::from(value as i32)),
        Int16 => Element::Int(i64::from(value as i16)),
        Int8 => Element::Int(i64::from(value as i8)),
        Uint32 => Element::Int(i64::from(value as u32)),
        Uint16 => Element::Int(i64::from(value as u16)),
        Uint8 => Element::Int(i64::from(value as u8)),
        Uint64 if value >= 0 => Element::Int(value),
        Bool => Element::Int(i64::from(value != 0)),
        _ if dtype.is_float() => Element::Float(round_to_float_width(value as f64, dtype)),
        _ => Element::Unknown,
    }
}

fn round_to_float_width(value: f64, dtype: DataType) -> f64 {
    match dtype {
        DataType::Float => f64::from(value as f32),
        DataType::Float16 => half::f16::from_f64(value).to_f64(),
        DataType::Bfloat16 => half::bf16::from_f64(value).to_f64(),
        _ => value,
    }
}

/// A small tensor whose elements are known, symbolic or unknown.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PartialTensor {
    pub dims: Vec<usize>,
    /// Row-major elements; `elements.len()` is the product of `dims`.
    pub elements: Vec<Element>,
}

/// Number of elements of a tensor with these dims, `None` above the folding limit.
pub(super) fn foldable_count(dims: &[usize]) -> Option<usize> {
    let count = dims.iter().try_fold(1usize, |acc, &dim| acc.checked_mul(dim))?;
    (count <= MAX_FOLDED_ELEMENTS).then_some(count)
}

impl PartialTensor {
    /// A tensor from dims and elements, `None` when they disagree or it is too large.
    pub(super) fn new(dims: Vec<usize>, elements: Vec<Element>) -> Option<PartialTensor> {
        (foldable_count(&dims)? == elements.len()).then_some(PartialTensor { dims, elements })
    }

    pub(super) fn scalar(element: Element) -> PartialTensor {
        PartialTensor { dims: Vec::new(), elements: vec![element] }
    }

    pub(super) fn vector(elements: Vec<Element>) -> Option<PartialTensor> {
        PartialTensor::new(vec![elements.len()], elements)
    }

    /// The elements of a numeric constant, if it is small and its data is present.
    pub(super) fn from_tensor(proto: &TensorProto) -> Option<PartialTensor> {
        let dims: Vec<usize> = proto.dims.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<_>>()?;
        let count = foldable_count(&dims)?;
        let dtype = tensor::dtype(proto)?;
        let elements: Vec<Element> = if dtype.is_integer() || dtype == DataType::Bool {
            tensor::to_i64(proto)?.into_iter().map(Element::Int).collect()
        } else if matches!(dtype, DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16) {
            tensor::to_f64(proto)?.into_iter().map(Element::Float).collect()
        } else {
            return None;
        };
        (elements.len() == count).then_some(PartialTensor { dims, elements })
    }

    /// A tensor of the given shape filled with one element, if the shape is known and small.
    pub(super) fn filled(shape: &Shape, element: Element) -> Option<PartialTensor> {
        let dims = known_usize_dims(shape)?;
        let count = foldable_count(&dims)?;
        Some(PartialTensor { dims, elements: vec![element; count] })
    }

    pub(super) fn shape(&self) -> Shape {
        Shape(self.dims.iter().map(|&d| Dim::Known(d as i64)).collect())
    }

    pub(super) fn rank(&self) -> usize {
        self.dims.len()
    }

    /// All elements as integers, if every one is a known integer.
    pub(super) fn ints(&self) -> Option<Vec<i64>> {
        self.elements.iter().map(Element::as_int).collect()
    }

    /// All elements as floats, if every one is a known number.
    pub(super) fn floats(&self) -> Option<Vec<f64>> {
        self.elements.iter().map(Element::as_float).collect()
    }

    /// The same elements under new dims, if the count matches.
    pub(super) fn reshaped(&self, dims: Vec<usize>) -> Option<PartialTensor> {
        PartialTensor::new(dims, self.elements.clone())
    }

    pub(super) fn map(&self, mut f: impl FnMut(&Element) -> Element) -> PartialTensor {
        PartialTensor { dims: self.dims.clone(), elements: self.elements.iter().map(&mut f).collect() }
    }

    /// Combines tensors element by element under numpy broadcasting.
    pub(super) fn broadcast_map(
        inputs: &[&PartialTensor],
        combine: impl Fn(&[&Element]) -> Element,
    ) -> Option<PartialTensor> {
        let rank = inputs.iter().map(|t| t.rank()).max()?;
        let mut dims = vec![1usize; rank];
        for input in inputs {
            let offset = rank - input.rank();
            for (axis, &dim) in input.dims.iter().enumerate() {
                let out = &mut dims[offset + axis];
                if *out == 1 {
                    *out = dim;
                } else if dim != 1 && dim != *out {
                    return None;
                }
            }
        }
        let count = foldable_count(&dims)?;
        // Per input, the stride of each output axis (0 where the input broadcasts).
        let input_strides: Vec<Vec<usize>> = inputs
            .iter()
            .map(|input| {
                let own = row_major_strides(&input.dims);
                let offset = rank - input.rank();
                (0..rank)
                    .map(|axis| if axis < offset || input.dims[axis - offset] == 1 { 0 } else { own[axis - offset] })
                    .collect()
            })
            .collect();
        let mut index = vec![0usize; rank];
        let mut elements = Vec::with_capacity(count);
        let mut operands: Vec<&Element> = Vec::with_capacity(inputs.len());
        for _ in 0..count {
            operands.clear();
            for (input, strides) in inputs.iter().zip(&input_strides) {
                let position: usize = index.iter().zip(strides).map(|(i, s)| i * s).sum();
                operands.push(&input.elements[position]);
            }
            elements.push(combine(&operands));
            increment_index(&mut index, &dims);
        }
        Some(PartialTensor { dims, elements })
    }

    /// The tensor broadcast against a fully known shape (Expand).
    pub(super) fn expanded_to(&self, shape: &Shape) -> Option<PartialTensor> {
        let target = PartialTensor::filled(shape, Element::Unknown)?;
        PartialTensor::broadcast_map(&[self, &target], |e| e[0].clone())
    }

    /// Gathers along `axis` by integer indices (negative ones count from the end).
    pub(super) fn gather(&self, axis: usize, indices: &PartialTensor) -> Option<PartialTensor> {
        let axis_len = *self.dims.get(axis)?;
        let picks: Vec<usize> = indices
            .ints()?
            .into_iter()
            .map(|i| {
                let i = if i < 0 { i.checked_add(axis_len as i64)? } else { i };
                (0..axis_len as i64).contains(&i).then_some(i as usize)
            })
            .collect::<Option<_>>()?;
        let mut dims = self.dims[..axis].to_vec();
        dims.extend(&indices.dims);
        dims.extend(&self.dims[axis + 1..]);
        self.take_along(axis, &picks, dims)
    }

    /// Keeps the given positions along `axis` (in order, repeats allowed).
    pub(super) fn select(&self, axis: usize, picks: &[usize]) -> Option<PartialTensor> {
        let mut dims = self.dims.clone();
        *dims.get_mut(axis)? = picks.len();
        self.take_along(axis, picks, dims)
    }

    fn take_along(&self, axis: usize, picks: &[usize], dims: Vec<usize>) -> Option<PartialTensor> {
        let axis_len = self.dims[axis];
        if picks.iter().any(|&p| p >= axis_len) {
            return None;
        }
        let outer: usize = self.dims[..axis].iter().product();
        let inner: usize = self.dims[axis + 1..].iter().product();
        foldable_count(&dims)?;
        let mut elements = Vec::with_capacity(outer * picks.len() * inner);
        for o in 0..outer {
            for &p in picks {
                let start = (o * axis_len + p) * inner;
                elements.extend_from_slice(&self.elements[start..start + inner]);
            }
        }
        PartialTensor::new(dims, elements)
    }

    /// Concatenates tensors of equal rank along `axis`.
    pub(super) fn concat(parts: &[&PartialTensor], axis: usize) -> Option<PartialTensor> {
        let first = parts.first()?;
        let rank = first.rank();
        if axis >= rank {
            return None;
        }
        for part in parts {
            if part.rank() != rank || (0..rank).any(|a| a != axis && part.dims[a] != first.dims[a]) {
                return None;
            }
        }
        let mut dims = first.dims.clone();
        dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
        foldable_count(&dims)?;
        let outer: usize = first.dims[..axis].iter().product();
        let mut elements = Vec::new();
        for o in 0..outer {
            for part in parts {
                let chunk: usize = part.dims[axis..].iter().product();
                elements.extend_from_slice(&part.elements[o * chunk..(o + 1) * chunk]);
            }
        }
        PartialTensor::new(dims, elements)
    }

    /// Permutes the axes (`perm` must be a permutation of `0..rank`).
    pub(super) fn transpose(&self, perm: &[usize]) -> Option<PartialTensor> {
        if perm.len() != self.rank() {
            return None;
        }
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims.get(p).copied()).collect::<Option<_>>()?;
        let strides = row_major_strides(&self.dims);
        let permuted_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
        let mut index = vec![0usize; dims.len()];
        let mut elements = Vec::with_capacity(self.elements.len());
        for _ in 0..self.elements.len() {
            let position: usize = index.iter().zip(&permuted_strides).map(|(i, s)| i * s).sum();
            elements.push(self.elements.get(position)?.clone());
            increment_index(&mut index, &dims);
        }
        PartialTensor::new(dims, elements)
    }
}

/// Dims of a fully known, non-negative shape as `usize`.
pub(super) fn known_usize_dims(shape: &Shape) -> Option<Vec<usize>> {
    shape.0.iter().map(|d| usize::try_from(d.known()?).ok()).collect()
}

fn row_major_strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; dims.len()];
    for axis in (0..dims.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * dims[axis + 1];
    }
    strides
}

/// Advances a row-major multi-index by one.
fn increment_index(index: &mut [usize], dims: &[usize]) {
    for axis in (0..dims.len()).rev() {
        index[axis] += 1;
        if index[axis] < dims[axis] {
            return;
        }
        index[axis] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(dims: &[usize], values: &[i64]) -> PartialTensor {
        PartialTensor::new(dims.to_vec(), values.iter().map(|&v| Element::Int(v)).collect()).unwrap()
    }

    #[test]
    fn gather_concat_transpose_broadcast() {
        let shape = ints(&[4], &[2, 3, 5, 7]);
        let picked = shape.gather(0, &ints(&[2], &[0, -1])).unwrap();
        assert_eq!(picked, ints(&[2], &[2, 7]));
        let scalar = shape.gather(0, &PartialTensor::scalar(Element::Int(1))).unwrap();
        assert_eq!(scalar, PartialTensor::scalar(Element::Int(3)));
        assert_eq!(shape.gather(0, &ints(&[1], &[4])), None);
        let joined = PartialTensor::concat(&[&picked, &ints(&[1], &[-1])], 0).unwrap();
        assert_eq!(joined, ints(&[3], &[2, 7, -1]));
        let matrix = ints(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(matrix.transpose(&[1, 0]).unwrap(), ints(&[3, 2], &[1, 4, 2, 5, 3, 6]));
        assert_eq!(matrix.select(1, &[2, 0]).unwrap(), ints(&[2, 2], &[3, 1, 6, 4]));
        let column = ints(&[2, 1], &[10, 20]);
        let sum = PartialTensor::broadcast_map(&[&matrix, &column], |e| {
            Element::Int(e[0].as_int().unwrap() + e[1].as_int().unwrap())
        })
        .unwrap();
        assert_eq!(sum, ints(&[2, 3], &[11, 12, 13, 24, 25, 26]));
    }

    #[test]
    fn casts_wrap_and_truncate() {
        assert_eq!(Element::Int(i64::MAX).cast(DataType::Int32), Element::Int(-1));
        assert_eq!(Element::Float(2.7).cast(DataType::Int64), Element::Int(2));
        assert_eq!(Element::Float(f64::NAN).cast(DataType::Int64), Element::Unknown);
        assert_eq!(Element::Symbol("N".into()).cast(DataType::Float), Element::Symbol("N".into()));
    }
}
