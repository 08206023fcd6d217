//! Streaming accumulation of one output's comparison metrics over samples, and the
//! per-output verdict built from them.

use serde::Serialize;

use super::format::{number, serialize_float};
use super::top_k::{class_count, TopKReport, TopKTally};
use super::{AllcloseThresholds, Side, TensorView, Tolerance, VerifyError};

/// Where an element sits: the sample (0-based) and its multi-index in that sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub sample: usize,
    pub index: Vec<usize>,
}

/// The allclose count, against the thresholds in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllcloseReport {
    pub rtol: f64,
    pub atol: f64,
    pub violations: u64,
    /// violations / elements (0 when there are no elements).
    pub fraction: f64,
}

/// One output's metrics and verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputReport {
    pub name: String,
    pub dtype: String,
    /// The shape of the samples; a dimension that differed between samples is null.
    pub shape: Vec<Option<usize>>,
    pub samples: usize,
    pub elements: u64,
    #[serde(serialize_with = "serialize_float")]
    pub max_abs: f64,
    /// Where max abs occurs; null when there are no elements.
    pub max_abs_at: Option<Location>,
    #[serde(serialize_with = "serialize_float")]
    pub rel_l2: f64,
    #[serde(serialize_with = "serialize_float")]
    pub cosine: f64,
    #[serde(serialize_with = "serialize_float")]
    pub sqnr_db: f64,
    /// Pairs that disagree and involve a NaN or an infinity.
    pub nonfinite_mismatches: u64,
    /// null when allclose was not counted (only rel L2 bounds were given).
    pub allclose: Option<AllcloseReport>,
    /// null when the output is not shaped like class scores.
    pub top_k: Option<TopKReport>,
    /// The criteria this output was checked against, e.g. "allclose rtol 1e-4 atol 1e-5".
    pub criteria: Vec<String>,
    pub passed: bool,
    /// One message per failed criterion, each naming the output.
    pub failures: Vec<String>,
    /// Every reference value was below [`TOO_SMALL_TO_COMPARE`]: reported,
    /// not judged (real inputs are needed to check it).
    pub too_small: bool,
}

/// An output whose reference values all stay below this magnitude is too
/// small to compare: relative errors of such values are noise, and the
/// default allclose atol (1e-5) would pass anything.
pub const TOO_SMALL_TO_COMPARE: f64 = 1e-5;

/// A running sum with Neumaier compensation, so that long outputs keep their precision
/// and the result depends only on the order of the elements, not on how they were split
/// into samples.
#[derive(Debug, Clone, Copy, Default)]
struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    fn add(&mut self, value: f64) {
        let total = self.sum + value;
        if total.is_finite() {
            self.compensation +=
                if self.sum.abs() >= value.abs() { (self.sum - total) + value } else { (value - total) + self.sum };
        }
        self.sum = total;
    }

    fn value(&self) -> f64 {
        if self.sum.is_finite() {
            self.sum + self.compensation
        } else {
            self.sum
        }
    }
}

/// Accumulates one output's comparison over samples; keeps no sample.
#[derive(Debug, Clone)]
pub struct OutputStats {
    name: String,
    dtype: String,
    tolerance: Tolerance,
    allclose: Option<AllcloseThresholds>,
    samples: usize,
    elements: u64,
    shape: Vec<Option<usize>>,
    max_abs: f64,
    max_abs_at: Option<Location>,
    reference_energy: CompensatedSum,
    candidate_energy: CompensatedSum,
    cross_energy: CompensatedSum,
    error_energy: CompensatedSum,
    nonfinite_mismatches: u64,
    allclose_violations: u64,
    /// None once a sample was not shaped like class scores.
    top_k: Option<TopKTally>,
    /// The largest finite |r| of the reference.
    reference_peak: f64,
}

/// The error an element contributes: 0 when the pair agrees (equal, both NaN, or the same
/// infinity), +inf when it disagrees through a NaN, otherwise |c − r|.
fn element_error(reference: f64, candidate: f64) -> f64 {
    if reference == candidate || (reference.is_nan() && candidate.is_nan()) {
        return 0.0;
    }
    let difference = (candidate - reference).abs();
    if difference.is_nan() {
        f64::INFINITY
    } else {
        difference
    }
}

/// Row-major flat index → multi-index.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (position, &dim) in shape.iter().enumerate().rev() {
        if dim > 0 {
            index[position] = flat % dim;
            flat /= dim;
        }
    }
    index
}

