//! A Conv kernel and what every factorized form of it shares: the factors
//! compose back into a kernel W̃ (Cout × Cin·kh·kw) the same way, the last
//! factor is refitted by least squares given the others, and every form's
//! error and bias correction are computed alike, so forms compare on one
//! scale.
//!
//! A form ([`super::factor`]'s SVD, [`super::spatial`], [`super::tucker`])
//! hands over [`Factored`]: the weights of the stages before the last, what
//! they compute as one map G (rows × Cin·kh·kw) on receptive fields, and the
//! last stage's weight as a matrix B (Cout × rows), so W̃ = B·G. With Σ the
//! second moment of the layer's receptive fields (identity without
//! calibration data), [`ConvKernel::fit`]
//!
//! - refits B = W·Σ·Gᵀ·(G·Σ·Gᵀ)⁻¹, the least-squares best last factor given
//!   the others (kept only when it lowers the error);
//! - estimates the error ‖(W − W̃)Σ^½‖_F / ‖W·Σ^½‖_F, the relative output
//!   error on the calibration data (the relative weight error without it);
//! - with a measured mean μ, the shift (W − W̃)·μ of the output's mean, for
//!   the bias to take back.

use ndarray::{Array2, ArrayView2};

use super::settings::Form;
use crate::eval::statistics::SecondMoment;
use crate::weights::linalg::{cholesky_solve, LinalgError};

/// The refit's ridge, relative to the mean diagonal of G·Σ·Gᵀ (the factors
/// are f32, and a floored Σ may leave directions G barely reaches).
const REFIT_RIDGE: f64 = 1e-6;

/// The weight of one stage before the last: `[out, in, kh, kw]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub dims: [usize; 4],
    pub values: Vec<f32>,
}

/// A kernel's factors as a form computes them.
#[derive(Clone, Debug)]
pub struct Factored {
    pub form: Form,
    /// One rank (SVD, spatial) or the input and output ranks (Tucker-2).
    pub ranks: Vec<usize>,
    /// The stages before the last, in the order they run.
    pub leading: Vec<Stage>,
    /// What the leading stages compute, as a map on receptive fields:
    /// rows × (Cin·kh·kw).
    pub composed: Array2<f32>,
    /// The last stage's weight as Cout × rows, row-major its tensor
    /// (`[Cout, r, 1, 1]`, or `[Cout, r, 1, kw]` for spatial SVD).
    pub last: Array2<f32>,
}

impl Factored {
    /// The kernel the factors compute, W̃ = B·G (Cout × Cin·kh·kw).
    pub fn reconstructed(&self) -> Array2<f32> {
        self.last.dot(&self.composed)
    }
}

/// A form's factors, fitted and judged.
#[derive(Clone, Debug)]
pub struct FittedFactors {
    pub factored: Factored,
    /// Relative output error under the calibration data's second moment
    /// (relative weight error without one), bias aside.
    pub error: f64,
    /// (W − W̃)·μ, for the bias to add, when the input's mean is known.
    pub bias_shift: Option<Vec<f64>>,
}

/// The calibration statistics of a layer's receptive fields.
struct Statistics {
    /// Σ, (Cin·kh·kw)².
    sigma: Array2<f64>,
    mean: Vec<f64>,
}

/// A group-1 2-D Conv kernel `[Cout, Cin, kh, kw]` to factorize.
pub struct ConvKernel {
    pub dims: [usize; 4],
    /// Cout × (Cin·kh·kw), row-major the kernel.
    pub weights: Array2<f32>,
    statistics: Option<Statistics>,
    /// ‖W·Σ^½‖²_F (‖W‖²_F without statistics).
    norm: f64,
}

impl ConvKernel {
    /// The kernel of `dims` from its values (row-major), with the second
    /// moment of its receptive fields when calibration measured it (one of
    /// another width is ignored).
    pub fn new(values: &[f64], dims: [usize; 4], moment: Option<&SecondMoment>) -> Option<ConvKernel> {
        let patch = dims[1] * dims[2] * dims[3];
        let weights = Array2::from_shape_vec((dims[0], patch), values.iter().map(|&v| v as f32).collect()).ok()?;
        let wide = weights.mapv(f64::from);
        let statistics = moment.filter(|m| m.dim == patch && m.matrix.len() == patch * patch).and_then(|m| {
            let sigma = Array2::from_shape_vec((patch, patch), m.matrix.clone()).ok()?;
            Some(Statistics { sigma, mean: m.mean.clone() })
        });
        let norm = match &statistics {
            Some(s) => (wide.dot(&s.sigma) * &wide).sum(),
            None => wide.iter().map(|w| w * w).sum(),
        };
        Some(ConvKernel { dims, weights, statistics, norm })
    }

