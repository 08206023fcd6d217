//! The tensor values the evaluator takes and returns: a typed, shaped array
//! that keeps its element type (f32, f64, i64, u8, bool …), with conversion
//! from and to ONNX `TensorProto` (the `input_N.pb` / `output_N.pb` files of
//! ONNX's test_data_set layout) and a flat f64 view for comparisons.
//!
//! Values are stored in tract's tensor so a run costs no conversion; the
//! wrapper keeps tract's API out of the rest of pare.

use tract_onnx::prelude::{f16, DatumType, Tensor as TractTensor};

use super::EvalError;
use crate::ir::tensor as proto_tensor;
use crate::ir::DataType;
use crate::onnx::proto::TensorProto;

/// The element types the evaluator holds, each ONNX type with its Rust type:
/// runs `$body` with `$t` bound to the Rust type of `$dtype`, or `$other` for
/// the types it does not hold. The one table the byte conversions here and the
/// ONNX Runtime bridge share.
macro_rules! with_element_type {
    ($dtype:expr, $t:ident => $body:expr, else $other:expr) => {
        with_element_type!(@arms $dtype, $t, $body, $other;
            Float f32, Double f64, Float16 half::f16, Int8 i8, Uint8 u8, Int16 i16, Uint16 u16,
            Int32 i32, Uint32 u32, Int64 i64, Uint64 u64, Bool bool)
    };
    (@arms $dtype:expr, $t:ident, $body:expr, $other:expr; $($variant:ident $rust:ty),*) => {
        match $dtype {
            $(DataType::$variant => {
                type $t = $rust;
                $body
            })*
            _ => $other,
        }
    };
}
pub(crate) use with_element_type;

/// An element stored as little-endian bytes in ONNX raw data.
trait LittleEndian: tract_onnx::prelude::Datum + Copy {
    const WIDTH: usize;
    /// Reads one element from exactly `WIDTH` bytes.
    fn read(bytes: &[u8]) -> Self;
    fn write(self, out: &mut Vec<u8>);
}

