//! The metrics and pass/fail policy of `pare verify`: how far a candidate model's outputs
//! are from a reference's (another model's, or stored golden outputs), and whether that is
//! close enough. This module is pure arithmetic on `f64` slices; producing the tensors
//! (the evaluator) and the command line live elsewhere.
//!
//! One [`OutputStats`] accumulates one output over any number of samples without keeping
//! them; [`OutputStats::report`] turns the sums into an [`OutputReport`] with a verdict, and
//! [`Report::new`] gathers the outputs' verdicts. [`table`] renders a report for people,
//! serde renders it as JSON. [`compare`] runs samples through two runtimes (or one and the
//! golden outputs) and fills the stats.
//!
//! # Metrics (all aggregated over every element of every sample)
//!
//! - **max abs**: the largest |c − r|, with the sample and multi-index where it occurs
//!   (the first such element when several tie).
//! - **rel L2**: sqrt(Σ(c − r)² / Σr²). When Σr² = 0 it is 0 if the candidate is identical
//!   and +inf otherwise.
//! - **cosine**: Σrc / (‖r‖·‖c‖), clamped to [−1, 1]; 1 when both are all zeros, 0 when only
//!   one is.
//! - **SQNR dB**: 10·log10(Σr² / Σ(c − r)²); +inf when the candidate is identical, −inf when
//!   the reference is all zeros and the candidate is not.
//! - **allclose violations**: elements failing numpy's `isclose(c, r, rtol, atol)`, that is
//!   |c − r| ≤ atol + rtol·|r|, except that NaN matches only NaN (numpy's `equal_nan=True`) and
//!   an infinity matches only the same infinity.
//! - **top-1 / top-5**, for outputs shaped like class scores ([N, C] with C ≥ 2, or
//!   [N, C, 1, 1]): over the N rows, the fraction whose candidate arg-max equals the
//!   reference's (top-1), and the fraction whose reference arg-max is among the candidate's
//!   five highest scores (top-5; skipped when C < 5). Ties go to the lower class index and
//!   NaN ranks below every number.
//!
//! Non-finite values: a pair that agrees (both NaN, or the same infinity) adds no error and
//! is left out of the norms; a pair that disagrees and involves a NaN or infinity counts as
//! an infinite error (so max abs and rel L2 are +inf, SQNR −inf) and is counted in
//! `nonfinite_mismatches`. Norms and cosine are taken over the pairs where both are finite.
//!
//! # JSON
//!
//! JSON has no infinities or NaN, so every metric that can be non-finite is written as a
//! number when finite and otherwise as the string `"inf"`, `"-inf"` or `"nan"`.
//!
//! # Policy
//!
//! See [`Tolerance`]: an output passes when every criterion that applies to it holds.

mod compare;
mod format;
mod stats;
#[cfg(test)]
mod tests;
mod top_k;

use serde::{Deserialize, Serialize};

pub use compare::{compare, CompareError};
pub use format::table;
pub use stats::{AllcloseReport, Location, OutputReport, OutputStats};
pub use top_k::TopKReport;

/// numpy's default relative tolerance, used for `rtol` when only `atol` is given.
pub const NUMPY_RTOL: f64 = 1e-5;
/// numpy's default absolute tolerance, used for `atol` when only `rtol` is given.
pub const NUMPY_ATOL: f64 = 1e-8;
/// Relative tolerance of the default policy (no criterion given).
pub const DEFAULT_RTOL: f64 = 1e-4;
/// Absolute tolerance of the default policy (no criterion given).
pub const DEFAULT_ATOL: f64 = 1e-5;

/// Errors in the data handed to the comparison (exit code 2 in the CLI).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "output {output:?}, sample {sample}: reference shape {reference:?} differs from candidate shape {candidate:?}"
    )]
    ShapeMismatch { output: String, sample: usize, reference: Vec<usize>, candidate: Vec<usize> },
    #[error(
        "output {output:?}, sample {sample}: the {side} has {actual} values but its shape {shape:?} holds {expected}"
    )]
    ValueCount { output: String, sample: usize, side: Side, shape: Vec<usize>, expected: usize, actual: usize },
    #[error("output {output:?}, sample {sample}: shape {shape:?} has more elements than fit in memory")]
    ShapeOverflow { output: String, sample: usize, shape: Vec<usize> },
    #[error("output {output:?}, sample {sample}: rank changed from {previous} in earlier samples to {current}")]
    RankChanged { output: String, sample: usize, previous: usize, current: usize },
    #[error("invalid tolerance: {name} is {value}, it must be {requirement}")]
    InvalidTolerance { name: &'static str, value: f64, requirement: &'static str },
}

