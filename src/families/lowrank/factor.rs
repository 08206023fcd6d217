//! The low-rank factors of a linear map W (out × in, acting on input
//! vectors x): W ≈ second · first, first r × in, second out × r.
//!
//! Plain factors are W's truncated SVD: the best rank-r approximation in the
//! weight (Frobenius) norm. Data-aware factors minimise the layer's output
//! error on the calibration data instead, E‖(W − W′)x‖² = ‖(W − W′)Σ^½‖²_F
//! with Σ = E[x·xᵀ] the input's second moment: the truncated SVD of W·Σ^½,
//! mapped back by Σ^-½ (first = V_rᵀ·Σ^-½, second = U_r·S_r). The mean of
//! the output moves by (W − W′)·μ on the calibration data; the bias takes it
//! back, as quantization's bias correction does.

use ndarray::{Array1, Array2, Axis};

use crate::eval::statistics::SecondMoment;
use crate::weights::linalg::{psd_sqrt_and_inverse_sqrt, thin_svd, LinalgError};

/// Eigenvalues of Σ below this share of the largest are raised to it (a
/// calibration set rarely spans every input direction).
const SIGMA_FLOOR: f64 = 1e-6;

/// One rank's factors and what they cost in accuracy.
#[derive(Clone, Debug)]
pub struct Factors {
    pub rank: usize,
    /// r × in.
    pub first: Array2<f32>,
    /// out × r.
    pub second: Array2<f32>,
    /// Relative L2 error of the layer's output (bias aside): on the
    /// calibration data for data-aware factors, of the weights for plain ones.
    pub error: f64,
    /// The shift of the output's mean, (W − W′)·μ, for the bias to add
    /// (data-aware factors with a known input mean).
    pub bias_shift: Option<Vec<f64>>,
}

/// A decomposition from which factors of any rank are read.
pub struct Decomposition {
    u: Array2<f32>,
    singular_values: Array1<f64>,
    vt: Array2<f32>,
    /// Σ^-½ (in × in) for data-aware factors.
    inverse_sqrt: Option<Array2<f32>>,
    weights: Array2<f32>,
    mean: Option<Vec<f64>>,
}

impl Decomposition {
    /// Decomposes W (out × in); with `moment` (its input's second moment,
    /// `in` wide), data-aware.
    pub fn new(weights: Array2<f32>, moment: Option<&SecondMoment>) -> Result<Decomposition, LinalgError> {
        let input = weights.ncols();
        let moment = moment.filter(|m| m.dim == input && m.matrix.len() == input * input);
        let (target, inverse_sqrt, mean) = match moment {
            Some(moment) => {
                let sigma = Array2::from_shape_vec((input, input), moment.matrix.iter().map(|&v| v as f32).collect())
                    .map_err(|e| LinalgError::BadShape(e.to_string()))?;
                let roots = psd_sqrt_and_inverse_sqrt(&sigma, SIGMA_FLOOR)?;
                (weights.dot(&roots.sqrt), Some(roots.inv_sqrt), Some(moment.mean.clone()))
            }
            None => (weights.clone(), None, None),
        };
        let svd = thin_svd(&target)?;
        Ok(Decomposition { u: svd.u, singular_values: svd.singular_values, vt: svd.vt, inverse_sqrt, weights, mean })
    }

    /// The factors of rank `rank` (at most min(out, in)).
    pub fn factors(&self, rank: usize) -> Result<Factors, LinalgError> {
        let k = self.singular_values.len();
        if rank == 0 || rank > k {
            return Err(LinalgError::InvalidArgument(format!("rank {rank} outside 1..={k}")));
        }
        let (second, first) = (self.u.slice(ndarray::s![.., ..rank]), self.vt.slice(ndarray::s![..rank, ..]));
        let scale = self.singular_values.slice(ndarray::s![..rank]).mapv(|s| s as f32);
        let second = &second * &scale.view().insert_axis(Axis(0));
        let first = match &self.inverse_sqrt {
            Some(inverse_sqrt) => first.dot(inverse_sqrt),
            None => first.to_owned(),
        };
        let total: f64 = self.singular_values.iter().map(|s| s * s).sum();
        let dropped: f64 = self.singular_values.iter().skip(rank).map(|s| s * s).sum();
        let error = if total > 0.0 { (dropped / total).sqrt() } else { 0.0 };
        let bias_shift = self.mean.as_ref().map(|mean| {
            let approximated = second.dot(&first);
            let difference = &self.weights - &approximated;
            difference
                .rows()
                .into_iter()
                .map(|row| row.iter().zip(mean).map(|(&w, &m)| f64::from(w) * m).sum())
                .collect()
        });
        Ok(Factors { rank, first, second, error, bias_shift })
    }
}

/// The rank whose factorization keeps `share` of a layer's MACs (a map of
/// `input` → `output` per vector costs input·output; its factors
/// rank·(input + output)), rounded down to a multiple of `multiple`
/// (at least one multiple); `None` when that rank saves nothing.
pub fn rank_for_share(share: f64, input: usize, output: usize, multiple: usize) -> Option<usize> {
    let full = (input * output) as u64;
    rank_for_macs(share * full as f64, (input + output) as u64, full, input.min(output), multiple)
}

