//! The e-graph engine: the model's graph goes in ([`build`]), the rules of the
//! chosen pass families add equivalent alternatives ([`rules`], with Rust
//! [`guards`] and [`appliers`]), extraction picks the cheapest combination
//! under the error budget ([`extract`]), and [`export`] writes it back as IR.
//! [`language`] is the e-node vocabulary and [`analysis`] what is known of
//! each e-class.
//!
//! Runs are deterministic: rules apply in catalogue order, classes are visited
//! in id order, and the runner's limits are iterations and nodes first (the
//! time limit is a safety net far above them).

pub mod activations;
pub mod alternative_costs;
pub mod alternatives;
pub mod analysis;
pub mod appliers;
pub mod build;
pub mod export;
pub mod extract;
pub mod family;
pub mod guards;
pub mod language;
pub mod nodes;
pub mod rules;
pub mod sensitivity;
pub mod suffix;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use egg::{Runner, SimpleScheduler};
use serde::Serialize;

use crate::cost::{DeviceProfile, Objective};
use crate::ir::Model;
pub use extract::{Choice, ExtractError};
pub use rules::{RuleError, RuleSpec};

/// Why the engine could not optimize a model.
#[derive(Debug, thiserror::Error)]
pub enum EgraphError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("building the e-graph: {0}")]
    Build(String),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error("writing the optimized graph: {0}")]
    Export(String),
    #[error("measuring operator latency in ONNX Runtime: {0} (or pass --cost-model profile)")]
    Measure(String),
    #[error("measuring layer sensitivity in ONNX Runtime: {0} (or pass --budget inf)")]
    Sensitivity(String),
}

/// Runner limits.
#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    pub iterations: usize,
    pub nodes: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { iterations: 30, nodes: 500_000, time: Duration::from_secs(120) }
    }
}

/// What to optimize and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// Shipped families to run (names from [`rules::families`]).
    pub families: Vec<String>,
    /// User rule files: (file name, text); always run.
    pub user_rules: Vec<(String, String)>,
    pub limits: Limits,
    pub objective: Objective,
    pub profile: DeviceProfile,
    /// Largest summed error estimate of approximate rewrites.
    pub budget: f64,
    /// The default-domain opset rewrites may raise the model to for an
    /// operator newer than its own (`--target-opset`; `None`: its own opset).
    pub target_opset: Option<i64>,
    /// The compression families enabled, and what they share.
    pub compression: Option<Compression>,
    /// Price the alternatives of `measured()` rules (the fused activations)
    /// by latencies measured in ONNX Runtime (`None`: the device profile).
    pub measured: Option<MeasuredCosts>,
}

impl Options {
    /// The enabled compression families (their rules run when
    /// [`families`](Self::families) names them).
    pub fn enabled_families(&self) -> Vec<&'static dyn family::Family> {
        self.compression.iter().flat_map(|c| &c.enabled).map(|e| e.family).collect()
    }
}

/// Where measured operator latencies are kept, and the input shapes they
/// are measured at where the model leaves dims open.
#[derive(Clone, Debug)]
pub struct MeasuredCosts {
    pub cost_cache: crate::cost::cache::SharedCostCache,
    pub shapes: Vec<(String, Vec<i64>)>,
}

/// The static dims of the named classes whose shapes the model leaves
/// open, with its inputs at `shapes` (empty when none are given or the
/// model cannot be inferred there).
fn timing_dims(model: &Model, built: &build::Built, shapes: &[(String, Vec<i64>)]) -> HashMap<egg::Id, Vec<i64>> {
    if shapes.is_empty() || !crate::samples::has_open_dims(model) {
        return HashMap::new();
    }
    let mut at_shape = model.clone();
    if crate::ir::infer::infer(&mut at_shape, shapes).is_err() {
        return HashMap::new();
    }
    built
        .value_names
        .iter()
        .filter_map(|(class, name)| {
            let value = at_shape.graph.value(at_shape.graph.value_id(name)?);
            Some((built.egraph.find(*class), value.shape.as_ref()?.as_known()?))
        })
        .collect()
}

