//! The `lowrank` family's Conv applier. A group-1 2-D Conv with a constant
//! float weight `[Cout, Cin, kh, kw]` gets, for each MAC share its settings
//! ask for, one factorized form at the ranks that keep that share
//! ([`super::macs`]), built as a chain of Convs:
//!
//! - `svd`: a kh×kw Conv Cin→r (the layer's attributes, no bias), then a 1x1
//!   Conv r→Cout with the bias (the factors: [`super::factor`]);
//! - `spatial`: a kh×1 Conv Cin→r (the layer's vertical stride, pads and
//!   dilation), then a 1×kw Conv r→Cout (the horizontal ones, with the bias)
//!   ([`super::spatial`]; kh > 1 and kw > 1 only);
//! - `tucker2`: a 1x1 Conv Cin→r1, a kh×kw Conv r1→r2 (the layer's
//!   attributes), a 1x1 Conv r2→Cout with the bias ([`super::tucker`];
//!   kernels larger than 1x1 only).
//!
//! With `--lowrank-form best` every form that applies is built at each share
//! and only the one with the lowest estimated error is offered, so the
//! alternatives the budgeted search measures one by one stay one per share;
//! a named form offers only that form. Every form's last factor is refitted,
//! its error estimated and the bias corrected for the mean shift alike
//! ([`super::kernel`]). An `auto_pad` layer keeps its `auto_pad` in each
//! stage: SAME and VALID pad each axis on its own, and a stage of kernel 1
//! and stride 1 along an axis pads nothing there.

use egg::{Id, Subst, Symbol};

use super::appliers::{
    attributes, float_shape, mark_factor, moment_of, offer_alternative, settings, unfactorized, with_dim,
};
use super::factor::Decomposition;
use super::kernel::{ConvKernel, Factored, FittedFactors, Stage};
use super::macs::{self, Positions};
use super::settings::{Form, LowrankSettings};
use super::spatial::SpatialSvd;
use super::tucker;
use crate::egraph::analysis::{is_absent, Graph, OpAttrs};
use crate::egraph::language::Onnx;
use crate::egraph::nodes::{add_typed_op, add_weight, float_weight};
use crate::eval::statistics::MomentVectors;
use crate::ir::{attribute, tensor, AttributeList, DataType, Shape};
use crate::weights::linalg::LinalgError;

/// An attribute with one value per spatial axis (`[h, w]`), its default
/// when absent; `None` when it is malformed.
fn per_axis(conv: &OpAttrs, name: &str, default: i64) -> Option<[i64; 2]> {
    match conv.attr_ints(name) {
        None | Some([]) => Some([default; 2]),
        Some(&[h, w]) => Some([h, w]),
        Some(_) => None,
    }
}

/// Whether the layer pads explicitly (`pads`, no `auto_pad`).
fn explicit_pads(conv: &OpAttrs) -> bool {
    matches!(conv.attr_string("auto_pad").as_deref(), None | Some("NOTSET") | Some(""))
}

/// The layer's attributes for a stage that keeps only `axis` (0: vertical,
/// 1: horizontal) of the kernel: a kernel of `size` along it and 1 across,
/// that axis's stride, dilation and pads, none across.
fn one_axis(conv: &OpAttrs, axis: usize, size: usize) -> Option<OpAttrs> {
    let (strides, dilations) = (per_axis(conv, "strides", 1)?, per_axis(conv, "dilations", 1)?);
    let along = |values: [i64; 2], across: i64| if axis == 0 { [values[0], across] } else { [across, values[1]] };
    let mut kernel = [1, 1];
    kernel[axis] = size as i64;
    let mut attrs = conv
        .with(attribute::ints("kernel_shape", &kernel))
        .with(attribute::ints("strides", &along(strides, 1)))
        .with(attribute::ints("dilations", &along(dilations, 1)));
    if explicit_pads(conv) {
        let pads = match conv.attr_ints("pads") {
            None | Some([]) => [0; 4],
            Some(&[top, left, bottom, right]) => [top, left, bottom, right],
            Some(_) => return None,
        };
        // [begin_h, begin_w, end_h, end_w].
        let kept = if axis == 0 { [pads[0], 0, pads[2], 0] } else { [0, pads[1], 0, pads[3]] };
        attrs = attrs.with(attribute::ints("pads", &kept));
    }
    Some(attrs)
}

/// A 1x1 Conv's attributes.
fn pointwise() -> OpAttrs {
    OpAttrs::default().with(attribute::ints("kernel_shape", &[1, 1]))
}

/// The decompositions a layer's forms read their factors from, made once
/// for the forms the settings allow and the kernel has.
struct Decompositions<'a> {
    kernel: &'a ConvKernel,
    svd: Option<Decomposition>,
    spatial: Option<SpatialSvd>,
    tucker: bool,
}

