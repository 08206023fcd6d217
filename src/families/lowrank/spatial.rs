//! Spatial SVD of a Conv kernel: W[co, ci, y, x] ≈ Σ_k V[co, k, x]·H[k, ci, y],
//! a kh×1 Conv Cin→r (the layer's vertical stride, pads and dilation, no
//! bias) then a 1×kw Conv r→Cout (the horizontal ones, with the bias).
//!
//! The factors are the truncated SVD of M[(co, x), (ci, y)] = W[co, ci, y, x]
//! ((Cout·kw) × (Cin·kh)): H = V_rᵀ, V = U_r·S_r, the best rank-r factors in
//! the weight norm (Eckart–Young), so the relative weight error is that of
//! the dropped singular values. Only for kh > 1 and kw > 1 (otherwise it is
//! the plain SVD form with a 1×1 factor). [`super::kernel`] then refits V
//! to calibration data.

use ndarray::Array2;

use super::kernel::{ConvKernel, Factored, Stage};
use super::settings::Form;
use crate::weights::linalg::{thin_svd, FactorSplit, LinalgError, Svd};

/// The SVD of a kernel's vertical-by-horizontal matrix, from which spatial
/// factors of any rank are read.
pub struct SpatialSvd {
    dims: [usize; 4],
    svd: Svd,
}

impl SpatialSvd {
    /// Whether a kernel of `dims` has a spatial form (kh > 1 and kw > 1).
    pub fn applies(dims: [usize; 4]) -> bool {
        dims[2] > 1 && dims[3] > 1
    }

    pub fn new(kernel: &ConvKernel) -> Result<SpatialSvd, LinalgError> {
        let dims @ [cout, cin, kh, kw] = kernel.dims;
        let m = Array2::from_shape_fn((cout * kw, cin * kh), |(row, column)| {
            kernel.at(row / kw, column / kh, column % kh, row % kw)
        });
        Ok(SpatialSvd { dims, svd: thin_svd(&m)? })
    }

    /// The largest rank, min(Cout·kw, Cin·kh).
    pub fn max_rank(&self) -> usize {
        self.svd.len()
    }

    /// The relative weight error of the rank-`rank` factors, from the
    /// singular values they drop.
    pub fn truncation_error(&self, rank: usize) -> f64 {
        let total: f64 = self.svd.singular_values.iter().map(|s| s * s).sum();
        if total > 0.0 {
            self.svd.truncation_error(rank) / total.sqrt()
        } else {
            0.0
        }
    }