/// The compression families enabled for a run, and what they share:
/// calibration statistics, probe samples, measured errors and costs.
#[derive(Clone, Debug)]
pub struct Compression {
    /// The families, in registry order.
    pub enabled: Vec<family::Enabled>,
    /// The calibrated range of each value (by name).
    pub ranges: std::collections::BTreeMap<String, crate::eval::calibrate::ActivationRange>,
    /// Calibration means of the values families read them for (by name).
    pub means: std::collections::BTreeMap<String, std::sync::Arc<crate::eval::statistics::MeanActivation>>,
    /// Second moments of layers' input vectors, by
    /// [`crate::eval::statistics::moment_key`] (data-aware factorization).
    pub second_moments: std::collections::BTreeMap<String, std::sync::Arc<crate::eval::statistics::SecondMoment>>,
    /// Where the statistics came from, for the report (`None`: not calibrated).
    pub calibration: Option<crate::eval::statistics::CalibrationSummary>,
    /// Measure the latency of each layer's float and compressed forms in ONNX
    /// Runtime (else the device profile's roofline decides), and time whole
    /// candidates side by side.
    pub measure: bool,
    /// A few calibration samples, kept to measure each alternative's effect
    /// on the output and to probe the written model.
    pub probe: Vec<Vec<crate::eval::NamedTensor>>,
    /// The output error measured with each alternative alone, by
    /// [`alternatives::measured_key`] (filled by [`sensitivity::measure`]
    /// when `--budget` is finite; else the families' estimates stand).
    pub measured_errors: std::collections::BTreeMap<String, f64>,
    /// The input shapes latencies are measured at where the model leaves
    /// dims open (the median calibration sample's, or `--input-shape`).
    pub representative: Vec<(String, Vec<i64>)>,
    /// Where measured latencies are looked up and kept.
    pub cost_cache: crate::cost::cache::SharedCostCache,
    /// Layers every family leaves alone (`--exclude`).
    pub exclude: Vec<alternatives::Exclusion>,
    /// Compress exactly the layers with these value names, each into the
    /// alternative of this [`alternatives::identity`], as a choice made on
    /// the model at its representative shape did (the costs of a model whose
    /// dims are open cannot be measured).
    pub pinned: Option<std::collections::BTreeMap<String, String>>,
}

impl Compression {
    /// Whether some family is forced (`--quantize all`).
    pub fn forced(&self) -> bool {
        self.enabled.iter().any(|e| e.forced)
    }

    /// The enabled family called `name`.
    pub fn family(&self, name: &str) -> Option<&family::Enabled> {
        self.enabled.iter().find(|e| e.family.name() == name)
    }

    /// Whether `node` is an alternative some enabled family offers.
    pub fn offers(&self, egraph: &analysis::Graph, node: &language::Onnx) -> bool {
        self.enabled.iter().any(|e| e.family.offers(egraph, node))
    }

    /// Whether `node` gives a layer some enabled family's form.
    pub fn is_layer_alternative(&self, egraph: &analysis::Graph, node: &language::Onnx) -> bool {
        self.enabled.iter().any(|e| e.family.is_layer_alternative(egraph, node))
    }
}

/// Where one rule fired.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Firing {
    pub rule: String,
    pub family: String,
    /// The value it gave an alternative for (an original name when it has one).
    pub at: String,
}

/// Saturation statistics.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Saturation {
    pub iterations: usize,
    pub stop_reason: String,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub rules: usize,
}

