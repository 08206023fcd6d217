//! Calibration statistics: the range each captured activation is quantized
//! to, from one pass of the evaluator over calibration samples.
//!
//! Every value keeps its exact min and max and a signed histogram whose range
//! doubles when a sample exceeds it (bins merge in pairs, so no count is ever
//! re-guessed), so one pass serves all methods:
//! - `minmax`: the observed min and max;
//! - `percentile(p)`: the (100 − p)% and p% quantiles;
//! - `entropy`: the clipping threshold T on |x| whose 128-level quantization
//!   loses the least information (KL divergence between the clipped histogram
//!   and its quantized form), applied as [−T, T] ∩ [min, max].
//!
//! Every range includes 0, so zero is exactly representable (ONNX's
//! asymmetric quantization needs that for padding and ReLU).
//!
//! The same pass averages the values it is asked to, sample by sample (the
//! mean inputs that bias correction needs, see
//! [`crate::families::quantize::bias_correction`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::statistics::{MeanAccumulator, MeanActivation, MomentRequest, SecondMoment, SecondMomentAccumulator};
use super::{EvalError, Evaluator, NamedTensor};

/// How a value's range is chosen from its statistics.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum RangeMethod {
    MinMax,
    /// Keep this percentage of values inside the range (e.g. 99.99).
    Percentile(f64),
    Entropy,
}

/// The range an activation is quantized to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ActivationRange {
    pub min: f64,
    pub max: f64,
}

/// Bins of the signed histogram (a multiple of 4, so halving stays aligned).
const BINS: usize = 2048;
/// At most about this many values of one tensor of one sample enter the histogram.
const HISTOGRAM_VALUES_PER_SAMPLE: usize = 1 << 16;
/// Levels of |x| the entropy method quantizes to (int8's magnitude).
const ENTROPY_LEVELS: usize = 128;

/// Statistics of one value over all samples seen.
#[derive(Clone, Debug)]
pub struct ValueStatistics {
    min: f64,
    max: f64,
    /// The histogram covers [−limit, limit] in BINS equal bins; empty when
    /// the method needs only min and max.
    limit: f64,
    counts: Vec<u64>,
    /// Values entered in the histogram; without one, samples that held a
    /// finite value (`range` only asks whether any was seen).
    total: u64,
}

impl ValueStatistics {
    /// Empty statistics that keep what `method` needs: the histogram only
    /// for percentile and entropy (filling it is most of a minmax pass's cost).
    pub fn for_method(method: RangeMethod) -> ValueStatistics {
        let bins = if method == RangeMethod::MinMax { 0 } else { BINS };
        ValueStatistics { min: f64::INFINITY, max: f64::NEG_INFINITY, limit: 0.0, counts: vec![0; bins], total: 0 }
    }

    /// Adds the finite values of one sample (non-finite ones are skipped).
    pub fn add(&mut self, values: &[f32]) {
        let (low, high) = finite_min_max(values);
        if low > high {
            return;
        }
        self.min = self.min.min(f64::from(low));
        self.max = self.max.max(f64::from(high));
        if self.counts.is_empty() {
            self.total += 1;
            return;
        }
        let peak = f64::from(low.abs().max(high.abs()));
        if self.limit == 0.0 {
            self.limit = if peak > 0.0 { peak } else { f64::MIN_POSITIVE };
        }
        while peak > self.limit {
            self.double_limit();
        }
        // bin = floor((v + limit) / width); `as usize` saturates below 0.
        let per_bin = (BINS as f64 / (2.0 * self.limit)) as f32;
        let offset = self.limit as f32;
        let last = BINS - 1;
        // Large tensors feed the histogram an evenly strided subset (odd
        // stride, so it does not line up with power-of-two rows); min and
        // max above stay exact.
        let stride = (values.len() / HISTOGRAM_VALUES_PER_SAMPLE).max(1) | 1;
        for &v in values.iter().step_by(stride).filter(|v| v.is_finite()) {
            let bin = (((v + offset) * per_bin) as usize).min(last);
            self.counts[bin] += 1;
            self.total += 1;
        }
    }

