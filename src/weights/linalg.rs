//! Dense linear algebra for the weight-compression families: the thin SVD
//! and best rank-r factors of a weight matrix, the eigendecomposition of a
//! symmetric (Gram or second-moment) matrix, its square root and inverse
//! square root for data-aware factorization, and the solves behind
//! least-squares refits. The decompositions are those of [`faer`] (pure Rust,
//! built single-threaded, without rayon).
//!
//! Matrices come in as ndarray `f32` matrices (any `&Array2<f32>` or view,
//! through [`ArrayRef2`]) and are converted to f64: every decomposition and
//! product runs in f64, and the matrices returned are rounded back to f32.
//! Spectra (singular values and eigenvalues) are returned in f64, since
//! callers sum their tails to choose a rank or to predict an error, where f32
//! would lose the small terms.
//!
//! Inputs are checked before faer sees them, so bad input returns a
//! [`LinalgError`] instead of panicking: every matrix argument must be
//! non-empty and finite, shapes must agree, and symmetric arguments must be
//! symmetric up to [`SYMMETRY_TOLERANCE`]. A result that does not fit in f32
//! is an error too.

use faer::linalg::solvers::{Solve, SolveLstsq};
use faer::{Mat, MatRef, Side};
use ndarray::{Array1, Array2, ArrayRef2};

/// Why a linear-algebra routine refused its input or could not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinalgError {
    /// An input (named by `what`) holds a NaN or an infinity, or a result
    /// does not fit in f32.
    #[error("{what} holds a non-finite value at [{row}, {col}]")]
    NonFinite { what: &'static str, row: usize, col: usize },
    /// An input is empty, not square where it must be, or its dims disagree
    /// with another input's.
    #[error("bad shape: {0}")]
    BadShape(String),
    /// A scalar argument is out of range (a rank, floor or ridge), or a matrix
    /// that must be symmetric is not.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// [`least_squares`] found fewer independent columns than unknowns; a
    /// positive ridge makes the problem solvable.
    #[error("rank deficient: numerical rank {rank} for {columns} columns")]
    RankDeficient { rank: usize, columns: usize },
    /// The decomposition did not converge, or the matrix lacks the property it
    /// needs (a Cholesky factor of a matrix that is not positive definite).
    #[error("{decomposition} failed: {reason}")]
    DecompositionFailed { decomposition: &'static str, reason: String },
}

/// Largest difference |a[i, j] − a[j, i]| that a symmetric argument may have,
/// relative to its largest absolute entry (f32 round-off when accumulating a
/// Gram matrix stays far below it). Within it the matrix is symmetrized as
/// (A + Aᵀ)/2 before decomposing.
pub const SYMMETRY_TOLERANCE: f64 = 1e-4;

/// A thin singular value decomposition A = U·diag(s)·Vt of an m×n matrix,
/// with k = min(m, n).
#[derive(Clone, Debug, PartialEq)]
pub struct Svd {
    /// m×k, orthonormal columns (left singular vectors).
    pub u: Array2<f32>,
    /// The k singular values, non-negative and descending.
    pub singular_values: Array1<f64>,
    /// k×n, orthonormal rows (right singular vectors, transposed).
    pub vt: Array2<f32>,
}

/// How [`Svd::factors`] splits the singular values between the two factors of
/// a rank-r approximation A ≈ L·R. The product is the same either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorSplit {
    /// L = U_r·diag(s_r) and R = Vt_r: R keeps orthonormal rows, all the scale
    /// is in L.
    Left,
    /// L = U_r·diag(√s_r) and R = diag(√s_r)·Vt_r: both factors carry the same
    /// scale (LᵀL = R·Rᵀ = diag(s_r)), which suits quantizing both.
    Balanced,
}

impl Svd {
    /// k = min(m, n), the number of singular values (the largest usable rank).
    pub fn len(&self) -> usize {
        self.singular_values.len()
    }

    /// Whether there are no singular values (never true for a decomposition
    /// returned by [`thin_svd`], which refuses empty matrices).
    pub fn is_empty(&self) -> bool {
        self.singular_values.is_empty()
    }