impl OutputStats {
    /// An empty accumulator for output `name` of element type `dtype` (for the report only).
    pub fn new(name: &str, dtype: &str, tolerance: &Tolerance) -> Result<OutputStats, VerifyError> {
        tolerance.validate()?;
        Ok(OutputStats {
            name: name.to_string(),
            dtype: dtype.to_string(),
            tolerance: *tolerance,
            allclose: tolerance.allclose_thresholds(),
            samples: 0,
            elements: 0,
            shape: Vec::new(),
            max_abs: 0.0,
            max_abs_at: None,
            reference_energy: CompensatedSum::default(),
            candidate_energy: CompensatedSum::default(),
            cross_energy: CompensatedSum::default(),
            error_energy: CompensatedSum::default(),
            nonfinite_mismatches: 0,
            allclose_violations: 0,
            top_k: Some(TopKTally::new()),
            reference_peak: 0.0,
        })
    }

    /// The output's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn check_value_count(&self, side: Side, tensor: &TensorView<'_>) -> Result<(), VerifyError> {
        let expected =
            tensor.shape.iter().try_fold(1usize, |product, &dim| product.checked_mul(dim)).ok_or_else(|| {
                VerifyError::ShapeOverflow {
                    output: self.name.clone(),
                    sample: self.samples,
                    shape: tensor.shape.to_vec(),
                }
            })?;
        if tensor.values.len() != expected {
            return Err(VerifyError::ValueCount {
                output: self.name.clone(),
                sample: self.samples,
                side,
                shape: tensor.shape.to_vec(),
                expected,
                actual: tensor.values.len(),
            });
        }
        Ok(())
    }

    /// Folds one sample in. The reference and candidate must have the same shape and as
    /// many values as their shape holds; on error nothing is added.
    pub fn add(&mut self, reference: TensorView<'_>, candidate: TensorView<'_>) -> Result<(), VerifyError> {
        if reference.shape != candidate.shape {
            return Err(VerifyError::ShapeMismatch {
                output: self.name.clone(),
                sample: self.samples,
                reference: reference.shape.to_vec(),
                candidate: candidate.shape.to_vec(),
            });
        }
        self.check_value_count(Side::Reference, &reference)?;
        self.check_value_count(Side::Candidate, &candidate)?;
        let shape = reference.shape;
        if self.samples > 0 && self.shape.len() != shape.len() {
            return Err(VerifyError::RankChanged {
                output: self.name.clone(),
                sample: self.samples,
                previous: self.shape.len(),
                current: shape.len(),
            });
        }
        self.merge_shape(shape);
        self.accumulate_elements(reference.values, candidate.values, shape);
        match (class_count(shape), self.top_k.as_mut()) {
            (Some(classes), Some(tally)) => tally.add(reference.values, candidate.values, classes),
            _ => self.top_k = None,
        }
        self.samples += 1;
        Ok(())
    }

    fn merge_shape(&mut self, shape: &[usize]) {
        if self.samples == 0 {
            self.shape = shape.iter().map(|&dim| Some(dim)).collect();
        } else {
            for (known, &dim) in self.shape.iter_mut().zip(shape) {
                if *known != Some(dim) {
                    *known = None;
                }
            }
        }
    }

    fn accumulate_elements(&mut self, reference: &[f64], candidate: &[f64], shape: &[usize]) {
        let mut sample_max: Option<(usize, f64)> = None;
        for (flat, (&r, &c)) in reference.iter().zip(candidate).enumerate() {
            let error = element_error(r, c);
            if sample_max.is_none_or(|(_, max)| error > max) {
                sample_max = Some((flat, error));
            }
            self.error_energy.add(error * error);
            if r.is_finite() {
                self.reference_peak = self.reference_peak.max(r.abs());
            }
            if r.is_finite() && c.is_finite() {
                self.reference_energy.add(r * r);
                self.candidate_energy.add(c * c);
                self.cross_energy.add(r * c);
            } else if error != 0.0 {
                self.nonfinite_mismatches += 1;
            }
            if self.allclose.is_some_and(|thresholds| !thresholds.is_close(r, c)) {
                self.allclose_violations += 1;
            }
        }
        self.elements += reference.len() as u64;
        if let Some((flat, error)) = sample_max {
            if self.max_abs_at.is_none() || error > self.max_abs {
                self.max_abs = error;
                self.max_abs_at = Some(Location { sample: self.samples, index: unravel(flat, shape) });
            }
        }
    }

    fn rel_l2(&self) -> f64 {
        let (error, reference) = (self.error_energy.value(), self.reference_energy.value());
        if error == 0.0 {
            0.0
        } else if reference == 0.0 {
            f64::INFINITY
        } else {
            (error / reference).sqrt()
        }
    }

    fn sqnr_db(&self) -> f64 {
        let (error, reference) = (self.error_energy.value(), self.reference_energy.value());
        if error == 0.0 {
            f64::INFINITY
        } else if reference == 0.0 {
            f64::NEG_INFINITY
        } else {
            10.0 * (reference / error).log10()
        }
    }

    fn cosine(&self) -> f64 {
        let (reference, candidate) = (self.reference_energy.value(), self.candidate_energy.value());
        if self.error_energy.value() == 0.0 {
            return 1.0;
        }
        match (reference == 0.0, candidate == 0.0) {
            (true, true) => 1.0,
            (true, false) | (false, true) => 0.0,
            (false, false) => {
                // One square root of the product rounds less than a product of two roots.
                let product = reference * candidate;
                let norms = if product.is_normal() { product.sqrt() } else { reference.sqrt() * candidate.sqrt() };
                (self.cross_energy.value() / norms).clamp(-1.0, 1.0)
            }
        }
    }

    /// " (max abs X at [sample S ]index [..])" for failure messages.
    fn max_abs_text(&self) -> String {
        match &self.max_abs_at {
            None => String::new(),
            Some(location) => {
                let sample = if self.samples > 1 { format!("sample {} ", location.sample) } else { String::new() };
                format!(" (max abs {} at {sample}index {:?})", number(self.max_abs), location.index)
            }
        }
    }

    /// The metrics so far and the verdict under the tolerance.
    pub fn report(&self) -> OutputReport {
        let rel_l2 = self.rel_l2();
        let top_k = self.top_k.as_ref().filter(|_| self.samples > 0).and_then(TopKTally::report);
        let mut criteria = Vec::new();
        let mut failures = Vec::new();
        let allclose = self.allclose.map(|thresholds| AllcloseReport {
            rtol: thresholds.rtol,
            atol: thresholds.atol,
            violations: self.allclose_violations,
            fraction: if self.elements == 0 { 0.0 } else { self.allclose_violations as f64 / self.elements as f64 },
        });
        if self.samples == 0 {
            failures.push(format!("{}: no samples were compared", self.name));
        }
        if let Some(thresholds) = self.allclose.filter(|_| self.tolerance.allclose_applies(top_k.is_some())) {
            let bounds = format!("rtol {} atol {}", number(thresholds.rtol), number(thresholds.atol));
            if self.allclose_violations > 0 {
                failures.push(format!(
                    "{}: {} of {} elements outside {bounds}{}",
                    self.name,
                    self.allclose_violations,
                    self.elements,
                    self.max_abs_text()
                ));
            }
            criteria.push(format!("allclose {bounds}"));
        }
        if let Some(limit) = self.tolerance.max_rel_l2 {
            if rel_l2.is_nan() || rel_l2 > limit {
                failures.push(format!(
                    "{}: rel L2 {} above {}{}",
                    self.name,
                    number(rel_l2),
                    number(limit),
                    self.max_abs_text()
                ));
            }
            criteria.push(format!("rel L2 <= {}", number(limit)));
        }
        if let (Some(minimum), Some(top_k)) = (self.tolerance.min_top1, top_k.as_ref()) {
            if top_k.top1 < minimum {
                failures.push(format!(
                    "{}: top-1 agreement {} below {} ({} of {} rows)",
                    self.name,
                    number(top_k.top1),
                    number(minimum),
                    top_k.top1_matches,
                    top_k.rows
                ));
            }
            criteria.push(format!("top-1 >= {}", number(minimum)));
        }
        // Values this small (a trained detector's sigmoid on random inputs
        // reads ~1e-7) carry no signal: rel L2 measures noise and allclose's
        // atol passes anything, so the output is reported, not judged.
        let too_small =
            self.samples > 0 && self.nonfinite_mismatches == 0 && self.reference_peak < TOO_SMALL_TO_COMPARE;
        if too_small {
            failures.clear();
            criteria = vec![format!(
                "none: every reference value is below {} in magnitude (largest {}), too small to compare",
                number(TOO_SMALL_TO_COMPARE),
                number(self.reference_peak)
            )];
        }
        OutputReport {
            too_small,
            name: self.name.clone(),
            dtype: self.dtype.clone(),
            shape: self.shape.clone(),
            samples: self.samples,
            elements: self.elements,
            max_abs: self.max_abs,
            max_abs_at: self.max_abs_at.clone(),
            rel_l2,
            cosine: self.cosine(),
            sqnr_db: self.sqnr_db(),
            nonfinite_mismatches: self.nonfinite_mismatches,
            allclose,
            top_k,
            criteria,
            passed: failures.is_empty(),
            failures,
        }
    }
}
