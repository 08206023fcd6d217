//! Calibration statistics the compression families ask for, accumulated
//! sample by sample as the embedded evaluator runs the calibration data:
//! elementwise means (bias correction), second moments of layer inputs
//! (data-aware factorization and refits, with the convolution patches they
//! are taken over), and where the statistics came from.
//! Value ranges and histograms are in [`super::calibrate`].

use serde::Serialize;

use super::calibrate::RangeMethod;
use crate::ir::conv_geometry::ConvGeometry;

/// [`CalibrationSummary::source`] when no `--calib` folder was given.
pub const RANDOM_SOURCE: &str = "random";

/// Where the activation ranges came from.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CalibrationSummary {
    /// The `--calib` folder, or `random` (seeded inputs: ranges will not
    /// match real data).
    pub source: String,
    pub samples: usize,
    pub method: RangeMethod,
}

/// The elementwise mean of a value over the calibration samples (every
/// sample must have the same dims).
#[derive(Clone, Debug, PartialEq)]
pub struct MeanActivation {
    pub dims: Vec<usize>,
    pub values: Vec<f64>,
}

impl MeanActivation {
    /// The mean over the leading axes, keeping the last `kept` ones: a Conv
    /// input's [C, spatial...] (averaged over the batch) or a Gemm input's [K].
    pub fn trailing(&self, kept: usize) -> Option<(Vec<usize>, Vec<f64>)> {
        let lead = self.dims.len().checked_sub(kept)?;
        let dims = self.dims[lead..].to_vec();
        let size: usize = dims.iter().product();
        if size == 0 || self.values.len() % size != 0 {
            return None;
        }
        let copies = self.values.len() / size;
        let mut mean = vec![0.0; size];
        for chunk in self.values.chunks(size) {
            mean.iter_mut().zip(chunk).for_each(|(m, v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= copies as f64);
        Some((dims, mean))
    }
}

/// Accumulates [`MeanActivation`]s sample by sample.
#[derive(Clone, Debug, Default)]
pub struct MeanAccumulator {
    dims: Vec<usize>,
    sums: Vec<f64>,
    samples: usize,
    /// A sample's dims differed from the first's: there is no one mean.
    mismatched: bool,
}

impl MeanAccumulator {
    pub fn add(&mut self, dims: &[usize], values: &[f32]) {
        if self.mismatched {
            return;
        }
        if self.samples == 0 {
            self.dims = dims.to_vec();
            self.sums = vec![0.0; values.len()];
        } else if self.dims != dims || self.sums.len() != values.len() {
            self.mismatched = true;
            self.sums = Vec::new();
            return;
        }
        self.sums.iter_mut().zip(values).for_each(|(s, &v)| *s += f64::from(v));
        self.samples += 1;
    }

    /// The mean, unless no sample came, dims differed or a value was not finite.
    pub fn mean(&self) -> Option<MeanActivation> {
        if self.mismatched || self.samples == 0 || self.sums.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let values = self.sums.iter().map(|s| s / self.samples as f64).collect();
        Some(MeanActivation { dims: self.dims.clone(), values })
    }
}

/// Accumulates the second-moment (Gram) matrix E[x·xᵀ] of a layer's input
/// vectors over the calibration data, and their mean: what data-aware
/// factorization (the SVD of W·Σ^½) and least-squares refits read. A MatMul
/// or Gemm input contributes each row of its last axis; a Conv input each
/// receptive field (channel-major patch, see [`patches`]).
#[derive(Clone, Debug, Default)]
pub struct SecondMomentAccumulator {
    dim: usize,
    /// Row-major dim × dim sums of x·xᵀ.
    products: Vec<f64>,
    sums: Vec<f64>,
    vectors: usize,
    /// A vector's length differed from the first's, or a value was not finite.
    broken: bool,
}

/// The second moment and mean of a layer's input vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct SecondMoment {
    pub dim: usize,
    /// Row-major dim × dim: E[x·xᵀ].
    pub matrix: Vec<f64>,
    pub mean: Vec<f64>,
    /// How many vectors it averages.
    pub vectors: usize,
}

impl SecondMomentAccumulator {
    /// Adds the vectors stored back to back in `values`, `dim` each.
    pub fn add(&mut self, values: &[f32], dim: usize) {
        if self.broken || dim == 0 {
            return;
        }
        if self.vectors == 0 {
            self.dim = dim;
            self.products = vec![0.0; dim * dim];
            self.sums = vec![0.0; dim];
        }
        if dim != self.dim || values.len() % dim != 0 || values.iter().any(|v| !v.is_finite()) {
            self.broken = true;
            return;
        }
        let rows = values.len() / dim;
        let x = ndarray::ArrayView2::from_shape((rows, dim), values).expect("rows·dim values");
        let x = x.mapv(f64::from);
        let gram = x.t().dot(&x);
        self.products.iter_mut().zip(gram.iter()).for_each(|(p, g)| *p += g);
        for row in x.rows() {
            self.sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        self.vectors += rows;
    }

    /// Marks the data inconsistent: there is no one second moment.
    pub fn invalidate(&mut self) {
        self.broken = true;
    }

    /// The second moment, unless no vector came or the data was inconsistent.
    pub fn finish(&self) -> Option<SecondMoment> {
        if self.broken || self.vectors == 0 {
            return None;
        }
        let n = self.vectors as f64;
        Some(SecondMoment {
            dim: self.dim,
            matrix: self.products.iter().map(|p| p / n).collect(),
            mean: self.sums.iter().map(|s| s / n).collect(),
            vectors: self.vectors,
        })
    }
}

/// The receptive fields of a 2-D convolution over one input `[C, H, W]`
/// (one image of the batch), channel-major (`c·kh·kw + i·kw + j`, the order
/// of a Conv weight's `[Cin, kh, kw]` slice), one per output position, back
/// to back, at every `step`-th output position; zero padding counts as
/// zeros, as the Conv reads it.
pub fn patches(image: &[f32], input: [usize; 3], kernel: [usize; 2], window: &PatchWindow, step: usize) -> Vec<f32> {
    let [channels, height, width] = input;
    let [kh, kw] = kernel;
    let [out_h, out_w] = window.output;
    let dim = channels * kh * kw;
    let positions: Vec<usize> = (0..out_h * out_w).step_by(step.max(1)).collect();
    let mut out = vec![0.0; positions.len() * dim];
    for (&position, patch) in positions.iter().zip(out.chunks_mut(dim)) {
        let (oy, ox) = (position / out_w, position % out_w);
        for c in 0..channels {
            for i in 0..kh {
                let y = (oy * window.strides[0] + i * window.dilations[0]) as isize - window.pads_begin[0] as isize;
                if y < 0 || y as usize >= height {
                    continue;
                }
                for j in 0..kw {
                    let x = (ox * window.strides[1] + j * window.dilations[1]) as isize - window.pads_begin[1] as isize;
                    if x >= 0 && (x as usize) < width {
                        patch[(c * kh + i) * kw + j] = image[(c * height + y as usize) * width + x as usize];
                    }
                }
            }
        }
    }
    out
}

/// The name the second moment of `input`'s vectors is kept under.
pub fn moment_key(input: &str, vectors: &MomentVectors) -> String {
    format!("{input}|{}", vectors.key())
}

/// Vectors taken from one sample at most (evenly spaced beyond that): a
/// second moment needs many vectors, not every one of a large feature map.
pub const MAX_VECTORS_PER_SAMPLE: usize = 4096;

/// A second moment a family asks calibration for: of the vectors a layer
/// reads from the value `input`, split as `vectors` says. Layers that read
/// the same value the same way share it, whatever rewrites made of them (a
/// Conv with a BatchNormalization folded in reads what the Conv read).
#[derive(Clone, Debug, PartialEq)]
pub struct MomentRequest {
    pub input: String,
    pub vectors: MomentVectors,
}

/// How a layer's input splits into the vectors its weight maps.
#[derive(Clone, Debug, PartialEq)]
pub enum MomentVectors {
    /// Each row of the last axis, this wide (MatMul, Gemm).
    Rows { width: usize },
    /// Each receptive field of a 2-D convolution (its attributes: strides,
    /// pads, dilations) over an `[N, C, H, W]` input, at each sample's size.
    Patches { channels: usize, kernel: [usize; 2], attributes: Vec<crate::onnx::proto::AttributeProto> },
}

impl MomentVectors {
    /// How the vectors are taken, as text: the width of rows, or a
    /// convolution's channels, kernel and the attributes that place its taps.
    pub fn key(&self) -> String {
        match self {
            MomentVectors::Rows { width } => format!("rows {width}"),
            MomentVectors::Patches { channels, kernel, attributes } => {
                let mut placement: Vec<String> = attributes
                    .iter()
                    .filter(|a| matches!(a.name.as_deref(), Some("strides" | "pads" | "dilations" | "auto_pad")))
                    .map(|a| {
                        format!(
                            "{}={:?}{}",
                            a.name.as_deref().unwrap_or(""),
                            a.ints,
                            String::from_utf8_lossy(a.s.as_deref().unwrap_or(&[]))
                        )
                    })
                    .collect();
                placement.sort();
                format!("patches {channels}x{}x{} {}", kernel[0], kernel[1], placement.join(" "))
            }
        }
    }
}

impl MomentRequest {
    /// The name its second moment is kept under: the input and how it splits.
    pub fn key(&self) -> String {
        moment_key(&self.input, &self.vectors)
    }