/// Which of the two tensors of a pair an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Reference,
    Candidate,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Reference => "reference",
            Side::Candidate => "candidate",
        })
    }
}

/// One sample of one output: its values in row-major order and its shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorView<'a> {
    pub values: &'a [f64],
    pub shape: &'a [usize],
}

impl<'a> TensorView<'a> {
    pub fn new(values: &'a [f64], shape: &'a [usize]) -> Self {
        TensorView { values, shape }
    }
}

/// The pass/fail policy. An output passes when every criterion that applies to it holds:
///
/// - **allclose** applies when `rtol` or `atol` is given (the missing one takes numpy's
///   default, [`NUMPY_RTOL`] or [`NUMPY_ATOL`]). When no criterion at all is given, the
///   default policy is allclose with [`DEFAULT_RTOL`] = 1e-4 and [`DEFAULT_ATOL`] = 1e-5.
/// - **rel L2 ≤ `max_rel_l2`** applies to every output when given.
/// - **top-1 ≥ `min_top1`** applies only to outputs shaped like class scores. An output to
///   which no given criterion applies (only `min_top1` given, output not class scores) is
///   checked with the default allclose instead, so nothing passes unchecked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    pub rtol: Option<f64>,
    pub atol: Option<f64>,
    pub max_rel_l2: Option<f64>,
    pub min_top1: Option<f64>,
}

/// The thresholds of numpy's `isclose`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AllcloseThresholds {
    pub rtol: f64,
    pub atol: f64,
}

impl AllcloseThresholds {
    /// numpy's `isclose(candidate, reference, rtol, atol, equal_nan=True)`.
    pub fn is_close(&self, reference: f64, candidate: f64) -> bool {
        if reference.is_nan() || candidate.is_nan() {
            return reference.is_nan() && candidate.is_nan();
        }
        if reference.is_infinite() || candidate.is_infinite() {
            return reference == candidate;
        }
        (candidate - reference).abs() <= self.atol + self.rtol * reference.abs()
    }
}

impl Tolerance {
    /// Checks that every given bound is a finite, non-negative number (and `min_top1` at most 1).
    pub fn validate(&self) -> Result<(), VerifyError> {
        let bounds = [("rtol", self.rtol), ("atol", self.atol), ("max_rel_l2", self.max_rel_l2)];
        for (name, value) in bounds {
            if let Some(value) = value.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(VerifyError::InvalidTolerance { name, value, requirement: "a finite number >= 0" });
            }
        }
        if let Some(value) = self.min_top1.filter(|v| !(0.0..=1.0).contains(v)) {
            return Err(VerifyError::InvalidTolerance { name: "min_top1", value, requirement: "between 0 and 1" });
        }
        Ok(())
    }

    fn allclose_given(&self) -> bool {
        self.rtol.is_some() || self.atol.is_some()
    }

    /// The allclose thresholds to count violations against while streaming: `None` when
    /// allclose can never be a criterion (only rel L2 bounds the outputs).
    pub(crate) fn allclose_thresholds(&self) -> Option<AllcloseThresholds> {
        if self.allclose_given() {
            Some(AllcloseThresholds { rtol: self.rtol.unwrap_or(NUMPY_RTOL), atol: self.atol.unwrap_or(NUMPY_ATOL) })
        } else if self.max_rel_l2.is_none() {
            Some(AllcloseThresholds { rtol: DEFAULT_RTOL, atol: DEFAULT_ATOL })
        } else {
            None
        }
    }

    /// Whether allclose is a criterion for an output, knowing whether top-1 applies to it.
    pub(crate) fn allclose_applies(&self, has_top1: bool) -> bool {
        self.allclose_given() || (self.max_rel_l2.is_none() && !(self.min_top1.is_some() && has_top1))
    }
}