    /// Doubles the covered range: old bins i, i+1 of the middle half land in
    /// new bin BINS/4 + i/2.
    fn double_limit(&mut self) {
        let mut merged = vec![0; BINS];
        for (i, &count) in self.counts.iter().enumerate() {
            merged[BINS / 4 + i / 2] += count;
        }
        self.counts = merged;
        self.limit *= 2.0;
    }

    /// The range by `method`; `None` when no finite value was seen.
    pub fn range(&self, method: RangeMethod) -> Option<ActivationRange> {
        if self.total == 0 {
            return None;
        }
        let (low, high) = match method {
            RangeMethod::MinMax => (self.min, self.max),
            RangeMethod::Percentile(p) => {
                let keep = (p / 100.0).clamp(0.0, 1.0);
                let low = self.quantile(1.0 - keep).max(self.min);
                let high = self.quantile(keep).min(self.max);
                (low, high)
            }
            RangeMethod::Entropy => {
                let threshold = self.entropy_threshold();
                (self.min.max(-threshold), self.max.min(threshold))
            }
        };
        Some(ActivationRange { min: low.min(0.0), max: high.max(0.0) })
    }

    /// The value below which a fraction `q` of the samples lie (bin edges).
    fn quantile(&self, q: f64) -> f64 {
        let width = 2.0 * self.limit / BINS as f64;
        let target = q * self.total as f64;
        let mut seen = 0.0;
        for (bin, &count) in self.counts.iter().enumerate() {
            seen += count as f64;
            if seen >= target && count > 0 {
                // The upper edge for the high side, the lower edge for the low side.
                let edge = if q >= 0.5 { bin + 1 } else { bin };
                return -self.limit + edge as f64 * width;
            }
        }
        self.limit
    }

    /// The |x| threshold with the least KL divergence after quantization.
    fn entropy_threshold(&self) -> f64 {
        let half = BINS / 2;
        // Magnitude histogram: bin k covers |x| in [k·w, (k+1)·w).
        let magnitude: Vec<f64> =
            (0..half).map(|k| (self.counts[half + k] + self.counts[half - 1 - k]) as f64).collect();
        let width = self.limit / half as f64;
        let used = magnitude.iter().rposition(|&c| c > 0.0).map_or(0, |k| k + 1);
        if used <= ENTROPY_LEVELS {
            return used as f64 * width;
        }
        let mut best = (f64::INFINITY, used);
        for edge in ENTROPY_LEVELS..=used {
            let divergence = clipped_divergence(&magnitude[..used], edge);
            if divergence < best.0 {
                best = (divergence, edge);
            }
        }
        best.1 as f64 * width
    }
}

/// The least and greatest finite value (`(inf, -inf)` when there is none).
/// Calibration scans every activation of every sample, so the common case
/// runs as plain lane-wise min and max (NaN fails every comparison and is
/// skipped); only a tensor that holds ±inf is scanned again with a filter.
fn finite_min_max(values: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let (mut low, mut high) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let v = chunk[lane];
            low[lane] = if v < low[lane] { v } else { low[lane] };
            high[lane] = if v > high[lane] { v } else { high[lane] };
        }
    }
    for &v in tail {
        low[0] = if v < low[0] { v } else { low[0] };
        high[0] = if v > high[0] { v } else { high[0] };
    }
    let low = low.iter().copied().fold(f32::INFINITY, f32::min);
    let high = high.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if low == f32::NEG_INFINITY || high == f32::INFINITY {
        let finite = values.iter().copied().filter(|v| v.is_finite());
        return finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    }
    (low, high)
}