    /// Adds one captured value of `input` (with `dims`) to `accumulator`.
    pub fn add(&self, accumulator: &mut SecondMomentAccumulator, dims: &[usize], values: &[f32]) {
        match &self.vectors {
            MomentVectors::Rows { width } => {
                let rows = values.len() / (*width).max(1);
                let step = rows.div_ceil(MAX_VECTORS_PER_SAMPLE).max(1);
                if step == 1 {
                    accumulator.add(values, *width);
                } else {
                    let kept: Vec<f32> = values.chunks(*width).step_by(step).flatten().copied().collect();
                    accumulator.add(&kept, *width);
                }
            }
            MomentVectors::Patches { channels, kernel, attributes } => {
                let (height, width) = match dims {
                    [_, c, h, w] if c == channels => (*h, *w),
                    _ => {
                        // Not the layer's input after all: no one moment.
                        accumulator.invalidate();
                        return;
                    }
                };
                let Some(geometry) = ConvGeometry::new(attributes.as_slice(), &[height, width], kernel) else {
                    accumulator.invalidate();
                    return;
                };
                let window = PatchWindow {
                    strides: [geometry.strides[0], geometry.strides[1]],
                    dilations: [geometry.dilations[0], geometry.dilations[1]],
                    pads_begin: [geometry.pads_begin[0], geometry.pads_begin[1]],
                    output: [geometry.output[0], geometry.output[1]],
                };
                let image = channels * height * width;
                if image == 0 {
                    return;
                }
                let positions = window.output[0] * window.output[1];
                let step = positions.div_ceil(MAX_VECTORS_PER_SAMPLE).max(1);
                for one in values.chunks(image) {
                    let patches = patches(one, [*channels, height, width], *kernel, &window, step);
                    accumulator.add(&patches, channels * kernel[0] * kernel[1]);
                }
            }
        }
    }
}

/// Where a 2-D convolution's kernel reads its input: strides, dilations and
/// leading pads per spatial axis, and the output size.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchWindow {
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub pads_begin: [usize; 2],
    pub output: [usize; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_moment_of_known_rows() {
        let mut acc = SecondMomentAccumulator::default();
        acc.add(&[1.0, 2.0, 3.0, 4.0], 2);
        acc.add(&[0.0, 2.0], 2);
        let m = acc.finish().unwrap();
        // (1,2), (3,4), (0,2): sums of products xx 10, xy 14, yy 24 over 3 rows.
        assert_eq!(m.vectors, 3);
        let expected = [10.0 / 3.0, 14.0 / 3.0, 14.0 / 3.0, 8.0];
        m.matrix.iter().zip(expected).for_each(|(a, b)| assert!((a - b).abs() < 1e-12, "{m:?}"));
        assert_eq!(m.mean, vec![4.0 / 3.0, 8.0 / 3.0]);
        let mut bad = SecondMomentAccumulator::default();
        bad.add(&[1.0, 2.0], 2);
        bad.add(&[1.0, 2.0, 3.0], 3);
        assert_eq!(bad.finish(), None, "inconsistent lengths");
        let mut nan = SecondMomentAccumulator::default();
        nan.add(&[1.0, f32::NAN], 2);
        assert_eq!(nan.finish(), None);
    }

    #[test]
    fn patches_of_a_padded_strided_convolution() {
        // One channel, 3×3 input 1..9, 2×2 kernel, stride 2, pad 1: output 2×2.
        let image: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let window = PatchWindow { strides: [2, 2], dilations: [1, 1], pads_begin: [1, 1], output: [2, 2] };
        let p = patches(&image, [1, 3, 3], [2, 2], &window, 1);
        assert_eq!(p, vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 3.0, 0.0, 4.0, 0.0, 7.0, 5.0, 6.0, 8.0, 9.0]);
        // Every third position: the first and the last.
        assert_eq!(patches(&image, [1, 3, 3], [2, 2], &window, 3), vec![0.0, 0.0, 0.0, 1.0, 5.0, 6.0, 8.0, 9.0]);
        // Two channels, 1×1 kernel: each patch is the pixel's channel vector.
        let image = [1.0, 2.0, 10.0, 20.0];
        let window = PatchWindow { strides: [1, 1], dilations: [1, 1], pads_begin: [0, 0], output: [1, 2] };
        assert_eq!(patches(&image, [2, 1, 2], [1, 1], &window, 1), vec![1.0, 10.0, 2.0, 20.0]);
    }
}