    /// The rank-`rank` factors: the kh×1 stage `[r, Cin, kh, 1]`, and the
    /// 1×kw stage as B ((Cout) × (r·kw)).
    pub fn factored(&self, rank: usize) -> Result<Factored, LinalgError> {
        if rank == 0 {
            return Err(LinalgError::InvalidArgument("rank 0".into()));
        }
        let [cout, cin, kh, kw] = self.dims;
        // left: (Cout·kw) × r, right: r × (Cin·kh), row-major [r, Cin, kh, 1].
        let (left, right) = self.svd.factors(rank, FactorSplit::Left)?;
        let vertical = Stage { dims: [rank, cin, kh, 1], values: right.iter().copied().collect() };
        // G[(k, x), (ci, y, x')] = H[k, ci, y]·[x = x'].
        let composed = Array2::from_shape_fn((rank * kw, cin * kh * kw), |(row, column)| {
            let (k, x) = (row / kw, row % kw);
            let (field, x_) = (column / kw, column % kw);
            if x == x_ {
                right[[k, field]]
            } else {
                0.0
            }
        });
        // B[co, (k, x)] = V[co, k, x] = left[(co, x), k].
        let last = Array2::from_shape_fn((cout, rank * kw), |(co, column)| left[[co * kw + column % kw, column / kw]]);
        Ok(Factored { form: Form::Spatial, ranks: vec![rank], leading: vec![vertical], composed, last })
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernel::tests::{kernel, moment};
    use super::*;

    fn relative(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
        let d: f64 = (a - b).iter().map(|v| f64::from(*v).powi(2)).sum();
        (d / a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()).sqrt()
    }

    #[test]
    fn full_rank_factors_rebuild_the_kernel_and_truncation_meets_the_svd_bound() {
        let plain = kernel([6, 4, 3, 5], 21, None);
        let spatial = SpatialSvd::new(&plain).unwrap();
        assert_eq!(spatial.max_rank(), 12, "min(6·5, 4·3)");
        let full = spatial.factored(12).unwrap();
        assert_eq!(full.leading[0].dims, [12, 4, 3, 1]);
        assert_eq!((full.composed.dim(), full.last.dim()), ((60, 60), (6, 60)));
        assert!(relative(&plain.weights, &full.reconstructed()) < 1e-5);
        // Truncated: the weight error is what the dropped singular values say
        // (to 1e-5), before and after the refit (plain SVD is already best).
        for rank in [2, 5, 9] {
            let factored = spatial.factored(rank).unwrap();
            let bound = spatial.truncation_error(rank);
            assert!(bound > 0.05, "rank {rank}: a random kernel loses something");
            assert!((relative(&plain.weights, &factored.reconstructed()) - bound).abs() < 1e-5, "rank {rank}");
            let fitted = plain.fit(factored).unwrap();
            assert!((fitted.error - bound).abs() < 1e-5, "rank {rank}: {} vs {bound}", fitted.error);
        }
        assert!(spatial.factored(0).is_err() && spatial.factored(13).is_err());
    }

    #[test]
    fn the_first_factor_is_vertical_and_the_second_horizontal() {
        // W[co, ci, y, x] = a[co, x]·b[ci, y] is rank 1 in M: one factor rebuilds it.
        let dims = [3, 2, 3, 2];
        let (a, b) = ([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]], [[1.0, 0.0, -1.0], [2.0, 1.0, 0.5]]);
        let values: Vec<f64> = (0..36)
            .map(|i| {
                let (co, ci, y, x) = (i / 12, i / 6 % 2, i / 2 % 3, i % 2);
                a[co][x] * b[ci][y]
            })
            .collect();
        let rank_one = ConvKernel::new(&values, dims, None).unwrap();
        let factored = SpatialSvd::new(&rank_one).unwrap().factored(1).unwrap();
        assert!(relative(&rank_one.weights, &factored.reconstructed()) < 1e-6);
        // H ∝ b (per input channel, along y), V ∝ a (per output channel, along x).
        let h = &factored.leading[0].values;
        let scale = h[0] / b[0][0] as f32;
        for (i, &value) in h.iter().enumerate() {
            assert!((value - scale * b[i / 3][i % 3] as f32).abs() < 1e-5, "{h:?}");
        }
        for ((co, x), &v) in factored.last.indexed_iter() {
            assert!((v * scale - a[co][x] as f32).abs() < 1e-5, "{}", factored.last);
        }
    }

    #[test]
    fn data_aware_refit_lowers_the_output_error_of_the_same_vertical_factor() {
        let dims = [8, 4, 3, 3];
        let sigma = moment(600, 36, 13);
        let (plain, aware) = (kernel(dims, 17, None), kernel(dims, 17, Some(&sigma)));
        let factored = SpatialSvd::new(&plain).unwrap().factored(3).unwrap();
        // The plain last factor judged on the data, then refitted to it.
        let plain_last = factored.last.clone();
        let fitted = aware.fit(factored).unwrap();
        assert_ne!(fitted.factored.last, plain_last, "the refit moved B");
        let unfitted = {
            let mut kept = fitted.factored.clone();
            kept.last = plain_last;
            let d = (&aware.weights - &kept.reconstructed()).mapv(f64::from);
            let s = Array2::from_shape_vec((36, 36), sigma.matrix.clone()).unwrap();
            let w = aware.weights.mapv(f64::from);
            ((d.dot(&s) * &d).sum() / (w.dot(&s) * &w).sum()).sqrt()
        };
        assert!(fitted.error < 0.95 * unfitted, "refit {} vs plain {unfitted}", fitted.error);
    }
}