/// Seconds per stage.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Timings {
    pub build: f64,
    pub saturate: f64,
    pub extract: f64,
    pub export: f64,
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct EngineReport {
    pub saturation: Saturation,
    pub firings: Vec<Firing>,
    /// Firings per rule, in catalogue order.
    pub fired: Vec<(String, usize)>,
    pub extraction: Choice,
    pub timings: Timings,
    /// Operator configurations timed in ONNX Runtime for the cost model
    /// in this run (the rest came from the cost cache).
    pub measured_configurations: usize,
    /// Every operator latency extraction looked up, measured or cached.
    pub operator_timings: Vec<crate::cost::measure::OperatorTiming>,
    /// The input's value names of the layers that took a compressed form,
    /// with the identity of the form (as [`Compression::pinned`] takes them).
    #[serde(skip)]
    pub compressed_layers: std::collections::BTreeMap<String, String>,
    /// The input shapes the latencies were measured at, `name=dims`, when
    /// the model's inputs leave dims open.
    pub timing_shapes: Vec<String>,
    /// With `--quantize auto`: the whole-model candidates timed side by side
    /// in ONNX Runtime, of which the fastest was kept.
    pub end_to_end: Vec<CandidateTiming>,
    /// How the kept candidate was chosen: each comparison of timed candidates.
    pub end_to_end_decisions: Vec<CandidateComparison>,
    /// Each layer alternative's cost beside its layer's, as extraction
    /// priced them, by [`alternatives::measured_key`].
    #[serde(skip)]
    pub alternative_costs: std::collections::BTreeMap<String, alternative_costs::AlternativeCost>,
    /// The kept model's output error on the probe samples (relative L2
    /// against the float model, as ONNX Runtime deploys it), when the run
    /// had probe samples: verification checks the written model reproduces it.
    pub probe_error: Option<f64>,
    /// With a finite `--budget`: each layer's measured effect on the output
    /// when quantized alone (the error extraction charged it).
    pub layer_sensitivity: Vec<sensitivity::LayerSensitivity>,
    /// Each compression family's section (`quantization`, ...).
    #[serde(flatten)]
    pub sections: Sections,
    /// When a fused operator needed a newer opset than the model's.
    pub opset_raised: Option<OpsetRaised>,
    /// What the run could not do as asked (measured costs, a raised opset).
    pub warnings: Vec<String>,
}

/// The compression families' report sections, keyed in JSON by each one's key.
#[derive(Clone, Debug, Default)]
pub struct Sections(pub Vec<Box<dyn family::Section>>);

impl Sections {
    /// The section with this key.
    pub fn get(&self, key: &str) -> Option<&dyn family::Section> {
        self.0.iter().find(|s| s.key() == key).map(|s| s.as_ref())
    }
}

impl Serialize for Sections {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for section in &self.0 {
            map.serialize_entry(section.key(), &section.to_json())?;
        }
        map.end()
    }
}

/// What extraction's costs are measured for, and the table of measured latencies.
struct Pricing<'a> {
    table: Option<crate::cost::measure::LatencyTable>,
    /// The compression families' operators (`--quantize auto`).
    compression_measured: bool,
    /// The alternatives of `measured()` rules, and where to keep their timings.
    rewrites_measured: Option<&'a MeasuredCosts>,
    /// Why measured costs were asked for the rewrites and the profile priced them.
    warning: Option<String>,
}

/// Opens the latency table when costs are measured: for `--quantize auto`
/// (ONNX Runtime must load), or for the alternatives `measured()` rules
/// added (`any_measured_class`; without ONNX Runtime the profile prices them,
/// with a warning).
fn pricing<'a>(model: &Model, options: &'a Options, any_measured_class: bool) -> Result<Pricing<'a>, EgraphError> {
    let latency = options.objective == Objective::Latency;
    let compression_measured = latency && options.compression.as_ref().is_some_and(|c| c.measure && !c.forced());
    let forced = options.compression.as_ref().is_some_and(|c| c.forced());
    let rewrites_measured = options.measured.as_ref().filter(|_| latency && any_measured_class && !forced);
    let cache = match (&options.compression, rewrites_measured) {
        (Some(c), _) if compression_measured => c.cost_cache.clone(),
        (_, Some(measured)) => measured.cost_cache.clone(),
        _ => return Ok(Pricing { table: None, compression_measured, rewrites_measured, warning: None }),
    };
    let opset = model.opset("").unwrap_or(UNKNOWN_OPSET);
    match crate::cost::measure::LatencyTable::new(opset, cache) {
        Ok(table) => Ok(Pricing { table: Some(table), compression_measured, rewrites_measured, warning: None }),
        Err(e) if compression_measured => Err(EgraphError::Measure(e.to_string())),
        Err(e) => Ok(Pricing {
            table: None,
            compression_measured,
            rewrites_measured,
            warning: Some(format!(
                "ONNX Runtime could not time operators ({e}), so the device profile priced the fused alternatives"
            )),
        }),
    }
}

/// The opset operators are timed at when a model imports no default domain.
const UNKNOWN_OPSET: i64 = 13;