impl<'a> Decompositions<'a> {
    fn new(
        kernel: &'a ConvKernel,
        settings: &LowrankSettings,
        moment: Option<&crate::eval::statistics::SecondMoment>,
    ) -> Self {
        let allows = |form| settings.forms.allows(form);
        let svd = allows(Form::Svd).then(|| Decomposition::new(kernel.weights.clone(), moment).ok()).flatten();
        let spatial =
            (allows(Form::Spatial) && SpatialSvd::applies(kernel.dims)).then(|| SpatialSvd::new(kernel).ok()).flatten();
        let tucker = allows(Form::Tucker2) && tucker::applies(kernel.dims);
        Decompositions { kernel, svd, spatial, tucker }
    }

    /// The forms this layer can take.
    fn forms(&self) -> Vec<Form> {
        let offered =
            [(Form::Svd, self.svd.is_some()), (Form::Spatial, self.spatial.is_some()), (Form::Tucker2, self.tucker)];
        offered.into_iter().filter(|&(_, has)| has).map(|(form, _)| form).collect()
    }

    /// `form`'s factors at `ranks`, fitted and judged.
    fn fitted(&self, form: Form, ranks: &[usize]) -> Result<FittedFactors, LinalgError> {
        let missing = || LinalgError::InvalidArgument(format!("no {} decomposition", form.name()));
        let factored = match form {
            Form::Svd => {
                let factors = self.svd.as_ref().ok_or_else(missing)?.factors(ranks[0])?;
                let [_, cin, kh, kw] = self.kernel.dims;
                let first =
                    Stage { dims: [factors.rank, cin, kh, kw], values: factors.first.iter().copied().collect() };
                let ranks = vec![factors.rank];
                Factored { form, ranks, leading: vec![first], composed: factors.first, last: factors.second }
            }
            Form::Spatial => self.spatial.as_ref().ok_or_else(missing)?.factored(ranks[0])?,
            Form::Tucker2 => tucker::tucker2(self.kernel, ranks[0], ranks[1])?,
        };
        self.kernel.fit(factored)
    }
}

/// The layer being factorized: its input, attributes (the interned node and
/// their values), kernel size and input and output shapes.
struct ConvLayer {
    x: Id,
    attrs: Id,
    conv: OpAttrs,
    kernel: [usize; 2],
    input: Shape,
    output: Shape,
}

impl ConvLayer {
    /// What a form's stages are run as: each stage's attributes (an
    /// interned node) and output shape, input first.
    fn plan(&self, egraph: &mut Graph, form: Form, ranks: &[usize]) -> Option<Vec<(Id, Shape)>> {
        let last = |egraph: &mut Graph| (attributes(egraph, pointwise()), self.output.clone());
        Some(match form {
            Form::Svd => vec![(self.attrs, with_dim(&self.output, 1, ranks[0])), last(egraph)],
            Form::Spatial => {
                let vertical = one_axis(&self.conv, 0, self.kernel[0])?;
                let horizontal = one_axis(&self.conv, 1, self.kernel[1])?;
                // kh×1 at H_out × W_in.
                let mut middle = with_dim(&self.output, 1, ranks[0]);
                middle.0[3] = self.input.0[3].clone();
                vec![(attributes(egraph, vertical), middle), (attributes(egraph, horizontal), self.output.clone())]
            }
            Form::Tucker2 => {
                let first = (attributes(egraph, pointwise()), with_dim(&self.input, 1, ranks[0]));
                vec![first, (self.attrs, with_dim(&self.output, 1, ranks[1])), last(egraph)]
            }
        })
    }

    /// Adds a form's Convs reading the layer's input, as `plan` says; the
    /// last one takes `bias` (a leaf or absent). Returns its output; the
    /// leading ones are marked as factors.
    fn add_stages(&self, egraph: &mut Graph, fitted: &FittedFactors, plan: Vec<(Id, Shape)>, bias: Id) -> Id {
        let factored = &fitted.factored;
        let absent = egraph.add(Onnx::Absent);
        let mut input = self.x;
        for (stage, (attrs, shape)) in factored.leading.iter().zip(&plan) {
            let dims = stage.dims.map(|d| d as i64);
            let weight = add_weight(egraph, tensor::from_f32("", &dims, &stage.values));
            let inputs = vec![input, weight, absent];
            input = add_typed_op(egraph, "Conv", inputs, *attrs, DataType::Float, Some(shape.clone()));
            mark_factor(egraph, input);
        }
        // B (Cout × rows) is the last stage's [Cout, r, 1, rows / r] weight.
        let (cout, rows) = factored.last.dim();
        let channels = factored.leading.last().map_or(rows, |stage| stage.dims[0]);
        let dims = [cout as i64, channels as i64, 1, (rows / channels.max(1)) as i64];
        let values: Vec<f32> = factored.last.iter().copied().collect();
        let weight = add_weight(egraph, tensor::from_f32("", &dims, &values));
        let (attrs, shape) = plan.last().expect("a last stage").clone();
        add_typed_op(egraph, "Conv", vec![input, weight, bias], attrs, DataType::Float, Some(shape))
    }
}