macro_rules! little_endian {
    ($($rust:ty),*) => {$(
        impl LittleEndian for $rust {
            const WIDTH: usize = std::mem::size_of::<$rust>();
            fn read(bytes: &[u8]) -> Self {
                let mut element = [0u8; std::mem::size_of::<$rust>()];
                element.copy_from_slice(bytes);
                <$rust>::from_le_bytes(element)
            }
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
little_endian!(f32, f64, f16, i8, u8, i16, u16, i32, u32, i64, u64);

/// ONNX stores a bool as one byte; any non-zero byte reads as true.
impl LittleEndian for bool {
    const WIDTH: usize = 1;
    fn read(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

/// A dense tensor with its element type and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor(TractTensor);

/// A tensor with the graph value name it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
}

impl NamedTensor {
    pub fn new(name: impl Into<String>, tensor: Tensor) -> NamedTensor {
        NamedTensor { name: name.into(), tensor }
    }
}

/// Relative L2 distance of candidate outputs from reference outputs, over
/// every (candidate, reference) pair of runs and every float output.
pub fn runs_relative_l2(runs: &[(Vec<NamedTensor>, Vec<NamedTensor>)]) -> f64 {
    let (mut difference, mut norm) = (0.0, 0.0);
    for (candidate, reference) in runs {
        for (x, y) in candidate.iter().zip(reference) {
            let (Some(x), Some(y)) = (x.tensor.to_f64(), y.tensor.to_f64()) else { continue };
            difference += x.iter().zip(&y).map(|(p, q)| (p - q) * (p - q)).sum::<f64>();
            norm += y.iter().map(|q| q * q).sum::<f64>();
        }
    }
    if norm > 0.0 {
        (difference / norm).sqrt()
    } else {
        difference.sqrt()
    }
}

impl Tensor {
    /// A float tensor; fails when `values` does not hold exactly the number of
    /// elements `shape` says.
    pub fn from_f32(shape: &[usize], values: &[f32]) -> Result<Tensor, EvalError> {
        Self::from_values(shape, values)
    }

    /// An int64 tensor; fails on an element count mismatch.
    pub fn from_i64(shape: &[usize], values: &[i64]) -> Result<Tensor, EvalError> {
        Self::from_values(shape, values)
    }

    fn from_values<T: tract_onnx::prelude::Datum + Copy>(shape: &[usize], values: &[T]) -> Result<Tensor, EvalError> {
        TractTensor::from_shape(shape, values)
            .map(Tensor)
            .map_err(|error| EvalError::Tensor { name: String::new(), reason: format!("{error:#}") })
    }

    /// The ONNX element type; `None` for types ONNX has no code for (tract's
    /// internal symbolic-dimension and opaque types).
    pub fn dtype(&self) -> Option<DataType> {
        onnx_dtype(self.0.datum_type())
    }

    pub fn shape(&self) -> &[usize] {
        self.0.shape()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Every element as f64 in C order (bool as 0/1), for metrics; `None`
    /// for element types that are not numbers.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        let as_f64 = self.0.cast_to::<f64>().ok()?;
        let plain = as_f64.try_as_plain_ram().ok()?;
        plain.as_slice::<f64>().ok().map(<[f64]>::to_vec)
    }

    /// The f32 elements in C order; `None` unless the tensor is f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        self.typed_slice::<f32>()
    }

    /// The i64 elements in C order; `None` unless the tensor is i64.
    pub fn as_i64(&self) -> Option<&[i64]> {
        self.typed_slice::<i64>()
    }

    fn typed_slice<T: tract_onnx::prelude::Datum>(&self) -> Option<&[T]> {
        if self.0.datum_type() != T::datum_type() {
            return None;
        }
        self.0.try_as_plain_ram().ok()?.as_slice::<T>().ok()
    }

    /// The underlying tract tensor.
    pub fn as_tract(&self) -> &TractTensor {
        &self.0
    }

    pub fn into_tract(self) -> TractTensor {
        self.0
    }

    pub(crate) fn from_tract(tensor: TractTensor) -> Tensor {
        Tensor(tensor)
    }

    /// Decodes an ONNX tensor (raw or typed fields). External data must be
    /// loaded already; strings, complex numbers, bfloat16 and sub-byte or
    /// 8-bit float types are refused.
    pub fn from_proto(proto: &TensorProto) -> Result<Tensor, EvalError> {
        let name = proto.name.clone().unwrap_or_default();
        let refuse = |reason: String| EvalError::Tensor { name: name.clone(), reason };
        let dtype = proto_tensor::dtype(proto).ok_or_else(|| refuse("it has no element type".into()))?;
        let shape = proto
            .dims
            .iter()
            .map(|&dim| usize::try_from(dim).map_err(|_| refuse(format!("negative dimension {dim}"))))
            .collect::<Result<Vec<usize>, EvalError>>()?;
        if crate::onnx::external::is_external(proto) {
            return Err(refuse("its data is stored externally and was not loaded".into()));
        }
        let raw = proto_tensor::raw_bytes(proto)
            .ok_or_else(|| refuse(format!("its {} data does not match its dims {:?}", dtype.name(), proto.dims)))?;
        Tensor::from_le_bytes(dtype, &shape, &raw).map_err(refuse)
    }

    /// A tensor from little-endian packed elements of an ONNX element type.
    pub fn from_le_bytes(dtype: DataType, shape: &[usize], bytes: &[u8]) -> Result<Tensor, String> {
        // As ndarray requires: the non-zero dims multiply to at most
        // isize::MAX, even when another dim is zero (tract computes strides
        // from them all).
        let nonzero_product = shape
            .iter()
            .filter(|&&dim| dim != 0)
            .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))
            .filter(|&product| isize::try_from(product).is_ok())
            .ok_or_else(|| format!("its shape {shape:?} overflows"))?;
        let count = if shape.contains(&0) { 0 } else { nonzero_product };
        let width = dtype
            .bits()
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits as usize / 8)
            .ok_or_else(|| format!("element type {} is not supported by the evaluator", dtype.name()))?;
        if count.checked_mul(width) != Some(bytes.len()) {
            return Err(format!(
                "{} bytes do not hold {count} elements of {} (shape {shape:?})",
                bytes.len(),
                dtype.name()
            ));
        }
        let unsupported = || format!("element type {} is not supported by the evaluator", dtype.name());
        let built = with_element_type!(dtype, T => {
            let values: Vec<T> = bytes.chunks_exact(T::WIDTH).map(T::read).collect();
            TractTensor::from_shape(shape, &values)
        }, else return Err(unsupported()));
        built.map(Tensor).map_err(|error| format!("{error:#}"))
    }

    /// The elements as little-endian packed bytes in C order, with their ONNX
    /// element type.
    pub fn to_le_bytes(&self) -> Result<(DataType, Vec<u8>), String> {
        let datum_type = self.0.datum_type();
        let dtype = onnx_dtype(datum_type).ok_or_else(|| format!("tract type {datum_type:?} has no ONNX type"))?;
        let plain = self.0.try_as_plain_ram().map_err(|error| format!("{error:#}"))?;
        let bytes = with_element_type!(dtype, T => plain.as_slice::<T>().map(|values| {
            let mut bytes = Vec::with_capacity(values.len() * T::WIDTH);
            values.iter().for_each(|value| value.write(&mut bytes));
            bytes
        }), else return Err(format!("element type {} is not supported by the evaluator", dtype.name())));
        bytes.map(|bytes| (dtype, bytes)).map_err(|error| format!("{error:#}"))
    }

    /// An ONNX tensor (raw data) with the given name.
    pub fn to_proto(&self, name: &str) -> Result<TensorProto, EvalError> {
        let refuse = |reason: String| EvalError::Tensor { name: name.to_string(), reason };
        let (dtype, bytes) = self.to_le_bytes().map_err(refuse)?;
        let dims = self
            .shape()
            .iter()
            .map(|&dim| i64::try_from(dim).map_err(|_| refuse(format!("dimension {dim} does not fit in i64"))))
            .collect::<Result<Vec<i64>, EvalError>>()?;
        Ok(proto_tensor::from_raw(name, dtype, &dims, bytes))
    }
}

impl From<TractTensor> for Tensor {
    fn from(tensor: TractTensor) -> Tensor {
        Tensor(tensor)
    }
}

/// The ONNX element type of a tract datum type.
pub(crate) fn onnx_dtype(datum_type: DatumType) -> Option<DataType> {
    Some(match datum_type.unquantized() {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Float16,
        DatumType::F32 => DataType::Float,
        DatumType::F64 => DataType::Double,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_round_trip_keeps_type_shape_and_values() {
        let original = Tensor::from_i64(&[2, 2], &[1, -2, 3, i64::MAX]).expect("valid tensor");
        let proto = original.to_proto("x").expect("encodable");
        assert_eq!(proto.dims, vec![2, 2]);
        assert_eq!(proto_tensor::to_i64(&proto), Some(vec![1, -2, 3, i64::MAX]));
        assert_eq!(Tensor::from_proto(&proto).expect("decodable"), original);
    }

    #[test]
    fn typed_float_fields_decode() {
        let proto = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::Float.code()),
            float_data: vec![1.5, -2.0, 0.25],
            ..Default::default()
        };
        let tensor = Tensor::from_proto(&proto).expect("decodable");
        assert_eq!(tensor.as_f32(), Some(&[1.5f32, -2.0, 0.25][..]));
        assert_eq!(tensor.to_f64(), Some(vec![1.5, -2.0, 0.25]));
    }

    #[test]
    fn bool_bytes_other_than_one_read_as_true() {
        let tensor = Tensor::from_le_bytes(DataType::Bool, &[3], &[0, 1, 7]).expect("valid");
        assert_eq!(tensor.to_f64(), Some(vec![0.0, 1.0, 1.0]));
        assert_eq!(tensor.to_le_bytes().expect("encodable").1, vec![0, 1, 1]);
    }

    #[test]
    fn size_mismatch_and_strings_are_refused() {
        assert!(Tensor::from_le_bytes(DataType::Float, &[2], &[0; 4]).is_err());
        assert!(Tensor::from_le_bytes(DataType::String, &[1], &[0]).is_err());
        let negative = TensorProto { dims: vec![-1], data_type: Some(DataType::Float.code()), ..Default::default() };
        assert!(Tensor::from_proto(&negative).is_err());
    }

    /// Found by the tensor_proto fuzzer: an empty tensor (a zero dim) whose
    /// other dims multiply past isize::MAX overflowed tract's strides.
    #[test]
    fn empty_tensor_with_overflowing_dims_is_refused() {
        let huge = 1usize << 40;
        let error = Tensor::from_le_bytes(DataType::Float, &[0, huge, huge], &[]).unwrap_err();
        assert!(error.contains("overflows"), "{error}");
        assert_eq!(Tensor::from_le_bytes(DataType::Float, &[0, huge], &[]).expect("empty").len(), 0);
    }
}
