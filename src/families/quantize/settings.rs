//! How the `quant` family quantizes: what (weights and activations, or
//! weights only), the stored types, per-channel or block-wise scales, and
//! the corrections it applies.

use serde::Serialize;

use crate::ir::DataType;

/// The integer type activations are stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ActivationType {
    Uint8,
    Int8,
}

impl ActivationType {
    /// (lowest, highest) stored level.
    pub fn levels(self) -> (i32, i32) {
        match self {
            ActivationType::Uint8 => (0, 255),
            ActivationType::Int8 => (-128, 127),
        }
    }

    pub fn dtype(self) -> DataType {
        match self {
            ActivationType::Uint8 => DataType::Uint8,
            ActivationType::Int8 => DataType::Int8,
        }
    }
}

/// What is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum QuantMode {
    /// Weights and activations (integer kernels).
    Static,
    /// Weights only (DequantizeLinear on the weights, float compute).
    WeightsOnly,
}

/// How the `quant` family quantizes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QuantSettings {
    pub mode: QuantMode,
    pub activations: ActivationType,
    /// One weight scale per output channel (else one per tensor).
    pub per_channel: bool,
    /// 7-bit weights, so integer kernels that accumulate pairs in int16
    /// (x86 AVX2 without VNNI) cannot saturate.
    pub reduced_range: bool,
    /// Store weights as uint8 with zero point 128 (the same levels, shifted):
    /// u8×u8 kernels widen to int16 before multiplying, so they cannot
    /// saturate either, and keep all 8 bits.
    pub unsigned_weights: bool,
    /// Bits per stored weight: 8, or 4 (int4/uint4, opset 21; weight-only).
    pub weight_bits: u32,
    /// Block-wise weight scales: one per this many elements along the
    /// weight's input axis (opset 21; weight-only), instead of per channel.
    pub block_size: Option<usize>,
    /// Conv and Gemm biases take back the mean shift that rounding the
    /// weights causes on the calibration data (needs its means).
    pub bias_correction: bool,
    /// Check on the probe samples that ONNX Runtime's integer kernels agree
    /// with its reference semantics; layers whose int8 kernels saturate
    /// store uint8 weights (see [`super::kernel_check`]).
    #[serde(skip)]
    pub check_saturation: bool,
}

impl QuantSettings {
    /// The default-domain opset the quantized model needs: 21 for 4-bit or
    /// block-wise weights, 13 for per-axis scales.
    pub fn opset(&self) -> i64 {
        if self.weight_bits == 4 || self.block_size.is_some() {
            21
        } else {
            13
        }
    }

    /// The stored type of `bits`-bit weights and the zero point that centres it.
    pub fn weight_type(&self, bits: u32) -> (DataType, i32) {
        match (bits, self.unsigned_weights) {
            (4, false) => (DataType::Int4, 0),
            (4, true) => (DataType::Uint4, 8),
            (_, false) => (DataType::Int8, 0),
            (_, true) => (DataType::Uint8, 128),
        }
    }
}