/// The last stage's bias: the layer's `bias` (its values, zeros when
/// `b` is absent) plus the mean shift when there is one; absent when both are.
fn bias_leaf(egraph: &mut Graph, b: Id, bias: &[f64], shift: Option<&[f64]>) -> Id {
    if is_absent(egraph, b) && shift.is_none() {
        return egraph.add(Onnx::Absent);
    }
    let shifted: Vec<f32> = match shift {
        Some(shift) => bias.iter().zip(shift).map(|(b, s)| (b + s) as f32).collect(),
        None => bias.iter().map(|&b| b as f32).collect(),
    };
    add_weight(egraph, tensor::from_f32("", &[bias.len() as i64], &shifted))
}

pub(crate) fn factorize_conv(egraph: &mut Graph, root: Id, subst: &Subst, _op: Option<Symbol>) -> Option<Id> {
    let ([x, w, b], attrs, conv) = unfactorized(egraph, root, subst, "?b", ("group", 1))?;
    let (values, dims) = float_weight(egraph, w)?;
    let out_shape = float_shape(egraph, root)?;
    let x_shape = float_shape(egraph, x)?;
    let &[cout, cin, kh, kw] = dims.as_slice() else { return None };
    if out_shape.rank() != 4 || x_shape.rank() != 4 {
        return None;
    }
    let dims = [cout, cin, kh, kw];
    let bias = if is_absent(egraph, b) {
        vec![0.0; cout]
    } else {
        let (bias, bias_dims) = float_weight(egraph, b)?;
        (bias_dims == [cout]).then_some(bias)?
    };
    let settings = settings(egraph)?.clone();
    let strides = per_axis(&conv, "strides", 1)?.map(|s| usize::try_from(s).ok().filter(|&s| s > 0));
    let at = Positions::of(&x_shape, &out_shape, [strides[0]?, strides[1]?])?;
    let receptive_fields =
        MomentVectors::Patches { channels: cin, kernel: [kh, kw], attributes: conv.attributes.clone() };
    let moment = moment_of(egraph, x, &receptive_fields);
    let kernel = ConvKernel::new(&values, dims, moment.as_deref())?;
    let decompositions = Decompositions::new(&kernel, &settings, moment.as_deref());
    let macs_before = macs::layer(dims, &at);
    let layer = ConvLayer { x, attrs, conv, kernel: [kh, kw], input: x_shape, output: out_shape };
    let mut offered = None;
    let mut seen: Vec<(Form, Vec<usize>)> = Vec::new();
    for &share in &settings.shares {
        let candidates = decompositions.forms().into_iter().filter_map(|form| {
            let ranks = macs::ranks_for_share(form, share, dims, &at, settings.channel_multiple)?;
            let macs_after = macs::of_form(form, &ranks, dims, &at);
            (macs_after < macs_before).then_some(())?;
            Some((decompositions.fitted(form, &ranks).ok()?, macs_after))
        });
        // The lowest estimated error (the first form on a tie).
        let Some((fitted, macs_after)) = candidates.min_by(|a, b| a.0.error.total_cmp(&b.0.error)) else { continue };
        let (form, ranks) = (fitted.factored.form, fitted.factored.ranks.clone());
        if seen.contains(&(form, ranks.clone())) {
            continue;
        }
        seen.push((form, ranks.clone()));
        let plan = layer.plan(egraph, form, &ranks)?;
        let bias_leaf = bias_leaf(egraph, b, &bias, fitted.bias_shift.as_deref());
        let output = layer.add_stages(egraph, &fitted, plan, bias_leaf);
        let fitted_factors = match (kernel.data_aware(), form) {
            (false, _) => "none",
            (true, Form::Svd) => "all",
            (true, _) => "last",
        };
        let details = serde_json::json!({
            "form": form.name(),
            "op": "Conv",
            "rank": ranks[0],
            "ranks": ranks,
            "share": share,
            "macs_before": macs_before,
            "macs_after": macs_after,
            "data_aware": kernel.data_aware(),
            "fitted": fitted_factors,
        });
        offered = Some(offer_alternative(egraph, root, output, "Conv", fitted.error, details));
    }
    offered
}
