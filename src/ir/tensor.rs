//! Typed views of ONNX tensors. An initializer stays the `TensorProto` it came
//! as (so nothing about its encoding is lost); these functions read its type,
//! shape and elements whichever field holds them, and build new small tensors.

use bytes::Bytes;

use super::dtype::DataType;
use crate::onnx::proto::TensorProto;

/// The element type of a tensor, `None` when undefined.
pub fn dtype(tensor: &TensorProto) -> Option<DataType> {
    DataType::from_code(tensor.data_type.unwrap_or(0))
}

/// Number of elements (product of dims; 1 for a scalar), `None` on negative
/// dims or overflow.
pub fn element_count(tensor: &TensorProto) -> Option<u64> {
    tensor.dims.iter().try_fold(1u64, |acc, &dim| acc.checked_mul(u64::try_from(dim).ok()?))
}

/// Bytes the elements take when packed (what a runtime stores), `None` for
/// strings and unknown types.
pub fn packed_byte_size(tensor: &TensorProto) -> Option<u64> {
    dtype(tensor)?.byte_size(element_count(tensor)?)
}

/// The elements as little-endian packed bytes, whichever field holds them.
/// `None` for strings, external data not yet loaded, or inconsistent sizes.
pub fn raw_bytes(tensor: &TensorProto) -> Option<Bytes> {
    if let Some(raw) = &tensor.raw_data {
        return Some(raw.clone());
    }
    let dtype = dtype(tensor)?;
    let expected = usize::try_from(dtype.byte_size(element_count(tensor)?)?).ok()?;
    // Grown from what the fields hold, never reserved from what the dims
    // claim: a few bytes of file may claim a 100 GB tensor.
    let mut out = Vec::new();
    use DataType::*;
    match dtype {
        Float | Complex64 => tensor.float_data.iter().for_each(|v| out.extend(v.to_le_bytes())),
        Double | Complex128 => tensor.double_data.iter().for_each(|v| out.extend(v.to_le_bytes())),
        Int64 => tensor.int64_data.iter().for_each(|v| out.extend(v.to_le_bytes())),
        Uint32 | Uint64 => {
            let width = if dtype == Uint32 { 4 } else { 8 };
            tensor.uint64_data.iter().for_each(|v| out.extend(&v.to_le_bytes()[..width]))
        }
        Int32 => tensor.int32_data.iter().for_each(|v| out.extend(v.to_le_bytes())),
        Int16 | Uint16 | Float16 | Bfloat16 => {
            tensor.int32_data.iter().for_each(|v| out.extend(&(*v as u16).to_le_bytes()))
        }
        Int8 | Uint8 | Bool | Float8E4M3Fn | Float8E4M3Fnuz | Float8E5M2 | Float8E5M2Fnuz | Float8E8M0 => {
            tensor.int32_data.iter().for_each(|v| out.push(*v as u8))
        }
        // Sub-byte types store already packed bytes in int32_data, one per entry.
        Int4 | Uint4 | Float4E2M1 | Int2 | Uint2 => tensor.int32_data.iter().for_each(|v| out.push(*v as u8)),
        String | Other(_) => return None,
    }
    (out.len() == expected).then(|| Bytes::from(out))
}

/// The elements as i64, for integer and bool tensors; `None` when the stored
/// data does not hold exactly as many elements as the dims say.
pub fn to_i64(tensor: &TensorProto) -> Option<Vec<i64>> {
    let values = stored_i64(tensor)?;
    (values.len() as u64 == element_count(tensor)?).then_some(values)
}

fn stored_i64(tensor: &TensorProto) -> Option<Vec<i64>> {
    let dtype = dtype(tensor)?;
    if tensor.raw_data.is_none() {
        match dtype {
            DataType::Int64 => return Some(tensor.int64_data.clone()),
            DataType::Int32
            | DataType::Int16
            | DataType::Int8
            | DataType::Uint16
            | DataType::Uint8
            | DataType::Bool => return Some(tensor.int32_data.iter().map(|&v| i64::from(v)).collect()),
            DataType::Uint32 | DataType::Uint64 => {
                return tensor.uint64_data.iter().map(|&v| i64::try_from(v).ok()).collect()
            }
            _ => {}
        }
    }
    let raw = raw_bytes(tensor)?;
    Some(match dtype {
        DataType::Int64 => raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
        DataType::Uint64 => raw
            .chunks_exact(8)
            .map(|c| i64::try_from(u64::from_le_bytes(c.try_into().unwrap())).ok())
            .collect::<Option<_>>()?,
        DataType::Int32 => raw.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap()))).collect(),
        DataType::Uint32 => raw.chunks_exact(4).map(|c| i64::from(u32::from_le_bytes(c.try_into().unwrap()))).collect(),
        DataType::Int16 => raw.chunks_exact(2).map(|c| i64::from(i16::from_le_bytes(c.try_into().unwrap()))).collect(),
        DataType::Uint16 => raw.chunks_exact(2).map(|c| i64::from(u16::from_le_bytes(c.try_into().unwrap()))).collect(),
        DataType::Int8 => raw.iter().map(|&b| i64::from(b as i8)).collect(),
        DataType::Uint8 | DataType::Bool => raw.iter().map(|&b| i64::from(b)).collect(),
        // Two 4-bit elements per byte, the first in the low nibble.
        DataType::Int4 | DataType::Uint4 => {
            let count = usize::try_from(element_count(tensor)?).ok()?;
            let nibbles = raw.iter().flat_map(|&b| [b & 0x0f, b >> 4]);
            if dtype == DataType::Int4 {
                nibbles.take(count).map(|n| i64::from(((n << 4) as i8) >> 4)).collect()
            } else {
                nibbles.take(count).map(i64::from).collect()
            }
        }
        _ => return None,
    })
}

