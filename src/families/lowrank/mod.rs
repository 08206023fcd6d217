//! The `lowrank` family: low-rank factorization of MatMul, Gemm and Conv
//! layers. [`appliers`] offer the MatMul and Gemm forms and hold what the
//! appliers share, [`conv`] offers a Conv's forms (SVD, spatial SVD,
//! Tucker-2; under `best` the one of lowest estimated error per share),
//! [`factor`] computes two-factor SVDs (plain or data-aware), [`spatial`] and
//! [`tucker`] the other Conv forms' factors, [`kernel`] what every Conv form
//! shares (refit of the last factor, error, bias correction), [`macs`] what
//! each form costs and the ranks that keep a share, [`calibration`] the
//! second moments it asks for, [`settings`] which shares and forms are
//! offered, and the report section lists each factorized layer with its
//! form, ranks, MACs and error.

pub mod appliers;
pub mod calibration;
pub mod conv;
pub mod factor;
pub mod kernel;
pub mod macs;
pub mod settings;
pub mod spatial;
pub mod tucker;

use std::fmt::Write as _;

use serde::Serialize;

pub use settings::{Form, Forms, LowrankSettings};

use super::{Enabled, Extracted, Family, Section, StatisticsRequest};
use crate::egraph::analysis::Graph;
use crate::egraph::appliers::NamedApplier;
use crate::egraph::language::Onnx;
use crate::ir::Model;

/// The family's name (`passes/lowrank.rules`).
pub const NAME: &str = "lowrank";

/// Low-rank factorization.
pub struct LowRank;

const APPLIERS: &[NamedApplier] = &[
    NamedApplier::new(
        "factorize_matmul",
        "(MatMul ?x ?w ?a) with a constant 2-D ?w: (x·A)·B at each rank the settings ask for",
        appliers::factorize_matmul,
    ),
    NamedApplier::new(
        "factorize_gemm",
        "(Gemm ?x ?w ?c ?a) with constant ?w, transA 0: Gemm(x·A, B, ?c) at each rank",
        appliers::factorize_gemm,
    ),
    NamedApplier::new(
        "factorize_conv",
        "(Conv ?x ?w ?b ?a), group 1, 2-D: SVD (kh×kw then 1x1), spatial SVD (kh×1 then 1×kw) or \
         Tucker-2 (1x1, kh×kw, 1x1), at each rank",
        conv::factorize_conv,
    ),
];

/// Whether `node` is one of the family's factorized forms.
pub(crate) fn is_alternative(egraph: &Graph, node: &Onnx) -> bool {
    matches!(node, Onnx::Approx(a, _) if egraph.analysis.alternatives.get(*a).is_some_and(|r| r.family == NAME))
}

impl Family for LowRank {
    fn name(&self) -> &'static str {
        NAME
    }

    fn rules(&self) -> &'static str {
        include_str!("../../../passes/lowrank.rules")
    }

    fn appliers(&self) -> &'static [NamedApplier] {
        APPLIERS
    }

    fn default_budget(&self) -> f64 {
        0.05
    }

    /// A forced share can cost a lot of accuracy by the user's choice; only
    /// an output as far from the float one as the float one is large is broken.
    fn broken_rel_l2(&self) -> f64 {
        1.0
    }

    fn measured_operators(&self) -> &'static [&'static str] {
        &["Conv", "MatMul", "Gemm"]
    }

    /// The second moments of the layers' inputs, for data-aware factors.
    fn statistics(&self, enabled: &Enabled, model: &Model) -> StatisticsRequest {
        let data_aware = enabled.settings::<LowrankSettings>().is_some_and(|s| s.data_aware);
        let second_moments = if data_aware { calibration::moment_requests(model) } else { Vec::new() };
        StatisticsRequest { second_moments, ..Default::default() }
    }

    fn offers(&self, egraph: &Graph, node: &Onnx) -> bool {
        is_alternative(egraph, node)
    }

    fn is_layer_alternative(&self, egraph: &Graph, node: &Onnx) -> bool {
        is_alternative(egraph, node)
    }

    fn report(&self, enabled: &Enabled, extracted: &Extracted) -> Option<Box<dyn Section>> {
        let settings = enabled.settings::<LowrankSettings>()?;
        Some(Box::new(LowRankReport::of(settings, extracted)))
    }
}

