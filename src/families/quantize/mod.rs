//! The `quant` family: QDQ quantization. Its appliers ([`appliers`]) give
//! each linear layer and Add an integer alternative (or, weight-only, integer
//! weights behind a DequantizeLinear), [`weights`] rounds the weights,
//! [`bias_correction`] corrects biases for the mean shift rounding causes,
//! [`qdq`] lowers the chosen operator forms to QDQ nodes, [`kernel_check`]
//! probes ONNX Runtime's integer kernels for saturation, and [`report`] is
//! its section of the optimize report.

pub mod appliers;
pub mod bias_correction;
pub mod calibration;
pub mod kernel_check;
pub mod qdq;
pub mod report;
pub mod settings;
pub mod weights;

use egg::Id;

pub use appliers::{activation_parameters, float_operator};
pub use settings::{ActivationType, QuantMode, QuantSettings};

use super::{CheckError, Enabled, Extracted, Family, Section, StatisticsRequest, Written};
use crate::egraph::analysis::Graph;
use crate::egraph::appliers::NamedApplier;
use crate::egraph::guards::{Check, Guard};
use crate::egraph::language::{Onnx, WeightId};
use crate::ir::Model;
use report::{KernelCheck, LayerForms, QuantizationReport, WidenedBias};

/// The family's name (`passes/quant.rules`).
pub const NAME: &str = "quant";

/// The lowest default-domain opset quantized models are written at
/// (per-channel DequantizeLinear needs 13; 4-bit and block-wise weights 21,
/// see [`QuantSettings::opset`]).
pub const QUANT_OPSET: i64 = 13;

/// QDQ quantization.
pub struct Quantize;

const APPLIERS: &[NamedApplier] = &[
    NamedApplier::new(
        "quantize_conv",
        "(Conv ?x ?w ?b ?a) with constant weights: QLinearConv (per-channel int8 weights, int32 bias) read back by DequantizeLinear",
        appliers::quantize_conv,
    ),
    NamedApplier::new(
        "quantize_matmul",
        "(MatMul ?x ?w ?a) with a constant 2-D ?w: QLinearMatMul read back by DequantizeLinear",
        appliers::quantize_matmul,
    ),
    NamedApplier::new(
        "quantize_gemm",
        "(Gemm ?x ?w ?c ?a) with constant ?w: com.microsoft QGemm (int32 bias), read back by DequantizeLinear or returning float",
        appliers::quantize_gemm,
    ),
    NamedApplier::new(
        "quantize_add",
        "(Add ?x ?y ?a) of calibrated activations: com.microsoft QLinearAdd read back by DequantizeLinear",
        appliers::quantize_add,
    ),
    NamedApplier::new(
        "requantize",
        "(QuantizeLinear (DequantizeLinear ?q ?s1 ?z1 ?a1) ?s ?z ?a): ?q when the parameters agree, else ?q's integer node with output parameters ?s ?z",
        appliers::requantize,
    ),
    NamedApplier::new(
        "commute_quantize",
        "(QuantizeLinear ?y ?s ?z ?a) of MaxPool, Reshape, Transpose, Flatten, (Un)Squeeze, Slice, Gather, Concat, nearest Resize, ...: the operator on quantized inputs; ?y may be read as its result dequantized",
        appliers::commute_quantize,
    ),
];

#[rustfmt::skip]
const GUARDS: &[Guard] = &[
    Guard::new("zero_point_is_lowest", "a quantization zero point is its type's lowest level (nothing below zero survives)", Some(1), Check::Classes(|g, _, a| appliers::zero_point_is_lowest(g, a[0]))),
    Guard::new("clip_within_quantized_range", "(lo hi scale zero_point): clipping to [lo, hi] changes nothing once quantized", Some(4), Check::Classes(|g, _, a| appliers::clip_within_quantized_range(g, a[0], a[1], a[2], a[3]))),
];

