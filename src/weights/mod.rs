//! The weight math behind rewrites: each [`WeightFn`] computes a new constant
//! tensor from constant operands (batch-norm folding, per-channel scaling and
//! bias folding). The e-graph holds these as weight-only e-nodes; export calls
//! [`evaluate`] on the chosen ones and stores the results as initializers, so
//! they cost nothing at run time. [`fold`] evaluates whole constant operators.
//!
//! Arithmetic runs in f64 and the result is stored in the operand's float type.

pub mod fold;
pub mod linalg;

use crate::ir::{tensor, AttributeList, DataType};
use crate::onnx::proto::{AttributeProto, TensorProto};

/// A weight-only computation. Operands are constant tensors (or absent) and
/// attribute sets, in the order [`WeightFn::operands`] documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightFn {
    /// `(bn_weight W scale var bn_attrs)`: W·scale/√(var+ε) along axis 0 (Conv weights).
    BnWeight,
    /// `(bn_weight_t W scale var bn_attrs conv_attrs)`: the same along ConvTranspose's
    /// output-channel axis (axis 1, per group).
    BnWeightTransposed,
    /// `(bn_bias B scale bias mean var bn_attrs)`: (B − mean)·scale/√(var+ε) + bias; B may be absent.
    BnBias,
    /// `(bn_gemm_b B scale var bn_attrs gemm_attrs)`: Gemm's B scaled along its N axis.
    BnGemmB,
    /// `(bn_gemm_c C scale bias mean var bn_attrs gemm_attrs)`: the C that makes
    /// alpha·A·B' + beta·C' equal the batch norm of the original Gemm.
    BnGemmC,
    /// `(channel_mul W c)`: W scaled per output channel (axis 0) by a per-channel constant.
    ChannelMul,
    /// `(channel_add B c W)`: bias B (absent: zeros, one per output channel of W) plus a per-channel constant.
    ChannelAdd,
}

/// An operand of a weight computation.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    Tensor(&'a TensorProto),
    Attributes(&'a [AttributeProto]),
    Absent,
}

/// Why a weight computation could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{function}: {reason}")]
pub struct WeightError {
    pub function: &'static str,
    pub reason: String,
}

const ALL: [WeightFn; 7] = [
    WeightFn::BnWeight,
    WeightFn::BnWeightTransposed,
    WeightFn::BnBias,
    WeightFn::BnGemmB,
    WeightFn::BnGemmC,
    WeightFn::ChannelMul,
    WeightFn::ChannelAdd,
];

impl WeightFn {
    pub fn name(self) -> &'static str {
        match self {
            WeightFn::BnWeight => "bn_weight",
            WeightFn::BnWeightTransposed => "bn_weight_t",
            WeightFn::BnBias => "bn_bias",
            WeightFn::BnGemmB => "bn_gemm_b",
            WeightFn::BnGemmC => "bn_gemm_c",
            WeightFn::ChannelMul => "channel_mul",
            WeightFn::ChannelAdd => "channel_add",
        }
    }

    pub fn from_name(name: &str) -> Option<WeightFn> {
        ALL.into_iter().find(|f| f.name() == name)
    }

    /// Number of operands.
    pub fn arity(self) -> usize {
        match self {
            WeightFn::BnWeight => 4,
            WeightFn::BnWeightTransposed | WeightFn::BnGemmB => 5,
            WeightFn::BnBias => 6,
            WeightFn::BnGemmC => 7,
            WeightFn::ChannelMul => 2,
            WeightFn::ChannelAdd => 3,
        }
    }

    /// The result's element type and dims, from the operands' (`None` for an
    /// absent or attribute operand); `None` when they do not fit together.
    pub fn result_type(self, operands: &[Option<(DataType, Vec<i64>)>]) -> Option<(DataType, Vec<i64>)> {
        let first = || operands.first().cloned().flatten();
        let scale = || operands.get(1).cloned().flatten();
        match self {
            WeightFn::BnWeight | WeightFn::BnWeightTransposed | WeightFn::BnGemmB | WeightFn::ChannelMul => first(),
            WeightFn::BnBias => {
                let (dtype, dims) = scale()?;
                Some((first().map_or(dtype, |(d, _)| d), dims))
            }
            WeightFn::BnGemmC => {
                let (dtype, dims) = scale()?;
                match first() {
                    Some((c_type, c_dims)) if c_dims.len() == 2 => Some((c_type, vec![c_dims[0], dims[0]])),
                    Some((c_type, _)) => Some((c_type, dims)),
                    None => Some((dtype, dims)),
                }
            }
            WeightFn::ChannelAdd => {
                let (dtype, dims) = operands.get(2).cloned().flatten()?;
                Some((first().map_or(dtype, |(d, _)| d), vec![*dims.first()?]))
            }
        }
    }
}

