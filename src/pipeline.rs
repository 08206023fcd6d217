//! The stages of a pare run in order — read, import, infer shapes, optimize
//! (the e-graph engine over the chosen pass families), export, write — as
//! library calls, with one error type that says which file and which stage
//! failed, and the before/after summary `pare optimize` reports.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cost::cache::{key_of, Interval};
use crate::cost::{graph_estimate, DeviceProfile};
use crate::egraph::family::{CheckError, StatisticsRequest, Written};
use crate::egraph::{self, EgraphError, EngineReport};
use crate::eval::calibrate::{self, Calibration, RangeMethod};
use crate::eval::{runs_relative_l2, EvaluatorBuilder};
use crate::ir::{self, IrError, Model, OpsetError, Shape};
use crate::onnx::proto::type_proto;
use crate::onnx::{self, OnnxError, WriteOptions};
use crate::onnxruntime::GraphOptimization;
use crate::samples;

/// Why a pipeline stage failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("{path}: {reason}")]
    Ir { path: PathBuf, reason: IrError },
    #[error("unknown pass family '{name}' (known: {known})")]
    UnknownPass { name: String, known: String },
    #[error("{path}: {reason}")]
    Engine { path: PathBuf, reason: EgraphError },
    #[error("{path}: calibration: {reason}")]
    Calibration { path: PathBuf, reason: String },
    #[error(
        "{sample}: input '{input}' has shape {actual}, but {model} takes {expected} \
         (as declared, or fixed by --input-shape)"
    )]
    SampleShape { sample: String, input: String, actual: String, model: PathBuf, expected: String },
    #[error("{path}: {reason}")]
    Lower { path: PathBuf, reason: String },
    #[error("{path}: timing the candidates in ONNX Runtime: {reason} (or pass --cost-model profile)")]
    Measure { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Check { path: PathBuf, reason: CheckError },
    #[error("{path}: the {family} family needs opset {needed}: {reason}")]
    Opset { path: PathBuf, family: &'static str, needed: i64, reason: Box<OpsetError> },
}

/// A model loaded into the IR, with what the writer needs to know of its source.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Model,
    pub had_external_data: bool,
    pub file_bytes: u64,
}

/// Reads a model (path or `-`), builds its IR and infers shapes, with the
/// given graph inputs fixed to concrete shapes.
pub fn load(path: &Path, fixed_shapes: &[(String, Vec<i64>)]) -> Result<LoadedModel, PipelineError> {
    let loaded = onnx::read_model(path)?;
    let ir_error = |reason| PipelineError::Ir { path: path.to_path_buf(), reason };
    let mut model = ir::import(loaded.model).map_err(ir_error)?;
    ir::infer::infer(&mut model, fixed_shapes).map_err(ir_error)?;
    Ok(LoadedModel { model, had_external_data: loaded.had_external_data, file_bytes: loaded.file_bytes })
}

/// The pass families `--passes all` runs, in the order they are listed (all exact).
pub const PASS_FAMILIES: &[&str] = &["fold", "fuse", "clean"];

/// Where calibration samples come from.
#[derive(Clone, Debug)]
pub enum CalibrationSource {
    /// A folder in test_data_set layout, or of .npy/.pb files.
    Folder(PathBuf),
    /// Seeded random inputs (accuracy suffers: real data has other ranges).
    Random { count: usize, seed: u64 },
}

/// Calibration statistics and a few samples kept to probe compressed models
/// (held out of the statistics when there are enough: [`HELD_OUT_FROM`]).
pub struct Calibrated {
    pub calibration: Calibration,
    pub probe: Vec<Vec<crate::eval::NamedTensor>>,
    /// The median sample's input shapes, at which latencies are measured
    /// ([`samples::median_shapes`]).
    pub representative: Vec<(String, Vec<i64>)>,
}

/// Samples kept in [`Calibrated::probe`].
const PROBE_SAMPLES: usize = 4;
/// From this many samples on, when the request asks
/// ([`StatisticsRequest::held_out_probe`]: a budgeted search), the probe
/// samples are the last ones and are left out of the statistics, so measured
/// errors are held-out errors (on the samples the statistics were fitted
/// to, quantization's probe error read 1.3–3x lower than on others); else
/// they are the first ones and calibrate too.
const HELD_OUT_FROM: usize = 16;

