//! What `--quantize` did, as the optimize report states it: the settings the
//! model was quantized with, where the activation ranges came from, which
//! layers run on integers, store integer weights only or stay float, how far
//! ONNX Runtime's integer kernels departed from its reference semantics on
//! the calibration data (and which layers store uint8 weights because their
//! int8 kernels saturate), the layers whose weight scale was widened so
//! that their int32 bias fits, and those whose bias was corrected.

use std::fmt::Write as _;

use serde::Serialize;

use crate::eval::statistics::{CalibrationSummary, RANDOM_SOURCE};
use crate::families::quantize::kernel_check::{KernelDeparture, SaturatingLayer};
use crate::families::quantize::QuantSettings;
use crate::ir::graph::{Graph, Model, ValueId};

/// The quantization section of the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct QuantizationReport {
    /// The settings the written model was quantized with.
    pub settings: QuantSettings,
    /// null when nothing was calibrated (weight-only mode without --calib).
    pub calibration: Option<CalibrationSummary>,
    pub layers: LayerForms,
    /// null when the kernels were not checked (`--weights` given, or a
    /// device profile whose int8 kernels cannot saturate).
    pub kernel_check: Option<KernelCheck>,
    /// Layers whose int32 bias would have overflowed at the weight's own
    /// scale: these channels' weight scales were widened until it fit.
    pub widened_bias: Vec<WidenedBias>,
    /// Quantized layers whose bias takes back the mean shift that rounding
    /// their weights causes on the calibration data (bias correction, see
    /// [`crate::families::quantize::bias_correction`]).
    pub bias_corrected: Vec<String>,
}

/// The weighted layers of the written model (Conv, ConvTranspose, Gemm and
/// MatMul with a constant weight) by how they compute, each named by its
/// node (or, unnamed, by its output).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LayerForms {
    /// Quantized input and weights: runtimes fuse them into integer kernels.
    pub integer: Vec<String>,
    /// Integer weights behind a DequantizeLinear, float compute.
    pub weight_only: Vec<String>,
    pub float: Vec<String>,
}

/// ONNX Runtime's integer kernels against its reference semantics (see
/// [`crate::families::quantize::kernel_check`]).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KernelCheck {
    /// The whole model as first quantized, with int8 weights.
    pub signed: KernelDeparture,
    /// Layers whose fused kernel, run alone with int8 weights, saturated
    /// (see [`crate::families::quantize::kernel_check::NOISE_POWER_SHARE`]): the written model
    /// stores their weights as uint8.
    pub saturating: Vec<SaturatingLayer>,
    /// The whole model as written, when some layers' weights became uint8.
    pub unsigned: Option<KernelDeparture>,
}

/// A layer with widened weight scales.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WidenedBias {
    /// The layer's output value.
    pub layer: String,
    pub channels: Vec<usize>,
}

impl LayerForms {
    /// Classifies the weighted layers of a model in QDQ form.
    pub fn of(model: &Model) -> LayerForms {
        let graph = &model.graph;
        let mut forms = LayerForms::default();
        for node in graph.nodes.node_weights() {
            if !matches!(node.op_type.as_str(), "Conv" | "ConvTranspose" | "Gemm" | "MatMul") || !node.domain.is_empty()
            {
                continue;
            }
            let (Some(Some(input)), Some(Some(weight))) = (node.inputs.first(), node.inputs.get(1)) else { continue };
            let quantized_weight = match dequantized(graph, *weight) {
                Some(stored) => graph.constant(stored).is_some(),
                None if graph.constant(*weight).is_some() => false,
                None => continue,
            };
            let name = if node.name.is_empty() {
                node.outputs.iter().flatten().next().map(|v| graph.value(*v).name.clone()).unwrap_or_default()
            } else {
                node.name.clone()
            };
            let list = match (quantized_weight, dequantized(graph, *input).is_some()) {
                (true, true) => &mut forms.integer,
                (true, false) => &mut forms.weight_only,
                (false, _) => &mut forms.float,
            };
            list.push(name);
        }
        forms
    }
}

/// The stored value a DequantizeLinear reads, when `value` is one's output.
fn dequantized(graph: &Graph, value: ValueId) -> Option<ValueId> {
    let node = graph.node(graph.producer_node(value)?);
    (node.op_type == "DequantizeLinear" && node.domain.is_empty()).then(|| node.inputs.first().copied().flatten())?
}

/// Names listed in the table before "and N more".
const LISTED: usize = 6;