/// Runs a weight computation.
pub fn evaluate(function: WeightFn, operands: &[Operand]) -> Result<TensorProto, WeightError> {
    let fail = |reason: String| WeightError { function: function.name(), reason };
    if operands.len() != function.arity() {
        return Err(fail(format!("expects {} operands, got {}", function.arity(), operands.len())));
    }
    let tensor = |i: usize| match operands[i] {
        Operand::Tensor(t) => Ok(Some(t)),
        Operand::Absent => Ok(None),
        Operand::Attributes(_) => Err(fail(format!("operand {i} must be a tensor"))),
    };
    let required = |i: usize| tensor(i)?.ok_or_else(|| fail(format!("operand {i} is absent")));
    let attributes = |i: usize| match operands[i] {
        Operand::Attributes(a) => Ok(a),
        _ => Err(fail(format!("operand {i} must be attributes"))),
    };
    let floats = |t: &TensorProto| tensor::to_f64(t).ok_or_else(|| fail("a weight holds no float data".into()));
    let epsilon = |i: usize| -> Result<f64, WeightError> {
        Ok(attributes(i)?.attr_float("epsilon").map(f64::from).unwrap_or(1e-5))
    };
    // scale/√(var+ε), one factor per channel.
    let bn_factor = |scale: usize, var: usize, eps: usize| -> Result<Vec<f64>, WeightError> {
        let (scale, var, eps) = (floats(required(scale)?)?, floats(required(var)?)?, epsilon(eps)?);
        if scale.len() != var.len() {
            return Err(fail("scale and variance differ in length".into()));
        }
        Ok(scale.iter().zip(&var).map(|(s, v)| s / (v + eps).sqrt()).collect())
    };
    match function {
        WeightFn::BnWeight => {
            let w = required(0)?;
            scale_axis(w, 0, &bn_factor(1, 2, 3)?, 1).map_err(fail)
        }
        WeightFn::BnWeightTransposed => {
            let w = required(0)?;
            let group = attributes(4)?.attr_int("group").unwrap_or(1).max(1) as usize;
            scale_axis(w, 1, &bn_factor(1, 2, 3)?, group).map_err(fail)
        }
        WeightFn::BnGemmB => {
            let b = required(0)?;
            let axis = if attributes(4)?.attr_int("transB").unwrap_or(0) != 0 { 0 } else { 1 };
            scale_axis(b, axis, &bn_factor(1, 2, 3)?, 1).map_err(fail)
        }
        WeightFn::BnBias => {
            let factor = bn_factor(1, 4, 5)?;
            let (shift, mean) = (floats(required(2)?)?, floats(required(3)?)?);
            let bias = match tensor(0)? {
                Some(b) => floats(b)?,
                None => vec![0.0; factor.len()],
            };
            if [shift.len(), mean.len(), bias.len()].iter().any(|&n| n != factor.len()) {
                return Err(fail("batch-norm operands differ in length".into()));
            }
            let values: Vec<f64> = (0..factor.len()).map(|c| (bias[c] - mean[c]) * factor[c] + shift[c]).collect();
            let dtype = tensor(0)?.or(Some(required(1)?)).and_then(tensor::dtype).unwrap_or(DataType::Float);
            from_f64(dtype, &[factor.len() as i64], &values).map_err(fail)
        }
        WeightFn::BnGemmC => {
            let factor = bn_factor(1, 4, 5)?;
            let (shift, mean) = (floats(required(2)?)?, floats(required(3)?)?);
            let beta = attributes(6)?.attr_float("beta").map(f64::from).unwrap_or(1.0);
            if beta == 0.0 {
                return Err(fail("Gemm's beta is 0".into()));
            }
            let n = factor.len();
            let (c, rows) = match tensor(0)? {
                Some(c) => {
                    let values = floats(c)?;
                    let rows = if c.dims.len() == 2 { c.dims[0].max(1) as usize } else { 1 };
                    // C broadcasts over [rows, n]: its last dim is n or 1.
                    let cols = values.len() / rows.max(1);
                    if cols != n && cols != 1 {
                        return Err(fail("C does not broadcast along N".into()));
                    }
                    let expanded: Vec<f64> = (0..rows * n).map(|i| values[(i / n) * cols + (i % n) % cols]).collect();
                    (expanded, rows)
                }
                None => (vec![0.0; n], 1),
            };
            let values: Vec<f64> = (0..rows * n)
                .map(|i| {
                    let ch = i % n;
                    ((beta * c[i] - mean[ch]) * factor[ch] + shift[ch]) / beta
                })
                .collect();
            let dtype = tensor(0)?.or(Some(required(1)?)).and_then(tensor::dtype).unwrap_or(DataType::Float);
            let dims = if rows > 1 || tensor(0)?.is_some_and(|c| c.dims.len() == 2) {
                vec![rows as i64, n as i64]
            } else {
                vec![n as i64]
            };
            from_f64(dtype, &dims, &values).map_err(fail)
        }
        WeightFn::ChannelMul => {
            let w = required(0)?;
            let channels = *w.dims.first().ok_or_else(|| fail("the weight is a scalar".into()))? as usize;
            let factor = per_channel(&floats(required(1)?)?, channels).map_err(fail)?;
            scale_axis(w, 0, &factor, 1).map_err(fail)
        }
        WeightFn::ChannelAdd => {
            let w = required(2)?;
            let channels = *w.dims.first().ok_or_else(|| fail("the weight is a scalar".into()))? as usize;
            let add = per_channel(&floats(required(1)?)?, channels).map_err(fail)?;
            let bias = match tensor(0)? {
                Some(b) => floats(b)?,
                None => vec![0.0; channels],
            };
            if bias.len() != channels {
                return Err(fail("the bias length differs from the channel count".into()));
            }
            let values: Vec<f64> = bias.iter().zip(&add).map(|(b, a)| b + a).collect();
            let dtype = tensor(0)?.or(Some(w)).and_then(tensor::dtype).unwrap_or(DataType::Float);
            from_f64(dtype, &[channels as i64], &values).map_err(fail)
        }
    }
}