    /// Whether the factors are judged (and the last one fitted) on
    /// calibration data.
    pub fn data_aware(&self) -> bool {
        self.statistics.is_some()
    }

    /// W[cout, cin, y, x].
    pub fn at(&self, cout: usize, cin: usize, y: usize, x: usize) -> f32 {
        let [_, _, kh, kw] = self.dims;
        self.weights[[cout, (cin * kh + y) * kw + x]]
    }

    /// Refits the last factor, estimates the error and the bias shift.
    pub fn fit(&self, mut factored: Factored) -> Result<FittedFactors, LinalgError> {
        let rows = factored.composed.nrows();
        if factored.composed.ncols() != self.weights.ncols() || factored.last.dim() != (self.dims[0], rows) {
            return Err(LinalgError::BadShape(format!(
                "factors {:?}·{:?} for a kernel {:?}",
                factored.last.dim(),
                factored.composed.dim(),
                self.weights.dim()
            )));
        }
        let g = factored.composed.mapv(f64::from);
        let w = self.weights.mapv(f64::from);
        let g_sigma = match &self.statistics {
            Some(s) => g.dot(&s.sigma),
            None => g.clone(),
        };
        // G·Σ·Gᵀ (rows × rows) and G·Σ·Wᵀ (rows × Cout).
        let gram = g_sigma.dot(&g.t());
        let cross = g_sigma.dot(&w.t());
        // ‖(W − B·G)Σ^½‖² = ‖W·Σ^½‖² − 2·tr(B·G·Σ·Wᵀ) + tr(B·G·Σ·Gᵀ·Bᵀ).
        let squared_error = |b: &ArrayView2<f32>| {
            let b = b.mapv(f64::from);
            (self.norm - 2.0 * (&b * &cross.t()).sum() + (b.dot(&gram) * &b).sum()).max(0.0)
        };
        let mut best = squared_error(&factored.last.view());
        if let Some(refit) = refit_last(&gram, &cross) {
            let refit_error = squared_error(&refit.view());
            if refit_error < best {
                (factored.last, best) = (refit, refit_error);
            }
        }
        let error = if self.norm > 0.0 { (best / self.norm).sqrt() } else { 0.0 };
        let bias_shift = self.statistics.as_ref().map(|s| {
            let mean = ndarray::Array1::from(s.mean.clone());
            let approximated = factored.last.mapv(f64::from).dot(&g.dot(&mean));
            (w.dot(&mean) - approximated).to_vec()
        });
        Ok(FittedFactors { factored, error, bias_shift })
    }
}

