//! Exact fusion of activations and normalizations that exporters spell out in
//! elementwise pieces (`passes/fuse.rules`, section "activations"): the
//! guards that recognize their constants, and the appliers for the fusions
//! a pattern cannot write: the attributes the pieces imply (HardSigmoid,
//! Gelu's tanh form, LayerNormalization and its scale and bias) and Clip's
//! scalar bounds (Relu6 spelled with Min and Max).
//!
//! Constants are matched by value within [`RELATIVE_TOLERANCE`] (a float32
//! 1/6 is 0.16666667), hold one element, and broadcast onto the activation's
//! input without growing it, so the fused node has the shape of the value it
//! replaces. Inputs are float32: the type every ONNX Runtime CPU kernel of
//! these operators takes. The intermediates of a pattern's match must have no
//! reader outside it (the rule engine's `unshared_intermediates()`; the
//! LayerNormalization applier checks the classes it walks itself): fusing a
//! shared piece would compute it twice. Whether the model may hold the fused
//! operator at all (its opset, or the opset it may be raised to) is checked
//! for every operator a rewrite writes ([`super::analysis::Facts::may_write`]).

#[cfg(test)]
mod tests;

use egg::{Id, Subst, Symbol};

use super::analysis::{attrs_of, constant_of, is_absent, Graph, OpAttrs};
use super::appliers::{add_constant, add_op, var, NamedApplier};
use super::guards::{Check, Guard};
use super::language::Onnx;
use crate::ir::{attribute, tensor, AttributeList, DataType};

/// How far a matched constant may be from the value a rule names, relative.
pub const RELATIVE_TOLERANCE: f64 = 1e-6;

pub const GUARDS: &[Guard] = &[
    Guard::new(
        "scalar",
        "(?c ?x v): ?c is a one-element constant equal to v (within 1e-6 relative) of ?x's type whose rank is at most ?x's (broadcasting keeps ?x's shape)",
        Some(2),
        Check::Numbers(scalar, 1),
    ),
    Guard::new(
        "clip_bounds",
        "(?lo ?hi ?attrs lo hi): a Clip's bounds, as inputs or (before opset 11) attributes, are lo and hi",
        Some(3),
        Check::Numbers(clip_bounds, 2),
    ),
    Guard::new(
        "float_tensor",
        "(?x): ?x is a float32 tensor (the type ONNX Runtime's CPU kernels of the fused activations take)",
        Some(1),
        Check::Classes(float_tensor),
    ),
    Guard::new(
        "single_reader",
        "every argument is read by one node of the input model (the fusion's intermediates)",
        None,
        Check::Classes(|g, _, a| a.iter().all(|&c| g[c].data.uses <= 1)),
    ),
    Guard::new(
        "hard_swish_slope",
        "(?attrs): HardSigmoid attributes alpha = 1/6 and beta = 1/2, x·HardSigmoid(x) is HardSwish",
        Some(1),
        Check::Classes(hard_swish_slope),
    ),
];

pub const APPLIERS: &[NamedApplier] = &[
    NamedApplier::new(
        "hard_sigmoid",
        "clip(x + ?b, 0, h) divided by ?d or multiplied by ?m (= 1/h), or clip(x·?a + ?b, 0, 1): HardSigmoid(alpha, beta) of ?x",
        hard_sigmoid,
    ),
    NamedApplier::new(
        "relu6_clip",
        "Min(Max(?y, ?lo), ?hi), Max(Min(?y, ?hi), ?lo) or Min(Relu(?y), ?hi) with lo ≤ hi: Clip(?y, lo, hi) with scalar bounds",
        relu6_clip,
    ),
    NamedApplier::new(
        "gelu_tanh",
        "x·½·(1 + tanh(√(2/π)·(x + 0.044715·x³))): Gelu(?x, approximate=tanh)",
        gelu_tanh,
    ),
    NamedApplier::new(
        "layer_normalization",
        "(Div *): (x − mean(x)) / sqrt(mean((x − mean(x))²) + ε) over trailing axes: LayerNormalization(x, 1, axis, ε)",
        layer_normalization,
    ),
    NamedApplier::new(
        "layer_normalization_affine",
        "(Mul ?ln ?g ?ma) or (Add ?ln ?g ?aa) where ?ln holds a LayerNormalization: the constant ?g folded into its scale and bias, or its bias",
        layer_normalization_affine,
    ),
];

/// The value of a one-element constant class.
fn single_value(egraph: &Graph, id: Id) -> Option<f64> {
    let constant = constant_of(egraph, id)?;
    if tensor::element_count(constant)? != 1 {
        return None;
    }
    tensor::to_f64(constant)?.first().copied()
}

