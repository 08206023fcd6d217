//! Weight quantization: symmetric integer weights (zero point 0) with one
//! scale per output channel, per tensor, or per block of the input axis, and
//! int32 biases whose scale is the input's scale times the weight's.
//!
//! A bias is stored as round(b / (s_x · s_w)); when that would not fit in
//! int32 (a tiny input or weight scale under a large bias), the channel's
//! weight scale is widened until it fits and the weights are quantized with
//! the wider scale. [`QuantizedLayer::widened`] lists those channels so the
//! report can say so.

/// How a weight tensor is quantized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightSpec {
    /// Bits of the stored integers: 8 (int8) or 4 (int4).
    pub bits: u32,
    /// The largest magnitude stored is 2^(bits−1) − 1, or 2^(bits−2) − 1 with
    /// a reduced range (so a u8×s8 pair product sum cannot saturate int16
    /// on AVX2 kernels without VNNI).
    pub reduced_range: bool,
    /// Axis with one scale per index (`None`: one scale for the tensor).
    pub channel_axis: Option<usize>,
    /// Block-wise scales: blocks of this many elements along `block_axis`
    /// (within each channel); `None` for no blocks.
    pub block: Option<(usize, usize)>,
}

impl WeightSpec {
    /// Largest stored magnitude.
    pub fn max_level(&self) -> f64 {
        let bits = if self.reduced_range { self.bits - 1 } else { self.bits };
        ((1u64 << (bits - 1)) - 1) as f64
    }
}

/// A quantized weight tensor (and its bias when it has one).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedLayer {
    /// Stored integers, in the weight's element order.
    pub values: Vec<i32>,
    /// One scale per group, laid out as [`scale_dims`] says.
    pub scales: Vec<f64>,
    /// The scale tensor's dims: `[]` per tensor, `[C]` per channel, the
    /// weight's dims with the block axis divided (rounded up) for blocks.
    pub scale_dims: Vec<usize>,
    /// The bias as int32 at scale s_x · s_w (per channel), when given.
    pub bias: Option<Vec<i32>>,
    /// Channels whose weight scale was widened for the bias to fit int32.
    pub widened: Vec<usize>,
}

/// Why a weight could not be quantized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantizeError {
    #[error("axis {axis} is outside a weight of rank {rank}")]
    Axis { axis: usize, rank: usize },
    #[error("{bits}-bit weights are not supported (8 or 4)")]
    Bits { bits: u32 },
    #[error("the weight holds a non-finite value")]
    NotFinite,
    #[error("{bias} bias values for {channels} channels")]
    BiasLength { bias: usize, channels: usize },
    #[error("a bias needs per-channel or per-tensor weight scales, not blocks")]
    BiasWithBlocks,
    #[error("the input scale {0} is not a positive number")]
    InputScale(f64),
}

/// Smallest scale used for an all-zero group (keeps the scale positive).
const TINY_SCALE: f64 = 1e-12;