/// Runs the calibration samples through the embedded evaluator once,
/// capturing the values the enabled families asked statistics of
/// (`request`: see [`crate::egraph::family::Family::statistics`]), and returns
/// their ranges, the means and the second moments asked for.
pub fn calibrate(
    model: &Model,
    path: &Path,
    fixed: &[(String, Vec<i64>)],
    source: &CalibrationSource,
    method: RangeMethod,
    request: &StatisticsRequest,
) -> Result<Calibrated, PipelineError> {
    let failed = |reason: String| PipelineError::Calibration { path: path.to_path_buf(), reason };
    let needed = |name: &String| {
        request.ranges.contains(name)
            || request.means.contains(name)
            || request.second_moments.iter().any(|m| &m.input == name)
    };
    let captured: Vec<String> = model
        .graph
        .nodes
        .node_weights()
        .flat_map(|node| node.outputs.iter().flatten())
        .map(|&value| model.graph.value(value).name.clone())
        .filter(needed)
        .collect();
    let proto = ir::export(model.clone()).map_err(|reason| PipelineError::Ir { path: path.to_path_buf(), reason })?;
    let evaluator = EvaluatorBuilder::new()
        .fixed_input_shapes(fixed)
        .captures(&captured)
        .build_from_model(&proto, &path.display().to_string())
        .map_err(|e| failed(e.to_string()))?;
    let mut inputs: Vec<Vec<crate::eval::NamedTensor>> = match source {
        CalibrationSource::Folder(dir) => samples::from_folder(dir, &samples::input_names(model))
            .map_err(|e| failed(e.to_string()))?
            .map(|sample| {
                let sample = sample.map_err(|e| failed(e.to_string()))?;
                check_sample_shapes(model, path, &sample)?;
                Ok(sample.inputs)
            })
            .collect::<Result<_, PipelineError>>()?,
        CalibrationSource::Random { count, seed } => {
            let specs = samples::representative_specs(model).map_err(|e| failed(e.to_string()))?;
            samples::random(&specs, *count, *seed).map_err(|e| failed(e.to_string()))?.map(|s| s.inputs).collect()
        }
    };
    if inputs.is_empty() {
        return Err(failed("no calibration samples".into()));
    }
    let representative = samples::median_shapes(&inputs);
    let probe = if request.held_out_probe && inputs.len() >= HELD_OUT_FROM {
        inputs.split_off(inputs.len() - PROBE_SAMPLES)
    } else {
        inputs.iter().take(PROBE_SAMPLES).cloned().collect()
    };
    let calibration = calibrate::calibrate(&evaluator, inputs, method, &request.means, &request.second_moments)
        .map_err(|e| failed(e.to_string()))?;
    Ok(Calibrated { calibration, probe, representative })
}

/// A sample whose input shape the model (or `--input-shape`) does not take
/// is refused naming the sample and the model; open dims take any size, so
/// each sample keeps its own shape.
fn check_sample_shapes(model: &Model, path: &Path, sample: &samples::Sample) -> Result<(), PipelineError> {
    let graph = &model.graph;
    for input in &sample.inputs {
        let Some(value) = graph.inputs.iter().map(|io| graph.value(io.value)).find(|v| v.name == input.name) else {
            continue;
        };
        let Some(shape) = value.shape.as_ref() else { continue };
        let actual = input.tensor.shape();
        let fits = shape.rank() == actual.len()
            && shape.0.iter().zip(actual).all(|(dim, &size)| dim.known().is_none_or(|d| d == size as i64));
        if !fits {
            return Err(PipelineError::SampleShape {
                sample: sample.source.clone(),
                input: input.name.clone(),
                actual: samples::dims_text(actual),
                model: path.to_path_buf(),
                expected: shape.to_string(),
            });
        }
    }
    Ok(())
}

/// Parses `--passes`: `none`, `all`, or a comma-separated list of families.
pub fn parse_passes(list: &str) -> Result<Vec<String>, PipelineError> {
    match list.trim() {
        "none" | "" => Ok(Vec::new()),
        "all" => Ok(PASS_FAMILIES.iter().map(|s| s.to_string()).collect()),
        names => names
            .split(',')
            .map(|name| {
                let name = name.trim();
                if PASS_FAMILIES.contains(&name) {
                    Ok(name.to_string())
                } else {
                    Err(PipelineError::UnknownPass {
                        name: name.to_string(),
                        known: ["none", "all"].iter().chain(PASS_FAMILIES).copied().collect::<Vec<_>>().join(", "),
                    })
                }
            })
            .collect(),
    }
}

/// Exports a model's IR and writes it (atomically) to a path or `-`.
pub fn save(model: Model, path: &Path, options: &WriteOptions) -> Result<onnx::write::Written, PipelineError> {
    let proto = ir::export(model).map_err(|reason| PipelineError::Ir { path: path.to_path_buf(), reason })?;
    Ok(onnx::write_model(proto, path, options)?)
}

/// What a model costs, for the before/after table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub nodes: u64,
    pub params: u64,
    pub macs: u64,
    pub weight_bytes: u64,
    /// Estimated on the device profile (unknown dims count as 1).
    pub latency_seconds: f64,
    pub energy_joules: f64,
}