fn close(value: f64, wanted: f64) -> bool {
    if wanted == 0.0 {
        value == 0.0
    } else {
        ((value - wanted) / wanted).abs() <= RELATIVE_TOLERANCE
    }
}

fn rank(egraph: &Graph, id: Id) -> Option<usize> {
    egraph[id].data.shape.as_ref().map(|shape| shape.rank())
}

/// A one-element constant of `x`'s type that broadcasts onto `x` without growing it: its value.
fn operand_value(egraph: &Graph, c: Id, x: Id) -> Option<f64> {
    let value = single_value(egraph, c)?;
    let fits = rank(egraph, c)? <= rank(egraph, x)? && egraph[c].data.dtype == egraph[x].data.dtype;
    fits.then_some(value)
}

fn scalar(egraph: &Graph, _root: Id, args: &[Id], numbers: &[f64]) -> bool {
    operand_value(egraph, args[0], args[1]).is_some_and(|v| close(v, numbers[0]))
}

/// A Clip's bounds: its inputs, or its attributes before opset 11 (unbounded when missing).
fn clip_limits(egraph: &Graph, lo: Id, hi: Id, attrs: Id) -> Option<(f64, f64)> {
    let attrs = attrs_of(egraph, attrs)?;
    let bound = |input: Id, attribute: &str, unbounded: f64| -> Option<f64> {
        if is_absent(egraph, input) {
            Some(attrs.attr_float(attribute).map_or(unbounded, f64::from))
        } else {
            single_value(egraph, input)
        }
    };
    Some((bound(lo, "min", f64::NEG_INFINITY)?, bound(hi, "max", f64::INFINITY)?))
}

fn clip_bounds(egraph: &Graph, _root: Id, args: &[Id], numbers: &[f64]) -> bool {
    clip_limits(egraph, args[0], args[1], args[2])
        .is_some_and(|(lo, hi)| close(lo, numbers[0]) && close(hi, numbers[1]))
}

/// The operator nodes of a class: (operator, children).
fn ops_of(egraph: &Graph, class: Id) -> impl Iterator<Item = (&str, &[Id])> {
    egraph[class].nodes.iter().filter_map(|node| match node {
        Onnx::Op(op, children) => Some((op.as_str(), &children[..])),
        _ => None,
    })
}

fn is_float(dtype: Option<DataType>) -> bool {
    dtype == Some(DataType::Float)
}

fn float_tensor(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    is_float(egraph[args[0]].data.dtype)
}

fn hard_swish_slope(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    let Some(attrs) = attrs_of(egraph, args[0]) else { return false };
    let alpha = attrs.attr_float("alpha").map_or(0.2, f64::from);
    let beta = attrs.attr_float("beta").map_or(0.5, f64::from);
    close(alpha, 1.0 / 6.0) && close(beta, 0.5)
}

/// A one-element constant of `like`'s type.
fn scalar_like(egraph: &mut Graph, like: Id, value: f64) -> Option<Id> {
    let dtype = egraph[like].data.dtype?;
    Some(add_constant(egraph, tensor::from_f64(dtype, &[], &[value])?))
}

fn hard_sigmoid(egraph: &mut Graph, _root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let x = var(subst, "?x")?;
    if !is_float(egraph[x].data.dtype) {
        return None;
    }
    let (lo, hi) = clip_limits(egraph, var(subst, "?lo")?, var(subst, "?hi")?, var(subst, "?ca")?)?;
    let addend = operand_value(egraph, var(subst, "?b")?, x)?;
    let (alpha, beta) = match (var(subst, "?d"), var(subst, "?m"), var(subst, "?a")) {
        // clip(x + b, 0, h) / h = clip(x/h + b/h, 0, 1), also multiplied by 1/h.
        (divisor, multiplier, None) => {
            let scale = match (divisor, multiplier) {
                (Some(d), _) => 1.0 / operand_value(egraph, d, x)?,
                (None, Some(m)) => operand_value(egraph, m, x)?,
                (None, None) => return None,
            };
            (close(lo, 0.0) && hi > 0.0 && close(hi * scale, 1.0)).then_some((scale, addend * scale))?
        }
        (None, None, Some(a)) => {
            (close(lo, 0.0) && close(hi, 1.0)).then_some((operand_value(egraph, a, x)?, addend))?
        }
        _ => return None,
    };
    let attrs =
        OpAttrs::default().with(attribute::float("alpha", alpha as f32)).with(attribute::float("beta", beta as f32));
    Some(add_op(egraph, "HardSigmoid", vec![x], attrs))
}

