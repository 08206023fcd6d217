//! Tucker-2 of a Conv kernel along its channel modes:
//! W ≈ C ×_out U_out ×_in U_in, run as a 1x1 Conv Cin→r1 (U_inᵀ, at the
//! input's resolution), a kh×kw Conv r1→r2 (the core C, the layer's strides,
//! pads and dilations) and a 1x1 Conv r2→Cout (U_out, with the bias).
//!
//! The factors start from the HOSVD (U_in: the leading left singular vectors
//! of the mode-Cin unfolding, Cin × Cout·kh·kw; U_out: those of the mode-Cout
//! unfolding, the layer's own Cout × Cin·kh·kw matrix) and take [`SWEEPS`]
//! alternating refinements (HOOI: each basis from the kernel projected on the
//! other); the core is W ×_out U_outᵀ ×_in U_inᵀ. All in the weight norm;
//! [`super::kernel`] then refits the last 1x1 to calibration data.

use ndarray::{s, Array2, Array3, Axis};

use super::kernel::{ConvKernel, Factored, Stage};
use super::settings::Form;
use crate::weights::linalg::{thin_svd, LinalgError};

/// Alternating refinements after the HOSVD.
pub const SWEEPS: usize = 2;

/// Whether a kernel of `dims` has a Tucker-2 form (larger than 1x1; a 1x1
/// kernel's Tucker-2 is its SVD with an extra factor).
pub fn applies(dims: [usize; 4]) -> bool {
    dims[2] * dims[3] > 1
}

/// The largest (r1, r2) the unfoldings allow: r1 ≤ min(Cin, Cout·kh·kw),
/// r2 ≤ min(Cout, Cin·kh·kw).
pub fn max_ranks(dims: [usize; 4]) -> (usize, usize) {
    let [cout, cin, kh, kw] = dims;
    (cin.min(cout * kh * kw), cout.min(cin * kh * kw))
}

/// The leading `rank` left singular vectors of `m` (rows × rank).
fn leading(m: &Array2<f32>, rank: usize) -> Result<Array2<f32>, LinalgError> {
    let svd = thin_svd(m)?;
    if rank == 0 || rank > svd.len() {
        return Err(LinalgError::InvalidArgument(format!("rank {rank} outside 1..={}", svd.len())));
    }
    Ok(svd.u.slice(s![.., ..rank]).to_owned())
}

/// The mode-in unfolding of a `[a, channels, taps]` tensor: channels × (a·taps).
fn unfold_in(tensor: &Array3<f32>) -> Array2<f32> {
    let (a, channels, taps) = tensor.dim();
    let permuted = tensor.view().permuted_axes([1, 0, 2]);
    permuted.as_standard_layout().into_owned().into_shape_with_order((channels, a * taps)).expect("same size")
}

/// `tensor` [a, Cin, taps] ×_in Uᵀ: [a, r, taps].
fn project_in(tensor: &Array3<f32>, u: &Array2<f32>) -> Array3<f32> {
    let (a, _, taps) = tensor.dim();
    let mut out = Array3::zeros((a, u.ncols(), taps));
    for tap in 0..taps {
        let slice = tensor.index_axis(Axis(2), tap).dot(u);
        out.index_axis_mut(Axis(2), tap).assign(&slice);
    }
    out
}

/// The rank-(r1, r2) Tucker-2 factors of `kernel`: the 1x1 stage
/// `[r1, Cin, 1, 1]`, the core `[r2, r1, kh, kw]`, and U_out as B (Cout × r2).
pub fn tucker2(kernel: &ConvKernel, r1: usize, r2: usize) -> Result<Factored, LinalgError> {
    let [cout, cin, kh, kw] = kernel.dims;
    let taps = kh * kw;
    let (max1, max2) = max_ranks(kernel.dims);
    if r1 == 0 || r2 == 0 || r1 > max1 || r2 > max2 {
        return Err(LinalgError::InvalidArgument(format!("ranks {r1}×{r2} outside 1..={max1} × 1..={max2}")));
    }
    let w = kernel.weights.clone().into_shape_with_order((cout, cin, taps)).expect("Cout × Cin·kh·kw");
    // HOSVD.
    let mut u_in = leading(&unfold_in(&w), r1)?;
    let mut u_out = leading(&kernel.weights, r2)?;
    // HOOI: each basis from W projected on the other; r2 ≤ r1·taps and
    // r1 ≤ r2·taps keep the projections wide enough.
    for _ in 0..SWEEPS {
        if r2 > r1 * taps || r1 > r2 * taps {
            break;
        }
        let projected = project_in(&w, &u_in).into_shape_with_order((cout, r1 * taps)).expect("Cout × r1·taps");
        u_out = leading(&projected, r2)?;
        let out_projected = u_out.t().dot(&kernel.weights).into_shape_with_order((r2, cin, taps)).expect("r2·Cin·taps");
        u_in = leading(&unfold_in(&out_projected), r1)?;
    }
    // Core [r2, r1, taps] = (U_outᵀ·W) ×_in U_inᵀ.
    let out_projected = u_out.t().dot(&kernel.weights).into_shape_with_order((r2, cin, taps)).expect("r2·Cin·taps");
    let core = project_in(&out_projected, &u_in);
    // G [r2, Cin·taps] = core ×_in U_in.
    let composed =
        project_in(&core, &u_in.t().to_owned()).into_shape_with_order((r2, cin * taps)).expect("r2 × Cin·taps");
    let input = Stage { dims: [r1, cin, 1, 1], values: u_in.t().iter().copied().collect() };
    let middle = Stage { dims: [r2, r1, kh, kw], values: core.iter().copied().collect() };
    Ok(Factored { form: Form::Tucker2, ranks: vec![r1, r2], leading: vec![input, middle], composed, last: u_out })
}