/// Summarizes a model whose shapes were inferred.
pub fn summarize(model: &Model, profile: &DeviceProfile) -> Summary {
    let counts = crate::inspect::inspect(model);
    let estimate = graph_estimate(&model.graph, profile);
    Summary {
        nodes: counts.nodes,
        params: counts.params,
        macs: counts.macs,
        weight_bytes: counts.weight_bytes,
        latency_seconds: estimate.latency_seconds,
        energy_joules: estimate.energy_joules,
    }
}

/// Runs the e-graph engine on a loaded model (`path` names it in errors) and
/// re-infers shapes with the same fixed inputs. With no family and no user
/// rule the model comes back untouched. Graph inputs fixed by `fixed` are
/// declared with those shapes in the result, since rewrites such as folding
/// `Shape` rely on them.
///
/// Compressing raises the opset to what the enabled families need first
/// ([`crate::families::Family::opset`]) and lets each lower its chosen forms
/// after (quantization: to QDQ form). A budgeted run with measured costs
/// (`--quantize auto`, `--lowrank auto`) also builds the float-only and the
/// fully compressed candidates (and, when the budgeted one's measured error
/// left room or went over, up to [`SEARCH_ATTEMPTS`] more at wider or
/// narrower summed budgets: [`BudgetSearch`]), times them side by side in
/// ONNX Runtime and keeps the fastest whose deployed output error on the
/// probe samples fits `--budget`, so the result is never slower than float
/// on the deployment runtime. Every run with probe samples reports the kept
/// model's error on them ([`EngineReport::probe_error`]).
pub fn optimize(
    model: Model,
    path: &Path,
    fixed: &[(String, Vec<i64>)],
    options: &egraph::Options,
) -> Result<(Model, Option<EngineReport>), PipelineError> {
    let Some(compression) = options.compression.as_ref().filter(|c| c.measure && !c.forced()) else {
        // The chosen model's error on the probe, for verification to check the written one against.
        let probe = options.compression.as_ref().map_or(&[][..], |c| &c.probe[..]);
        let reference = (!probe.is_empty()).then(|| model.clone());
        let (optimized, report) = optimize_once(model, path, fixed, options)?;
        let report = match (report, reference) {
            (Some(mut report), Some(reference)) => {
                let measured = export_both(&reference, &optimized, path)
                    .and_then(|(reference, candidate)| probe_error(&reference, &candidate, path, probe));
                match measured {
                    Ok(error) => report.probe_error = Some(error),
                    Err(reason) => report.warnings.push(format!("the output error on the probe samples: {reason}")),
                }
                Some(report)
            }
            (report, _) => report,
        };
        return Ok((optimized, report));
    };
    let representative_shapes = compression.representative.clone();
    let float_options = egraph::Options {
        families: options.families.iter().filter(|f| compression.family(f).is_none()).cloned().collect(),
        compression: None,
        ..options.clone()
    };
    let mut forced = compression.clone();
    forced.enabled.iter_mut().for_each(|e| e.forced = true);
    let all_options = egraph::Options { compression: Some(forced), ..options.clone() };
    // The compressed candidates start from the model raised to the families' opset once.
    let upgraded = at_compression_opset(model.clone(), path, fixed, compression)?;
    let mut candidates = Vec::new();
    for (name, start, candidate_options) in
        [("float", model, &float_options), ("auto", upgraded.clone(), options), ("all", upgraded.clone(), &all_options)]
    {
        let (optimized, report) = optimize_once(start, path, fixed, candidate_options)?;
        candidates.push((name.to_string(), optimized, report));
    }
    // A quantized candidate is kept only where its deployed output stays
    // within the budget of the float one's (the forced candidate is not
    // budgeted, and summed sensitivities only estimate the budgeted one's).
    let probe = &compression.probe;
    let reference = if options.budget.is_finite() && !probe.is_empty() {
        // The float candidate's reference semantics, against which each
        // quantized candidate runs with the integer kernels a deployment runs.
        let reference = crate::onnxruntime::outputs(&candidates[0].1, path, GraphOptimization::None, probe);
        Some(reference.map_err(|reason| PipelineError::Measure { path: path.to_path_buf(), reason })?)
    } else {
        None
    };
    let errors_of = |models: &[&Model]| -> Vec<Option<f64>> {
        let Some(reference) = &reference else { return vec![None; models.len()] };
        crate::parallel::side_by_side(models, models.len(), |model| {
            let deployed = crate::onnxruntime::outputs(model, path, GraphOptimization::All, probe).ok()?;
            Some(runs_relative_l2(&deployed.into_iter().zip(reference.iter().cloned()).collect::<Vec<_>>()))
        })
    };
    let quantized: Vec<&Model> = candidates[1..].iter().map(|(_, model, _)| model).collect();
    let mut output_errors: Vec<Option<f64>> = std::iter::once(Some(0.0)).chain(errors_of(&quantized)).collect();
    // Summed per-layer errors only estimate what many layers compressed
    // together do to the output: more budgeted candidates are built at
    // summed budgets searched on the errors measured so far.
    let summed = candidates[1].2.as_ref().map_or(0.0, |r| r.extraction.error);
    let forced_fits = output_errors[2].is_some_and(|e| e <= options.budget);
    let mut search = BudgetSearch::new(options.budget, forced_fits);
    search.record(summed, summed, output_errors[1]);
    let sensitivity: std::collections::BTreeMap<String, f64> = candidates[1]
        .2
        .as_ref()
        .map(|report| {
            report.layer_sensitivity.iter().flat_map(|l| l.keys.iter().map(|k| (k.clone(), l.error))).collect()
        })
        .unwrap_or_default();
    for _ in 0..SEARCH_ATTEMPTS {
        let Some(budget) = search.next() else { break };
        let mut searched_options = egraph::Options { budget, ..options.clone() };
        if let Some(c) = searched_options.compression.as_mut() {
            c.measured_errors = sensitivity.clone();
        }
        let (optimized, report) = optimize_once(upgraded.clone(), path, fixed, &searched_options)?;
        // The summed estimate this candidate's layers came to (at most its budget).
        let summed_here = report.as_ref().map_or(budget, |r| r.extraction.error);
        // The same layers compressed as a candidate built already: the same model.
        let layers = |report: &Option<EngineReport>| report.as_ref().map(|r| r.compressed_layers.clone());
        let known = candidates[1..].iter().position(|(_, _, built)| layers(built) == layers(&report));
        if let Some(known) = known {
            search.record(budget, summed_here, output_errors[known + 1]);
            continue;
        }
        let error = errors_of(&[&optimized]).pop().flatten();
        search.record(budget, summed_here, error);
        output_errors.push(error);
        candidates.push((format!("auto, budget {budget:.2e}"), optimized, report));
    }
    let protos = candidates
        .iter()
        .map(|(name, optimized, _)| {
            let proto = ir::export(optimized.clone())
                .map_err(|reason| PipelineError::Ir { path: path.to_path_buf(), reason })?;
            Ok((format!("{} ({name})", path.display()), proto))
        })
        .collect::<Result<Vec<_>, PipelineError>>()?;
    // Measured, a candidate ONNX Runtime could not run on the probe is not eligible either.
    let eligible = |index: usize| match output_errors[index] {
        Some(error) => error <= options.budget,
        None => reference.is_none(),
    };
    // Ties go to the candidate with fewer approximated layers (the float one first).
    let approximated: Vec<usize> = candidates
        .iter()
        .map(|(_, _, report)| report.as_ref().map_or(0, |r| r.sections.0.iter().map(|s| s.compressed_layers()).sum()))
        .collect();
    let mut preference: Vec<usize> = (0..candidates.len()).filter(|&index| eligible(index)).collect();
    preference.sort_by_key(|&index| (approximated[index], index));
    if preference.first() != Some(&0) {
        preference.insert(0, 0);
    }
    let rounds = time_candidates(&protos, &preference, compression, path)?;
    let times: Vec<Option<&[f64]>> = rounds.iter().map(|r| r.as_ref().ok().map(Vec::as_slice)).collect();
    let verdict = crate::cost::choose::clearly_fastest(&times, &preference);
    let fastest = verdict.chosen;
    let timings: Vec<egraph::CandidateTiming> = candidates
        .iter()
        .zip(&rounds)
        .enumerate()
        .map(|(i, ((name, _, _), timed))| {
            let interval = timed.as_ref().ok().and_then(|runs| Interval::of_runs(runs));
            egraph::CandidateTiming {
                candidate: name.clone(),
                seconds: interval.map_or(f64::INFINITY, |t| t.median),
                interval,
                rounds: timed.as_ref().map_or(0, Vec::len),
                error: timed.as_ref().err().cloned(),
                output_error: output_errors[i].filter(|_| interval.is_some()),
                approximated_layers: approximated[i],
                chosen: i == fastest,
            }
        })
        .collect();
    let decisions = verdict
        .comparisons
        .iter()
        .map(|c| egraph::CandidateComparison {
            candidate: candidates[c.candidate].0.clone(),
            against: candidates[c.against].0.clone(),
            ratio: c.ratio,
            outcome: c.outcome,
        })
        .collect();
    // The sensitivities measured for the budgeted candidate, and the operator
    // latencies every candidate's extraction looked up, are reported whichever wins.
    let layer_sensitivity = candidates[1].2.as_ref().map(|r| r.layer_sensitivity.clone()).unwrap_or_default();
    let mut operator_timings: Vec<crate::cost::measure::OperatorTiming> = Vec::new();
    for timing in candidates.iter().filter_map(|(_, _, r)| r.as_ref()).flat_map(|r| &r.operator_timings) {
        if !operator_timings.iter().any(|known| known.operator == timing.operator) {
            operator_timings.push(timing.clone());
        }
    }
    let measured_configurations =
        candidates.iter().filter_map(|(_, _, r)| r.as_ref()).map(|r| r.measured_configurations).sum();
    // A float winner reports each family's settings it was compared at and
    // its float layers (the budgeted candidate's checks were of another model).
    let budgeted_sections = candidates[1].2.as_ref().map(|r| r.sections.clone()).unwrap_or_default();
    let probe_error = output_errors[fastest];
    let (_, optimized, report) = candidates.swap_remove(fastest);
    let sections = match report.as_ref().map(|r| r.sections.clone()) {
        Some(sections) if !sections.0.is_empty() => sections,
        _ => egraph::Sections(budgeted_sections.0.iter().map(|s| s.uncompressed(&optimized)).collect()),
    };
    let timing_shapes =
        if samples::has_open_dims(&optimized) { samples::shapes_text(&representative_shapes) } else { Vec::new() };
    let report = report.map(|r| EngineReport {
        end_to_end: timings,
        end_to_end_decisions: decisions,
        probe_error,
        timing_shapes,
        operator_timings,
        measured_configurations,
        layer_sensitivity,
        sections,
        ..r
    });
    Ok((optimized, report))
}