fn relu6_clip(egraph: &mut Graph, _root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let y = var(subst, "?y")?;
    let hi = operand_value(egraph, var(subst, "?hi")?, y)?;
    // Min(Relu(y), hi) clips at 0 below.
    let lo = match var(subst, "?lo") {
        Some(lo) => operand_value(egraph, lo, y)?,
        None => 0.0,
    };
    if lo.is_nan() || hi.is_nan() || lo > hi || !egraph.analysis.may_write("Clip") {
        return None;
    }
    // Clip's bounds are scalars (rank 0), whatever rank the Min and Max operands had.
    let (lo, hi) = (scalar_like(egraph, y, lo)?, scalar_like(egraph, y, hi)?);
    Some(add_op(egraph, "Clip", vec![y, lo, hi], OpAttrs::default()))
}

fn gelu_tanh(egraph: &mut Graph, _root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let x = var(subst, "?x")?;
    let value = |name: &str| var(subst, name).and_then(|c| operand_value(egraph, c, x));
    let constants =
        [("?half", 0.5), ("?one", 1.0), ("?three", 3.0), ("?k", 0.044715), ("?c", (2.0 / std::f64::consts::PI).sqrt())];
    let exact = constants.iter().all(|&(name, wanted)| value(name).is_some_and(|v| close(v, wanted)));
    if !exact || !is_float(egraph[x].data.dtype) || !egraph.analysis.may_write("Gelu") {
        return None;
    }
    let attrs = OpAttrs::default().with(attribute::string("approximate", "tanh"));
    Some(add_op(egraph, "Gelu", vec![x], attrs))
}

/// A ReduceMean of `class` over the axes it names (normalized to `rank`),
/// keeping dims: the class it reduces and the axes, sorted.
fn mean_over(egraph: &Graph, class: Id, rank: usize) -> Option<(Id, Vec<usize>)> {
    ops_of(egraph, class).find_map(|(op, children)| {
        if op != "ReduceMean" || egraph[class].data.uses > 1 {
            return None;
        }
        let (input, axes, attrs) = match children {
            [input, attrs] => (*input, attrs_of(egraph, *attrs)?.attr_ints("axes")?.to_vec(), *attrs),
            [input, axes, attrs] => (*input, tensor::to_i64(constant_of(egraph, *axes)?)?, *attrs),
            _ => return None,
        };
        let attrs = attrs_of(egraph, attrs)?;
        if attrs.attr_int("keepdims").unwrap_or(1) != 1 || axes.is_empty() {
            return None;
        }
        let mut normalized: Vec<usize> = axes
            .iter()
            .map(|&a| usize::try_from(if a < 0 { a + rank as i64 } else { a }).ok().filter(|&a| a < rank))
            .collect::<Option<_>>()?;
        normalized.sort_unstable();
        normalized.dedup();
        Some((input, normalized))
    })
}

/// The one reader-free node of `op` in `class` with two inputs: its inputs.
fn binary(egraph: &Graph, class: Id, op: &str) -> Option<(Id, Id)> {
    if egraph[class].data.uses > 1 {
        return None;
    }
    ops_of(egraph, class).find_map(|(o, children)| match children {
        [a, b, _] if o == op => Some((*a, *b)),
        _ => None,
    })
}