impl QuantizationReport {
    /// The report's lines for people.
    pub fn table(&self, out: &mut String) {
        let s = &self.settings;
        let (weights, _) = s.weight_type(s.weight_bits);
        let seven_bit = if s.reduced_range { " (7-bit)" } else { "" };
        let scales = match (s.block_size, s.per_channel) {
            (Some(block), _) => format!("blocks of {block}"),
            (None, true) => "per channel".into(),
            (None, false) => "per tensor".into(),
        };
        let l = &self.layers;
        let total = l.integer.len() + l.weight_only.len() + l.float.len();
        let _ = write!(out, "quantized: {} of {total} layers integer", l.integer.len());
        if !l.weight_only.is_empty() {
            let _ = write!(out, ", {} weight-only", l.weight_only.len());
        }
        let activations = s.activations.dtype();
        let _ = writeln!(out, " ({weights}{seven_bit} weights {scales}, {activations} activations)");
        if !l.float.is_empty() {
            let _ = writeln!(out, "  float: {}", listed(&l.float));
        }
        if let Some(c) = &self.calibration {
            let source = if c.source == RANDOM_SOURCE { "seeded random inputs".into() } else { c.source.clone() };
            let _ = writeln!(out, "calibration: {} samples from {source}, {:?}", c.samples, c.method);
        }
        if !self.bias_corrected.is_empty() {
            let count = self.bias_corrected.len();
            let _ = writeln!(out, "bias correction: {count} layer(s) ({})", listed(&self.bias_corrected));
        }
        if let Some(check) = &self.kernel_check {
            let departure = |d: &KernelDeparture| {
                format!(
                    "kernels depart {:.2e} from reference semantics (quantization error {:.2e})",
                    d.kernels, d.quantization
                )
            };
            let _ = writeln!(out, "integer kernels, int8 weights: {}", departure(&check.signed));
            if !check.saturating.is_empty() {
                let layers: Vec<String> = check
                    .saturating
                    .iter()
                    .map(|s| format!("{} (up to {:.0} levels, {:.2} RMS)", s.layer, s.levels, s.rms_levels))
                    .collect();
                let _ = writeln!(out, "  saturating alone, given uint8 weights: {}", listed(&layers));
            }
            if let Some(unsigned) = &check.unsigned {
                let _ = writeln!(out, "integer kernels, as written: {}", departure(unsigned));
            }
        }
        for widened in &self.widened_bias {
            let _ = writeln!(
                out,
                "bias: '{}' widened the weight scale of {} channel(s) for its int32 bias to fit",
                widened.layer,
                widened.channels.len()
            );
        }
    }
}

impl KernelCheck {
    /// The departure of the model as written (uint8 weights where some
    /// layers saturated, else the int8 one).
    pub fn as_written(&self) -> &KernelDeparture {
        self.unsigned.as_ref().unwrap_or(&self.signed)
    }

    /// Why a model fails verification at relative L2 `max_rel_l2` although
    /// its outputs may pass: ONNX Runtime's integer kernels depart from the
    /// model's reference semantics by more (other runtimes compute those
    /// semantics, so the model's error depends on where it runs).
    pub fn disagreement(&self, max_rel_l2: f64) -> Option<String> {
        let departure = self.as_written().kernels;
        (departure > max_rel_l2).then(|| {
            format!(
                "ONNX Runtime's integer kernels depart {departure:.4} (rel L2) from the model's reference \
                 semantics on the calibration probe, above {max_rel_l2}"
            )
        })
    }
}

/// Up to [`LISTED`] names, then how many more.
fn listed(names: &[String]) -> String {
    let shown = names.iter().take(LISTED).map(String::as_str).collect::<Vec<_>>().join(", ");
    match names.len().saturating_sub(LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_that_depart_beyond_the_tolerance_are_a_disagreement() {
        let departure = |kernels| KernelDeparture { kernels, quantization: 0.05 };
        let mut check = KernelCheck { signed: departure(0.3), saturating: Vec::new(), unsigned: None };
        assert!(check.disagreement(0.1).unwrap().contains("0.3000"));
        assert_eq!(check.disagreement(0.5), None);
        // As written: the uint8 model's departure counts, not the int8 one's.
        check.unsigned = Some(departure(0.02));
        assert_eq!(check.disagreement(0.1), None);
        check.unsigned = Some(departure(0.2));
        assert!(check.disagreement(0.1).is_some());
    }
}