/// The relative L2 distance of `candidate`'s outputs, as ONNX Runtime
/// deploys it (all graph optimizations), from `reference`'s (none) on the
/// probe samples: how the budgeted search measures its candidates, and what
/// verification checks a written model against.
pub fn probe_error(
    reference: &crate::onnx::proto::ModelProto,
    candidate: &crate::onnx::proto::ModelProto,
    path: &Path,
    probe: &[Vec<crate::eval::NamedTensor>],
) -> Result<f64, String> {
    use prost::Message;
    let run = |proto: &crate::onnx::proto::ModelProto, level: GraphOptimization| {
        let mut session = crate::onnxruntime::OrtSession::from_bytes(&proto.encode_to_vec(), path, level)
            .map_err(|e| e.to_string())?;
        probe.iter().map(|sample| session.run(sample).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()
    };
    let expected = run(reference, GraphOptimization::None)?;
    let deployed = run(candidate, GraphOptimization::All)?;
    Ok(runs_relative_l2(&deployed.into_iter().zip(expected).collect::<Vec<_>>()))
}

/// Both models as written.
fn export_both(
    reference: &Model,
    candidate: &Model,
    path: &Path,
) -> Result<(crate::onnx::proto::ModelProto, crate::onnx::proto::ModelProto), String> {
    let export = |model: &Model| ir::export(model.clone()).map_err(|e| format!("{}: {e}", path.display()));
    Ok((export(reference)?, export(candidate)?))
}

/// `--quantize auto`'s candidates timed side by side in ONNX Runtime at the
/// representative input shapes, each candidate's time in every round: from
/// the cost cache when it has this set of candidates, else measured —
/// [`END_TO_END_ROUNDS`] rounds at a time, until the choice among the
/// `preference` candidates is no longer within the noise or
/// [`END_TO_END_MAX_ROUNDS`] have run — and added to it.
fn time_candidates(
    protos: &[(String, crate::onnx::proto::ModelProto)],
    preference: &[usize],
    compression: &egraph::Compression,
    path: &Path,
) -> Result<Vec<Result<Vec<f64>, String>>, PipelineError> {
    use prost::Message;
    let measure_error = |reason: String| PipelineError::Measure { path: path.to_path_buf(), reason };
    let mut identity: Vec<u8> =
        protos.iter().flat_map(|(_, proto)| key_of(&proto.encode_to_vec()).into_bytes()).collect();
    identity.extend(format!("{:?}", compression.representative).into_bytes());
    let key = key_of(&identity);
    let what: Vec<String> = protos.iter().map(|(label, _)| label.clone()).collect();
    let cached = compression
        .cost_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .candidates(&key, || what.join(" vs "))
        .map_err(|e| measure_error(e.to_string()))?;
    let rounds = match cached {
        Some(entry) => entry.rounds,
        None => {
            let mut timing = crate::cost::measure::SideBySide::open(protos, &compression.representative);
            loop {
                timing.run(END_TO_END_ROUNDS);
                let times: Vec<Option<&[f64]>> =
                    timing.rounds.iter().map(|r| r.as_ref().ok().map(Vec::as_slice)).collect();
                let done = times.iter().flatten().map(|t| t.len()).max().unwrap_or(0) >= END_TO_END_MAX_ROUNDS;
                if done || !crate::cost::choose::clearly_fastest(&times, preference).undecided() {
                    break;
                }
            }
            let rounds: Vec<Result<Vec<f64>, String>> =
                timing.rounds.into_iter().map(|r| r.map_err(|e| e.to_string())).collect();
            let entry = crate::cost::cache::RoundsEntry { what, rounds: rounds.clone() };
            compression.cost_cache.lock().unwrap_or_else(|p| p.into_inner()).put_candidates(key, entry);
            rounds
        }
    };
    // The float candidate always runs; when it cannot, nothing can be timed.
    if let Some(Err(error)) = rounds.first() {
        return Err(measure_error(error.clone()));
    }
    Ok(rounds)
}

/// Rounds of the side-by-side timing of `--quantize auto`'s candidates, at
/// first and per extension while the choice is within the noise,
const END_TO_END_ROUNDS: usize = 15;
/// and at most.
const END_TO_END_MAX_ROUNDS: usize = 60;

/// A budgeted candidate leaves room for a wider one when its measured
/// output error is below this share of the budget;
const WIDEN_BELOW: f64 = 0.7;
/// a wider or narrower one aims its error at this share of the budget;
const SEARCH_TARGET: f64 = 0.7;
/// and at most this many more budgeted candidates are built.
const SEARCH_ATTEMPTS: usize = 5;

/// A budgeted candidate as built: the summed budget it was extracted at,
/// the summed per-layer estimate its layers came to, its measured output error.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tried {
    budget: f64,
    summed: f64,
    measured: f64,
}