/// The model's default-domain opset raised for operators rewrites wrote.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OpsetRaised {
    pub from: i64,
    pub to: i64,
    /// The written operators that needed it, with the opset each needs.
    pub operators: Vec<(String, i64)>,
    /// Nodes the upgrade rewrote (operators whose signature changed on the way).
    pub rewritten: std::collections::BTreeMap<String, usize>,
}

/// Raises the exported model's default-domain opset to what the operators
/// in its main graph need (a fusion may write one newer than the model's
/// opset, up to the target the rules were given: [`crate::ir::opset::may_write`]).
pub(crate) fn raise_opset_for_written_operators(model: &mut Model) -> Result<Option<OpsetRaised>, EgraphError> {
    let Some(from) = model.opset("") else { return Ok(None) };
    let mut operators: Vec<(String, i64)> = model
        .graph
        .nodes
        .node_weights()
        .filter(|node| node.domain.is_empty() || node.domain == "ai.onnx")
        .filter_map(|node| {
            crate::ir::opset::opset_needed_by(&node.op_type, from).map(|needed| (node.op_type.clone(), needed))
        })
        .collect();
    operators.sort();
    operators.dedup();
    let Some(to) = operators.iter().map(|&(_, needed)| needed).max() else { return Ok(None) };
    let upgrade = crate::ir::upgrade_opset(model, to).map_err(|e| {
        EgraphError::Export(format!("raising the opset from {from} to {to} for {}: {e}", operators[0].0))
    })?;
    Ok(Some(OpsetRaised { from, to, operators, rewritten: upgrade.rewritten }))
}

/// A whole-model candidate and its median latency in ONNX Runtime.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CandidateTiming {
    pub candidate: String,
    /// Infinite when ONNX Runtime could not run it ([`error`](Self::error) says why).
    pub seconds: f64,
    /// The median's 95% interval over the rounds.
    pub interval: Option<crate::cost::cache::Interval>,
    /// Rounds it was timed in (side by side with the others).
    pub rounds: usize,
    /// Layers in a quantized (approximate) form: a tie goes to fewer.
    pub approximated_layers: usize,
    pub error: Option<String>,
    /// Relative L2 of its output (ONNX Runtime, all optimizations) against
    /// the float candidate's on the probe samples, when measured; a
    /// candidate over `--budget` is not chosen.
    pub output_error: Option<f64>,
    pub chosen: bool,
}

/// One candidate weighed against the one kept before it (see [`crate::cost::choose`]).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CandidateComparison {
    pub candidate: String,
    pub against: String,
    /// The candidate's time over the other's, per round: median and 95% interval.
    pub ratio: crate::cost::cache::Interval,
    pub outcome: crate::cost::choose::Outcome,
}

/// The file a shipped family's rules come from, as errors name it.
fn family_source(family: &str) -> String {
    format!("passes/{family}.rules")
}