#[cfg(test)]
mod tests {
    use super::super::kernel::tests::{kernel, moment};
    use super::*;

    fn relative(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
        let d: f64 = (a - b).iter().map(|v| f64::from(*v).powi(2)).sum();
        (d / a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()).sqrt()
    }

    /// W̃ from the stages as the Convs run them: 1x1, core, 1x1.
    fn from_stages(factored: &Factored, dims: [usize; 4]) -> Array2<f32> {
        let [cout, cin, kh, kw] = dims;
        let [r1, r2] = [factored.ranks[0], factored.ranks[1]];
        let (first, core) = (&factored.leading[0].values, &factored.leading[1].values);
        Array2::from_shape_fn((cout, cin * kh * kw), |(co, column)| {
            let (ci, tap) = (column / (kh * kw), column % (kh * kw));
            let mut sum = 0.0;
            for p in 0..r2 {
                for q in 0..r1 {
                    sum += factored.last[[co, p]] * core[(p * r1 + q) * kh * kw + tap] * first[q * cin + ci];
                }
            }
            sum
        })
    }

    #[test]
    fn full_ranks_rebuild_the_kernel_and_the_stages_compose_to_g() {
        let dims = [6, 5, 3, 3];
        let plain = kernel(dims, 31, None);
        assert_eq!(max_ranks(dims), (5, 6));
        let full = tucker2(&plain, 5, 6).unwrap();
        assert_eq!((full.leading[0].dims, full.leading[1].dims), ([5, 5, 1, 1], [6, 5, 3, 3]));
        assert!(relative(&plain.weights, &full.reconstructed()) < 1e-5);
        let truncated = tucker2(&plain, 3, 4).unwrap();
        assert!(relative(&truncated.reconstructed(), &from_stages(&truncated, dims)) < 1e-5);
        assert!(tucker2(&plain, 6, 4).is_err() && tucker2(&plain, 3, 0).is_err());
    }

    #[test]
    fn a_kernel_of_low_channel_ranks_is_rebuilt_at_those_ranks() {
        // W = C ×_out A ×_in B with C [2, 3, 3, 3]: ranks (3, 2) rebuild it exactly.
        let (cout, cin) = (8, 7);
        let core = kernel([2, 3, 3, 3], 41, None);
        let a = kernel([cout, 2, 1, 1], 43, None).weights;
        let b = kernel([cin, 3, 1, 1], 47, None).weights;
        let composed = project_in(&core.weights.clone().into_shape_with_order((2, 3, 9)).unwrap(), &b.t().to_owned())
            .into_shape_with_order((2, cin * 9))
            .unwrap();
        let w = a.dot(&composed);
        let values: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
        let low = ConvKernel::new(&values, [cout, cin, 3, 3], None).unwrap();
        let exact = tucker2(&low, 3, 2).unwrap();
        assert!(relative(&low.weights, &exact.reconstructed()) < 1e-5);
        // One rank short on either side loses something.
        assert!(relative(&low.weights, &tucker2(&low, 2, 2).unwrap().reconstructed()) > 1e-2);
        assert!(relative(&low.weights, &tucker2(&low, 3, 1).unwrap().reconstructed()) > 1e-2);
    }

    #[test]
    fn hooi_sweeps_do_not_lose_to_hosvd_and_the_data_refit_helps() {
        let dims = [16, 12, 3, 3];
        let plain = kernel(dims, 53, None);
        let refined = plain.fit(tucker2(&plain, 6, 8).unwrap()).unwrap();
        // HOSVD alone: U_in, U_out from the unfoldings, no sweep.
        let w = plain.weights.clone().into_shape_with_order((16, 12, 9)).unwrap();
        let (u_in, u_out) = (leading(&unfold_in(&w), 6).unwrap(), leading(&plain.weights, 8).unwrap());
        let projected = project_in(
            &project_in(&u_out.t().dot(&plain.weights).into_shape_with_order((8, 12, 9)).unwrap(), &u_in),
            &u_in.t().to_owned(),
        )
        .into_shape_with_order((8, 108))
        .unwrap();
        let hosvd_error = relative(&plain.weights, &u_out.dot(&projected));
        assert!(refined.error <= hosvd_error + 1e-6, "HOOI {} vs HOSVD {hosvd_error}", refined.error);

        // With data, the refitted last 1x1 lowers the output error.
        let sigma = moment(500, 108, 59);
        let aware = kernel(dims, 53, Some(&sigma));
        let factored = tucker2(&aware, 6, 8).unwrap();
        let plain_last = factored.last.clone();
        let fitted = aware.fit(factored.clone()).unwrap();
        let mut unrefitted = factored;
        unrefitted.last = plain_last;
        let s = Array2::from_shape_vec((108, 108), sigma.matrix.clone()).unwrap();
        let d = (&aware.weights - &unrefitted.reconstructed()).mapv(f64::from);
        let wide = aware.weights.mapv(f64::from);
        let before = ((d.dot(&s) * &d).sum() / (wide.dot(&s) * &wide).sum()).sqrt();
        assert!(fitted.error < 0.95 * before, "refit {} vs {before}", fitted.error);
    }
}