/// B = (G·Σ·Wᵀ)ᵀ·(G·Σ·Gᵀ + λI)⁻¹, or `None` when the solve fails.
fn refit_last(gram: &Array2<f64>, cross: &Array2<f64>) -> Option<Array2<f32>> {
    let rows = gram.nrows();
    let ridge = REFIT_RIDGE * gram.diag().sum() / rows.max(1) as f64;
    if ridge.is_nan() || ridge <= 0.0 {
        return None;
    }
    let regularized =
        Array2::from_shape_fn((rows, rows), |(i, j)| (gram[[i, j]] + if i == j { ridge } else { 0.0 }) as f32);
    let solution = cholesky_solve(&regularized, &cross.mapv(|v| v as f32)).ok()?;
    Some(solution.reversed_axes().as_standard_layout().to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::eval::statistics::SecondMomentAccumulator;

    /// A seeded generator of uniform values in [-1, 1).
    pub(crate) fn uniform(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f64 / (1u64 << 24) as f64) * 2.0 - 1.0
    }

    /// A seeded kernel of `dims` with values in [-1, 1).
    pub(crate) fn kernel(dims: [usize; 4], seed: u64, moment: Option<&SecondMoment>) -> ConvKernel {
        let mut seed = seed;
        let values: Vec<f64> = (0..dims.iter().product()).map(|_| uniform(&mut seed)).collect();
        ConvKernel::new(&values, dims, moment).unwrap()
    }

    /// The second moment of `rows` seeded receptive fields `width` wide, a
    /// few directions strong and a non-zero mean (as activations are).
    pub(crate) fn moment(rows: usize, width: usize, seed: u64) -> SecondMoment {
        let mut seed = seed;
        let values: Vec<f32> = (0..rows * width)
            .map(|i| (uniform(&mut seed) * if i % width < 5 { 10.0 } else { 0.5 } + 0.3) as f32)
            .collect();
        let mut accumulator = SecondMomentAccumulator::default();
        accumulator.add(&values, width);
        accumulator.finish().unwrap()
    }

    fn relative(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
        let d: f64 = (a - b).iter().map(|v| f64::from(*v).powi(2)).sum();
        (d / a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()).sqrt()
    }

    /// A rank-r factorization of W as one stage: G = r rows of W's patch
    /// space, B whatever `last` says.
    fn factored(composed: Array2<f32>, last: Array2<f32>) -> Factored {
        let ranks = vec![composed.nrows()];
        Factored { form: Form::Svd, ranks, leading: Vec::new(), composed, last }
    }

    #[test]
    fn the_error_is_the_relative_weight_error_without_data_and_the_output_error_with_it() {
        let dims = [6, 2, 3, 3];
        let plain = kernel(dims, 3, None);
        // G: the first 5 unit rows; B: zeros, so the refit decides.
        let g = Array2::from_shape_fn((5, 18), |(i, j)| f32::from(u8::from(i == j)));
        let fitted = plain.fit(factored(g.clone(), Array2::zeros((6, 5)))).unwrap();
        // The refit keeps W's first 5 columns: the error is the rest of W.
        let rest: f64 = plain.weights.slice(ndarray::s![.., 5..]).iter().map(|v| f64::from(*v).powi(2)).sum();
        let all: f64 = plain.weights.iter().map(|v| f64::from(*v).powi(2)).sum();
        assert!((fitted.error - (rest / all).sqrt()).abs() < 1e-6, "{}", fitted.error);
        assert!((relative(&plain.weights, &fitted.factored.reconstructed()) - fitted.error).abs() < 1e-6);
        assert!(fitted.bias_shift.is_none());

        // With data: the error is the output error on the fields Σ came from.
        let sigma = moment(500, 18, 5);
        let aware = kernel(dims, 3, Some(&sigma));
        let fitted = aware.fit(factored(g, Array2::zeros((6, 5)))).unwrap();
        let s = Array2::from_shape_vec((18, 18), sigma.matrix.clone()).unwrap();
        let d = (&aware.weights - &fitted.factored.reconstructed()).mapv(f64::from);
        let w = aware.weights.mapv(f64::from);
        let expected = ((d.dot(&s) * &d).sum() / (w.dot(&s) * &w).sum()).sqrt();
        assert!((fitted.error - expected).abs() < 1e-6, "{} vs {expected}", fitted.error);
        // The bias shift is (W − W̃)·μ.
        let mean = ndarray::Array1::from(sigma.mean.clone());
        let shift = d.dot(&mean);
        let got = fitted.bias_shift.unwrap();
        assert!(shift.iter().zip(&got).all(|(a, b)| (a - b).abs() < 1e-4 * (1.0 + a.abs())), "{shift} vs {got:?}");
    }

    #[test]
    fn the_refit_never_makes_the_last_factor_worse() {
        let dims = [8, 3, 3, 3];
        let sigma = moment(400, 27, 9);
        let aware = kernel(dims, 11, Some(&sigma));
        let g = Array2::from_shape_fn((6, 27), |(i, j)| ((i * 27 + j) % 7) as f32 - 3.0);
        // The least-squares B beats a perturbed one; an exact W̃ is kept exact.
        let best = aware.fit(factored(g.clone(), Array2::zeros((8, 6)))).unwrap();
        let mut worse = best.factored.last.clone();
        worse[[0, 0]] += 0.5;
        let perturbed = factored(g.clone(), worse);
        let refitted = aware.fit(perturbed).unwrap();
        assert!((refitted.error - best.error).abs() < 1e-6, "{} vs {}", refitted.error, best.error);
        let identity = Array2::from_shape_fn((27, 27), |(i, j)| f32::from(u8::from(i == j)));
        let exact = aware.fit(factored(identity, aware.weights.clone())).unwrap();
        assert!(exact.error < 1e-5, "{}", exact.error);
    }
}