/// Every rule of the exact families and of the given compression
/// families, in catalogue order.
pub fn catalogue(compression: &[&'static dyn family::Family]) -> Result<Vec<RuleSpec>, RuleError> {
    let mut all = Vec::new();
    for (family, text) in rules::families(compression) {
        all.extend(rules::parse(family, &family_source(family), text)?);
    }
    Ok(all)
}

/// An e-graph after saturation, with the rules that ran and how long it took.
pub(crate) struct Saturated {
    pub built: build::Built,
    pub saturation: Saturation,
    specs: Vec<(RuleSpec, String)>,
    log: rules::FiringLog,
    build_seconds: f64,
    saturate_seconds: f64,
}

/// Builds the model's e-graph (calibrated ranges and measured sensitivities
/// set on the classes of the values they name) and runs the chosen rules.
pub(crate) fn saturate(model: &Model, options: &Options) -> Result<Saturated, EgraphError> {
    let log = rules::FiringLog::default();
    let compression = options.enabled_families();
    let mut specs: Vec<(RuleSpec, String)> = catalogue(&compression)?
        .into_iter()
        .filter(|spec| options.families.contains(&spec.family))
        .map(|spec| {
            let source = family_source(&spec.family);
            (spec, source)
        })
        .collect();
    for (source, text) in &options.user_rules {
        specs.extend(rules::parse("user", source, text)?.into_iter().map(|s| (s, source.clone())));
    }
    let mut rewrites = Vec::new();
    for (spec, source) in &specs {
        if let Some(rewrite) = rules::compile(spec, source, &log, &compression)? {
            rewrites.push(rewrite);
        }
    }

    let started = Instant::now();
    let keep_dead = !options.families.iter().any(|f| f == "clean");
    let built = build::build(model, keep_dead).map_err(EgraphError::Build)?;
    let build_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let build::Built { mut egraph, root, origins, value_names, outputs } = built;
    egraph.analysis.target_opset = options.target_opset;
    if let Some(compression) = &options.compression {
        egraph.analysis.settings = compression.enabled.iter().map(|e| (e.family.name(), e.settings.clone())).collect();
        for (class, name) in &value_names {
            let facts = &mut egraph[*class].data;
            facts.range = compression.ranges.get(name).copied().or(facts.range);
            if let Some(mean) = compression.means.get(name) {
                egraph[*class].data.mean = Some(egraph.analysis.means.len());
                egraph.analysis.means.push(mean.clone());
            }
            let prefix = format!("{name}|");
            for (key, moment) in compression.second_moments.range(prefix.clone()..) {
                let Some(vectors) = key.strip_prefix(&prefix) else { break };
                egraph.analysis.second_moments.push((*class, vectors.to_string(), moment.clone()));
            }
        }
    }
    let runner = Runner::default()
        .with_egraph(egraph)
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(options.limits.iterations)
        .with_node_limit(options.limits.nodes)
        .with_time_limit(options.limits.time)
        .run(&rewrites);
    let saturation = Saturation {
        iterations: runner.iterations.len(),
        stop_reason: runner.stop_reason.as_ref().map_or("unknown".to_string(), |r| format!("{r:?}")),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        egraph_classes: runner.egraph.number_of_classes(),
        rules: rewrites.len(),
    };
    let mut egraph = runner.egraph;
    egraph.rebuild();
    if let Some(compression) = options.compression.as_ref().filter(|c| !c.measured_errors.is_empty()) {
        set_measured_errors(&mut egraph, &value_names, &compression.measured_errors);
    }
    let mut built = build::Built { egraph, root, origins, value_names, outputs };
    if let Some(compression) = options.compression.as_ref().filter(|c| !c.exclude.is_empty()) {
        exclude_layers(&mut built, &compression.exclude);
    }
    let saturate_seconds = started.elapsed().as_secs_f64();
    Ok(Saturated { built, saturation, specs, log, build_seconds, saturate_seconds })
}

/// Every value name of each class (canonical ids).
fn names_by_class<'a>(
    egraph: &analysis::Graph,
    value_names: &'a [(egg::Id, String)],
) -> HashMap<egg::Id, Vec<&'a str>> {
    let mut names: HashMap<egg::Id, Vec<&str>> = HashMap::new();
    for (class, name) in value_names {
        names.entry(egraph.find(*class)).or_default().push(name);
    }
    names
}

/// Charges each alternative whose output error was measured (by a value
/// name of the layer it replaces: [`alternatives::measured_key`]) that error
/// instead of its estimate.
fn set_measured_errors(
    egraph: &mut analysis::Graph,
    value_names: &[(egg::Id, String)],
    measured: &std::collections::BTreeMap<String, f64>,
) {
    let names = names_by_class(egraph, value_names);
    let errors: Vec<Option<f64>> = egraph
        .analysis
        .alternatives
        .iter()
        .map(|(_, record)| {
            let mut names = record.replaces.iter().flat_map(|&class| names.get(&egraph.find(class))).flatten();
            names.find_map(|name| measured.get(&alternatives::measured_key(name, record)).copied())
        })
        .collect();
    let mut errors = errors.into_iter();
    egraph.analysis.alternatives.set_measured_errors(|_| errors.next().flatten());
}