/// The largest multiple of `multiple` (at least one multiple) whose factors,
/// costing `per_rank` MACs per unit of rank, stay within `budget` MACs;
/// `None` unless that rank costs less than the layer's `full` MACs and is
/// below `max_rank`.
pub fn rank_for_macs(budget: f64, per_rank: u64, full: u64, max_rank: usize, multiple: usize) -> Option<usize> {
    let multiple = multiple.max(1);
    if per_rank == 0 {
        return None;
    }
    let rank = (budget / per_rank as f64).floor() as usize;
    let rank = (rank / multiple * multiple).max(multiple);
    let saves = (rank as u64).saturating_mul(per_rank) < full;
    (saves && rank < max_rank).then_some(rank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::statistics::SecondMomentAccumulator;

    /// A seeded generator of uniform values in [-1, 1).
    fn uniform(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Inputs concentrated in a few directions (as real activations are):
    /// `rows` vectors of width `dim`, the first `strong` coordinates 10x larger.
    fn correlated_inputs(rows: usize, dim: usize, strong: usize, seed: &mut u64) -> Vec<f32> {
        (0..rows * dim).map(|i| uniform(seed) * if i % dim < strong { 10.0 } else { 0.3 } + 0.5).collect()
    }

    fn output_error(w: &Array2<f32>, factors: &Factors, inputs: &[f32], bias_correct: bool) -> f64 {
        let dim = w.ncols();
        let x = Array2::from_shape_vec((inputs.len() / dim, dim), inputs.to_vec()).unwrap();
        let exact = x.dot(&w.t());
        let mut approx = x.dot(&factors.second.dot(&factors.first).t());
        if let (true, Some(shift)) = (bias_correct, &factors.bias_shift) {
            for mut row in approx.rows_mut() {
                row.iter_mut().zip(shift).for_each(|(v, s)| *v += *s as f32);
            }
        }
        let diff: f64 = (&exact - &approx).iter().map(|d| f64::from(*d).powi(2)).sum();
        let norm: f64 = exact.iter().map(|d| f64::from(*d).powi(2)).sum();
        (diff / norm).sqrt()
    }

    #[test]
    fn ranks_keep_the_asked_share_of_macs_in_multiples() {
        // 256 → 256: full 65536 MACs; half is 32768 = r·512 → r 64.
        assert_eq!(rank_for_share(0.5, 256, 256, 8), Some(64));
        assert_eq!(rank_for_share(0.25, 256, 256, 8), Some(32));
        // 3x3 conv 64 → 128: in 576, out 128; 0.5·73728/704 = 52.4 → 48.
        assert_eq!(rank_for_share(0.5, 576, 128, 8), Some(48));
        // A map too small to save anything.
        assert_eq!(rank_for_share(0.75, 8, 8, 8), None);
        assert_eq!(rank_for_share(0.99, 4, 4, 4), None, "rank 4 of a 4-wide map saves nothing");
        assert_eq!(rank_for_share(0.5, 16, 3, 1), Some(1));
    }

    #[test]
    fn plain_factors_meet_the_svd_bound_and_data_aware_ones_fit_the_data_better() {
        let (out, dim, rank) = (24, 32, 6);
        let mut seed = 7;
        let w = Array2::from_shape_fn((out, dim), |_| uniform(&mut seed));
        let fit = correlated_inputs(400, dim, 4, &mut seed);
        let held_out = correlated_inputs(400, dim, 4, &mut seed);
        let mut moment = SecondMomentAccumulator::default();
        moment.add(&fit, dim);
        let moment = moment.finish().unwrap();

        let plain = Decomposition::new(w.clone(), None).unwrap().factors(rank).unwrap();
        let aware = Decomposition::new(w.clone(), Some(&moment)).unwrap().factors(rank).unwrap();
        // Plain: the weight error is what the dropped singular values say.
        let weight_error = {
            let d = &w - &plain.second.dot(&plain.first);
            let norm: f64 = w.iter().map(|v| f64::from(*v).powi(2)).sum();
            (d.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / norm).sqrt()
        };
        assert!((weight_error - plain.error).abs() < 1e-4, "{weight_error} vs {}", plain.error);
        // Data-aware: its estimate is its error on the data it was fitted on.
        let fitted = output_error(&w, &aware, &fit, false);
        assert!((fitted - aware.error).abs() < 1e-3, "{fitted} vs {}", aware.error);
        // On held-out inputs it beats plain SVD at the same rank, by far.
        let (plain_out, aware_out) =
            (output_error(&w, &plain, &held_out, false), output_error(&w, &aware, &held_out, true));
        assert!(aware_out < 0.5 * plain_out, "data-aware {aware_out} vs plain {plain_out}");
        // The mean is a strong direction of Σ, so the factors keep most of
        // it: the bias correction changes little, and never makes it worse.
        let uncorrected = output_error(&w, &aware, &held_out, false);
        assert!(aware_out <= 1.01 * uncorrected, "corrected {aware_out} vs {uncorrected}");
    }

    #[test]
    fn a_rank_out_of_range_is_an_error() {
        let w = Array2::from_shape_fn((4, 6), |(i, j)| (i * 6 + j) as f32);
        let d = Decomposition::new(w, None).unwrap();
        assert!(d.factors(0).is_err() && d.factors(5).is_err());
        assert_eq!(d.factors(4).unwrap().first.dim(), (4, 6));
    }
}