/// Quantizes weights `w` of shape `dims` (and optionally the bias of a layer
/// whose input has scale `input_scale`; bias index = index along the channel
/// axis, or all channels for per-tensor scales).
pub fn quantize(
    w: &[f64],
    dims: &[usize],
    spec: &WeightSpec,
    bias: Option<(&[f64], f64)>,
) -> Result<QuantizedLayer, QuantizeError> {
    if spec.bits != 8 && spec.bits != 4 {
        return Err(QuantizeError::Bits { bits: spec.bits });
    }
    if w.iter().any(|v| !v.is_finite()) {
        return Err(QuantizeError::NotFinite);
    }
    for axis in spec.channel_axis.into_iter().chain(spec.block.map(|(axis, _)| axis)) {
        if axis >= dims.len() {
            return Err(QuantizeError::Axis { axis, rank: dims.len() });
        }
    }
    let groups = Groups::new(dims, spec);
    let max_level = spec.max_level();
    let mut peak = vec![0.0f64; groups.count];
    for (run, values) in w.chunks(groups.run_length()).enumerate() {
        let group = groups.of_run(run);
        peak[group] = values.iter().fold(peak[group], |p, v| p.max(v.abs()));
    }
    let mut scales: Vec<f64> = peak.iter().map(|&p| (p / max_level).max(TINY_SCALE)).collect();

    let mut widened = Vec::new();
    let bias = match bias {
        None => None,
        Some((b, input_scale)) => {
            if spec.block.is_some() {
                return Err(QuantizeError::BiasWithBlocks);
            }
            if !(input_scale.is_finite() && input_scale > 0.0) {
                return Err(QuantizeError::InputScale(input_scale));
            }
            let channels = spec.channel_axis.map_or(b.len(), |axis| dims[axis]);
            if b.len() != channels || b.iter().any(|v| !v.is_finite()) {
                return Err(QuantizeError::BiasLength { bias: b.len(), channels });
            }
            let limit = i32::MAX as f64;
            let group_of_channel = |c: usize| if spec.channel_axis.is_some() { c } else { 0 };
            for (c, &value) in b.iter().enumerate() {
                let group = group_of_channel(c);
                let needed = value.abs() / (input_scale * limit);
                if needed > scales[group] {
                    // Widen a little past the bound so rounding stays inside it.
                    scales[group] = needed * (1.0 + 1e-6);
                    widened.push(c);
                }
            }
            let stored =
                b.iter().enumerate().map(|(c, &value)| (value / (input_scale * scales[group_of_channel(c)])).round());
            Some(stored.map(|v| v.clamp(-limit, limit) as i32).collect())
        }
    };
    widened.dedup();

    let mut values = Vec::with_capacity(w.len());
    for (run, chunk) in w.chunks(groups.run_length()).enumerate() {
        let scale = scales[groups.of_run(run)];
        values.extend(chunk.iter().map(|&value| (value / scale).round().clamp(-max_level, max_level) as i32));
    }
    Ok(QuantizedLayer { values, scales, scale_dims: groups.scale_dims, bias, widened })
}

impl QuantizedLayer {
    /// The float weights the stored integers stand for (value × its group's
    /// scale), in the weight's element order; `spec` and `dims` as quantized.
    pub fn dequantized(&self, dims: &[usize], spec: &WeightSpec) -> Vec<f64> {
        let groups = Groups::new(dims, spec);
        let mut weights = Vec::with_capacity(self.values.len());
        for (run, chunk) in self.values.chunks(groups.run_length()).enumerate() {
            let scale = self.scales[groups.of_run(run)];
            weights.extend(chunk.iter().map(|&v| f64::from(v) * scale));
        }
        weights
    }
}

/// Maps a weight element to its scale group.
struct Groups {
    count: usize,
    scale_dims: Vec<usize>,
    /// Strides of the weight's dims (row-major).
    strides: Vec<usize>,
    dims: Vec<usize>,
    channel_axis: Option<usize>,
    block: Option<(usize, usize)>,
}

impl Groups {
    fn new(dims: &[usize], spec: &WeightSpec) -> Groups {
        let mut strides = vec![1; dims.len()];
        for axis in (0..dims.len().saturating_sub(1)).rev() {
            strides[axis] = strides[axis + 1] * dims[axis + 1];
        }
        let scale_dims = match spec.block {
            Some((axis, size)) => {
                let mut d = dims.to_vec();
                d[axis] = dims[axis].div_ceil(size.max(1));
                d
            }
            None => spec.channel_axis.map(|axis| vec![dims[axis]]).unwrap_or_default(),
        };
        Groups {
            count: scale_dims.iter().product::<usize>().max(1),
            scale_dims,
            strides,
            dims: dims.to_vec(),
            channel_axis: spec.channel_axis,
            block: spec.block,
        }
    }

    /// Elements come in runs of this many consecutive ones of one group:
    /// a channel's slice for per-channel scales, the whole tensor for one
    /// scale, single elements for blocks.
    fn run_length(&self) -> usize {
        match (self.block, self.channel_axis) {
            (Some(_), _) => 1,
            (None, Some(axis)) => self.strides[axis].max(1),
            (None, None) => self.dims.iter().product::<usize>().max(1),
        }
    }

    /// The group of the `run`-th run of [`Groups::run_length`] elements.
    fn of_run(&self, run: usize) -> usize {
        match (self.block, self.channel_axis) {
            (Some((axis, size)), _) => self.block_of(run, axis, size),
            (None, Some(axis)) => run % self.dims[axis],
            (None, None) => 0,
        }
    }