    /// The factors L (m×rank) and R (rank×n) of the best rank-`rank`
    /// approximation of A (Eckart–Young: no rank-`rank` matrix is closer in
    /// the Frobenius or spectral norm), split as `split` says. Rank 0 gives
    /// m×0 and 0×n factors; a rank above [`Svd::len`] is an error.
    pub fn factors(&self, rank: usize, split: FactorSplit) -> Result<(Array2<f32>, Array2<f32>), LinalgError> {
        if rank > self.len() {
            return Err(LinalgError::InvalidArgument(format!("rank {rank} exceeds min(m, n) = {}", self.len())));
        }
        let s = &self.singular_values;
        let (left, right): (Vec<f64>, Vec<f64>) = match split {
            FactorSplit::Left => (s.iter().take(rank).copied().collect(), vec![1.0; rank]),
            FactorSplit::Balanced => {
                let roots: Vec<f64> = s.iter().take(rank).map(|v| v.sqrt()).collect();
                (roots.clone(), roots)
            }
        };
        let l = Array2::from_shape_fn((self.u.nrows(), rank), |(i, j)| (f64::from(self.u[[i, j]]) * left[j]) as f32);
        let r = Array2::from_shape_fn((rank, self.vt.ncols()), |(i, j)| (right[i] * f64::from(self.vt[[i, j]])) as f32);
        Ok((finite(l, "left factor")?, finite(r, "right factor")?))
    }

    /// The Frobenius error ‖A − L·R‖ of the best rank-`rank` approximation:
    /// √(Σ_{i ≥ rank} s_i²), the singular values it drops (0 at or above
    /// [`Svd::len`]).
    pub fn truncation_error(&self, rank: usize) -> f64 {
        self.singular_values.iter().skip(rank).map(|s| s * s).sum::<f64>().sqrt()
    }
}

/// The thin SVD of an m×n matrix: U (m×k), singular values descending, Vt
/// (k×n), k = min(m, n).
pub fn thin_svd(a: &ArrayRef2<f32>) -> Result<Svd, LinalgError> {
    check(a, "a")?;
    let svd = to_f64(a).as_ref().thin_svd().map_err(|e| failed("SVD", format!("{e:?}")))?;
    let singular_values = svd.S().column_vector().iter().copied().collect::<Array1<f64>>();
    Ok(Svd { u: to_f32(svd.U(), "U")?, singular_values, vt: to_f32(svd.V().transpose(), "Vt")? })
}

/// The factors L (m×rank) and R (rank×n) of the best rank-`rank`
/// approximation of `a`: [`thin_svd`] then [`Svd::factors`].
pub fn low_rank_factors(
    a: &ArrayRef2<f32>,
    rank: usize,
    split: FactorSplit,
) -> Result<(Array2<f32>, Array2<f32>), LinalgError> {
    thin_svd(a)?.factors(rank, split)
}

/// The eigendecomposition A = V·diag(values)·Vᵀ of a symmetric matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct SymmetricEigen {
    /// The n eigenvalues, descending (largest first, like singular values).
    pub values: Array1<f64>,
    /// n×n, orthonormal columns: column i is the eigenvector of `values[i]`.
    pub vectors: Array2<f32>,
}

/// The eigendecomposition of a symmetric matrix (meant for positive
/// semi-definite Gram and second-moment matrices, but any symmetric matrix
/// works): eigenvalues descending, eigenvectors as columns.
pub fn symmetric_eigen(a: &ArrayRef2<f32>) -> Result<SymmetricEigen, LinalgError> {
    let (values, vectors) = eigen_descending(&symmetric(a, "a")?)?;
    Ok(SymmetricEigen { values: Array1::from(values), vectors: to_f32(vectors.as_ref(), "eigenvectors")? })
}

/// Σ^½ and Σ^-½ of a symmetric positive semi-definite matrix, from
/// [`psd_sqrt_and_inverse_sqrt`].
#[derive(Clone, Debug, PartialEq)]
pub struct PsdRoots {
    /// V·diag(√λ')·Vᵀ, symmetric.
    pub sqrt: Array2<f32>,
    /// V·diag(1/√λ')·Vᵀ, symmetric: `sqrt · inv_sqrt` is the identity.
    pub inv_sqrt: Array2<f32>,
    /// How many eigenvalues were raised to the floor.
    pub clamped: usize,
}

