//! The `lowrank` family's appliers: a layer with a constant float weight
//! gets, for each MAC share its settings ask for, the factorized form at the
//! rank that keeps that share (rounded to the device's channel multiple),
//! marked approximate with its error estimate.
//!
//! - MatMul `x·W` (W: K×N): `(x·A)·B`, A K×r, B r×N.
//! - Gemm (transA 0) `α·x·W + β·C`: `Gemm(x·A, B, C)` with α and β kept.
//! - Conv (group 1, 2-D) with weight [Cout, Cin, kh, kw]: a kh×kw Conv
//!   Cin→r (the layer's strides, pads and dilations, no bias), then a 1x1
//!   Conv r→Cout with the bias (a 1x1 Conv is a matmul over channels).
//!
//! The factors are data-aware when calibration measured the second moment of
//! the layer's input ([`super::factor`]), and the bias then takes back the
//! mean shift; else they are the weight's truncated SVD.

use egg::{Id, Subst, Symbol};
use ndarray::Array2;

use super::factor::{rank_for_share, Decomposition, Factors};
use super::settings::LowrankSettings;
use super::NAME;
use crate::egraph::alternatives::{offer, Alternative};
use crate::egraph::analysis::{attrs_of, is_absent, Graph, OpAttrs, StandIn};
use crate::egraph::appliers::var;
use crate::egraph::language::Onnx;
use crate::egraph::nodes::{add_typed_op, add_weight, float_weight};
use crate::eval::statistics::MomentVectors;
use crate::ir::{attribute, tensor, AttributeList, DataType, Dim, Shape};

fn settings(egraph: &Graph) -> Option<&LowrankSettings> {
    egraph.analysis.settings_of::<LowrankSettings>(NAME)
}

/// Whether the layer already has this family's alternatives (rules re-run
/// on every match each iteration; factorizing again would find the same), or
/// is itself a factor the family added.
fn already_factorized(egraph: &Graph, class: Id) -> bool {
    let class = egraph.find(class);
    let factor = egraph.analysis.marks.get(NAME).is_some_and(|marked| marked.iter().any(|&c| egraph.find(c) == class));
    factor || egraph[class].nodes.iter().any(|node| super::is_alternative(egraph, node))
}