/// Operators timed in ONNX Runtime when quantized layers are priced by
/// measurement: the layers quantization chooses between, the conversions
/// around them, and MaxPool, whose integer form ONNX Runtime runs slowly
/// outside integer chains.
const MEASURED_OPERATORS: &[&str] = &[
    "Conv",
    "QLinearConv",
    "MatMul",
    "QLinearMatMul",
    "Gemm",
    "com.microsoft::QGemm",
    "Add",
    "com.microsoft::QLinearAdd",
    "QuantizeLinear",
    "DequantizeLinear",
    "MaxPool",
];

impl Family for Quantize {
    fn name(&self) -> &'static str {
        NAME
    }

    fn rules(&self) -> &'static str {
        include_str!("../../../passes/quant.rules")
    }

    fn appliers(&self) -> &'static [NamedApplier] {
        APPLIERS
    }

    /// Summed measured sensitivities only roughly add up: half the
    /// relative L2 of 0.1 quantized models verify against.
    fn default_budget(&self) -> f64 {
        0.05
    }

    /// 8-bit activations and weights stay within 0.1 of the float output
    /// on the zoo and PP-OCR models; beyond it a kernel or range is wrong.
    fn broken_rel_l2(&self) -> f64 {
        0.1
    }

    fn guards(&self) -> &'static [Guard] {
        GUARDS
    }

    fn measured_operators(&self) -> &'static [&'static str] {
        MEASURED_OPERATORS
    }

    fn opset(&self, enabled: &Enabled) -> Option<i64> {
        Some(enabled.settings::<QuantSettings>().map_or(QUANT_OPSET, |s| s.opset().max(QUANT_OPSET)))
    }

    /// The ranges of what integer layers read and write (asked in both modes,
    /// see below), and the mean inputs of the layers whose bias is corrected.
    fn statistics(&self, enabled: &Enabled, model: &Model) -> StatisticsRequest {
        let Some(settings) = enabled.settings::<QuantSettings>() else { return StatisticsRequest::default() };
        // Weight-only layers need no ranges, but capturing the same values in
        // both modes keeps the evaluator's float arithmetic, and so the means
        // bias correction reads, the same.
        let graph = &model.graph;
        let ranges = calibration::needs_range(model).into_iter().map(|value| graph.value(value).name.clone()).collect();
        let means =
            if settings.bias_correction { calibration::corrected_layer_inputs(model) } else { Default::default() };
        StatisticsRequest { ranges, means, ..StatisticsRequest::default() }
    }

    fn offers(&self, egraph: &Graph, node: &Onnx) -> bool {
        appliers::is_quantized_alternative(egraph, node)
    }

    fn is_layer_alternative(&self, egraph: &Graph, node: &Onnx) -> bool {
        appliers::is_layer_alternative(egraph, node)
    }

    /// Integer chains run through MaxPool too ([`appliers::is_integer_max_pool`]).
    fn forced(&self, egraph: &Graph, class: Id, node: &Onnx) -> bool {
        appliers::is_layer_alternative(egraph, node) || appliers::is_integer_max_pool(egraph, class, node)
    }

    fn lower(&self, model: &mut Model) -> Result<(), String> {
        qdq::lower_to_qdq(model).map(|_| ()).map_err(|e| format!("writing QDQ nodes: {e}"))
    }

    fn report(&self, enabled: &Enabled, extracted: &Extracted) -> Option<Box<dyn Section>> {
        let settings = enabled.settings::<QuantSettings>()?;
        Some(Box::new(engine_report(settings, extracted)))
    }

    fn check(
        &self,
        enabled: &Enabled,
        model: &mut Model,
        written: &Written,
        sections: &mut crate::egraph::Sections,
    ) -> Result<(), CheckError> {
        let report = sections.0.iter_mut().find_map(|s| s.as_any_mut().downcast_mut::<QuantizationReport>());
        let Some(report) = report else { return Ok(()) };
        report.layers = LayerForms::of(model);
        let Some(settings) = enabled.settings::<QuantSettings>() else { return Ok(()) };
        // Only integer kernels can saturate, and only samples can show it.
        if !settings.check_saturation
            || settings.mode != QuantMode::Static
            || settings.unsigned_weights
            || written.probe.is_empty()
        {
            return Ok(());
        }
        let failed = |reason: String| CheckError {
            what: "checking ONNX Runtime's integer kernels for saturation".into(),
            reason: format!("{reason} (or choose the weight type with --weights s8|s8-7bit|u8)"),
        };
        let checked = kernel_check::check(model, written.original, written.path, written.probe).map_err(failed)?;
        let mut check = KernelCheck { signed: checked.departure, saturating: checked.saturating, unsigned: None };
        if !check.saturating.is_empty() {
            let layers: Vec<String> = check.saturating.iter().map(|s| s.layer.clone()).collect();
            kernel_check::store_weights_unsigned(model, &layers);
            let departure =
                kernel_check::departure(model, &checked.original, written.path, written.probe).map_err(failed)?;
            check.unsigned = Some(departure);
        }
        report.kernel_check = Some(check);
        Ok(())
    }
}

