//! Element types of tensors: the ONNX `TensorProto.DataType` codes with their
//! names, bit widths and families. Codes this build does not know are kept as
//! `DataType::Other(code)` so they pass through untouched.

use std::fmt;

/// The element type of a tensor, as ONNX numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    Float,
    Uint8,
    Int8,
    Uint16,
    Int16,
    Int32,
    Int64,
    String,
    Bool,
    Float16,
    Double,
    Uint32,
    Uint64,
    Complex64,
    Complex128,
    Bfloat16,
    Float8E4M3Fn,
    Float8E4M3Fnuz,
    Float8E5M2,
    Float8E5M2Fnuz,
    Uint4,
    Int4,
    Float4E2M1,
    Float8E8M0,
    Uint2,
    Int2,
    /// A code this build does not know; carried through as is.
    Other(i32),
}

impl DataType {
    /// The type for an ONNX data type code; `None` for 0 (UNDEFINED).
    pub fn from_code(code: i32) -> Option<DataType> {
        use DataType::*;
        Some(match code {
            0 => return None,
            1 => Float,
            2 => Uint8,
            3 => Int8,
            4 => Uint16,
            5 => Int16,
            6 => Int32,
            7 => Int64,
            8 => String,
            9 => Bool,
            10 => Float16,
            11 => Double,
            12 => Uint32,
            13 => Uint64,
            14 => Complex64,
            15 => Complex128,
            16 => Bfloat16,
            17 => Float8E4M3Fn,
            18 => Float8E4M3Fnuz,
            19 => Float8E5M2,
            20 => Float8E5M2Fnuz,
            21 => Uint4,
            22 => Int4,
            23 => Float4E2M1,
            24 => Float8E8M0,
            25 => Uint2,
            26 => Int2,
            other => Other(other),
        })
    }

    /// The ONNX data type code.
    pub fn code(self) -> i32 {
        use DataType::*;
        match self {
            Float => 1,
            Uint8 => 2,
            Int8 => 3,
            Uint16 => 4,
            Int16 => 5,
            Int32 => 6,
            Int64 => 7,
            String => 8,
            Bool => 9,
            Float16 => 10,
            Double => 11,
            Uint32 => 12,
            Uint64 => 13,
            Complex64 => 14,
            Complex128 => 15,
            Bfloat16 => 16,
            Float8E4M3Fn => 17,
            Float8E4M3Fnuz => 18,
            Float8E5M2 => 19,
            Float8E5M2Fnuz => 20,
            Uint4 => 21,
            Int4 => 22,
            Float4E2M1 => 23,
            Float8E8M0 => 24,
            Uint2 => 25,
            Int2 => 26,
            Other(code) => code,
        }
    }

    /// Bits one element occupies in packed raw data; `None` for strings and
    /// unknown codes.
    pub fn bits(self) -> Option<u64> {
        use DataType::*;
        Some(match self {
            Uint2 | Int2 => 2,
            Uint4 | Int4 | Float4E2M1 => 4,
            Uint8 | Int8 | Bool | Float8E4M3Fn | Float8E4M3Fnuz | Float8E5M2 | Float8E5M2Fnuz | Float8E8M0 => 8,
            Uint16 | Int16 | Float16 | Bfloat16 => 16,
            Float | Int32 | Uint32 => 32,
            Double | Int64 | Uint64 | Complex64 => 64,
            Complex128 => 128,
            String | Other(_) => return None,
        })
    }

    /// Bytes that `elements` elements occupy in packed raw data (sub-byte types
    /// round up to whole bytes); `None` also when the bit count overflows.
    pub fn byte_size(self, elements: u64) -> Option<u64> {
        self.bits().and_then(|bits| elements.checked_mul(bits)).map(|total_bits| total_bits.div_ceil(8))
    }

    /// Floating-point types (including the 8- and 4-bit float formats).
    pub fn is_float(self) -> bool {
        use DataType::*;
        matches!(
            self,
            Float
                | Double
                | Float16
                | Bfloat16
                | Float8E4M3Fn
                | Float8E4M3Fnuz
                | Float8E5M2
                | Float8E5M2Fnuz
                | Float4E2M1
                | Float8E8M0
        )
    }

    /// Integer types (signed or unsigned, any width); not bool.
    pub fn is_integer(self) -> bool {
        use DataType::*;
        matches!(self, Uint8 | Int8 | Uint16 | Int16 | Int32 | Int64 | Uint32 | Uint64 | Uint4 | Int4 | Uint2 | Int2)
    }

    /// The lower-case name ONNX's documentation uses (`float`, `int64`, ...).
    pub fn name(self) -> String {
        use DataType::*;
        let name = match self {
            Float => "float",
            Uint8 => "uint8",
            Int8 => "int8",
            Uint16 => "uint16",
            Int16 => "int16",
            Int32 => "int32",
            Int64 => "int64",
            String => "string",
            Bool => "bool",
            Float16 => "float16",
            Double => "double",
            Uint32 => "uint32",
            Uint64 => "uint64",
            Complex64 => "complex64",
            Complex128 => "complex128",
            Bfloat16 => "bfloat16",
            Float8E4M3Fn => "float8e4m3fn",
            Float8E4M3Fnuz => "float8e4m3fnuz",
            Float8E5M2 => "float8e5m2",
            Float8E5M2Fnuz => "float8e5m2fnuz",
            Uint4 => "uint4",
            Int4 => "int4",
            Float4E2M1 => "float4e2m1",
            Float8E8M0 => "float8e8m0",
            Uint2 => "uint2",
            Int2 => "int2",
            Other(code) => return format!("dtype{code}"),
        };
        name.to_string()
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 1..=30 {
            assert_eq!(DataType::from_code(code).unwrap().code(), code);
        }
        assert_eq!(DataType::from_code(0), None);
    }

    #[test]
    fn packed_sizes() {
        assert_eq!(DataType::Float.byte_size(10), Some(40));
        assert_eq!(DataType::Int4.byte_size(3), Some(2));
        assert_eq!(DataType::Uint2.byte_size(5), Some(2));
        assert_eq!(DataType::String.byte_size(1), None);
        assert_eq!(
            DataType::Double.byte_size(u64::MAX / 4),
            None,
            "found by the tensor_proto fuzzer: the bit count overflowed"
        );
    }
}