/// KL(P‖Q) where P is the histogram clipped at `edge` (outliers added to its
/// last bin) and Q is P quantized to ENTROPY_LEVELS levels, each level's mass
/// spread evenly over its nonzero bins.
fn clipped_divergence(histogram: &[f64], edge: usize) -> f64 {
    let mut reference = histogram[..edge].to_vec();
    reference[edge - 1] += histogram[edge..].iter().sum::<f64>();
    let mut quantized = vec![0.0; edge];
    for level in 0..ENTROPY_LEVELS {
        let start = level * edge / ENTROPY_LEVELS;
        let end = ((level + 1) * edge / ENTROPY_LEVELS).max(start + 1).min(edge);
        // Q is built from the unclipped bins, so clipping's loss shows.
        let mass: f64 = histogram[start..end].iter().sum();
        let nonzero = histogram[start..end].iter().filter(|&&c| c > 0.0).count();
        for bin in start..end {
            if histogram[bin] > 0.0 {
                quantized[bin] = mass / nonzero as f64;
            }
        }
    }
    let (p_total, q_total): (f64, f64) = (reference.iter().sum(), quantized.iter().sum());
    reference
        .iter()
        .zip(&quantized)
        .filter(|(&p, _)| p > 0.0)
        .map(|(&p, &q)| {
            let (p, q) = (p / p_total, q.max(1e-12) / q_total);
            p * (p / q).ln()
        })
        .sum()
}

/// Ranges of every captured value (the evaluator's captures), over `samples`.
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    pub method: RangeMethod,
    pub samples: usize,
    pub ranges: BTreeMap<String, ActivationRange>,
    /// The elementwise means of the values asked for (those whose samples
    /// all had the same dims and finite values).
    #[serde(skip)]
    pub means: BTreeMap<String, Arc<MeanActivation>>,
    /// The second moments asked for, by [`MomentRequest::key`] (those whose
    /// samples all had the same shapes and finite values).
    #[serde(skip)]
    pub second_moments: BTreeMap<String, Arc<SecondMoment>>,
}

