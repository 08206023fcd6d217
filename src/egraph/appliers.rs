//! Named Rust appliers (`=> @name` in a rules file) for rewrites a pattern
//! cannot state: they compute constants or new attributes. Each returns the
//! e-class of the replacement (the caller unions it with the matched class),
//! or `None` when the match does not qualify after all.

use crate::ir::AttributeList;
use egg::{Id, Subst, Symbol, Var};

use super::analysis::{attrs_of, constant_of, is_absent, Graph, OpAttrs};
use super::family::Family;
use super::language::{split_op, Onnx};
use crate::ir::{attribute, tensor};
use crate::onnx::proto::TensorProto;
use crate::weights::fold;

/// Outputs larger than this many elements are not folded (they would bloat the file).
const FOLD_ELEMENT_LIMIT: u64 = 1 << 24;

/// A named applier.
#[derive(Clone, Copy)]
pub struct NamedApplier {
    pub name: &'static str,
    pub about: &'static str,
    apply: fn(&mut Graph, Id, &Subst, Option<Symbol>) -> Option<Id>,
}

impl NamedApplier {
    pub const fn new(
        name: &'static str,
        about: &'static str,
        apply: fn(&mut Graph, Id, &Subst, Option<Symbol>) -> Option<Id>,
    ) -> NamedApplier {
        NamedApplier { name, about, apply }
    }

    pub fn apply(&self, egraph: &mut Graph, root: Id, subst: &Subst, op: Option<Symbol>) -> Option<Id> {
        (self.apply)(egraph, root, subst, op)
    }
}

const APPLIERS: &[NamedApplier] = &[
    NamedApplier {
        name: "fold_constant",
        about: "runs an operator whose inputs are all constant and keeps its output as an initializer",
        apply: fold_constant,
    },
    NamedApplier {
        name: "fold_shape",
        about: "(Shape ?x ?a): the shape of a statically shaped ?x as a constant",
        apply: fold_shape,
    },
    NamedApplier {
        name: "compose_transposes",
        about: "(Transpose (Transpose ?x ?a1) ?a2): one Transpose with the composed perm, or ?x",
        apply: compose_transposes,
    },
    NamedApplier {
        name: "fuse_pad_conv",
        about: "(Conv (Pad ?x ?pads ?value ?axes ?pa) ?w ?b ?ca): zero padding moved into the Conv's pads",
        apply: fuse_pad_conv,
    },
    NamedApplier {
        name: "fuse_pad_average_pool",
        about: "(AveragePool (Pad ?x ?pads ?value ?axes ?pa) ?ca): zero padding moved into the pool (counted)",
        apply: fuse_pad_average_pool,
    },
    NamedApplier {
        name: "fuse_pad_max_pool",
        about: "(MaxPool (Pad ?x ?pads ?value ?axes ?pa) ?ca): -inf padding moved into the pool",
        apply: fuse_pad_max_pool,
    },
];