    /// The block of element `index`: the same position with the block axis divided.
    fn block_of(&self, index: usize, axis: usize, size: usize) -> usize {
        let mut group = 0;
        for (a, (&stride, &dim)) in self.strides.iter().zip(&self.dims).enumerate() {
            let coordinate = (index / stride) % dim;
            let coordinate = if a == axis { coordinate / size.max(1) } else { coordinate };
            group = group * self.scale_dims[a] + coordinate;
        }
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_channel(axis: usize) -> WeightSpec {
        WeightSpec { bits: 8, reduced_range: false, channel_axis: Some(axis), block: None }
    }

    #[test]
    fn per_channel_scales_map_each_channel_peak_to_127() {
        let w = [1.0, -0.5, 0.25, 4.0, 2.0, -4.0];
        let q = quantize(&w, &[2, 3], &per_channel(0), None).unwrap();
        assert_eq!(q.scale_dims, vec![2]);
        assert_eq!(q.scales, vec![1.0 / 127.0, 4.0 / 127.0]);
        assert_eq!(q.values, vec![127, -64, 32, 127, 64, -127]);
        // Axis 1 of the same tensor: peaks 4, 2, 4.
        let q = quantize(&w, &[2, 3], &per_channel(1), None).unwrap();
        assert_eq!(q.scales, vec![4.0 / 127.0, 2.0 / 127.0, 4.0 / 127.0]);
    }

    #[test]
    fn reduced_range_and_int4_limit_the_levels() {
        let w = [1.0, -1.0, 0.5];
        let reduced = WeightSpec { reduced_range: true, ..per_channel(0) };
        assert_eq!(quantize(&w, &[1, 3], &reduced, None).unwrap().values, vec![63, -63, 32]);
        let int4 = WeightSpec { bits: 4, ..per_channel(0) };
        assert_eq!(quantize(&w, &[1, 3], &int4, None).unwrap().values, vec![7, -7, 4]);
    }

    #[test]
    fn blocks_split_the_input_axis() {
        // [2 out, 4 in], blocks of 2 along axis 1: four groups.
        let w = [1.0, 2.0, 3.0, -6.0, 0.0, 0.0, 7.0, 1.0];
        let spec = WeightSpec { bits: 4, reduced_range: false, channel_axis: None, block: Some((1, 2)) };
        let q = quantize(&w, &[2, 4], &spec, None).unwrap();
        assert_eq!(q.scale_dims, vec![2, 2]);
        assert_eq!(q.scales[0], 2.0 / 7.0);
        assert_eq!(q.scales[1], 6.0 / 7.0);
        assert_eq!(q.scales[2], TINY_SCALE);
        assert_eq!(q.values, vec![4, 7, 4, -7, 0, 0, 7, 1]);
    }

    #[test]
    fn bias_is_int32_at_input_times_weight_scale() {
        let w = [1.27, -1.27];
        let q = quantize(&w, &[2, 1], &per_channel(0), Some((&[0.5, -0.25], 0.1))).unwrap();
        // weight scales 0.01 each; bias scale 0.001.
        assert_eq!(q.bias, Some(vec![500, -250]));
        assert!(q.widened.is_empty());
    }

    #[test]
    fn a_bias_too_large_for_int32_widens_its_channel() {
        let w = [1e-6, 1.0];
        let q = quantize(&w, &[2, 1], &per_channel(0), Some((&[1e6, 1.0], 1e-6))).unwrap();
        assert_eq!(q.widened, vec![0]);
        let stored = q.bias.unwrap();
        // Widened just enough: the stored bias is near, not clipped at, the int32 bound.
        assert!(stored[0] > i32::MAX - 10_000 && stored[0] < i32::MAX);
        // The stored bias still represents 1e6 closely.
        assert!((stored[0] as f64 * 1e-6 * q.scales[0] - 1e6).abs() < 1.0);
        // The widened channel's weight rounds to 0 (it is tiny next to its bias).
        assert_eq!(q.values[0], 0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(quantize(&[f64::NAN], &[1], &per_channel(0), None), Err(QuantizeError::NotFinite));
        assert_eq!(quantize(&[1.0], &[1], &per_channel(1), None), Err(QuantizeError::Axis { axis: 1, rank: 1 }));
        assert!(matches!(
            quantize(&[1.0], &[1], &per_channel(0), Some((&[1.0, 2.0], 1.0))),
            Err(QuantizeError::BiasLength { .. })
        ));
        assert!(matches!(
            quantize(&[1.0], &[1], &WeightSpec { bits: 3, ..per_channel(0) }, None),
            Err(QuantizeError::Bits { bits: 3 })
        ));
    }
}