/// Notes a factor the family added, so it is not factorized in turn.
fn mark_factor(egraph: &mut Graph, class: Id) {
    egraph.analysis.marks.entry(NAME).or_default().push(class);
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
/// data-aware when calibration measured how the layer reads `reads`.
fn factorizations(egraph: &Graph, reads: Id, vectors: &MomentVectors, layer: &Layer) -> Option<Vec<(f64, Factors)>> {
    let settings = settings(egraph)?;
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
    let (reads, key) = (egraph.find(reads), vectors.key());
    let moment = egraph
        .analysis
        .second_moments
        .iter()
        .filter(|_| settings.data_aware)
        .find(|(class, vectors, _)| egraph.find(*class) == reads && *vectors == key)
        .map(|(_, _, moment)| moment.clone());
    let decomposition = Decomposition::new(layer.weights.clone(), moment.as_deref()).ok()?;
    ranks.into_iter().map(|(share, rank)| Some((share, decomposition.factors(rank).ok()?))).collect()
}

/// Registers one factorized alternative of `root` (the class of `output`)
/// and unions it in.
fn offer_factors(egraph: &mut Graph, root: Id, output: Id, layer: &Layer, share: f64, factors: &Factors) -> Id {
    let details = serde_json::json!({
        "form": "svd",
        "op": layer.op,
        "rank": factors.rank,
        "share": share,
        "macs_before": layer.macs(None),
        "macs_after": layer.macs(Some(factors.rank)),
        "data_aware": factors.bias_shift.is_some(),
    });
    let replaces = vec![root];
    let alternative = Alternative {
        family: NAME,
        replaces,
        is_layer: true,
        error: factors.error,
        measured: false,
        // A layer's own output error says little of the model's.
        needs_measurement: true,
        excluded: false,
        details,
    };
    let approximation = offer(egraph, alternative);
    mark_factor(egraph, output);
    egraph.analysis.stand_ins.insert(output, StandIn { layer: root, op: layer.op });
    let approximate = egraph.add(Onnx::Approx(approximation, [output]));
    egraph.union(root, approximate);
    approximate
}

fn matrix(values: &[f64], rows: usize, columns: usize) -> Option<Array2<f32>> {
    Array2::from_shape_vec((rows, columns), values.iter().map(|&v| v as f32).collect()).ok()
}

fn weight_leaf(egraph: &mut Graph, values: &Array2<f32>) -> Id {
    let dims: Vec<i64> = values.shape().iter().map(|&d| d as i64).collect();
    let data: Vec<f32> = values.iter().copied().collect();
    add_weight(egraph, tensor::from_f32("", &dims, &data))
}

fn attributes(egraph: &mut Graph, attrs: OpAttrs) -> Id {
    let id = egraph.analysis.intern_attrs(attrs);
    egraph.add(Onnx::Attrs(id))
}

/// The shape of a float value (dims may be open).
fn float_shape(egraph: &Graph, id: Id) -> Option<Shape> {
    let facts = &egraph[id].data;
    (facts.dtype == Some(DataType::Float)).then_some(())?;
    facts.shape.clone()
}

/// The product of the known dims (an open dim counts as 1, as costs count it).
fn known_product(dims: &[Dim]) -> u64 {
    dims.iter().map(|d| d.known().and_then(|v| u64::try_from(v).ok()).unwrap_or(1)).product()
}

/// `shape` with the dim at `axis` set to `size`.
fn with_dim(shape: &Shape, axis: usize, size: usize) -> Shape {
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
    if already_factorized(egraph, root) {
        return None;
    }
    let (x, w, c, attrs) = (var(subst, "?x")?, var(subst, "?w")?, var(subst, "?c")?, var(subst, "?a")?);
    let gemm = attrs_of(egraph, attrs)?.clone();
    if gemm.attr_int("transA").unwrap_or(0) != 0 {
        return None;
    }
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

pub(crate) fn factorize_conv(egraph: &mut Graph, root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    if already_factorized(egraph, root) {
        return None;
    }
    let (x, w, b, attrs) = (var(subst, "?x")?, var(subst, "?w")?, var(subst, "?b")?, var(subst, "?a")?);
    let conv = attrs_of(egraph, attrs)?.clone();
    if conv.attr_int("group").unwrap_or(1) != 1 {
        return None;
    }
    let (values, dims) = float_weight(egraph, w)?;
    let out_shape = float_shape(egraph, root)?;
    float_shape(egraph, x)?;
    if dims.len() != 4 || out_shape.rank() != 4 {
        return None;
    }
    let (cout, patch) = (dims[0], dims[1] * dims[2] * dims[3]);
    let bias = if is_absent(egraph, b) {
        vec![0.0; cout]
    } else {
        let (bias, bias_dims) = float_weight(egraph, b)?;
        (bias_dims == [cout]).then_some(bias)?
    };
    let vectors = known_product(&[out_shape.0[0].clone(), out_shape.0[2].clone(), out_shape.0[3].clone()]);
    let layer = Layer { op: "Conv", weights: matrix(&values, cout, patch)?, vectors };
    let receptive_fields =
        MomentVectors::Patches { channels: dims[1], kernel: [dims[2], dims[3]], attributes: conv.attributes.clone() };
    let mut offered = None;
    for (share, factors) in factorizations(egraph, x, &receptive_fields, &layer)? {
        let rank = factors.rank;
        // r × (Cin·kh·kw), row-major, is the [r, Cin, kh, kw] weight.
        let first_dims = [rank as i64, dims[1] as i64, dims[2] as i64, dims[3] as i64];
        let first_values: Vec<f32> = factors.first.iter().copied().collect();
        let first_weights = add_weight(egraph, tensor::from_f32("", &first_dims, &first_values));
        let absent = egraph.add(Onnx::Absent);
        let middle = with_dim(&out_shape, 1, rank);
        let first = add_typed_op(egraph, "Conv", vec![x, first_weights, absent], attrs, DataType::Float, Some(middle));
        mark_factor(egraph, first);
        let second_values: Vec<f32> = factors.second.iter().copied().collect();
        let second_weights =
            add_weight(egraph, tensor::from_f32("", &[cout as i64, rank as i64, 1, 1], &second_values));
        let shifted: Vec<f32> = match &factors.bias_shift {
            Some(shift) => bias.iter().zip(shift).map(|(b, s)| (b + s) as f32).collect(),
            None => bias.iter().map(|&b| b as f32).collect(),
        };
        let keeps_bias = !is_absent(egraph, b) || factors.bias_shift.is_some();
        let bias_leaf =
            if keeps_bias { add_weight(egraph, tensor::from_f32("", &[cout as i64], &shifted)) } else { absent };
        let pointwise = attributes(egraph, OpAttrs::default().with(attribute::ints("kernel_shape", &[1, 1])));
        let output = add_typed_op(
            egraph,
            "Conv",
            vec![first, second_weights, bias_leaf],
            pointwise,
            DataType::Float,
            Some(out_shape.clone()),
        );
        offered = Some(offer_factors(egraph, root, output, &layer, share, &factors));
    }
    offered
}
