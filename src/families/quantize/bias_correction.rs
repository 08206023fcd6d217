//! Bias correction: the shift of each output channel's mean that rounding a
//! layer's weights causes on the calibration data, for the bias to take back
//! (the empirical bias correction of Nagel et al., "Data-Free Quantization
//! Through Weight Equalization and Bias Correction", 2019).
//!
//! Rounding errors of the weights are small and of either sign, but inputs
//! after a ReLU have positive means, so each layer moves its outputs' means
//! by (Ŵ − W) applied to its mean input, and those shifts add up through the
//! network. The layer is linear in its weights, so the shift on the
//! calibration data is exact without running the layer on each sample:
//! E[conv(x; Ŵ) − conv(x; W)] = conv(E[x]; Ŵ − W), averaged over the output
//! positions (zero padding included, so border positions count as they run).
//!
//! The mean input comes from calibration (the float model's activations), so
//! each layer's correction depends on nothing quantized upstream: layers can
//! be corrected independently and in any order.

use crate::eval::statistics::MeanActivation;
pub use crate::ir::conv_geometry::ConvGeometry;

/// Per output channel of a Conv with weights `difference` (dims
/// [out, in/group, kernel...]), the mean over output positions of its output
/// on `mean_input` without bias; `None` when the dims do not fit together.
pub fn conv_shift(
    difference: &[f64],
    weight_dims: &[usize],
    mean_input: &MeanActivation,
    geometry: &ConvGeometry,
) -> Option<Vec<f64>> {
    let axes = weight_dims.len().checked_sub(2)?;
    let (input_dims, input) = mean_input.trailing(axes + 1)?;
    let (outputs, group_inputs, kernel) = (weight_dims[0], weight_dims[1], &weight_dims[2..]);
    let channels = input_dims[0];
    let group = geometry.group;
    if group_inputs * group != channels
        || outputs % group != 0
        || difference.len() != weight_dims.iter().product::<usize>()
    {
        return None;
    }
    let spatial = &input_dims[1..];
    let taps: usize = kernel.iter().product();
    let positions: usize = geometry.output.iter().product();
    // Per axis and tap offset: the input indices the output positions read
    // there (positions that fall in the padding read zero and are left out).
    let reads: Vec<Vec<Vec<usize>>> = (0..axes)
        .map(|d| {
            (0..kernel[d])
                .map(|t| {
                    (0..geometry.output[d])
                        .filter_map(|o| {
                            let at = (o * geometry.strides[d] + t * geometry.dilations[d])
                                .checked_sub(geometry.pads_begin[d])?;
                            (at < spatial[d]).then_some(at)
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut input_strides = vec![1; axes];
    for d in (0..axes.saturating_sub(1)).rev() {
        input_strides[d] = input_strides[d + 1] * spatial[d + 1];
    }
    let plane: usize = spatial.iter().product();
    // tap_means[c * taps + t]: the mean over output positions of the input
    // channel c that kernel tap t reads.
    let mut tap_means = vec![0.0; channels * taps];
    for c in 0..channels {
        let channel = &input[c * plane..(c + 1) * plane];
        for t in 0..taps {
            let offsets = unravel(t, kernel);
            let lists: Vec<&[usize]> = (0..axes).map(|d| reads[d][offsets[d]].as_slice()).collect();
            tap_means[c * taps + t] = sum_over_product(channel, &lists, &input_strides) / positions as f64;
        }
    }
    let per_group = outputs / group;
    let filter = group_inputs * taps;
    Some(
        (0..outputs)
            .map(|o| {
                let first_input = (o / per_group) * group_inputs;
                let weights = &difference[o * filter..(o + 1) * filter];
                let means = &tap_means[first_input * taps..first_input * taps + filter];
                weights.iter().zip(means).map(|(w, m)| w * m).sum()
            })
            .collect(),
    )
}

/// Per output column of a Gemm (weights [K, N], or [N, K] when
/// `transposed`), the difference weights applied to the mean input row.
pub fn gemm_shift(
    difference: &[f64],
    weight_dims: &[usize],
    transposed: bool,
    mean_input: &MeanActivation,
) -> Option<Vec<f64>> {
    let (_, mean) = mean_input.trailing(1)?;
    let [rows, columns] = *weight_dims else { return None };
    let (inner, outer) = if transposed { (columns, rows) } else { (rows, columns) };
    if mean.len() != inner || difference.len() != rows * columns {
        return None;
    }
    let at = |k: usize, n: usize| if transposed { difference[n * columns + k] } else { difference[k * columns + n] };
    Some((0..outer).map(|n| (0..inner).map(|k| at(k, n) * mean[k]).sum()).collect())
}

/// The multi-index of flat index `index` in row-major `dims`.
fn unravel(mut index: usize, dims: &[usize]) -> Vec<usize> {
    let mut at = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        at[d] = index % dims[d];
        index /= dims[d];
    }
    at
}

/// The sum of `values` over every combination of one index per axis from `lists`.
fn sum_over_product(values: &[f64], lists: &[&[usize]], strides: &[usize]) -> f64 {
    match lists.split_first() {
        None => values[0],
        Some((first, rest)) => {
            first.iter().map(|&i| sum_over_product(&values[i * strides[0]..], rest, &strides[1..])).sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::statistics::MeanAccumulator;
    use crate::ir::attribute::{int, ints, string};
    use crate::ir::AttributeList;
    use crate::onnx::proto::AttributeProto;

    /// A direct 2-D convolution of one image [C, H, W] (no bias).
    #[allow(clippy::too_many_arguments)]
    fn conv2d(x: &[f64], c: usize, h: usize, w: usize, weights: &[f64], dims: &[usize], g: &ConvGeometry) -> Vec<f64> {
        let (out, cg, kh, kw) = (dims[0], dims[1], dims[2], dims[3]);
        let (oh, ow) = (g.output[0], g.output[1]);
        let mut y = vec![0.0; out * oh * ow];
        for o in 0..out {
            let first = (o / (out / g.group)) * cg;
            for (i, ci) in (first..first + cg).enumerate() {
                assert!(ci < c);
                for a in 0..kh {
                    for b in 0..kw {
                        for p in 0..oh {
                            for q in 0..ow {
                                let r = (p * g.strides[0] + a * g.dilations[0]) as i64 - g.pads_begin[0] as i64;
                                let s = (q * g.strides[1] + b * g.dilations[1]) as i64 - g.pads_begin[1] as i64;
                                if r >= 0 && s >= 0 && (r as usize) < h && (s as usize) < w {
                                    y[(o * oh + p) * ow + q] += weights[((o * cg + i) * kh + a) * kw + b]
                                        * x[(ci * h + r as usize) * w + s as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        y
    }

    fn values(count: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.3
            })
            .collect()
    }

    #[test]
    fn conv_shift_is_the_mean_of_the_convolved_mean_input() {
        let cases: Vec<(Vec<AttributeProto>, [usize; 4], usize, usize)> = vec![
            (vec![ints("pads", &[1, 1, 1, 1])], [6, 4, 3, 3], 7, 5),
            (vec![ints("pads", &[0, 2, 1, 0]), ints("strides", &[2, 1]), int("group", 2)], [4, 2, 3, 2], 9, 6),
            (
                vec![string("auto_pad", "SAME_UPPER"), ints("strides", &[2, 2]), ints("dilations", &[2, 1])],
                [3, 4, 3, 3],
                8,
                7,
            ),
            (vec![string("auto_pad", "SAME_LOWER"), int("group", 4)], [4, 1, 2, 2], 5, 5),
        ];
        for (attrs, dims, h, w) in cases {
            let channels = dims[1] * attrs.attr_int("group").unwrap_or(1) as usize;
            let geometry = ConvGeometry::new(attrs.as_slice(), &[h, w], &dims[2..]).unwrap();
            // Two samples of a batch of one: the mean input is their average.
            let (a, b) = (values(channels * h * w, 1), values(channels * h * w, 2));
            let mean = MeanActivation {
                dims: vec![1, channels, h, w],
                values: a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect(),
            };
            let difference = values(dims.iter().product(), 3);
            let shift = conv_shift(&difference, &dims, &mean, &geometry).unwrap();
            let (ya, yb) = (
                conv2d(&a, channels, h, w, &difference, &dims, &geometry),
                conv2d(&b, channels, h, w, &difference, &dims, &geometry),
            );
            let plane = geometry.output.iter().product::<usize>();
            for (o, s) in shift.iter().enumerate() {
                let direct: f64 =
                    (0..plane).map(|p| ya[o * plane + p] + yb[o * plane + p]).sum::<f64>() / (2 * plane) as f64;
                assert!((s - direct).abs() < 1e-12, "{s} vs {direct}");
            }
        }
    }

    #[test]
    fn same_padding_keeps_the_output_size_at_the_input_over_the_stride() {
        let attrs = [string("auto_pad", "SAME_UPPER"), ints("strides", &[2, 3])];
        let geometry = ConvGeometry::new(attrs.as_slice(), &[7, 10], &[3, 3]).unwrap();
        assert_eq!(geometry.output, vec![4, 4]);
        assert_eq!(geometry.pads_begin, vec![1, 1]);
        assert!(ConvGeometry::new([].as_slice(), &[2, 2], &[3, 3]).is_none(), "a kernel larger than the input");
    }

    #[test]
    fn gemm_shift_applies_the_difference_to_the_mean_row() {
        // Input rows [1, 2, 3] and [3, 2, 1]: mean [2, 2, 2].
        let mean = MeanActivation { dims: vec![2, 3], values: vec![1.0, 2.0, 3.0, 3.0, 2.0, 1.0] };
        let difference = [1.0, 0.0, 0.5, -1.0, 0.0, 2.0]; // [K=3, N=2]
        assert_eq!(gemm_shift(&difference, &[3, 2], false, &mean).unwrap(), vec![3.0, 2.0]);
        // The same weights transposed ([N=2, K=3]).
        let transposed = [1.0, 0.5, 0.0, 0.0, -1.0, 2.0];
        assert_eq!(gemm_shift(&transposed, &[2, 3], true, &mean).unwrap(), vec![3.0, 2.0]);
        assert!(gemm_shift(&difference, &[2, 3], false, &mean).is_none(), "K does not match the input");
    }

    #[test]
    fn means_need_every_sample_at_the_same_dims() {
        let mut acc = MeanAccumulator::default();
        acc.add(&[2], &[1.0, 2.0]);
        acc.add(&[2], &[3.0, 6.0]);
        assert_eq!(acc.mean().unwrap().values, vec![2.0, 4.0]);
        acc.add(&[3], &[1.0, 1.0, 1.0]);
        assert!(acc.mean().is_none());
        assert!(MeanAccumulator::default().mean().is_none());
    }
}