/// A per-channel constant as one value per channel (a single value broadcasts).
fn per_channel(values: &[f64], channels: usize) -> Result<Vec<f64>, String> {
    match values.len() {
        1 => Ok(vec![values[0]; channels]),
        n if n == channels => Ok(values.to_vec()),
        n => Err(format!("{n} values for {channels} channels")),
    }
}

/// Multiplies a tensor along `axis` by one factor per index of that axis taken
/// over all `groups` (ConvTranspose's channel axis holds Cout/group per group,
/// the factors cover all Cout).
fn scale_axis(w: &TensorProto, axis: usize, factor: &[f64], groups: usize) -> Result<TensorProto, String> {
    let dims: Vec<usize> = w.dims.iter().map(|&d| d.max(0) as usize).collect();
    let dtype = tensor::dtype(w).ok_or("the weight has no element type")?;
    if axis >= dims.len() {
        return Err(format!("axis {axis} is outside rank {}", dims.len()));
    }
    let values = tensor::to_f64(w).ok_or("the weight holds no float data")?;
    let inner: usize = dims[axis + 1..].iter().product();
    let along = dims[axis];
    let outer: usize = dims[..axis].iter().product();
    if along * groups != factor.len() {
        return Err(format!("{} factors for an axis of {along}·{groups}", factor.len()));
    }
    let mut scaled = values;
    for (index, value) in scaled.iter_mut().enumerate() {
        let position = (index / inner) % along;
        // With groups, axis-0 blocks of outer/groups rows belong to one group.
        let group = if groups > 1 { (index / (inner * along)) / (outer / groups).max(1) } else { 0 };
        *value *= factor[group * along + position];
    }
    from_f64(dtype, &w.dims, &scaled)
}

