//! Named conditions a rule may require (`if guard(?a, ...)` in a rules file).
//! Each reads the analysis' facts of the matched classes (the matched root
//! class first, then the guard's arguments) and answers whether the rewrite is
//! exact there; a guard that cannot tell says no.

use crate::ir::AttributeList;
use egg::Id;

use super::analysis::{attrs_of, constant_of, is_absent, Graph};
use super::family::Family;
use crate::ir::{tensor, DataType};

/// A named condition.
#[derive(Clone, Copy)]
pub struct Guard {
    pub name: &'static str,
    pub about: &'static str,
    /// Number of ?variable arguments; `None` for any number of at least one.
    arity: Option<usize>,
    check: Check,
}

/// How a guard decides: from the matched classes alone, or with numbers
/// written after the variables (`scalar(?c, ?x, 6)`).
#[derive(Clone, Copy)]
pub enum Check {
    Classes(fn(&Graph, Id, &[Id]) -> bool),
    /// The second field is how many numbers follow the variables.
    Numbers(fn(&Graph, Id, &[Id], &[f64]) -> bool, usize),
}

impl Guard {
    pub const fn new(name: &'static str, about: &'static str, arity: Option<usize>, check: Check) -> Guard {
        Guard { name, about, arity, check }
    }

    pub fn holds(&self, egraph: &Graph, root: Id, args: &[Id], numbers: &[f64]) -> bool {
        match self.check {
            Check::Classes(check) => check(egraph, root, args),
            Check::Numbers(check, _) => check(egraph, root, args, numbers),
        }
    }

    pub fn check_arity(&self, given: usize, numbers: usize) -> Result<(), String> {
        let wanted_numbers = match self.check {
            Check::Classes(_) => 0,
            Check::Numbers(_, n) => n,
        };
        if numbers != wanted_numbers {
            return Err(format!("takes {wanted_numbers} numbers after its variables, given {numbers}"));
        }
        match self.arity {
            Some(n) if n != given => Err(format!("takes {n} variables, given {given}")),
            None if given == 0 => Err("takes at least one variable".into()),
            _ => Ok(()),
        }
    }
}

const GUARDS: &[Guard] = &[
    Guard { name: "constant", about: "every argument is a known constant tensor", arity: None, check: Check::Classes(all_constant) },
    Guard { name: "varying", about: "(?x): ?x is not a constant (nor computed from constants alone)", arity: Some(1), check: Check::Classes(|g, _, a| g[a[0]].data.constant.is_none() && !g[a[0]].data.weight_only) },
    Guard { name: "same_dtype", about: "the argument has the matched value's element type", arity: Some(1), check: Check::Classes(same_dtype) },
    Guard { name: "same_shape", about: "the argument has the matched value's (fully known) shape", arity: Some(1), check: Check::Classes(same_shape) },
    Guard { name: "positive_steps", about: "Slice steps are absent or constant and positive", arity: Some(1), check: Check::Classes(positive_steps) },
    Guard { name: "identity_permutation", about: "a Transpose's perm keeps every axis in place", arity: Some(1), check: Check::Classes(identity_permutation) },
    Guard { name: "inference_dropout", about: "Dropout runs in inference mode (training_mode absent or false)", arity: Some(2), check: Check::Classes(inference_dropout) },
    Guard { name: "independent_reshape", about: "a Reshape target is constant and copies no input dim (no 0 entries)", arity: Some(2), check: Check::Classes(independent_reshape) },
    Guard { name: "batchnorm_fits", about: "(W scale bias mean var bn_attrs): constant BN parameters, one per Conv output channel", arity: Some(6), check: Check::Classes(batchnorm_fits) },
    Guard { name: "batchnorm_fits_transposed", about: "(W scale bias mean var bn_attrs conv_attrs): the same for ConvTranspose (Cout = W.dims[1]·group)", arity: Some(7), check: Check::Classes(batchnorm_fits_transposed) },
    Guard { name: "batchnorm_fits_gemm", about: "(B C scale bias mean var bn_attrs gemm_attrs): constant BN parameters, one per Gemm output column, beta ≠ 0", arity: Some(8), check: Check::Classes(batchnorm_fits_gemm) },
    Guard { name: "channel_constant", about: "(c W): c is a constant that varies only along the Conv output-channel axis", arity: Some(2), check: Check::Classes(channel_constant) },
    Guard { name: "batchnorm_channel_constant", about: "(c X scale bias mean var bn_attrs): inference BN over X with constant parameters, and c a constant of their type that varies only along X's channel axis 1", arity: Some(7), check: Check::Classes(batchnorm_channel_constant) },
    Guard { name: "unshared", about: "(X W): the layer reading X with weight W has one reader, so fusing into it duplicates nothing", arity: Some(2), check: Check::Classes(unshared) },
    Guard { name: "unshared_intermediates", about: "(no arguments) every value the left side matches below its root is read by one node of the input model, so the rewrite computes nothing twice (checked by the rule engine)", arity: Some(0), check: Check::Classes(|_, _, _| true) },
    Guard { name: "measured", about: "(no arguments) the alternative is priced by latencies measured in ONNX Runtime where measured costs are on: every operator in the classes the rule matched is timed alone (checked by the rule engine)", arity: Some(0), check: Check::Classes(|_, _, _| true) },
    Guard { name: "gemm_operands", about: "(A B C): A and B are matrices and C broadcasts one way onto A·B", arity: Some(3), check: Check::Classes(gemm_operands) },
];