/// The quantization section as far as the e-graph knows it (the layer
/// forms and the kernel check are added by [`Quantize::check`]): the
/// settings, and the chosen layers whose bias was corrected or widened.
fn engine_report(settings: &QuantSettings, extracted: &Extracted) -> QuantizationReport {
    let Extracted { built, choice, class_names, calibration } = extracted;
    let egraph = &built.egraph;
    let chosen_weights: std::collections::HashSet<WeightId> = choice
        .chosen
        .values()
        .filter_map(|node| match node {
            Onnx::Weight(w) => Some(*w),
            _ => None,
        })
        .collect();
    let mut widened_bias: Vec<WidenedBias> = Vec::new();
    let mut bias_corrected: Vec<String> = Vec::new();
    let adjusted =
        egraph.analysis.alternatives.iter().filter(|(_, record)| record.family == NAME).filter_map(|(_, record)| {
            let bias = record.details.get("adjusted_bias")?;
            let weight = WeightId::try_from(bias.get("weight")?.as_u64()?).ok()?;
            Some((record, bias, weight))
        });
    let mut origins = None;
    for (record, bias, _) in adjusted.filter(|(_, _, weight)| chosen_weights.contains(weight)) {
        let Some(&layer_class) = record.replaces.first() else { continue };
        let class = egraph.find(layer_class);
        let op = record.details.get("op").and_then(|op| op.as_str()).unwrap_or_default();
        // The layers' names, as export gave them (looked up only when needed).
        let origins = origins.get_or_insert_with(|| crate::egraph::export::Origins::of(built));
        let layer = match origins.of_layer(class, op) {
            Some(origin) if !origin.name.is_empty() => origin.name.clone(),
            _ => class_names.get(&class).cloned().unwrap_or_else(|| format!("e-class {class}")),
        };
        let widened: Vec<usize> = bias
            .get("widened")
            .and_then(|w| w.as_array())
            .map(|w| w.iter().filter_map(|c| usize::try_from(c.as_u64()?).ok()).collect())
            .unwrap_or_default();
        if !widened.is_empty() && !widened_bias.iter().any(|w| w.layer == layer) {
            widened_bias.push(WidenedBias { layer: layer.clone(), channels: widened });
        }
        let corrected = bias.get("corrected").and_then(|c| c.as_bool()).unwrap_or(false);
        if corrected && !bias_corrected.contains(&layer) {
            bias_corrected.push(layer);
        }
    }
    QuantizationReport {
        settings: settings.clone(),
        calibration: calibration.cloned(),
        layers: Default::default(),
        kernel_check: None,
        widened_bias,
        bias_corrected,
    }
}

impl Section for QuantizationReport {
    fn key(&self) -> &'static str {
        "quantization"
    }

    fn table(&self, out: &mut String) {
        QuantizationReport::table(self, out)
    }

    fn verification_failure(&self, limit: f64) -> Option<String> {
        self.kernel_check.as_ref()?.disagreement(limit)
    }

    fn compressed_layers(&self) -> usize {
        self.layers.integer.len() + self.layers.weight_only.len()
    }

    fn uncompressed(&self, model: &Model) -> Box<dyn Section> {
        Box::new(QuantizationReport {
            kernel_check: None,
            widened_bias: Vec::new(),
            bias_corrected: Vec::new(),
            layers: LayerForms::of(model),
            ..self.clone()
        })
    }
}