/// The verdict over all outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// True when at least one output was compared and every output passed.
    pub passed: bool,
    /// The number of samples compared (the most any output saw).
    pub samples: usize,
    /// The policy as given (all null: the default allclose rtol 1e-4 atol 1e-5).
    pub tolerance: Tolerance,
    /// Why the verdict is a failure: every failing output's reasons, in output order.
    pub failures: Vec<String>,
    pub outputs: Vec<OutputReport>,
    /// The input shapes the samples had, each distinct one once, in order of appearance.
    pub input_shapes: Vec<crate::samples::InputShape>,
    /// What makes the verdict weaker than it looks: outputs too small to
    /// compare, inputs at a degenerate shape.
    pub warnings: Vec<String>,
    /// `pare optimize` with compression: the written model's output error
    /// on the probe samples, which must reproduce the one measured for the
    /// chosen candidate ([`Faithful`]).
    pub probe: Option<Faithful>,
}

/// The written model's output error on the probe samples beside the one
/// measured for the candidate it was written from: the export is faithful
/// when they agree within [`Faithful::TOLERANCE`] (relative, with
/// [`Faithful::FLOOR`] absolute below it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Faithful {
    pub measured: f64,
    pub written: f64,
    pub samples: usize,
}

impl Faithful {
    pub const TOLERANCE: f64 = 0.01;
    pub const FLOOR: f64 = 1e-4;

    pub fn agrees(&self) -> bool {
        (self.written - self.measured).abs() <= Faithful::FLOOR + Faithful::TOLERANCE * self.measured
    }
}

impl Report {
    /// Gathers the outputs' reports; nothing compared is a failure, not a vacuous pass.
    pub fn new(tolerance: Tolerance, outputs: Vec<OutputReport>) -> Report {
        let samples = outputs.iter().map(|output| output.samples).max().unwrap_or(0);
        let mut failures: Vec<String> = outputs.iter().flat_map(|output| output.failures.iter().cloned()).collect();
        if outputs.is_empty() {
            failures.push("no outputs were compared".to_string());
        } else if outputs.iter().all(|output| output.too_small) {
            failures.push(
                "every output was too small to compare on these inputs; verify on real ones (--calib DIR, --inputs DIR)"
                    .to_string(),
            );
        }
        let warnings = outputs
            .iter()
            .filter(|output| output.too_small)
            .map(|output| {
                format!(
                    "output '{}' is too small to compare on these inputs (every value below {}): not checked",
                    output.name,
                    format::number(stats::TOO_SMALL_TO_COMPARE)
                )
            })
            .collect();
        Report {
            passed: failures.is_empty(),
            samples,
            tolerance,
            failures,
            outputs,
            input_shapes: Vec::new(),
            warnings,
            probe: None,
        }
    }

    /// Adds a warning when the samples ran at a degenerate shape where the
    /// model leaves dims open (see [`crate::samples::degenerate_inputs`]).
    pub fn warn_if_degenerate(&mut self, model: &crate::ir::Model) {
        let degenerate: Vec<String> =
            crate::samples::degenerate_inputs(model, &self.input_shapes).iter().map(ToString::to_string).collect();
        if !degenerate.is_empty() {
            self.warnings.push(format!(
                "verified at a degenerate shape ({}): spatial dims below {} check almost nothing; \
                 give --input-shape or real samples",
                degenerate.join(", "),
                crate::samples::DEGENERATE_BELOW
            ));
        }
    }

    /// The names of the outputs that failed.
    pub fn failed_outputs(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().filter(|output| !output.passed).map(|output| output.name.as_str())
    }
}

/// Compares one output over a sequence of (reference, candidate) samples.
pub fn compare_output<'a>(
    name: &str,
    dtype: &str,
    samples: impl IntoIterator<Item = (TensorView<'a>, TensorView<'a>)>,
    tolerance: &Tolerance,
) -> Result<OutputReport, VerifyError> {
    let mut stats = OutputStats::new(name, dtype, tolerance)?;
    for (reference, candidate) in samples {
        stats.add(reference, candidate)?;
    }
    Ok(stats.report())
}