pub fn lookup(name: &str, families: &[&'static dyn Family]) -> Option<NamedApplier> {
    all(families).find(|a| a.name == name).copied()
}

pub fn names(families: &[&'static dyn Family]) -> Vec<&'static str> {
    all(families).map(|a| a.name).collect()
}

/// Every applier: these, the activation fusions' ([`super::activations::APPLIERS`]),
/// then those of the given compression families.
pub fn all<'a>(families: &'a [&'static dyn Family]) -> impl Iterator<Item = &'static NamedApplier> + 'a {
    APPLIERS.iter().chain(super::activations::APPLIERS).chain(families.iter().flat_map(|f| f.appliers()))
}

pub fn var(subst: &Subst, name: &str) -> Option<Id> {
    let var: Var = name.parse().ok()?;
    subst.get(var).copied()
}

/// Adds a constant as a weight leaf.
pub(super) fn add_constant(egraph: &mut Graph, tensor: TensorProto) -> Id {
    let id = egraph.analysis.intern_weight(tensor, None);
    egraph.add(Onnx::Weight(id))
}

fn already_folded(egraph: &Graph, root: Id) -> bool {
    egraph[root].nodes.iter().any(|n| matches!(n, Onnx::Weight(_)))
}

fn fold_constant(egraph: &mut Graph, root: Id, _subst: &Subst, op: Option<Symbol>) -> Option<Id> {
    if already_folded(egraph, root) || !egraph[root].data.weight_only {
        return None;
    }
    if let Some(constant) = egraph[root].data.constant {
        return Some(egraph.add(Onnx::Weight(constant)));
    }
    if egraph[root].data.shape.as_ref().and_then(|s| s.element_count()).is_some_and(|n| n > FOLD_ELEMENT_LIMIT) {
        return None;
    }
    let (symbol, children) = egraph[root].nodes.iter().find_map(|n| match n {
        Onnx::Op(o, children) if op.is_none_or(|op| op == *o) => Some((*o, children.clone())),
        _ => None,
    })?;
    let (attrs_at, attrs) =
        children.iter().enumerate().find_map(|(i, &c)| attrs_of(egraph, c).map(|a| (i, a.clone())))?;
    if !attrs.implicit.is_empty() {
        return None;
    }
    let mut inputs: Vec<Option<TensorProto>> = Vec::new();
    for &child in &children[..attrs_at] {
        if is_absent(egraph, child) {
            inputs.push(None);
        } else {
            inputs.push(Some(constant_of(egraph, child)?.clone()));
        }
    }
    while matches!(inputs.last(), Some(None)) {
        inputs.pop();
    }
    let (domain, op_type) = split_op(symbol);
    let refs: Vec<Option<&TensorProto>> = inputs.iter().map(Option::as_ref).collect();
    let result = fold::evaluate_operator(&egraph.analysis.context, domain, op_type, &attrs.attributes, &refs).ok()?;
    // The folded value must be what the graph said it is.
    let facts = &egraph[root].data;
    if facts.dtype.is_some_and(|d| Some(d) != tensor::dtype(&result))
        || facts.static_dims().is_some_and(|dims| dims != result.dims)
    {
        return None;
    }
    Some(add_constant(egraph, result))
}

fn fold_shape(egraph: &mut Graph, root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    if already_folded(egraph, root) {
        return None;
    }
    let x = var(subst, "?x")?;
    let attrs = attrs_of(egraph, var(subst, "?a")?)?;
    let result = fold::shape_of(egraph[x].data.shape.as_ref()?, &attrs.attributes)?;
    Some(add_constant(egraph, result))
}

/// Adds an operator node with the given inputs and attributes.
pub(super) fn add_op(egraph: &mut Graph, op: &str, mut inputs: Vec<Id>, attrs: OpAttrs) -> Id {
    let attrs = egraph.analysis.intern_attrs(attrs);
    inputs.push(egraph.add(Onnx::Attrs(attrs)));
    egraph.add(Onnx::Op(Symbol::from(op), inputs.into()))
}

fn compose_transposes(egraph: &mut Graph, _root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let x = var(subst, "?x")?;
    let rank = egraph[x].data.shape.as_ref()?.rank();
    let perm = |attrs: &OpAttrs| -> Option<Vec<usize>> {
        let perm: Vec<usize> = match attrs.attr_ints("perm") {
            Some(p) => p.iter().map(|&i| usize::try_from(i).ok()).collect::<Option<_>>()?,
            None => (0..rank).rev().collect(),
        };
        (perm.len() == rank && perm.iter().all(|&i| i < rank)).then_some(perm)
    };
    let first = perm(attrs_of(egraph, var(subst, "?a1")?)?)?;
    let second_attrs = attrs_of(egraph, var(subst, "?a2")?)?.clone();
    let second = perm(&second_attrs)?;
    // out[i] = mid[second[i]] = x[first[second[i]]]
    let composed: Vec<i64> = second.iter().map(|&i| first[i] as i64).collect();
    if composed.iter().enumerate().all(|(i, &p)| p == i as i64) {
        return Some(x);
    }
    Some(add_op(egraph, "Transpose", vec![x], second_attrs.with(attribute::ints("perm", &composed))))
}

/// The spatial padding a Pad adds ([begin..., end...] over the spatial axes),
/// when it pads only spatial axes with `wanted` (checked by `value_ok`).
fn spatial_padding(egraph: &Graph, subst: &Subst, value_ok: fn(f64) -> bool) -> Option<Vec<i64>> {
    let x = var(subst, "?x")?;
    let rank = egraph[x].data.shape.as_ref()?.rank();
    let pad_attrs = attrs_of(egraph, var(subst, "?pa")?)?;
    if pad_attrs.attr_string("mode").is_some_and(|m| m != "constant") {
        return None;
    }
    let pads_input = var(subst, "?pads")?;
    let (pads, value) = if is_absent(egraph, pads_input) {
        (pad_attrs.attr_ints("pads")?.to_vec(), pad_attrs.attr_float("value").map_or(0.0, f64::from))
    } else {
        let pads = tensor::to_i64(constant_of(egraph, pads_input)?)?;
        let value_input = var(subst, "?value")?;
        let value = if is_absent(egraph, value_input) {
            0.0
        } else {
            *tensor::to_f64(constant_of(egraph, value_input)?)?.first()?
        };
        (pads, value)
    };
    if !value_ok(value) {
        return None;
    }
    // Expand to every axis.
    let axes_input = var(subst, "?axes")?;
    let axes: Vec<usize> = if is_absent(egraph, axes_input) {
        (0..rank).collect()
    } else {
        let axes = tensor::to_i64(constant_of(egraph, axes_input)?)?;
        axes.iter().map(|&a| usize::try_from(if a < 0 { a + rank as i64 } else { a }).ok()).collect::<Option<_>>()?
    };
    if pads.len() != 2 * axes.len() {
        return None;
    }
    let mut full = vec![0i64; 2 * rank];
    for (i, &axis) in axes.iter().enumerate() {
        if axis >= rank {
            return None;
        }
        full[axis] = pads[i];
        full[rank + axis] = pads[axes.len() + i];
    }
    let batch_and_channel_untouched = [0, 1, rank, rank + 1].iter().all(|&i| full[i] == 0);
    if rank < 3 || !batch_and_channel_untouched || full.iter().any(|&p| p < 0) {
        return None;
    }
    let spatial = rank - 2;
    Some(full[2..rank].iter().chain(&full[rank + 2..]).copied().collect::<Vec<i64>>())
        .filter(|p| p.len() == 2 * spatial)
}

/// The operator's attributes with the extra padding added to its pads, if it
/// pads explicitly (auto_pad NOTSET).
fn merged_pads(attrs: &OpAttrs, extra: &[i64]) -> Option<Vec<i64>> {
    if attrs.attr_string("auto_pad").is_some_and(|p| p != "NOTSET") {
        return None;
    }
    let existing = attrs.attr_ints("pads").map(<[i64]>::to_vec).unwrap_or_else(|| vec![0; extra.len()]);
    (existing.len() == extra.len()).then(|| existing.iter().zip(extra).map(|(a, b)| a + b).collect())
}

fn fuse_pad_conv(egraph: &mut Graph, _root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let extra = spatial_padding(egraph, subst, |v| v == 0.0)?;
    let attrs = attrs_of(egraph, var(subst, "?ca")?)?.clone();
    let pads = merged_pads(&attrs, &extra)?;
    let inputs = vec![var(subst, "?x")?, var(subst, "?w")?, var(subst, "?b")?];
    Some(add_op(egraph, "Conv", inputs, attrs.with(attribute::ints("pads", &pads))))
}

fn fuse_pad_average_pool(egraph: &mut Graph, _root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let extra = spatial_padding(egraph, subst, |v| v == 0.0)?;
    let attrs = attrs_of(egraph, var(subst, "?ca")?)?.clone();
    // The pool's own padding must be counted too once the Pad's zeros are.
    let own_padding = attrs.attr_ints("pads").is_some_and(|p| p.iter().any(|&v| v != 0));
    if own_padding && attrs.attr_int("count_include_pad").unwrap_or(0) == 0 {
        return None;
    }
    let pads = merged_pads(&attrs, &extra)?;
    let attrs = attrs.with(attribute::ints("pads", &pads)).with(attribute::int("count_include_pad", 1));
    Some(add_op(egraph, "AveragePool", vec![var(subst, "?x")?], attrs))
}

fn fuse_pad_max_pool(egraph: &mut Graph, _root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let extra = spatial_padding(egraph, subst, |v| v == f64::NEG_INFINITY)?;
    let attrs = attrs_of(egraph, var(subst, "?ca")?)?.clone();
    let pads = merged_pads(&attrs, &extra)?;
    Some(add_op(egraph, "MaxPool", vec![var(subst, "?x")?], attrs.with(attribute::ints("pads", &pads))))
}