pub fn lookup(name: &str, families: &[&'static dyn Family]) -> Option<Guard> {
    all(families).find(|g| g.name == name).copied()
}

pub fn names(families: &[&'static dyn Family]) -> Vec<&'static str> {
    all(families).map(|g| g.name).collect()
}

/// Every guard with its description (for `pare passes`): these, the
/// activation fusions' ([`super::activations::GUARDS`]), then the
/// given compression families'.
pub fn all<'a>(families: &'a [&'static dyn Family]) -> impl Iterator<Item = &'static Guard> + 'a {
    GUARDS.iter().chain(super::activations::GUARDS).chain(families.iter().flat_map(|f| f.guards()))
}

fn all_constant(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    args.iter().all(|&a| egraph[a].data.constant.is_some())
}

fn same_dtype(egraph: &Graph, root: Id, args: &[Id]) -> bool {
    let dtype = egraph[root].data.dtype;
    dtype.is_some() && dtype == egraph[args[0]].data.dtype
}

fn same_shape(egraph: &Graph, root: Id, args: &[Id]) -> bool {
    let dims = egraph[root].data.static_dims();
    dims.is_some() && dims == egraph[args[0]].data.static_dims()
}

fn positive_steps(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    is_absent(egraph, args[0])
        || constant_of(egraph, args[0]).and_then(tensor::to_i64).is_some_and(|steps| steps.iter().all(|&s| s > 0))
}

fn identity_permutation(egraph: &Graph, root: Id, args: &[Id]) -> bool {
    let Some(attrs) = attrs_of(egraph, args[0]) else { return false };
    match attrs.attr_ints("perm") {
        Some(perm) => perm.iter().enumerate().all(|(i, &p)| p == i as i64),
        // No perm reverses the axes: the identity only for rank 0 and 1.
        None => egraph[root].data.shape.as_ref().is_some_and(|s| s.rank() <= 1),
    }
}

fn inference_dropout(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    let training_off = is_absent(egraph, args[0])
        || constant_of(egraph, args[0]).and_then(tensor::to_i64).is_some_and(|v| v.iter().all(|&t| t == 0));
    let Some(attrs) = attrs_of(egraph, args[1]) else { return false };
    // Before opset 7, Dropout trained unless is_test was set.
    let legacy_ok = egraph.analysis.default_opset() >= 7 || attrs.attr_int("is_test") == Some(1);
    training_off && legacy_ok
}

fn independent_reshape(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    let Some(target) = constant_of(egraph, args[0]).and_then(tensor::to_i64) else { return false };
    let allow_zero = attrs_of(egraph, args[1]).and_then(|a| a.attr_int("allowzero")).unwrap_or(0) != 0;
    allow_zero || target.iter().all(|&d| d != 0)
}

fn float_constant(egraph: &Graph, id: Id) -> Option<(DataType, Vec<i64>)> {
    let tensor = constant_of(egraph, id)?;
    let dtype = tensor::dtype(tensor)?;
    dtype.is_float().then(|| (dtype, tensor.dims.clone()))
}

/// BN parameters (scale, bias, mean, var) are float constant vectors of `channels`.
fn bn_parameters_fit(egraph: &Graph, params: &[Id], bn_attrs: Id, channels: i64) -> bool {
    let Some(attrs) = attrs_of(egraph, bn_attrs) else { return false };
    let inference = attrs.attr_int("training_mode").unwrap_or(0) == 0 && attrs.attr_int("spatial").unwrap_or(1) == 1;
    inference && params.iter().all(|&p| float_constant(egraph, p).is_some_and(|(_, dims)| dims == [channels]))
}

fn batchnorm_fits(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    let Some((_, w)) = float_constant(egraph, args[0]) else { return false };
    w.len() >= 3 && bn_parameters_fit(egraph, &args[1..5], args[5], w[0])
}

fn batchnorm_fits_transposed(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    let Some((_, w)) = float_constant(egraph, args[0]) else { return false };
    let group = attrs_of(egraph, args[6]).and_then(|a| a.attr_int("group")).unwrap_or(1);
    w.len() >= 3 && group >= 1 && w[0] % group == 0 && bn_parameters_fit(egraph, &args[1..5], args[5], w[1] * group)
}

fn batchnorm_fits_gemm(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    let Some((_, b)) = float_constant(egraph, args[0]) else { return false };
    let Some(gemm) = attrs_of(egraph, args[7]) else { return false };
    if b.len() != 2 || gemm.attr_float("beta").unwrap_or(1.0) == 0.0 {
        return false;
    }
    let n = if gemm.attr_int("transB").unwrap_or(0) != 0 { b[0] } else { b[1] };
    let c_fits = is_absent(egraph, args[1])
        || float_constant(egraph, args[1])
            .is_some_and(|(_, c)| c.len() <= 2 && c.last().is_none_or(|&d| d == n || d == 1));
    c_fits && bn_parameters_fit(egraph, &args[2..6], args[6], n)
}

fn channel_constant(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    let (Some((c_type, c)), Some((w_type, w))) = (float_constant(egraph, args[0]), float_constant(egraph, args[1]))
    else {
        return false;
    };
    let rank = w.len();
    if c_type != w_type || rank < 3 || c.len() > rank {
        return false;
    }
    // Right-align c against the output [N, Cout, spatial...]: only axis 1 may differ from 1.
    let offset = rank - c.len();
    c.iter().enumerate().all(|(i, &d)| d == 1 || (i + offset == 1 && d == w[0]))
}

fn batchnorm_channel_constant(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    let (Some((c_type, c)), Some((s_type, s))) = (float_constant(egraph, args[0]), float_constant(egraph, args[2]))
    else {
        return false;
    };
    let Some(rank) = egraph[args[1]].data.shape.as_ref().map(|shape| shape.rank()) else { return false };
    let [channels] = s[..] else { return false };
    if c_type != s_type || rank < 2 || c.len() > rank || !bn_parameters_fit(egraph, &args[2..6], args[6], channels) {
        return false;
    }
    // Right-align c against X [N, C, spatial...]: only axis 1 may differ from 1.
    let offset = rank - c.len();
    c.iter().enumerate().all(|(i, &d)| d == 1 || (i + offset == 1 && d == channels))
}

fn gemm_operands(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    let facts = |id: Id| &egraph[id].data;
    let (a, b, c) = (facts(args[0]), facts(args[1]), facts(args[2]));
    let float = a.dtype.is_some_and(|d| matches!(d, DataType::Float | DataType::Double | DataType::Float16));
    let (Some(a_shape), Some(b_shape), Some(c_shape)) = (&a.shape, &b.shape, &c.shape) else { return false };
    if !float || a.dtype != b.dtype || a.dtype != c.dtype || a_shape.rank() != 2 || b_shape.rank() != 2 {
        return false;
    }
    let (m, n) = (a_shape.0[0].known(), b_shape.0[1].known());
    let fits = |dim: &crate::ir::Dim, target: Option<i64>| {
        dim.known() == Some(1) || (dim.known().is_some() && dim.known() == target)
    };
    egraph.analysis.default_opset() >= 7
        && match c_shape.0.as_slice() {
            [] => true,
            [cn] => fits(cn, n),
            [cm, cn] => fits(cm, m) && fits(cn, n),
            _ => false,
        }
}

fn unshared(egraph: &Graph, _root: Id, args: &[Id]) -> bool {
    let (x, w) = (egraph.find(args[0]), egraph.find(args[1]));
    egraph.classes().all(|class| {
        let layer = class.nodes.iter().any(|n| {
            matches!(n, super::language::Onnx::Op(_, c) if c.len() >= 2 && egraph.find(c[0]) == x && egraph.find(c[1]) == w)
        });
        !layer || class.data.uses <= 1
    })
}