/// The elements as f64, for float tensors of 16 bits or more and integers;
/// `None` when the stored data does not hold exactly as many elements as the
/// dims say.
pub fn to_f64(tensor: &TensorProto) -> Option<Vec<f64>> {
    let values = stored_f64(tensor)?;
    (values.len() as u64 == element_count(tensor)?).then_some(values)
}

fn stored_f64(tensor: &TensorProto) -> Option<Vec<f64>> {
    let dtype = dtype(tensor)?;
    if tensor.raw_data.is_none() {
        match dtype {
            DataType::Float => return Some(tensor.float_data.iter().map(|&v| f64::from(v)).collect()),
            DataType::Double => return Some(tensor.double_data.clone()),
            _ => {}
        }
    }
    match dtype {
        DataType::Float => {
            let raw = raw_bytes(tensor)?;
            Some(raw.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect())
        }
        DataType::Double => {
            let raw = raw_bytes(tensor)?;
            Some(raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect())
        }
        DataType::Float16 => {
            let raw = raw_bytes(tensor)?;
            Some(raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect())
        }
        DataType::Bfloat16 => {
            let raw = raw_bytes(tensor)?;
            Some(raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect())
        }
        _ => stored_i64(tensor).map(|v| v.into_iter().map(|x| x as f64).collect()),
    }
}

/// A new tensor of the given type and dims from little-endian packed bytes.
pub fn from_raw(name: &str, dtype: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(dtype.code()),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// A new int64 tensor with the given dims and elements, stored as raw data.
/// A tensor of a float type (float, double, float16, bfloat16) from f64
/// values, each rounded to the type; `None` for other types.
pub fn from_f64(dtype: DataType, dims: &[i64], values: &[f64]) -> Option<TensorProto> {
    let raw: Vec<u8> = match dtype {
        DataType::Float => values.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        DataType::Double => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        DataType::Float16 => values.iter().flat_map(|&v| half::f16::from_f64(v).to_le_bytes()).collect(),
        DataType::Bfloat16 => values.iter().flat_map(|&v| half::bf16::from_f64(v).to_le_bytes()).collect(),
        _ => return None,
    };
    Some(from_raw("", dtype, dims, raw))
}

pub fn from_i64(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    from_raw(name, DataType::Int64, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// A new float tensor with the given dims and elements, stored as raw data.
pub fn from_f32(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    from_raw(name, DataType::Float, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the tensor_proto fuzzer: dims claiming 100 GB over one float
    /// reserved the claimed size before counting the stored elements.
    #[test]
    fn typed_data_short_of_huge_dims_is_refused_without_reserving_them() {
        let claims_100_gb = TensorProto {
            dims: vec![25_000_000_000],
            data_type: Some(DataType::Float.code()),
            float_data: vec![1.0],
            ..Default::default()
        };
        assert_eq!(raw_bytes(&claims_100_gb), None);
        assert_eq!(to_f64(&claims_100_gb), None);
    }

    #[test]
    fn typed_and_raw_fields_agree() {
        let raw = from_i64("x", &[3], &[1, -2, 3]);
        let typed = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::Int64.code()),
            int64_data: vec![1, -2, 3],
            ..Default::default()
        };
        assert_eq!(to_i64(&raw), Some(vec![1, -2, 3]));
        let int4 = from_raw("q", DataType::Int4, &[3], vec![0xf7, 0x08]);
        assert_eq!(to_i64(&int4), Some(vec![7, -1, -8]));
        let uint4 = from_raw("q", DataType::Uint4, &[3], vec![0xf7, 0x08]);
        assert_eq!(to_i64(&uint4), Some(vec![7, 15, 8]));
        assert_eq!(to_i64(&typed), Some(vec![1, -2, 3]));
        assert_eq!(raw_bytes(&typed), raw.raw_data);
    }

    #[test]
    fn floats_decode_from_every_width() {
        let f = from_f32("w", &[2], &[0.5, -1.25]);
        assert_eq!(to_f64(&f), Some(vec![0.5, -1.25]));
        let h = TensorProto {
            dims: vec![1],
            data_type: Some(DataType::Float16.code()),
            int32_data: vec![0x3c00],
            ..Default::default()
        };
        assert_eq!(to_f64(&h), Some(vec![1.0]));
        assert_eq!(element_count(&TensorProto::default()), Some(1));
        let short = TensorProto { dims: vec![4], data_type: Some(DataType::Float.code()), ..Default::default() };
        assert_eq!(to_f64(&short), None, "no data for 4 elements");
    }
}
