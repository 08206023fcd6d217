//! What low-rank factorization asks calibration to measure: the second
//! moment of each factorizable layer's input vectors (rows for MatMul and
//! Gemm, receptive fields for Conv, at whatever size each sample has), for
//! data-aware factors.

use crate::eval::statistics::{MomentRequest, MomentVectors};
use crate::ir::{AttributeList, DataType, Model};

/// Inputs wider than this get plain factors: the second moment is width²
/// numbers, and fitting it is a width³ eigendecomposition.
pub const MAX_MOMENT_WIDTH: usize = 2304;

/// A second-moment request for each MatMul, Gemm and 2-D Conv (group 1)
/// with a constant float weight and a float input of known rank.
pub fn moment_requests(model: &Model) -> Vec<MomentRequest> {
    let graph = &model.graph;
    let mut requests = Vec::new();
    for node in graph.nodes.node_weights().filter(|n| n.domain.is_empty()) {
        let (Some(Some(x)), Some(Some(w))) = (node.inputs.first(), node.inputs.get(1)) else {
            continue;
        };
        let input = graph.value(*x);
        let Some(rank) = input.shape.as_ref().map(|s| s.rank()) else { continue };
        let Some(weight) = graph.constant(*w).filter(|t| crate::ir::tensor::dtype(t) == Some(DataType::Float)) else {
            continue;
        };
        if input.dtype != Some(DataType::Float) || weight.dims.iter().any(|&d| d <= 0) {
            continue;
        }
        let size = |d: &i64| *d as usize;
        let vectors = match (node.op_type.as_str(), weight.dims.as_slice()) {
            ("MatMul", [k, _]) if rank >= 2 => MomentVectors::Rows { width: size(k) },
            ("Gemm", [rows, columns]) if rank == 2 && node.attr_int("transA").unwrap_or(0) == 0 => {
                let transposed = node.attr_int("transB").unwrap_or(0) != 0;
                MomentVectors::Rows { width: size(if transposed { columns } else { rows }) }
            }
            ("Conv", [_, channels, kh, kw]) if rank == 4 && node.attr_int("group").unwrap_or(1) == 1 => {
                let kernel = [size(kh), size(kw)];
                MomentVectors::Patches { channels: size(channels), kernel, attributes: node.attributes.clone() }
            }
            _ => continue,
        };
        let width = match &vectors {
            MomentVectors::Rows { width } => *width,
            MomentVectors::Patches { channels, kernel, .. } => channels * kernel[0] * kernel[1],
        };
        if width == 0 || width > MAX_MOMENT_WIDTH {
            continue;
        }
        let request = MomentRequest { input: input.name.clone(), vectors };
        if !requests.contains(&request) {
            requests.push(request);
        }
    }
    requests
}