/// The square root and inverse square root of a symmetric positive
/// semi-definite matrix Σ (a Gram or second-moment matrix of calibration
/// inputs), for data-aware factorization: factor W·Σ^½ and map the right
/// factor back with Σ^-½.
///
/// Eigenvalues λ below `relative_floor`·λ_max (round-off negatives included)
/// are raised to that floor, λ' = max(λ, floor), in both roots alike. So a
/// singular Σ (fewer samples than features, dead channels) still has a finite
/// inverse root, `sqrt · inv_sqrt` is the identity, and `sqrt · sqrt` is Σ
/// plus the floor on the clamped directions. `relative_floor` must lie in
/// (0, 1]; a Σ without a positive eigenvalue is an error.
pub fn psd_sqrt_and_inverse_sqrt(sigma: &ArrayRef2<f32>, relative_floor: f64) -> Result<PsdRoots, LinalgError> {
    if !(relative_floor > 0.0 && relative_floor <= 1.0) {
        return Err(LinalgError::InvalidArgument(format!("relative floor {relative_floor} is outside (0, 1]")));
    }
    let (values, vectors) = eigen_descending(&symmetric(sigma, "sigma")?)?;
    let largest = values[0];
    if largest <= 0.0 {
        return Err(failed("PSD square root", format!("the largest eigenvalue is {largest}, not positive")));
    }
    let floor = relative_floor * largest;
    let clamped = values.iter().filter(|&&v| v < floor).count();
    let roots: Vec<f64> = values.iter().map(|&v| v.max(floor).sqrt()).collect();
    let inverse_roots: Vec<f64> = roots.iter().map(|r| r.recip()).collect();
    Ok(PsdRoots {
        sqrt: to_f32(spectral(vectors.as_ref(), &roots).as_ref(), "square root")?,
        inv_sqrt: to_f32(spectral(vectors.as_ref(), &inverse_roots).as_ref(), "inverse square root")?,
        clamped,
    })
}

/// Solves A·X = B for a symmetric positive definite A (n×n) and B (n×k) by a
/// Cholesky factorization. A that is not positive definite is an error
/// ([`LinalgError::DecompositionFailed`]).
pub fn cholesky_solve(a_spd: &ArrayRef2<f32>, b: &ArrayRef2<f32>) -> Result<Array2<f32>, LinalgError> {
    let a = symmetric(a_spd, "a_spd")?;
    check(b, "b")?;
    if b.nrows() != a.nrows() {
        return Err(LinalgError::BadShape(format!(
            "b has {} rows for a {}×{} matrix",
            b.nrows(),
            a.nrows(),
            a.ncols()
        )));
    }
    let llt = a.as_ref().llt(Side::Lower).map_err(|e| failed("Cholesky", format!("not positive definite ({e:?})")))?;
    to_f32(llt.solve(to_f64(b).as_ref()).as_ref(), "solution")
}

/// The X (n×k) minimising ‖A·X − B‖² + ridge·‖X‖² (Frobenius norms) for A
/// (m×n) and B (m×k), column by column.
///
/// Solved by a column-pivoted Householder QR, of A itself when `ridge` is 0
/// and of A stacked on √ridge·I (against B stacked on zeros) otherwise, so the
/// normal equations and their squared condition number are never formed.
/// Without a ridge, A must have full column rank: when some |R_jj| falls to
/// √n·ε_f32·|R_00| or below (columns dependent within f32 precision, or fewer
/// rows than columns) the result is [`LinalgError::RankDeficient`], and a
/// positive ridge (not negligible against A's scale) is the remedy. `ridge`
/// must be finite and non-negative.
pub fn least_squares(a: &ArrayRef2<f32>, b: &ArrayRef2<f32>, ridge: f64) -> Result<Array2<f32>, LinalgError> {
    check(a, "a")?;
    check(b, "b")?;
    let (m, n) = a.dim();
    if b.nrows() != m {
        return Err(LinalgError::BadShape(format!("b has {} rows, a has {m}", b.nrows())));
    }
    if !(ridge.is_finite() && ridge >= 0.0) {
        return Err(LinalgError::InvalidArgument(format!("ridge {ridge} is not a finite non-negative number")));
    }
    let (lhs, rhs) = if ridge > 0.0 {
        let root = ridge.sqrt();
        let lhs = Mat::from_fn(m + n, n, |i, j| {
            if i < m {
                f64::from(a[[i, j]])
            } else if i - m == j {
                root
            } else {
                0.0
            }
        });
        let rhs = Mat::from_fn(m + n, b.ncols(), |i, j| if i < m { f64::from(b[[i, j]]) } else { 0.0 });
        (lhs, rhs)
    } else {
        (to_f64(a), to_f64(b))
    };
    let qr = lhs.as_ref().col_piv_qr();
    // Column pivoting orders |R_jj| descending, so the rank is the length of
    // the leading run above the tolerance.
    let r = qr.thin_R();
    let tolerance = f64::from(f32::EPSILON) * (n as f64).sqrt() * r[(0, 0)].abs();
    let rank = (0..r.nrows()).take_while(|&j| r[(j, j)].abs() > tolerance).count();
    if rank < n {
        return Err(LinalgError::RankDeficient { rank, columns: n });
    }
    to_f32(qr.solve_lstsq(rhs.as_ref()).as_ref(), "solution")
}