/// The search for the summed extraction budget whose candidate's measured
/// output error fits the user's `--budget` with the most layers compressed.
/// Errors of independently compressed layers add up roughly in quadrature,
/// so the measured error grows with the square root of the summed estimate
/// (DenseNet-121: summed 0.05 measured 0.008, summed 0.2 measured 0.017):
/// from a candidate that left room, or one that went over, the next summed
/// budget scales its estimate by the square of (aimed error / measured);
/// once one fits and one is over, the next bisects them geometrically.
#[derive(Debug)]
struct BudgetSearch {
    /// The user's `--budget` on the measured output error.
    budget: f64,
    /// The fully compressed candidate fits already: no search needed.
    forced_fits: bool,
    /// The widest candidate that fit,
    fits: Option<Tried>,
    /// and the narrowest that did not.
    over: Option<Tried>,
    /// A candidate could not be measured: the search stops.
    unmeasured: bool,
}

impl BudgetSearch {
    fn new(budget: f64, forced_fits: bool) -> BudgetSearch {
        BudgetSearch { budget, forced_fits, fits: None, over: None, unmeasured: false }
    }

    fn record(&mut self, budget: f64, summed: f64, measured: Option<f64>) {
        let Some(measured) = measured else {
            self.unmeasured = true;
            return;
        };
        let tried = Tried { budget, summed, measured };
        if measured <= self.budget {
            if self.fits.is_none_or(|fits| budget > fits.budget) {
                self.fits = Some(tried);
            }
        } else if self.over.is_none_or(|over| budget < over.budget) {
            self.over = Some(tried);
        }
    }

