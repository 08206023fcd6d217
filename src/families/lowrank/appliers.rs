//! The `lowrank` family's appliers for MatMul and Gemm, and what its
//! appliers share (settings, the calibration moment of a layer's input,
//! offering an alternative, weight leaves and shapes). A layer with a
//! constant float weight gets, for each MAC share its settings ask for, the
//! two-factor form at the rank that keeps that share (rounded to the
//! device's channel multiple), marked approximate with its error estimate.
//! Conv layers, which have three forms, are [`super::conv`]'s.
//!
//! - MatMul `x·W` (W: K×N): `(x·A)·B`, A K×r, B r×N.
//! - Gemm (transA 0) `α·x·W + β·C`: `Gemm(x·A, B, C)` with α and β kept.
//!
//! Both are the SVD form: with `--lowrank-form spatial` or `tucker2` they
//! get nothing. The factors are data-aware when calibration measured the
//! second moment of the layer's input ([`super::factor`]), else the
//! weight's truncated SVD.

use std::sync::Arc;

use egg::{Id, Subst, Symbol};
use ndarray::Array2;

use super::factor::{rank_for_share, Decomposition, Factors};
use super::settings::{Form, LowrankSettings};
use super::NAME;
use crate::egraph::alternatives::{offer, Alternative};
use crate::egraph::analysis::{attrs_of, is_absent, Graph, OpAttrs, StandIn};
use crate::egraph::appliers::var;
use crate::egraph::language::Onnx;
use crate::egraph::nodes::{add_typed_op, add_weight, float_weight};
use crate::eval::statistics::{MomentVectors, SecondMoment};
use crate::ir::{attribute, tensor, AttributeList, DataType, Dim, Shape};

pub(super) fn settings(egraph: &Graph) -> Option<&LowrankSettings> {
    egraph.analysis.settings_of::<LowrankSettings>(NAME)
}

/// Whether the layer already has this family's alternatives (rules re-run
/// on every match each iteration; factorizing again would find the same), or
/// is itself a factor the family added.
pub(super) fn already_factorized(egraph: &Graph, class: Id) -> bool {
    let class = egraph.find(class);
    let factor = egraph.analysis.marks.get(NAME).is_some_and(|marked| marked.iter().any(|&c| egraph.find(c) == class));
    factor || egraph[class].nodes.iter().any(|node| super::is_alternative(egraph, node))
}

/// The operands `?x`, `?w` and `third` and the attributes `?a` of a layer
/// not factorized yet whose attribute `required.0` is `required.1`
/// (defaulting to it): the attributes' node and their values.
pub(super) fn unfactorized(
    egraph: &Graph,
    root: Id,
    subst: &Subst,
    third: &str,
    (name, value): (&str, i64),
) -> Option<([Id; 3], Id, OpAttrs)> {
    if already_factorized(egraph, root) {
        return None;
    }
    let (x, w, other, attrs) = (var(subst, "?x")?, var(subst, "?w")?, var(subst, third)?, var(subst, "?a")?);
    let values = attrs_of(egraph, attrs)?.clone();
    (values.attr_int(name).unwrap_or(value) == value).then_some(([x, w, other], attrs, values))
}

/// Notes a factor the family added, so it is not factorized in turn.
pub(super) fn mark_factor(egraph: &mut Graph, class: Id) {
    egraph.analysis.marks.entry(NAME).or_default().push(class);
}

/// The second moment calibration measured of how a layer reads `reads`
/// (`None` unless the settings ask for data-aware factors).
pub(super) fn moment_of(egraph: &Graph, reads: Id, vectors: &MomentVectors) -> Option<Arc<SecondMoment>> {
    settings(egraph).filter(|s| s.data_aware)?;
    let (reads, key) = (egraph.find(reads), vectors.key());
    let moments = &egraph.analysis.second_moments;
    moments
        .iter()
        .find(|(class, vectors, _)| egraph.find(*class) == reads && *vectors == key)
        .map(|(_, _, m)| m.clone())
}

/// A linear layer to factorize: its weight as the map W (out × in) on
/// input vectors, and how many vectors one run maps.
struct Layer {
    op: &'static str,
    weights: Array2<f32>,
    vectors: u64,
}

