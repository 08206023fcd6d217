//! The interface between the engine and the compression families. A family
//! offers approximate alternatives for layers (quantized, factorized, pruned,
//! ... forms) next to the exact rewrites, and extraction chooses among them
//! under the error budget. Each implements [`Family`]: its rules
//! (`passes/<name>.rules`) with the Rust appliers and guards they name, what
//! it does to the model before saturation and after extraction, how it
//! recognises its own alternatives, and its section of the report. The
//! engine and the pipeline know families only through this trait; the
//! shipped ones are listed in [`crate::families::REGISTRY`].

use std::any::Any;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use egg::Id;

use super::analysis::Graph;
use super::appliers::NamedApplier;
use super::guards::Guard;
use super::language::Onnx;
use super::{build::Built, Choice};
use crate::eval::NamedTensor;
use crate::ir::Model;

/// A family's settings for one run (its own type; see [`Enabled::settings`]).
#[derive(Clone)]
pub struct Settings(pub Arc<dyn Any + Send + Sync>);

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Settings(..)")
    }
}

/// A family enabled for a run.
#[derive(Clone, Debug)]
pub struct Enabled {
    pub family: &'static dyn Family,
    pub settings: Settings,
    /// Every layer the family can compress takes its form (`--quantize all`),
    /// instead of extraction choosing under the budget.
    pub forced: bool,
}

impl Enabled {
    /// The family's settings, when they are of type `T`.
    pub fn settings<T: 'static>(&self) -> Option<&T> {
        self.settings.0.downcast_ref::<T>()
    }
}

impl fmt::Debug for dyn Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "family {}", self.name())
    }
}

/// A family's section of the engine report (its serialization, copying and
/// downcasting come with it: [`SectionData`]).
pub trait Section: SectionData + fmt::Debug + Send + Sync {
    /// The key it has in the JSON report's `engine` object.
    fn key(&self) -> &'static str;
    /// Lines for the text report.
    fn table(&self, out: &mut String);
    /// Why the written model fails verification at a relative L2 `limit`
    /// beyond what the comparison with the original shows (for
    /// quantization: its integer kernels disagree with its reference semantics).
    fn verification_failure(&self, _limit: f64) -> Option<String> {
        None
    }
    /// How many layers of the written model took the family's forms (a tie
    /// between candidates goes to fewer).
    fn compressed_layers(&self) -> usize;
    /// The section for a candidate in which the family compressed nothing
    /// (`model`, whose float form was kept): the settings it was compared at.
    fn uncompressed(&self, model: &Model) -> Box<dyn Section>;
}

/// What every section is besides its own lines, for any serializable,
/// clonable section type.
pub trait SectionData {
    fn to_json(&self) -> serde_json::Value;
    /// A copy in a box.
    fn boxed_clone(&self) -> Box<dyn Section>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Section + serde::Serialize + Clone + 'static> SectionData for T {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    fn boxed_clone(&self) -> Box<dyn Section> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Clone for Box<dyn Section> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

/// What the engine tells a family about a finished extraction.
pub struct Extracted<'a> {
    pub built: &'a Built,
    pub choice: &'a Choice,
    /// Each named class by the first of the input model's value names.
    pub class_names: &'a std::collections::HashMap<Id, String>,
    /// Where the calibration statistics came from (`None`: not calibrated).
    pub calibration: Option<&'a crate::eval::statistics::CalibrationSummary>,
}

/// What the pipeline gives a family after the optimized model is written in
/// the IR: the model it was optimized from, where it came from, and the probe samples.
pub struct Written<'a> {
    pub original: &'a Model,
    pub path: &'a Path,
    pub probe: &'a [Vec<NamedTensor>],
}

/// One compression family.
pub trait Family: Sync + Send {
    /// Its name: the rules family, the report section, the `--exclude` scope.
    fn name(&self) -> &'static str;
    /// The text of `passes/<name>.rules`.
    fn rules(&self) -> &'static str;
    /// The named appliers its rules use.
    fn appliers(&self) -> &'static [NamedApplier];
    /// The output error (relative L2 on the probe samples) `--budget`
    /// defaults to in its budgeted mode; verification then allows twice it.
    fn default_budget(&self) -> f64;
    /// The output error beyond which a model it was forced onto is taken
    /// as broken when the user gives no tolerance (a forced mode's accuracy
    /// is the user's choice; a faithful export is checked anyway).
    fn broken_rel_l2(&self) -> f64;
    /// The named guards its rules use.
    fn guards(&self) -> &'static [Guard] {
        &[]
    }
    /// Operators whose latency is measured in ONNX Runtime when the family's
    /// alternatives are priced by measurement (their float forms included).
    fn measured_operators(&self) -> &'static [&'static str] {
        &[]
    }
    /// The default-domain opset a model must have before its alternatives
    /// are added (`None`: any).
    fn opset(&self, _settings: &Enabled) -> Option<i64> {
        None
    }
    /// What it needs measured on the calibration data for `model`.
    fn statistics(&self, _settings: &Enabled, _model: &Model) -> StatisticsRequest {
        StatisticsRequest::default()
    }
    /// Whether `node` is one of its alternatives (the float extraction avoids them).
    fn offers(&self, egraph: &Graph, node: &Onnx) -> bool;
    /// Whether `node` gives a layer its compressed form: what forcing the
    /// family forces and what a pinned choice repeats.
    fn is_layer_alternative(&self, egraph: &Graph, node: &Onnx) -> bool;
    /// What forcing the family prefers in `class`: its layer alternatives by default.
    fn forced(&self, egraph: &Graph, _class: Id, node: &Onnx) -> bool {
        self.is_layer_alternative(egraph, node)
    }
    /// After export, the forms extraction chose written as runtimes take them
    /// (quantization: operator forms lowered to QDQ nodes).
    fn lower(&self, _model: &mut Model) -> Result<(), String> {
        Ok(())
    }
    /// Its report section for an extraction (`None`: nothing to say).
    fn report(&self, _settings: &Enabled, _extracted: &Extracted) -> Option<Box<dyn Section>> {
        None
    }
    /// Checks the written model on the probe samples and may repair it
    /// (quantization: integer kernels that saturate get unsigned weights),
    /// recording what it found in its section.
    fn check(
        &self,
        _settings: &Enabled,
        _model: &mut Model,
        _written: &Written,
        _sections: &mut super::Sections,
    ) -> Result<(), CheckError> {
        Ok(())
    }
}

/// What a family asks calibration to measure.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatisticsRequest {
    /// Values whose range (and histogram) it needs, by name.
    pub ranges: std::collections::HashSet<String>,
    /// Values whose elementwise mean it needs.
    pub means: std::collections::HashSet<String>,
    /// Second moments of layer inputs.
    pub second_moments: Vec<crate::eval::statistics::MomentRequest>,
    /// Keep the probe samples out of the statistics when there are enough
    /// (a budgeted search measures its errors on them).
    pub held_out_probe: bool,
}

impl StatisticsRequest {
    /// Adds what `other` asks for.
    pub fn merge(&mut self, other: StatisticsRequest) {
        self.ranges.extend(other.ranges);
        self.means.extend(other.means);
        for moment in other.second_moments {
            if !self.second_moments.contains(&moment) {
                self.second_moments.push(moment);
            }
        }
        self.held_out_probe |= other.held_out_probe;
    }

    /// Whether nothing needs calibration data.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.means.is_empty() && self.second_moments.is_empty()
    }
}

/// Why a family's check of a written model could not run.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct CheckError {
    /// What was being checked, as the error names it.
    pub what: String,
    pub reason: String,
}