    /// The summed budget of the next candidate, if one can gain.
    fn next(&self) -> Option<f64> {
        if self.unmeasured || self.forced_fits || !self.budget.is_finite() {
            return None;
        }
        let rescaled = |tried: Tried| {
            let aim = SEARCH_TARGET * self.budget / tried.measured.max(f64::MIN_POSITIVE);
            Some(tried.summed * aim * aim).filter(|&next| next > 0.0 && next.is_finite())
        };
        match (self.fits, self.over) {
            (Some(fits), Some(over)) if fits.budget > 0.0 => {
                Some((fits.budget * over.budget).sqrt()).filter(|&next| next > fits.budget && next < over.budget)
            }
            (_, Some(over)) => rescaled(over).filter(|&next| next < over.budget),
            (Some(fits), None) if fits.measured < WIDEN_BELOW * self.budget => {
                rescaled(fits).filter(|&next| next > fits.budget)
            }
            _ => None,
        }
    }
}

/// The model raised to the default-domain opset the enabled compression
/// families need (shapes inferred again) when it is older.
fn at_compression_opset(
    mut model: Model,
    path: &Path,
    fixed: &[(String, Vec<i64>)],
    compression: &egraph::Compression,
) -> Result<Model, PipelineError> {
    let needed = compression.enabled.iter().filter_map(|e| Some((e.family.opset(e)?, e.family.name()))).max();
    let Some((needed, family)) = needed else { return Ok(model) };
    if model.opset("").unwrap_or(1) < needed {
        let opset_error =
            |reason| PipelineError::Opset { path: path.to_path_buf(), family, needed, reason: Box::new(reason) };
        ir::upgrade_opset(&mut model, needed).map_err(opset_error)?;
        ir::infer::infer(&mut model, fixed).map_err(|reason| PipelineError::Ir { path: path.to_path_buf(), reason })?;
    }
    Ok(model)
}