impl Layer {
    fn macs(&self, rank: Option<usize>) -> u64 {
        let (out, input) = (self.weights.nrows() as u64, self.weights.ncols() as u64);
        self.vectors * rank.map_or(out * input, |r| r as u64 * (out + input))
    }
}

/// The factors of each rank the settings ask for (distinct ranks only),
/// data-aware when calibration measured how the layer reads `reads`;
/// `None` when the settings offer no SVD form.
fn factorizations(egraph: &Graph, reads: Id, vectors: &MomentVectors, layer: &Layer) -> Option<Vec<(f64, Factors)>> {
    let settings = settings(egraph).filter(|s| s.forms.allows(Form::Svd))?;
    let (out, input) = layer.weights.dim();
    let mut ranks: Vec<(f64, usize)> = Vec::new();
    for &share in &settings.shares {
        if let Some(rank) = rank_for_share(share, input, out, settings.channel_multiple) {
            if !ranks.iter().any(|&(_, r)| r == rank) {
                ranks.push((share, rank));
            }
        }
    }
    if ranks.is_empty() {
        return None;
    }
    let moment = moment_of(egraph, reads, vectors);
    let decomposition = Decomposition::new(layer.weights.clone(), moment.as_deref()).ok()?;
    ranks.into_iter().map(|(share, rank)| Some((share, decomposition.factors(rank).ok()?))).collect()
}

/// Registers one factorized alternative of `root` (the class of `output`,
/// standing in for the layer's `op`) with its error estimate and details,
/// and unions it in.
pub(super) fn offer_alternative(
    egraph: &mut Graph,
    root: Id,
    output: Id,
    op: &'static str,
    error: f64,
    details: serde_json::Value,
) -> Id {
    let alternative = Alternative {
        family: NAME,
        replaces: vec![root],
        is_layer: true,
        error,
        measured: false,
        // A layer's own output error says little of the model's.
        needs_measurement: true,
        excluded: false,
        details,
    };
    let approximation = offer(egraph, alternative);
    mark_factor(egraph, output);
    egraph.analysis.stand_ins.insert(output, StandIn { layer: root, op });
    let approximate = egraph.add(Onnx::Approx(approximation, [output]));
    egraph.union(root, approximate);
    approximate
}

/// Offers a MatMul's or Gemm's two factors at one rank.
fn offer_factors(egraph: &mut Graph, root: Id, output: Id, layer: &Layer, share: f64, factors: &Factors) -> Id {
    let data_aware = factors.bias_shift.is_some();
    let details = serde_json::json!({
        "form": Form::Svd.name(),
        "op": layer.op,
        "rank": factors.rank,
        "ranks": [factors.rank],
        "share": share,
        "macs_before": layer.macs(None),
        "macs_after": layer.macs(Some(factors.rank)),
        "data_aware": data_aware,
        "fitted": if data_aware { "all" } else { "none" },
    });
    offer_alternative(egraph, root, output, layer.op, factors.error, details)
}

fn matrix(values: &[f64], rows: usize, columns: usize) -> Option<Array2<f32>> {
    Array2::from_shape_vec((rows, columns), values.iter().map(|&v| v as f32).collect()).ok()
}

fn weight_leaf(egraph: &mut Graph, values: &Array2<f32>) -> Id {
    let dims: Vec<i64> = values.shape().iter().map(|&d| d as i64).collect();
    let data: Vec<f32> = values.iter().copied().collect();
    add_weight(egraph, tensor::from_f32("", &dims, &data))
}

pub(super) fn attributes(egraph: &mut Graph, attrs: OpAttrs) -> Id {
    let id = egraph.analysis.intern_attrs(attrs);
    egraph.add(Onnx::Attrs(id))
}

/// The shape of a float value (dims may be open).
pub(super) fn float_shape(egraph: &Graph, id: Id) -> Option<Shape> {
    let facts = &egraph[id].data;
    (facts.dtype == Some(DataType::Float)).then_some(())?;
    facts.shape.clone()
}