/// Refuses an empty or non-finite matrix.
fn check(a: &ArrayRef2<f32>, what: &'static str) -> Result<(), LinalgError> {
    if a.is_empty() {
        return Err(LinalgError::BadShape(format!("{what} is empty ({}×{})", a.nrows(), a.ncols())));
    }
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((row, col), _)) => Err(LinalgError::NonFinite { what, row, col }),
        None => Ok(()),
    }
}

/// A checked square, symmetric (within [`SYMMETRY_TOLERANCE`]) matrix in f64,
/// symmetrized.
fn symmetric(a: &ArrayRef2<f32>, what: &'static str) -> Result<Mat<f64>, LinalgError> {
    check(a, what)?;
    let n = a.nrows();
    if a.ncols() != n {
        return Err(LinalgError::BadShape(format!("{what} is {n}×{}, not square", a.ncols())));
    }
    let scale = a.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
    for i in 0..n {
        for j in 0..i {
            let difference = (f64::from(a[[i, j]]) - f64::from(a[[j, i]])).abs();
            if difference > SYMMETRY_TOLERANCE * scale {
                return Err(LinalgError::InvalidArgument(format!(
                    "{what} is not symmetric: [{i}, {j}] and [{j}, {i}] differ by {difference}"
                )));
            }
        }
    }
    Ok(Mat::from_fn(n, n, |i, j| 0.5 * (f64::from(a[[i, j]]) + f64::from(a[[j, i]]))))
}

/// Eigenvalues descending and their eigenvectors as columns, of a symmetric
/// f64 matrix.
fn eigen_descending(a: &Mat<f64>) -> Result<(Vec<f64>, Mat<f64>), LinalgError> {
    let evd = a
        .as_ref()
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| failed("symmetric eigendecomposition", format!("{e:?}")))?;
    // faer sorts ascending.
    let n = a.nrows();
    let values = (0..n).rev().map(|i| evd.S().column_vector()[i]).collect();
    let vectors = Mat::from_fn(n, n, |i, j| evd.U()[(i, n - 1 - j)]);
    Ok((values, vectors))
}

/// V·diag(d)·Vᵀ, symmetrized against round-off.
fn spectral(v: MatRef<'_, f64>, d: &[f64]) -> Mat<f64> {
    let scaled = Mat::from_fn(v.nrows(), v.ncols(), |i, j| v[(i, j)] * d[j]);
    let product = scaled.as_ref() * v.transpose();
    Mat::from_fn(product.nrows(), product.ncols(), |i, j| 0.5 * (product[(i, j)] + product[(j, i)]))
}

fn to_f64(a: &ArrayRef2<f32>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| f64::from(a[[i, j]]))
}

/// Rounds to f32, refusing values that do not fit.
fn to_f32(m: MatRef<'_, f64>, what: &'static str) -> Result<Array2<f32>, LinalgError> {
    finite(Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)] as f32), what)
}

fn finite(a: Array2<f32>, what: &'static str) -> Result<Array2<f32>, LinalgError> {
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((row, col), _)) => Err(LinalgError::NonFinite { what, row, col }),
        None => Ok(a),
    }
}