fn layer_normalization(egraph: &mut Graph, root: Id, _subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let same = |egraph: &Graph, a: Id, b: Id| egraph.find(a) == egraph.find(b);
    let (centered, deviation) = ops_of(egraph, root).find_map(|(op, children)| match (op, children) {
        ("Div", [d, s, _]) => Some((*d, *s)),
        _ => None,
    })?;
    // centered = x − mean(x), read by the Div and by the square only.
    if egraph[centered].data.uses > 2 {
        return None;
    }
    let (x, mean) = ops_of(egraph, centered).find_map(|(op, children)| match (op, children) {
        ("Sub", [x, m, _]) => Some((*x, *m)),
        _ => None,
    })?;
    let rank = rank(egraph, x)?;
    let (mean_input, axes) = mean_over(egraph, mean, rank)?;
    // deviation = sqrt(mean(centered²) + ε)
    if egraph[deviation].data.uses > 1 {
        return None;
    }
    let variance_plus = ops_of(egraph, deviation).find_map(|(op, children)| match (op, children) {
        ("Sqrt", [v, _]) => Some(*v),
        _ => None,
    })?;
    let (variance, epsilon) = match binary(egraph, variance_plus, "Add")? {
        (v, e) if single_value(egraph, e).is_some() => (v, e),
        (e, v) => (v, e),
    };
    let epsilon = operand_value(egraph, epsilon, x)?;
    let (squared, variance_axes) = mean_over(egraph, variance, rank)?;
    let squares_centered = ops_of(egraph, squared).any(|(op, children)| match (op, children) {
        ("Pow", [d, two, _]) => same(egraph, *d, centered) && single_value(egraph, *two).is_some_and(|v| v == 2.0),
        ("Mul", [a, b, _]) => same(egraph, *a, centered) && same(egraph, *b, centered),
        _ => false,
    });
    let trailing = axes.first().is_some_and(|&first| axes.iter().copied().eq(first..rank));
    if !same(egraph, mean_input, x)
        || !squares_centered
        || egraph[squared].data.uses > 1
        || axes != variance_axes
        || !trailing
        || epsilon.is_nan()
        || epsilon < 0.0
        || !is_float(egraph[x].data.dtype)
        || !egraph.analysis.may_write("LayerNormalization")
    {
        return None;
    }
    egraph.analysis.walked.extend([centered, mean, deviation, variance_plus, variance, squared]);
    // Only the normalized dims need to be known.
    let shape = egraph[x].data.shape.as_ref()?;
    let normalized: Vec<i64> = shape.0[axes[0]..].iter().map(|d| d.known()).collect::<Option<_>>()?;
    let count: i64 = normalized.iter().product();
    let ones = tensor::from_f64(egraph[x].data.dtype?, &normalized, &vec![1.0; usize::try_from(count).ok()?])?;
    let scale = add_constant(egraph, ones);
    let bias = egraph.add(Onnx::Absent);
    let attrs = OpAttrs::default()
        .with(attribute::int("axis", axes[0] as i64))
        .with(attribute::float("epsilon", epsilon as f32));
    Some(add_op(egraph, "LayerNormalization", vec![x, scale, bias], attrs))
}

/// `constant`'s values laid out over the normalized dims `dims`, when it
/// holds one value or one per normalized element, varying only there.
fn over_normalized(egraph: &Graph, constant: Id, dims: &[i64]) -> Option<Vec<f64>> {
    let tensor = constant_of(egraph, constant)?;
    let values = tensor::to_f64(tensor)?;
    let count: i64 = dims.iter().product();
    if values.len() == 1 {
        return Some(vec![values[0]; usize::try_from(count).ok()?]);
    }
    // Right-aligned against [..., normalized dims], everything before them 1.
    let shape = &tensor.dims;
    let leading = shape.len().checked_sub(dims.len())?;
    (shape[leading..] == *dims && shape[..leading].iter().all(|&d| d == 1)).then_some(values)
}

fn layer_normalization_affine(egraph: &mut Graph, _root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let (normalized, gamma) = (var(subst, "?ln")?, var(subst, "?g")?);
    let multiplied = var(subst, "?ma").is_some();
    let (x, scale, bias, attrs) = ops_of(egraph, normalized).find_map(|(op, children)| match (op, children) {
        ("LayerNormalization", [x, s, b, a]) => Some((*x, *s, *b, *a)),
        _ => None,
    })?;
    let dims = constant_of(egraph, scale)?.dims.clone();
    let dtype = egraph[x].data.dtype?;
    // The constant must be of the type and not grow the result: rank at most the normalized input's.
    if egraph[gamma].data.dtype != Some(dtype) || rank(egraph, gamma)? > rank(egraph, x)? {
        return None;
    }
    let g = over_normalized(egraph, gamma, &dims)?;
    let scale_values = tensor::to_f64(constant_of(egraph, scale)?)?;
    let bias_values = match constant_of(egraph, bias) {
        Some(b) => tensor::to_f64(b)?,
        None if is_absent(egraph, bias) => vec![0.0; g.len()],
        None => return None,
    };
    if bias_values.len() != g.len() || scale_values.len() != g.len() {
        return None;
    }
    // (y·s + b)·g = y·(s·g) + b·g; (y·s + b) + g = y·s + (b + g).
    let (new_scale, new_bias): (Vec<f64>, Vec<f64>) = if multiplied {
        (
            scale_values.iter().zip(&g).map(|(s, g)| s * g).collect(),
            bias_values.iter().zip(&g).map(|(b, g)| b * g).collect(),
        )
    } else {
        (scale_values, bias_values.iter().zip(&g).map(|(b, g)| b + g).collect())
    };
    let scale = add_constant(egraph, tensor::from_f64(dtype, &dims, &new_scale)?);
    let bias = add_constant(egraph, tensor::from_f64(dtype, &dims, &new_bias)?);
    let attrs = attrs_of(egraph, attrs)?.clone();
    Some(add_op(egraph, "LayerNormalization", vec![x, scale, bias], attrs))
}