/// One factorized layer, as the report lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FactorizedLayer {
    pub layer: String,
    pub op: String,
    /// `svd`, `spatial` or `tucker2`.
    pub form: String,
    /// The (first) rank: r, or Tucker-2's r1.
    pub rank: u64,
    /// Every rank of the form: `[r]`, or Tucker-2's `[r1, r2]`.
    pub ranks: Vec<u64>,
    pub macs_before: u64,
    pub macs_after: u64,
    /// The error extraction charged: measured on the output with this layer
    /// alone factorized, or the factors' own estimate.
    pub error: f64,
    pub measured: bool,
    /// Whether any factor was fitted to calibration data.
    pub data_aware: bool,
    /// Which factors were fitted to calibration data: `all` (data-aware
    /// SVD), `last` (spatial SVD and Tucker-2: the last factor refitted, the
    /// others the weights' SVD or HOSVD), `none`.
    pub fitted: String,
}

/// The `lowrank` section of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LowRankReport {
    pub settings: LowrankSettings,
    pub layers: Vec<FactorizedLayer>,
}

impl LowRankReport {
    fn of(settings: &LowrankSettings, extracted: &Extracted) -> LowRankReport {
        let Extracted { built, choice, class_names, .. } = extracted;
        let egraph = &built.egraph;
        let origins = crate::egraph::export::Origins::of(built);
        let mut layers = Vec::new();
        for (&class, node) in &choice.chosen {
            let Onnx::Approx(approximation, _) = node else { continue };
            let Some(record) = egraph.analysis.alternatives.get(*approximation).filter(|r| r.family == NAME) else {
                continue;
            };
            let details = &record.details;
            let text = |key: &str| details.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let number = |key: &str| details.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
            let op = text("op");
            let origin = origins.of_layer(class, &op).or_else(|| origins.of_class(class));
            let layer = match origin {
                Some(origin) if !origin.name.is_empty() => origin.name.clone(),
                _ => class_names.get(&class).cloned().unwrap_or_else(|| format!("e-class {class}")),
            };
            layers.push(FactorizedLayer {
                layer,
                op,
                form: text("form"),
                rank: number("rank"),
                ranks: details
                    .get("ranks")
                    .and_then(|v| v.as_array())
                    .map(|ranks| ranks.iter().filter_map(|r| r.as_u64()).collect())
                    .unwrap_or_default(),
                macs_before: number("macs_before"),
                macs_after: number("macs_after"),
                error: record.error,
                measured: record.measured,
                data_aware: details.get("data_aware").and_then(|v| v.as_bool()).unwrap_or(false),
                fitted: text("fitted"),
            });
        }
        layers.sort_by(|a, b| a.layer.cmp(&b.layer));
        LowRankReport { settings: settings.clone(), layers }
    }
}

impl Section for LowRankReport {
    fn key(&self) -> &'static str {
        "lowrank"
    }

    fn table(&self, out: &mut String) {
        let (before, after): (u64, u64) =
            self.layers.iter().fold((0, 0), |(b, a), l| (b + l.macs_before, a + l.macs_after));
        let _ = writeln!(
            out,
            "factorized: {} layer(s), their MACs {} -> {}",
            self.layers.len(),
            crate::inspect::human(before),
            crate::inspect::human(after)
        );
        for l in &self.layers {
            let how = if l.measured { "measured" } else { "estimated" };
            let ranks: Vec<String> = l.ranks.iter().map(u64::to_string).collect();
            let _ = writeln!(
                out,
                "  {} ({} {}, rank {}): error {:.2e} {how}",
                l.layer,
                l.op,
                l.form,
                ranks.join("x"),
                l.error
            );
        }
    }

    fn compressed_layers(&self) -> usize {
        self.layers.len()
    }

    fn uncompressed(&self, _model: &Model) -> Box<dyn Section> {
        Box::new(LowRankReport { settings: self.settings.clone(), layers: Vec::new() })
    }
}