fn failed(decomposition: &'static str, reason: String) -> LinalgError {
    LinalgError::DecompositionFailed { decomposition, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A seeded matrix with entries uniform in [−1, 1).
    fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_simple_fn((rows, cols), || (f64::from(rng.next_u32()) / 2f64.powi(31) - 1.0) as f32)
    }

    fn wide(a: &Array2<f32>) -> Array2<f64> {
        a.mapv(f64::from)
    }

    fn product(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f64> {
        wide(a).dot(&wide(b))
    }

    fn frobenius(a: &Array2<f64>) -> f64 {
        a.iter().map(|v| v * v).sum::<f64>().sqrt()
    }

    /// max |a − b|.
    fn max_difference(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        assert_eq!(a.dim(), b.dim());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    /// U·diag(s)·Vt.
    fn reconstruct(svd: &Svd) -> Array2<f64> {
        let scaled = Array2::from_shape_fn(svd.u.dim(), |(i, j)| f64::from(svd.u[[i, j]]) * svd.singular_values[j]);
        scaled.dot(&wide(&svd.vt))
    }

    fn assert_orthonormal_columns(q: &Array2<f32>, tolerance: f64) {
        let gram = wide(q).t().dot(&wide(q));
        let identity = Array2::<f64>::eye(q.ncols());
        assert!(max_difference(&gram, &identity) < tolerance, "QᵀQ ≠ I: {gram}");
    }

    #[test]
    fn svd_of_a_hand_computed_3x2_matrix() {
        // AᵀA = [[5, 1], [1, 5]]: eigenvalues 6 and 4, so s = (√6, 2), with
        // v1 = (1, 1)/√2, u1 = A·v1/√6 = (1, 1, 1)/√3, v2 = (1, −1)/√2 and
        // u2 = A·v2/2 = (1, 0, −1)/√2, each up to a common sign.
        let a = array![[2.0f32, 0.0], [1.0, 1.0], [0.0, 2.0]];
        let svd = thin_svd(&a).unwrap();
        assert_eq!((svd.u.dim(), svd.len(), svd.vt.dim()), ((3, 2), 2, (2, 2)));
        assert!((svd.singular_values[0] - 6f64.sqrt()).abs() < 1e-6);
        assert!((svd.singular_values[1] - 2.0).abs() < 1e-6);
        let (r2, r3) = (0.5f64.sqrt(), (1.0f64 / 3.0).sqrt());
        let expected_u = [[r3, r3, r3], [r2, 0.0, -r2]];
        let expected_v = [[r2, r2], [r2, -r2]];
        for k in 0..2 {
            let sign = f64::from(svd.vt[[k, 0]]).signum();
            for (j, &e) in expected_v[k].iter().enumerate() {
                assert!((sign * f64::from(svd.vt[[k, j]]) - e).abs() < 1e-6, "v{k}");
            }
            for (i, &e) in expected_u[k].iter().enumerate() {
                assert!((sign * f64::from(svd.u[[i, k]]) - e).abs() < 1e-6, "u{k}");
            }
        }
        // The wide transpose has the same singular values and swapped shapes.
        let transposed = thin_svd(&a.t()).unwrap();
        assert_eq!((transposed.u.dim(), transposed.vt.dim()), ((2, 2), (2, 3)));
        assert!((transposed.singular_values[0] - 6f64.sqrt()).abs() < 1e-6);
        assert!((transposed.singular_values[1] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn svd_reconstructs_random_matrices() {
        for (rows, cols) in [(20, 12), (12, 20)] {
            let a = random(rows, cols, 7);
            let svd = thin_svd(&a).unwrap();
            let k = rows.min(cols);
            assert_eq!((svd.u.dim(), svd.len(), svd.vt.dim()), ((rows, k), k, (k, cols)));
            let s = &svd.singular_values;
            assert!(s.iter().all(|&v| v >= 0.0) && s.windows(2).into_iter().all(|w| w[0] >= w[1]), "{s}");
            // Relative Frobenius error of U·S·Vt below 1e-5.
            let error = frobenius(&(reconstruct(&svd) - wide(&a))) / frobenius(&wide(&a));
            assert!(error < 1e-5, "{rows}×{cols}: relative error {error}");
            assert_orthonormal_columns(&svd.u, 1e-5);
            assert_orthonormal_columns(&svd.vt.t().to_owned(), 1e-5);
        }
    }

    #[test]
    fn low_rank_factors_meet_eckart_young() {
        let a = random(20, 12, 11);
        let svd = thin_svd(&a).unwrap();
        for rank in [1, 5, 11] {
            let dropped = svd.singular_values.iter().skip(rank).map(|s| s * s).sum::<f64>().sqrt();
            assert_eq!(svd.truncation_error(rank), dropped);
            for split in [FactorSplit::Left, FactorSplit::Balanced] {
                let (l, r) = low_rank_factors(&a, rank, split).unwrap();
                assert_eq!((l.dim(), r.dim()), ((20, rank), (rank, 12)));
                // ‖A − L·R‖_F equals √(Σ dropped s_i²) to 1e-5 relative.
                let error = frobenius(&(wide(&a) - product(&l, &r)));
                assert!((error - dropped).abs() < 1e-5 * dropped, "rank {rank} {split:?}: {error} vs {dropped}");
                let diag = Array2::from_diag(&svd.singular_values.slice(ndarray::s![..rank]).to_owned());
                match split {
                    // R has orthonormal rows, LᵀL = diag(s²).
                    FactorSplit::Left => assert_orthonormal_columns(&r.t().to_owned(), 1e-5),
                    // LᵀL = R·Rᵀ = diag(s).
                    FactorSplit::Balanced => {
                        let scale = svd.singular_values[0];
                        assert!(max_difference(&wide(&l).t().dot(&wide(&l)), &diag) < 1e-5 * scale);
                        assert!(max_difference(&wide(&r).dot(&wide(&r).t()), &diag) < 1e-5 * scale);
                    }
                }
            }
        }
        // Rank 0 approximates by zero; ranks above min(m, n) are refused.
        let (l, r) = svd.factors(0, FactorSplit::Left).unwrap();
        assert_eq!((l.dim(), r.dim()), ((20, 0), (0, 12)));
        assert!((svd.truncation_error(0) - frobenius(&wide(&a))).abs() < 1e-5 * frobenius(&wide(&a)));
        assert!(svd.factors(12, FactorSplit::Left).is_ok());
        assert!(matches!(svd.factors(13, FactorSplit::Balanced), Err(LinalgError::InvalidArgument(_))));
        assert_eq!(svd.truncation_error(12), 0.0);
    }

    #[test]
    fn symmetric_eigen_of_a_rotated_diagonal() {
        // Q rotates by 0.3 rad about z, then by 0.7 rad about x; A = Q·diag(5, 2, 0.5)·Qᵀ.
        let (c1, s1, c2, s2) = (0.3f64.cos(), 0.3f64.sin(), 0.7f64.cos(), 0.7f64.sin());
        let rz = array![[c1, -s1, 0.0], [s1, c1, 0.0], [0.0, 0.0, 1.0]];
        let rx = array![[1.0, 0.0, 0.0], [0.0, c2, -s2], [0.0, s2, c2]];
        let q = rx.dot(&rz);
        let a = q.dot(&Array2::from_diag(&array![5.0, 2.0, 0.5])).dot(&q.t()).mapv(|v| v as f32);
        let eigen = symmetric_eigen(&a).unwrap();
        for (value, expected) in eigen.values.iter().zip([5.0, 2.0, 0.5]) {
            assert!((value - expected).abs() < 1e-5, "{value} vs {expected}");
        }
        assert_orthonormal_columns(&eigen.vectors, 1e-6);
        // Each eigenvector is ± the matching column of Q.
        for k in 0..3 {
            let dot: f64 = (0..3).map(|i| f64::from(eigen.vectors[[i, k]]) * q[[i, k]]).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-6, "column {k}: |⟨v, q⟩| = {}", dot.abs());
        }
        // A diagonal matrix: its entries, sorted descending.
        let diagonal = symmetric_eigen(&array![[1.0f32, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 2.0]]).unwrap();
        assert_eq!(diagonal.values.to_vec(), vec![3.0, 2.0, 1.0]);
    }

    #[test]
    fn psd_roots_of_a_full_rank_gram_matrix() {
        // Known roots of a diagonal matrix.
        let roots = psd_sqrt_and_inverse_sqrt(&array![[4.0f32, 0.0], [0.0, 9.0]], 1e-6).unwrap();
        assert!(max_difference(&wide(&roots.sqrt), &array![[2.0, 0.0], [0.0, 3.0]]) < 1e-6);
        assert!(max_difference(&wide(&roots.inv_sqrt), &array![[0.5, 0.0], [0.0, 1.0 / 3.0]]) < 1e-6);
        assert_eq!(roots.clamped, 0);

        // Σ = XᵀX/40 of 40 samples of 12 features: full rank.
        let x = random(40, 12, 3);
        let sigma = (product(&x.t().to_owned(), &x) / 40.0).mapv(|v| v as f32);
        let roots = psd_sqrt_and_inverse_sqrt(&sigma, 1e-8).unwrap();
        assert_eq!(roots.clamped, 0);
        let scale = frobenius(&wide(&sigma));
        // S^½·S^½ ≈ Σ to 1e-5 relative; S^½·S^-½ ≈ I to 1e-5 per entry.
        assert!(frobenius(&(product(&roots.sqrt, &roots.sqrt) - wide(&sigma))) < 1e-5 * scale);
        assert!(max_difference(&product(&roots.sqrt, &roots.inv_sqrt), &Array2::eye(12)) < 1e-5);
        // Both roots are symmetric.
        assert_eq!(roots.sqrt, roots.sqrt.t());
        assert_eq!(roots.inv_sqrt, roots.inv_sqrt.t());
    }

    #[test]
    fn psd_roots_floor_a_rank_deficient_gram_matrix() {
        // Σ = XᵀX of 3 samples of 6 features: rank 3, three zero eigenvalues.
        let x = random(3, 6, 5);
        let sigma = product(&x.t().to_owned(), &x).mapv(|v| v as f32);
        let exact = symmetric_eigen(&sigma).unwrap().values;
        assert!(exact[3].abs() < 1e-5 * exact[0], "{exact}");
        let relative_floor = 1e-3;
        let floor = relative_floor * exact[0];
        let roots = psd_sqrt_and_inverse_sqrt(&sigma, relative_floor).unwrap();
        assert_eq!(roots.clamped, 3);
        // S^½·S^-½ is still I, and the inverse root is finite: its largest
        // eigenvalue is 1/√floor.
        assert!(max_difference(&product(&roots.sqrt, &roots.inv_sqrt), &Array2::eye(6)) < 1e-4);
        let inverse = symmetric_eigen(&roots.inv_sqrt).unwrap().values;
        assert!((inverse[0] * floor.sqrt() - 1.0).abs() < 1e-4, "{inverse}");
        // S^½·S^½ keeps Σ's three eigenvalues and has the floor for the others.
        let squared = product(&roots.sqrt, &roots.sqrt).mapv(|v| v as f32);
        let values = symmetric_eigen(&squared).unwrap().values;
        for i in 0..6 {
            let expected = if i < 3 { exact[i] } else { floor };
            assert!((values[i] - expected).abs() < 1e-5 * exact[0], "eigenvalue {i}: {} vs {expected}", values[i]);
        }
        // A zero matrix has no scale to floor against; floors outside (0, 1] are refused.
        let zero = Array2::<f32>::zeros((3, 3));
        assert!(matches!(psd_sqrt_and_inverse_sqrt(&zero, 1e-3), Err(LinalgError::DecompositionFailed { .. })));
        for bad in [0.0, -1.0, 1.5, f64::NAN] {
            assert!(matches!(psd_sqrt_and_inverse_sqrt(&sigma, bad), Err(LinalgError::InvalidArgument(_))));
        }
    }

    #[test]
    fn cholesky_solve_of_a_known_system() {
        // A⁻¹ = [[3, −2], [−2, 4]]/8.
        let a = array![[4.0f32, 2.0], [2.0, 3.0]];
        let b = array![[2.0f32, 0.0], [1.0, 8.0]];
        let x = cholesky_solve(&a, &b).unwrap();
        assert!(max_difference(&wide(&x), &array![[0.5, -2.0], [0.0, 4.0]]) < 1e-6, "{x}");
        // Indefinite: eigenvalues 3 and −1.
        let indefinite = array![[1.0f32, 2.0], [2.0, 1.0]];
        assert!(matches!(cholesky_solve(&indefinite, &b), Err(LinalgError::DecompositionFailed { .. })));
    }

    #[test]
    fn least_squares_of_overdetermined_systems() {
        // Fitting y = c + m·t to (0, 1), (1, 3), (2, 4), (3, 4): the normal
        // equations [[4, 6], [6, 14]]·(c, m) = (12, 23) give c = 1.5, m = 1.
        let a = array![[1.0f32, 0.0], [1.0, 1.0], [1.0, 2.0], [1.0, 3.0]];
        let b = array![[1.0f32], [3.0], [4.0], [4.0]];
        let x = least_squares(&a, &b, 0.0).unwrap();
        assert!(max_difference(&wide(&x), &array![[1.5], [1.0]]) < 1e-6, "{x}");

        // A consistent 30×5 system with two right-hand sides: the exact solution.
        let a = random(30, 5, 13);
        let expected = random(5, 2, 17);
        let b = product(&a, &expected).mapv(|v| v as f32);
        let x = least_squares(&a, &b, 0.0).unwrap();
        assert!(max_difference(&wide(&x), &wide(&expected)) < 1e-5, "{x} vs {expected}");
    }

    #[test]
    fn least_squares_rank_deficiency_and_ridge() {
        // Two equal columns c: rank 1 without a ridge. With ridge λ the
        // solution is symmetric, x1 = x2 = cᵀb/(2·cᵀc + λ) = 6/(2·3 + 1) here.
        let a = array![[1.0f32, 1.0], [1.0, 1.0], [1.0, 1.0]];
        let b = array![[1.0f32], [2.0], [3.0]];
        assert_eq!(least_squares(&a, &b, 0.0), Err(LinalgError::RankDeficient { rank: 1, columns: 2 }));
        let x = least_squares(&a, &b, 1.0).unwrap();
        assert!(max_difference(&wide(&x), &array![[6.0 / 7.0], [6.0 / 7.0]]) < 1e-6, "{x}");
        // A = I: x = b/(1 + λ).
        let x = least_squares(&Array2::eye(3), &array![[2.0f32], [4.0], [6.0]], 1.0).unwrap();
        assert!(max_difference(&wide(&x), &array![[1.0], [2.0], [3.0]]) < 1e-6, "{x}");
        // Fewer rows than columns: deficient without a ridge, solvable with one.
        let wide_a = random(2, 3, 19);
        let rhs = random(2, 1, 23);
        assert!(matches!(least_squares(&wide_a, &rhs, 0.0), Err(LinalgError::RankDeficient { columns: 3, .. })));
        assert_eq!(least_squares(&wide_a, &rhs, 1e-3).unwrap().dim(), (3, 1));
        // A zero matrix has rank 0.
        let zero = Array2::<f32>::zeros((4, 2));
        assert_eq!(
            least_squares(&zero, &random(4, 1, 1), 0.0),
            Err(LinalgError::RankDeficient { rank: 0, columns: 2 })
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let good = random(4, 3, 29);
        let square = array![[2.0f32, 1.0], [1.0, 2.0]];
        let mut nan = good.clone();
        nan[[2, 1]] = f32::NAN;
        let mut infinite = square.clone();
        infinite[[1, 0]] = f32::INFINITY;
        infinite[[0, 1]] = f32::INFINITY;
        let empty = Array2::<f32>::zeros((0, 3));
        let non_finite = |r: Result<_, LinalgError>, row, col| {
            assert!(
                matches!(r, Err(LinalgError::NonFinite { row: r_, col: c_, .. }) if r_ == row && c_ == col),
                "{r:?}"
            );
        };
        let bad_shape = |r: Result<_, LinalgError>| assert!(matches!(r, Err(LinalgError::BadShape(_))), "{r:?}");

        non_finite(thin_svd(&nan).map(|_| ()), 2, 1);
        non_finite(low_rank_factors(&nan, 1, FactorSplit::Left).map(|_| ()), 2, 1);
        non_finite(symmetric_eigen(&infinite).map(|_| ()), 0, 1);
        non_finite(psd_sqrt_and_inverse_sqrt(&infinite, 1e-3).map(|_| ()), 0, 1);
        non_finite(cholesky_solve(&infinite, &square).map(|_| ()), 0, 1);
        non_finite(cholesky_solve(&square, &infinite).map(|_| ()), 0, 1);
        non_finite(least_squares(&nan, &random(4, 1, 1), 0.0).map(|_| ()), 2, 1);
        non_finite(
            least_squares(&good, &nan.column(1).to_owned().insert_axis(ndarray::Axis(1)), 0.0).map(|_| ()),
            2,
            0,
        );

        bad_shape(thin_svd(&empty).map(|_| ()));
        bad_shape(symmetric_eigen(&empty).map(|_| ()));
        bad_shape(least_squares(&good, &Array2::zeros((4, 0)), 0.0).map(|_| ()));
        bad_shape(symmetric_eigen(&good).map(|_| ()));
        bad_shape(psd_sqrt_and_inverse_sqrt(&good, 1e-3).map(|_| ()));
        bad_shape(cholesky_solve(&square, &random(3, 1, 1)).map(|_| ()));
        bad_shape(cholesky_solve(&good, &random(4, 1, 1)).map(|_| ()));
        bad_shape(least_squares(&good, &random(5, 1, 1), 0.0).map(|_| ()));

        let asymmetric = array![[1.0f32, 2.0], [0.0, 1.0]];
        assert!(matches!(symmetric_eigen(&asymmetric), Err(LinalgError::InvalidArgument(_))));
        assert!(matches!(cholesky_solve(&asymmetric, &square), Err(LinalgError::InvalidArgument(_))));
        for ridge in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(least_squares(&good, &random(4, 1, 1), ridge), Err(LinalgError::InvalidArgument(_))));
        }
        // Views work as well as owned matrices.
        assert_eq!(thin_svd(&good.view()).unwrap(), thin_svd(&good).unwrap());
    }
}