/// A tensor of a float type from f64 values (rounded to the type).
pub fn from_f64(dtype: DataType, dims: &[i64], values: &[f64]) -> Result<TensorProto, String> {
    tensor::from_f64(dtype, dims, values).ok_or_else(|| format!("cannot store a folded weight as {dtype}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(name: &str, f: f32) -> Vec<AttributeProto> {
        vec![AttributeProto { name: Some(name.into()), f: Some(f), r#type: Some(1), ..Default::default() }]
    }

    #[test]
    fn batch_norm_folds_into_weight_and_bias() {
        let w = tensor::from_f32("w", &[2, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let scale = tensor::from_f32("s", &[2], &[2.0, 0.5]);
        let var = tensor::from_f32("v", &[2], &[3.0, 0.0]);
        let shift = tensor::from_f32("b", &[2], &[1.0, -1.0]);
        let mean = tensor::from_f32("m", &[2], &[1.0, 2.0]);
        let bn = attrs("epsilon", 1.0);
        use Operand::*;
        let folded =
            evaluate(WeightFn::BnWeight, &[Tensor(&w), Tensor(&scale), Tensor(&var), Attributes(&bn)]).unwrap();
        // factors: 2/√4 = 1, 0.5/√1 = 0.5
        assert_eq!(tensor::to_f64(&folded).unwrap(), vec![1.0, 2.0, 1.5, 2.0]);
        let bias = evaluate(
            WeightFn::BnBias,
            &[Absent, Tensor(&scale), Tensor(&shift), Tensor(&mean), Tensor(&var), Attributes(&bn)],
        )
        .unwrap();
        // (0 − 1)·1 + 1 = 0; (0 − 2)·0.5 − 1 = −2
        assert_eq!(tensor::to_f64(&bias).unwrap(), vec![0.0, -2.0]);
    }

    #[test]
    fn transposed_weights_scale_per_group() {
        // ConvTranspose weight [Cin=2, Cout/g=1, 1, 1] with group 2: Cout = 2.
        let w = tensor::from_f32("w", &[2, 1, 1, 1], &[1.0, 1.0]);
        let factor = [3.0, 5.0];
        let scaled = scale_axis(&w, 1, &factor, 2).unwrap();
        assert_eq!(tensor::to_f64(&scaled).unwrap(), vec![3.0, 5.0]);
    }

    #[test]
    fn channel_constants_fold() {
        let w = tensor::from_f32("w", &[2, 1], &[1.0, 2.0]);
        let c = tensor::from_f32("c", &[1, 2, 1, 1], &[10.0, 100.0]);
        use Operand::*;
        let mul = evaluate(WeightFn::ChannelMul, &[Tensor(&w), Tensor(&c)]).unwrap();
        assert_eq!(tensor::to_f64(&mul).unwrap(), vec![10.0, 200.0]);
        let add = evaluate(WeightFn::ChannelAdd, &[Absent, Tensor(&c), Tensor(&w)]).unwrap();
        assert_eq!(tensor::to_f64(&add).unwrap(), vec![10.0, 100.0]);
        assert!(evaluate(WeightFn::ChannelMul, &[Tensor(&w), Tensor(&tensor::from_f32("c", &[3], &[1.0; 3]))]).is_err());
    }
}