/// Runs the samples through `evaluator` once and collects the statistics of
/// every float tensor it sees: the inputs fed, the graph outputs and the
/// captures; the means of those named in `mean_of`; and the second moments
/// `moments` asks for.
///
/// Samples run in rounds of one per available core; each round's results
/// enter the statistics in sample order, so the ranges do not depend on
/// the number of cores or on scheduling.
pub fn calibrate(
    evaluator: &Evaluator,
    samples: impl IntoIterator<Item = Vec<NamedTensor>>,
    method: RangeMethod,
    mean_of: &HashSet<String>,
    moments: &[MomentRequest],
) -> Result<Calibration, EvalError> {
    let mut statistics: BTreeMap<String, ValueStatistics> = BTreeMap::new();
    let mut sums: BTreeMap<String, MeanAccumulator> = BTreeMap::new();
    let mut products: Vec<SecondMomentAccumulator> = vec![SecondMomentAccumulator::default(); moments.len()];
    let mut record = |tensors: &[NamedTensor]| {
        for named in tensors {
            if let Some(values) = named.tensor.as_f32() {
                statistics.entry(named.name.clone()).or_insert_with(|| ValueStatistics::for_method(method)).add(values);
                if mean_of.contains(&named.name) {
                    sums.entry(named.name.clone()).or_default().add(named.tensor.shape(), values);
                }
                for (request, product) in moments.iter().zip(products.iter_mut()) {
                    if request.input == named.name {
                        request.add(product, named.tensor.shape(), values);
                    }
                }
            }
        }
    };
    let workers = crate::parallel::threads();
    let mut samples = samples.into_iter();
    let mut count = 0;
    loop {
        let round: Vec<Vec<NamedTensor>> = samples.by_ref().take(workers).collect();
        if round.is_empty() {
            break;
        }
        // `run` turns the model's panics into errors; any other panic is ours.
        let results = crate::parallel::side_by_side(&round, workers, |sample| evaluator.run(sample));
        for (sample, result) in round.iter().zip(results) {
            record(sample);
            record(&result?);
            count += 1;
        }
    }
    let ranges = statistics.into_iter().filter_map(|(name, s)| Some((name, s.range(method)?))).collect();
    let means = sums.into_iter().filter_map(|(name, sum)| Some((name, Arc::new(sum.mean()?)))).collect();
    let second_moments = moments
        .iter()
        .zip(products)
        .filter_map(|(request, product)| Some((request.key(), Arc::new(product.finish()?))))
        .collect();
    Ok(Calibration { method, samples: count, ranges, means, second_moments })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics with the histogram (as percentile and entropy keep them).
    fn statistics(batches: &[&[f64]]) -> ValueStatistics {
        statistics_for(RangeMethod::Entropy, batches)
    }

    fn statistics_for(method: RangeMethod, batches: &[&[f64]]) -> ValueStatistics {
        let mut s = ValueStatistics::for_method(method);
        for batch in batches {
            s.add(&batch.iter().map(|&v| v as f32).collect::<Vec<f32>>());
        }
        s
    }

    /// Seeded standard-normal values (Box–Muller over a small LCG).
    fn normal(count: usize) -> Vec<f64> {
        let mut state = 12345u64;
        let mut uniform = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..count).map(|_| (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()).collect()
    }

    #[test]
    fn minmax_is_exact_and_includes_zero() {
        for method in [RangeMethod::MinMax, RangeMethod::Entropy] {
            let s = statistics_for(method, &[&[0.5, 2.0], &[1.0, 7.5]]);
            assert_eq!(s.range(RangeMethod::MinMax), Some(ActivationRange { min: 0.0, max: 7.5 }));
            let s = statistics_for(method, &[&[-3.0, -1.0]]);
            assert_eq!(s.range(RangeMethod::MinMax), Some(ActivationRange { min: -3.0, max: 0.0 }));
            assert_eq!(statistics_for(method, &[&[f64::NAN]]).range(RangeMethod::MinMax), None);
        }
        assert!(ValueStatistics::for_method(RangeMethod::MinMax).counts.is_empty());
        assert_eq!(ValueStatistics::for_method(RangeMethod::MinMax).range(RangeMethod::MinMax), None);
    }

    #[test]
    fn min_max_skips_non_finite_values_in_lanes_and_tail() {
        let mut values: Vec<f32> = (0..37).map(|i| i as f32 - 10.0).collect();
        values[3] = f32::NAN;
        values[20] = f32::INFINITY;
        values[35] = f32::NEG_INFINITY;
        assert_eq!(finite_min_max(&values), (-10.0, 26.0));
        assert_eq!(finite_min_max(&[f32::NAN, f32::INFINITY]), (f32::INFINITY, f32::NEG_INFINITY));
        assert_eq!(finite_min_max(&[]), (f32::INFINITY, f32::NEG_INFINITY));
    }

    #[test]
    fn growing_range_keeps_every_count() {
        // The second batch is 100x wider: the histogram doubles 7 times.
        let s = statistics(&[&[1.0, -1.0, 0.25], &[100.0, -50.0]]);
        assert_eq!(s.total, 5);
        assert_eq!(s.counts.iter().sum::<u64>(), 5);
        assert!(s.limit >= 100.0 && s.limit < 200.0);
    }

    #[test]
    fn percentile_drops_the_outliers_and_100_keeps_all() {
        let mut values = normal(100_000);
        values.push(1000.0);
        let s = statistics(&[&values]);
        let all = s.range(RangeMethod::Percentile(100.0)).unwrap();
        assert_eq!(all.max, 1000.0);
        let kept = s.range(RangeMethod::Percentile(99.9)).unwrap();
        // The 99.9% quantile of N(0,1) is 3.09; bins here are 1 wide (limit 1024).
        assert!(kept.max > 2.0 && kept.max < 5.0, "{kept:?}");
        assert!(kept.min < -2.0 && kept.min > -5.0, "{kept:?}");
    }

    #[test]
    fn entropy_clips_a_long_tail_but_not_a_uniform_spread() {
        let mut values = normal(200_000);
        values.extend([40.0, -40.0]);
        let tail = statistics(&[&values]).range(RangeMethod::Entropy).unwrap();
        assert!(tail.max < 20.0 && tail.max > 2.0, "{tail:?}");
        let uniform: Vec<f64> = (0..10_000).map(|i| i as f64 / 10_000.0).collect();
        let flat = statistics(&[&uniform]).range(RangeMethod::Entropy).unwrap();
        assert!(flat.max > 0.95, "{flat:?}");
    }
}
