//! Running the comparison: samples through a candidate runtime and a
//! reference (another runtime, or the golden outputs stored with each
//! sample), outputs paired by position, every output's metrics accumulated.

use super::{OutputStats, Report, TensorView, Tolerance, VerifyError};
use crate::eval::NamedTensor;
use crate::runtime::{Runtime, RuntimeError};
use crate::samples::{InputShape, Sample, SampleError};

/// Why a comparison could not be made (as opposed to failing the tolerance).
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Sample(#[from] SampleError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("{0}")]
    Mismatch(String),
}

/// Compares a candidate with a reference runtime (`None`: each sample's golden
/// outputs) over the samples; `candidate_label` names the candidate in errors.
pub fn compare(
    candidate: &mut Runtime,
    mut reference: Option<&mut Runtime>,
    samples: impl Iterator<Item = Result<Sample, SampleError>>,
    tolerance: &Tolerance,
    candidate_label: &str,
) -> Result<Report, CompareError> {
    let mut stats: Vec<OutputStats> = Vec::new();
    let mut input_shapes: Vec<InputShape> = Vec::new();
    for (index, sample) in samples.enumerate() {
        let sample = sample?;
        for input in &sample.inputs {
            let shape = InputShape { name: input.name.clone(), dims: input.tensor.shape().to_vec() };
            if !input_shapes.contains(&shape) {
                input_shapes.push(shape);
            }
        }
        let produced = candidate.run(&sample.inputs)?;
        let expected = match reference.as_deref_mut() {
            Some(reference) => reference.run(&sample.inputs)?,
            None if sample.expected.is_empty() => {
                return Err(CompareError::Mismatch(format!("sample {index} has no output_N.pb to compare with")))
            }
            None => sample.expected,
        };
        if expected.len() != produced.len() {
            return Err(CompareError::Mismatch(format!(
                "{candidate_label}: the candidate has {} outputs, the reference {}",
                produced.len(),
                expected.len()
            )));
        }
        for (position, (want, got)) in expected.iter().zip(&produced).enumerate() {
            // Outputs pair up by position; the name shown is the candidate's.
            let name = if got.name.is_empty() { want.name.as_str() } else { got.name.as_str() };
            if stats.len() <= position {
                let dtype = got.tensor.dtype().map_or("unknown".to_string(), |d| d.to_string());
                stats.push(OutputStats::new(name, &dtype, tolerance)?);
            }
            let numbers = |t: &NamedTensor| {
                t.tensor
                    .to_f64()
                    .ok_or_else(|| CompareError::Mismatch(format!("output '{}' holds no numbers to compare", t.name)))
            };
            let (want_values, got_values) = (numbers(want)?, numbers(got)?);
            stats[position].add(
                TensorView::new(&want_values, want.tensor.shape()),
                TensorView::new(&got_values, got.tensor.shape()),
            )?;
        }
    }
    let mut report = Report::new(*tolerance, stats.iter().map(OutputStats::report).collect());
    report.input_shapes = input_shapes;
    Ok(report)
}