/// Marks the alternatives that replace a layer `exclude` names: by the name
/// export gives its node (a rewritten node keeps its original's) or its
/// operator type, or by its output value's name.
fn exclude_layers(built: &mut build::Built, exclude: &[alternatives::Exclusion]) {
    use alternatives::Exclusion;
    let marks: Vec<bool> = {
        let egraph = &built.egraph;
        let origins = export::Origins::of(built);
        let names = names_by_class(egraph, &built.value_names);
        let excluded = |class: egg::Id| {
            let class = egraph.find(class);
            let value_named = |name: &str| names.get(&class).is_some_and(|n| n.contains(&name));
            egraph[class].nodes.iter().any(|node| {
                let Some((op, _)) = node.as_op() else { return false };
                let Some(origin) = origins.of_node(class, node) else { return false };
                exclude.iter().any(|e| match e {
                    Exclusion::Name(name) => origin.name == *name || value_named(name),
                    Exclusion::Op(op_type) => op.as_str() == op_type,
                })
            })
        };
        egraph.analysis.alternatives.iter().map(|(_, record)| record.replaces.iter().any(|&c| excluded(c))).collect()
    };
    let mut marks = marks.into_iter();
    built.egraph.analysis.alternatives.exclude(|_| marks.next().unwrap_or(false));
}

/// The enabled compression families' report sections for an extraction.
fn family_sections(
    built: &build::Built,
    choice: &Choice,
    class_names: &HashMap<egg::Id, String>,
    options: &Options,
) -> Sections {
    let Some(compression) = &options.compression else { return Sections::default() };
    let extracted = family::Extracted { built, choice, class_names, calibration: compression.calibration.as_ref() };
    Sections(
        compression
            .enabled
            .iter()
            .filter(|e| options.families.iter().any(|f| f == e.family.name()))
            .filter_map(|e| e.family.report(e, &extracted))
            .collect(),
    )
}

/// Each named e-class by the first of its input model's value names.
fn class_names_of(built: &build::Built) -> HashMap<egg::Id, String> {
    let mut class_names: HashMap<egg::Id, String> = HashMap::new();
    for (class, name) in &built.value_names {
        class_names.entry(built.egraph.find(*class)).or_insert_with(|| name.clone());
    }
    class_names
}

/// The named classes whose chosen node is a compressed form (rounding alone
/// aside): what [`Compression::pinned`] takes to repeat a choice.
fn compressed_classes(
    built: &build::Built,
    choice: &Choice,
    options: &Options,
) -> std::collections::BTreeMap<String, String> {
    let Some(compression) = &options.compression else { return Default::default() };
    let egraph = &built.egraph;
    class_names_of(built)
        .into_iter()
        .filter_map(|(class, name)| {
            let node = choice.chosen.get(&class).filter(|node| compression.is_layer_alternative(egraph, node))?;
            Some((name, chosen_identity(egraph, node)))
        })
        .collect()
}

/// The [`alternatives::identity`] of the alternative a layer's e-node stands for.
fn chosen_identity(egraph: &analysis::Graph, node: &language::Onnx) -> String {
    let record = alternatives::approximation_of(egraph, node).and_then(|a| egraph.analysis.alternatives.get(a));
    record.map(alternatives::identity).unwrap_or_default()
}