fn optimize_once(
    model: Model,
    path: &Path,
    fixed: &[(String, Vec<i64>)],
    options: &egraph::Options,
) -> Result<(Model, Option<EngineReport>), PipelineError> {
    if options.families.is_empty() && options.user_rules.is_empty() {
        return Ok((model, None));
    }
    let engine_error = |reason| PipelineError::Engine { path: path.to_path_buf(), reason };
    // The enabled families whose rules run.
    let compression = options
        .compression
        .as_ref()
        .filter(|c| c.enabled.iter().any(|e| options.families.iter().any(|f| f == e.family.name())));
    let model = match compression {
        Some(c) => at_compression_opset(model, path, fixed, c)?,
        None => model,
    };
    if let Some(compression) = compression
        .filter(|c| !c.forced() && options.budget.is_finite() && c.measured_errors.is_empty() && !c.probe.is_empty())
    {
        // Charge each layer's compressed forms with their measured effect on the output.
        let measured = egraph::sensitivity::measure(&model, options, &compression.probe).map_err(engine_error)?;
        let mut measured_options = options.clone();
        if let Some(c) = measured_options.compression.as_mut() {
            c.measured_errors = measured.by_alternative;
        }
        let (optimized, report) = optimize_once(model, path, fixed, &measured_options)?;
        let report = report.map(|r| {
            let mut layer_sensitivity = measured.layers;
            for layer in &mut layer_sensitivity {
                layer.cost = layer.keys.iter().find_map(|key| r.alternative_costs.get(key)).copied();
            }
            EngineReport { layer_sensitivity, ..r }
        });
        return Ok((optimized, report));
    }
    let (mut optimized, mut report) = match compression
        .filter(|c| c.measure && !c.forced() && c.pinned.is_none() && samples::has_open_dims(&model))
    {
        Some(compression) => optimize_at_representative_shape(&model, path, fixed, options, compression)?,
        None => egraph::optimize(&model, options).map_err(engine_error)?,
    };
    for enabled in compression.iter().flat_map(|c| &c.enabled) {
        enabled
            .family
            .lower(&mut optimized)
            .map_err(|reason| PipelineError::Lower { path: path.to_path_buf(), reason })?;
    }
    declare_fixed_inputs(&mut optimized, fixed);
    ir::infer::infer(&mut optimized, fixed).map_err(|reason| PipelineError::Ir { path: path.to_path_buf(), reason })?;
    if !fixed.is_empty() {
        declare_inferred_shapes(&mut optimized);
    }
    if let Some(compression) = compression {
        let written = Written { original: &model, path, probe: &compression.probe };
        for enabled in &compression.enabled {
            enabled
                .family
                .check(enabled, &mut optimized, &written, &mut report.sections)
                .map_err(|reason| PipelineError::Check { path: path.to_path_buf(), reason })?;
        }
    }
    Ok((optimized, Some(report)))
}

/// The e-graph engine on a model whose inputs leave dims open, with
/// measured costs: layer latencies can only be measured at concrete shapes,
/// and rewrites must not rely on one. So the choice is made on the model
/// with its open dims at the representative shapes (`compression.representative`),
/// and the model itself is then optimized with the same layers compressed
/// ([`egraph::Compression::pinned`]). The report keeps the first run's
/// measured costs and extraction, and names the shapes.
fn optimize_at_representative_shape(
    model: &Model,
    path: &Path,
    fixed: &[(String, Vec<i64>)],
    options: &egraph::Options,
    compression: &egraph::Compression,
) -> Result<(Model, EngineReport), PipelineError> {
    let engine_error = |reason| PipelineError::Engine { path: path.to_path_buf(), reason };
    let ir_error = |reason| PipelineError::Ir { path: path.to_path_buf(), reason };
    let mut shapes: Vec<(String, Vec<i64>)> = fixed.to_vec();
    shapes.extend(compression.representative.iter().filter(|(name, _)| fixed.iter().all(|(f, _)| f != name)).cloned());
    let mut at_shape = model.clone();
    ir::infer::infer(&mut at_shape, &shapes).map_err(ir_error)?;
    if samples::has_open_dims(&at_shape) {
        let open: Vec<String> = samples::input_names(model);
        return Err(PipelineError::Measure {
            path: path.to_path_buf(),
            reason: format!(
                "inputs {} leave dims open and no calibration sample shows their size; fix them with --input-shape",
                open.join(", ")
            ),
        });
    }
    let (_, chosen) = egraph::optimize(&at_shape, options).map_err(engine_error)?;
    let mut pinned_options = options.clone();
    if let Some(c) = pinned_options.compression.as_mut() {
        c.pinned = Some(chosen.compressed_layers.clone());
    }
    let (optimized, report) = egraph::optimize(model, &pinned_options).map_err(engine_error)?;
    let timing_shapes = samples::shapes_text(&shapes);
    let report = EngineReport {
        extraction: chosen.extraction,
        measured_configurations: chosen.measured_configurations,
        operator_timings: chosen.operator_timings,
        alternative_costs: chosen.alternative_costs,
        timing_shapes,
        ..report
    };
    Ok((optimized, report))
}

