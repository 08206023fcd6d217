//! Reading NumPy `.npy` files (format versions 1-3): little-endian or
//! byte-order-free f16/f32/f64, i8/i16/i32/i64, u8/u16/u32/u64 and bool
//! arrays in C order. Fortran order, big-endian data and object arrays are
//! refused with the reason.

use std::path::Path;

use super::tensor::Tensor;
use super::EvalError;
use crate::ir::DataType;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads an `.npy` file into a tensor.
pub fn read_npy(path: &Path) -> Result<Tensor, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
    decode_npy(&bytes).map_err(|reason| EvalError::Npy { path: path.to_path_buf(), reason })
}

/// Decodes the bytes of an `.npy` file.
pub fn decode_npy(bytes: &[u8]) -> Result<Tensor, String> {
    let rest = bytes.strip_prefix(MAGIC).ok_or("it does not start with the .npy magic string")?;
    let (&major, rest) = rest.split_first().ok_or("it ends inside the header")?;
    let rest = rest.get(1..).ok_or("it ends inside the header")?;
    let (header_len, rest) = match major {
        1 => {
            let len = rest.get(..2).ok_or("it ends inside the header")?;
            (usize::from(u16::from_le_bytes([len[0], len[1]])), &rest[2..])
        }
        2 | 3 => {
            let len = rest.get(..4).ok_or("it ends inside the header")?;
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
            (usize::try_from(len).map_err(|_| "its header length overflows")?, &rest[4..])
        }
        other => return Err(format!("format version {other} is not supported")),
    };
    let header = rest.get(..header_len).ok_or("it ends inside the header")?;
    let header = std::str::from_utf8(header).map_err(|_| "its header is not text")?;
    let data = &rest[header_len..];

    let descr = header_value(header, "descr").and_then(quoted_text).ok_or("its header has no 'descr' string")?;
    let dtype = dtype_of_descr(descr)?;
    let fortran = header_value(header, "fortran_order").ok_or("its header has no 'fortran_order'")?;
    if fortran.starts_with("True") {
        return Err("Fortran-order arrays are not supported; save it with C order".into());
    }
    let shape = parse_shape(header)?;
    Tensor::from_le_bytes(dtype, &shape, data)
}

/// The text after `'key':` in the header dict, up to the end of the header.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let quoted = [format!("'{key}'"), format!("\"{key}\"")];
    let start = quoted.iter().find_map(|quoted| header.find(quoted.as_str()).map(|at| at + quoted.len()))?;
    let after = header[start..].trim_start().strip_prefix(':')?;
    Some(after.trim_start())
}

/// The text inside the quotes that open `value`.
fn quoted_text(value: &str) -> Option<&str> {
    let quote = value.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    value[1..].split(quote).next()
}

fn dtype_of_descr(descr: &str) -> Result<DataType, String> {
    // Split after the first character, whatever its width: a multi-byte one
    // is then refused as an unknown byte order rather than sliced through.
    let (order, code) = descr.split_at(descr.chars().next().map_or(0, char::len_utf8));
    match order {
        "<" | "|" | "=" => {}
        ">" => return Err(format!("big-endian arrays ('{descr}') are not supported")),
        _ => return Err(format!("element type '{descr}' is not supported")),
    }
    if order == "=" && cfg!(target_endian = "big") {
        return Err(format!("native big-endian arrays ('{descr}') are not supported"));
    }
    Ok(match code {
        "f2" => DataType::Float16,
        "f4" => DataType::Float,
        "f8" => DataType::Double,
        "i1" => DataType::Int8,
        "i2" => DataType::Int16,
        "i4" => DataType::Int32,
        "i8" => DataType::Int64,
        "u1" => DataType::Uint8,
        "u2" => DataType::Uint16,
        "u4" => DataType::Uint32,
        "u8" => DataType::Uint64,
        "b1" => DataType::Bool,
        _ => return Err(format!("element type '{descr}' is not supported")),
    })
}

/// The `'shape': (d0, d1, ...)` tuple; `()` is a scalar.
fn parse_shape(header: &str) -> Result<Vec<usize>, String> {
    let value = header_value(header, "shape").ok_or("its header has no 'shape'")?;
    let inner = value.strip_prefix('(').and_then(|v| v.split(')').next()).ok_or("its 'shape' is not a tuple")?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|dim| !dim.is_empty())
        .map(|dim| dim.trim_end_matches('L').parse::<usize>().map_err(|_| format!("shape entry '{dim}' is not a size")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        npy_in_order(descr, "False", shape, data)
    }

    fn npy_in_order(descr: &str, fortran: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
        while (MAGIC.len() + 4 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = MAGIC.to_vec();
        bytes.extend([1, 0]);
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        bytes
    }

    #[test]
    fn reads_f32_matrix() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = decode_npy(&npy("<f4", "(2, 3)", &data)).expect("valid npy");
        assert_eq!(tensor.shape(), &[2, 3]);
        assert_eq!(tensor.as_f32(), Some(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0][..]));
    }

    #[test]
    fn reads_i64_vector_bool_and_scalar() {
        let data: Vec<u8> = [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode_npy(&npy("<i8", "(2,)", &data)).expect("valid").as_i64(), Some(&[7i64, -1][..]));
        let flags = decode_npy(&npy("|b1", "(3,)", &[1, 0, 1])).expect("valid");
        assert_eq!(flags.dtype(), Some(DataType::Bool));
        assert_eq!(flags.to_f64(), Some(vec![1.0, 0.0, 1.0]));
        let scalar = decode_npy(&npy("|u1", "()", &[9])).expect("valid");
        assert_eq!(scalar.shape(), &[] as &[usize]);
        assert_eq!(scalar.to_f64(), Some(vec![9.0]));
    }

    #[test]
    fn refuses_truncated_fortran_and_big_endian() {
        assert!(decode_npy(&npy("<f4", "(2,)", &[0; 4])).is_err());
        assert!(decode_npy(&npy(">f4", "(1,)", &[0; 4])).is_err());
        let fortran = decode_npy(&npy_in_order("<f4", "True", "(1,)", &[0; 4]));
        assert!(fortran.is_err_and(|reason| reason.contains("Fortran")));
        assert!(decode_npy(&npy_in_order("<f4", "False", "(1,)", &[0; 4])).is_ok());
        assert!(decode_npy(b"\x93NUMPY").is_err());
        assert!(decode_npy(b"not an npy").is_err());
    }

    /// Found by the npy fuzzer: a descr opening with a multi-byte character
    /// was sliced inside it.
    #[test]
    fn descr_with_a_multi_byte_first_character_is_refused() {
        let error = decode_npy(&npy("\u{34c}4", "(1,)", &[0; 4])).unwrap_err();
        assert!(error.contains("not supported"), "{error}");
        assert!(decode_npy(&npy("", "(1,)", &[0; 4])).is_err());
    }

    #[test]
    fn a_shape_claiming_100_gb_over_four_bytes_is_refused() {
        let error = decode_npy(&npy("<f4", "(25000000000,)", &[0; 4])).unwrap_err();
        assert!(error.contains("do not hold"), "{error}");
    }
}