/// Optimizes a model whose shapes were inferred; the result is not re-inferred.
pub fn optimize(model: &Model, options: &Options) -> Result<(Model, EngineReport), EgraphError> {
    let Saturated { built, saturation, specs, log, build_seconds, saturate_seconds } = saturate(model, options)?;

    let started = Instant::now();
    let force = options.compression.as_ref().is_some_and(|c| c.forced());
    let measured_classes: HashSet<egg::Id> =
        built.egraph.analysis.measured_classes.iter().map(|&class| built.egraph.find(class)).collect();
    let Pricing { mut table, compression_measured, rewrites_measured, warning: cost_model_warning } =
        pricing(model, options, !measured_classes.is_empty())?;
    let operators: HashSet<&'static str> = match (&options.compression, compression_measured) {
        (Some(compression), true) => {
            compression.enabled.iter().flat_map(|e| e.family.measured_operators()).copied().collect()
        }
        _ => HashSet::new(),
    };
    let mut measured = table.as_mut().map(|table| extract::Measured {
        table,
        operators,
        classes: if rewrites_measured.is_some() { measured_classes } else { HashSet::new() },
        original: built
            .origins
            .iter()
            .map(|(node, _)| egg::Language::map_children(node.clone(), |c| built.egraph.find(c)))
            .collect(),
        timing_dims: timing_dims(model, &built, rewrites_measured.map_or(&[][..], |m| &m.shapes)),
    });
    let timing_shapes = match (&measured, rewrites_measured) {
        (Some(m), Some(rewrites)) if !m.timing_dims.is_empty() => crate::samples::shapes_text(&rewrites.shapes),
        _ => Vec::new(),
    };
    let mut costs = extract::NodeCosts::new(&built.egraph, &options.profile, options.objective, measured.as_mut());
    drop(measured);
    if let Some(error) = table.as_ref().and_then(|t| t.error.clone()) {
        return Err(EgraphError::Measure(error.to_string()));
    }
    let alternative_costs = match &options.compression {
        Some(compression) => {
            let mut names: HashMap<egg::Id, Vec<String>> = HashMap::new();
            for (class, name) in &built.value_names {
                names.entry(built.egraph.find(*class)).or_default().push(name.clone());
            }
            alternative_costs::alternative_costs(&built.egraph, &costs, compression, &names)
        }
        None => Default::default(),
    };
    if let Some(compression) = &options.compression {
        let egraph = &built.egraph;
        if let Some(pinned) = &compression.pinned {
            // The choice made on the model at its representative shape, layer by layer.
            let names = class_names_of(&built);
            costs.prefer(|class, node| match names.get(&class) {
                Some(name) if pinned.contains_key(name) => {
                    compression.is_layer_alternative(egraph, node) && chosen_identity(egraph, node) == pinned[name]
                }
                Some(_) => !compression.offers(egraph, node),
                None => false,
            });
        }
        if force {
            let forced = || compression.enabled.iter().filter(|e| e.forced);
            costs.prefer(|class, node| forced().any(|e| e.family.forced(egraph, class, node)));
        }
    }
    // A forced or pinned choice was made (or budgeted) already.
    let pinned = options.compression.as_ref().is_some_and(|c| c.pinned.is_some());
    let budget = if force || pinned { f64::INFINITY } else { options.budget };
    let choice = extract::extract(&costs, &built.egraph, built.root, budget)?;
    let extract_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut optimized = export::export(model, &built, &choice).map_err(EgraphError::Export)?;
    let opset_raised = match raise_opset_for_written_operators(&mut optimized) {
        Ok(raised) => raised,
        // The model cannot be raised (an operator the upgrade refuses): the
        // fused operators newer than its opset are not written after all.
        Err(reason) if options.target_opset.is_some() => {
            let (optimized, report) = optimize(model, &Options { target_opset: None, ..options.clone() })?;
            let warning = format!("{reason}; operators newer than the model's opset were not written");
            let warnings = report.warnings.iter().cloned().chain([warning]).collect();
            return Ok((optimized, EngineReport { warnings, ..report }));
        }
        Err(reason) => return Err(reason),
    };
    let export_seconds = started.elapsed().as_secs_f64();

    // Report firings by the value they happened at.
    let class_names = class_names_of(&built);
    let family_of: HashMap<&str, &str> = specs.iter().map(|(s, _)| (s.name.as_str(), s.family.as_str())).collect();
    let logged = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let firings: Vec<Firing> = logged
        .iter()
        .map(|f| Firing {
            rule: f.rule.clone(),
            family: family_of.get(f.rule.as_str()).copied().unwrap_or("user").to_string(),
            at: class_names.get(&built.egraph.find(f.class)).cloned().unwrap_or_else(|| format!("e-class {}", f.class)),
        })
        .collect();
    let fired = specs
        .iter()
        .map(|(s, _)| (s.name.clone(), firings.iter().filter(|f| f.rule == s.name).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let sections = family_sections(&built, &choice, &class_names, options);
    let report = EngineReport {
        saturation,
        firings,
        fired,
        measured_configurations: table.as_ref().map_or(0, |t| t.measured),
        operator_timings: table.map(|t| t.timings).unwrap_or_default(),
        compressed_layers: compressed_classes(&built, &choice, options),
        timing_shapes,
        end_to_end: Vec::new(),
        end_to_end_decisions: Vec::new(),
        alternative_costs,
        probe_error: None,
        layer_sensitivity: Vec::new(),
        sections,
        opset_raised,
        warnings: cost_model_warning.into_iter().collect(),
        extraction: choice,
        timings: Timings {
            build: build_seconds,
            saturate: saturate_seconds,
            extract: extract_seconds,
            export: export_seconds,
        },
    };
    Ok((optimized, report))
}