/// With inputs fixed, the declarations of outputs and intermediate values
/// take the shapes inference found (stale symbolic or -1 dims would contradict them).
fn declare_inferred_shapes(model: &mut Model) {
    let graph = &mut model.graph;
    for io in &mut graph.outputs {
        let proto = &mut io.declared;
        let Some(shape) = graph.values[io.value.0].shape.as_ref().filter(|s| s.as_known().is_some()) else { continue };
        if let Some(type_proto::Value::TensorType(tensor)) = proto.r#type.as_mut().and_then(|t| t.value.as_mut()) {
            tensor.shape = Some(shape.to_proto());
        }
    }
    for value in &mut graph.values {
        let Some(shape) = value.shape.as_ref().filter(|s| s.as_known().is_some()).cloned() else { continue };
        if let Some(type_proto::Value::TensorType(tensor)) =
            value.declared.as_mut().and_then(|d| d.r#type.as_mut()).and_then(|t| t.value.as_mut())
        {
            tensor.shape = Some(shape.to_proto());
        }
    }
}

/// Writes fixed input shapes into the graph inputs' declarations.
fn declare_fixed_inputs(model: &mut Model, fixed: &[(String, Vec<i64>)]) {
    let graph = &mut model.graph;
    for io in &mut graph.inputs {
        let name = &graph.values[io.value.0].name;
        let Some((_, dims)) = fixed.iter().find(|(n, _)| n == name) else { continue };
        if let Some(type_proto::Value::TensorType(tensor)) = io.declared.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            tensor.shape = Some(Shape::known(dims).to_proto());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BudgetSearch;

    #[test]
    fn a_wider_candidate_only_where_the_first_left_room() {
        // Measured 0.01 of 0.1 (summed 0.1): aim at 0.07, 7x the error, 49x the sum.
        let mut search = BudgetSearch::new(0.1, false);
        search.record(0.1, 0.1, Some(0.01));
        let widened = search.next().unwrap();
        assert!((widened - 4.9).abs() < 1e-12, "{widened}");
        let no_room = |measured: Option<f64>, summed: f64, forced_fits: bool, budget: f64| {
            let mut search = BudgetSearch::new(budget, forced_fits);
            search.record(summed, summed, measured);
            search.next()
        };
        assert_eq!(no_room(Some(0.08), 0.1, false, 0.1), None, "no room left");
        assert_eq!(no_room(Some(0.01), 0.1, true, 0.1), None, "everything compressed fits already");
        assert_eq!(no_room(Some(0.0), 0.0, false, 0.1), None, "nothing was compressed");
        assert_eq!(no_room(None, 0.1, false, 0.1), None, "not measured");
        assert_eq!(no_room(Some(0.01), 0.1, false, f64::INFINITY), None, "no budget");
    }

    #[test]
    fn a_narrower_candidate_where_the_first_went_over_then_bisection() {
        // Measured 0.35 of 0.05 (summed 0.04): aim at 0.035, 1/10 of the error, 1/100 of the sum.
        let mut search = BudgetSearch::new(0.05, false);
        search.record(0.04, 0.04, Some(0.35));
        let narrowed = search.next().unwrap();
        assert!((narrowed - 0.04 / 100.0).abs() < 1e-12, "{narrowed}");
        // It fits: bisect geometrically between it and the one over.
        search.record(narrowed, narrowed, Some(0.01));
        let between = search.next().unwrap();
        assert!((between - (narrowed * 0.04).sqrt()).abs() < 1e-12, "{between}");
        // Over again: between the one that fit and this one.
        search.record(between, between, Some(0.07));
        let next = search.next().unwrap();
        assert!((next - (narrowed * between).sqrt()).abs() < 1e-12, "{next}");
    }
}