/// The product of the known dims (an open dim counts as 1, as costs count it).
fn known_product(dims: &[Dim]) -> u64 {
    dims.iter().map(|d| d.known().and_then(|v| u64::try_from(v).ok()).unwrap_or(1)).product()
}

/// `shape` with the dim at `axis` set to `size`.
pub(super) fn with_dim(shape: &Shape, axis: usize, size: usize) -> Shape {
    let mut dims = shape.0.clone();
    dims[axis] = Dim::Known(size as i64);
    Shape(dims)
}

/// The first factor of a row-wise map as `MatMul(x, A)` (A = firstᵀ, marked
/// as a factor), and the leaf of the second factor's matrix B = secondᵀ.
fn first_matmul(egraph: &mut Graph, x: Id, x_shape: &Shape, attrs: Id, factors: &Factors) -> (Id, Id) {
    let a = weight_leaf(egraph, &factors.first.t().to_owned());
    let b = weight_leaf(egraph, &factors.second.t().to_owned());
    let middle = with_dim(x_shape, x_shape.rank() - 1, factors.rank);
    let first = add_typed_op(egraph, "MatMul", vec![x, a], attrs, DataType::Float, Some(middle));
    mark_factor(egraph, first);
    (first, b)
}

pub(crate) fn factorize_matmul(egraph: &mut Graph, root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    if already_factorized(egraph, root) {
        return None;
    }
    let (x, w, attrs) = (var(subst, "?x")?, var(subst, "?w")?, var(subst, "?a")?);
    let (values, dims) = float_weight(egraph, w)?;
    let x_shape = float_shape(egraph, x)?;
    let out_shape = float_shape(egraph, root)?;
    if dims.len() != 2 || x_shape.rank() < 2 {
        return None;
    }
    let (k, n) = (dims[0], dims[1]);
    let vectors = known_product(&x_shape.0[..x_shape.rank() - 1]);
    // x·W maps each row of K to N: as W_lin (out × in) = Wᵀ.
    let layer = Layer { op: "MatMul", weights: matrix(&values, k, n)?.reversed_axes(), vectors };
    let mut offered = None;
    for (share, factors) in factorizations(egraph, x, &MomentVectors::Rows { width: k }, &layer)? {
        let (first, b) = first_matmul(egraph, x, &x_shape, attrs, &factors);
        let output = add_typed_op(egraph, "MatMul", vec![first, b], attrs, DataType::Float, Some(out_shape.clone()));
        offered = Some(offer_factors(egraph, root, output, &layer, share, &factors));
    }
    offered
}

pub(crate) fn factorize_gemm(egraph: &mut Graph, root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let ([x, w, c], _, gemm) = unfactorized(egraph, root, subst, "?c", ("transA", 0))?;
    let trans_b = gemm.attr_int("transB").unwrap_or(0) != 0;
    let (values, dims) = float_weight(egraph, w)?;
    let x_shape = float_shape(egraph, x)?;
    let out_shape = float_shape(egraph, root)?;
    if dims.len() != 2 || x_shape.rank() != 2 {
        return None;
    }
    let weights = matrix(&values, dims[0], dims[1])?;
    // W_lin (N × K): B itself when transposed, else Bᵀ.
    let weights = if trans_b { weights } else { weights.reversed_axes() };
    let layer = Layer { op: "Gemm", weights, vectors: known_product(&x_shape.0[..1]) };
    let no_bias = is_absent(egraph, c);
    let width = layer.weights.ncols();
    let mut offered = None;
    for (share, factors) in factorizations(egraph, x, &MomentVectors::Rows { width }, &layer)? {
        let no_attributes = attributes(egraph, OpAttrs::default());
        let (first, b) = first_matmul(egraph, x, &x_shape, no_attributes, &factors);
        let second_attrs = attributes(egraph, gemm.with(attribute::int("transB", 0)));
        let inputs = if no_bias { vec![first, b] } else { vec![first, b, c] };
        let output = add_typed_op(egraph, "Gemm", inputs, second_attrs, DataType::Float, Some(out_shape.clone()));
        offered = Some(offer_factors(egraph, root, output, &layer, share, &factors));
    }
    offered
}
